//! `GET /api/ingestion` (Admin): what arrived per app, and from which keys — on this
//! authority itself (`apps`), and fleet-wide from the ingest nodes' reports (`fleet`: per
//! app, its keys and its nodes).

use axum::extract::State;
use axum::http::StatusCode;

use crate::authority::AppState;
use crate::authority::routes::session;
use crate::core::clock::rfc3339;
use crate::edge::error::ApiError;
use crate::edge::json::json;

/// `GET /api/ingestion` (Admin): what arrived per app, and from which keys.
pub(crate) async fn ingestion(
    State(state): State<AppState>,
    caller: session::Caller,
) -> Result<axum::response::Response, ApiError> {
    caller.require(crate::edge::auth::Access::Admin)?;
    let apps: Vec<serde_json::Value> = state
        .ingest
        .stats()
        .snapshot()
        .into_iter()
        .map(|a| {
            serde_json::json!({
                "app": a.app,
                "pushes": a.pushes,
                "bytes": a.bytes,
                "lastPushAt": rfc3339(a.last_push_at),
                "keys": a.keys,
            })
        })
        .collect();
    let local = state
        .ingest
        .local()
        .map(|l| serde_json::json!({ "profiles": l.len(), "bytes": l.bytes() }));
    let fleet = fleet(&state).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "apps": apps, "localStore": local, "fleet": fleet }),
    ))
}

#[derive(Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Totals {
    pushes: u64,
    bytes: u64,
    refused: u64,
    last_push_at: u64,
}

impl Totals {
    fn add(&mut self, u: &crate::authority::store::UsageRecord) {
        self.pushes += u.pushes;
        self.bytes += u.bytes;
        self.refused += u.refused;
        self.last_push_at = self.last_push_at.max(u.last_push_at);
    }
}

/// The nodes' usage rows summed per app, with each app's keys and nodes.
async fn fleet(state: &AppState) -> Result<Vec<serde_json::Value>, ApiError> {
    use std::collections::BTreeMap;
    #[derive(Default)]
    struct App {
        total: Totals,
        keys: BTreeMap<String, Totals>,
        nodes: BTreeMap<String, Totals>,
    }
    let mut apps: BTreeMap<String, App> = BTreeMap::new();
    for u in state.store.list_usage().await? {
        let app = apps.entry(u.app.clone()).or_default();
        app.total.add(&u);
        app.keys.entry(u.key_name.clone()).or_default().add(&u);
        app.nodes.entry(u.node.clone()).or_default().add(&u);
    }
    let named = |map: BTreeMap<String, Totals>, field: &str| -> Vec<serde_json::Value> {
        map.into_iter()
            .map(|(name, t)| {
                let mut v = serde_json::json!({
                    "pushes": t.pushes,
                    "bytes": t.bytes,
                    "refused": t.refused,
                    "lastPushAt": (t.last_push_at > 0).then(|| rfc3339(t.last_push_at)),
                });
                v[field] = name.into();
                v
            })
            .collect()
    };
    Ok(apps
        .into_iter()
        .map(|(name, a)| {
            serde_json::json!({
                "app": name,
                "pushes": a.total.pushes,
                "bytes": a.total.bytes,
                "refused": a.total.refused,
                "lastPushAt": (a.total.last_push_at > 0).then(|| rfc3339(a.total.last_push_at)),
                "keys": named(a.keys, "key"),
                "nodes": named(a.nodes, "node"),
            })
        })
        .collect())
}
