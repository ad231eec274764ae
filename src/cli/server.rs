//! `pyrogate server`: run the authority.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use pyrogate::authority::Application;
use pyrogate::config::ConfigFlags;
use pyrogate::core::clock::SystemClock;

use super::bootstrap;

pub(crate) fn run(flags: &ConfigFlags) -> anyhow::Result<ExitCode> {
    let settings = bootstrap::load_settings(flags, true)?;
    bootstrap::no_transparent_huge_pages();
    bootstrap::runtime()?.block_on(async {
        let app =
            Application::build(settings, Arc::new(SystemClock)).await?;
        let first = &app.first_start;
        let kid = app.state().signer()?.kid().to_owned();
        let node_command = format!(
            "pyrogate ingest --authority-url {}://<this-host>:{} --authority.trusted-keys {kid} --auth.ingestion.enabled",
            app.scheme(),
            app.port()
        );
        if first.created_signing_key.is_some() {
            tracing::info!(kid = %kid, "created the first signing key");
            outln!();
            outln!("  Ingest nodes pin this authority's signing key (their trust anchor):");
            outln!();
            outln!("      {node_command}");
            outln!();
        }
        tracing::info!(trust_anchor = %kid, command = %node_command, "how an ingest node trusts this authority");
        if let Some((name, generated)) = &first.created_admin {
            match generated {
                Some(password) => {
                    // Never through the log pipeline, and on the console only when it is a
                    // terminal: container platforms keep stdout. Always in a 0600 file.
                    let file = app.state().settings.server.storage_path.join("initial-admin-password");
                    pyrogate::edge::files::write_atomic(&file, format!("{password}\n").as_bytes(), 0o600)
                        .with_context(|| format!("writing {}", file.display()))?;
                    outln!();
                    if std::io::stdout().is_terminal() {
                        outln!("  Created admin user {name:?} with a generated password (shown only once):");
                        outln!();
                        outln!("      {password}");
                        outln!();
                        outln!("  (also in {}, readable by this user only; delete it once you have changed the password)", file.display());
                    } else {
                        outln!("  Created admin user {name:?} with a generated password.");
                        outln!("  It is in {} (mode 0600): read it, log in, change it under Profile, delete the file.", file.display());
                    }
                    outln!();
                    outln!(
                        "  Log in at {}://localhost:{}/login and change it under Profile.",
                        app.scheme(),
                        app.port()
                    );
                    outln!();
                }
                None => tracing::info!(user = %name, "created the admin user with the configured password"),
            }
        }
        tracing::info!(addr = %app.local_addr(), "pyrogate authority listening");
        app.run_until(bootstrap::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
