//! `pyrogate bench verify|ingest|spool|long-poll`: performance on this machine. Benchmarks
//! measure; tests only check behaviour.

// Benchmarks time real work with the real monotonic clock; that is their job.
#![allow(clippy::disallowed_methods)]

mod ingest;
#[cfg(feature = "authority")]
mod long_poll;
mod spool;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use pyrogate::core::b64;
use pyrogate::core::clock::Clock;

use super::bootstrap;
use verify::median;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Cost of verifying a key: raw Ed25519, uncached, cached, and rejected garbage.
    Verify {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Operations per measured batch.
        #[arg(long, default_value_t = 2000)]
        iterations: u32,
    },
    /// Push throughput through an ingest node, auth off vs auth on, in one run.
    Ingest {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds per round and mode.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Rounds (alternating auth off / on).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Bytes per push.
        #[arg(long, default_value_t = 10_240)]
        body_bytes: usize,
        /// TLS on both hops (client → node → upstream): a directory with `ca.pem`, and
        /// `cert.pem` + `key.pem` for `localhost` signed by it (scripts/bench-tls.sh makes
        /// one with openssl).
        #[arg(long)]
        tls_dir: Option<std::path::PathBuf>,
    },
    /// How an ingest node catches up after an upstream outage while live pushes keep coming:
    /// peak spool backlog, time from the upstream's return to an empty spool, replay rate,
    /// pushes delivered twice or lost. In-process, on loopback; stops by itself.
    Spool {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Live pushes per second, sent on a timer whatever the answers (open loop).
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Milliseconds the upstream takes to answer a push.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// Seconds of load before the upstream goes down.
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        /// Seconds the upstream stays down (connections refused); 0: no outage.
        #[arg(long, default_value_t = 10.0)]
        outage: f64,
        /// Longest wait, in seconds, for the spool to empty after the upstream's return.
        #[arg(long, default_value_t = 120.0)]
        max_drain: f64,
        /// Bytes per push.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        /// Pushes outstanding at most; one due while that many wait is counted late, not sent.
        #[arg(long, default_value_t = 512)]
        clients: usize,
        /// The upstream answers every push this late instead (milliseconds): above
        /// --upstream-timeout-ms, it shows how often one push is sent again after a timeout.
        #[arg(long)]
        slow_upstream_ms: Option<u64>,
        /// The node's upstream.timeout in milliseconds (default: the node's default).
        #[arg(long)]
        upstream_timeout_ms: Option<u64>,
    },
    /// Memory per idle long-poll of the revocation list on the authority, and how long one
    /// revocation takes to reach every poll.
    #[cfg(feature = "authority")]
    LongPoll {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Long-polls held at once (each its own connection).
        #[arg(long, default_value_t = 10_000)]
        polls: usize,
        /// Revocations, one after another: every poll polls again at once with the new version.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// `?wait=` of each poll, seconds (also the authority's `revocations.max-wait`).
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// The `pyrogate` binary to run as the authority (default: this one).
        #[arg(long)]
        server_binary: Option<std::path::PathBuf>,
    },
}

pub(crate) fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Verify { json, iterations } => {
            let report = verify::verify(iterations.max(10));
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{report}");
            }
        }
        BenchCommand::Ingest {
            json,
            seconds,
            rounds,
            concurrency,
            body_bytes,
            tls_dir,
        } => {
            let report = bootstrap::runtime()?.block_on(ingest::ingest(
                seconds.max(0.1),
                rounds.max(1),
                concurrency.max(1),
                body_bytes.max(1),
                tls_dir.as_deref(),
            ))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{report}");
            }
        }
        BenchCommand::Spool {
            json,
            rate,
            latency_ms,
            warmup,
            outage,
            max_drain,
            body_bytes,
            clients,
            slow_upstream_ms,
            upstream_timeout_ms,
        } => {
            let seconds = |s: f64| std::time::Duration::from_secs_f64(s.clamp(0.0, 86_400.0));
            let ms = std::time::Duration::from_millis;
            let report = bootstrap::runtime()?.block_on(spool::spool(spool::SpoolParams {
                rate: rate.clamp(0.1, 1_000_000.0),
                latency: ms(latency_ms),
                slow_upstream: slow_upstream_ms.map(ms),
                upstream_timeout: upstream_timeout_ms.map(|t| ms(t.max(1))),
                warmup: seconds(warmup),
                outage: seconds(outage),
                max_drain: seconds(max_drain),
                body_bytes,
                clients: clients.max(1),
            }))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{report}");
            }
        }
        #[cfg(feature = "authority")]
        BenchCommand::LongPoll {
            json,
            polls,
            rounds,
            wait,
            server_binary,
        } => {
            let report = bootstrap::runtime()?.block_on(long_poll::long_poll(
                polls.max(1),
                rounds.max(1),
                wait.max(15),
                server_binary.as_deref(),
            ))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{report}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A directory of the benchmark's own under the system temp dir, removed when dropped.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(what: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("pyrogate-bench-{what}{}", b64::random(6)));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Settings from `yaml` layered over the defaults, as a config file is.
pub(super) fn node_settings(yaml: &str) -> anyhow::Result<pyrogate::config::Settings> {
    let mut layers = pyrogate::config::Layers::defaults();
    layers.merge_yaml(yaml, Path::new("bench.yaml"))?;
    Ok(pyrogate::config::Settings::from_layers(&layers)?)
}

/// An ingest node in this process, serving until `stop` reads true. Returns its port and the
/// task that ends once it has stopped (await it before its storage directory goes).
pub(super) async fn start_node(
    settings: pyrogate::config::Settings,
    clock: Arc<dyn Clock>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(u16, JoinHandle<anyhow::Result<()>>)> {
    let node = pyrogate::node::IngestNode::build(settings, clock).await?;
    let port = node.port();
    let mut stopped = stop.clone();
    let task = tokio::spawn(node.run_until(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    Ok((port, task))
}
