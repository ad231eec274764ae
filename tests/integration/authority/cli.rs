//! `pyrogate api-key …` and `pyrogate admin user …`: the real binary against the local store,
//! alone and next to a running authority that must notice its changes.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

fn dirs(data: &Path, keys: &Path) -> Vec<String> {
    vec![
        "--storage-path".into(),
        data.to_str().expect("path").into(),
        "--keys-dir".into(),
        keys.to_str().expect("path").into(),
    ]
}

/// Runs `pyrogate ARGS --storage-path DATA --keys-dir KEYS`.
async fn run(args: &[&str], data: &Path, keys: &Path, stdin: &str) -> Output {
    let extra = dirs(data, keys);
    let all: Vec<&str> = args
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .collect();
    pyrogate_async(&all, &[], stdin).await
}

fn one_line(out: &Output) -> String {
    let line = out.stdout.trim_end_matches('\n');
    assert!(!line.is_empty() && !line.contains('\n'), "{out:?}");
    line.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_create_prints_a_key_that_verifies_and_list_and_delete_manage_it() {
    let root = tempfile::tempdir().expect("temp dir");
    let (data, keys) = (root.path().join("data"), root.path().join("keys"));
    pyrogate_async(
        &[
            "signing-key",
            "generate",
            "--keys-dir",
            keys.to_str().expect("path"),
        ],
        &[],
        "",
    )
    .await
    .ok();
    let out = run(
        &[
            "api-key", "create", "--name", "x", "--role", "Agent", "--ttl", "60",
        ],
        &data,
        &keys,
        "",
    )
    .await
    .ok();
    let key = one_line(&out);
    assert!(out.stderr.contains("shown only once"), "{out:?}");
    assert!(!out.stderr.contains(&key), "the key is only on stdout");
    let verified = pyrogate_async(
        &[
            "token",
            "verify",
            "--keys-dir",
            keys.to_str().expect("path"),
            &key,
        ],
        &[],
        "",
    )
    .await
    .ok();
    let claims: Value = serde_json::from_str(&verified.stdout).expect("claims");
    assert_eq!(claims["sub"], "x");
    assert_eq!(claims["role"], "Agent");
    assert_eq!(
        claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"),
        60
    );

    let table = run(&["api-key", "list"], &data, &keys, "").await.ok();
    let row = table
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("x"))
        .unwrap_or_else(|| panic!("x not listed: {}", table.stdout));
    assert!(row.contains("Agent"), "{row}");
    let json = run(&["api-key", "list", "--json"], &data, &keys, "")
        .await
        .ok();
    let jti = s(&claims_of(&key), "jti").to_owned();
    assert!(!json.stdout.contains(&jti) && !json.stdout.contains(&key));
    let listed: Value = serde_json::from_str(&json.stdout).expect("JSON list");
    assert_eq!(listed[0]["name"], "x");

    // Same rules as the API.
    let dup = run(
        &["api-key", "create", "--name", "x", "--role", "Agent"],
        &data,
        &keys,
        "",
    )
    .await
    .fails();
    assert!(
        dup.stderr.contains("api key with this name already exists"),
        "{dup:?}"
    );
    let empty = run(
        &["api-key", "create", "--name", "", "--role", "Agent"],
        &data,
        &keys,
        "",
    )
    .await
    .fails();
    assert!(
        empty.stderr.contains("api key name can't be empty"),
        "{empty:?}"
    );
    let role = run(
        &["api-key", "create", "--name", "y", "--role", "Superuser"],
        &data,
        &keys,
        "",
    )
    .await;
    assert_eq!(role.code, Some(2), "{role:?}");
    assert!(role.stderr.contains("unknown role"), "{role:?}");

    run(&["api-key", "delete", "x"], &data, &keys, "")
        .await
        .ok();
    let table = run(&["api-key", "list"], &data, &keys, "").await.ok();
    assert_eq!(table.stdout.lines().count(), 1, "{}", table.stdout);
    let again = run(&["api-key", "delete", "x"], &data, &keys, "")
        .await
        .fails();
    assert!(again.stderr.contains("api key not found"), "{again:?}");
}

/// Long-polls `/api/revocations` until its ETag moves past `etag`, for at most `limit`.
async fn wait_for_new_list(http: &Http, etag: &str, limit: Duration) -> Resp {
    let deadline = Instant::now() + limit;
    loop {
        let r = http
            .get("/api/revocations?wait=1")
            .header("if-none-match", etag)
            .send()
            .await;
        if r.status == 200 {
            return r;
        }
        assert_eq!(r.status, 304, "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "no new revocation list within {limit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_on_the_cli_is_revoked_by_a_running_server_within_seconds() {
    let app = Authority::start().await;
    let (data, keys) = (app.data_dir(), app.keys_dir());
    let out = run(
        &["api-key", "create", "--name", "ops", "--role", "Admin"],
        &data,
        &keys,
        "",
    )
    .await
    .ok();
    let key = one_line(&out);
    let bot = app.client();
    // The server trusts it at once (same signing key) and lists it (same store).
    let listed = bot.get("/api/keys").bearer(&key).send().await.expect(200);
    let listed = listed.json();
    assert_eq!(listed[0]["name"], "ops");
    assert_eq!(listed[0]["createdBy"], "cli:unknown");

    let node = app.client();
    let etag = node
        .get("/api/revocations")
        .send()
        .await
        .expect(200)
        .header("etag")
        .expect("etag")
        .to_owned();
    run(&["api-key", "delete", "ops"], &data, &keys, "")
        .await
        .ok();
    let deleted = Instant::now();
    let r = wait_for_new_list(&node, &etag, Duration::from_secs(5)).await;
    let took = deleted.elapsed();
    println!("a deletion by the CLI was published by the running server after {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let jti = s(&claims_of(&key), "jti").to_owned();
    let entries = claims_of(&r.text())["entries"].clone();
    assert_eq!(entries[0]["jti"], jti.as_str());
    let r = bot.get("/api/keys").bearer(&key).send().await.expect(401);
    assert_eq!(r.errors(), vec!["invalid credentials: revoked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_user_create_with_password_stdin_makes_a_user_who_can_log_in() {
    let app = Authority::start().await;
    let (data, keys) = (app.data_dir(), app.keys_dir());
    let out = run(
        &[
            "admin",
            "user",
            "create",
            "bob",
            "--role",
            "ReadOnly",
            "--password-stdin",
        ],
        &data,
        &keys,
        "bob-password-1\n",
    )
    .await
    .ok();
    assert!(
        out.stdout.is_empty(),
        "nothing to show when the password was given: {out:?}"
    );
    let bob = app.logged_in("bob", "bob-password-1").await;
    let me = bob.get("/api/user").send().await.expect(200).json();
    assert_eq!(me["role"], "ReadOnly");

    // Without --password-stdin a strong password is generated and printed once.
    let out = run(
        &["admin", "user", "create", "carol", "--role", "Agent"],
        &data,
        &keys,
        "",
    )
    .await
    .ok();
    let generated = one_line(&out);
    assert!(generated.len() >= 24, "{generated}");
    app.logged_in("carol", &generated).await;

    let list = run(&["admin", "user", "list"], &data, &keys, "").await.ok();
    let rows: Vec<Vec<&str>> = list
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let summary: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[1], r[2], r[3])).collect();
    assert_eq!(
        summary,
        vec![
            (ADMIN, "Admin", "enabled"),
            ("bob", "ReadOnly", "enabled"),
            ("carol", "Agent", "enabled"),
        ],
        "{}",
        list.stdout
    );
    assert!(!list.stdout.contains("bob-password-1"));
    assert!(!list.stdout.contains("argon2"));

    // The CLI applies the API's rules.
    let dup = run(
        &["admin", "user", "create", "BOB", "--password-stdin"],
        &data,
        &keys,
        "another-password\n",
    )
    .await
    .fails();
    assert!(
        dup.stderr.contains("user with this name already exists"),
        "{dup:?}"
    );
    let short = run(
        &["admin", "user", "create", "dave", "--password-stdin"],
        &data,
        &keys,
        "short\n",
    )
    .await
    .fails();
    assert!(short.stderr.contains("at least 8 characters"), "{short:?}");
    assert!(!short.stderr.contains("short\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_user_disable_and_reset_password_take_effect_on_a_running_server() {
    let app = Authority::start().await;
    let (data, keys) = (app.data_dir(), app.keys_dir());
    let admin = app.admin().await;
    create_user(&admin, "bob", "ReadOnly", "bob-password-1").await;
    let bob = app.logged_in("bob", "bob-password-1").await;
    run(&["admin", "user", "disable", "bob"], &data, &keys, "")
        .await
        .ok();
    bob.get("/api/user").send().await.expect(401);
    app.client()
        .login("bob", "bob-password-1")
        .await
        .expect(401);
    run(&["admin", "user", "enable", "bob"], &data, &keys, "")
        .await
        .ok();
    run(
        &["admin", "user", "reset-password", "bob", "--password-stdin"],
        &data,
        &keys,
        "new-bob-password\n",
    )
    .await
    .ok();
    app.client()
        .login("bob", "bob-password-1")
        .await
        .expect(401);
    app.logged_in("bob", "new-bob-password").await;
    // The last enabled admin can't be disabled from the CLI either.
    let last = run(&["admin", "user", "disable", ADMIN], &data, &keys, "")
        .await
        .fails();
    assert!(last.stderr.contains("last enabled admin"), "{last:?}");
    admin.get("/api/user").send().await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_the_cli_is_published_by_a_running_server_within_seconds() {
    let app = Authority::start().await;
    let keys = app.keys_dir();
    let http = app.client();
    let out = pyrogate_async(
        &[
            "signing-key",
            "rotate",
            "--keys-dir",
            keys.to_str().expect("path"),
        ],
        &[],
        "",
    )
    .await
    .ok();
    let new_kid = one_line(&out);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    loop {
        let jwks = http
            .get("/.well-known/jwks.json")
            .send()
            .await
            .expect(200)
            .json();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| s(k, "kid"))
            .collect();
        if kids.contains(&new_kid.as_str()) {
            assert_eq!(kids.len(), 2);
            break;
        }
        assert!(Instant::now() < deadline, "rotation not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "a rotation by the CLI was published after {:?}",
        started.elapsed()
    );
    // New keys are signed by the new key.
    let admin = app.admin().await;
    let created = admin.create_key("after-rotation", "Agent", 0).await;
    let header = s(&created, "key")
        .split('.')
        .next()
        .expect("header")
        .to_owned();
    let header: Value =
        serde_json::from_slice(&pyrogate::core::b64::decode(&header).expect("b64")).expect("JSON");
    assert_eq!(header["kid"], new_kid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_admin_password_goes_to_a_private_file_not_to_a_stdout_that_is_no_terminal() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let keys = dir.path().join("keys");
    let mut server = crate::harness::Server::start(
        "authority",
        &[
            "server",
            "--storage-path",
            data.to_str().expect("utf-8 path"),
            "--keys-dir",
            keys.to_str().expect("utf-8 path"),
        ],
        &[("RUST_LOG", "info")],
    )
    .await;
    let file = data.join("initial-admin-password");
    let password = std::fs::read_to_string(&file).expect("the password file");
    let password = password.trim();
    assert!(password.len() >= 24);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let output = server.log();
    assert!(
        !output.contains(password),
        "the password reached stdout/stderr:\n{output}"
    );
    assert!(output.contains("initial-admin-password"), "{output}");
    // The ingest command with the trust anchor is printed on the first start.
    assert!(output.contains("--authority.trusted-keys"), "{output}");
    server
        .client()
        .login(crate::harness::ADMIN, password)
        .await
        .expect(204);
    assert!(server.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_revoke_by_jti_puts_an_offline_key_on_the_signed_list() {
    let app = Authority::start().await;
    let (data, keys) = (app.data_dir(), app.keys_dir());
    let issued = pyrogate_async(
        &[
            "token",
            "issue",
            "--name",
            "offline",
            "--role",
            "Agent",
            "--ttl",
            "600",
            "--keys-dir",
            keys.to_str().unwrap(),
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(issued.code, Some(0), "{}", issued.stderr);
    assert!(
        issued.stderr.contains("pyrogate api-key revoke --jti"),
        "{}",
        issued.stderr
    );
    let token = issued.stdout.trim().to_owned();
    let claims = claims_of(&token);
    let (jti, exp) = (
        s(&claims, "jti").to_owned(),
        claims["exp"].as_u64().unwrap(),
    );
    let out = run(
        &[
            "api-key",
            "revoke",
            "--jti",
            &jti,
            "--exp",
            &exp.to_string(),
        ],
        &data,
        &keys,
        "",
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains(&format!("revoked jti {jti}")),
        "{out:?}"
    );
    // The running authority publishes it within a second; the signed list names the jti.
    let deadline = Deadline::secs(10, "the revocation to be published");
    loop {
        let list = app
            .client()
            .get("/api/revocations")
            .send()
            .await
            .expect(200)
            .text();
        if claims_of(&list)["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["jti"] == jti.as_str()))
        {
            break;
        }
        deadline.tick(String::new).await;
    }
    let bad = run(&["api-key", "revoke", "--jti", "short"], &data, &keys, "").await;
    assert_ne!(bad.code, Some(0));
    assert!(bad.stderr.contains("jti must be"), "{bad:?}");
}

/// `api-key create --app … --cidr …` signs the scopes into the key, `list --json` shows them,
/// and a bad one fails naming its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_create_takes_apps_and_cidrs() {
    let root = tempfile::tempdir().expect("temp dir");
    let (data, keys) = (root.path().join("data"), root.path().join("keys"));
    let keys_arg = keys.to_str().expect("path");
    pyrogate_async(
        &["signing-key", "generate", "--keys-dir", keys_arg],
        &[],
        "",
    )
    .await
    .ok();
    let create = [
        "api-key",
        "create",
        "--name",
        "ci",
        "--role",
        "Agent",
        "--app",
        "checkout-*",
        "--app",
        "billing",
        "--cidr",
        "10.0.0.0/8",
    ];
    let key = one_line(&run(&create, &data, &keys, "").await.ok());
    let claims = claims_of(&key);
    assert_eq!(claims["apps"], serde_json::json!(["checkout-*", "billing"]));
    assert_eq!(claims["cidrs"], serde_json::json!(["10.0.0.0/8"]));
    let inspected = pyrogate_async(&["token", "inspect", &key], &[], "")
        .await
        .ok();
    let inspected: Value = serde_json::from_str(&inspected.stdout).expect("inspect JSON");
    assert_eq!(inspected["header"]["typ"], "scoped-apikey+jwt");
    assert_eq!(inspected["claims"]["apps"], claims["apps"]);
    let json = run(&["api-key", "list", "--json"], &data, &keys, "")
        .await
        .ok();
    let listed: Value = serde_json::from_str(&json.stdout).expect("JSON list");
    assert_eq!(listed[0]["apps"], claims["apps"]);
    assert_eq!(listed[0]["cidrs"], claims["cidrs"]);
    let bad = [
        "api-key",
        "create",
        "--name",
        "x",
        "--role",
        "Agent",
        "--cidr",
        "10.0.0.1/8",
    ];
    let bad = run(&bad, &data, &keys, "").await.fails();
    assert!(bad.stderr.contains("cidrs: "), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_limit_sets_and_removes_a_keys_limit_without_a_new_key() {
    let root = tempfile::tempdir().expect("temp dir");
    let (data, keys) = (root.path().join("data"), root.path().join("keys"));
    pyrogate_async(
        &[
            "signing-key",
            "generate",
            "--keys-dir",
            keys.to_str().expect("path"),
        ],
        &[],
        "",
    )
    .await
    .ok();
    run(
        &[
            "api-key",
            "create",
            "--name",
            "ci",
            "--role",
            "Agent",
            "--pushes-per-second",
            "5",
        ],
        &data,
        &keys,
        "",
    )
    .await
    .ok();
    let listed = |out: Output| -> Value { serde_json::from_str(&out.stdout).expect("JSON list") };
    let json = run(&["api-key", "list", "--json"], &data, &keys, "")
        .await
        .ok();
    assert_eq!(
        listed(json)[0]["limits"],
        serde_json::json!({ "pushesPerSecond": 5.0, "burstPushes": 5 })
    );
    let out = run(
        &[
            "api-key",
            "limit",
            "ci",
            "--bytes-per-second",
            "1000",
            "--burst-bytes",
            "4000",
        ],
        &data,
        &keys,
        "",
    )
    .await
    .ok();
    assert!(out.stderr.contains("1000 bytes/s (burst 4000)"), "{out:?}");
    let table = run(&["api-key", "list"], &data, &keys, "").await.ok();
    assert!(table.stdout.contains("LIMITS"), "{table:?}");
    assert!(
        table.stdout.contains("1000 bytes/s (burst 4000)"),
        "{table:?}"
    );
    // Nothing to set is an error; a burst without its rate too; --none removes the limit.
    run(&["api-key", "limit", "ci"], &data, &keys, "")
        .await
        .fails();
    let bad = run(
        &["api-key", "limit", "ci", "--burst-pushes", "3"],
        &data,
        &keys,
        "",
    )
    .await
    .fails();
    assert!(bad.stderr.contains("limits.burstPushes"), "{bad:?}");
    run(&["api-key", "limit", "ci", "--none"], &data, &keys, "")
        .await
        .ok();
    let json = run(&["api-key", "list", "--json"], &data, &keys, "")
        .await
        .ok();
    assert_eq!(listed(json)[0]["limits"], Value::Null);
}
