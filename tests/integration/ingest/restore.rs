//! A node restarted from its cache while the authority is down never trusts less than it last
//! knew. Each test builds the same history on a real authority and node — a key signed by the
//! first signing key (`retired`: that key is retired later), a rotation, a key deleted later
//! (`revoked`) — keeps copies of the node's files on the way, stops both, puts an older or
//! damaged file back, and restarts the node alone: it accepts neither key, and `/ready` says
//! why. Then the authority comes back on the same address and the node recovers by itself,
//! with no file deleted by hand.

use std::path::Path;
use std::sync::Arc;

use pyrogate::core::clock::{Clock as _, ManualClock};
use serde_json::{Value, json};

use crate::harness::*;

const PUSH: &str = "/ingest?name=restore.cpu&format=folded";
const CHAIN: &str = "cache/keyset-chain.json";
const LIST: &str = "cache/revocations.jwt";
const MARKS: &str = "high-water-marks.json";

/// The node's files at one moment: the cache and the high-water marks.
struct Snapshot(Vec<(&'static str, Vec<u8>)>);

impl Snapshot {
    fn take(storage: &Path) -> Snapshot {
        Snapshot(
            [CHAIN, LIST, MARKS]
                .into_iter()
                .map(|f| (f, std::fs::read(storage.join(f)).expect(f)))
                .collect(),
        )
    }

    /// Writes `files` of this snapshot back over the node's.
    fn put_back(&self, storage: &Path, files: &[&str]) {
        for (name, bytes) in self.0.iter().filter(|(n, _)| files.contains(n)) {
            std::fs::write(storage.join(name), bytes).unwrap();
        }
    }
}

/// The history every test starts from, with the node and the authority stopped.
struct History {
    /// `None` only while it restarts.
    authority: Option<Authority>,
    node: Node,
    storage: tempfile::TempDir,
    yaml: String,
    /// Signed by the first signing key, retired since.
    retired: String,
    /// Deleted since.
    revoked: String,
    good: String,
    /// After the rotation: key set 2, both keys.
    rotated: Snapshot,
    /// After the retirement: key set 3, before `revoked` was deleted.
    retired_state: Snapshot,
    /// The list version the node held last.
    version: u64,
    _upstream: Upstream,
}

async fn history(authority: Authority, clock: Option<&ManualClock>, sync: &str) -> History {
    let old_kid = authority.signing_kid();
    let (_, retired) = authority.new_key("retired", "Agent", None).await;
    let storage = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let yaml = format!(
        "authority-url: {}\nupstream: {}\nauth:\n  ingestion:\n    enabled: true\n{}{sync}",
        authority.origin(),
        upstream.url(),
        authority.trust_yaml()
    );
    let node = start(storage.path(), &yaml, clock).await;
    node.wait_synced(authority.revocations_version().await)
        .await;

    let admin = authority.admin().await;
    admin
        .post("/api/signing-keys/rotate")
        .send()
        .await
        .expect(201);
    let (_, good) = authority.new_key("good", "Agent", None).await;
    let (revoked_id, revoked) = authority.new_key("revoked", "Agent", None).await;
    // Signed by the rotated-in key: the node fetches key set 2 on the unknown kid.
    let deadline = Deadline::secs(20, "key set 2 on the node");
    while node.push_status(PUSH, &good).await != 200 {
        deadline.tick(String::new).await;
    }
    node.wait_synced(authority.revocations_version().await)
        .await;
    let rotated = Snapshot::take(storage.path());

    admin
        .delete(&format!("/api/signing-keys/{old_kid}"))
        .send()
        .await
        .expect(204);
    wait_ready(&node, "the node to follow the retirement", |r| {
        r["keySetVersion"] == json!(3)
    })
    .await;
    node.wait_synced(authority.revocations_version().await)
        .await;
    let retired_state = Snapshot::take(storage.path());

    authority.delete_key(revoked_id).await;
    let version = authority.revocations_version().await;
    node.wait_synced(version).await;
    let mut history = History {
        authority: Some(authority),
        node,
        storage,
        yaml,
        retired,
        revoked,
        good,
        rotated,
        retired_state,
        version,
        _upstream: upstream,
    };
    history.expect_current().await;
    history.node.stop().await;
    history.authority_mut().stop().await;
    history
}

/// A node on `storage` with `yaml`, on `clock` if given.
async fn start(storage: &Path, yaml: &str, clock: Option<&ManualClock>) -> Node {
    match clock {
        Some(clock) => Node::start_with_clock(storage, yaml, Arc::new(clock.clone())).await,
        None => Node::start(storage, yaml).await,
    }
}

async fn wait_ready(node: &Node, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Deadline::secs(30, what.to_owned());
    loop {
        let ready = node.ready().await;
        if done(&ready) {
            return ready;
        }
        deadline.tick(|| ready.to_string()).await;
    }
}

impl History {
    fn authority_mut(&mut self) -> &mut Authority {
        self.authority.as_mut().expect("the authority")
    }

    /// Restarts the node alone on what is on disk now.
    async fn restart_node(&mut self, clock: Option<&ManualClock>) {
        self.node.stop().await;
        self.node = start(self.storage.path(), &self.yaml, clock).await;
    }

    /// The node accepts no key that was retired or revoked by the time it last synced.
    async fn expect_current(&self) {
        assert_eq!(self.node.push_status(PUSH, &self.good).await, 200);
        assert_eq!(self.node.push_status(PUSH, &self.revoked).await, 401);
        assert_eq!(self.node.push_status(PUSH, &self.retired).await, 401);
    }

    /// Not ready, holding no keys, saying why in `cacheRefused`, and accepting no key at all:
    /// every push is a 503 ("try again"), not a 401 that would call a good key bad.
    async fn expect_refused_cache(&self, why: &[&str]) -> Value {
        let ready = self.node.ready().await;
        assert_eq!(ready["ready"], json!(false), "{ready}");
        assert_eq!(ready["keysLoaded"], json!(false), "{ready}");
        let refused = ready["cacheRefused"].as_str().unwrap_or_default();
        for part in why {
            assert!(refused.contains(part), "{part:?} not in {ready}");
        }
        for key in [&self.retired, &self.revoked, &self.good] {
            assert_eq!(self.node.push_status(PUSH, key).await, 503, "{ready}");
        }
        ready
    }

    /// The authority comes back at its address; the node recovers by itself.
    async fn authority_returns(&mut self) {
        let authority = self.authority.take().expect("the authority");
        self.authority = Some(authority.restart_at_same_address().await);
        self.node.wait_synced(self.version).await;
        let ready = self.node.ready().await;
        assert_eq!(ready["cacheRefused"], Value::Null, "{ready}");
        assert_eq!(ready["keySetVersion"], json!(3), "{ready}");
        self.expect_current().await;
    }
}

#[tokio::test]
async fn a_damaged_newest_key_set_is_no_fallback_to_the_older_one_with_the_retired_key() {
    let mut h = history(Authority::on_system_clock().await, None, "").await;
    // One character of the newest document's signature changed: still JSON, no longer
    // authentic; the two older documents still verify and hold the retired key.
    let path = h.storage.path().join(CHAIN);
    let mut chain: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(chain.len(), 3);
    let mut newest: Value = serde_json::from_str(&chain[2]).unwrap();
    newest["signatures"][0] = json!(tamper(newest["signatures"][0].as_str().unwrap()));
    chain[2] = newest.to_string();
    std::fs::write(&path, serde_json::to_string(&chain).unwrap()).unwrap();

    h.restart_node(None).await;
    h.expect_refused_cache(&["document 3 of 3", "keyset-chain.json", "not falling back"])
        .await;
    h.authority_returns().await;

    // The cache was rewritten from the authority's answer: the next restart without the
    // authority starts ready from it.
    h.authority_mut().stop().await;
    h.restart_node(None).await;
    let ready = h.node.ready().await;
    assert_eq!(ready["ready"], json!(true), "{ready}");
    h.expect_current().await;
}

#[tokio::test]
async fn an_older_key_set_chain_beside_the_current_list_is_a_mismatch() {
    let mut h = history(Authority::on_system_clock().await, None, "").await;
    // The chain of key set 2 (old and new key), the list of key set 3.
    h.rotated.put_back(h.storage.path(), &[CHAIN]);

    h.restart_node(None).await;
    h.expect_refused_cache(&[
        "revocations.jwt",
        "signed for key set version 3",
        "holds only version 2",
    ])
    .await;
    h.authority_returns().await;
}

#[tokio::test]
async fn an_older_revocation_list_is_a_rollback_below_the_high_water_marks() {
    let mut h = history(Authority::on_system_clock().await, None, "").await;
    // Key set 3 as now, but the list from before `revoked` was deleted.
    h.retired_state.put_back(h.storage.path(), &[LIST]);

    h.restart_node(None).await;
    h.expect_refused_cache(&["revocations.jwt", "rolled back", MARKS])
        .await;
    h.authority_returns().await;
}

#[tokio::test]
async fn a_whole_snapshot_older_than_max_staleness_is_stale_from_the_first_second() {
    let authority = Authority::start_with("revocations:\n  resign-interval: 2s\n").await;
    let clock = ManualClock::new(authority.clock().now());
    let sync = "sync:\n  wait: 1s\n  max-staleness: 10s\n";
    let mut h = history(authority, Some(&clock), sync).await;
    // Everything the node keeps, marks included, from before the retirement and the deletion.
    h.rotated.put_back(h.storage.path(), &[CHAIN, LIST, MARKS]);
    h.authority_mut().clock().advance(11);
    clock.advance(11);

    h.restart_node(Some(&clock)).await;
    let ready = h.node.ready().await;
    assert_eq!(ready["ready"], json!(false), "{ready}");
    assert_eq!(ready["stale"], json!(true), "{ready}");
    assert_eq!(
        ready["cacheRefused"],
        Value::Null,
        "the marks match: {ready}"
    );
    assert!(
        ready["revocationsAgeSeconds"].as_u64().unwrap() >= 11,
        "{ready}"
    );
    assert!(h.node.metric("pyrogate_revocation_list_age_seconds").await >= 11.0);
    // Key set 2 still holds the retired key, and the list predates the deletion: neither key
    // gets in, because nothing gets in on a list this old.
    for key in [&h.retired, &h.revoked, &h.good] {
        let refused = h
            .node
            .client()
            .post(PUSH)
            .bearer(key)
            .body("a;b 1\n")
            .send()
            .await
            .expect(503);
        assert!(
            refused.errors()[0].contains("sync.max-staleness"),
            "{:?}",
            refused.errors()
        );
    }
    h.authority_returns().await;
    let ready = h.node.ready().await;
    assert!(
        ready["revocationsAgeSeconds"].as_u64().unwrap() < 10,
        "{ready}"
    );
}

#[tokio::test]
async fn an_intact_current_cache_restarts_ready_and_keeps_its_marks_private() {
    let mut h = history(Authority::on_system_clock().await, None, "").await;
    h.restart_node(None).await;
    let ready = h.node.ready().await;
    assert_eq!(ready["ready"], json!(true), "{ready}");
    assert_eq!(ready["cacheRefused"], Value::Null, "{ready}");
    assert!(ready["revocationsAgeSeconds"].is_u64(), "{ready}");
    h.expect_current().await;

    use std::os::unix::fs::PermissionsExt as _;
    let marks_path = h.storage.path().join(MARKS);
    let mode = std::fs::metadata(&marks_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let marks: Value = serde_json::from_slice(&std::fs::read(&marks_path).unwrap()).unwrap();
    assert_eq!(marks["keySet"]["ver"], json!(3), "{marks}");
    assert_eq!(marks["revocations"]["ver"], json!(h.version), "{marks}");

    // A node without marks (upgraded from a version without them) starts as before, and
    // writes them from its cache.
    std::fs::remove_file(&marks_path).unwrap();
    h.restart_node(None).await;
    assert_eq!(h.node.ready().await["ready"], json!(true));
    let again: Value = serde_json::from_slice(&std::fs::read(&marks_path).unwrap()).unwrap();
    assert_eq!(again, marks);
    h.authority_returns().await;
}
