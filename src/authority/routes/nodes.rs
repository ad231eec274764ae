//! The fleet: `POST /api/nodes/report` (Node keys only) and `GET /api/nodes` (Admin).
//!
//! Ingest nodes with a Node-role key report every `node.report-interval`
//! ([`crate::node::report`]); each report is applied to the store in one transaction
//! ([`Store::record_report`]), so what the admin sees — a key's last use, an application's
//! pushes per node, each node's health — survives restarts and is the same on every replica.
//! A node's state is read from its last report: `not_reporting` after three intervals without
//! one, else `stale` (refusing pushes: its revocation list is too old), else `backlog` (its
//! spool is not empty), else `ok`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Serialize;

use super::session::Caller;
use crate::authority::AppState;
use crate::authority::store::{NodeRecord, Store};
use crate::core::clock::rfc3339;
use crate::edge::auth::Access;
use crate::edge::error::ApiError;
use crate::edge::json::json;
use crate::edge::metrics::{Metrics, NodeLabels, StateLabels};
use crate::node::report::Report;

/// A node is `not_reporting` after this many intervals without a report.
pub const MISSED_INTERVALS: u64 = 3;
/// A key is unused when no push was seen for this long (and it is at least this old).
pub const UNUSED_SECS: u64 = 30 * 86_400;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/nodes", get(list))
        .route("/api/nodes/report", post(report))
}

/// Where a node stands, from its last report.
pub fn state_of(node: &NodeRecord, now: u64) -> &'static str {
    let silent = now.saturating_sub(node.last_report_at);
    if silent > MISSED_INTERVALS * node.interval_seconds.max(1) {
        "not_reporting"
    } else if node.stale {
        "stale"
    } else if node.spool_entries > 0 || node.dead_letters > 0 {
        "backlog"
    } else {
        "ok"
    }
}

/// Every state, for the metric (each is set, to 0 when no node is in it).
const STATES: [&str; 4] = ["ok", "stale", "backlog", "not_reporting"];

async fn report(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Access::Report)?;
    let report = Report::parse(&body).map_err(|e| ApiError::bad_request(e.0))?;
    let applied = state.store.record_report(&report, state.now()).await?;
    tracing::debug!(node = %report.node, seq = report.seq, applied, by = %caller.actor(), "node report");
    if applied {
        refresh_fleet_metrics(&state.store, &state.metrics, state.now()).await;
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "seq": report.seq, "duplicate": !applied }),
    ))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeView {
    #[serde(flatten)]
    node: NodeRecord,
    state: &'static str,
    last_report: String,
    seconds_since_report: u64,
}

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let now = state.now();
    let nodes = state.store.list_nodes().await?;
    let views: Vec<NodeView> = nodes
        .into_iter()
        .map(|node| NodeView {
            state: state_of(&node, now),
            last_report: rfc3339(node.last_report_at),
            seconds_since_report: now.saturating_sub(node.last_report_at),
            node,
        })
        .collect();
    Ok(json(StatusCode::OK, &views))
}

/// Sets the fleet gauges (`pyrogate_fleet_*`, `pyrogate_api_keys_expiring`,
/// `pyrogate_api_keys_unused`) from the store. A store that can't be read leaves them as
/// they were (and says so in the log).
pub async fn refresh_fleet_metrics(store: &Store, metrics: &Metrics, now: u64) {
    if let Err(err) = try_refresh(store, metrics, now, None).await {
        tracing::warn!(error = %err, "fleet metrics not refreshed");
    }
}

/// [`refresh_fleet_metrics`] with the expiry warning, for the authority's loop.
pub async fn refresh_all_metrics(state: &AppState) {
    let warning = state.settings.authority.key_expiry_warning.as_secs();
    if let Err(err) = try_refresh(&state.store, &state.metrics, state.now(), Some(warning)).await {
        tracing::warn!(error = %err, "fleet metrics not refreshed");
    }
}

async fn try_refresh(
    store: &Store,
    metrics: &Metrics,
    now: u64,
    expiry_warning: Option<u64>,
) -> crate::authority::store::Result<()> {
    let nodes = store.list_nodes().await?;
    for s in STATES {
        let n = nodes.iter().filter(|node| state_of(node, now) == s).count();
        metrics
            .fleet_nodes
            .get_or_create(&StateLabels { state: s })
            .set(n as u64);
    }
    metrics.fleet_spool_entries.clear();
    for node in &nodes {
        metrics
            .fleet_spool_entries
            .get_or_create(&NodeLabels {
                node: node.name.clone(),
            })
            .set(node.spool_entries);
    }
    if let Some(warning) = expiry_warning {
        let keys = store.list_keys().await?;
        let last = last_used(store).await?;
        let expiring = keys
            .iter()
            .filter(|k| expiring_soon(k.expires_at, now, warning))
            .count();
        let unused = keys
            .iter()
            .filter(|k| {
                let used = k.last_used_at.max(last.get(&k.jti).map(|l| l.at));
                unused_key(k, used, now)
            })
            .count();
        metrics.api_keys_expiring.set(expiring as u64);
        metrics.api_keys_unused.set(unused as u64);
    }
    Ok(())
}

/// Each key's last use seen by any node, by `jti`.
pub async fn last_used(
    store: &Store,
) -> crate::authority::store::Result<
    std::collections::HashMap<String, crate::authority::store::LastUse>,
> {
    Ok(store
        .last_uses()
        .await?
        .into_iter()
        .map(|l| (l.jti.clone(), l))
        .collect())
}

/// True for a key that expires within `warning` seconds of `now` (and has not yet).
pub fn expiring_soon(expires_at: Option<u64>, now: u64, warning: u64) -> bool {
    expires_at.is_some_and(|exp| exp > now && exp - now <= warning)
}

/// True for a key created 30+ days ago with no use in the last 30 days.
pub fn unused_for_30_days(created_at: u64, last_used: Option<u64>, now: u64) -> bool {
    now.saturating_sub(created_at) >= UNUSED_SECS
        && last_used.is_none_or(|at| now.saturating_sub(at) >= UNUSED_SECS)
}

/// [`unused_for_30_days`] for a key that still works (an expired key is not "unused", it is
/// dead: the Expires column says so).
pub fn unused_key(
    key: &crate::authority::store::ApiKeyRecord,
    last_used: Option<u64>,
    now: u64,
) -> bool {
    key.expires_at.is_none_or(|exp| exp > now) && unused_for_30_days(key.created_at, last_used, now)
}

/// Refreshes the gauges every `interval` until shutdown.
pub async fn metrics_loop(state: AppState, interval: std::time::Duration) {
    loop {
        refresh_all_metrics(&state).await;
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_state_comes_from_its_last_report() {
        let node = NodeRecord {
            name: "n".into(),
            version: "v".into(),
            started_at: 0,
            seq: 1,
            interval_seconds: 10,
            first_seen_at: 100,
            last_report_at: 100,
            key_set_version: 1,
            revocations_version: 1,
            revocations_age_seconds: Some(1),
            stale: false,
            spool_entries: 0,
            spool_bytes: 0,
            spool_oldest_seconds: 0,
            dead_letters: 0,
            report_failures: 0,
            refusals: Default::default(),
        };
        assert_eq!(state_of(&node, 130), "ok");
        assert_eq!(state_of(&node, 131), "not_reporting");
        let backlog = NodeRecord {
            spool_entries: 3,
            ..node.clone()
        };
        assert_eq!(state_of(&backlog, 110), "backlog");
        let stale = NodeRecord {
            stale: true,
            ..backlog
        };
        assert_eq!(state_of(&stale, 110), "stale");
    }

    #[test]
    fn expiring_and_unused_keys() {
        let day = 86_400;
        assert!(expiring_soon(Some(100 + 6 * day), 100, 7 * day));
        assert!(!expiring_soon(Some(100 + 8 * day), 100, 7 * day));
        assert!(!expiring_soon(Some(50), 100, 7 * day), "already expired");
        assert!(!expiring_soon(None, 100, 7 * day));
        let now = 100 * day;
        assert!(unused_for_30_days(0, None, now));
        assert!(unused_for_30_days(0, Some(now - 31 * day), now));
        assert!(!unused_for_30_days(0, Some(now - day), now));
        assert!(
            !unused_for_30_days(now - day, None, now),
            "too new to call unused"
        );
    }
}
