//! The authority's ticker: once a second, and at once when another replica announces a change
//! (PostgreSQL `NOTIFY`, see `store::postgres::listen`), pick up what other processes changed
//! (signing keys rotated or retired by the CLI or another replica, keys deleted there), and
//! every `revocations.prune-interval` prune expired revocation entries and sessions — once for
//! all replicas on one database ([`Store::claim_periodic`](super::store::Store::claim_periodic)).

use std::time::Duration;

use super::AppState;
use super::routes::{distribution, signing};

/// Periodic work: notice revocations and key changes made by other processes (the CLI), prune
/// expired revocations and sessions. Also reloads the keyring on SIGHUP.
pub(crate) async fn run(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let prune_every = state.settings.authority.prune_interval.as_secs().max(1);
    let mut last_prune = state.now();
    let mut failing = false;
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            () = state.changes.notified() => {}
            _ = hangup => {
                tracing::info!("SIGHUP: reloading signing keys");
                if let Err(err) = signing::reload(&state, true).await {
                    tracing::error!(error = format!("{err:#}"), "reloading signing keys failed");
                }
            }
        }
        if let Err(err) = signing::reload(&state, false).await {
            tracing::error!(error = format!("{err:#}"), "reloading signing keys failed");
        }
        let now = state.now();
        let mut prune = now.saturating_sub(last_prune) >= prune_every;
        if prune {
            last_prune = now;
            prune = match state.store.claim_periodic("prune", now, prune_every).await {
                Ok(turn) => turn,
                Err(err) => {
                    tracing::error!(
                        error = format!("{err:#}"),
                        "claiming the turn to prune failed"
                    );
                    false
                }
            };
        }
        // Said once when it starts failing and once when it works again, not every second.
        match distribution::refresh(&state, prune).await {
            Err(err) if !failing => {
                failing = true;
                tracing::error!(
                    error = format!("{err:#}"),
                    "refreshing the revocation list failed; serving the last signed list until it works again"
                );
            }
            Err(_) => {}
            Ok(()) if failing => {
                failing = false;
                tracing::info!("refreshing the revocation list works again");
            }
            Ok(()) => {}
        }
    }
}
