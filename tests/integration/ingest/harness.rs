//! What every ingest test stands on: deadlines instead of sleeps, a small HTTP client, and the
//! real authority and ingest node in-process on 127.0.0.1:0, each in its own temp dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pyrogate::authority::Application;
use pyrogate::config::{Layers, Settings};
use pyrogate::core::clock::{Clock, SystemClock};
use pyrogate::node::IngestNode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_PASSWORD: &str = "correct-horse-battery-staple";

// ---- time -----------------------------------------------------------------------------------

/// A bound on a polling loop: `while !done { deadline.tick(|| state).await }`. Every wait in
/// these tests is one of these, never a fixed sleep.
pub struct Deadline {
    end: Instant,
    limit: Duration,
    what: String,
}

impl Deadline {
    pub fn after(limit: Duration, what: impl Into<String>) -> Self {
        Deadline {
            end: Instant::now() + limit,
            limit,
            what: what.into(),
        }
    }

    pub fn secs(secs: u64, what: impl Into<String>) -> Self {
        Self::after(Duration::from_secs(secs), what)
    }

    /// Sleeps one polling interval (10 ms), or fails the test with `detail()` once the
    /// deadline has passed.
    #[track_caller]
    pub fn tick(&self, detail: impl FnOnce() -> String) -> tokio::time::Sleep {
        if Instant::now() >= self.end {
            panic!(
                "timed out after {:?} waiting for {}; last seen: {}",
                self.limit,
                self.what,
                detail()
            );
        }
        tokio::time::sleep(Duration::from_millis(10))
    }
}

// ---- HTTP -----------------------------------------------------------------------------------

/// A response, fully read.
#[derive(Debug, Clone)]
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

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The messages of Pyroscope's `{"errors":[…]}` body.
    pub fn errors(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("not an error body: {}", self.text()))
            .iter()
            .map(|e| e.as_str().unwrap_or_default().to_owned())
            .collect()
    }

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

/// A plain HTTP/1 client. Every request is bounded by a 10 s timeout.
#[derive(Clone)]
pub struct Http {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            inner: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }
}

impl Http {
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut req = Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            req = req.header(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let req = req.body(Full::new(body.into())).expect("request");
        let response = tokio::time::timeout(Duration::from_secs(10), self.inner.request(req))
            .await
            .unwrap_or_else(|_| panic!("{method} {url} timed out"))
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
            .await
            .unwrap_or_else(|_| panic!("{method} {url}: reading the body timed out"))
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"))
            .to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> Resp {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    pub async fn post(&self, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        self.send(Method::POST, url, headers, body).await
    }
}

/// `Authorization: Bearer <key>`.
pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// `Authorization: Basic base64(user:key)`, the key as the password.
pub fn basic(user: &str, key: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{key}"));
    format!("Basic {encoded}")
}

// ---- configuration --------------------------------------------------------------------------

/// Settings from YAML text over the built-in defaults.
pub fn settings(yaml: &str) -> Settings {
    let mut layers = Layers::defaults();
    layers
        .merge_yaml(yaml, Path::new("test.yaml"))
        .unwrap_or_else(|e| panic!("test config: {e}\n{yaml}"));
    Settings::from_layers(&layers).unwrap_or_else(|e| panic!("test settings: {e}\n{yaml}"))
}

// ---- the authority --------------------------------------------------------------------------

/// The real authority in-process on 127.0.0.1:0, with the admin logged in over its REST API.
pub struct Authority {
    pub url: String,
    http: Http,
    cookie: String,
    shutdown: Option<oneshot::Sender<()>>,
    _task: JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Authority {
    pub async fn start() -> Authority {
        let dir = tempfile::tempdir().expect("temp dir");
        let yaml = format!(
            "api-bind-addr: \"127.0.0.1:0\"\nstorage-path: {:?}\nkeys-dir: {:?}\n\
             auth:\n  internal:\n    admin:\n      password: {ADMIN_PASSWORD:?}\n",
            dir.path().join("data"),
            dir.path().join("keys"),
        );
        let app = Application::build(settings(&yaml), Arc::new(SystemClock))
            .await
            .expect("build the authority");
        let url = format!("http://127.0.0.1:{}", app.port());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        let http = Http::default();
        let cookie = login(&http, &url).await;
        Authority {
            url,
            http,
            cookie,
            shutdown: Some(tx),
            _task: task,
            _dir: dir,
        }
    }

    /// `POST /api/keys` as the admin; returns the key's id and the key itself.
    pub async fn create_key(&self, name: &str, role: &str, tenant: Option<&str>) -> (i64, String) {
        create_key(&self.http, &self.url, &self.cookie, name, role, tenant).await
    }

    /// `DELETE /api/keys/{id}`: the key is revoked.
    pub async fn delete_key(&self, id: i64) {
        delete_key(&self.http, &self.url, &self.cookie, id).await;
    }

    /// The revocation-list version the authority publishes (`GET /ready`).
    pub async fn revocations_version(&self) -> u64 {
        let ready = self.http.get(&format!("{}/ready", self.url)).await;
        ready.expect(200).json()["revocationsVersion"]
            .as_u64()
            .expect("revocationsVersion")
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Logs in as the first admin; returns the `Cookie` header value.
pub async fn login(http: &Http, base: &str) -> String {
    let body = json!({ "username": "admin", "password": ADMIN_PASSWORD }).to_string();
    let r = http
        .post(
            &format!("{base}/api/login"),
            &[("content-type", "application/json")],
            body,
        )
        .await
        .expect(204);
    let set = r
        .header("set-cookie")
        .expect("login sets a cookie")
        .to_owned();
    set.split(';').next().unwrap_or_default().to_owned()
}

pub async fn create_key(
    http: &Http,
    base: &str,
    cookie: &str,
    name: &str,
    role: &str,
    tenant: Option<&str>,
) -> (i64, String) {
    let mut body = json!({ "name": name, "role": role, "ttlSeconds": 3600 });
    if let Some(t) = tenant {
        body["tenant"] = json!(t);
    }
    let created = http
        .post(
            &format!("{base}/api/keys"),
            &[("content-type", "application/json"), ("cookie", cookie)],
            body.to_string(),
        )
        .await
        .expect(201)
        .json();
    (
        created["id"].as_i64().expect("id"),
        created["key"].as_str().expect("key").to_owned(),
    )
}

pub async fn delete_key(http: &Http, base: &str, cookie: &str, id: i64) {
    http.send(
        Method::DELETE,
        &format!("{base}/api/keys/{id}"),
        &[("cookie", cookie)],
        Bytes::new(),
    )
    .await
    .expect(204);
}

// ---- the ingest node ------------------------------------------------------------------------

/// The real ingest node in-process on 127.0.0.1:0. [`Node::restart`] shuts it down through its
/// shutdown future and builds a new one on the same storage path.
pub struct Node {
    pub url: String,
    pub storage: PathBuf,
    yaml: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Node {
    /// A node storing under `storage`, with `yaml` (node settings) over the defaults.
    pub async fn start(storage: &Path, yaml: &str) -> Node {
        Node::start_with_clock(storage, yaml, Arc::new(SystemClock)).await
    }

    /// [`Node::start`] on a clock the test controls.
    pub async fn start_with_clock(storage: &Path, yaml: &str, clock: Arc<dyn Clock>) -> Node {
        let full = format!(
            "api-bind-addr: \"127.0.0.1:0\"\nstorage-path: {:?}\n{yaml}",
            storage
        );
        let node = IngestNode::build(settings(&full), clock)
            .await
            .expect("build the ingest node");
        let url = format!("http://127.0.0.1:{}", node.port());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(node.run_until(async move {
            let _ = rx.await;
        }));
        Node {
            url,
            storage: storage.to_owned(),
            yaml: yaml.to_owned(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A node in front of `upstream`, checking keys against `authority` (auth on), once it has
    /// loaded the authority's key set and revocation list.
    pub async fn with_authority(storage: &Path, authority: &Authority, upstream: &str) -> Node {
        let node = Node::start(
            storage,
            &format!(
                "authority-url: {}\nupstream: {upstream}\nauth:\n  ingestion:\n    enabled: true\n",
                authority.url
            ),
        )
        .await;
        node.wait_synced(authority.revocations_version().await)
            .await;
        node
    }

    pub fn push_url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.url)
    }

    pub async fn ready(&self) -> Value {
        Http::default()
            .get(&format!("{}/ready", self.url))
            .await
            .json()
    }

    /// Waits until the node is ready with at least revocation-list `version`.
    pub async fn wait_synced(&self, version: u64) {
        let deadline = Deadline::secs(20, format!("the node to load revocation list {version}"));
        loop {
            let ready = self.ready().await;
            if ready["ready"] == json!(true)
                && ready["revocationsVersion"].as_u64().unwrap_or(0) >= version
            {
                return;
            }
            deadline.tick(|| ready.to_string()).await;
        }
    }

    /// The value of one counter in `GET /metrics` (0 when absent).
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        let text = Http::default()
            .get(&format!("{}/metrics", self.url))
            .await
            .expect(200)
            .text();
        metric_value(&text, line_prefix)
    }

    /// Stops serving (the shutdown future fires) and waits for the node to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the node shuts down in time")
                .expect("node task")
                .expect("the node ran cleanly");
        }
    }

    /// Stops this node and builds a new one on the same storage path and settings.
    pub async fn restart(mut self) -> Node {
        self.stop().await;
        let (storage, yaml) = (self.storage.clone(), std::mem::take(&mut self.yaml));
        Node::start(&storage, &yaml).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The sum of the samples whose line starts with `line_prefix` in Prometheus text.
pub fn metric_value(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(line_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `pyrogate_auth_decisions_total{result=…,reason=…}`.
pub fn decisions(result: &str, reason: &str) -> String {
    format!("pyrogate_auth_decisions_total{{result=\"{result}\",reason=\"{reason}\"}}")
}
