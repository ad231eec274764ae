//! Single sign-on routes: `GET /auth/oidc/login?next=PATH` sends the browser to the OpenID
//! provider, `GET /auth/oidc/callback` takes it back, checks everything and starts a session.
//! (The relying party itself — discovery, keys, ID-token checks — is [`crate::authority::oidc`].)
//!
//! - **State, nonce and PKCE verifier** are random per sign-in, kept in the database
//!   (`sso_logins`, so any replica can take the callback) for ten minutes and taken — deleted —
//!   by the first callback that names the state: a replayed or made-up state finds nothing.
//! - **Bound to the browser**: the login sets a short-lived HttpOnly cookie (`pyrogate_sso`,
//!   path `/auth/oidc`); the row holds its SHA-256, and a callback from a browser without it
//!   (a link planted by someone else, login CSRF) is refused.
//! - **Identity**: users are keyed by (issuer, `sub`), never by e-mail; the role is mapped
//!   from the groups at every sign-in ([`crate::authority::store::Store::sso_sign_in`]).
//! - Every refusal is an HTML page that says what went wrong, an audit entry
//!   (`login.sso.refused`) and no session; the callback is answered with
//!   `Referrer-Policy: no-referrer` and `Cache-Control: no-store`, and codes, tokens and the
//!   client secret never reach a log.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::session::{client_ip, cookie_value, end_session, start_session};
use crate::authority::AppState;
use crate::authority::oidc::{self, ProviderError, claims, next::safe_next};
use crate::authority::store::{AuditEntry, PendingSso, SsoIdentity, SsoLink, SsoOutcome};
use crate::edge::metrics::ResultLabels;

/// The browser-binding cookie.
pub const SSO_COOKIE: &str = "pyrogate_sso";
/// How long a sign-in may take at the provider.
const PENDING_SECS: u64 = 600;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/oidc/login", get(login))
        .route("/auth/oidc/callback", get(callback))
}

/// Why a sign-in was refused.
#[derive(Debug)]
enum Refusal {
    BadNext,
    NoState,
    UnknownState,
    OtherBrowser,
    ProviderSaid(String),
    WrongIssuer,
    MissingIssuer,
    NoCode,
    Provider(ProviderError),
    UserInfoSubject,
    Domain,
    NoRole,
    NotSignedUp,
    Disabled,
    Store(crate::authority::store::StoreError),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Provider(ProviderError::Unavailable(_)) => StatusCode::BAD_GATEWAY,
            Refusal::Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Store(crate::authority::store::StoreError::Conflict(_)) => {
                StatusCode::CONFLICT
            }
            Refusal::Store(crate::authority::store::StoreError::Invalid(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::BadNext | Refusal::NoState | Refusal::NoCode => StatusCode::BAD_REQUEST,
            Refusal::Domain | Refusal::NoRole | Refusal::NotSignedUp | Refusal::Disabled => {
                StatusCode::FORBIDDEN
            }
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// A fixed word for the audit log and metrics.
    fn reason(&self) -> &'static str {
        match self {
            Refusal::BadNext => "next",
            Refusal::NoState => "no-state",
            Refusal::UnknownState => "state",
            Refusal::OtherBrowser => "browser",
            Refusal::ProviderSaid(_) => "provider-error",
            Refusal::WrongIssuer | Refusal::MissingIssuer => "iss",
            Refusal::NoCode => "no-code",
            Refusal::Provider(ProviderError::Unavailable(_)) => "provider-unavailable",
            Refusal::Provider(ProviderError::CodeRefused(_)) => "code",
            Refusal::Provider(ProviderError::IdToken(_)) => "id-token",
            Refusal::UserInfoSubject => "userinfo",
            Refusal::Domain => "domain",
            Refusal::NoRole => "role",
            Refusal::NotSignedUp => "no-user",
            Refusal::Disabled => "disabled",
            Refusal::Store(_) => "store",
        }
    }

    /// What the error page says.
    fn message(&self) -> String {
        match self {
            Refusal::BadNext => "The return address is not a page of this site.".into(),
            Refusal::NoState => "The answer from the identity provider has no state.".into(),
            Refusal::UnknownState => {
                "This sign-in has expired or was already used. Start again.".into()
            }
            Refusal::OtherBrowser => {
                "This sign-in was started in another browser. Start again here.".into()
            }
            Refusal::ProviderSaid(code) => {
                format!("The identity provider refused the sign-in ({code}).")
            }
            Refusal::WrongIssuer => {
                "The answer names another identity provider (iss) than the one configured.".into()
            }
            Refusal::MissingIssuer => {
                "The answer lacks the identity provider's name (iss), which it promised to send."
                    .into()
            }
            Refusal::NoCode => "The answer from the identity provider has no code.".into(),
            Refusal::Provider(ProviderError::Unavailable(_)) => {
                "The identity provider could not be reached or answered something unexpected. Try again later.".into()
            }
            Refusal::Provider(e) => format!("{}.", capitalize(&e.to_string())),
            Refusal::UserInfoSubject => {
                "The identity provider's user information is about another user.".into()
            }
            Refusal::Domain => {
                "Your e-mail address is not verified or not in a domain allowed here.".into()
            }
            Refusal::NoRole => "None of your groups gives access here.".into(),
            Refusal::NotSignedUp => {
                "There is no user for you here; ask an administrator to add you.".into()
            }
            Refusal::Disabled => "Your user is disabled.".into(),
            Refusal::Store(
                crate::authority::store::StoreError::Conflict(m)
                | crate::authority::store::StoreError::Invalid(m),
            ) => format!("{}.", capitalize(m)),
            Refusal::Store(_) => "Something went wrong on the server. Try again later.".into(),
        }
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The pair of query parameters named `name`: the first one.
fn param(query: &Option<String>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn no_store(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

/// The browser-binding cookie: set (`value`) or cleared (`None`).
fn binding_cookie(state: &AppState, value: Option<&str>) -> Option<HeaderValue> {
    let (value, age) = match value {
        Some(v) => (v, PENDING_SECS),
        None => ("", 0),
    };
    let mut cookie =
        format!("{SSO_COOKIE}={value}; Path=/auth/oidc; HttpOnly; SameSite=Lax; Max-Age={age}");
    if state.settings.authority.sessions.cookie_secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).ok()
}

fn hash(value: &str) -> String {
    crate::core::b64::encode(crate::core::crypto::sha256(value.as_bytes()))
}

/// The refusal page; the refusal is logged and audited.
async fn refuse(state: &AppState, client: &str, refusal: Refusal) -> Response {
    let now = state.now();
    match &refusal {
        Refusal::Provider(ProviderError::Unavailable(err)) => {
            tracing::warn!(
                error = format!("{err:#}"),
                "single sign-on: the identity provider failed"
            );
        }
        Refusal::Store(err) => tracing::error!(error = %err, "single sign-on: the store failed"),
        other => {
            tracing::info!(client = %client, reason = other.reason(), detail = %other.message(), "single sign-on refused")
        }
    }
    state
        .metrics
        .logins
        .get_or_create(&ResultLabels { result: "failed" })
        .inc();
    let entry =
        AuditEntry::new(now, "sso", "login.sso.refused", Some(refusal.reason())).client(client);
    if let Err(err) = state.store.audit(entry).await {
        tracing::error!(error = %err, "writing the audit log failed");
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in refused · pyrogate</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head>\
         <body><main class=\"login-page\"><div class=\"login-card\"><h1>Sign-in refused</h1>\
         <p class=\"alert\" role=\"alert\" data-testid=\"sso-error\">{}</p>\
         <p><a class=\"button primary wide\" href=\"/login\">Back to the login page</a></p></div></main></body></html>\n",
        html_escape(&refusal.message())
    );
    let mut response = (refusal.status(), page).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'"),
    );
    no_store(&mut response);
    if let Some(clear) = binding_cookie(state, None) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    no_store(&mut response);
    response
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let client = client_ip(addr.ip(), &headers, &state.settings.auth.trusted_proxies).to_string();
    let Some(provider) = state.oidc.clone() else {
        return refuse(&state, &client, Refusal::NotSignedUp).await;
    };
    let Some(next) = safe_next(&param(&query, "next").unwrap_or_default()) else {
        return refuse(&state, &client, Refusal::BadNext).await;
    };
    let meta = match provider.metadata().await {
        Ok(meta) => meta,
        Err(e) => return refuse(&state, &client, Refusal::Provider(e)).await,
    };
    let browser = oidc::random(32);
    let pending = PendingSso {
        state: oidc::random(32),
        browser: hash(&browser),
        nonce: oidc::random(32),
        verifier: oidc::random(32),
        next,
        expires_at: state.now() + PENDING_SECS,
    };
    let url = provider.authorization_url(&meta, &pending.state, &pending.nonce, &pending.verifier);
    if let Err(e) = state.store.begin_sso(pending).await {
        return refuse(&state, &client, Refusal::Store(e)).await;
    }
    let mut response = redirect(&url);
    if let Some(cookie) = binding_cookie(&state, Some(&browser)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn callback(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let client = client_ip(addr.ip(), &headers, &state.settings.auth.trusted_proxies).to_string();
    match sign_in(&state, &headers, &query).await {
        Ok((mut response, user)) => {
            let now = state.now();
            let issuer = user.sso_issuer.clone().unwrap_or_default();
            let entry = AuditEntry::new(
                now,
                &format!("user:{}", user.name),
                "login.sso",
                Some(&issuer),
            )
            .client(&client);
            if let Err(err) = state.store.audit(entry).await {
                tracing::error!(error = %err, "writing the audit log failed");
            }
            state
                .metrics
                .logins
                .get_or_create(&ResultLabels {
                    result: "succeeded",
                })
                .inc();
            tracing::info!(client = %client, user = %user.name, role = %user.role.as_str(), "single sign-on");
            if let Some(clear) = binding_cookie(&state, None) {
                response.headers_mut().append(header::SET_COOKIE, clear);
            }
            response
        }
        Err(refusal) => refuse(&state, &client, refusal).await,
    }
}

/// Everything the callback checks, in order; a session only at the end.
async fn sign_in(
    state: &AppState,
    headers: &HeaderMap,
    query: &Option<String>,
) -> Result<(Response, crate::authority::store::User), Refusal> {
    let provider = state.oidc.clone().ok_or(Refusal::NotSignedUp)?;
    let settings = &provider.settings;
    let now = state.now();
    let state_param = param(query, "state").filter(|s| !s.is_empty() && s.len() <= 256);
    let Some(state_param) = state_param else {
        return Err(Refusal::NoState);
    };
    // Taken first: whatever happens next, this state can't be used again.
    let pending = state
        .store
        .take_sso(&state_param, now)
        .await
        .map_err(Refusal::Store)?
        .ok_or(Refusal::UnknownState)?;
    let bound = cookie_value(headers, SSO_COOKIE).map(hash);
    if bound.as_deref() != Some(pending.browser.as_str()) {
        return Err(Refusal::OtherBrowser);
    }
    let meta = provider.metadata().await.map_err(Refusal::Provider)?;
    // RFC 9207: an `iss` that is not our issuer means the answer is another provider's
    // (mix-up); a provider that promises `iss` must send it.
    match param(query, "iss") {
        Some(iss) if iss != settings.issuer => return Err(Refusal::WrongIssuer),
        None if meta.authorization_response_iss_parameter_supported => {
            return Err(Refusal::MissingIssuer);
        }
        _ => {}
    }
    if let Some(error) = param(query, "error") {
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err(Refusal::ProviderSaid(code));
    }
    let code = param(query, "code")
        .filter(|c| !c.is_empty() && c.len() <= 4096)
        .ok_or(Refusal::NoCode)?;
    let tokens = provider
        .exchange(&meta, &code, &pending.verifier)
        .await
        .map_err(Refusal::Provider)?;
    let id_claims = provider
        .verify_id_token(&meta, &tokens.id_token, &pending.nonce)
        .await
        .map_err(Refusal::Provider)?;
    let userinfo = match &tokens.access_token {
        Some(access) => provider
            .userinfo(&meta, access)
            .await
            .map_err(Refusal::Provider)?,
        None => None,
    };
    let claims = claims::merge(id_claims, userinfo).ok_or(Refusal::UserInfoSubject)?;
    if !claims::domain_allowed(&claims, &settings.allowed_domains) {
        return Err(Refusal::Domain);
    }
    let groups = claims::groups(&claims, &settings.groups_claim);
    let role = claims::role_for(
        &groups,
        &settings.role_mapping,
        settings.role_attribute_strict,
        settings.default_role,
    )
    .ok_or(Refusal::NoRole)?;
    let subject = claims
        .get("sub")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_owned();
    let identity = SsoIdentity {
        link: SsoLink {
            issuer: settings.issuer.clone(),
            subject,
        },
        name: claims::user_name(&claims),
        email: claims::email(&claims),
        full_name: claims::full_name(&claims),
        role,
        groups,
    };
    let user = match state
        .store
        .sso_sign_in(identity, settings.allow_sign_up, now)
        .await
        .map_err(Refusal::Store)?
    {
        SsoOutcome::SignedIn(user) => user,
        SsoOutcome::Disabled(_) => return Err(Refusal::Disabled),
        SsoOutcome::Unknown => return Err(Refusal::NotSignedUp),
    };
    // A new session id at every sign-in; whatever session the browser held ends.
    let store_err = |e: crate::edge::error::ApiError| {
        Refusal::Store(crate::authority::store::StoreError::Task(e.to_string()))
    };
    end_session(state, headers).await.map_err(store_err)?;
    let cookie = start_session(state, &user, now).await.map_err(store_err)?;
    let mut response = redirect(&pending.next);
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok((response, user))
}
