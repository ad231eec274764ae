//! Real Pyroscope agents — `pyroscope-io` (Python), `@pyroscope/nodejs` and the `pyroscope`
//! crate (Rust) — profiling a CPU-burning program and pushing to an in-process ingest node that
//! checks their keys against an in-process authority and forwards to a recording upstream, over
//! plain HTTP and over TLS on both hops.
//!
//! The agents are installed by `scripts/install-test-deps.sh` under `target/test-deps/`. If they
//! are missing these tests fail (never skip) and say so.
//!
//! What the agents were seen to send (recorded at the upstream):
//! - Python `pyroscope-io` 1.4: `POST /push.v1.PusherService/Push`, `Content-Type:
//!   application/proto`, `Content-Encoding: gzip`, HTTP Basic with the key as password.
//! - Node `@pyroscope/nodejs` 0.6: `POST /ingest?format=pprof&name=…&spyName=nodespy…`,
//!   `Content-Type: application/octet-stream`, a gzipped pprof body, `Authorization: Bearer`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::{Authority, Deadline, Node, Pki, Recorded, Upstream, decisions, paths};

const INSTALL_HINT: &str = "run `bash scripts/install-test-deps.sh` to install the real Pyroscope agents (pyroscope-io, @pyroscope/nodejs, the pyroscope crate) under target/test-deps/";

fn deps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps")
}

/// The real agent a test drives.
#[derive(Debug, Clone, Copy)]
enum Agent {
    Python,
    Node,
    /// The official Rust agent (`pyroscope` crate), built from tests/agents/rust.
    Rust,
}

impl Agent {
    /// The interpreter, the script's file name and the script, or a failure telling how to
    /// install the agent.
    fn locate(self) -> Installed {
        match self {
            Agent::Python => {
                let python = deps_dir().join("venv/bin/python");
                let importable = Command::new(&python)
                    .args(["-c", "import pyroscope"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(
                    importable,
                    "the Python agent is not installed ({} can't import pyroscope): {INSTALL_HINT}",
                    python.display()
                );
                Installed {
                    agent: self,
                    interpreter: python,
                    file: "burn.py",
                    script: PYTHON_SCRIPT,
                }
            }
            Agent::Rust => {
                let binary = deps_dir().join("rust-agent/release/pyrogate-rust-agent");
                assert!(
                    binary.is_file(),
                    "the Rust agent is not built ({} is missing): {INSTALL_HINT}",
                    binary.display()
                );
                Installed {
                    agent: self,
                    interpreter: binary,
                    file: "unused.txt",
                    script: "the Rust agent is a binary; this file is not read\n",
                }
            }
            Agent::Node => {
                let module = deps_dir().join("node/node_modules/@pyroscope/nodejs");
                assert!(
                    module.join("package.json").exists(),
                    "the Node agent is not installed ({} is missing): {INSTALL_HINT}",
                    module.display()
                );
                let node = which("node").unwrap_or_else(|| {
                    panic!("`node` is not on PATH, so the Node agent can't run: {INSTALL_HINT}")
                });
                Installed {
                    agent: self,
                    interpreter: node,
                    file: "burn.js",
                    script: NODE_SCRIPT,
                }
            }
        }
    }
}

/// An agent found ready to run.
struct Installed {
    agent: Agent,
    interpreter: PathBuf,
    file: &'static str,
    script: &'static str,
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Profiles a busy loop for `PYRO_SECONDS`, uploading every second, then shuts the agent down
/// (which flushes). Upload errors are the agent's to log; the script exits 0 either way.
const PYTHON_SCRIPT: &str = r#"
import os, time
import pyroscope

key = os.environ.get("PYRO_KEY", "")
pyroscope.configure(
    app_name=os.environ["PYRO_APP"],
    server_address=os.environ["PYRO_SERVER"],
    basic_auth_username=os.environ.get("PYRO_USER", "") if key else "",
    basic_auth_password=key,
    upload_interval=1,
    enable_logging=True,
)
end = time.time() + float(os.environ["PYRO_SECONDS"])
n = 0
while time.time() < end:
    n += sum(i * i for i in range(1000))
pyroscope.shutdown()
print("burned", n, flush=True)
"#;

const NODE_SCRIPT: &str = r#"
const Pyroscope = require(process.env.PYRO_NODE_MODULE);
const config = {
  serverAddress: process.env.PYRO_SERVER,
  appName: process.env.PYRO_APP,
  flushIntervalMs: 1000,
};
if (process.env.PYRO_KEY) config.authToken = process.env.PYRO_KEY;
Pyroscope.init(config);
Pyroscope.start();
(async () => {
  const end = Date.now() + Number(process.env.PYRO_SECONDS) * 1000;
  let n = 0;
  while (Date.now() < end) {
    for (let i = 0; i < 100000; i++) n += Math.sqrt(i);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await Pyroscope.stop();
  console.log('burned', n);
})();
"#;

/// One run of an agent against `server`, bounded in time. Returns its combined output.
struct Run {
    label: String,
    child: std::process::Child,
    log: PathBuf,
}

fn start_agent(
    installed: &Installed,
    dir: &Path,
    label: &str,
    server: &str,
    key: Option<&str>,
    tenant: &str,
    env: &[(&str, &str)],
) -> Run {
    let Installed {
        agent,
        interpreter,
        file,
        script,
    } = installed;
    let script_path = dir.join(file);
    std::fs::write(&script_path, script).expect("write the agent script");
    let log = dir.join(format!("{label}.log"));
    let out = std::fs::File::create(&log).expect("agent log");
    let err = out.try_clone().expect("agent log");
    let mut cmd = Command::new(interpreter);
    cmd.arg(&script_path)
        .current_dir(dir)
        .env("PYRO_SERVER", server)
        .env("PYRO_APP", format!("{label}.app"))
        .env("PYRO_SECONDS", "3")
        .env("PYRO_USER", tenant)
        .env(
            "PYRO_NODE_MODULE",
            deps_dir().join("node/node_modules/@pyroscope/nodejs"),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // The agents read PYROSCOPE_* themselves; only the script decides here.
    for (var, _) in std::env::vars() {
        if var.starts_with("PYROSCOPE_") {
            cmd.env_remove(var);
        }
    }
    match key {
        Some(k) => cmd.env("PYRO_KEY", k),
        None => cmd.env_remove("PYRO_KEY"),
    };
    cmd.envs(env.iter().copied());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting the {agent:?} agent: {e}; {INSTALL_HINT}"));
    Run {
        label: label.to_owned(),
        child,
        log,
    }
}

impl Run {
    /// Waits (bounded) for the agent to exit 0; returns its output.
    async fn finish(mut self) -> String {
        let deadline = Deadline::secs(90, format!("the {} agent run to exit", self.label));
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("agent status") {
                break status;
            }
            // On a timeout this panics, and dropping `self` kills the agent.
            deadline
                .tick(|| std::fs::read_to_string(&self.log).unwrap_or_default())
                .await;
        };
        let output = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            status.success(),
            "the {} agent run failed ({status}):\n{output}",
            self.label
        );
        output
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The pushes an agent made, as the upstream got them.
fn assert_forwarded(agent: Agent, pushes: &[Recorded], tenant: &str) {
    assert!(!pushes.is_empty());
    for push in pushes {
        assert_eq!(push.method, "POST");
        assert_eq!(push.tenant(), Some(tenant), "{}", push.path_and_query);
        assert!(
            push.header("authorization").is_none(),
            "credentials were forwarded: {:?}",
            push.headers
        );
        assert!(
            push.body.starts_with(&[0x1f, 0x8b]),
            "{}: not gzip: {:?}",
            push.path_and_query,
            &push.body[..push.body.len().min(16)]
        );
        match agent {
            Agent::Python => {
                assert_eq!(push.path_and_query, "/push.v1.PusherService/Push");
                assert_eq!(push.header("content-type"), Some("application/proto"));
                assert_eq!(push.header("content-encoding"), Some("gzip"));
            }
            Agent::Node => {
                assert!(
                    push.path_and_query.starts_with("/ingest?format=pprof&")
                        && push.path_and_query.contains("spyName=nodespy"),
                    "{}",
                    push.path_and_query
                );
                assert_eq!(
                    push.header("content-type"),
                    Some("application/octet-stream")
                );
            }
            Agent::Rust => unreachable!("the Rust agent is driven by agent_over_tls only"),
        }
    }
}

/// A key signed by `authority`'s active signing key, limited to applications `apps` (it is
/// not registered: the node needs only the signature).
fn scoped_key(authority: &Authority, name: &str, tenant: &str, apps: &[&str]) -> String {
    use pyrogate::core::clock::Clock as _;
    let ring = pyrogate::authority::keyring::Keyring::open(authority.keys_dir()).expect("keys");
    let apps: Vec<String> = apps.iter().map(|a| a.to_string()).collect();
    let req = pyrogate::core::token::KeyRequest {
        name,
        role: pyrogate::core::token::Role::Agent,
        ttl_seconds: 3600,
        tenant: Some(tenant),
        apps: Some(&apps),
        cidrs: None,
    };
    pyrogate::core::token::issue(
        ring.active(),
        "pyrogate",
        pyrogate::core::clock::SystemClock.now(),
        &req,
    )
    .expect("issue a scoped key")
    .token
    .expose()
    .to_owned()
}

/// The whole story for one agent: refused without a key, with a ReadOnly key, with a revoked
/// key and with a key scoped to another application (nothing reaches the upstream), then
/// forwarded with an Agent key scoped to the agent's own application (`agent-key.app`, which
/// the Python agent sends as the `service_name` label and the Node agent in `name=`).
async fn agent_end_to_end(agent: Agent) {
    // Fail first, and clearly, when the agent is not installed.
    let installed = agent.locate();
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = Authority::on_system_clock().await;
    let upstream = Upstream::start().await;
    let node = Node::with_authority(&dir.path().join("node"), &authority, &upstream.url()).await;
    let tenant = "team-agents";
    let agent_key = scoped_key(&authority, "agent-key", tenant, &["agent-key*"]);
    let elsewhere_key = scoped_key(&authority, "billing-key", tenant, &["billing"]);
    let (_, reader_key) = authority
        .new_key("reader-key", "ReadOnly", Some(tenant))
        .await;
    let (revoked_id, revoked_key) = authority
        .new_key("revoked-key", "Agent", Some(tenant))
        .await;
    authority.delete_key(revoked_id).await;
    node.wait_synced(authority.revocations_version().await)
        .await;

    // The refused runs, side by side.
    let runs = [
        ("no-key", None),
        ("readonly-key", Some(reader_key.as_str())),
        ("revoked-key", Some(revoked_key.as_str())),
        ("scoped-elsewhere", Some(elsewhere_key.as_str())),
    ];
    let started: Vec<Run> = runs
        .iter()
        .map(|(label, key)| {
            let run_dir = dir.path().join(label);
            std::fs::create_dir_all(&run_dir).expect("run dir");
            start_agent(&installed, &run_dir, label, &node.url, *key, tenant, &[])
        })
        .collect();
    let mut outputs = Vec::new();
    for run in started {
        outputs.push(run.finish().await);
    }
    let refused = [
        ("missing key", decisions("refused", "missing")),
        ("ReadOnly key", decisions("forbidden", "role")),
        ("revoked key", decisions("refused", "revoked")),
        (
            "key for another application",
            decisions("forbidden", "scope_app"),
        ),
    ];
    for (what, metric) in &refused {
        assert!(
            node.metric(metric).await >= 1.0,
            "the agent with a {what} never pushed (no {metric} at the node); its output:\n{}",
            outputs.join("\n----\n")
        );
    }
    assert!(
        upstream.requests().is_empty(),
        "refused pushes reached the upstream: {:?}",
        paths(&upstream.requests())
    );

    // And with a good key, its profiles get through.
    let run_dir = dir.path().join("agent-key");
    std::fs::create_dir_all(&run_dir).expect("run dir");
    let output = start_agent(
        &installed,
        &run_dir,
        "agent-key",
        &node.url,
        Some(&agent_key),
        tenant,
        &[],
    )
    .finish()
    .await;
    let accepted = upstream.accepted();
    assert!(
        !accepted.is_empty(),
        "the agent's pushes never reached the upstream; its output:\n{output}"
    );
    assert_eq!(accepted.len(), upstream.requests().len());
    assert_forwarded(agent, &accepted, tenant);
    // The key for another application passed the gate, then its pushes were refused.
    let scope_refusals = node.metric(&decisions("forbidden", "scope_app")).await;
    assert_eq!(
        node.metric(&decisions("accepted", "ok")).await - scope_refusals,
        accepted.len() as f64,
        "every push the node let in reached the upstream, once"
    );
    eprintln!(
        "{agent:?} agent: {} pushes forwarded: {:?}",
        accepted.len(),
        accepted
            .iter()
            .map(|r| format!(
                "{} {} ({} bytes)",
                r.header("content-type").unwrap_or("-"),
                r.path_and_query,
                r.body.len()
            ))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_agent_pushes_through_a_node_with_basic_auth_and_refused_keys_get_nowhere() {
    agent_end_to_end(Agent::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_agent_pushes_through_a_node_with_a_bearer_key_and_refused_keys_get_nowhere() {
    agent_end_to_end(Agent::Node).await;
}

/// TLS on both sides with a private CA: a real agent (trusting the CA through
/// `SSL_CERT_FILE`: OpenSSL for the Python agent, rustls' native roots for the Rust one) pushes
/// over HTTPS to a TLS-serving node, which forwards over HTTPS to an upstream that gets the
/// node's own credentials — and never the agent's key.
async fn agent_over_tls(agent: Agent) {
    let installed = agent.locate();
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new("agents");
    let upstream = Upstream::start_tls(&pki.server("upstream")).await;
    let authority = Authority::on_system_clock().await;
    let tenant = "team-tls";
    let (_, agent_key) = authority.new_key("tls-agent", "Agent", Some(tenant)).await;
    let served = pki.server("node");
    let node = Node::start(
        &dir.path().join("node"),
        &format!(
            "authority-url: {}\nauth:\n  ingestion:\n    enabled: true\n{}server:\n  http-tls-cert-path: {:?}\n  http-tls-key-path: {:?}\nupstream:\n  url: {}\n  tls-ca-path: {:?}\n  basic-auth-username: node\n  basic-auth-password: node-secret\n",
            authority.origin(),
            authority.trust_yaml(),
            served.cert,
            served.key,
            upstream.url(),
            pki.ca_path()
        ),
    )
    .await;
    assert!(node.url.starts_with("https://localhost:"), "{}", node.url);
    let ca = pki.ca_path();
    let run_dir = dir.path().join("tls-agent");
    std::fs::create_dir_all(&run_dir).expect("run dir");
    let output = start_agent(
        &installed,
        &run_dir,
        "tls-agent",
        &node.url,
        Some(&agent_key),
        tenant,
        &[("SSL_CERT_FILE", ca.to_str().expect("utf-8 path"))],
    )
    .finish()
    .await;
    let accepted = upstream.accepted();
    assert!(
        !accepted.is_empty(),
        "the {agent:?} agent's pushes never reached the upstream over TLS; its output:\n{output}"
    );
    for push in &accepted {
        let path = push.path_and_query.split('?').next().unwrap_or_default();
        assert!(
            pyrogate::node::ingest::ROUTES.contains(&path),
            "{}",
            push.path_and_query
        );
        assert_eq!(push.tenant(), Some(tenant));
        assert_eq!(
            push.header("authorization"),
            Some("Basic bm9kZTpub2RlLXNlY3JldA==")
        );
        for (name, value) in &push.headers {
            assert!(
                !value.to_str().unwrap_or_default().contains(&agent_key),
                "the agent's key reached the upstream in {name}"
            );
        }
    }
    eprintln!(
        "{agent:?} agent over TLS: {} pushes: {:?}",
        accepted.len(),
        paths(&accepted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_agent_pushes_over_https_through_a_tls_node_to_an_https_upstream() {
    agent_over_tls(Agent::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_agent_pushes_over_https_through_a_tls_node_that_trusts_a_private_ca() {
    agent_over_tls(Agent::Rust).await;
}
