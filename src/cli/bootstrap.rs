//! The start-up every command shares: logging, settings from the layers, the runtime, and the
//! signal that stops a server.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use pyrogate::config::{ConfigFlags, Settings};

/// Logs go to stderr; `RUST_LOG` overrides the configured level.
pub(crate) fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Loads and checks every layer. With `log_from_settings`, logging starts at the configured
/// level first (servers), so the warnings about ignored variables reach it.
pub(crate) fn load_settings(
    flags: &ConfigFlags,
    log_from_settings: bool,
) -> anyhow::Result<Settings> {
    let layers = flags.load()?;
    let settings = Settings::from_layers(&layers)?;
    if log_from_settings {
        init_tracing(settings.server.log_level);
    }
    for var in &layers.ignored_env {
        tracing::warn!("ignoring environment variable {var}: not a pyrogate setting");
    }
    Ok(settings)
}

/// For the servers (`server`, `ingest`): no transparent huge pages. Where the kernel backs the
/// heap with them (THP `always`, or an allocator that asks, as mimalloc did when it was tried),
/// every touched 2 MiB becomes resident at once, so each open connection's mostly-empty 8 KiB
/// hyper buffers count in full (~21 KiB resident per idle long-poll on the authority instead
/// of ~13 KiB, docs/benchmarks.md). A gateway's heap is small; the TLB saving is not worth
/// that. The flag is the process's (and its children's).
pub(crate) fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(err) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %err, "could not turn transparent huge pages off");
    }
}

/// Runs a one-shot command's async work (the store's operations) on a small runtime.
#[cfg(feature = "authority")]
pub(crate) fn block_on<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(work)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Resolves when SIGINT or SIGTERM arrives.
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
