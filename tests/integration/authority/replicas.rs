//! Two authorities on one PostgreSQL database — replicas behind a load balancer — and a real
//! ingest node: what one replica does, the other publishes, and the node follows whichever it
//! polls. (`replicas_keyring` has the shared keyring: rotation, start-up together, the KEK.)

use std::time::{Duration, Instant};

use crate::harness::*;

/// Replica A on a fresh database, and replica B on the same database (and so keys).
async fn replicas() -> (Authority, Authority) {
    let url = postgres_database().await;
    let a = Authority::start_with(&database_yaml(&url)).await;
    let b = Authority::start_with(&database_yaml(&url)).await;
    (a, b)
}

/// Pushes with `key` until the node refuses it; how long that took from `since`.
async fn refused_after(node: &Node, key: &str, since: Instant) -> Duration {
    let deadline = Deadline::secs(10, "the node to refuse the deleted key");
    loop {
        let status = node.push_status("/ingest?name=replicas.cpu", key).await;
        if status == 401 {
            return since.elapsed();
        }
        assert_eq!(status, 200, "before the delete reaches it");
        deadline.tick(String::new).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_on_one_replica_and_deleted_on_the_other_is_refused_within_a_second() {
    let (a, b) = replicas().await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // The node long-polls replica A only.
    let node = Node::with_authority(dir.path(), &a, &upstream.url()).await;
    let (id, key) = a.new_key("agent", "Agent", None).await;
    assert_eq!(
        node.push_status("/ingest?name=replicas.cpu", &key).await,
        200
    );
    // B lists A's key, and deletes it.
    let listed = b.admin().await.keys().await;
    assert_eq!(listed[0]["name"], "agent", "{listed}");
    let deleted = Instant::now();
    b.delete_key(id).await;
    let took = refused_after(&node, &key, deleted).await;
    assert!(
        took <= Duration::from_secs(1),
        "a delete on B reached the node polling A after {took:?}"
    );
    assert_eq!(a.revocations_version().await, b.revocations_version().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_on_both_replicas_each_get_a_version_and_none_is_lost() {
    let (a, b) = replicas().await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::with_authority(dir.path(), &b, &upstream.url()).await;
    const N: usize = 12;
    let mut made = Vec::new();
    for i in 0..N {
        made.push(a.new_key(&format!("k{i}"), "Agent", None).await);
    }
    let before = a.revocations_version().await;
    let (sa, sb) = (a.admin().await, b.admin().await);
    let mut deletes = tokio::task::JoinSet::new();
    for (i, (id, _)) in made.iter().enumerate() {
        let session = if i % 2 == 0 { sa.clone() } else { sb.clone() };
        let id = *id;
        deletes.spawn(async move { session.delete_key(id).await });
    }
    deletes.join_all().await;
    // Every delete moved the one shared version once.
    let deadline = Deadline::secs(10, "both replicas to publish every delete");
    loop {
        let (va, vb) = (a.revocations_version().await, b.revocations_version().await);
        if va == before + N as u64 && vb == va {
            break;
        }
        assert!(
            va <= before + N as u64 && vb <= before + N as u64,
            "{va} {vb}"
        );
        deadline.tick(|| format!("A at {va}, B at {vb}")).await;
    }
    // And the node polling B refuses every key, whichever replica deleted it.
    node.wait_synced(before + N as u64).await;
    for (i, (_, key)) in made.iter().enumerate() {
        assert_eq!(
            node.push_status("/ingest?name=replicas.cpu", key).await,
            401,
            "key {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_replica_is_valid_on_the_other_and_logout_ends_it_on_both() {
    let (a, b) = replicas().await;
    let on_a = a.admin().await;
    let cookie = on_a.cookie().expect("a session cookie");
    let on_b = b.client().with_jar();
    on_b.set_cookie(Some(cookie));
    on_b.get("/api/user").send().await.expect(200);
    on_b.get("/api/keys").send().await.expect(200);
    on_a.post("/api/logout").send().await;
    on_b.get("/api/user").send().await.expect(401);
}

/// Runs `sql` on the test server as its superuser, outside the database under test.
async fn on_server(sql: &str) {
    let admin = std::env::var(pyrogate::authority::store::postgres::testing::POSTGRES_ENV)
        .expect("the test server's URL");
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(connection);
    client.batch_execute(sql).await.expect(sql);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_loses_the_database_answers_503_on_writes_keeps_serving_its_list_and_recovers()
 {
    let url = postgres_database().await;
    let db = url.rsplit_once('/').expect("a database name").1.to_owned();
    let a = Authority::start_with(&database_yaml(&url)).await;
    let admin = a.admin().await;
    let (id, _) = admin.new_key("before", "Agent", None).await;
    admin.delete_key(id).await;
    let list = a.client().get("/api/revocations").send().await.expect(200);
    let etag = list.header("etag").expect("an ETag").to_owned();

    // The database goes away: its connections are cut and new ones refused.
    on_server(&format!(
        "ALTER DATABASE {db} ALLOW_CONNECTIONS false;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}';"
    ))
    .await;
    let refused = admin
        .post("/api/keys")
        .json(&serde_json::json!({ "name": "during", "role": "Agent", "ttlSeconds": 60 }))
        .send()
        .await
        .expect(503);
    assert!(
        refused
            .errors()
            .iter()
            .any(|e| e.contains("database is unavailable")),
        "{:?}",
        refused.errors()
    );
    // Nodes still get the list it last signed.
    let served = a.client().get("/api/revocations").send().await.expect(200);
    assert_eq!(served.header("etag"), Some(etag.as_str()));
    assert_eq!(served.text(), list.text());
    let ready = a.client().get("/ready").send().await.expect(503).json();
    assert_eq!(ready["store"], "unavailable", "{ready}");
    assert!(
        !ready.to_string().contains("pyrogate-test"),
        "no password in /ready: {ready}"
    );

    // Back: writes work again without a restart.
    on_server(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true;")).await;
    let deadline = Deadline::secs(30, "writes to work again");
    loop {
        let r = admin
            .post("/api/keys")
            .json(&serde_json::json!({ "name": "after", "role": "Agent", "ttlSeconds": 60 }))
            .send()
            .await;
        if r.status.as_u16() == 201 {
            break;
        }
        assert_eq!(r.status.as_u16(), 503, "{}", r.text());
        deadline.tick(|| r.text()).await;
    }
    a.client().get("/ready").send().await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_count_once_on_whichever_replica_they_land() {
    let url = postgres_database().await;
    let limits = "auth:\n  login-max-failures: 3\n  login-lockout: 10m\n  login-delay-after: 0\n";
    let a = Authority::start_with(&format!("{}{limits}", database_yaml(&url))).await;
    let b = Authority::start_with(&format!("{}{limits}", database_yaml(&url))).await;
    // A load balancer alternates one client's guesses between the replicas.
    for (i, replica) in [&a, &b, &a].into_iter().enumerate() {
        let r = replica.client().login(ADMIN, "not-the-password").await;
        assert_eq!(r.status.as_u16(), 401, "guess {i}: {}", r.text());
    }
    // The fourth is refused on either replica, even with the right password.
    for replica in [&b, &a] {
        let r = replica.client().login(ADMIN, ADMIN_PASSWORD).await;
        assert_eq!(r.status.as_u16(), 429, "{}", r.text());
        assert!(r.header("retry-after").is_some());
    }
    // Another client is not locked out, on either replica.
    b.client_from([127, 0, 0, 2])
        .login(ADMIN, ADMIN_PASSWORD)
        .await
        .expect(204);
}
