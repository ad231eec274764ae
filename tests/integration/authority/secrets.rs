//! Secrets stay secret: no response, error body or log line carries a password, the session
//! secret, a private key or another API key, and 5xx bodies are generic.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// Every response's headers and body, checked against every secret.
struct Leaks {
    secrets: Vec<(String, String)>,
}

impl Leaks {
    fn secret(&mut self, what: &str, value: impl Into<String>) {
        let value = value.into();
        assert!(value.len() >= 8, "{what} is too short to search for");
        self.secrets.push((what.to_owned(), value));
    }

    #[track_caller]
    fn check(&self, label: &str, r: &Resp) {
        let mut text = String::new();
        for (name, value) in &r.headers {
            if name == "set-cookie" {
                continue; // the session cookie itself, checked separately
            }
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("")));
        }
        text.push_str(&r.text());
        self.check_text(label, &text);
    }

    #[track_caller]
    fn check_text(&self, label: &str, text: &str) {
        for (what, secret) in &self.secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{label} leaks {what}:\n{text}"
            );
        }
    }
}

fn private_key_material(keys_dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(keys_dir).expect("keys dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "pem") {
            let pem = std::fs::read_to_string(&path).expect("pem");
            out.extend(
                pem.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                    .map(str::to_owned),
            );
        }
    }
    assert!(!out.is_empty(), "no private key found");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_carries_a_password_the_session_secret_a_private_key_or_another_key() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let mut leaks = Leaks {
        secrets: Vec::new(),
    };
    leaks.secret("the admin password", ADMIN_PASSWORD);
    leaks.secret("bob's password", "bob-password-1");
    leaks.secret("a password hash", "$argon2id$");
    let session_secret = app
        .state
        .store
        .get_meta("session_secret")
        .await
        .expect("store")
        .expect("a session secret");
    leaks.secret("the session secret", session_secret);
    for (i, line) in private_key_material(&app.keys_dir())
        .into_iter()
        .enumerate()
    {
        leaks.secret(&format!("private key line {i}"), line);
    }
    create_user(&admin, "bob", "ReadOnly", "bob-password-1").await;
    let live = admin.create_key("live", "Admin", 0).await;
    let live_key = s(&live, "key").to_owned();
    let deleted = admin.create_key("deleted", "Agent", 3600).await;
    let deleted_key = s(&deleted, "key").to_owned();
    admin
        .delete(&format!("/api/keys/{}", deleted["id"]))
        .send()
        .await
        .expect(204);
    leaks.secret("a live key", live_key.clone());
    leaks.secret(
        "a live key's signature",
        live_key.rsplit('.').next().expect("sig"),
    );
    leaks.secret("a live key's jti", s(&claims_of(&live_key), "jti"));
    leaks.secret("a deleted key", deleted_key.clone());
    let cookie = admin.cookie().expect("cookie");
    leaks.secret("the session cookie", cookie.clone());

    let bob = app.logged_in("bob", "bob-password-1").await;
    let anon = app.client();
    let tampered = tamper(&live_key);
    let basic = pyrogate::core::b64::encode(format!("x:{live_key}X").as_bytes());
    let responses = vec![
        ("failed login", anon.login(ADMIN, "bob-password-1").await),
        ("unknown user", anon.login(&live_key, ADMIN_PASSWORD).await),
        (
            "login with the key as password",
            anon.login(ADMIN, &live_key).await,
        ),
        ("me", admin.get("/api/user").send().await),
        ("users", admin.get("/api/users").send().await),
        ("user 2", admin.get("/api/users/2").send().await),
        ("keys", admin.get("/api/keys").send().await),
        (
            "a new key",
            admin
                .post("/api/keys")
                .json(&json!({ "name": "another", "role": "Agent" }))
                .send()
                .await,
        ),
        (
            "a bad key name",
            admin
                .post("/api/keys")
                .json(&json!({ "name": format!("{live_key}\n"), "role": "Agent" }))
                .send()
                .await,
        ),
        (
            "a bad user",
            admin
                .post("/api/users")
                .json(&json!({ "name": "", "password": ADMIN_PASSWORD, "role": "x" }))
                .send()
                .await,
        ),
        (
            "a wrong old password",
            bob.put("/api/user/password")
                .json(&json!({ "oldPassword": ADMIN_PASSWORD, "newPassword": "whatever-1234" }))
                .send()
                .await,
        ),
        ("signing keys", admin.get("/api/signing-keys").send().await),
        ("jwks", anon.get("/.well-known/jwks.json").send().await),
        ("revocations", anon.get("/api/revocations").send().await),
        ("metrics", anon.get("/metrics").send().await),
        ("ready", anon.get("/ready").send().await),
        ("healthz", anon.get("/healthz").send().await),
        ("not found", anon.get("/api/nope").send().await),
        (
            "a tampered key",
            anon.get("/api/keys").bearer(&tampered).send().await,
        ),
        (
            "a deleted key",
            anon.get("/api/keys").bearer(&deleted_key).send().await,
        ),
        (
            "a key in Basic auth",
            anon.get("/api/keys")
                .header("authorization", &format!("Basic {basic}"))
                .send()
                .await,
        ),
        (
            "the key in the query",
            anon.get(&format!("/api/keys?token={}", &live_key[..40]))
                .send()
                .await,
        ),
        (
            "the cookie as bearer",
            anon.get("/api/keys").bearer(&cookie).send().await,
        ),
    ];
    for (label, r) in &responses {
        leaks.check(label, r);
        if let Some(set) = r.header("set-cookie") {
            assert!(!set.contains(&cookie), "{label} re-sent the admin's cookie");
        }
    }
    // Not in Debug output either.
    leaks.check_text("Settings' Debug", &format!("{:?}", app.state.settings));
    leaks.check_text("SessionKey's Debug", &format!("{:?}", app.state.sessions));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_jwt_secret_signs_sessions_and_never_shows() {
    let secret = "a-configured-session-secret-0123456789";
    let app = Authority::start_with(&format!("auth:\n  jwt-secret: {secret}\n")).await;
    let admin = app.admin().await;
    let r = admin.get("/api/user").send().await.expect(200);
    assert!(!r.text().contains(secret));
    assert!(!format!("{:?}", app.state.settings).contains(secret));
    // The same secret after a restart keeps sessions valid.
    let cookie = admin.cookie();
    let app = app.restart().await;
    let http = app.client();
    http.set_cookie(cookie);
    http.get("/api/user").send().await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_answer_a_generic_500() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    app.state
        .store
        .sqlite()
        .expect("the test authority runs on SQLite")
        .with(|c| {
            c.execute_batch("DROP TABLE api_keys")?;
            Ok(())
        })
        .expect("drop a table");
    for r in [
        admin.get("/api/keys").send().await,
        admin
            .post("/api/keys")
            .json(&json!({ "name": "x", "role": "Agent" }))
            .send()
            .await,
    ] {
        assert_eq!(r.status, 500, "{}", r.text());
        assert_eq!(r.errors(), vec!["internal error"]);
    }
    // A broken keyring on disk: the cause (a path, a parse error) stays in the log.
    std::fs::write(app.keys_dir().join("keyring.json"), "{ not json").expect("corrupt");
    let r = admin
        .post("/api/signing-keys/rotate")
        .send()
        .await
        .expect(500);
    assert_eq!(r.errors(), vec!["internal error"]);
    assert!(!r.text().contains("keyring"));
    // The server keeps serving with the keys it had.
    app.client()
        .get("/.well-known/jwks.json")
        .send()
        .await
        .expect(200);
    admin.get("/api/user").send().await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_short_configured_admin_password_fails_start_up_without_echoing_it() {
    let root = tempfile::tempdir().expect("temp dir");
    let settings = authority_settings(
        root.path(),
        "auth:\n  internal:\n    admin:\n      password: tiny7\n",
    );
    let clock = pyrogate::core::clock::ManualClock::new(1_800_000_000);
    let err = pyrogate::authority::Application::build(settings, Arc::new(clock))
        .await
        .err()
        .expect("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("auth.internal.admin.password"), "{msg}");
    assert!(!msg.contains("tiny7"), "{msg}");
}

/// Lines of a child's stream, collected by a thread; `first` gets each line as it arrives.
fn collect(
    stream: impl std::io::Read + Send + 'static,
    first: Option<mpsc::Sender<String>>,
) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &first {
                let _ = tx.send(line.clone());
            }
            sink.lock().expect("lines").push(line);
        }
    });
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_binary_never_logs_a_password_a_cookie_or_a_key() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let keys = root.path().join("keys");
    let mut child = pyrogate_command(
        &[
            "server",
            "--api-bind-addr",
            "127.0.0.1:0",
            "--storage-path",
            data.to_str().expect("path"),
            "--keys-dir",
            keys.to_str().expect("path"),
            "--log-level",
            "debug",
        ],
        &[("PYROSCOPE_AUTH_INTERNAL_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    )
    .spawn()
    .expect("spawn the server");
    drop(child.stdin.take());
    let (tx, rx) = mpsc::channel();
    let stderr = collect(child.stderr.take().expect("stderr"), Some(tx));
    let stdout = collect(child.stdout.take().expect("stdout"), None);
    let addr: SocketAddr = tokio::task::spawn_blocking(move || {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the server reports where it listens");
            if line.contains("listening")
                && let Some(addr) = line.split("addr=").nth(1)
            {
                return addr
                    .split_whitespace()
                    .next()
                    .expect("addr")
                    .parse()
                    .expect("a socket address");
            }
        }
    })
    .await
    .expect("reader");

    let admin = Http::new(format!("http://{addr}")).with_jar();
    admin.login(ADMIN, ADMIN_PASSWORD).await.expect(204);
    let anon = Http::new(format!("http://{addr}")).with_jar();
    anon.login(ADMIN, "wrong-but-secret-pw").await.expect(401);
    create_user(&admin, "bob", "ReadOnly", "bob-password-1").await;
    let created = admin.create_key("logged", "Admin", 0).await;
    let key = s(&created, "key").to_owned();
    anon.get("/api/keys").bearer(&key).send().await.expect(200);
    let tampered = tamper(&key);
    anon.get("/api/keys")
        .bearer(&tampered)
        .send()
        .await
        .expect(401);
    admin
        .delete(&format!("/api/keys/{}", created["id"]))
        .send()
        .await
        .expect(204);
    anon.get("/api/keys").bearer(&key).send().await.expect(401);
    let cookie = admin.cookie().expect("cookie");

    // SIGTERM: a graceful stop, exit 0.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("wait task")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
    // The reader threads end at EOF, which the exit has caused.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::sync::Arc::strong_count(&stderr) > 1 || std::sync::Arc::strong_count(&stdout) > 1 {
        assert!(std::time::Instant::now() < deadline, "output not closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = format!(
        "{}\n{}",
        stdout.lock().expect("stdout").join("\n"),
        stderr.lock().expect("stderr").join("\n")
    );
    assert!(
        log.contains("login failed"),
        "debug logs were captured: {log}"
    );
    let mut leaks = Leaks {
        secrets: Vec::new(),
    };
    leaks.secret("the admin password", ADMIN_PASSWORD);
    leaks.secret("a wrong password", "wrong-but-secret-pw");
    leaks.secret("bob's password", "bob-password-1");
    leaks.secret("the key", key.clone());
    leaks.secret("the key's signature", key.rsplit('.').next().expect("sig"));
    leaks.secret("the tampered key", tampered);
    leaks.secret("the session cookie", cookie.clone());
    leaks.secret(
        "the session cookie's signature",
        cookie.rsplit('.').next().expect("sig"),
    );
    leaks.check_text("the server's output", &log);
}
