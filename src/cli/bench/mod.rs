//! `pyrogate bench verify|ingest|long-poll`: performance on this machine. Benchmarks measure; tests only
//! check behaviour.

// Benchmarks time real work with the real monotonic clock; that is their job.
#![allow(clippy::disallowed_methods)]

mod ingest;
#[cfg(feature = "authority")]
mod long_poll;
mod verify;

use std::process::ExitCode;

use clap::Subcommand;

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
