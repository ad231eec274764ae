//! The real authority in-process on 127.0.0.1:0 with a fresh temp dir — on a manual clock the
//! test moves, or on the system clock — and the admin's REST helpers (login, keys, users).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::StatusCode;
use pyrogate::authority::{AppState, Application, FirstStart};
use pyrogate::config::Settings;
use pyrogate::core::clock::{Clock, ManualClock, SystemClock};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;

use super::http::{Http, Resp};
use super::settings::layered;
use super::wait::Deadline;

pub const ADMIN: &str = "admin";
/// The configured password of the first admin (`auth.internal.admin.password`).
pub const ADMIN_PASSWORD: &str = "correct-horse-battery-staple";

/// Test settings of an authority under `root`: port 0, `root/data` and `root/keys`, a known
/// admin password, then `yaml` as a config file over them.
pub fn authority_settings(root: &Path, yaml: &str) -> Settings {
    let base = format!(
        "api-bind-addr: \"127.0.0.1:0\"\nstorage-path: {:?}\nkeys-dir: {:?}\n\
         auth:\n  internal:\n    admin:\n      password: {ADMIN_PASSWORD:?}\n",
        root.join("data"),
        root.join("keys"),
    );
    layered(&[&base, yaml])
}

/// Which clock an [`Authority`] reads.
#[derive(Clone)]
enum TestClock {
    /// Starts at the real time (so keys signed by the CLI, on the system clock, agree) and
    /// moves only when the test says.
    Manual(ManualClock),
    System,
}

impl TestClock {
    fn injected(&self) -> Arc<dyn Clock> {
        match self {
            TestClock::Manual(clock) => Arc::new(clock.clone()),
            TestClock::System => Arc::new(SystemClock),
        }
    }
}

/// A running authority. Dropping it stops the server; [`Authority::restart`] stops it and
/// starts a new one on the same directories and clock.
pub struct Authority {
    addr: SocketAddr,
    clock: TestClock,
    pub state: AppState,
    pub first_start: FirstStart,
    root: Option<tempfile::TempDir>,
    yaml: String,
    /// The admin's session for [`Authority::new_key`] and friends, logged in on first use.
    session: OnceCell<Http>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Authority {
    /// The authority with default test settings, on a manual clock.
    pub async fn start() -> Authority {
        Authority::start_with("").await
    }

    /// The authority with `yaml` merged over the test defaults (as a second config file), on a
    /// manual clock.
    pub async fn start_with(yaml: &str) -> Authority {
        let clock = TestClock::Manual(ManualClock::new(SystemClock.now()));
        Authority::start_in(tempfile::tempdir().expect("temp dir"), yaml, clock).await
    }

    /// The authority with default test settings, on the system clock (for planes where nodes
    /// and the authority run side by side in real time).
    pub async fn on_system_clock() -> Authority {
        Authority::start_in(
            tempfile::tempdir().expect("temp dir"),
            "",
            TestClock::System,
        )
        .await
    }

    /// [`Authority::on_system_clock`] with `yaml` merged over the test defaults.
    pub async fn on_system_clock_with(yaml: &str) -> Authority {
        Authority::start_in(
            tempfile::tempdir().expect("temp dir"),
            yaml,
            TestClock::System,
        )
        .await
    }

    async fn start_in(root: tempfile::TempDir, yaml: &str, clock: TestClock) -> Authority {
        let settings = authority_settings(root.path(), yaml);
        let mut app = Application::build(settings, clock.injected())
            .await
            .expect("build the authority");
        let addr = SocketAddr::from(([127, 0, 0, 1], app.port()));
        let state = app.state().clone();
        let first_start = std::mem::take(&mut app.first_start);
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Authority {
            addr,
            clock,
            state,
            first_start,
            root: Some(root),
            yaml: yaml.to_owned(),
            session: OnceCell::new(),
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// The manual clock; panics on an authority started [`Authority::on_system_clock`].
    pub fn clock(&self) -> &ManualClock {
        match &self.clock {
            TestClock::Manual(clock) => clock,
            TestClock::System => panic!("this authority runs on the system clock"),
        }
    }

    pub fn root(&self) -> &Path {
        self.root.as_ref().expect("root").path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.root().join("keys")
    }

    /// `http://127.0.0.1:PORT`, the origin a same-site browser would send.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The kid that signs new keys: the trust anchor a node pins.
    pub fn signing_kid(&self) -> String {
        self.state
            .keyring
            .lock()
            .expect("keyring")
            .active()
            .kid()
            .to_owned()
    }

    /// YAML pinning this authority's signing key (`authority.trusted-keys`).
    pub fn trust_yaml(&self) -> String {
        format!("authority:\n  trusted-keys: {}\n", self.signing_kid())
    }

    /// `https://localhost:PORT`, for an authority serving TLS.
    pub fn tls_origin(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// A client with an empty cookie jar.
    pub fn client(&self) -> Http {
        Http::new(self.origin()).with_jar()
    }

    /// A client that connects from another loopback address (a different "client address").
    pub fn client_from(&self, ip: [u8; 4]) -> Http {
        self.client().connecting_from(ip)
    }

    /// A new client logged in as the first admin.
    pub async fn admin(&self) -> Http {
        self.logged_in(ADMIN, ADMIN_PASSWORD).await
    }

    /// A new client logged in as `user`.
    pub async fn logged_in(&self, user: &str, password: &str) -> Http {
        let http = self.client();
        let r = http.login(user, password).await;
        assert_eq!(
            r.status,
            StatusCode::NO_CONTENT,
            "login {user}: {}",
            r.text()
        );
        http
    }

    /// The one admin session this authority's key helpers share.
    async fn session(&self) -> &Http {
        self.session.get_or_init(|| self.admin()).await
    }

    /// A key made by the admin over the REST API: its id and the key.
    pub async fn new_key(&self, name: &str, role: &str, tenant: Option<&str>) -> (i64, String) {
        self.session().await.new_key(name, role, tenant).await
    }

    /// `DELETE /api/keys/{id}` as the admin: the key is revoked.
    pub async fn delete_key(&self, id: i64) {
        self.session().await.delete_key(id).await;
    }

    /// The revocation-list version the authority publishes (`GET /ready`).
    pub async fn revocations_version(&self) -> u64 {
        revocations_version(&self.client()).await
    }

    /// Stops the server gracefully and waits for it to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }

    /// Stops this server and starts a new one on the same dirs, settings and clock.
    pub async fn restart(mut self) -> Authority {
        let yaml = std::mem::take(&mut self.yaml);
        self.restart_with(&yaml).await
    }

    /// Stops this server (if it still runs) and starts a new one on the same address,
    /// directories, settings and clock: the nodes that knew it find it again.
    pub async fn restart_at_same_address(mut self) -> Authority {
        let addr = self.addr;
        self.stop().await;
        // The port is free once the old listener is closed; another test's port-0 bind could
        // take it meanwhile only by a rare chance.
        let deadline = Deadline::secs(10, format!("{addr} to be free again"));
        loop {
            match std::net::TcpListener::bind(addr) {
                Ok(probe) => break drop(probe),
                Err(e) => deadline.tick(|| e.to_string()).await,
            }
        }
        let yaml = std::mem::take(&mut self.yaml);
        let mut again = self
            .restart_with(&format!("{yaml}\napi-bind-addr: \"{addr}\"\n"))
            .await;
        assert_eq!(again.addr, addr, "restarted on the same address");
        again.yaml = yaml;
        again
    }

    /// Like [`Authority::restart`], with `yaml` instead of the original test config.
    pub async fn restart_with(mut self, yaml: &str) -> Authority {
        self.stop().await;
        let root = self.root.take().expect("root");
        let clock = self.clock.clone();
        drop(self);
        Authority::start_in(root, yaml, clock).await
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The `revocationsVersion` an authority publishes in `GET /ready`.
pub async fn revocations_version(authority: &Http) -> u64 {
    authority.get("/ready").send().await.expect(200).json()["revocationsVersion"]
        .as_u64()
        .expect("revocationsVersion")
}

/// The admin's REST calls, on a client of an authority.
impl Http {
    /// `POST /api/login`.
    pub async fn login(&self, user: &str, password: &str) -> Resp {
        self.post("/api/login")
            .json(&json!({ "username": user, "password": password }))
            .send()
            .await
    }

    /// `POST /api/keys`, expecting 201; returns the body.
    pub async fn create_key(&self, name: &str, role: &str, ttl: u64) -> Value {
        self.post_key(json!({ "name": name, "role": role, "ttlSeconds": ttl }))
            .await
    }

    /// `POST /api/keys` for an hour, with `tenant` if given; returns the key's id and the key.
    pub async fn new_key(&self, name: &str, role: &str, tenant: Option<&str>) -> (i64, String) {
        let mut body = json!({ "name": name, "role": role, "ttlSeconds": 3600 });
        if let Some(t) = tenant {
            body["tenant"] = json!(t);
        }
        let created = self.post_key(body).await;
        (
            created["id"].as_i64().expect("id"),
            created["key"].as_str().expect("key").to_owned(),
        )
    }

    async fn post_key(&self, body: Value) -> Value {
        self.post("/api/keys")
            .json(&body)
            .send()
            .await
            .expect(201)
            .json()
    }

    /// `DELETE /api/keys/{id}`, expecting 204: the key is revoked.
    pub async fn delete_key(&self, id: i64) {
        self.delete(&format!("/api/keys/{id}"))
            .send()
            .await
            .expect(204);
    }

    /// `GET /api/keys`, expecting 200.
    pub async fn keys(&self) -> Value {
        self.get("/api/keys").send().await.expect(200).json()
    }
}

/// `POST /api/users` as `admin`, expecting 201; returns the new user's id.
pub async fn create_user(admin: &Http, name: &str, role: &str, password: &str) -> i64 {
    admin
        .post("/api/users")
        .json(&json!({ "name": name, "role": role, "password": password }))
        .send()
        .await
        .expect(201)
        .json()["id"]
        .as_i64()
        .expect("user id")
}

/// The decoded claims of a compact token (no verification).
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a payload segment");
    serde_json::from_slice(&pyrogate::core::b64::decode(payload).expect("base64url payload"))
        .expect("JSON claims")
}

/// `token` with one character in the middle of its signature changed.
pub fn tamper(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').expect("three segments");
    let mut sig: Vec<u8> = sig.bytes().collect();
    let i = sig.len() / 2;
    sig[i] = if sig[i] == b'A' { b'B' } else { b'A' };
    format!("{input}.{}", String::from_utf8(sig).expect("ascii"))
}
