//! Per-key limits end to end: an authority, a recording upstream and real nodes on the system
//! clock. A limited key gets 429 with `Retry-After` past its burst and 200s at its rate; a
//! limit raised through `PATCH /api/keys/{id}` reaches a running node within a second, for the
//! same key; two reporting nodes share one key's limit; a node restarted with the authority
//! down enforces the limits of its cached list; a tampered or unsigned list (raising a limit)
//! is refused like any forged revocation list.
//!
//! Rates are real time here: the pushes that are paced (at a key's rate) are paced with an
//! interval, and every wait for a state is a [`Deadline`] loop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use axum::response::IntoResponse as _;
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::harness::*;

const PUSH: &str = "/ingest?name=limits.cpu&format=folded";

/// `POST /api/keys` with `limits`; returns the key's id and the key.
async fn limited_key(admin: &Http, name: &str, limits: Value) -> (i64, String) {
    let created = admin
        .post("/api/keys")
        .json(&json!({ "name": name, "role": "Agent", "ttlSeconds": 3600, "limits": limits }))
        .send()
        .await
        .expect(201)
        .json();
    assert_eq!(created["limits"], limits_with_bursts(&limits), "{created}");
    (
        created["id"].as_i64().expect("id"),
        created["key"].as_str().expect("key").to_owned(),
    )
}

fn limits_with_bursts(limits: &Value) -> Value {
    let mut l = limits.clone();
    if l.get("burstPushes").is_none()
        && let Some(r) = l["pushesPerSecond"].as_f64()
    {
        l["burstPushes"] = json!(r.ceil() as u64);
    }
    l
}

/// `PATCH /api/keys/{id}` with `limits`, expecting 200; returns the key as listed.
async fn set_limits(admin: &Http, id: i64, limits: Value) -> Value {
    admin
        .request(axum::http::Method::PATCH, &format!("/api/keys/{id}"))
        .json(&json!({ "limits": limits }))
        .send()
        .await
        .expect(200)
        .json()
}

async fn push(node: &Http, key: &str) -> Resp {
    node.post(PUSH)
        .bearer(key)
        .raw("text/plain", "main;work 1\n")
        .send()
        .await
}

/// `n` pushes as fast as they go; the statuses.
async fn rapid(node: &Http, key: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(push(node, key).await.status.as_u16());
    }
    out
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Waits until the node behind `node` has revocation list `version` (or newer) in force.
async fn synced(node: &Http, version: u64) {
    wait_synced(
        node,
        version,
        Deadline::secs(20, format!("the node to load list {version}")),
        String::new,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_key_gets_429_past_its_burst_200s_at_its_rate_and_a_raise_applies_within_a_second()
 {
    let plane = plane().await;
    let admin = plane.authority.admin().await;
    let (_, free) = admin.new_key("unlimited", "Agent", None).await;
    let (id, key) = limited_key(
        &admin,
        "limited",
        json!({ "pushesPerSecond": 10.0, "burstPushes": 10 }),
    )
    .await;
    synced(&plane.http, plane.authority.revocations_version().await).await;

    // The burst passes, then 429s with Retry-After and the errors shape naming the limit.
    let started = Instant::now();
    let statuses = rapid(&plane.http, &key, 40).await;
    let elapsed = started.elapsed().as_secs_f64();
    let ok = count(&statuses, 200);
    assert!(
        ok >= 10 && ok as f64 <= 10.0 + 10.0 * elapsed + 1.0,
        "{ok} admitted in {elapsed:.2}s: {statuses:?}"
    );
    assert_eq!(ok + count(&statuses, 429), statuses.len(), "{statuses:?}");
    let refused = push(&plane.http, &key).await.expect(429);
    let retry: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let errors = refused.errors();
    assert!(
        errors[0].contains("\"limited\"") && errors[0].contains("10 pushes/s, burst 10"),
        "{errors:?}"
    );
    // Another key is not held back, and nothing refused reached the upstream.
    assert_eq!(push(&plane.http, &free).await.status, 200);
    let metric = "pyrogate_key_limited_total{key=\"limited\"}";
    assert!(plane.node.metric(metric).await >= 1.0);

    // At its rate (8/s against 10/s), every push passes once the burst has refilled.
    let deadline = Deadline::secs(10, "the bucket to refill");
    while push(&plane.http, &key).await.status != 200 {
        deadline.tick(String::new).await;
    }
    let mut pace = tokio::time::interval(Duration::from_millis(125));
    pace.tick().await; // the first tick is now: the next push comes one period on
    let mut paced = Vec::new();
    for _ in 0..16 {
        pace.tick().await;
        paced.push(push(&plane.http, &key).await.status.as_u16());
    }
    assert_eq!(count(&paced, 200), paced.len(), "{paced:?}");

    // Exhaust it again, then raise the limit: the same key runs free within a second.
    let deadline = Deadline::secs(10, "the key to be limited again");
    while push(&plane.http, &key).await.status != 429 {
        deadline.tick(String::new).await;
    }
    let raised_at = Instant::now();
    let view = set_limits(
        &admin,
        id,
        json!({ "pushesPerSecond": 1000.0, "burstPushes": 1000 }),
    )
    .await;
    assert_eq!(view["limits"]["pushesPerSecond"], json!(1000.0), "{view}");
    let version = plane.authority.revocations_version().await;
    let deadline = Deadline::secs(5, "the raised limit on the node");
    loop {
        let ready = plane.node.ready().await;
        if ready["revocationsVersion"].as_u64() >= Some(version) {
            break;
        }
        deadline.tick(|| ready.to_string()).await;
    }
    let took = raised_at.elapsed();
    let after = rapid(&plane.http, &key, 50).await;
    assert_eq!(count(&after, 200), after.len(), "{after:?}");
    assert!(
        took <= Duration::from_secs(1),
        "the raised limit took {took:?} to reach the node"
    );
    println!("raised limit in force on the node {took:?} after the PATCH");

    // The key lists its limit; `null` removes it.
    let keys = admin.keys().await;
    let listed = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "limited")
        .unwrap();
    assert_eq!(listed["limits"]["burstPushes"], json!(1000), "{listed}");
    assert_eq!(
        set_limits(&admin, id, Value::Null).await["limits"],
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
    let plane = plane().await;
    let admin = plane.authority.admin().await;
    let (_, key) = limited_key(
        &admin,
        "bytes",
        json!({ "bytesPerSecond": 1000, "burstBytes": 1000 }),
    )
    .await;
    synced(&plane.http, plane.authority.revocations_version().await).await;
    // Headers that declare 100 kB, and not one byte of the body: the answer comes anyway.
    let addr = plane.node.url.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {PUSH} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"
    );
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("answered before the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(answer.starts_with("http/1.1 429"), "{answer}");
    assert!(answer.contains("retry-after:"), "{answer}");
    assert!(answer.contains("bytes limit"), "{answer}");
    // A small push within the burst passes.
    let small = plane
        .http
        .post(PUSH)
        .bearer(&key)
        .raw("text/plain", "main;work 1\n")
        .send()
        .await;
    assert_eq!(small.status, 200, "{}", small.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_hold_a_key_to_its_fleet_wide_limit() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::on_system_clock().await;
    let admin = authority.admin().await;
    let upstream = Upstream::start().await;
    let (_, k1) = authority.new_key("ingest-1-key", "Node", None).await;
    let (_, k2) = authority.new_key("ingest-2-key", "Node", None).await;
    const RATE: f64 = 10.0;
    const BURST: f64 = 5.0;
    let (_, key) = limited_key(
        &admin,
        "shared",
        json!({ "pushesPerSecond": RATE, "burstPushes": BURST as u64 }),
    )
    .await;
    let one = Node::reporting(
        &dir.path().join("1"),
        &authority,
        &upstream.url(),
        "ingest-1",
        &k1,
    )
    .await;
    let two = Node::reporting(
        &dir.path().join("2"),
        &authority,
        &upstream.url(),
        "ingest-2",
        &k2,
    )
    .await;
    // Once both report, the authority publishes two live nodes: each enforces half.
    let share = "pyrogate_key_limit_pushes_per_second{key=\"shared\"}";
    for node in [&one, &two] {
        let deadline = Deadline::secs(20, "each node to enforce half the limit");
        loop {
            let s = node.metric(share).await;
            if s == RATE / 2.0 {
                break;
            }
            deadline.tick(|| format!("share {s}")).await;
        }
    }
    // Drain both bursts, then push as fast as both nodes take it for a while.
    rapid(&one.client(), &key, 10).await;
    rapid(&two.client(), &key, 10).await;
    let window = Duration::from_secs(3);
    let started = Instant::now();
    let hammer = |http: Http, key: String| {
        tokio::spawn(async move {
            let mut ok = 0u64;
            let mut total = 0u64;
            while started.elapsed() < window {
                total += 1;
                if push(&http, &key).await.status == 200 {
                    ok += 1;
                }
            }
            (ok, total)
        })
    };
    let a = hammer(one.client(), key.clone());
    let b = hammer(two.client(), key.clone());
    let ((ok_a, total_a), (ok_b, total_b)) = (a.await.unwrap(), b.await.unwrap());
    let secs = started.elapsed().as_secs_f64();
    let ok = (ok_a + ok_b) as f64;
    println!(
        "two nodes, limit {RATE}/s: {ok} of {} pushes admitted in {secs:.2}s ({:.1}/s; node 1 {ok_a}/{total_a}, node 2 {ok_b}/{total_b})",
        total_a + total_b,
        ok / secs
    );
    assert!(
        total_a + total_b > 4 * ok as u64,
        "the nodes were pushed hard"
    );
    assert!(
        ok <= RATE * secs + 2.0 * BURST && ok >= RATE * secs - 2.0 * BURST,
        "fleet-wide {ok} in {secs:.2}s against {RATE}/s ± the burst"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_the_authority_down_enforces_the_limits_it_had() {
    let mut plane = plane().await;
    let admin = plane.authority.admin().await;
    let (_, key) = limited_key(
        &admin,
        "cached",
        json!({ "pushesPerSecond": 2.0, "burstPushes": 3 }),
    )
    .await;
    let (_, free) = admin.new_key("free", "Agent", None).await;
    synced(&plane.http, plane.authority.revocations_version().await).await;
    plane.authority.stop().await;
    let node = plane.node.restart().await;
    let http = node.client();
    let deadline = Deadline::secs(20, "the restarted node to serve from its cache");
    loop {
        let status = push(&http, &free).await.status;
        if status == 200 {
            break;
        }
        deadline.tick(|| format!("status {status}")).await;
    }
    let started = Instant::now();
    let statuses = rapid(&http, &key, 20).await;
    let elapsed = started.elapsed().as_secs_f64();
    let ok = count(&statuses, 200);
    assert!(
        ok >= 3 && ok as f64 <= 3.0 + 2.0 * elapsed + 1.0,
        "{ok} admitted in {elapsed:.2}s: {statuses:?}"
    );
    assert!(count(&statuses, 429) > 0, "{statuses:?}");
}

/// Someone at the authority's address serving the genuine key set and a list of its choosing.
struct Fake {
    stop: Option<oneshot::Sender<()>>,
    list: Arc<Mutex<String>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn fake_authority(addr: SocketAddr, keyset: String, jwks: String, list: String) -> Fake {
    let list = Arc::new(Mutex::new(list));
    let served = list.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/pyrogate-keyset",
            get(move || {
                let body = keyset.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/.well-known/jwks.json",
            get(move || {
                let body = jwks.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/api/revocations",
            get(move || {
                let body = served.lock().unwrap().clone();
                async move {
                    (
                        StatusCode::OK,
                        [(header::ETAG, "\"999999\"")],
                        body,
                    )
                        .into_response()
                }
            }),
        );
    let deadline = Deadline::secs(10, format!("binding the fake authority on {addr}"));
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => deadline.tick(|| e.to_string()).await,
        }
    };
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Fake {
        stop: Some(tx),
        list,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The genuine list with a higher version and every limit raised a thousandfold, keeping the
/// genuine header and signature (which no longer match).
fn raised(genuine: &str) -> (String, Value) {
    let mut parts = genuine.trim().split('.');
    let (header, payload) = (parts.next().unwrap(), parts.next().unwrap());
    let signature = parts.next().unwrap();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["ver"] = json!(claims["ver"].as_u64().unwrap() + 100);
    for k in claims["limits"]["keys"].as_array_mut().unwrap() {
        k["pushesPerSecond"] = json!(10_000.0);
        k["burstPushes"] = json!(10_000);
    }
    let payload = b64(claims.to_string().as_bytes());
    (format!("{header}.{payload}.{signature}"), claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_unsigned_list_raising_a_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut authority = Authority::on_system_clock().await;
    let admin = authority.admin().await;
    let upstream = Upstream::start().await;
    let (_, key) = limited_key(
        &admin,
        "held",
        json!({ "pushesPerSecond": 1.0, "burstPushes": 2 }),
    )
    .await;
    let node = Node::start(
        &dir.path().join("node"),
        &format!(
            "authority-url: {}\nupstream: {}\nauth:\n  ingestion:\n    enabled: true\n{}\
             sync:\n  wait: 1s\n",
            authority.origin(),
            upstream.url(),
            authority.trust_yaml()
        ),
    )
    .await;
    node.wait_synced(authority.revocations_version().await)
        .await;
    let genuine = authority
        .client()
        .get("/api/revocations")
        .send()
        .await
        .expect(200)
        .text();
    let keyset = authority
        .client()
        .get("/.well-known/pyrogate-keyset")
        .send()
        .await
        .expect(200)
        .text();
    let jwks = authority
        .client()
        .get("/.well-known/jwks.json")
        .send()
        .await
        .expect(200)
        .text();
    let addr: SocketAddr = authority
        .origin()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    authority.stop().await;

    let (tampered, claims) = raised(&genuine);
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"revocations+jwt"}"#),
        b64(claims.to_string().as_bytes())
    );
    let version = node.ready().await["revocationsVersion"].clone();
    let fake = fake_authority(addr, keyset, jwks, tampered).await;
    for (what, list) in [("tampered", None), ("unsigned", Some(unsigned))] {
        if let Some(list) = list {
            *fake.list.lock().unwrap() = list;
        }
        // The node fetches the forgery and refuses it: a sync failure, the list in force kept.
        let failures = node.metric("pyrogate_sync_failures_total").await;
        let deadline = Deadline::secs(20, format!("the node to refuse the {what} list"));
        loop {
            let now = node.metric("pyrogate_sync_failures_total").await;
            if now >= failures + 2.0 {
                break;
            }
            deadline.tick(|| format!("{now} failures")).await;
        }
        assert_eq!(
            node.ready().await["revocationsVersion"],
            version,
            "{what} list not in force"
        );
        let statuses = rapid(&node.client(), &key, 10).await;
        assert!(
            count(&statuses, 429) >= 5,
            "{what}: still held to 1/s: {statuses:?}"
        );
    }
}
