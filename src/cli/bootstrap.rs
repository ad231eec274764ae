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
