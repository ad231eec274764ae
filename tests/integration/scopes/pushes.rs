//! A node enforcing a key's scopes on pushes, every protocol, with a recording upstream: a key
//! scoped to `checkout-*` pushes `checkout-api` over `/ingest`, Push (protobuf and JSON, plain
//! and gzipped) and OTLP (protobuf and JSON, built with the official OpenTelemetry classes) —
//! forwarded; the same pushes for `billing`, a push with one series outside, a push whose
//! application can't be read — 403 with the reason, nothing upstream. A key scoped to networks
//! is used from inside and outside them.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use prost::Message as _;
use pyrogate::authority::keyring::Keyring;
use pyrogate::core::clock::{Clock, SystemClock};
use pyrogate::core::token::{self, KeyRequest, Role};
use pyrogate::node::ingest::apps::proto;

use crate::harness::{
    Authority, Deadline, Http, Node, Plane, Upstream, decisions, paths, plane, wait_synced,
};

/// A key signed by the authority's active signing key (unregistered: the node only needs
/// the signature), limited to `apps` and `cidrs` (an empty list: no such limit).
fn scoped_key(p: &Plane, role: Role, apps: &[&str], cidrs: &[&str]) -> String {
    let ring = Keyring::open(p.authority.keys_dir()).expect("the authority's keys");
    let apps: Vec<String> = apps.iter().map(|s| s.to_string()).collect();
    let cidrs: Vec<String> = cidrs.iter().map(|s| s.to_string()).collect();
    let req = KeyRequest {
        name: "scoped",
        role,
        ttl_seconds: 3600,
        tenant: None,
        apps: (!apps.is_empty()).then_some(apps.as_slice()),
        cidrs: (!cidrs.is_empty()).then_some(cidrs.as_slice()),
    };
    token::issue(ring.active(), "pyrogate", SystemClock.now(), &req)
        .expect("issue a scoped key")
        .token
        .expose()
        .to_owned()
}

/// Posts `body` to `path` with `key` and `headers`; the status and the error text.
async fn push(
    p: &Plane,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (u16, String) {
    let r = p
        .http
        .post(path)
        .bearer(key)
        .headers(headers)
        .body(body)
        .send()
        .await;
    (r.status.as_u16(), r.text())
}

fn gzip(data: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    Bytes::from(e.finish().expect("gzip"))
}

/// A Push request with one series per `apps` entry (`service_name` = the entry; `-`: none).
fn push_request(apps: &[&str]) -> proto::PushRequest {
    proto::PushRequest {
        series: apps
            .iter()
            .map(|app| proto::RawProfileSeries {
                labels: [("__name__", "process_cpu"), ("service_name", *app)]
                    .into_iter()
                    .filter(|(n, v)| *n != "service_name" || *v != "-")
                    .map(|(n, v)| proto::LabelPair {
                        name: n.into(),
                        value: v.into(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The protobuf of [`push_request`] with a sample (`samples`, field 2: a RawSample with 4 KiB
/// of profile bytes) in every series, as agents send it.
fn push_proto(apps: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for series in push_request(apps).series {
        let mut s = series.encode_to_vec();
        let raw = vec![0x1f; 4096];
        let mut sample = vec![0x0a];
        prost::encoding::encode_varint(raw.len() as u64, &mut sample);
        sample.extend(raw);
        s.push(0x12);
        prost::encoding::encode_varint(sample.len() as u64, &mut s);
        s.extend(sample);
        out.push(0x0a);
        prost::encoding::encode_varint(s.len() as u64, &mut out);
        out.extend(s);
    }
    out
}

fn push_json(apps: &[&str]) -> Vec<u8> {
    let series: Vec<serde_json::Value> = apps
        .iter()
        .map(|app| {
            serde_json::json!({
                "labels": [{"name": "__name__", "value": "process_cpu"}, {"name": "service_name", "value": app}],
                "samples": [{"rawProfile": "H4sIAAAAAAAA"}],
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "series": series })).expect("json")
}

/// An OTLP request built by the official OpenTelemetry Python classes.
fn otlp(format: &str, services: &[&str]) -> Vec<u8> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/venv/bin/python");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/scopes/otlp_request.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format)
        .args(services)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {}: {e}; run `bash scripts/install-test-deps.sh`",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "the OTLP helper failed (run `bash scripts/install-test-deps.sh` for opentelemetry-proto): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

const PUSH: &str = "/push.v1.PusherService/Push";
const OTLP: &str = "/v1development/profiles";
const PROTO: (&str, &str) = ("content-type", "application/proto");
const JSON: (&str, &str) = ("content-type", "application/json");
const X_PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
const GZIP: (&str, &str) = ("content-encoding", "gzip");

/// One push: what it is, its path, its headers, its body.
type Case = (String, String, Vec<(&'static str, &'static str)>, Bytes);

/// Every protocol's push for `apps`.
fn every_protocol(apps: &[&str]) -> Vec<Case> {
    let legacy = format!("/ingest?name={}.cpu%7Benv%3Dprod%7D&format=folded", apps[0]);
    let mut cases: Vec<Case> = vec![(
        "ingest".into(),
        legacy,
        vec![],
        Bytes::from_static(b"main;work 1\n"),
    )];
    let bodies = [
        ("push proto", PUSH, PROTO, push_proto(apps)),
        ("push json", PUSH, JSON, push_json(apps)),
        ("otlp proto", OTLP, X_PROTOBUF, otlp("proto", apps)),
        ("otlp json", OTLP, JSON, otlp("json", apps)),
    ];
    for (what, path, content_type, body) in bodies {
        let gzipped = gzip(&body);
        cases.push((what.into(), path.into(), vec![content_type], body.into()));
        cases.push((
            format!("{what} gzip"),
            path.into(),
            vec![content_type, GZIP],
            gzipped,
        ));
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_scoped_to_apps_pushes_its_own_over_every_protocol_and_nothing_else() {
    let p = plane().await;
    let key = scoped_key(&p, Role::Agent, &["checkout-*"], &[]);

    let allowed = every_protocol(&["checkout-api"]);
    for (what, path, headers, body) in &allowed {
        let (status, text) = push(&p, path, &key, headers, body.clone()).await;
        assert_eq!(status, 200, "{what}: {text}");
    }
    let seen = p.upstream.wait_accepted(allowed.len(), 10).await;
    assert_eq!(seen.len(), allowed.len(), "{:?}", paths(&seen));
    for ((what, _, _, body), got) in allowed.iter().zip(&seen) {
        assert_eq!(&got.body, body, "{what}: forwarded byte for byte");
    }

    // Outside the scope; two series with one outside; an application that can't be read.
    let mut refused = every_protocol(&["billing"]);
    refused.extend(
        every_protocol(&["checkout-api", "billing"])
            .into_iter()
            .skip(1)
            .map(|(w, p, h, b)| (format!("{w}, two series"), p, h, b)),
    );
    refused.extend([
        (
            "push, no service_name".to_owned(),
            PUSH.to_owned(),
            vec![PROTO],
            Bytes::from(push_proto(&["checkout-api", "-"])),
        ),
        (
            "otlp, no service.name".to_owned(),
            OTLP.to_owned(),
            vec![X_PROTOBUF],
            Bytes::from(otlp("proto", &["-"])),
        ),
        (
            "push, garbage".to_owned(),
            PUSH.to_owned(),
            vec![PROTO],
            Bytes::from_static(b"\x0a\xff\xff"),
        ),
        (
            "push, brotli".to_owned(),
            PUSH.to_owned(),
            vec![PROTO, ("content-encoding", "br")],
            Bytes::from(push_proto(&["checkout-api"])),
        ),
        (
            "ingest, service_name label".to_owned(),
            "/ingest?name=checkout-api.cpu%7Bservice_name%3Dbilling%7D".to_owned(),
            vec![],
            Bytes::from_static(b"a 1\n"),
        ),
        (
            "ingest, no name".to_owned(),
            "/ingest?format=folded".to_owned(),
            vec![],
            Bytes::from_static(b"a 1\n"),
        ),
    ]);
    for (what, path, headers, body) in &refused {
        let (status, text) = push(&p, path, &key, headers, body.clone()).await;
        assert_eq!(status, 403, "{what}: {text}");
        assert!(
            text.contains("may push only applications checkout-*"),
            "{what}: {text}"
        );
    }
    assert_eq!(
        p.upstream.requests().len(),
        allowed.len(),
        "nothing refused went upstream"
    );
    let counted = p.node.metric(&decisions("forbidden", "scope_app")).await;
    assert_eq!(counted, refused.len() as f64);

    // An unscoped key pushes any application, as before.
    let (_, plain) = p.authority.new_key("plain", "Agent", None).await;
    let (status, _) = push(
        &p,
        PUSH,
        &plain,
        &[PROTO],
        Bytes::from(push_proto(&["billing"])),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_scoped_to_networks_works_only_from_them() {
    let p = plane().await;
    let key = scoped_key(&p, Role::Agent, &[], &["127.0.0.1", "::1"]);
    assert_eq!(p.node.push_status("/ingest?name=a.cpu", &key).await, 200);
    let other = p.node.client().connecting_from([127, 0, 0, 2]);
    let r = other
        .post("/ingest?name=a.cpu")
        .bearer(&key)
        .body("a 1\n")
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 403);
    assert!(
        r.text().contains(
            "may be used only from 127.0.0.1/32, ::1/128 (cidrs); this request came from 127.0.0.2"
        ),
        "{}",
        r.text()
    );
    let v6_only = scoped_key(&p, Role::Agent, &[], &["::1/128"]);
    assert_eq!(
        p.node.push_status("/ingest?name=a.cpu", &v6_only).await,
        403
    );
    assert_eq!(
        p.node.metric(&decisions("forbidden", "scope_cidr")).await,
        2.0
    );
    assert_eq!(p.upstream.wait_accepted(1, 10).await.len(), 1);
}

/// The same key on an IPv6 node: `::1` is inside `::1/128` and outside `127.0.0.0/8`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cidrs_apply_to_ipv6_peers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = Authority::on_system_clock().await;
    let upstream = Upstream::start().await;
    let node = Node::start(
        &dir.path().join("node"),
        &format!(
            "api-bind-addr: \"[::1]:0\"\nauthority-url: {}\nupstream: {}\nauth:\n  ingestion:\n    enabled: true\n{}",
            authority.origin(),
            upstream.url(),
            authority.trust_yaml()
        ),
    )
    .await;
    let port = node.url.rsplit(':').next().expect("a port").to_owned();
    let http = Http::new(format!("http://[::1]:{port}"));
    let p = Plane {
        authority,
        upstream,
        node,
        http,
        _dir: dir,
    };
    let version = p.authority.revocations_version().await;
    let deadline = Deadline::secs(20, "the IPv6 node to load the revocation list");
    wait_synced(&p.http, version, deadline, String::new).await;
    let inside = scoped_key(&p, Role::Agent, &[], &["::1/128"]);
    let outside = scoped_key(&p, Role::Agent, &[], &["127.0.0.0/8"]);
    let body = || Bytes::from_static(b"a 1\n");
    assert_eq!(
        push(&p, "/ingest?name=a.cpu", &inside, &[], body()).await.0,
        200
    );
    let (status, text) = push(&p, "/ingest?name=a.cpu", &outside, &[], body()).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("this request came from ::1"), "{text}");
}

/// Behind a load balancer at 127.0.0.3 that `auth.trusted-proxies` names, a key limited to a
/// network is judged by the client the balancer puts in `X-Forwarded-For`; the same header from
/// anyone else, or entries left of the balancer's own, are not believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_address_decides() {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = Authority::on_system_clock().await;
    let upstream = Upstream::start().await;
    let node = Node::start(
        &dir.path().join("node"),
        &format!(
            "authority-url: {}\nupstream: {}\nauth:\n  trusted-proxies: 127.0.0.3, 10.9.0.0/16\n  ingestion:\n    enabled: true\n{}",
            authority.origin(),
            upstream.url(),
            authority.trust_yaml()
        ),
    )
    .await;
    node.wait_synced(authority.revocations_version().await)
        .await;
    let http = node.client();
    let p = Plane {
        authority,
        upstream,
        node,
        http,
        _dir: dir,
    };
    let key = scoped_key(&p, Role::Agent, &[], &["192.0.2.0/24", "2001:db8::/32"]);
    let from = |ip: [u8; 4], xff: Option<&'static str>| {
        let http = p.node.client().connecting_from(ip);
        let key = key.clone();
        async move {
            let mut req = http.post("/ingest?name=a.cpu").bearer(&key).body("a 1\n");
            if let Some(xff) = xff {
                req = req.header("X-Forwarded-For", xff);
            }
            let r = req.send().await;
            (r.status.as_u16(), r.text())
        }
    };
    // Through the balancer, from inside the key's networks (IPv4, IPv6, via a second trusted hop).
    for xff in [
        "192.0.2.7",
        "2001:db8::5",
        "192.0.2.7, 10.9.1.1",
        "203.0.113.9, 192.0.2.7",
    ] {
        let (status, text) = from([127, 0, 0, 3], Some(xff)).await;
        assert_eq!(status, 200, "{xff}: {text}");
    }
    // Through the balancer, from outside: the right-most untrusted entry decides, so a
    // client's own "192.0.2.7" written left of its real address gets it nowhere.
    for (xff, came_from) in [
        ("203.0.113.9", "203.0.113.9"),
        ("192.0.2.7, 203.0.113.9", "203.0.113.9"),
        ("192.0.2.7, 203.0.113.9, 10.9.1.1", "203.0.113.9"),
    ] {
        let (status, text) = from([127, 0, 0, 3], Some(xff)).await;
        assert_eq!(status, 403, "{xff}: {text}");
        assert!(
            text.contains(&format!("this request came from {came_from}")),
            "{text}"
        );
    }
    // A chain that can't be read leaves the source unknown.
    let (status, text) = from([127, 0, 0, 3], Some("unknown, 192.0.2.7x")).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("source address is unknown"), "{text}");
    // The balancer's own requests (no header) are its own address.
    let (status, text) = from([127, 0, 0, 3], None).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("this request came from 127.0.0.3"), "{text}");
    // Not through a trusted proxy: the header is the sender's word, and not believed.
    let (status, text) = from([127, 0, 0, 4], Some("192.0.2.7")).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("this request came from 127.0.0.4"), "{text}");
    assert_eq!(p.upstream.wait_accepted(4, 10).await.len(), 4);
}
