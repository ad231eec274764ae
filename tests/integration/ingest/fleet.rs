//! A fleet of real processes: one `pyrogate server` and three `pyrogate ingest` nodes on
//! loopback. A deleted key must be refused by every node within a second (the measured
//! p50/p99/max are printed), and the nodes must keep refusing revoked keys — and accepting good
//! ones — while the authority is down, even after a restart from their cache.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::{ADMIN_PASSWORD, Deadline, Http, create_key, delete_key, login};

/// A running `pyrogate` process. Dropping it kills it, so no test leaves one behind.
struct Proc {
    name: String,
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `pyrogate <args> --api-bind-addr 127.0.0.1:0` and waits (bounded) for the
    /// address it logs when listening: no port is guessed, so none can be taken meanwhile.
    async fn spawn(name: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pyrogate"));
        cmd.args(args)
            .args(["--api-bind-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (var, _) in std::env::vars() {
            if var.starts_with("PYROSCOPE_") {
                cmd.env_remove(var);
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut proc = Proc {
            name: name.to_owned(),
            child,
            url: String::new(),
            log,
        };
        let deadline = Deadline::secs(30, format!("{name} to listen"));
        loop {
            if let Some(addr) = proc.listening_addr() {
                proc.url = format!("http://{addr}");
                break;
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("{name} exited ({status}):\n{}", proc.log());
            }
            deadline.tick(|| proc.log()).await;
        }
        // Answering, not just bound.
        let http = Http::default();
        let deadline = Deadline::secs(10, format!("{name} to answer /healthz"));
        loop {
            if http.get(&format!("{}/healthz", proc.url)).await.status == 200 {
                return proc;
            }
            deadline.tick(|| proc.log()).await;
        }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// The `addr=` of the "listening" log line.
    fn listening_addr(&self) -> Option<String> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains("listening"))?;
        let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
        Some(addr.trim_matches('"').to_owned())
    }

    /// SIGTERM, then waits (bounded) for the exit (a timeout fails the test, and the drop
    /// kills the process).
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Deadline::secs(20, format!("{} to exit after SIGTERM", self.name));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            deadline.tick(|| self.log()).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn start_authority(dir: &Path) -> Proc {
    let data = dir.join("data");
    let keys = dir.join("keys");
    Proc::spawn(
        "authority",
        &[
            "server",
            "--storage-path",
            data.to_str().expect("utf-8 path"),
            "--keys-dir",
            keys.to_str().expect("utf-8 path"),
            "--auth.internal.admin.password",
            ADMIN_PASSWORD,
        ],
    )
    .await
}

async fn start_node(name: &str, authority_url: &str, storage: &Path) -> Proc {
    Proc::spawn(
        name,
        &[
            "ingest",
            "--authority-url",
            authority_url,
            "--storage-path",
            storage.to_str().expect("utf-8 path"),
            "--auth.ingestion.enabled",
        ],
    )
    .await
}

/// A push with `key` to the node at `url`; returns the status.
async fn push(http: &Http, url: &str, key: &str) -> u16 {
    let auth = format!("Bearer {key}");
    http.post(
        &format!("{url}/ingest?name=fleet.cpu&from=1&until=2"),
        &[("authorization", &auth), ("content-type", "text/plain")],
        "main;work 1\n",
    )
    .await
    .status
    .as_u16()
}

async fn ready(http: &Http, proc: &Proc) -> serde_json::Value {
    http.get(&format!("{}/ready", proc.url)).await.json()
}

async fn wait_version(http: &Http, node: &Proc, version: u64) {
    let deadline = Deadline::secs(
        30,
        format!("{} to load revocation list {version}", node.name),
    );
    loop {
        let r = ready(http, node).await;
        if r["ready"] == json!(true) && r["revocationsVersion"].as_u64().unwrap_or(0) >= version {
            return;
        }
        deadline.tick(|| format!("{r}\n{}", node.log())).await;
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_is_refused_by_every_node_within_a_second_and_nodes_outlive_the_authority() {
    const KEYS: usize = 10;
    let dir = tempfile::tempdir().expect("temp dir");
    let http = Http::default();
    let mut authority = start_authority(&dir.path().join("authority")).await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let storage = dir.path().join(format!("node{i}"));
        nodes.push(start_node(&format!("node{i}"), &authority.url, &storage).await);
    }
    let cookie = login(&http, &authority.url).await;
    let version = |r: serde_json::Value| r["revocationsVersion"].as_u64().unwrap_or(0);
    for node in &nodes {
        wait_version(&http, node, version(ready(&http, &authority).await)).await;
    }

    let (_, keeper) = create_key(&http, &authority.url, &cookie, "keeper", "Agent", None).await;
    let mut revoked = Vec::new();
    let mut delays = Vec::new();
    for k in 0..KEYS {
        let (id, key) = create_key(
            &http,
            &authority.url,
            &cookie,
            &format!("short-lived-{k}"),
            "Agent",
            Some("fleet"),
        )
        .await;
        for node in &nodes {
            assert_eq!(
                push(&http, &node.url, &key).await,
                200,
                "{} before delete",
                node.name
            );
        }
        let deleted_at = Instant::now();
        delete_key(&http, &authority.url, &cookie, id).await;
        // Every node polled side by side, every 10 ms, until it refuses the key.
        let waits: Vec<_> = nodes
            .iter()
            .map(|node| {
                let (http, key, url, name) = (
                    http.clone(),
                    key.clone(),
                    node.url.clone(),
                    node.name.clone(),
                );
                tokio::spawn(async move {
                    let deadline = Deadline::secs(10, format!("{name} to refuse deleted key {k}"));
                    loop {
                        let status = push(&http, &url, &key).await;
                        if status == 401 {
                            return deleted_at.elapsed();
                        }
                        assert_eq!(status, 200, "{name}");
                        deadline.tick(|| format!("status {status}")).await;
                    }
                })
            })
            .collect();
        for wait in waits {
            delays.push(wait.await.expect("a node refuses the deleted key"));
        }
        revoked.push(key);
    }

    delays.sort();
    let (p50, p99, max) = (
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays[delays.len() - 1],
    );
    println!(
        "revocation propagation over {} samples ({KEYS} keys x {} nodes), from DELETE sent to the first refused push: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        delays.len(),
        nodes.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    assert!(
        p99 <= Duration::from_secs(1),
        "p99 {p99:?} over a second: {delays:?}"
    );

    // The authority goes away; the nodes carry on with what they have.
    let final_version = version(ready(&http, &authority).await);
    for node in &nodes {
        wait_version(&http, node, final_version).await;
    }
    let status = authority.terminate().await;
    assert!(
        status.success(),
        "the authority shuts down cleanly on SIGTERM ({status}):\n{}",
        authority.log()
    );
    let authority_addr = authority.url.trim_start_matches("http://").to_owned();
    assert!(
        std::net::TcpStream::connect(&authority_addr).is_err(),
        "the authority is gone"
    );
    check(&http, &nodes, &keeper, &revoked).await;

    // A node restarted while the authority is still down starts from its cache.
    let storage = dir.path().join("node0");
    nodes[0].kill();
    nodes[0] = start_node("node0 (restarted)", &authority.url, &storage).await;
    let r = ready(&http, &nodes[0]).await;
    assert_eq!(r["ready"], json!(true), "{r}");
    assert_eq!(r["keysLoaded"], json!(true), "{r}");
    assert_eq!(
        version(r.clone()),
        final_version,
        "the cached revocation list: {r}"
    );
    check(&http, &nodes, &keeper, &revoked).await;
    assert!(
        nodes[0]
            .log()
            .contains("loaded the cached key set and revocation list"),
        "{}",
        nodes[0].log()
    );
}

/// Every node accepts `keeper` and refuses every key in `revoked`.
async fn check(http: &Http, nodes: &[Proc], keeper: &str, revoked: &[String]) {
    for node in nodes {
        assert_eq!(
            push(http, &node.url, keeper).await,
            200,
            "{}: a valid key",
            node.name
        );
        for key in revoked {
            assert_eq!(
                push(http, &node.url, key).await,
                401,
                "{}: a revoked key",
                node.name
            );
        }
    }
}
