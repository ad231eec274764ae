//! Signing keys on a running authority: `GET /api/signing-keys`, `POST
//! /api/signing-keys/rotate`, `DELETE /api/signing-keys/{kid}` (retire), all Admin.
//!
//! Changes made elsewhere — `pyrogate signing-key …` while the server runs, or another replica
//! on the same PostgreSQL database — are picked up by [`reload`]: the background task compares
//! the keyring's change marker (`keyring.json`'s modification time, or the database's keyring
//! version) every second, and `SIGHUP` forces a reload. A reload swaps the verifier's key set, drops revocation
//! entries of retired keys, and re-signs the revocation list with the active key.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use serde::Serialize;

use super::session::Caller;
use crate::authority::AppState;
use crate::authority::keyring::{KeyStatus, Keyring, Revision};
use crate::authority::store::AuditEntry;
use crate::core::clock::rfc3339;
use crate::edge::auth::Access;
use crate::edge::error::ApiError;
use crate::edge::json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/signing-keys", get(list))
        .route("/api/signing-keys/rotate", post(rotate))
        .route("/api/signing-keys/{kid}", delete(retire))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SigningKeyView {
    kid: String,
    status: KeyStatus,
    created_at: String,
    retired_at: Option<String>,
}

/// Re-reads the keyring if its change marker moved (another process or replica changed it),
/// or always with `force`, and applies it.
pub async fn reload(state: &AppState, force: bool) -> anyhow::Result<()> {
    let revision = state.keyring_home.revision().await?;
    {
        let seen = state.keyring_seen.lock().unwrap_or_else(|e| e.into_inner());
        if !force && *seen == Some(revision) {
            return Ok(());
        }
    }
    let ring = state.keyring_home.open().await?;
    apply(state, ring, revision).await
}

/// Installs `ring` as the authority's keyring and updates everything that depends on it.
async fn apply(state: &AppState, ring: Keyring, revision: Revision) -> anyhow::Result<()> {
    let published = super::distribution::install(state, ring, revision);
    let (now, skew) = (state.now(), state.settings.auth.clock_skew.as_secs());
    let gone = state
        .store
        .delete_keys_of_unpublished(&published, now)
        .await?;
    if !gone.is_empty() {
        tracing::info!(keys = ?gone, "API keys signed by a retired signing key are now listed as deleted");
    }
    state.store.prune_revocations(now, skew, &published).await?;
    // Always re-sign: the active key may have changed.
    super::distribution::republish(state).await?;
    tracing::info!("signing keys reloaded");
    Ok(())
}

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let ring = state.keyring.lock().unwrap_or_else(|e| e.into_inner());
    let views: Vec<SigningKeyView> = ring
        .keys()
        .iter()
        .map(|k| SigningKeyView {
            kid: k.kid.clone(),
            status: k.status,
            created_at: rfc3339(k.created_at),
            retired_at: k.retired_at.map(rfc3339),
        })
        .collect();
    Ok(json(StatusCode::OK, &views))
}

/// Applies the keyring a change (rotate, retire) left.
async fn changed(state: &AppState, ring: Keyring) -> Result<(), ApiError> {
    let revision = state.keyring_home.revision_of(&ring).await?;
    apply(state, ring, revision)
        .await
        .map_err(ApiError::Internal)
}

async fn rotate(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let now = state.now();
    let (ring, new_kid) = state.keyring_home.rotate(now).await?;
    changed(&state, ring).await?;
    let (actor, kid) = (caller.actor(), new_kid.clone());
    state
        .store
        .audit(AuditEntry::new(
            now,
            &actor,
            "signingkey.rotate",
            Some(&kid),
        ))
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "kid": new_kid }),
    ))
}

async fn retire(
    State(state): State<AppState>,
    caller: Caller,
    Path(kid): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let now = state.now();
    let ring = state.keyring_home.retire(&kid, now).await?;
    changed(&state, ring).await?;
    let actor = caller.actor();
    state
        .store
        .audit(AuditEntry::new(
            now,
            &actor,
            "signingkey.retire",
            Some(&kid),
        ))
        .await?;
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}
