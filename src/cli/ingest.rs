//! `pyrogate ingest`: run a stateless ingest node.

use std::process::ExitCode;
use std::sync::Arc;

use pyrogate::config::ConfigFlags;
use pyrogate::core::clock::SystemClock;

use super::bootstrap;

pub(crate) fn run(flags: &ConfigFlags) -> anyhow::Result<ExitCode> {
    let settings = bootstrap::load_settings(flags, true)?;
    bootstrap::no_transparent_huge_pages();
    bootstrap::runtime()?.block_on(async {
        let node = pyrogate::node::IngestNode::build(settings, Arc::new(SystemClock)).await?;
        tracing::info!(addr = %node.local_addr(), "pyrogate ingest node listening");
        node.run_until(bootstrap::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
