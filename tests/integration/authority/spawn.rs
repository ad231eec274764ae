//! `spawn_app()`: the real authority in-process on 127.0.0.1:0 with a fresh temp dir and a
//! manual clock, a small HTTP/1 client with a one-cookie jar on top of hyper-util, and a runner
//! for the real `pyrogate` binary.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pyrogate::authority::{AppState, Application};
use pyrogate::config::{Layers, Settings};
use pyrogate::core::clock::{Clock as _, ManualClock, SystemClock};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN: &str = "admin";
/// The configured password of the first admin (`auth.internal.admin.password`).
pub const ADMIN_PASSWORD: &str = "correct-horse-battery-staple";
pub const COOKIE: &str = "pyrogate_session";

/// A running authority. Dropping it stops the server; [`TestApp::restart`] stops it and starts
/// a new one on the same directories and clock.
pub struct TestApp {
    pub addr: SocketAddr,
    pub clock: ManualClock,
    pub state: AppState,
    pub first_start: pyrogate::authority::FirstStart,
    root: Option<tempfile::TempDir>,
    yaml: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The authority with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_with("").await
}

/// The authority with `yaml` merged over the test defaults (as a second config file).
pub async fn spawn_with(yaml: &str) -> TestApp {
    let root = tempfile::tempdir().expect("temp dir");
    // Real time, so keys signed by the CLI (system clock) and by the server agree.
    let clock = ManualClock::new(SystemClock.now());
    TestApp::start(root, yaml.to_owned(), clock).await
}

/// Test settings: port 0, the temp dir's `data/` and `keys/`, a known admin password.
pub fn settings(root: &Path, yaml: &str) -> Settings {
    let base = format!(
        "api-bind-addr: \"127.0.0.1:0\"\nstorage-path: {:?}\nkeys-dir: {:?}\n\
         auth:\n  internal:\n    admin:\n      password: {ADMIN_PASSWORD:?}\n",
        root.join("data"),
        root.join("keys"),
    );
    let mut layers = Layers::defaults();
    layers
        .merge_yaml(&base, Path::new("base.yaml"))
        .expect("base test config");
    if !yaml.is_empty() {
        layers
            .merge_yaml(yaml, Path::new("test.yaml"))
            .expect("test config");
    }
    Settings::from_layers(&layers).expect("test settings")
}

impl TestApp {
    async fn start(root: tempfile::TempDir, yaml: String, clock: ManualClock) -> TestApp {
        let settings = settings(root.path(), &yaml);
        let app = Application::build(settings, Arc::new(clock.clone()))
            .await
            .expect("build the authority");
        let addr = SocketAddr::from(([127, 0, 0, 1], app.port()));
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let mut app = app;
        let first_start = std::mem::take(&mut app.first_start);
        let server = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            clock,
            state,
            first_start,
            root: Some(root),
            yaml,
            shutdown: Some(tx),
            server: Some(server),
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

    /// A client with an empty cookie jar.
    pub fn client(&self) -> Http {
        Http::new(self.addr, None)
    }

    /// A client that connects from another loopback address (a different "client address").
    pub fn client_from(&self, ip: [u8; 4]) -> Http {
        Http::new(self.addr, Some(IpAddr::from(ip)))
    }

    /// A client logged in as the first admin.
    pub async fn admin(&self) -> Http {
        self.logged_in(ADMIN, ADMIN_PASSWORD).await
    }

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
    pub async fn restart(mut self) -> TestApp {
        let yaml = std::mem::take(&mut self.yaml);
        self.restart_with(&yaml).await
    }

    /// Like [`TestApp::restart`], with `yaml` instead of the original test config.
    pub async fn restart_with(mut self, yaml: &str) -> TestApp {
        self.stop().await;
        let root = self.root.take().expect("root");
        let clock = self.clock.clone();
        drop(self);
        TestApp::start(root, yaml.to_owned(), clock).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// ---- HTTP -----------------------------------------------------------------------------------

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {}", self.status, self.text()))
    }

    /// The `errors` of a Pyroscope-shaped error body; panics on any other shape.
    pub fn errors(&self) -> Vec<String> {
        let body = self.json();
        let obj = body.as_object().expect("error body is an object");
        assert_eq!(obj.len(), 1, "error body has only `errors`: {body}");
        obj["errors"]
            .as_array()
            .expect("`errors` is an array")
            .iter()
            .map(|e| e.as_str().expect("each error is a string").to_owned())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }
}

/// A tiny HTTP/1 client for one server, with a jar holding the session cookie.
#[derive(Clone)]
pub struct Http {
    base: String,
    inner: Client<HttpConnector, Full<Bytes>>,
    jar: Arc<Mutex<Option<String>>>,
}

impl Http {
    /// A client for the server at `addr`, connecting from `local` if given.
    pub fn new(addr: SocketAddr, local: Option<IpAddr>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_local_address(local);
        Http {
            base: format!("http://{addr}"),
            inner: Client::builder(TokioExecutor::new()).build(connector),
            jar: Arc::new(Mutex::new(None)),
        }
    }

    /// The session cookie currently in the jar.
    pub fn cookie(&self) -> Option<String> {
        self.jar.lock().expect("jar").clone()
    }

    pub fn set_cookie(&self, value: Option<String>) {
        *self.jar.lock().expect("jar") = value;
    }

    pub fn request(&self, method: Method, path: &str) -> Req<'_> {
        Req {
            http: self,
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn get(&self, path: &str) -> Req<'_> {
        self.request(Method::GET, path)
    }
    pub fn post(&self, path: &str) -> Req<'_> {
        self.request(Method::POST, path)
    }
    pub fn put(&self, path: &str) -> Req<'_> {
        self.request(Method::PUT, path)
    }
    pub fn delete(&self, path: &str) -> Req<'_> {
        self.request(Method::DELETE, path)
    }

    pub async fn login(&self, user: &str, password: &str) -> Resp {
        self.post("/api/login")
            .json(&json!({ "username": user, "password": password }))
            .send()
            .await
    }

    /// `POST /api/keys`, expecting 201; returns the body.
    pub async fn create_key(&self, name: &str, role: &str, ttl: u64) -> Value {
        self.post("/api/keys")
            .json(&json!({ "name": name, "role": role, "ttlSeconds": ttl }))
            .send()
            .await
            .expect(201)
            .json()
    }

    /// `GET /api/keys`, expecting 200.
    pub async fn keys(&self) -> Value {
        self.get("/api/keys").send().await.expect(200).json()
    }

    fn store_cookies(&self, headers: &HeaderMap) {
        for value in headers.get_all(header::SET_COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            let Some(rest) = value.strip_prefix(&format!("{COOKIE}=")) else {
                continue;
            };
            let token = rest.split(';').next().unwrap_or_default();
            let cleared = token.is_empty() || value.contains("Max-Age=0");
            self.set_cookie((!cleared).then(|| token.to_owned()));
        }
    }
}

pub struct Req<'a> {
    http: &'a Http,
    method: Method,
    path: String,
    headers: Vec<(HeaderName, String)>,
    body: Bytes,
}

impl Req<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn json(self, body: &Value) -> Self {
        self.raw("application/json", body.to_string())
    }

    pub fn raw(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self.header("content-type", content_type)
    }

    pub async fn send(self) -> Resp {
        let uri = format!("{}{}", self.http.base, self.path);
        let mut req = Request::builder().method(self.method).uri(uri);
        for (name, value) in &self.headers {
            req = req.header(name, HeaderValue::from_str(value).expect("header value"));
        }
        if let Some(cookie) = self.http.cookie() {
            req = req.header(header::COOKIE, format!("{COOKIE}={cookie}"));
        }
        let req = req.body(Full::new(self.body)).expect("request");
        let res = self.http.inner.request(req).await.expect("HTTP request");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        self.http.store_cookies(&parts.headers);
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

// ---- the binary -------------------------------------------------------------------------------

#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails(self) -> Self {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected failure; code {:?}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// The `pyrogate` binary with an empty environment (plus `env`), so the host's `PYROSCOPE_*`
/// variables can't leak in.
pub fn pyrogate_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pyrogate"));
    cmd.args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the binary to completion, feeding `stdin`.
pub fn pyrogate(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = pyrogate_command(args, env).spawn().expect("spawn pyrogate");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("wait for pyrogate");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`pyrogate`] off the async runtime's worker threads.
pub async fn pyrogate_async(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        pyrogate(&args, &env, &stdin)
    })
    .await
    .expect("pyrogate task")
}

/// The decoded claims of a compact token (no verification).
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a payload segment");
    serde_json::from_slice(&pyrogate::core::b64::decode(payload).expect("base64url payload"))
        .expect("JSON claims")
}

/// The string field `name` of a JSON object.
pub fn s<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is not a string in {v}"))
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

/// `token` with one character in the middle of its signature changed.
pub fn tamper(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').expect("three segments");
    let mut sig: Vec<u8> = sig.bytes().collect();
    let i = sig.len() / 2;
    sig[i] = if sig[i] == b'A' { b'B' } else { b'A' };
    format!("{input}.{}", String::from_utf8(sig).expect("ascii"))
}
