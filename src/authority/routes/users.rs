//! Users: `/api/user…` for the caller themself, `/api/users…` for admins. Shapes follow
//! Pyroscope's (`fullName`, `isDisabled`, RFC 3339 timestamps) so its scripts keep working.

use axum::Router;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, put};
use serde::{Deserialize, Serialize};

use super::session::Caller;
use crate::authority::AppState;
use crate::authority::store::{self, User};
use crate::core::clock::rfc3339;
use crate::core::token::Role;
use crate::edge::auth::Access;
use crate::edge::error::ApiError;
use crate::edge::json::{JsonBody, json};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    id: i64,
    name: String,
    email: Option<String>,
    full_name: Option<String>,
    role: Role,
    is_disabled: bool,
    /// Signs in through the OpenID provider rather than with a password.
    is_external: bool,
    /// The provider's issuer for an SSO user; absent for a local one.
    #[serde(skip_serializing_if = "Option::is_none")]
    sso_issuer: Option<String>,
    /// The provider's groups at the user's last sign-in; absent for a local user.
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<String>>,
    created_at: String,
    updated_at: String,
    last_seen_at: Option<String>,
    password_changed_at: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            name: u.name,
            email: u.email,
            full_name: u.full_name,
            role: u.role,
            is_disabled: u.is_disabled,
            is_external: u.sso_issuer.is_some(),
            sso_issuer: u.sso_issuer,
            groups: u.sso_groups,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
            last_seen_at: u.last_seen_at.map(rfc3339),
            password_changed_at: rfc3339(u.password_changed_at),
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/user", get(me).patch(update_me))
        .route("/api/user/password", put(change_my_password))
        .route("/api/users", get(list).post(create))
        .route("/api/users/{id}", get(get_one).patch(update).delete(delete))
        .route("/api/users/{id}/password", put(reset_password))
        .route("/api/users/{id}/role", put(change_role))
        .route("/api/users/{id}/disable", put(disable))
        .route("/api/users/{id}/enable", put(enable))
}

pub fn validate_user_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("user name can't be empty".into());
    }
    if name.chars().count() > 255 {
        return Err("user name can't be longer than 255 symbols".into());
    }
    if name.chars().any(char::is_control) {
        return Err("user name must not contain control characters".into());
    }
    if crate::core::names::has_hidden(name) {
        return Err("user name must not contain invisible or direction-changing characters".into());
    }
    Ok(())
}

fn validate_email(email: &str) -> Result<(), String> {
    let ok = email.len() <= 255
        && email
            .split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && !email.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err("user email is invalid".into())
    }
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound("user not found".into()))
}

async fn hash(password: String) -> Result<String, ApiError> {
    crate::authority::passwords::hash_async(password)
        .await
        .map_err(ApiError::Internal)
}

async fn audit(state: &AppState, caller: &Caller, action: &'static str, target: String) {
    let (actor, now) = (caller.actor(), state.now());
    let result = state
        .store
        .audit(store::AuditEntry::new(now, &actor, action, Some(&target)))
        .await;
    if let Err(err) = result {
        tracing::error!(error = %err, action, "writing the audit log failed");
    }
}

async fn me(caller: Caller) -> Result<Response, ApiError> {
    Ok(json(
        StatusCode::OK,
        &UserView::from(caller.user()?.clone()),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateUser {
    name: Option<String>,
    email: Option<String>,
    full_name: Option<String>,
}

async fn apply_update(state: &AppState, id: i64, req: UpdateUser) -> Result<User, ApiError> {
    let mut errors = Vec::new();
    if let Some(name) = &req.name
        && let Err(e) = validate_user_name(name)
    {
        errors.push(e);
    }
    if let Some(email) = req.email.as_deref().filter(|e| !e.is_empty())
        && let Err(e) = validate_email(email)
    {
        errors.push(e);
    }
    if let Some(full) = &req.full_name
        && (full.chars().count() > 255 || full.chars().any(char::is_control))
    {
        errors.push("user full name is invalid".into());
    }
    if !errors.is_empty() {
        return Err(ApiError::BadRequest(errors));
    }
    let now = state.now();
    let update = store::UserUpdate {
        name: req.name,
        email: req.email,
        full_name: req.full_name,
    };
    Ok(state.store.update_user(id, update, now).await?)
}

async fn update_me(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<UpdateUser>,
) -> Result<Response, ApiError> {
    let id = caller.user()?.id;
    let user = apply_update(&state, id, req).await?;
    audit(&state, &caller, "user.update", user.name.clone()).await;
    Ok(json(StatusCode::OK, &UserView::from(user)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangePassword {
    old_password: String,
    new_password: String,
}

async fn change_my_password(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<ChangePassword>,
) -> Result<Response, ApiError> {
    let user = caller.user()?.clone();
    crate::authority::passwords::validate(&req.new_password).map_err(ApiError::bad_request)?;
    let id = user.id;
    let current = state.store.password_hash(id).await?;
    let old = req.old_password;
    let ok = crate::authority::passwords::verify_async(old, current)
        .await
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the password check was lost")))?;
    if !ok {
        return Err(ApiError::bad_request("the current password is wrong"));
    }
    let new_hash = hash(req.new_password).await?;
    let now = state.now();
    let keep = match &caller {
        Caller::User { sid, .. } => Some(sid.clone()),
        Caller::Key(_) => None,
    };
    state
        .store
        .set_password(id, &new_hash, now, keep.as_deref())
        .await?;
    audit(&state, &caller, "user.password", user.name).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let users = state.store.list_users().await?;
    let views: Vec<UserView> = users.into_iter().map(UserView::from).collect();
    Ok(json(StatusCode::OK, &views))
}

/// The Node role is an ingest node's credential (an API key), never a person's.
const NODE_USER: &str = "the Node role is for ingest nodes' API keys, not for users";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateUser {
    name: Option<String>,
    email: Option<String>,
    full_name: Option<String>,
    password: Option<String>,
    role: Option<String>,
    /// The user's `sub` at the `auth.oidc` provider: a user who signs in only through it.
    sso_subject: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateUser>,
) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let mut errors = Vec::new();
    let name = crate::core::names::normalize(&req.name.unwrap_or_default());
    if let Err(e) = validate_user_name(&name) {
        errors.push(e);
    }
    let email = req.email.filter(|e| !e.is_empty());
    if let Some(e) = email.as_deref()
        && let Err(e) = validate_email(e)
    {
        errors.push(e);
    }
    let sso = match (
        req.sso_subject.filter(|s| !s.is_empty()),
        &state.settings.authority.oidc,
    ) {
        (None, _) => None,
        (Some(_), None) => {
            errors.push("ssoSubject needs single sign-on (auth.oidc.enabled)".into());
            None
        }
        (Some(subject), Some(_))
            if subject.len() > 255 || subject.chars().any(char::is_control) =>
        {
            errors.push("ssoSubject is invalid".into());
            None
        }
        (Some(subject), Some(oidc)) => Some(store::SsoLink {
            issuer: oidc.issuer.clone(),
            subject,
        }),
    };
    let password = req.password.unwrap_or_default();
    if sso.is_some() {
        if !password.is_empty() {
            errors.push("a user who signs in through the provider has no password".into());
        }
    } else if let Err(e) = crate::authority::passwords::validate(&password) {
        errors.push(e.into());
    }
    let role = req.role.as_deref().and_then(|r| r.parse::<Role>().ok());
    match role {
        None => errors.push("unknown role".into()),
        Some(Role::Node) => errors.push(NODE_USER.into()),
        Some(_) => {}
    }
    let (Some(role), true) = (role, errors.is_empty()) else {
        return Err(ApiError::BadRequest(errors));
    };
    let hash = match sso {
        Some(_) => store::NO_PASSWORD.to_owned(),
        None => hash(password).await?,
    };
    let now = state.now();
    let full_name = req.full_name;
    let new = store::NewUser {
        name: name.clone(),
        email,
        full_name,
        password_hash: hash,
        role,
        sso,
    };
    let user = state.store.create_user(new, now).await?;
    audit(&state, &caller, "user.create", name).await;
    Ok(json(StatusCode::CREATED, &UserView::from(user)))
}

async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let id = parse_id(&id)?;
    let user = state.store.get_user(id).await?;
    Ok(json(StatusCode::OK, &UserView::from(user)))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateUser>,
) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let user = apply_update(&state, parse_id(&id)?, req).await?;
    audit(&state, &caller, "user.update", user.name.clone()).await;
    Ok(json(StatusCode::OK, &UserView::from(user)))
}

/// `?keepKeys=true` keeps the API keys the user created; by default they are revoked with the
/// user (an Admin key must not outlive the person who made it).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeepKeys {
    #[serde(default)]
    keep_keys: bool,
}

fn names(keys: Vec<store::ApiKeyRecord>) -> Vec<String> {
    keys.into_iter().map(|k| k.name).collect()
}

/// Tells nodes at once and says which keys went, in a `Pyrogate-Revoked-Keys` header.
async fn announce_revoked(
    state: &AppState,
    response: &mut Response,
    revoked: &[String],
) -> Result<(), ApiError> {
    if revoked.is_empty() {
        return Ok(());
    }
    state.metrics.api_keys_deleted.inc_by(revoked.len() as u64);
    super::distribution::republish(state).await?;
    if let Ok(v) = axum::http::HeaderValue::from_str(&revoked.len().to_string()) {
        response.headers_mut().insert("pyrogate-revoked-keys", v);
    }
    Ok(())
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    axum::extract::Query(keep): axum::extract::Query<KeepKeys>,
) -> Result<Response, ApiError> {
    let keep = keep.keep_keys;
    caller.require(Access::Admin)?;
    let id = parse_id(&id)?;
    if let Caller::User { user, .. } = &caller
        && user.id == id
    {
        return Err(ApiError::bad_request("you can't delete yourself"));
    }
    let now = state.now();
    let (user, revoked) = state.store.delete_user(id, !keep, now).await?;
    let revoked = names(revoked);
    audit(&state, &caller, "user.delete", user.name).await;
    let mut response = StatusCode::NO_CONTENT.into_response();
    announce_revoked(&state, &mut response, &revoked).await?;
    Ok(response)
}

#[derive(Deserialize)]
struct ResetPassword {
    password: String,
}

async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ResetPassword>,
) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let id = parse_id(&id)?;
    crate::authority::passwords::validate(&req.password).map_err(ApiError::bad_request)?;
    let user = state.store.get_user(id).await?;
    let new_hash = hash(req.password).await?;
    let now = state.now();
    state.store.set_password(id, &new_hash, now, None).await?;
    audit(&state, &caller, "user.password.reset", user.name).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct ChangeRole {
    role: String,
}

async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ChangeRole>,
) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let id = parse_id(&id)?;
    let role: Role = req
        .role
        .parse()
        .map_err(|_| ApiError::bad_request("unknown role"))?;
    if role == Role::Node {
        return Err(ApiError::bad_request(NODE_USER));
    }
    let now = state.now();
    let user = state.store.set_role(id, role, now).await?;
    audit(
        &state,
        &caller,
        "user.role",
        format!("{} {}", user.name, role),
    )
    .await;
    Ok(json(StatusCode::OK, &UserView::from(user)))
}

async fn set_disabled(
    state: AppState,
    caller: Caller,
    id: String,
    disabled: bool,
    keep: bool,
) -> Result<Response, ApiError> {
    caller.require(Access::Admin)?;
    let id = parse_id(&id)?;
    if disabled
        && let Caller::User { user, .. } = &caller
        && user.id == id
    {
        return Err(ApiError::bad_request("you can't disable yourself"));
    }
    let now = state.now();
    let (user, revoked) = state.store.set_disabled(id, disabled, !keep, now).await?;
    let revoked = names(revoked);
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    audit(&state, &caller, action, user.name.clone()).await;
    let mut response = json(StatusCode::OK, &UserView::from(user));
    announce_revoked(&state, &mut response, &revoked).await?;
    Ok(response)
}

async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    axum::extract::Query(keep): axum::extract::Query<KeepKeys>,
) -> Result<Response, ApiError> {
    let keep = keep.keep_keys;
    set_disabled(state, caller, id, true, keep).await
}

async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(state, caller, id, false, false).await
}
