//! The read proxy for a ReadOnly key limited to `checkout`: queries whose selectors already
//! name it reach the upstream unchanged; every other selector — for `billing`, for everything,
//! a regex — reaches it with `service_name=~"checkout"` ANDed, in JSON, protobuf and the legacy
//! API (asserted on the recorded request), so nothing of `billing` can be selected; what can't
//! be confined is refused with 403 and never leaves the node.

use axum::http::{Method, StatusCode};
use pyrogate::core::clock::{Clock as _, SystemClock};
use pyrogate::core::jwk::KeySet;
use pyrogate::core::token::{self, KeyRequest, Role};

use crate::harness::{Node, Upstream};
use crate::support::{random_key, signer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readonly_key_scoped_to_an_app_reads_only_that_app() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::answering("application/json", "{\"ok\":true}").await;
    let key = random_key();
    let jwks_path = dir.path().join("jwks.json");
    let jwks = KeySet::new([key.verifying_key()]).to_jwks();
    std::fs::write(&jwks_path, serde_json::to_vec(&jwks).expect("jwks")).expect("write");
    let yaml = format!(
        "upstream: {}\njwks-file: {jwks_path:?}\nauth:\n  ingestion:\n    enabled: true\n",
        upstream.url()
    );
    let node = Node::start(&dir.path().join("node"), &yaml).await;
    let apps = ["checkout".to_owned()];
    let reader = token::issue(
        &signer(&key),
        "pyrogate",
        SystemClock.now(),
        &KeyRequest {
            name: "checkout-reader",
            role: Role::ReadOnly,
            ttl_seconds: 3600,
            tenant: None,
            apps: Some(&apps),
            cidrs: None,
        },
    )
    .expect("issue")
    .token
    .expose()
    .to_owned();
    let http = node.client();
    let call = |method: Method, path: &str, content_type: &str, body: &'static str| {
        http.request(method, path)
            .raw(content_type, body)
            .bearer(&reader)
            .send()
    };
    const JSON: &str = "application/json";

    let allowed: [(Method, String, &str, &'static str); 5] = [
        (
            Method::GET,
            "/pyroscope/render?query=process_cpu%3Acpu%3Ananoseconds%3Acpu%3Ananoseconds%7Bservice_name%3D%22checkout%22%7D&from=now-1h".into(),
            JSON,
            "",
        ),
        (
            Method::POST,
            "/querier.v1.QuerierService/SelectMergeStacktraces".into(),
            JSON,
            r#"{"profileTypeID":"process_cpu:cpu:nanoseconds:cpu:nanoseconds","labelSelector":"{service_name=\"checkout\",env=\"prod\"}","start":1,"end":2}"#,
        ),
        (
            Method::POST,
            "/querier.v1.QuerierService/LabelValues".into(),
            JSON,
            r#"{"name":"service_name","matchers":["{service_name=\"checkout\"}"]}"#,
        ),
        (
            Method::POST,
            "/querier.v1.QuerierService/Series".into(),
            JSON,
            r#"{"matchers":["{service_name=\"checkout\"}"],"labelNames":["service_name"]}"#,
        ),
        (
            Method::POST,
            "/querier.v1.QuerierService/Diff".into(),
            JSON,
            r#"{"left":{"labelSelector":"{service_name=\"checkout\"}"},"right":{"labelSelector":"{service_name=\"checkout\"}"}}"#,
        ),
    ];
    for (method, path, content_type, body) in &allowed {
        let r = call(method.clone(), path, content_type, body).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), allowed.len());
    for ((_, path, _, body), got) in allowed.iter().zip(&seen) {
        assert_eq!(&got.path_and_query, path, "unchanged");
        assert_eq!(&got.body[..], body.as_bytes());
        let text = format!(
            "{} {}",
            got.path_and_query,
            String::from_utf8_lossy(&got.body)
        );
        assert!(
            text.contains("checkout") && !text.contains("billing"),
            "{text}"
        );
    }

    // Confined on the way: the recorded request holds the added matcher.
    const ADDED: &str = r#"service_name=~\"checkout\""#;
    let proto_request = |selector: &str| {
        let mut b = vec![0x12, selector.len() as u8];
        b.extend_from_slice(selector.as_bytes());
        b
    };
    let confined: [(Method, &str, &str, Vec<u8>, String); 7] = [
        (
            Method::GET,
            "/pyroscope/render?query=%7Bservice_name%3D%22billing%22%7D&from=now-1h",
            JSON,
            vec![],
            "/pyroscope/render?query=%7Bservice_name%3D%22billing%22%2Cservice_name%3D%7E%22checkout%22%7D&from=now-1h".into(),
        ),
        (
            Method::GET,
            "/pyroscope/label-values?label=service_name",
            JSON,
            vec![],
            "/pyroscope/label-values?label=service_name&query=%7Bservice_name%3D%7E%22checkout%22%7D".into(),
        ),
        (
            Method::POST,
            "/querier.v1.QuerierService/SelectMergeStacktraces",
            JSON,
            br#"{"labelSelector":"{service_name=~\"checkout|billing\"}"}"#.to_vec(),
            format!(r#"{{"labelSelector":"{{service_name=~\"checkout|billing\",{ADDED}}}"}}"#),
        ),
        (
            Method::POST,
            "/querier.v1.QuerierService/LabelValues",
            JSON,
            br#"{"name":"service_name","matchers":[]}"#.to_vec(),
            format!(r#"{{"matchers":["{{{ADDED}}}"],"name":"service_name"}}"#),
        ),
        (
            Method::POST,
            "/querier.v1.QuerierService/Series",
            JSON,
            br#"{"matchers":["{env=\"prod\"}","{service_name=\"checkout\"}"]}"#.to_vec(),
            format!(r#"{{"matchers":["{{env=\"prod\",{ADDED}}}","{{service_name=\"checkout\"}}"]}}"#),
        ),
        (
            Method::POST,
            "/querier.v1.QuerierService/Diff",
            JSON,
            br#"{"left":{"labelSelector":"{service_name=\"checkout\"}"},"right":{"labelSelector":"{service_name=\"billing\"}"}}"#.to_vec(),
            format!(r#"{{"left":{{"labelSelector":"{{service_name=\"checkout\"}}"}},"right":{{"labelSelector":"{{service_name=\"billing\",{ADDED}}}"}}}}"#),
        ),
        (
            Method::POST,
            "/querier.v1.QuerierService/SelectMergeStacktraces",
            "application/proto",
            proto_request("{}"),
            String::from_utf8(proto_request(r#"{service_name=~"checkout"}"#)).expect("utf-8"),
        ),
    ];
    for (method, path, content_type, body, forwarded) in &confined {
        let r = http
            .request(method.clone(), path)
            .raw(content_type, body.clone())
            .bearer(&reader)
            .send()
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        let got = upstream.requests().pop().expect("forwarded");
        let got = if method == Method::GET {
            got.path_and_query
        } else {
            assert_eq!(&got.path_and_query, path);
            String::from_utf8(got.body.to_vec()).expect("utf-8")
        };
        assert_eq!(&got, forwarded, "{path}");
    }
    let sent = allowed.len() + confined.len();

    let refused: [(Method, &str, &str, &'static str); 8] = [
        (
            Method::GET,
            "/pyroscope/render?query=%7Bservice_name%3D%22checkout%22%7D&name=billing",
            JSON,
            "",
        ),
        (Method::GET, "/pyroscope/render?from=now-1h", JSON, ""),
        (Method::GET, "/pyroscope/render?query=billing.cpu", JSON, ""),
        (Method::GET, "/pyroscope/api/apps", JSON, ""),
        (
            Method::POST,
            "/querier.v1.QuerierService/Diff",
            JSON,
            r#"{"left":{"labelSelector":"{service_name=\"checkout\"}"}}"#,
        ),
        (
            Method::GET,
            "/querier.v1.QuerierService/SelectMergeStacktraces?encoding=json&message=%7B%7D",
            JSON,
            "",
        ),
        (
            Method::POST,
            "/querier.v1.QuerierService/SelectMergeStacktraces",
            "application/proto",
            "\u{12}\u{9}{",
        ),
        (
            Method::POST,
            "/querier.v1.QuerierService/ProfileTypes",
            JSON,
            "{}",
        ),
    ];
    for (method, path, content_type, body) in refused {
        let r = call(method, path, content_type, body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{path} {body}: {}",
            r.text()
        );
        assert!(
            r.text().contains("may read only applications checkout"),
            "{}",
            r.text()
        );
    }
    assert_eq!(
        upstream.requests().len(),
        sent,
        "nothing refused left the node"
    );
    let scope_app = crate::harness::decisions("forbidden", "scope_app");
    assert_eq!(node.metric(&scope_app).await, 8.0, "each refusal counted");
}
