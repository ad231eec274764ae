//! The `pyrogate` command line: the binary side of the crate. One file per command, each holding
//! its clap arguments and its handler; [`bootstrap`] is the start-up they share (tracing,
//! settings, the runtime, the shutdown signal). Exit codes: 0 success, 1 failure (e.g. a token
//! that does not verify), 2 usage error.

/// `println!`/`print!` for command output: a closed stdout (`pyrogate api-key list | head`)
/// ends the program quietly, like ripgrep, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

#[cfg(feature = "authority")]
mod admin;
#[cfg(feature = "authority")]
mod api_key;
mod bench;
mod bootstrap;
mod config;
#[cfg(feature = "authority")]
mod database;
mod ingest;
#[cfg(feature = "authority")]
mod server;
#[cfg(feature = "authority")]
mod signing_key;
mod spool;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pyrogate::config::IngestFlags;
#[cfg(feature = "authority")]
use pyrogate::config::ServerFlags;
use pyrogate::core::token::Role;

#[derive(Debug, Parser)]
#[command(
    name = "pyrogate",
    version,
    about = "API keys for continuous profiling"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the authority: admin users, web UI, API-key REST API, key distribution.
    #[cfg(feature = "authority")]
    Server {
        #[command(flatten)]
        config: ServerFlags,
    },
    /// Run a stateless ingest node: verify keys locally, forward pushes upstream.
    Ingest {
        #[command(flatten)]
        config: IngestFlags,
    },
    /// Validate configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Create, list and delete API keys in the local store (same rules as the UI).
    #[cfg(feature = "authority")]
    #[command(subcommand)]
    ApiKey(api_key::ApiKeyCommand),
    /// Manage users in the local store.
    #[cfg(feature = "authority")]
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Manage the Ed25519 keys that sign API keys.
    #[cfg(feature = "authority")]
    #[command(subcommand)]
    SigningKey(signing_key::SigningKeyCommand),
    /// Move the authority's data between databases.
    #[cfg(feature = "authority")]
    #[command(subcommand)]
    Database(database::DatabaseCommand),
    /// Look after an ingest node's spool: list, retry or drop dead letters.
    #[command(subcommand)]
    Spool(spool::SpoolCommand),
    /// Issue, verify and inspect API keys offline.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Measure performance on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|_| format!("unknown role {s:?}; expected Admin, ReadOnly, Agent or Node"))
}

/// Entry point used by `main`: parses arguments, runs, prints errors with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Servers configure logging from their settings; every other command logs warnings only.
    let quiet = || bootstrap::init_tracing("warn");
    match cli.command {
        #[cfg(feature = "authority")]
        Command::Server { config } => server::run(&config),
        Command::Ingest { config } => ingest::run(&config),
        Command::Config(cmd) => {
            quiet();
            config::run(cmd)
        }
        #[cfg(feature = "authority")]
        Command::ApiKey(cmd) => {
            quiet();
            api_key::run(cmd)
        }
        #[cfg(feature = "authority")]
        Command::Admin(admin::AdminCommand::User(cmd)) => {
            quiet();
            admin::run(cmd)
        }
        #[cfg(feature = "authority")]
        Command::SigningKey(cmd) => {
            quiet();
            signing_key::run(cmd)
        }
        #[cfg(feature = "authority")]
        Command::Database(cmd) => {
            quiet();
            database::run(cmd)
        }
        Command::Spool(cmd) => {
            quiet();
            spool::run(cmd)
        }
        Command::Token(cmd) => {
            quiet();
            token::run(cmd)
        }
        Command::Bench(cmd) => {
            quiet();
            bench::run(cmd)
        }
    }
}
