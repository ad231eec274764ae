//! `pyrogate database copy`: an SQLite install (users, keys, revocations, two signing keys)
//! moved into PostgreSQL with the real binary; a server on the copy serves the same kids, and
//! a real node that synced from the old install keeps accepting every live key and refusing
//! every revoked one from the new one.

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

fn line_value(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
        .trim()
        .parse()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_install_copied_to_postgres_keeps_every_key_working_and_every_revoked_one_refused()
 {
    // The one-machine install, with a node in front of it that pinned its first key.
    let mut old = Authority::on_system_clock().await;
    let first_kid = old.signing_kid();
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let trust = old.trust_yaml();
    let node = Node::with_authority(&dir.path().join("node"), &old, &upstream.url()).await;
    let admin = old.admin().await;
    let alice = json_user("alice");
    admin
        .post("/api/users")
        .json(&alice)
        .send()
        .await
        .expect(201);

    let live_old = s(&admin.create_key("live-old", "Agent", 0).await, "key").to_owned();
    let revoked_old = admin.create_key("revoked-old", "Agent", 3600).await;
    let rotated = admin
        .post("/api/signing-keys/rotate")
        .send()
        .await
        .expect(201)
        .json();
    let second_kid = s(&rotated, "kid").to_owned();
    let live_new = s(&admin.create_key("live-new", "Agent", 3600).await, "key").to_owned();
    let revoked_new = admin.create_key("revoked-new", "Agent", 0).await;
    for k in [&revoked_old, &revoked_new] {
        admin
            .delete(&format!("/api/keys/{}", k["id"]))
            .send()
            .await
            .expect(204);
    }
    let (revoked_old, revoked_new) = (s(&revoked_old, "key"), s(&revoked_new, "key"));
    let version = old.revocations_version().await;
    node.wait_synced(version).await;
    let push = |key: &str| {
        let key = key.to_owned();
        let node = &node;
        async move { node.push_status("/ingest?name=a.cpu", &key).await }
    };
    for key in [&live_old, &live_new] {
        assert_eq!(push(key).await, 200);
    }
    for key in [revoked_old, revoked_new] {
        assert_eq!(push(key).await, 401);
    }
    let kids_before = jwks_kids(&old.client()).await;
    let mut both = vec![first_kid.clone(), second_kid.clone()];
    both.sort();
    assert_eq!(kids_before, both);
    old.stop().await;

    // The copy, with the real binary.
    let url = postgres_database().await;
    let kek = kek_file(&url);
    let data = old.data_dir();
    let keys = old.keys_dir();
    let (data, keys, kek_path) = (
        data.to_str().expect("path"),
        keys.to_str().expect("path"),
        kek.to_str().expect("path"),
    );
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, p)| p.to_owned())
        .expect("a password in the test URL");
    let from = format!("sqlite://{data}");
    let copy_args = [
        "database",
        "copy",
        "--from",
        from.as_str(),
        "--keys-dir",
        keys,
        "--key-encryption-key-file",
        kek_path,
    ];
    let env = [("PYROSCOPE_DATABASE_URL", url.as_str())];
    let copied = pyrogate_async(&copy_args, &env, "").await.ok();
    assert!(
        !copied.stdout.contains(&password) && !copied.stderr.contains(&password),
        "{copied:?}"
    );
    assert_eq!(line_value(&copied.stdout, "users"), 2, "{}", copied.stdout);
    assert_eq!(line_value(&copied.stdout, "api keys"), 4);
    assert_eq!(line_value(&copied.stdout, "revocations"), 2);
    assert_eq!(line_value(&copied.stdout, "signing keys"), 2);
    assert_eq!(
        line_value(&copied.stdout, "revocation list version"),
        version
    );
    assert!(line_value(&copied.stdout, "audit entries") >= 6);

    // A second copy into the same database is refused; --replace (and a plain path) redoes it.
    let again = pyrogate_async(&copy_args, &env, "").await.fails();
    assert!(again.stderr.contains("not empty"), "{again:?}");
    let replaced = pyrogate_async(
        &[
            "database",
            "copy",
            "--from",
            data,
            "--keys-dir",
            keys,
            "--key-encryption-key-file",
            kek_path,
            "--replace",
        ],
        &env,
        "",
    )
    .await
    .ok();
    assert_eq!(line_value(&replaced.stdout, "api keys"), 4);
    // A wrong key-encryption key file is refused, naming the setting.
    let bad = dir.path().join("bad.kek");
    std::fs::write(&bad, "bm90IGEga2V5\n").expect("write");
    let refused = pyrogate_async(
        &[
            "database",
            "copy",
            "--from",
            data,
            "--keys-dir",
            keys,
            "--key-encryption-key-file",
            bad.to_str().expect("path"),
            "--replace",
        ],
        &env,
        "",
    )
    .await
    .fails();
    assert!(
        refused.stderr.contains("authority.key-encryption-key-file"),
        "{refused:?}"
    );

    // A server on the copy: same kids, same list version, same users.
    let new = Authority::on_system_clock_with(&database_yaml(&url)).await;
    assert_eq!(jwks_kids(&new.client()).await, kids_before);
    assert_eq!(new.signing_kid(), second_kid);
    assert!(new.revocations_version().await >= version);
    new.admin().await;
    let names: Vec<String> = new
        .admin()
        .await
        .get("/api/keys")
        .send()
        .await
        .expect(200)
        .json()
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| s(k, "name").to_owned())
        .collect();
    assert_eq!(names, vec!["live-old", "live-new"]);

    // The node, still pinned to the first key, now follows the copy.
    let node = node
        .restart_with(&format!(
            "authority-url: {}\nupstream: {}\nauth:\n  ingestion:\n    enabled: true\n{trust}",
            new.origin(),
            upstream.url()
        ))
        .await;
    node.wait_synced(new.revocations_version().await).await;
    let ready = node.ready().await;
    assert_eq!(ready["ready"], Value::Bool(true), "{ready}");
    for key in [&live_old, &live_new] {
        assert_eq!(node.push_status("/ingest?name=a.cpu", key).await, 200);
    }
    for key in [revoked_old, revoked_new] {
        assert_eq!(node.push_status("/ingest?name=a.cpu", key).await, 401);
    }
    // New keys from the copy work, and a delete there reaches the node.
    let fresh = new.admin().await.create_key("fresh", "Agent", 3600).await;
    let fresh_key = s(&fresh, "key").to_owned();
    let deadline = Deadline::secs(10, "the node to accept a key made on the copy");
    while node.push_status("/ingest?name=a.cpu", &fresh_key).await != 200 {
        deadline.tick(|| node.url.clone()).await;
    }
    new.admin()
        .await
        .delete(&format!("/api/keys/{}", fresh["id"]))
        .send()
        .await
        .expect(204);
    let deadline = Deadline::secs(10, "the node to refuse a key deleted on the copy");
    while node.push_status("/ingest?name=a.cpu", &fresh_key).await != 401 {
        deadline.tick(|| node.url.clone()).await;
    }
}

fn json_user(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "password": "a-long-enough-password-1",
        "role": "ReadOnly",
    })
}
