//! The real ingest node in-process on 127.0.0.1:0, and what tests read off it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pyrogate::config::Settings;
use pyrogate::core::clock::{Clock, SystemClock};
use pyrogate::node::IngestNode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::authority::Authority;
use super::http::Http;
use super::settings::layered;
use super::wait::Deadline;

/// Test settings of a node storing under `storage`: port 0, then `yaml` as a config file
/// over them.
pub fn node_settings(storage: &Path, yaml: &str) -> Settings {
    let base = format!("api-bind-addr: \"127.0.0.1:0\"\nstorage-path: {storage:?}\n");
    layered(&[&base, yaml])
}

/// A running ingest node. [`Node::restart`] shuts it down through its shutdown future and
/// builds a new one on the same storage path.
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
        let node = IngestNode::build(node_settings(storage, yaml), clock)
            .await
            .expect("build the ingest node");
        let url = match node.scheme() {
            "https" => format!("https://localhost:{}", node.port()),
            _ => format!("http://127.0.0.1:{}", node.port()),
        };
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
                "authority-url: {}\nupstream: {upstream}\nauth:\n  ingestion:\n    enabled: true\n{}",
                authority.origin(),
                authority.trust_yaml()
            ),
        )
        .await;
        node.wait_synced(authority.revocations_version().await)
            .await;
        node
    }

    /// A node in front of `upstream` that syncs from `authority` and reports to it as `name`
    /// with `node_key` every second, once it has loaded the authority's lists.
    pub async fn reporting(
        dir: &Path,
        authority: &Authority,
        upstream: &str,
        name: &str,
        node_key: &str,
    ) -> Node {
        let node = Node::start(
            dir,
            &format!(
                "authority-url: {}\nupstream: {upstream}\nauth:\n  ingestion:\n    enabled: true\n\
                 authority:\n  trusted-keys: {}\n  node-key: {node_key}\n\
                 node:\n  name: {name}\n  report-interval: 1s\n",
                authority.origin(),
                authority.signing_kid(),
            ),
        )
        .await;
        node.wait_synced(authority.revocations_version().await)
            .await;
        node
    }

    /// A client for this node.
    pub fn client(&self) -> Http {
        Http::new(&self.url)
    }

    /// The status of a one-line folded push to `path` with `key` as Bearer token.
    pub async fn push_status(&self, path: &str, key: &str) -> u16 {
        self.client()
            .post(path)
            .bearer(key)
            .body("a;b 1\n")
            .send()
            .await
            .status
            .as_u16()
    }

    pub async fn ready(&self) -> Value {
        self.client().get("/ready").send().await.json()
    }

    /// Waits until the node is ready with at least revocation-list `version`.
    pub async fn wait_synced(&self, version: u64) {
        let deadline = Deadline::secs(20, format!("the node to load revocation list {version}"));
        wait_synced(&self.client(), version, deadline, String::new).await;
    }

    /// The value of one counter in `GET /metrics` (0 when absent).
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        let text = self
            .client()
            .get("/metrics")
            .send()
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
        let yaml = std::mem::take(&mut self.yaml);
        self.restart_with(&yaml).await
    }

    /// Stops this node and builds a new one on the same storage path with `yaml`.
    pub async fn restart_with(mut self, yaml: &str) -> Node {
        self.stop().await;
        let storage = self.storage.clone();
        Node::start(&storage, yaml).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Polls the node behind `node` until its `/ready` says ready with at least revocation-list
/// `version`, within `deadline`; `log` adds what the node said to a timeout's message.
pub async fn wait_synced(node: &Http, version: u64, deadline: Deadline, log: impl Fn() -> String) {
    loop {
        let ready = node.get("/ready").send().await.json();
        if ready["ready"] == json!(true)
            && ready["revocationsVersion"].as_u64().unwrap_or(0) >= version
        {
            return;
        }
        deadline.tick(|| format!("{ready}\n{}", log())).await;
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

/// An authority, a recording upstream, and a node between agents and the upstream (auth on),
/// all on the system clock.
pub struct Plane {
    pub authority: Authority,
    pub upstream: super::upstream::Upstream,
    pub node: Node,
    pub http: Http,
    pub _dir: tempfile::TempDir,
}

pub async fn plane() -> Plane {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = Authority::on_system_clock().await;
    let upstream = super::upstream::Upstream::start().await;
    let node = Node::with_authority(&dir.path().join("node"), &authority, &upstream.url()).await;
    Plane {
        http: node.client(),
        authority,
        upstream,
        node,
        _dir: dir,
    }
}
