//! The auth layer: an axum middleware ([`require`]) and extractor ([`Authenticated`]).
//!
//! It reads the credentials every Pyroscope agent sends — `Authorization: Bearer <key>` (Go,
//! Node, Java, `PYROSCOPE_AUTH_TOKEN`) or `Authorization: Basic base64(user:key)` (Python,
//! .NET, Grafana-Cloud style) — verifies the key with the local [`Verifier`], checks the role
//! for the route, and answers 401 or 403 itself. On success the [`Principal`] rides in the
//! request's extensions. Keys in query strings or cookies are refused: they end up in access
//! logs and browser histories, and cookies invite cross-site requests.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::core::token::Role;
use crate::core::verifier::{Principal, Verifier, VerifyError};
use crate::edge::error::ApiError;

/// What a route is for; decides which roles may call it (the roles table in docs/api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Pushing profiles: Agent or Admin.
    Ingest,
    /// Reading profiles: ReadOnly or Admin.
    Query,
    /// Managing users and keys: Admin only.
    Admin,
    /// An ingest node reporting to the authority: Node only (not even Admin, so a report
    /// always names a node's own credential).
    Report,
}

impl Access {
    pub fn allows(self, role: Role) -> bool {
        matches!(
            (self, role),
            (Access::Ingest | Access::Query | Access::Admin, Role::Admin)
                | (Access::Ingest, Role::Agent)
                | (Access::Query, Role::ReadOnly)
                | (Access::Report, Role::Node)
        )
    }

    /// The roles that may use this access, for 403 messages.
    pub fn roles(self) -> &'static str {
        match self {
            Access::Ingest => "Agent or Admin",
            Access::Query => "ReadOnly or Admin",
            Access::Admin => "Admin",
            Access::Report => "Node",
        }
    }
}

/// Query parameters that look like someone put a key in the URL.
const QUERY_TOKEN_PARAMS: [&str; 5] = ["token", "access_token", "api_key", "apikey", "auth_token"];

/// The state [`require`] runs with: which verifier, which access, and whether auth is on.
#[derive(Clone)]
pub struct AuthGate {
    verifier: Arc<Verifier>,
    access: Access,
    enabled: bool,
    /// When set, a Basic username must equal the key's tenant (Grafana-Cloud style).
    basic_user_is_tenant: bool,
    metrics: Option<Arc<crate::edge::metrics::Metrics>>,
    /// The `allowed` decision counter, looked up once: it is hit on every request.
    allowed: Option<prometheus_client::metrics::counter::Counter>,
    /// `auth.trusted-proxies`: peers whose `X-Forwarded-For` names the client.
    trusted_proxies: Arc<[crate::core::scope::Cidr]>,
}

impl std::fmt::Debug for AuthGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthGate")
            .field("access", &self.access)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl AuthGate {
    pub fn new(verifier: Arc<Verifier>, access: Access) -> Self {
        AuthGate {
            verifier,
            access,
            enabled: true,
            basic_user_is_tenant: false,
            metrics: None,
            allowed: None,
            trusted_proxies: Arc::new([]),
        }
    }

    /// Proxies whose `X-Forwarded-For` is believed when a key limited to networks is checked
    /// ([`client_address`]).
    pub fn trusted_proxies(mut self, proxies: Arc<[crate::core::scope::Cidr]>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// `routes` with this gate in front of every one of them.
    pub fn protect<S: Clone + Send + Sync + 'static>(self, routes: Router<S>) -> Router<S> {
        routes.layer(axum::middleware::from_fn_with_state(self, require))
    }

    /// Records decisions (by result and reason) and verification time.
    pub fn with_metrics(mut self, metrics: Arc<crate::edge::metrics::Metrics>) -> Self {
        self.allowed = Some(
            metrics
                .auth_decisions
                .get_or_create(&crate::edge::metrics::DecisionLabels::of(Ok(())))
                .clone(),
        );
        self.metrics = Some(metrics);
        self
    }

    /// With `false`, every request passes unauthenticated (Pyroscope's default for ingestion).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    pub fn basic_user_is_tenant(mut self, on: bool) -> Self {
        self.basic_user_is_tenant = on;
        self
    }

    /// Authenticates and authorizes one request's headers and query.
    /// With no source address known, a key limited to networks (`cidrs`) is refused.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Arc<Principal>, ApiError> {
        self.authorize_with(headers, query, None)
            .and_then(|p| source_allowed(&p, || None).map(|()| p))
    }

    /// [`AuthGate::authorize`], with the connection's memo of the last key it verified.
    fn authorize_with(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        memo: Option<&CredentialMemo>,
    ) -> Result<Arc<Principal>, ApiError> {
        let creds = credentials(headers, query).map_err(ApiError::Unauthorized)?;
        let principal = match memo {
            Some(memo) => memo.verify(&self.verifier, &creds.token),
            None => self.verifier.verify(&creds.token),
        }
        .map_err(ApiError::Unauthorized)?;
        if !self.access.allows(principal.role) {
            return Err(ApiError::Forbidden(format!(
                "permission denied: this requires the {} role; key \"{}\" has role {}",
                self.access.roles(),
                principal.name,
                principal.role
            )));
        }
        if self.basic_user_is_tenant
            && let Some(user) = creds.basic_user.as_deref().filter(|u| !u.is_empty())
            && principal.tenant.as_deref() != Some(user)
        {
            return Err(ApiError::Forbidden(
                "permission denied: the basic auth username is not the key's tenant".into(),
            ));
        }
        Ok(principal)
    }
}

impl AuthGate {
    /// The whole decision for one request, as the middleware makes it: `Ok(None)` when the
    /// gate is off, the caller when allowed; the decision and its time go to the metrics, the
    /// reason for a refusal to the log (never the credential).
    /// `peer` is the connection's address: a key limited to networks (`cidrs`) is refused
    /// from outside them, and when it is unknown.
    pub fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Option<Arc<Principal>>, ApiError> {
        self.check_with(headers, query, None, peer)
    }

    /// [`AuthGate::check`] for a request on a connection that remembers the last key it
    /// verified ([`CredentialMemo`]). The memo remembers who a key names, never where it
    /// came from: the source address is checked on every request.
    pub fn check_with(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        memo: Option<&CredentialMemo>,
        peer: Option<IpAddr>,
    ) -> Result<Option<Arc<Principal>>, ApiError> {
        if !self.enabled {
            return Ok(None);
        }
        let started = crate::core::clock::Stopwatch::start();
        let mut forbidden = "role";
        let decision = self.authorize_with(headers, query, memo).and_then(|p| {
            forbidden = "scope_cidr";
            source_allowed(&p, || client_address(peer, headers, &self.trusted_proxies)).map(|()| p)
        });
        if let Some(m) = &self.metrics {
            m.verify_latency.observe(started.elapsed_secs());
            match (&decision, &self.allowed) {
                (Ok(_), Some(allowed)) => allowed.inc(),
                _ => m
                    .auth_decisions
                    .get_or_create(&decision_labels(&decision, forbidden))
                    .inc(),
            };
        }
        match decision {
            Ok(principal) => {
                tracing::debug!(key = %principal.name, role = %principal.role, "authorized");
                Ok(Some(principal))
            }
            Err(err) => {
                match &err {
                    ApiError::Unauthorized(reason) => {
                        tracing::info!(reason = reason.label(), "credentials refused")
                    }
                    other => tracing::info!(error = %other, "request forbidden"),
                }
                Err(err)
            }
        }
    }
}

/// The last key verified on one connection, and whom it named.
///
/// An agent sends the same key with every push on its keep-alive connection. With a memo per
/// connection, a key seen again there is compared byte for byte with the one remembered and
/// then checked as a cache hit is ([`Verifier::recheck`]: key still published, not expired,
/// not revoked — a revocation applies to the very next request) instead of being hashed and
/// looked up in the shared cache again. Any other key is verified whole and replaces the
/// memo; a refused one empties it. The memo holds the key for as long as the connection is
/// open — as the connection's request buffers do — and never outlives it. With the verifier's
/// cache off, it is bypassed.
#[derive(Default)]
pub struct CredentialMemo(std::sync::Mutex<Option<(Box<str>, Arc<Principal>)>>);

impl std::fmt::Debug for CredentialMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialMemo([redacted])")
    }
}

impl CredentialMemo {
    fn verify(&self, verifier: &Verifier, token: &str) -> Result<Arc<Principal>, VerifyError> {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((remembered, principal)) = last.as_ref()
            && **remembered == *token
            && let Some(live) = verifier.recheck(principal)
        {
            return match live {
                Ok(()) => Ok(principal.clone()),
                Err(err) => {
                    *last = None;
                    Err(err)
                }
            };
        }
        match verifier.verify(token) {
            Ok(shared) => {
                // A copy of its own: the shared cache's `Arc` is touched by every serving
                // thread, this one only by the thread that serves the connection.
                let principal = Arc::new((*shared).clone());
                *last = Some((token.into(), principal.clone()));
                Ok(principal)
            }
            Err(err) => {
                *last = None;
                Err(err)
            }
        }
    }
}

/// Most `X-Forwarded-For` entries looked at; a longer chain leaves the client unknown.
const MAX_FORWARDED: usize = 32;

/// The address a request comes from, for a key limited to networks: the connection's peer,
/// unless the peer is one of `trusted` proxies and the request carries `X-Forwarded-For` —
/// then the right-most address of that chain (every header, in order) that is not itself a
/// trusted proxy, or its left-most if all are. Entries left of that are written by whoever
/// sent the request and are never believed. `None` (refused for such a key) when the chain
/// has an entry that is not a bare IP address before the client is found, or is too long.
pub fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[crate::core::scope::Cidr],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut chain = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        for entry in value.to_str().ok()?.split(',') {
            if chain.len() == MAX_FORWARDED {
                return None;
            }
            chain.push(entry.trim());
        }
    }
    let mut client = peer;
    for entry in chain.iter().rev() {
        client = entry.parse::<IpAddr>().ok()?.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    Some(client)
}

/// Whether a key limited to networks (`cidrs`) may be used from the request's source
/// (`source`, asked only for such a key). Unscoped keys, and keys scoped to applications
/// only, pass without looking at the address.
fn source_allowed(
    principal: &Principal,
    source: impl FnOnce() -> Option<IpAddr>,
) -> Result<(), ApiError> {
    let Some(scope) = principal.scope.as_deref().filter(|s| !s.cidrs.is_empty()) else {
        return Ok(());
    };
    match source() {
        Some(ip) if scope.allows_ip(ip) => Ok(()),
        Some(ip) => Err(ApiError::Forbidden(format!(
            "permission denied: key \"{}\" may be used only from {} (cidrs); this request came from {}",
            principal.name,
            scope.cidr_list().join(", "),
            ip.to_canonical()
        ))),
        None => Err(ApiError::Forbidden(format!(
            "permission denied: key \"{}\" is limited to networks (cidrs) and this request's source address is unknown",
            principal.name
        ))),
    }
}

/// The metric labels of a decision; `forbidden` is the reason of an authenticated refusal.
fn decision_labels(
    decision: &Result<Arc<Principal>, ApiError>,
    forbidden: &'static str,
) -> crate::edge::metrics::DecisionLabels {
    match decision {
        Ok(_) => crate::edge::metrics::DecisionLabels::of(Ok(())),
        Err(ApiError::Unauthorized(reason)) => {
            crate::edge::metrics::DecisionLabels::of(Err(*reason))
        }
        // Authenticated, but not allowed.
        Err(_) => crate::edge::metrics::DecisionLabels {
            result: "forbidden",
            reason: forbidden,
        },
    }
}

/// The middleware: `router.layer(axum::middleware::from_fn_with_state(gate, auth::require))`.
#[tracing::instrument(skip_all, name = "auth")] // skip_all: never log the credentials
pub async fn require(State(gate): State<AuthGate>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    match gate.check(req.headers(), req.uri().query(), peer) {
        Ok(None) => next.run(req).await,
        Ok(Some(principal)) => {
            req.extensions_mut().insert(Authenticated(principal));
            next.run(req).await
        }
        Err(err) => err.into_response(),
    }
}

/// Credentials found on a request. The token is borrowed from the header when possible.
#[derive(Clone)]
pub struct Credentials<'a> {
    pub token: Cow<'a, str>,
    pub basic_user: Option<String>,
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &"[redacted]")
            .field("basic_user", &self.basic_user)
            .finish()
    }
}

/// Reads the one `Authorization` header. Schemes are case-insensitive (RFC 9110 §11.1).
pub fn credentials<'a>(
    headers: &'a HeaderMap,
    query: Option<&str>,
) -> Result<Credentials<'a>, VerifyError> {
    if query.is_some_and(query_has_token) {
        return Err(VerifyError::TokenInQuery);
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(VerifyError::Missing);
    };
    if values.next().is_some() {
        return Err(VerifyError::MultipleCredentials);
    }
    let value = value.to_str().map_err(|_| VerifyError::Malformed)?;
    let (scheme, rest) = match value.split_once(' ') {
        Some(pair) => pair,
        // `Authorization: Bearer` with nothing after it: credentials are missing.
        None if value.eq_ignore_ascii_case("bearer") || value.eq_ignore_ascii_case("basic") => {
            return Err(VerifyError::Missing);
        }
        None => return Err(VerifyError::UnsupportedScheme),
    };
    let rest = rest.trim_start_matches(' ');
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(VerifyError::Missing);
        }
        return Ok(Credentials {
            token: Cow::Borrowed(rest),
            basic_user: None,
        });
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| VerifyError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| VerifyError::Malformed)?;
        let (user, password) = decoded.split_once(':').ok_or(VerifyError::Malformed)?;
        if password.is_empty() {
            return Err(VerifyError::Missing);
        }
        return Ok(Credentials {
            token: Cow::Owned(password.to_owned()),
            basic_user: Some(user.to_owned()),
        });
    }
    Err(VerifyError::UnsupportedScheme)
}

fn query_has_token(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        QUERY_TOKEN_PARAMS
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name))
    })
}

/// The authenticated caller, put in the request extensions by [`require`].
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .ok_or(ApiError::Unauthorized(VerifyError::Missing))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Authenticated {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Authenticated>().cloned())
    }
}
