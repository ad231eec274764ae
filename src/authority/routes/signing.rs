//! Signing keys on a running authority: `GET /api/signing-keys`, `POST
//! /api/signing-keys/rotate`, `DELETE /api/signing-keys/{kid}` (retire), all Admin.
//!
//! Changes made with `pyrogate signing-key …` while the server runs are picked up by
//! [`reload`]: the background task checks `keyring.json`'s modification time every second,
//! and `SIGHUP` forces a reload. A reload swaps the verifier's key set, drops revocation
//! entries of retired keys, and re-signs the revocation list with the active key.

use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use serde::Serialize;

use super::session::Caller;
use crate::authority::AppState;
use crate::authority::keyring::{KeyStatus, Keyring, KeyringError};
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

fn manifest_mtime(state: &AppState) -> Option<SystemTime> {
    std::fs::metadata(state.settings.authority.keys_dir.join("keyring.json"))
        .and_then(|m| m.modified())
        .ok()
}

/// Re-reads the keyring if it changed on disk (or always, with `force`) and applies it.
pub async fn reload(state: &AppState, force: bool) -> anyhow::Result<()> {
    let mtime = manifest_mtime(state);
    {
        let mut seen = state.keyring_seen.lock().unwrap_or_else(|e| e.into_inner());
        if !force && *seen == mtime {
            return Ok(());
        }
        *seen = mtime;
    }
    let ring = Keyring::open(&state.settings.authority.keys_dir)?;
    apply(state, ring).await
}

/// Installs `ring` as the authority's keyring and updates everything that depends on it.
async fn apply(state: &AppState, ring: Keyring) -> anyhow::Result<()> {
    let keys = ring.key_set();
    let published: Vec<String> = keys.kids().map(str::to_owned).collect();
    state.metrics.signing_keys_published.set(keys.len() as u64);
    state.verifier.set_keys(keys);
    *state.keyring.lock().unwrap_or_else(|e| e.into_inner()) = ring;
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

/// Runs a keyring mutation on a fresh copy read from disk, then applies the result.
async fn mutate(
    state: &AppState,
    change: impl FnOnce(&mut Keyring) -> Result<(), KeyringError>,
) -> Result<(), ApiError> {
    let mut ring = Keyring::open(&state.settings.authority.keys_dir)?;
    change(&mut ring)?;
    *state.keyring_seen.lock().unwrap_or_else(|e| e.into_inner()) = manifest_mtime(state);
    apply(state, ring).await.map_err(ApiError::Internal)
}

async fn rotate(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let now = state.now();
    let mut new_kid = String::new();
    mutate(&state, |ring| {
        new_kid = ring.rotate(now)?;
        Ok(())
    })
    .await?;
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
    let target = kid.clone();
    mutate(&state, |ring| ring.retire(&target, now)).await?;
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
