//! Distribution to ingest nodes: `GET /.well-known/jwks.json` and the signed revocation list
//! `GET /api/revocations` with its ETag, 304s and long-poll.

use std::time::{Duration, Instant};

use pyrogate::core::jwk::{JwkSet, KeySet};
use pyrogate::core::revocation::RevocationList;
use serde_json::Value;

use crate::harness::*;

async fn key_set(http: &Http) -> KeySet {
    let jwks: JwkSet = serde_json::from_slice(
        &http
            .get("/.well-known/jwks.json")
            .send()
            .await
            .expect(200)
            .body,
    )
    .expect("a JWK Set");
    KeySet::from_jwks(&jwks).expect("a usable JWK Set")
}

async fn etag(http: &Http) -> String {
    let r = http.get("/api/revocations").send().await.expect(200);
    r.header("etag").expect("ETag").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_publishes_the_active_ed25519_key_with_kid_alg_and_use() {
    let app = Authority::start().await;
    let r = app
        .client()
        .get("/.well-known/jwks.json")
        .send()
        .await
        .expect(200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let jwks = r.json();
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(
        pyrogate::core::b64::decode(s(key, "x")).expect("x").len(),
        32,
        "{key}"
    );
    assert!(key.get("d").is_none(), "private key published: {key}");
    let active = app
        .state
        .keyring
        .lock()
        .expect("keyring")
        .active()
        .kid()
        .to_owned();
    assert_eq!(key["kid"], active.as_str());
    // The kid is the key's RFC 7638 thumbprint (from_jwks checks it).
    let set = KeySet::from_jwks(&serde_json::from_value(jwks).expect("JwkSet")).expect("valid");
    assert!(set.contains(&active));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_list_has_its_version_as_etag_and_answers_304_to_it() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let node = app.client();
    let r = node.get("/api/revocations").send().await.expect(200);
    assert_eq!(r.header("etag"), Some("\"0\""));
    assert_eq!(r.header("content-type"), Some("application/jwt"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let r = node
        .get("/api/revocations")
        .header("if-none-match", "\"0\"")
        .send()
        .await
        .expect(304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("\"0\""));

    let key = admin.create_key("gone", "Agent", 0).await;
    // Creating a key changes nothing in the list.
    node.get("/api/revocations")
        .header("if-none-match", "\"0\"")
        .send()
        .await
        .expect(304);
    admin
        .delete(&format!("/api/keys/{}", key["id"]))
        .send()
        .await
        .expect(204);
    let r = node
        .get("/api/revocations")
        .header("if-none-match", "\"0\"")
        .send()
        .await
        .expect(200);
    assert_eq!(r.header("etag"), Some("\"1\""));
    for matching in ["\"1\"", "W/\"1\"", "\"7\", \"1\"", "*"] {
        node.get("/api/revocations")
            .header("if-none-match", matching)
            .send()
            .await
            .expect(304);
    }
    for stale in ["\"0\"", "\"2\"", "1", "garbage"] {
        node.get("/api/revocations")
            .header("if-none-match", stale)
            .send()
            .await
            .expect(200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_list_is_a_jws_that_verifies_against_the_jwks_and_names_deleted_keys() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let node = app.client();
    let keys = key_set(&node).await;
    let empty = node.get("/api/revocations").send().await.expect(200).text();
    let list = RevocationList::verify(&empty, &keys, "pyrogate").expect("verifies");
    assert_eq!(list.ver, 0);
    assert!(list.entries.is_empty());

    let kept = admin.create_key("kept", "Agent", 0).await;
    let gone = admin.create_key("gone", "Agent", 3600).await;
    let forever = admin.create_key("forever", "Admin", 0).await;
    for k in [&gone, &forever] {
        admin
            .delete(&format!("/api/keys/{}", k["id"]))
            .send()
            .await
            .expect(204);
    }
    let body = node.get("/api/revocations").send().await.expect(200).text();
    let list = RevocationList::verify(&body, &keys, "pyrogate").expect("verifies");
    assert_eq!(list.iss, "pyrogate");
    assert_eq!(list.ver, 2);
    let gone_claims = claims_of(s(&gone, "key"));
    let forever_claims = claims_of(s(&forever, "key"));
    let jtis: Vec<&str> = list.entries.iter().map(|e| e.jti.as_str()).collect();
    let entry = |jti: &str| {
        list.entries
            .iter()
            .find(|e| e.jti == jti)
            .unwrap_or_else(|| panic!("{jti} not in {jtis:?}"))
    };
    assert_eq!(list.entries.len(), 2);
    assert_eq!(
        entry(s(&gone_claims, "jti")).exp,
        gone_claims["exp"].as_u64()
    );
    assert_eq!(entry(s(&forever_claims, "jti")).exp, None);
    let kid = app
        .state
        .keyring
        .lock()
        .expect("keyring")
        .active()
        .kid()
        .to_owned();
    assert!(list.entries.iter().all(|e| e.kid.as_deref() == Some(&kid)));
    let kept_jti = s(&claims_of(s(&kept, "key")), "jti").to_owned();
    assert!(!jtis.contains(&kept_jti.as_str()));

    // Nodes must not accept it for another issuer, from another key, or altered.
    assert!(RevocationList::verify(&body, &keys, "someone-else").is_err());
    let other =
        KeySet::new([pyrogate::core::crypto::SigningKey::from_bytes(&[9; 32]).verifying_key()]);
    assert!(RevocationList::verify(&body, &other, "pyrogate").is_err());
    let mut payload = claims_of(&body);
    payload["entries"] = Value::Array(vec![]);
    let parts: Vec<&str> = body.split('.').collect();
    let altered = format!(
        "{}.{}.{}",
        parts[0],
        pyrogate::core::b64::encode(payload.to_string().as_bytes()),
        parts[2]
    );
    assert!(RevocationList::verify(&altered, &keys, "pyrogate").is_err());
}

fn ms(d: f64) -> String {
    format!("{d:.2} ms")
}

/// The target is that a deletion reaches long-polling nodes within 100 ms; this
/// measures it over real TCP and asserts generously (1 s) so a loaded CI machine does not flake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_a_key_is_deleted() {
    const ROUNDS: usize = 20;
    let app = Authority::start().await;
    let admin = app.admin().await;
    let node = app.client();
    let mut ids = Vec::new();
    for i in 0..ROUNDS {
        ids.push(admin.create_key(&format!("k{i}"), "Agent", 0).await["id"].clone());
    }
    // Delay from the DELETE's response to the long-poll's response (negative when the
    // long-poll answered first: the list is republished before the DELETE returns), and from
    // the DELETE being sent.
    let mut after_response = Vec::new();
    let mut after_send = Vec::new();
    for (round, id) in ids.iter().enumerate() {
        let current = etag(&node).await;
        assert_eq!(current, format!("\"{round}\""));
        let poller = node.clone();
        let tag = current.clone();
        let mut poll = tokio::spawn(async move {
            let r = poller
                .get("/api/revocations?wait=5")
                .header("if-none-match", &tag)
                .send()
                .await;
            (r, Instant::now())
        });
        // Nothing changed yet, so the long-poll must still be waiting.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut poll)
                .await
                .is_err(),
            "the long-poll answered before anything changed"
        );
        let sent = Instant::now();
        admin
            .delete(&format!("/api/keys/{id}"))
            .send()
            .await
            .expect(204);
        let deleted = Instant::now();
        let (r, arrived) = poll.await.expect("poll task");
        let r = r.expect(200);
        assert_eq!(
            r.header("etag").map(str::to_owned),
            Some(format!("\"{}\"", round + 1))
        );
        let signed = if arrived >= deleted {
            (arrived - deleted).as_secs_f64()
        } else {
            -(deleted - arrived).as_secs_f64()
        };
        after_response.push(signed * 1000.0);
        after_send.push((arrived - sent).as_secs_f64() * 1000.0);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (min, median, max) = stats(&mut after_response);
    println!(
        "long-poll delay after the DELETE response, {ROUNDS} deletions: min {} / median {} / max {}",
        ms(min),
        ms(median),
        ms(max)
    );
    let (smin, smedian, smax) = stats(&mut after_send);
    println!(
        "long-poll delay after the DELETE was sent, {ROUNDS} deletions: min {} / median {} / max {}",
        ms(smin),
        ms(smedian),
        ms(smax)
    );
    assert!(smax < 1000.0, "slowest long-poll took {}", ms(smax));
    assert!(max < 1000.0, "slowest long-poll took {}", ms(max));
    // The last list names every deleted key.
    let keys = key_set(&node).await;
    let body = node.get("/api/revocations").send().await.expect(200).text();
    let list = RevocationList::verify(&body, &keys, "pyrogate").expect("verifies");
    assert_eq!(list.entries.len(), ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_waiting_node_is_woken_by_one_deletion() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let key = admin.create_key("shared", "Agent", 0).await;
    let mut polls = Vec::new();
    for _ in 0..8 {
        let node = app.client();
        polls.push(tokio::spawn(async move {
            node.get("/api/revocations?wait=10")
                .header("if-none-match", "\"0\"")
                .send()
                .await
        }));
    }
    let started = Instant::now();
    admin
        .delete(&format!("/api/keys/{}", key["id"]))
        .send()
        .await
        .expect(204);
    for poll in polls {
        let r = poll.await.expect("poll").expect(200);
        assert_eq!(r.header("etag"), Some("\"1\""));
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Long-polls the authority counts as held (`pyrogate_revocation_long_polls`).
async fn held_polls(app: &Authority) -> f64 {
    let text = app.client().get("/metrics").send().await.expect(200).text();
    metric_value(&text, "pyrogate_revocation_long_polls")
}

/// Many nodes, each on its own connection, all provably waiting before the one deletion: every
/// one of them gets the new version, the same signed bytes, and lets go of its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deletion_reaches_every_one_of_many_held_polls() {
    const POLLS: usize = 300;
    let app = Authority::start().await;
    let admin = app.admin().await;
    let key = admin.create_key("shared", "Agent", 0).await;
    let mut polls = Vec::new();
    for _ in 0..POLLS {
        let node = app.client();
        polls.push(tokio::spawn(async move {
            node.get("/api/revocations?wait=30")
                .header("if-none-match", "\"0\"")
                .send()
                .await
        }));
    }
    let deadline = Deadline::secs(20, format!("{POLLS} long-polls to be held"));
    loop {
        let held = held_polls(&app).await;
        if held >= POLLS as f64 {
            break;
        }
        deadline.tick(|| format!("{held} held")).await;
    }
    admin
        .delete(&format!("/api/keys/{}", key["id"]))
        .send()
        .await
        .expect(204);
    let mut bodies = std::collections::HashSet::new();
    for poll in polls {
        let r = poll.await.expect("poll").expect(200);
        assert_eq!(r.header("etag"), Some("\"1\""));
        assert_eq!(r.header("content-type"), Some("application/jwt"));
        bodies.insert(r.text());
    }
    assert_eq!(bodies.len(), 1, "every poll got the same signed list");
    let body = bodies.into_iter().next().expect("one body");
    let list =
        RevocationList::verify(&body, &key_set(&app.client()).await, "pyrogate").expect("verifies");
    assert_eq!((list.ver, list.entries.len()), (1, 1));
    let deadline = Deadline::secs(10, "the held long-polls to be let go");
    loop {
        let held = held_polls(&app).await;
        if held == 0.0 {
            break;
        }
        deadline.tick(|| format!("{held} still held")).await;
    }
}

/// `If-None-Match` may come as several headers; a poll naming the current version in any of
/// them is held, and answered with the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_honours_if_none_match_spread_over_several_headers() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let key = admin.create_key("k", "Agent", 0).await;
    let node = app.client();
    let r = node
        .get("/api/revocations?wait=1")
        .headers(&[("if-none-match", "\"7\""), ("if-none-match", "W/\"0\"")])
        .send()
        .await;
    assert_eq!(r.status, 304, "{}", r.text());
    assert_eq!(r.header("etag"), Some("\"0\""));
    let poll = tokio::spawn(async move {
        node.get("/api/revocations?wait=30")
            .headers(&[("if-none-match", "\"7\""), ("if-none-match", "\"0\"")])
            .send()
            .await
    });
    let deadline = Deadline::secs(10, "the long-poll to be held");
    while held_polls(&app).await < 1.0 {
        deadline.tick(String::new).await;
    }
    admin
        .delete(&format!("/api/keys/{}", key["id"]))
        .send()
        .await
        .expect(204);
    let r = poll.await.expect("poll").expect(200);
    assert_eq!(r.header("etag"), Some("\"1\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_without_a_change_answers_304_after_the_wait() {
    let app = Authority::start().await;
    let node = app.client();
    let started = Instant::now();
    let r = node
        .get("/api/revocations?wait=1")
        .header("if-none-match", "\"0\"")
        .send()
        .await
        .expect(304);
    let took = started.elapsed();
    assert_eq!(r.header("etag"), Some("\"0\""));
    assert!(
        took >= Duration::from_millis(950),
        "returned after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "returned after {took:?}");
    // Without If-None-Match there is nothing to wait for.
    let started = Instant::now();
    node.get("/api/revocations?wait=5").send().await.expect(200);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_capped_at_revocations_max_wait() {
    let app = Authority::start_with("revocations:\n  max-wait: 1s\n").await;
    let started = Instant::now();
    app.client()
        .get("/api/revocations?wait=600")
        .header("if-none-match", "\"0\"")
        .send()
        .await
        .expect(304);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_is_not_a_duration_is_a_400() {
    let app = Authority::start().await;
    for wait in ["abc", "-1", "1.5", "5 minutes"] {
        let r = app
            .client()
            .get(&format!(
                "/api/revocations?wait={}",
                wait.replace(' ', "%20")
            ))
            .header("if-none-match", "\"0\"")
            .send()
            .await;
        assert_eq!(r.status, 400, "{wait}: {}", r.text());
        assert_eq!(r.errors(), vec!["wait must be a number of seconds"]);
    }
    // Twice is a mistake too, answered in the same shape (it was a plain-text 400).
    let r = app
        .client()
        .get("/api/revocations?wait=1&wait=2")
        .send()
        .await
        .expect(400);
    assert_eq!(r.errors(), vec!["give wait once"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_ends_pending_long_polls_at_once() {
    let mut app = Authority::start().await;
    let node = app.client();
    let poll = tokio::spawn(async move {
        node.get("/api/revocations?wait=30")
            .header("if-none-match", "\"0\"")
            .send()
            .await
    });
    // Wait until the long-poll is in the server.
    let mut poll = poll;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut poll)
            .await
            .is_err()
    );
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("graceful shutdown waited for a 30 s long-poll");
    let r = poll.await.expect("poll").expect(304);
    assert_eq!(r.header("etag"), Some("\"0\""));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_expired_keys_are_pruned_and_never_expiring_ones_stay() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let short = admin.create_key("short", "Agent", 60).await;
    let forever = admin.create_key("forever", "Agent", 0).await;
    for k in [&short, &forever] {
        admin
            .delete(&format!("/api/keys/{}", k["id"]))
            .send()
            .await
            .expect(204);
    }
    let node = app.client();
    let keys = key_set(&node).await;
    let r = node.get("/api/revocations").send().await.expect(200);
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_eq!(
        RevocationList::verify(&r.text(), &keys, "pyrogate")
            .expect("verifies")
            .entries
            .len(),
        2
    );
    // Past the short key's exp, the clock skew and the prune interval (all on the clock):
    // the background task drops its entry and publishes a new version.
    app.clock().advance(60 + 60 + 60 + 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = node
            .get("/api/revocations?wait=1")
            .header("if-none-match", "\"2\"")
            .send()
            .await;
        if r.status == 200 {
            break r;
        }
        assert!(Instant::now() < deadline, "no pruned list within 5 s");
    };
    assert_eq!(r.header("etag"), Some("\"3\""));
    let list = RevocationList::verify(&r.text(), &keys, "pyrogate").expect("verifies");
    let jtis: Vec<&str> = list.entries.iter().map(|e| e.jti.as_str()).collect();
    assert_eq!(jtis, vec![s(&claims_of(s(&forever, "key")), "jti")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_past_the_cap_get_a_503_instead_of_being_held() {
    let app = Authority::start_with("revocations:\n  max-long-polls: 1\n").await;
    // Five polls at once with room for one: the others are shed, not held.
    let polls: Vec<_> = (0..5)
        .map(|_| {
            let http = app.client();
            tokio::spawn(async move {
                let r = http
                    .get("/api/revocations?wait=3")
                    .header("if-none-match", "\"0\"")
                    .send()
                    .await;
                let errors = if r.status == 503 {
                    r.errors()
                } else {
                    Vec::new()
                };
                (r.status.as_u16(), errors)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for p in polls {
        statuses.push(p.await.unwrap());
    }
    let shed: Vec<_> = statuses.iter().filter(|(s, _)| *s == 503).collect();
    assert!(shed.len() >= 3, "{statuses:?}");
    assert!(
        shed.iter().all(|(_, e)| e[0].contains("long-polls")),
        "{statuses:?}"
    );
    // A plain fetch (no wait) is never shed.
    app.client()
        .get("/api/revocations")
        .send()
        .await
        .expect(200);
}
