//! A fleet of real processes: one `pyrogate server` and three `pyrogate ingest` nodes on
//! loopback. A deleted key must be refused by every node within a second (the measured
//! p50/p99/max are printed), and the nodes must keep refusing revoked keys — and accepting good
//! ones — while the authority is down, even after a restart from their cache.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{
    ADMIN, ADMIN_PASSWORD, Deadline, Http, Server, revocations_version, wait_synced,
};

async fn start_authority(dir: &Path) -> Server {
    let data = dir.join("data");
    let keys = dir.join("keys");
    Server::start(
        "authority",
        &[
            "server",
            "--storage-path",
            data.to_str().expect("utf-8 path"),
            "--keys-dir",
            keys.to_str().expect("utf-8 path"),
            "--auth.internal.admin.password",
            ADMIN_PASSWORD,
        ],
        &[("RUST_LOG", "info")],
    )
    .await
}

/// The authority's signing key, as a node pins it: the kid its JWKS publishes.
async fn trust_anchor(authority_url: &str) -> String {
    let jwks = Http::new(authority_url)
        .get("/.well-known/jwks.json")
        .send()
        .await
        .expect(200)
        .json();
    jwks["keys"][0]["kid"].as_str().expect("kid").to_owned()
}

async fn start_node(name: &str, authority_url: &str, kid: &str, storage: &Path) -> Server {
    Server::start(
        name,
        &[
            "ingest",
            "--authority-url",
            authority_url,
            "--authority.trusted-keys",
            kid,
            "--storage-path",
            storage.to_str().expect("utf-8 path"),
            "--auth.ingestion.enabled",
        ],
        &[("RUST_LOG", "info")],
    )
    .await
}

/// A push with `key` to the node behind `node`; returns the status.
async fn push(node: &Http, key: &str) -> u16 {
    node.post("/ingest?name=fleet.cpu&from=1&until=2")
        .bearer(key)
        .raw("text/plain", "main;work 1\n")
        .send()
        .await
        .status
        .as_u16()
}

async fn ready(server: &Server) -> serde_json::Value {
    server.client().get("/ready").send().await.json()
}

async fn wait_version(node: &Server, version: u64) {
    let deadline = Deadline::secs(
        30,
        format!("{} to load revocation list {version}", node.name),
    );
    wait_synced(&node.client(), version, deadline, || node.log()).await;
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_is_refused_by_every_node_within_a_second_and_nodes_outlive_the_authority() {
    const KEYS: usize = 10;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut authority = start_authority(&dir.path().join("authority")).await;
    let kid = trust_anchor(&authority.url).await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let storage = dir.path().join(format!("node{i}"));
        nodes.push(start_node(&format!("node{i}"), &authority.url, &kid, &storage).await);
    }
    let admin = authority.client();
    admin.login(ADMIN, ADMIN_PASSWORD).await.expect(204);
    let version = |r: serde_json::Value| r["revocationsVersion"].as_u64().unwrap_or(0);
    for node in &nodes {
        wait_version(node, revocations_version(&admin).await).await;
    }

    let (_, keeper) = admin.new_key("keeper", "Agent", None).await;
    let mut revoked = Vec::new();
    let mut delays = Vec::new();
    for k in 0..KEYS {
        let (id, key) = admin
            .new_key(&format!("short-lived-{k}"), "Agent", Some("fleet"))
            .await;
        for node in &nodes {
            assert_eq!(
                push(&node.client(), &key).await,
                200,
                "{} before delete",
                node.name
            );
        }
        let deleted_at = Instant::now();
        admin.delete_key(id).await;
        // Every node polled side by side, every 10 ms, until it refuses the key.
        let waits: Vec<_> = nodes
            .iter()
            .map(|node| {
                let (http, key, name) = (node.client(), key.clone(), node.name.clone());
                tokio::spawn(async move {
                    let deadline = Deadline::secs(10, format!("{name} to refuse deleted key {k}"));
                    loop {
                        let status = push(&http, &key).await;
                        if status == 401 {
                            return deleted_at.elapsed();
                        }
                        assert_eq!(status, 200, "{name}");
                        deadline.tick(|| format!("status {status}")).await;
                    }
                })
            })
            .collect();
        for wait in waits {
            delays.push(wait.await.expect("a node refuses the deleted key"));
        }
        revoked.push(key);
    }

    delays.sort();
    let (p50, p99, max) = (
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays[delays.len() - 1],
    );
    println!(
        "revocation propagation over {} samples ({KEYS} keys x {} nodes), from DELETE sent to the first refused push: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        delays.len(),
        nodes.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    assert!(
        p99 <= Duration::from_secs(1),
        "p99 {p99:?} over a second: {delays:?}"
    );

    // The authority goes away; the nodes carry on with what they have.
    let final_version = revocations_version(&admin).await;
    for node in &nodes {
        wait_version(node, final_version).await;
    }
    let status = authority.terminate().await;
    assert!(
        status.success(),
        "the authority shuts down cleanly on SIGTERM ({status}):\n{}",
        authority.log()
    );
    let authority_addr = authority.url.trim_start_matches("http://").to_owned();
    assert!(
        std::net::TcpStream::connect(&authority_addr).is_err(),
        "the authority is gone"
    );
    check(&nodes, &keeper, &revoked).await;

    // A node restarted while the authority is still down starts from its cache.
    let storage = dir.path().join("node0");
    nodes[0].kill();
    nodes[0] = start_node("node0 (restarted)", &authority.url, &kid, &storage).await;
    let r = ready(&nodes[0]).await;
    assert_eq!(r["ready"], json!(true), "{r}");
    assert_eq!(r["keysLoaded"], json!(true), "{r}");
    assert_eq!(
        version(r.clone()),
        final_version,
        "the cached revocation list: {r}"
    );
    check(&nodes, &keeper, &revoked).await;
    assert!(
        nodes[0]
            .log()
            .contains("loaded the cached key set and revocation list"),
        "{}",
        nodes[0].log()
    );
}

/// Every node accepts `keeper` and refuses every key in `revoked`.
async fn check(nodes: &[Server], keeper: &str, revoked: &[String]) {
    for node in nodes {
        assert_eq!(
            push(&node.client(), keeper).await,
            200,
            "{}: a valid key",
            node.name
        );
        for key in revoked {
            assert_eq!(
                push(&node.client(), key).await,
                401,
                "{}: a revoked key",
                node.name
            );
        }
    }
}
