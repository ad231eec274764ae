//! `pyrogate config check|example|docs`.

use std::process::ExitCode;

use clap::Subcommand;
use pyrogate::config::{AnyFlags, Settings};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load every layer (file, environment, flags) and report the first problem, naming the
    /// key and where its value came from.
    Check {
        #[command(flatten)]
        config: AnyFlags,
    },
    /// Print a commented YAML file with every key at its default.
    Example,
    /// Print the Markdown table of every key (for docs/configuration.md).
    Docs,
}

pub(crate) fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { config } => {
            let layers = config.load()?;
            Settings::from_layers(&layers)?;
            for var in &layers.ignored_env {
                eprintln!("note: ignoring {var}: not a pyrogate setting");
            }
            outln!("configuration ok");
        }
        ConfigCommand::Example => out!("{}", pyrogate::config::example_yaml()),
        ConfigCommand::Docs => out!("{}", pyrogate::config::markdown_table()),
    }
    Ok(ExitCode::SUCCESS)
}
