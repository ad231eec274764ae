//! What a node trusts, tried as an attacker would: a fake authority at the real one's address
//! (its own Ed25519 key, key set and revocation list), a replayed older genuine key set, a
//! node that slept through a rotation and a retirement, a hand-edited cache, a lost list, and a
//! man in the middle who answers every poll with `304`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse as _;
use axum::routing::get;
use pyrogate::core::clock::{Clock as _, ManualClock, SystemClock};
use pyrogate::core::crypto::SigningKey;
use pyrogate::core::jwk::KeySet;
use pyrogate::core::jws::Signer;
use pyrogate::core::keyset::{self, KeySetClaims};
use pyrogate::core::revocation::RevocationList;
use pyrogate::core::token::{self, KeyRequest, Role};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::harness::*;

const PUSH: &str = "/ingest?name=trust.cpu&format=folded";

/// Someone else answering at the authority's address, serving fixed documents. With no
/// `revocations`, every poll gets a bare `304`.
struct Fake {
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn fake_authority(
    addr: SocketAddr,
    keyset: String,
    jwks: String,
    revocations: Option<String>,
) -> Fake {
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
                let body = revocations.clone();
                async move {
                    match body {
                        Some(jws) => (
                            StatusCode::OK,
                            [(header::ETAG, "\"18446744073709551615\"")],
                            jws,
                        )
                            .into_response(),
                        None => {
                            (StatusCode::NOT_MODIFIED, [(header::ETAG, "\"0\"")]).into_response()
                        }
                    }
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
    Fake { stop: Some(tx) }
}

/// An impostor's own key, key set, list (the highest version there is) and Admin key.
struct Impostor {
    keyset: String,
    jwks: String,
    revocations: String,
    admin_key: String,
}

fn impostor() -> Impostor {
    let signer = Signer::new(SigningKey::generate());
    let now = SystemClock.now();
    let jwks = KeySet::new([signer.verifying_key()]).to_jwks();
    let keyset = keyset::sign(
        &KeySetClaims {
            iss: "pyrogate".into(),
            ver: u64::MAX,
            iat: now,
            keys: jwks.clone(),
        },
        std::slice::from_ref(&signer),
    )
    .unwrap();
    let list = RevocationList {
        iss: "pyrogate".into(),
        ver: u64::MAX,
        iat: now,
        entries: Vec::new(),
        ksv: None,
        limits: None,
    };
    let admin_key = token::issue(
        &signer,
        "pyrogate",
        now,
        &KeyRequest {
            name: "impostor",
            role: Role::Admin,
            ttl_seconds: 0,
            tenant: None,
            apps: None,
            cidrs: None,
        },
    )
    .unwrap()
    .token
    .expose()
    .to_owned();
    Impostor {
        keyset,
        jwks: serde_json::to_string(&jwks).unwrap(),
        revocations: list.sign(&signer),
        admin_key,
    }
}

fn addr_of(authority: &Authority) -> SocketAddr {
    authority
        .origin()
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

async fn push(node: &Node, key: &str) -> u16 {
    node.push_status(PUSH, key).await
}

async fn wait_ready_field(node: &Node, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Deadline::secs(30, what.to_owned());
    loop {
        let ready = node.ready().await;
        if done(&ready) {
            return ready;
        }
        deadline.tick(|| ready.to_string()).await;
    }
}

async fn keyset_document(authority: &Authority) -> String {
    authority
        .client()
        .get("/.well-known/pyrogate-keyset")
        .send()
        .await
        .expect(200)
        .text()
}

#[tokio::test]
async fn a_fake_authority_at_the_same_address_gets_none_of_its_keys_or_lists_trusted() {
    let mut authority = Authority::on_system_clock().await;
    let (_, good) = authority.new_key("good", "Agent", None).await;
    let (revoked_id, revoked) = authority.new_key("revoked", "Agent", None).await;
    authority.delete_key(revoked_id).await;
    let upstream = Upstream::start().await;
    let storage = tempfile::tempdir().unwrap();
    let node = Node::with_authority(storage.path(), &authority, &upstream.url()).await;
    assert_eq!(push(&node, &good).await, 200);
    assert_eq!(push(&node, &revoked).await, 401);
    let version = node.ready().await["keySetVersion"].clone();

    let addr = addr_of(&authority);
    authority.stop().await;
    let fake = impostor();
    let _fake = fake_authority(addr, fake.keyset, fake.jwks, Some(fake.revocations)).await;

    // The impostor's Admin key names a kid the node doesn't know, so the node asks at once —
    // and refuses what it gets.
    assert_eq!(push(&node, &fake.admin_key).await, 401);
    let ready = wait_ready_field(&node, "the node to refuse the fake key set", |r| {
        r["keySetRefused"].is_string()
    })
    .await;
    assert!(
        ready["keySetRefused"]
            .as_str()
            .unwrap()
            .contains("not signed by any key this node trusts"),
        "{ready}"
    );
    assert!(node.metric("pyrogate_keyset_refused_total").await >= 1.0);
    assert_eq!(ready["keySetVersion"], version, "{ready}");
    // The fake list (version 2^64-1, signed by the impostor) is refused too: the revoked key
    // stays revoked, the real key keeps working, the impostor's key never does.
    let deadline = Deadline::secs(20, "the node to try the fake revocation list");
    while node.metric("pyrogate_sync_failures_total").await < 2.0 {
        deadline.tick(String::new).await;
    }
    assert_eq!(push(&node, &revoked).await, 401);
    assert_eq!(push(&node, &good).await, 200);
    for path in ["/pyroscope/render?query=x", PUSH] {
        let r = node
            .client()
            .post(path)
            .bearer(&fake.admin_key)
            .body("a;b 1\n")
            .send()
            .await;
        assert_eq!(r.status.as_u16(), 401, "{path}: {}", r.text());
    }
}

#[tokio::test]
async fn a_pinned_node_follows_rotation_and_retirement_and_refuses_a_replayed_older_key_set() {
    let mut authority = Authority::on_system_clock().await;
    let storage = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let node = Node::with_authority(storage.path(), &authority, &upstream.url()).await;
    let old_kid = authority.signing_kid();
    assert_eq!(node.ready().await["keySetVersion"], json!(1));

    let admin = authority.admin().await;
    admin
        .post("/api/signing-keys/rotate")
        .send()
        .await
        .expect(201);
    let (_, new_key) = authority.new_key("after-rotation", "Agent", None).await;
    // Signed by the new key: the node fetches the next key set on the unknown kid.
    let deadline = Deadline::secs(20, "a key signed by the rotated-in key to be accepted");
    while push(&node, &new_key).await != 200 {
        deadline.tick(String::new).await;
    }
    let v2 = keyset_document(&authority).await;
    admin
        .delete(&format!("/api/signing-keys/{old_kid}"))
        .send()
        .await
        .expect(204);
    let ready = wait_ready_field(&node, "the node to follow the retirement", |r| {
        r["keySetVersion"] == json!(3)
    })
    .await;
    assert_eq!(ready["signingKeys"], json!(1), "{ready}");

    // Version 2 was genuine, and is now a replay.
    let addr = addr_of(&authority);
    authority.stop().await;
    let _fake = fake_authority(addr, v2, "{\"keys\":[]}".into(), None).await;
    // Any unknown kid makes the node ask for the key set at once.
    assert_eq!(push(&node, &impostor().admin_key).await, 401);
    let ready = wait_ready_field(&node, "the node to refuse the replayed key set", |r| {
        r["keySetRefused"].is_string()
    })
    .await;
    assert!(
        ready["keySetRefused"]
            .as_str()
            .unwrap()
            .contains("version 2, older than version 3"),
        "{ready}"
    );
    assert_eq!(ready["keySetVersion"], json!(3));
    assert_eq!(push(&node, &new_key).await, 200);
}

#[tokio::test]
async fn a_node_that_slept_through_rotation_and_retirement_says_how_to_re_pin() {
    let authority = Authority::on_system_clock().await;
    let storage = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let mut node = Node::with_authority(storage.path(), &authority, &upstream.url()).await;
    let old_kid = authority.signing_kid();
    node.stop().await;

    let admin = authority.admin().await;
    let rotated = admin
        .post("/api/signing-keys/rotate")
        .send()
        .await
        .expect(201)
        .json();
    let new_kid = s(&rotated, "kid").to_owned();
    admin
        .delete(&format!("/api/signing-keys/{old_kid}"))
        .send()
        .await
        .expect(204);
    let (_, new_key) = authority.new_key("after", "Agent", None).await;

    let yaml = |kid: &str| {
        format!(
            "authority-url: {}\nupstream: {}\nauth:\n  ingestion:\n    enabled: true\nauthority:\n  trusted-keys: {kid}\n",
            authority.origin(),
            upstream.url()
        )
    };
    let node = Node::start(storage.path(), &yaml(&old_kid)).await;
    let ready = wait_ready_field(&node, "the stale node to refuse the new key set", |r| {
        r["keySetRefused"].is_string()
    })
    .await;
    let refusal = ready["keySetRefused"].as_str().unwrap();
    assert!(
        refusal.contains(&format!("--authority.trusted-keys {new_kid}")),
        "{refusal}"
    );
    assert_eq!(push(&node, &new_key).await, 401);

    // Re-pinned as told: the cached chain no longer follows from the anchor and is discarded.
    let node = node.restart_with(&yaml(&new_kid)).await;
    node.wait_synced(authority.revocations_version().await)
        .await;
    assert_eq!(push(&node, &new_key).await, 200);
}

#[tokio::test]
async fn a_tampered_cache_is_refused_at_start_up_and_a_lost_list_means_not_ready() {
    let mut authority = Authority::on_system_clock().await;
    let (_, good) = authority.new_key("good", "Agent", None).await;
    let storage = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let mut node = Node::with_authority(storage.path(), &authority, &upstream.url()).await;
    let yaml = format!(
        "authority-url: {}\nupstream: {}\nauth:\n  ingestion:\n    enabled: true\n{}",
        authority.origin(),
        upstream.url(),
        authority.trust_yaml()
    );
    node.stop().await;
    authority.stop().await;
    let cache = storage.path().join("cache");

    // The list lost while the authority is down: keys, but no verified list.
    let list = std::fs::read_to_string(cache.join("revocations.jwt")).unwrap();
    std::fs::remove_file(cache.join("revocations.jwt")).unwrap();
    let mut node = Node::start(storage.path(), &yaml).await;
    let ready = node.ready().await;
    assert_eq!(ready["keysLoaded"], json!(true), "{ready}");
    assert_eq!(ready["revocationsVerified"], json!(false), "{ready}");
    assert_eq!(ready["ready"], json!(false), "{ready}");
    let r = node
        .client()
        .post(PUSH)
        .bearer(&good)
        .body("a;b 1\n")
        .send()
        .await
        .expect(503);
    assert!(
        r.errors()[0].contains("no verified revocation list"),
        "{:?}",
        r.errors()
    );
    node.stop().await;
    std::fs::write(cache.join("revocations.jwt"), list).unwrap();

    // An impostor's key set and list written into the cache by hand.
    let fake = impostor();
    std::fs::write(
        cache.join("keyset-chain.json"),
        serde_json::to_string(&vec![fake.keyset]).unwrap(),
    )
    .unwrap();
    std::fs::write(cache.join("revocations.jwt"), fake.revocations).unwrap();
    let node = Node::start(storage.path(), &yaml).await;
    let ready = node.ready().await;
    assert_eq!(ready["keysLoaded"], json!(false), "{ready}");
    assert_eq!(ready["ready"], json!(false), "{ready}");
    // Not ready: every push is refused before any key is looked at.
    assert_eq!(push(&node, &fake.admin_key).await, 503);
}

#[tokio::test]
async fn answering_every_poll_with_304_does_not_keep_a_node_fresh() {
    let mut authority = Authority::start_with("revocations:\n  resign-interval: 2s\n").await;
    let (_, good) = authority.new_key("good", "Agent", None).await;
    let node_clock = ManualClock::new(authority.clock().now());
    let storage = tempfile::tempdir().unwrap();
    let yaml = format!(
        "authority-url: {}\nauth:\n  ingestion:\n    enabled: true\nsync:\n  wait: 1s\n  max-staleness: 10s\n{}",
        authority.origin(),
        authority.trust_yaml()
    );
    let node = Node::start_with_clock(storage.path(), &yaml, Arc::new(node_clock.clone())).await;
    node.wait_synced(authority.revocations_version().await)
        .await;
    let issued = node.ready().await["revocationsIssuedAt"].as_u64().unwrap();

    // With the real authority, time passing is no problem: it re-signs, the node fetches the
    // freshly signed list and is current. (Both clocks jump 11 s at once, so the node may be
    // stale for the moment before the new list arrives.)
    authority.clock().advance(11);
    node_clock.advance(11);
    let ready = wait_ready_field(&node, "a re-signed list to reach the node", |r| {
        r["revocationsIssuedAt"].as_u64().unwrap_or(0) >= issued + 11 && r["stale"] == json!(false)
    })
    .await;
    assert_eq!(ready["stale"], json!(false), "{ready}");
    assert_eq!(push(&node, &good).await, 200);

    // A man in the middle answers 304 to everything: contact, but no signed evidence.
    let keyset = keyset_document(&authority).await;
    let addr = addr_of(&authority);
    authority.stop().await;
    let _mitm = fake_authority(addr, keyset, "{\"keys\":[]}".into(), None).await;
    node_clock.advance(11);
    let ready = wait_ready_field(&node, "the node to turn stale despite the 304s", |r| {
        r["stale"] == json!(true)
    })
    .await;
    assert_eq!(ready["ready"], json!(false), "{ready}");
    assert!(
        ready["secondsSinceAuthorityContact"].as_u64().unwrap_or(99) < 5,
        "the node was in contact all along: {ready}"
    );
    assert_eq!(push(&node, &good).await, 503);
}

#[tokio::test]
async fn a_genuine_list_of_a_key_set_the_node_cannot_reach_is_not_installed() {
    // A key signed by the first signing key, revoked; then a rotation the node follows.
    let mut authority = Authority::on_system_clock().await;
    let old_kid = authority.signing_kid();
    let (revoked_id, revoked_old) = authority.new_key("revoked-old", "Agent", None).await;
    authority.delete_key(revoked_id).await;
    let admin = authority.admin().await;
    admin
        .post("/api/signing-keys/rotate")
        .send()
        .await
        .expect(201);
    let storage = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let mut node = Node::with_authority(storage.path(), &authority, &upstream.url()).await;
    let v2 = wait_ready_field(&node, "the node to hold key set 2", |r| {
        r["keySetVersion"] == json!(2)
    })
    .await;
    assert_eq!(v2["signingKeys"], json!(2));
    let v2_doc = keyset_document(&authority).await;
    assert_eq!(push(&node, &revoked_old).await, 401);
    let yaml = format!(
        "authority-url: {}\nupstream: {}\nauth:\n  ingestion:\n    enabled: true\n{}",
        authority.origin(),
        upstream.url(),
        authority
            .trust_yaml()
            .replace(&authority.signing_kid(), &old_kid)
    );
    node.stop().await;

    // Retiring the old key drops its entries from the list (its tokens die with it) — for
    // nodes that follow the retirement. A mirror serves the new list with the old key set.
    admin
        .delete(&format!("/api/signing-keys/{old_kid}"))
        .send()
        .await
        .expect(204);
    let list = authority
        .client()
        .get("/api/revocations")
        .send()
        .await
        .expect(200)
        .text();
    let addr = addr_of(&authority);
    authority.stop().await;
    let _mirror = fake_authority(addr, v2_doc, "{\"keys\":[]}".into(), Some(list)).await;
    let node = Node::start(storage.path(), &yaml).await;
    let deadline = Deadline::secs(20, "the node to see the list it must not install");
    while node.metric("pyrogate_sync_failures_total").await < 1.0 {
        deadline.tick(String::new).await;
    }
    // The old key is still trusted here (key set 2), so its revocations must stay in force.
    assert_eq!(push(&node, &revoked_old).await, 401);
    assert_eq!(node.ready().await["keySetVersion"], json!(2));
}

#[tokio::test]
async fn an_unpinned_node_does_not_start_from_a_cache_anyone_could_have_written() {
    let mut authority = Authority::on_system_clock().await;
    let storage = tempfile::tempdir().unwrap();
    let yaml = format!(
        "authority-url: {}\nauth:\n  ingestion:\n    enabled: true\nauthority:\n  insecure-trust-first-use: true\n",
        authority.origin()
    );
    let mut node = Node::start(storage.path(), &yaml).await;
    node.wait_synced(authority.revocations_version().await)
        .await;
    node.stop().await;
    authority.stop().await;
    let fake = impostor();
    let cache = storage.path().join("cache");
    std::fs::write(
        cache.join("keyset-chain.json"),
        serde_json::to_string(&vec![fake.keyset]).unwrap(),
    )
    .unwrap();
    std::fs::write(cache.join("revocations.jwt"), fake.revocations).unwrap();
    let node = Node::start(storage.path(), &yaml).await;
    let ready = node.ready().await;
    assert_eq!(ready["keysLoaded"], json!(false), "{ready}");
    assert_eq!(
        push(&node, &fake.admin_key).await,
        503,
        "not ready: refused before the key"
    );
}
