//! API keys: `GET/POST /api/keys`, `PATCH/DELETE /api/keys/{id}` (Admin, by session or by an
//! Admin-role API key). The create/delete/limit logic is shared with `pyrogate api-key …`.
//!
//! A key's limits (`"limits"`) are not in the token: setting them (at creation or later with
//! `PATCH`) moves the revocation list's version and republishes it, and the nodes take the
//! new limits from its `limits` section as they take a deletion.
//!
//! Creating a key signs the token in memory and inserts its metadata (with the `jti`) in one
//! statement; the token is returned once and never stored. Deleting a key revokes its `jti` in
//! the same transaction and republishes the revocation list at once, so long-polling nodes
//! see it within milliseconds.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};

use super::session::Caller;
use crate::edge::json::{JsonBody, json};

use crate::authority::AppState;
use crate::authority::store::{self, ApiKeyRecord, Store, StoreError};
use crate::config::DefaultKeyLimits;
use crate::core::clock::rfc3339;
use crate::core::jws::Signer;
use crate::core::limits::KeyLimits;
use crate::core::token::{self, IssueError, KeyRequest, Role, Secret};
use crate::edge::auth::Access;
use crate::edge::error::ApiError;

/// Longest validity accepted: 100 years.
pub const MAX_TTL_SECONDS: i64 = 100 * 365 * 86_400;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/keys", get(list).post(create))
        .route("/api/keys/{id}", delete(remove).patch(update))
        .route("/api/revocations/jti", axum::routing::post(revoke))
}

/// What `POST /api/revocations/jti` and `pyrogate api-key revoke` take: the `jti` of a key —
/// typically one issued offline with `pyrogate token issue`, which no store knows — and,
/// optionally, its `exp`, so the entry can be pruned once the key would have expired anyway.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeJti {
    pub jti: String,
    #[serde(default)]
    pub exp: Option<u64>,
}

/// Revokes a `jti`: a registered key is deleted (as `DELETE /api/keys/{id}`), any other is
/// added to the list as it is. Returns the key's name if it was registered and the version.
pub async fn revoke_jti(
    store: &Store,
    req: &RevokeJti,
    now: u64,
    actor: &str,
) -> Result<(Option<String>, u64), StoreError> {
    let valid = (22..=128).contains(&req.jti.len())
        && req
            .jti
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(StoreError::Invalid(
            "jti must be 22 to 128 base64url characters",
        ));
    }
    store.revoke_jti(&req.jti, req.exp, now, actor).await
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<RevokeJti>,
) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let (now, actor) = (state.now(), caller.actor());
    let jti = req.jti.clone();
    let (name, version) = revoke_jti(&state.store, &req, now, &actor).await?;
    state.metrics.api_keys_deleted.inc();
    super::distribution::republish(&state).await?;
    tracing::info!(%jti, by = %caller.actor(), "jti revoked");
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "jti": jti, "name": name, "revocationsVersion": version }),
    ))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: i64,
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    /// Where a node last saw the key push: `{node, app}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_by: Option<LastUsedBy>,
    /// Expires within `auth.key-expiry-warning`.
    pub expiring_soon: bool,
    /// Created 30+ days ago and not used for 30 days.
    pub unused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidrs: Option<Vec<String>>,
    /// Fleet-wide limits; `null`: unlimited.
    pub limits: Option<KeyLimits>,
    /// When a node last reported the key refused over its limit.
    pub last_limited_at: Option<String>,
    /// A node refused the key over its limit within the last [`LIMITED_RECENTLY_SECS`].
    pub limited_recently: bool,
}

/// How long a key counts as "limited recently" after a node reported it refused with 429.
pub const LIMITED_RECENTLY_SECS: u64 = 15 * 60;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastUsedBy {
    pub node: String,
    pub app: String,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(k: ApiKeyRecord) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            role: k.role,
            tenant: k.tenant,
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
            last_used_by: None,
            expiring_soon: false,
            unused: false,
            created_by: k.created_by,
            apps: k.apps,
            cidrs: k.cidrs,
            limits: k.limits,
            last_limited_at: k.last_limited_at.map(rfc3339),
            limited_recently: false,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidrs: Option<Vec<String>>,
    pub limits: Option<KeyLimits>,
}

/// `"limits"` as sent: absent (`None`), `null` (`Some(None)`) or an object.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<KeyLimits>>, D::Error> {
    Option::<KeyLimits>::deserialize(d).map(Some)
}

/// The body of `PATCH /api/keys/{id}`: what to change (today, only the limits).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateKeyRequest {
    /// New limits; `null` removes them; absent leaves them as they are.
    #[serde(default, deserialize_with = "present")]
    pub limits: Option<Option<KeyLimits>>,
}

/// Validates limits as sent: `Ok(None)` for `null` or an empty object (unlimited).
pub fn validate_limits(limits: Option<KeyLimits>) -> Result<Option<KeyLimits>, Vec<String>> {
    limits.map_or(Ok(None), KeyLimits::normalize)
}

/// The body of `POST /api/keys`, loosely typed so every problem gets its own message.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub name: Option<String>,
    pub role: Option<String>,
    pub ttl_seconds: Option<i64>,
    pub tenant: Option<String>,
    /// Applications the key is limited to (names or `prefix*`); absent or null: any.
    pub apps: Option<Vec<String>>,
    /// Networks the key is limited to; absent or null: anywhere.
    pub cidrs: Option<Vec<String>>,
    /// Fleet-wide limits; absent: the role's default (`auth.default-key-limits.*`); null:
    /// unlimited.
    #[serde(default, deserialize_with = "present")]
    pub limits: Option<Option<KeyLimits>>,
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub role: Role,
    pub ttl_seconds: u64,
    pub tenant: Option<String>,
    pub apps: Option<Vec<String>>,
    pub cidrs: Option<Vec<String>>,
    /// `None`: unlimited.
    pub limits: Option<KeyLimits>,
}

impl CreateKeyRequest {
    /// Every problem at once, with Pyroscope's messages where it had them. A request without
    /// `limits` gets its role's default from `defaults`.
    pub fn validate(self, defaults: &DefaultKeyLimits) -> Result<NewKey, Vec<String>> {
        let mut errors = Vec::new();
        let name = crate::core::names::normalize(&self.name.unwrap_or_default());
        if let Err(e) = token::validate_name(&name) {
            errors.push(match e {
                IssueError::NameTooLong => "api key name must not exceed 255 characters".into(),
                other => other.to_string(),
            });
        }
        let role = self.role.as_deref().and_then(|r| r.parse::<Role>().ok());
        if role.is_none() {
            errors.push("unknown role".into());
        }
        let ttl = self.ttl_seconds.unwrap_or(0);
        if ttl < 0 {
            errors.push("ttlSeconds must not be negative (0 means never expires)".into());
        } else if ttl > MAX_TTL_SECONDS {
            errors.push(format!(
                "ttlSeconds must be at most {MAX_TTL_SECONDS} (100 years)"
            ));
        }
        let tenant = self.tenant.filter(|t| !t.is_empty());
        if let Some(t) = &tenant
            && let Err(e) = token::validate_tenant(t)
        {
            errors.push(e.to_string());
        }
        if let Some(role) = role
            && let Err(e) = token::validate_scope(role, self.apps.as_deref(), self.cidrs.as_deref())
        {
            errors.push(e.to_string());
        }
        let limits = match self.limits {
            Some(given) => validate_limits(given).unwrap_or_else(|e| {
                errors.extend(e);
                None
            }),
            None => role.and_then(|r| defaults.for_role(r)),
        };
        match role {
            Some(role) if errors.is_empty() => Ok(NewKey {
                name,
                role,
                ttl_seconds: ttl as u64,
                tenant,
                apps: self.apps,
                cidrs: self.cidrs,
                limits,
            }),
            _ => Err(errors),
        }
    }
}

/// Signs a key and records its metadata (and an audit entry) in one transaction.
pub async fn create_key(
    store: &Store,
    signer: &Signer,
    issuer: &str,
    now: u64,
    req: &NewKey,
    actor: &str,
) -> Result<(ApiKeyRecord, Secret), StoreError> {
    let issued = token::issue(
        signer,
        issuer,
        now,
        &KeyRequest {
            name: &req.name,
            role: req.role,
            ttl_seconds: req.ttl_seconds,
            tenant: req.tenant.as_deref(),
            apps: req.apps.as_deref(),
            cidrs: req.cidrs.as_deref(),
        },
    )
    .map_err(|_| StoreError::Conflict("the key request is invalid"))?;
    let record = store
        .create_key(store::NewKey {
            name: req.name.clone(),
            role: req.role,
            jti: issued.claims.jti.clone(),
            kid: issued.kid.clone(),
            tenant: req.tenant.clone(),
            created_at: now,
            expires_at: issued.claims.exp,
            created_by: Some(actor.to_owned()),
            apps: req.apps.clone(),
            cidrs: req.cidrs.clone(),
            limits: req.limits,
        })
        .await?;
    Ok((record, issued.token))
}

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let keys = state.store.list_keys().await?;
    let mut fleet = super::nodes::last_used(&state.store).await?;
    let (now, warning) = (
        state.now(),
        state.settings.authority.key_expiry_warning.as_secs(),
    );
    let views: Vec<KeyView> = keys
        .into_iter()
        .map(|k| {
            // The latest use: a node's report, or a push to this authority itself.
            let seen = fleet
                .remove(&k.jti)
                .filter(|l| Some(l.at) >= k.last_used_at);
            let last = seen.as_ref().map(|l| l.at).or(k.last_used_at);
            let expiring_soon = super::nodes::expiring_soon(k.expires_at, now, warning);
            let unused = super::nodes::unused_key(&k, last, now);
            let limited_recently = k
                .last_limited_at
                .is_some_and(|at| now.saturating_sub(at) < LIMITED_RECENTLY_SECS);
            KeyView {
                limited_recently,
                last_used_at: last.map(rfc3339),
                last_used_by: seen.map(|l| LastUsedBy {
                    node: l.node,
                    app: l.app,
                }),
                expiring_soon,
                unused,
                ..KeyView::from(k)
            }
        })
        .collect();
    Ok(json(StatusCode::OK, &views))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateKeyRequest>,
) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let req = req
        .validate(&state.settings.authority.default_key_limits)
        .map_err(ApiError::BadRequest)?;
    let signer = state.signer()?;
    let (issuer, now, actor) = (
        state.settings.auth.issuer.clone(),
        state.now(),
        caller.actor(),
    );
    let (record, key) = create_key(&state.store, &signer, &issuer, now, &req, &actor).await?;
    state.metrics.api_keys_created.inc();
    if record.limits.is_some() {
        super::distribution::republish(&state).await?;
    }
    tracing::info!(name = %record.name, role = %record.role, by = %caller.actor(), "api key created");
    Ok(json(
        StatusCode::CREATED,
        &CreatedKey {
            id: record.id,
            name: record.name,
            role: record.role,
            key: key.expose().to_owned(),
            tenant: record.tenant,
            created_at: rfc3339(record.created_at),
            expires_at: record.expires_at.map(rfc3339),
            apps: record.apps,
            cidrs: record.cidrs,
            limits: record.limits,
        },
    ))
}

/// `PATCH /api/keys/{id}`: changes a key's limits without reissuing it. The list is
/// republished at once, so long-polling nodes enforce the new limits within a second.
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateKeyRequest>,
) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound("api key not found".into()))?;
    let Some(limits) = req.limits else {
        return Err(ApiError::bad_request("nothing to change: send \"limits\""));
    };
    let limits = validate_limits(limits).map_err(ApiError::BadRequest)?;
    let (now, actor) = (state.now(), caller.actor());
    let (record, _) = state.store.set_key_limits(id, limits, now, &actor).await?;
    super::distribution::republish(&state).await?;
    tracing::info!(
        name = %record.name,
        limits = %limits.as_ref().map_or("no limit".into(), KeyLimits::describe),
        by = %caller.actor(),
        "api key limits set"
    );
    Ok(json(StatusCode::OK, &KeyView::from(record)))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound("api key not found".into()))?;
    let (now, actor) = (state.now(), caller.actor());
    let (record, _) = state.store.delete_key(id, now, &actor).await?;
    state.metrics.api_keys_deleted.inc();
    super::distribution::republish(&state).await?;
    tracing::info!(name = %record.name, by = %caller.actor(), "api key deleted and revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
