//! `pyrogate spool dead list|retry|drop`: the pushes an ingest node's upstream refused for good,
//! kept in `<storage-path>/spool/dead/`. Works on the files, beside a running node or without
//! one; reads the same `--config` file and `storage-path` as `pyrogate ingest`.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use pyrogate::config::SpoolFlags;
use pyrogate::core::clock::{Clock as _, SystemClock, rfc3339};
use pyrogate::node::ingest::spool::dead::{DeadLetter, DeadLetters};

use super::bootstrap;

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Pushes the upstream refused for good (a 4xx other than 408/429/401/403).
    #[command(subcommand)]
    Dead(DeadCommand),
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead letters: id, age, size, tenant, app and why the upstream refused them (never
    /// headers or credentials).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: SpoolFlags,
    },
    /// Hand dead letters back to the spool queue. A running node picks them up within about a
    /// second (after what is already waiting); otherwise the node takes them at its next start.
    Retry {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        config: SpoolFlags,
    },
    /// Delete dead letters for good.
    Drop {
        #[command(flatten)]
        which: Which,
        /// Confirm the deletion (nothing is deleted without it).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        config: SpoolFlags,
    },
}

#[derive(Debug, Args)]
pub struct Which {
    /// Dead-letter ids, as `list` shows them (or just the number: `23`).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    ids: Vec<String>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
}

pub(crate) fn run(cmd: SpoolCommand) -> anyhow::Result<ExitCode> {
    let SpoolCommand::Dead(cmd) = cmd;
    match cmd {
        DeadCommand::List { json, config } => {
            let dead = open(&config)?;
            let letters = dead.list()?;
            let now = SystemClock.now();
            if json {
                let rows: Vec<_> = letters.iter().map(|l| json_row(l, now)).collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&letters, now);
            }
        }
        DeadCommand::Retry { which, config } => {
            let dead = open(&config)?;
            if which.all {
                let (retried, damaged) = dead.retry_all()?;
                for letter in &retried {
                    outln!("{}", letter.id);
                }
                for letter in &damaged {
                    eprintln!(
                        "skipped {}: damaged ({}); it can only be dropped",
                        letter.id,
                        letter.damaged.as_deref().unwrap_or_default()
                    );
                }
                eprintln!("{}", handed_back(retried.len()));
            } else {
                for id in &which.ids {
                    let letter = dead.retry(id)?;
                    outln!("{}", letter.id);
                }
                eprintln!("{}", handed_back(which.ids.len()));
            }
        }
        DeadCommand::Drop { which, yes, config } => {
            let dead = open(&config)?;
            if !yes {
                eprintln!("error: drop deletes the pushes for good; add --yes to confirm");
                return Ok(ExitCode::from(2));
            }
            let dropped = if which.all {
                dead.drop_all()?
            } else {
                let mut dropped = Vec::new();
                for id in &which.ids {
                    dropped.push(dead.drop(id)?);
                }
                dropped
            };
            for id in &dropped {
                outln!("{id}");
            }
            eprintln!("dropped {} dead letter(s)", dropped.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn handed_back(n: usize) -> String {
    format!(
        "handed {n} dead letter(s) back to the spool: a running node replays them within about a second, after what is already waiting; a stopped one at its next start"
    )
}

/// The dead letters under the configured `storage-path`, which must hold a spool.
fn open(config: &SpoolFlags) -> anyhow::Result<DeadLetters> {
    let settings = bootstrap::load_settings(config, false)?;
    let spool = settings.ingest.storage_path.join("spool");
    if !spool.is_dir() {
        bail!(
            "no spool at {}: is storage-path the ingest node's (--storage-path, PYROSCOPE_STORAGE_PATH, or its --config file)?",
            spool.display()
        );
    }
    Ok(DeadLetters::new(&spool))
}

fn json_row(l: &DeadLetter, now: u64) -> serde_json::Value {
    serde_json::json!({
        "id": l.id,
        "bytes": l.bytes,
        "spooledAt": l.spooled_at.map(rfc3339),
        "deadAt": l.dead_at.map(rfc3339),
        "ageSeconds": l.spooled_at.map(|t| now.saturating_sub(t)),
        "path": l.path,
        "tenant": l.tenant,
        "app": l.app,
        "reason": l.reason,
        "damaged": l.damaged,
    })
}

fn print_table(letters: &[DeadLetter], now: u64) {
    outln!(
        "{:<22} {:>6} {:>10} {:<16} {:<24} REASON",
        "ID",
        "AGE",
        "BYTES",
        "TENANT",
        "APP"
    );
    for l in letters {
        let reason = match (&l.damaged, &l.reason) {
            (Some(damaged), _) => format!("DAMAGED: {damaged}"),
            (None, Some(reason)) => reason.clone(),
            (None, None) => "-".to_owned(),
        };
        outln!(
            "{:<22} {:>6} {:>10} {:<16} {:<24} {}",
            l.id,
            l.spooled_at
                .map_or("-".to_owned(), |t| age(now.saturating_sub(t))),
            l.bytes,
            l.tenant.as_deref().unwrap_or("-"),
            l.app.as_deref().unwrap_or("-"),
            reason
        );
    }
}

/// `42s`, `5m`, `3h`, `2d`.
fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
