//! `GET /api/ingestion` (Admin): what arrived per app, and from which keys.

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
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "apps": apps, "localStore": local }),
    ))
}
