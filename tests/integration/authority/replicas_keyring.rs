//! Replicas of the authority on one PostgreSQL database share one keyring (kept in the
//! database, sealed with the key-encryption key): real `pyrogate server` processes starting
//! together, a rotation on one reaching the other and a node that syncs from it, and a wrong
//! key-encryption key refused.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

async fn jwks_kids(http: &Http) -> Vec<String> {
    let jwks = http
        .get("/.well-known/jwks.json")
        .send()
        .await
        .expect(200)
        .json();
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| s(k, "kid").to_owned())
        .collect();
    kids.sort();
    kids
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().expect("header");
    let header: Value =
        serde_json::from_slice(&pyrogate::core::b64::decode(header).expect("b64")).expect("JSON");
    s(&header, "kid").to_owned()
}

/// The environment of a `pyrogate server` replica on `url` with its own storage under `root`.
fn replica_env(url: &str, kek: &std::path::Path, root: &std::path::Path) -> Vec<(String, String)> {
    vec![
        ("PYROSCOPE_DATABASE_URL".into(), url.into()),
        (
            "PYROSCOPE_AUTHORITY_KEY_ENCRYPTION_KEY_FILE".into(),
            kek.display().to_string(),
        ),
        (
            "PYROSCOPE_STORAGE_PATH".into(),
            root.join("data").display().to_string(),
        ),
        (
            "PYROSCOPE_KEYS_DIR".into(),
            root.join("keys").display().to_string(),
        ),
        (
            "PYROSCOPE_AUTH_INTERNAL_ADMIN_PASSWORD".into(),
            ADMIN_PASSWORD.into(),
        ),
    ]
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_starting_together_on_an_empty_database_make_one_keyring() {
    let url = postgres_database().await;
    let kek = kek_file(&url);
    let (ra, rb) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (env_a, env_b) = (
        replica_env(&url, &kek, ra.path()),
        replica_env(&url, &kek, rb.path()),
    );
    let (env_a, env_b) = (refs(&env_a), refs(&env_b));
    let (a, b) = tokio::join!(
        Server::start("replica a", &["server"], &env_a),
        Server::start("replica b", &["server"], &env_b),
    );
    let (ka, kb) = (jwks_kids(&a.client()).await, jwks_kids(&b.client()).await);
    assert_eq!(ka.len(), 1, "{}\n{}", a.log(), b.log());
    assert_eq!(ka, kb, "one keyring:\n{}\n{}", a.log(), b.log());
    // Both sign the same key set.
    for server in [&a, &b] {
        let doc = server
            .client()
            .get("/.well-known/pyrogate-keyset")
            .send()
            .await
            .expect(200)
            .text();
        assert!(doc.contains("signatures"), "{doc}");
    }
    // Nothing on disk: the keyring is the database's.
    for root in [ra.path(), rb.path()] {
        let pems = std::fs::read_dir(root.join("keys"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(pems, 0, "no keys dir files under {}", root.display());
    }
    // One of them logged that it created the key; the log never holds the private key.
    let created = [&a, &b]
        .iter()
        .filter(|s| s.log().contains(&ka[0]) && s.log().contains("signing key"))
        .count();
    assert!(created >= 1, "{}\n{}", a.log(), b.log());
    for s in [&a, &b] {
        assert!(!s.log().contains("PRIVATE KEY"), "{}", s.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_one_replica_reaches_the_other_and_a_node_that_syncs_from_it() {
    let url = postgres_database().await;
    let yaml = database_yaml(&url);
    let a = Authority::on_system_clock_with(&yaml).await;
    let b = Authority::on_system_clock_with(&yaml).await;
    let old = a.signing_kid();
    assert_eq!(b.signing_kid(), old, "one keyring");
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("dir");
    // The node trusts the first key and syncs from B only.
    let node = Node::with_authority(&dir.path().join("node"), &b, &upstream.url()).await;
    let (admin_a, admin_b) = (a.admin().await, b.admin().await);
    let before = s(&admin_a.create_key("before", "Agent", 0).await, "key").to_owned();
    assert_eq!(kid_of(&before), old);

    let rotated = admin_a
        .post("/api/signing-keys/rotate")
        .send()
        .await
        .expect(201)
        .json();
    let new = s(&rotated, "kid").to_owned();
    let mut both = vec![old.clone(), new.clone()];
    both.sort();
    let started = Instant::now();
    let deadline = Deadline::secs(3, "replica B to publish the key rotated on A");
    while jwks_kids(&b.client()).await != both {
        deadline.tick(|| format!("{:?}", b.signing_kid())).await;
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(b.signing_kid(), new, "B signs with the new key too");

    // A key A signs with its new key is accepted by B's own verification...
    let admin_key = s(&admin_a.create_key("ops", "Admin", 3600).await, "key").to_owned();
    assert_eq!(kid_of(&admin_key), new);
    b.client()
        .get("/api/keys")
        .bearer(&admin_key)
        .send()
        .await
        .expect(200);
    // ...and by the node, which followed the signed key-set chain from B.
    let after = s(&admin_a.create_key("after", "Agent", 0).await, "key").to_owned();
    let deadline = Deadline::secs(10, "the node to accept a key signed by the new key");
    while node.push_status("/ingest?name=a.cpu", &after).await != 200 {
        deadline.tick(|| node.url.clone()).await;
    }
    assert_eq!(node.push_status("/ingest?name=a.cpu", &before).await, 200);

    // Retired on B: A stops publishing it, and the node refuses what it signed.
    admin_b
        .delete(&format!("/api/signing-keys/{old}"))
        .send()
        .await
        .expect(204);
    let deadline = Deadline::secs(3, "replica A to drop the key retired on B");
    while jwks_kids(&a.client()).await != vec![new.clone()] {
        deadline.tick(|| format!("{:?}", a.signing_kid())).await;
    }
    let deadline = Deadline::secs(10, "the node to refuse a key signed by the retired key");
    while node.push_status("/ingest?name=a.cpu", &before).await != 401 {
        deadline.tick(|| node.url.clone()).await;
    }
    assert_eq!(node.push_status("/ingest?name=a.cpu", &after).await, 200);
    let listed = admin_a
        .get("/api/signing-keys")
        .send()
        .await
        .expect(200)
        .json();
    let statuses: Vec<(String, String)> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|k| (s(k, "kid").to_owned(), s(k, "status").to_owned()))
        .collect();
    assert_eq!(
        statuses,
        vec![(old, "retired".to_owned()), (new, "active".to_owned())]
    );
}

/// Runs `pyrogate server` expecting it to stop at start-up; returns its output.
async fn server_refused(env: &[(String, String)]) -> String {
    let mut child = pyrogate_command(&["server", "--api-bind-addr", "127.0.0.1:0"], &refs(env))
        .spawn()
        .expect("spawn");
    drop(child.stdin.take());
    let deadline = Deadline::secs(30, "the server to refuse to start");
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success());
            break;
        }
        deadline
            .tick(|| {
                let _ = child.kill();
                "still running".into()
            })
            .await;
    }
    let out = child.wait_with_output().expect("output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_wrong_or_no_key_encryption_key_is_refused_with_a_clear_error() {
    let url = postgres_database().await;
    let first = Authority::on_system_clock_with(&database_yaml(&url)).await;
    let kid = first.signing_kid();
    let root = tempfile::tempdir().expect("dir");
    let wrong = root.path().join("wrong.kek");
    std::fs::write(&wrong, format!("{}\n", random_kek())).expect("write");
    let env = replica_env(&url, &wrong, root.path());
    let out = server_refused(&env).await;
    assert!(
        out.contains("does not open with authority.key-encryption-key-file") && out.contains(&kid),
        "{out}"
    );

    let without: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "PYROSCOPE_AUTHORITY_KEY_ENCRYPTION_KEY_FILE")
        .cloned()
        .collect();
    let out = server_refused(&without).await;
    assert!(
        out.contains("authority.key-encryption-key-file is required"),
        "{out}"
    );

    let malformed = root.path().join("short.kek");
    std::fs::write(&malformed, "dG9vIHNob3J0\n").expect("write");
    let out = server_refused(&replica_env(&url, &malformed, root.path())).await;
    assert!(
        out.contains("authority.key-encryption-key-file:") && !out.contains("dG9vIHNob3J0"),
        "{out}"
    );
    // The replica with the right key still serves the one keyring.
    assert_eq!(jwks_kids(&first.client()).await, vec![kid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_during_deletes_loses_none_it_acknowledged_and_leaves_none_half_done() {
    let url = postgres_database().await;
    // B in this process (the survivor a node follows); A a real process, to be killed -9.
    let b = Authority::on_system_clock_with(&database_yaml(&url)).await;
    let root = tempfile::tempdir().expect("dir");
    let env = replica_env(&url, &kek_file(&url), root.path());
    let mut a = Server::start("replica a", &["server"], &refs(&env)).await;
    let upstream = Upstream::start().await;
    let node = Node::with_authority(&root.path().join("node"), &b, &upstream.url()).await;

    const N: usize = 30;
    let admin_b = b.admin().await;
    let mut made = Vec::new();
    for i in 0..N {
        made.push(admin_b.new_key(&format!("k{i}"), "Agent", None).await);
    }
    let before = b.revocations_version().await;
    let admin_a = a.client();
    admin_a.login(ADMIN, ADMIN_PASSWORD).await.expect(204);

    // A third deleted and acknowledged before the kill...
    let mut acknowledged = Vec::new();
    for (id, _) in &made[..N / 3] {
        admin_a.delete_key(*id).await;
        acknowledged.push(*id);
    }
    // ...the rest caught inside their transactions: the test holds the list's counter row, so
    // each waits there with its key already marked deleted, until A is killed.
    let (held, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    held.batch_execute("BEGIN; SELECT value FROM counters WHERE name = 'revocations' FOR UPDATE")
        .await
        .expect("lock the counter row");
    let mut deletes = tokio::task::JoinSet::new();
    for (id, _) in &made[N / 3..] {
        let (http, id) = (admin_a.clone(), *id);
        // A connection the kill breaks is an error: that delete has no answer.
        deletes.spawn(async move {
            let answer = http.delete(&format!("/api/keys/{id}")).try_send().await;
            (id, answer.map(|r| r.status.as_u16()))
        });
    }
    // (Watched from another connection: inside a transaction pg_stat_activity stays as it was.)
    let (watch, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    let deadline = Deadline::secs(10, "A's deletes to wait on the counter row");
    loop {
        let waiting: Vec<String> = watch
            .query(
                "SELECT coalesce(wait_event_type, '-') || ' ' || query FROM pg_stat_activity \
                 WHERE datname = current_database()",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .iter()
            .map(|r| r.get(0))
            .collect();
        if waiting
            .iter()
            .any(|q| q.starts_with("Lock") && q.contains("UPDATE counters"))
        {
            break;
        }
        deadline.tick(|| format!("{waiting:#?}")).await;
    }
    a.kill();
    held.batch_execute("ROLLBACK")
        .await
        .expect("release the row");
    let mut unanswered = 0;
    while let Some(done) = deletes.join_next().await {
        match done.expect("delete task") {
            (_, Err(_)) => unanswered += 1,
            (id, Ok(status)) => panic!("delete {id} answered {status} after the kill"),
        }
    }
    assert_eq!(unanswered, N - N / 3);

    // On the survivor, every key is wholly live or wholly deleted: listed and accepted, or
    // gone from the list, in the signed revocation list and refused by the node. Every
    // acknowledged delete is there; none caught mid-transaction committed half-way.
    let listed: Vec<i64> = admin_b
        .keys()
        .await
        .as_array()
        .expect("array")
        .iter()
        .map(|k| k["id"].as_i64().expect("id"))
        .collect();
    let mut deleted: Vec<i64> = made
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !listed.contains(id))
        .collect();
    deleted.sort_unstable();
    acknowledged.sort_unstable();
    assert_eq!(
        deleted, acknowledged,
        "deleted keys on B, acknowledged by A"
    );
    let version = before + deleted.len() as u64;
    let deadline = Deadline::secs(10, "B to publish every committed delete");
    loop {
        let at = b.revocations_version().await;
        if at == version {
            break;
        }
        deadline
            .tick(|| format!("B at {at}, expecting {version}"))
            .await;
    }
    node.wait_synced(version).await;
    for (id, key) in &made {
        let status = node.push_status("/ingest?name=killed.cpu", key).await;
        let expected = if deleted.contains(id) { 401 } else { 200 };
        assert_eq!(status, expected, "key {id}");
    }
    // B deletes one that A's death left live: no lock or lease was left behind.
    admin_b.delete_key(made[N - 1].0).await;
    let deadline = Deadline::secs(10, "B to publish its own delete");
    while b.revocations_version().await != version + 1 {
        deadline.tick(String::new).await;
    }
    let deadline = Deadline::secs(10, "the node to refuse it");
    while node
        .push_status("/ingest?name=killed.cpu", &made[N - 1].1)
        .await
        != 401
    {
        deadline.tick(String::new).await;
    }
}
