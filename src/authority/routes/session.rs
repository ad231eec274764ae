//! UI sessions and the caller of an admin endpoint.
//!
//! A session cookie is a JWS of its own kind: `{"alg":"HS256","typ":"session+jwt"}`, keyed by
//! `auth.jwt-secret` (or a secret generated once and kept in the database). Neither its
//! algorithm, its `typ` nor its key is that of an API key, so a cookie can never pass as a key
//! or a key as a cookie. The cookie names a session row, so logout, a password change or
//! disabling the user ends it at once, and the user's role is read fresh on every request.
//!
//! Admin endpoints also take an Admin-role API key as `Authorization: Bearer` (automation);
//! such requests carry no cookie, so they need no cross-site protection. Cookie-authenticated
//! state-changing requests must come from the same origin, and bodies must be JSON, which an
//! HTML form cannot send. Same origin means `Sec-Fetch-Site`, when sent, is `same-origin` or
//! `none`, and `Origin`, when sent, has the scheme, host and port the request was addressed to:
//! the `Host` header, over `https` when the listener serves TLS or a trusted proxy
//! (`auth.trusted-proxies`) says so in `X-Forwarded-Proto`, default ports filled in
//! (`https://h` is `https://h:443`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};

use crate::authority::AppState;
use crate::authority::store::{AuditEntry, Store, User};
use crate::authority::throttle::{Admission, LoginThrottle};
use crate::config::HostPattern;
use crate::core::b64;
use crate::core::token::{Role, Secret};
use crate::core::verifier::{Principal, VerifyError};
use crate::edge::auth::{self, Access};
use crate::edge::error::ApiError;
use crate::edge::json::JsonBody;
use crate::edge::metrics::{DecisionLabels, ResultLabels};

pub const COOKIE: &str = "pyrogate_session";
/// `{"alg":"HS256","typ":"session+jwt"}`, base64url: the only header a session may have.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6InNlc3Npb24rand0In0";

/// The HMAC key for session cookies.
pub struct SessionKey(Vec<u8>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey([redacted])")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionClaims {
    sid: String,
    uid: i64,
    iat: u64,
    exp: u64,
}

impl SessionKey {
    pub async fn load(store: &Store, configured: Option<&Secret>) -> anyhow::Result<Self> {
        if let Some(secret) = configured {
            return Ok(SessionKey(secret.expose().as_bytes().to_vec()));
        }
        let stored = store.init_meta("session_secret", &b64::random(32)).await?;
        Ok(SessionKey(stored.into_bytes()))
    }

    fn mac_key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0)
    }

    fn issue(&self, claims: &SessionClaims) -> String {
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let mut out = format!("{HEADER_B64}.{}", b64::encode(payload));
        let tag = ring::hmac::sign(&self.mac_key(), out.as_bytes());
        out.push('.');
        out.push_str(&b64::encode(tag));
        out
    }

    fn verify(&self, token: &str, now: u64) -> Result<SessionClaims, VerifyError> {
        let parts = crate::core::jws::split(token, 1024)?;
        if parts.header != HEADER_B64 {
            return Err(VerifyError::WrongType);
        }
        let tag = b64::decode(parts.signature).ok_or(VerifyError::Malformed)?;
        // Constant-time comparison of the tag.
        ring::hmac::verify(&self.mac_key(), parts.signing_input.as_bytes(), &tag)
            .map_err(|_| VerifyError::BadSignature)?;
        let claims: SessionClaims = b64::decode(parts.payload)
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(VerifyError::Malformed)?;
        if now >= claims.exp {
            return Err(VerifyError::Expired);
        }
        Ok(claims)
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
}

/// Who is calling an admin endpoint.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A logged-in user (cookie), read fresh from the store.
    User { user: User, sid: String },
    /// An API key sent as Bearer/Basic.
    Key(Arc<Principal>),
}

impl Caller {
    pub fn role(&self) -> Role {
        match self {
            Caller::User { user, .. } => user.role,
            Caller::Key(p) => p.role,
        }
    }

    /// For the audit log: `user:alice` or `key:ci-bot`.
    pub fn actor(&self) -> String {
        match self {
            Caller::User { user, .. } => format!("user:{}", user.name),
            Caller::Key(p) => format!("key:{}", p.name),
        }
    }

    pub fn require(&self, access: Access) -> Result<(), ApiError> {
        if access.allows(self.role()) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "permission denied: this requires the {} role",
                access.roles()
            )))
        }
    }

    pub fn user(&self) -> Result<&User, ApiError> {
        match self {
            Caller::User { user, .. } => Ok(user),
            Caller::Key(_) => Err(ApiError::Forbidden(
                "this endpoint needs a logged-in user, not an API key".into(),
            )),
        }
    }
}

/// The client address for throttling and audit: the peer, or — when the peer is one of
/// `auth.trusted-proxies` — the client its `X-Forwarded-For` names
/// ([`crate::edge::auth::client_address`]); the peer itself when that chain can't be read.
pub fn client_ip(
    peer: std::net::IpAddr,
    headers: &HeaderMap,
    trusted: &[crate::core::scope::Cidr],
) -> std::net::IpAddr {
    crate::edge::auth::client_address(Some(peer), headers, trusted).unwrap_or(peer)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A web origin: scheme, host (lowercase, no trailing dot) and port, the default one filled in.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

impl Origin {
    /// `scheme://host[:port]` as browsers send it in `Origin`; `None` for `null`, other
    /// schemes, or anything with a path, query or user info.
    fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.split_once("://")?;
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return None;
        };
        Origin::addressed(https, rest)
    }

    /// The origin of a request whose `Host` is `host`, over https or not.
    fn addressed(https: bool, host: &str) -> Option<Origin> {
        let (host, port) = HostPattern::split(host)?;
        Some(Origin {
            https,
            host,
            port: port.unwrap_or(if https { 443 } else { 80 }),
        })
    }
}

/// How the connection reached us, for the same-origin check: whether the listener serves TLS,
/// the peer, and the proxies whose `X-Forwarded-Proto` is believed.
struct Transport<'a> {
    tls: bool,
    peer: Option<std::net::IpAddr>,
    trusted: &'a [crate::core::scope::Cidr],
}

impl Transport<'_> {
    fn of<'a>(state: &'a AppState, peer: Option<std::net::IpAddr>) -> Transport<'a> {
        Transport {
            tls: state.settings.server.tls.is_some(),
            peer,
            trusted: &state.settings.auth.trusted_proxies,
        }
    }

    /// `https` for a TLS listener, or when a trusted proxy's `X-Forwarded-Proto` (its last
    /// entry: the one the proxy nearest us wrote) says so.
    fn https(&self, headers: &HeaderMap) -> bool {
        let trusted = self
            .peer
            .is_some_and(|ip| self.trusted.iter().any(|net| net.contains(ip)));
        if !trusted {
            return self.tls;
        }
        let forwarded = headers
            .get_all("x-forwarded-proto")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .next_back();
        match forwarded {
            Some(p) if p.eq_ignore_ascii_case("https") => true,
            Some(p) if p.eq_ignore_ascii_case("http") => false,
            _ => self.tls,
        }
    }
}

/// Refuses state-changing browser requests that come from another site.
fn check_same_origin(
    method: &Method,
    headers: &HeaderMap,
    transport: &Transport<'_>,
) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refused = || ApiError::Forbidden("cross-site request refused".into());
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(refused());
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().ok().and_then(Origin::parse);
        let own = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| Origin::addressed(transport.https(headers), h));
        match (origin, own) {
            (Some(origin), Some(own)) if origin == own => {}
            _ => return Err(refused()),
        }
    }
    Ok(())
}

/// A 429 in the errors shape with `Retry-After`.
fn too_many(message: String, retry: u64) -> Response {
    let mut response = ApiError::TooManyRequests(message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry.max(1)));
    response
}

fn record(state: &AppState, result: Result<(), VerifyError>) {
    state
        .metrics
        .auth_decisions
        .get_or_create(&DecisionLabels::of(result))
        .inc();
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let creds = auth::credentials(&parts.headers, parts.uri.query())
                .map_err(ApiError::Unauthorized);
            let verified = creds.and_then(|c| {
                state
                    .verifier
                    .verify(&c.token)
                    .map_err(ApiError::Unauthorized)
            });
            record(
                state,
                match &verified {
                    Ok(_) => Ok(()),
                    Err(ApiError::Unauthorized(e)) => Err(*e),
                    Err(_) => Err(VerifyError::Malformed),
                },
            );
            let principal = verified?;
            let jti = principal.jti.clone();
            let now = state.now();
            let _ = state.store.touch_key(&jti, now).await;
            return Ok(Caller::Key(principal));
        }
        let token = cookie(&parts.headers, COOKIE)
            .filter(|_| state.settings.authority.internal_enabled)
            .ok_or(ApiError::Unauthorized(VerifyError::Missing))?
            .to_owned();
        let now = state.now();
        let claims = state
            .sessions
            .verify(&token, now)
            .map_err(ApiError::Unauthorized)?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        check_same_origin(&parts.method, &parts.headers, &Transport::of(state, peer))?;
        let user = state
            .store
            .session_user(&claims.sid, claims.uid, now)
            .await?
            .ok_or(ApiError::Unauthorized(VerifyError::Revoked))?;
        Ok(Caller::User {
            user,
            sid: claims.sid,
        })
    }
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

fn session_cookie(state: &AppState, value: &str, max_age: u64) -> Option<HeaderValue> {
    let mut cookie = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite={}; Max-Age={max_age}",
        state.settings.authority.sessions.cookie_same_site
    );
    if state.settings.authority.sessions.cookie_secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).ok()
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    body: JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    check_same_origin(&method, &headers, &Transport::of(&state, Some(addr.ip())))?;
    let LoginRequest { username, password } = body.0;
    // Bounded before any work: nothing oversized is hashed, looked up or audited.
    if username.len() > 1024 || password.len() > 4 * crate::authority::passwords::MAX_PASSWORD_CHARS
    {
        return Err(ApiError::bad_request("user name or password too long"));
    }
    let now = state.now();
    let client = client_ip(addr.ip(), &headers, &state.settings.auth.trusted_proxies).to_string();
    // Per (user, address): guesses from elsewhere can't lock the real user out; plus a budget
    // per address across users, so one client can't spray names.
    let keys = [
        LoginThrottle::pair_key(&username, &client),
        LoginThrottle::client_key(&client),
    ];
    let throttled = || {
        state
            .metrics
            .logins
            .get_or_create(&ResultLabels {
                result: "throttled",
            })
            .inc();
    };
    if let Err(retry) = state.throttle.reserve(&keys, now).await? {
        throttled();
        return Ok(too_many(
            format!("too many failed login attempts; try again in {retry} seconds"),
            retry,
        ));
    }
    // Per account, from any address: past `auth.login-delay-after` failures each attempt waits
    // its turn here, before the password is looked at and without a hashing slot.
    let turn = match state.account_delays.admit(&username, now).await? {
        Admission::Now => None,
        Admission::Wait(turn) => Some(turn),
        Admission::Full { retry } => {
            // Never checked: the client's own budget gets the attempt back.
            state.throttle.release(&keys).await?;
            throttled();
            return Ok(too_many(
                format!("too many login attempts on this account; try again in {retry} seconds"),
                retry,
            ));
        }
    };
    if let Some(turn) = &turn {
        tracing::info!(client = %client, delay = turn.delay, "login delayed");
        if !turn.wait(&*state.clock, state.life.stopping()).await {
            return Err(ApiError::Unavailable("shutting down".into()));
        }
    }
    drop(turn);
    let found = state.store.find_user_for_login(&username).await?;
    let (user, phc) = match found {
        Some((user, hash)) => (Some(user), std::sync::Arc::new(hash)),
        None => (None, state.dummy_hash.clone()),
    };
    let Some(matched) = crate::authority::passwords::verify_bounded(password, phc).await else {
        return Err(ApiError::Unavailable(
            "too many logins at once; try again in a few seconds".into(),
        ));
    };
    let ok = user.is_some() && matched;
    let user = match user {
        Some(user) if ok && !user.is_disabled => user,
        _ => {
            // Already counted by `reserve`.
            state
                .metrics
                .logins
                .get_or_create(&ResultLabels { result: "failed" })
                .inc();
            tracing::info!(client = %client, "login failed");
            let entry = AuditEntry::new(now, &format!("user:{username}"), "login.failure", None)
                .client(&client);
            let _ = state.store.audit(entry).await;
            // The attempted name is in the audit table, not the log: people type passwords into it.
            return Err(ApiError::Unauthenticated(
                "invalid username or password".into(),
            ));
        }
    };
    state.throttle.succeeded(&keys[0], &keys[1]).await?;
    state.account_delays.succeeded(&username, now).await?;
    let lifetime = state.settings.authority.sessions.lifetime.as_secs();
    let claims = SessionClaims {
        sid: b64::random(16),
        uid: user.id,
        iat: now,
        exp: now + lifetime,
    };
    state
        .store
        .create_session(&claims.sid, user.id, now, now + lifetime)
        .await?;
    let entry = AuditEntry::new(now, &format!("user:{}", user.name), "login", None).client(&client);
    state.store.audit(entry).await?;
    state
        .metrics
        .logins
        .get_or_create(&ResultLabels {
            result: "succeeded",
        })
        .inc();
    let token = state.sessions.issue(&claims);
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = session_cookie(&state, &token, lifetime) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

async fn logout(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_same_origin(&method, &headers, &Transport::of(&state, Some(addr.ip())))?;
    let now = state.now();
    if let Some(claims) = cookie(&headers, COOKIE).and_then(|t| state.sessions.verify(t, now).ok())
    {
        state.store.delete_session(&claims.sid).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = session_cookie(&state, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(origin: &str, host: &str, tls: bool) -> bool {
        check_with(origin, host, tls, &[])
    }

    fn check_with(origin: &str, host: &str, tls: bool, extra: &[(&str, &str)]) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        for (name, value) in extra {
            headers.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let trusted = [crate::core::scope::Cidr::parse("10.0.0.0/8").unwrap()];
        let peer = extra
            .iter()
            .find(|(n, _)| *n == "x-test-peer")
            .map(|(_, ip)| ip.parse().unwrap());
        let transport = Transport {
            tls,
            peer,
            trusted: &trusted,
        };
        check_same_origin(&Method::POST, &headers, &transport).is_ok()
    }

    #[test]
    fn the_origin_must_match_scheme_host_and_port() {
        assert!(check("http://host:8080", "host:8080", false));
        assert!(check("https://host:8080", "host:8080", true));
        // Another scheme, another port, another host: refused.
        assert!(!check("http://host:8080", "host:8080", true));
        assert!(!check("https://host:8080", "host:8080", false));
        assert!(!check("http://host:8081", "host:8080", false));
        assert!(!check("http://host", "host:8080", false));
        assert!(!check("http://other:8080", "host:8080", false));
        assert!(!check("http://host:8080.evil.example", "host:8080", false));
        assert!(!check("http://host.evil.example:8080", "host:8080", false));
        // Not an origin at all.
        for bad in [
            "null",
            "",
            "host:8080",
            "ftp://host:8080",
            "http://u@host:8080",
            "http://host:8080/x",
        ] {
            assert!(!check(bad, "host:8080", false), "{bad:?}");
        }
    }

    #[test]
    fn default_ports_and_case_are_the_same_origin() {
        assert!(check("https://h", "h:443", true));
        assert!(check("https://h:443", "h", true));
        assert!(check("http://h", "h:80", false));
        assert!(check("http://h:80", "h", false));
        assert!(check("HTTPS://H.Example", "h.example", true));
        assert!(check("http://[::1]:4040", "[::1]:4040", false));
        // The default port of one scheme is not the other's.
        assert!(!check("https://h", "h:80", false));
        assert!(!check("https://h:443", "h", false));
        assert!(!check("http://h:443", "h", true));
    }

    #[test]
    fn a_trusted_proxy_says_whether_the_browser_used_https() {
        let via = |peer: &'static str, proto: &'static str| {
            vec![("x-test-peer", peer), ("x-forwarded-proto", proto)]
        };
        // TLS ends at the proxy: the browser's origin is https, the listener is plain HTTP.
        assert!(check_with(
            "https://pyro.example",
            "pyro.example",
            false,
            &via("10.1.2.3", "https")
        ));
        assert!(!check_with(
            "http://pyro.example",
            "pyro.example",
            false,
            &via("10.1.2.3", "https")
        ));
        // Anyone else's X-Forwarded-Proto is ignored.
        assert!(!check_with(
            "https://pyro.example",
            "pyro.example",
            false,
            &via("192.0.2.1", "https")
        ));
        assert!(check_with(
            "http://pyro.example",
            "pyro.example",
            false,
            &via("192.0.2.1", "https")
        ));
    }
}
