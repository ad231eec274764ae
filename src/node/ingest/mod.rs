//! The ingest plane: Pyroscope-compatible push routes, served by `pyrogate server` (all-in-one)
//! and by stateless `pyrogate ingest` nodes.
//!
//! | route | protocol |
//! |---|---|
//! | `POST /ingest`, `POST /pyroscope/ingest` | legacy Pyroscope: folded/lines, trie, tree, pprof and JFR multipart, speedscope |
//! | `POST /push.v1.PusherService/Push` | Grafana Pyroscope push (Connect unary, proto or JSON, gzip) |
//! | `POST /v1development/profiles` | OTLP HTTP profiles |
//!
//! With `auth.ingestion.enabled` an Agent or Admin key is required ([`crate::edge::auth`]). Bodies
//! are passed through byte for byte, never re-encoded: the agent's `Content-Type`,
//! `Content-Encoding` and `Connect-*` headers go along, `Authorization` and cookies never do,
//! and `X-Scope-OrgID` is set from the key's tenant (or `tenant.default`). With an upstream
//! ([`forward`]), requests the upstream can't take go to the on-disk [`spool`] and are replayed
//! in order; without one, profiles are kept in a bounded local store ([`local`]). With an
//! upstream, its read API is proxied for ReadOnly and Admin keys ([`query`]).
//!
//! A key limited to applications is held to them here: every push's applications are read in
//! full ([`apps`]) and every query's selectors checked ([`selector`]); keys without `apps` skip
//! both. A key limited to networks is checked by the auth gate against the peer address.

pub mod apps;
pub mod confine;
pub mod forward;
pub mod labels;
pub mod local;
mod push;
pub mod query;
pub mod selector;
pub mod spool;
pub mod upstream;
pub mod wire;

use std::borrow::Cow;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::config::{AuthSettings, IngestSettings};
use crate::core::clock::Clock;
use crate::core::limits::Limiter;
use crate::core::verifier::Verifier;
use crate::edge::auth::{Access, AuthGate, Authenticated};
use crate::edge::error::ApiError;
use crate::edge::metrics::Metrics;
use crate::edge::server::Lifecycle;

pub use push::{Push, TENANT_HEADER_NAME};

/// The header Grafana Pyroscope reads the tenant from.
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// Every push route.
pub const ROUTES: [&str; 4] = [
    "/ingest",
    "/pyroscope/ingest",
    "/push.v1.PusherService/Push",
    "/v1development/profiles",
];

#[derive(Clone)]
pub struct IngestState {
    inner: Arc<Inner>,
}

struct Inner {
    max_body: usize,
    default_tenant: Option<String>,
    auth_enabled: bool,
    forwarder: Option<forward::Forwarder>,
    upstream: Option<upstream::Upstream>,
    local: Option<local::LocalStore>,
    stats: local::Stats,
    /// Counts per key and application for fleet reports; set on a node that reports.
    tally: std::sync::OnceLock<Arc<crate::node::report::tally::Tally>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// Set by the sync loop when the authority has been unreachable for too long under a
    /// refusing staleness policy.
    stale: Arc<std::sync::atomic::AtomicBool>,
    /// Set while an authority-fed node has no verified revocation list in force.
    unverified: Arc<std::sync::atomic::AtomicBool>,
    /// The verifier's per-key limits, taken when the push gate is built.
    limiter: std::sync::OnceLock<Arc<Limiter>>,
}

impl IngestState {
    /// Builds the ingest plane: a forwarder (with spool) when `upstream` is set, else the
    /// local store, both under `storage-path`.
    pub fn new(
        settings: &IngestSettings,
        auth_enabled: bool,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let upstream = upstream::Upstream::from_settings(settings)?;
        let (forwarder, local) = match &upstream {
            Some(upstream) => {
                let spool = spool::Spool::open_with_clock(
                    &settings.storage_path.join("spool"),
                    settings.spool_max_bytes,
                    clock.clone(),
                )?;
                (
                    Some(forward::Forwarder::new(
                        upstream.clone(),
                        spool,
                        settings.spool_replay_concurrency,
                        metrics.clone(),
                        clock.clone(),
                    )?),
                    None,
                )
            }
            None => (
                None,
                Some(local::LocalStore::open(
                    &settings.storage_path.join("profiles"),
                    settings.local_max_bytes,
                )?),
            ),
        };
        Ok(IngestState {
            inner: Arc::new(Inner {
                max_body: settings.max_body_size,
                default_tenant: settings.default_tenant.clone(),
                auth_enabled,
                forwarder,
                upstream,
                local,
                stats: local::Stats::default(),
                tally: std::sync::OnceLock::new(),
                metrics,
                clock,
                stale: Arc::default(),
                unverified: Arc::default(),
                limiter: std::sync::OnceLock::new(),
            }),
        })
    }

    pub fn stats(&self) -> &local::Stats {
        &self.inner.stats
    }

    /// Starts counting pushes per key and application for fleet reports; returns the counters.
    pub fn start_tally(&self) -> Arc<crate::node::report::tally::Tally> {
        self.inner.tally.get_or_init(Arc::default).clone()
    }

    pub fn stale_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.inner.stale.clone()
    }

    pub fn unverified_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.inner.unverified.clone()
    }

    pub fn local(&self) -> Option<&local::LocalStore> {
        self.inner.local.as_ref()
    }

    /// Starts the spool replay worker, if there is an upstream; it ends with `life`.
    pub fn start_background(&self, life: &Lifecycle) {
        if let Some(forwarder) = &self.inner.forwarder {
            forwarder.start_replay(life);
        }
    }
}

/// The push routes and the read proxy, each behind its auth gate, ready to merge into a
/// server's router.
pub fn routes(
    state: IngestState,
    verifier: Arc<Verifier>,
    auth: &AuthSettings,
    settings: &IngestSettings,
) -> Router {
    let metrics = state.inner.metrics.clone();
    let upstream = state.inner.upstream.clone();
    let unready = state.clone();
    let gate = push_gate(&state, verifier.clone(), auth);
    let push_routes = ROUTES
        .iter()
        .fold(Router::new(), |router, path| router.route(path, post(push)));
    let pushes = gate
        .protect(push_routes)
        // The handler enforces its own, configurable limit; lift axum's default 2 MB cap.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state);
    // Reading profiles always needs a key: unlike pushing, there is no open mode.
    let reads = upstream.map(|upstream| {
        let routes = query::routes(upstream, settings.default_tenant.clone(), metrics.clone());
        AuthGate::new(verifier, Access::Query)
            .with_metrics(metrics)
            .trusted_proxies(auth.trusted_proxies.clone())
            .protect(routes)
            // Outside the gate: a node that can't vouch for its revocation list serves no
            // reads either (a key revoked since its list was signed would pass).
            .layer(axum::middleware::from_fn_with_state(
                unready,
                refuse_unready,
            ))
    });
    match reads {
        Some(reads) => pushes.merge(reads),
        None => pushes,
    }
}

/// The gate in front of the push routes: Agent or Admin keys, when ingestion auth is on.
fn push_gate(state: &IngestState, verifier: Arc<Verifier>, auth: &AuthSettings) -> AuthGate {
    let limiter = verifier.limiter();
    limiter.set_metrics(state.inner.metrics.limit_metrics());
    state.inner.limiter.get_or_init(|| limiter.clone());
    AuthGate::new(verifier, Access::Ingest)
        .with_metrics(state.inner.metrics.clone())
        .enabled(auth.ingestion_enabled)
        .basic_user_is_tenant(auth.basic_user_is_tenant)
        .trusted_proxies(auth.trusted_proxies.clone())
}

/// Headers that travel with a push. Everything else — `Authorization`, cookies, hop-by-hop
/// headers, the agent's own `X-Scope-OrgID` when auth is on — stays here.
/// Request headers that travel upstream, by exact name: the body's framing and the Connect /
/// gRPC protocol headers the agents send. No prefix rules — `Grpc-Metadata-X-Scope-OrgID` or
/// `Connect-X-Scope-OrgID` would otherwise smuggle a tenant past the node.
pub(super) const FORWARDED_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "user-agent",
    "accept",
    "accept-encoding",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-content-encoding",
    "connect-accept-encoding",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
];

pub(super) fn forwardable(name: &str) -> bool {
    FORWARDED_HEADERS.contains(&name)
}

/// The app a legacy push is for: `name=myapp.cpu{env=prod}` → `myapp.cpu`, `-` if none.
/// Borrowed from the query when the name needs no decoding (agents send the labels
/// percent-encoded, the app name plain).
fn app_name(query: Option<&str>) -> Cow<'_, str> {
    let query = query.unwrap_or_default();
    // A key that needs decoding could be `name` itself: then only the decoder can tell.
    if key_needs_decoding(query) {
        return match decoded_app_name(query) {
            app if app.is_empty() => Cow::Borrowed("-"),
            app => app,
        };
    }
    let raw = query.split('&').find_map(|pair| pair.strip_prefix("name="));
    let app = match raw {
        Some(raw) => {
            let end = raw
                .find('{')
                .into_iter()
                .chain(raw.find("%7B"))
                .chain(raw.find("%7b"))
                .min()
                .unwrap_or(raw.len());
            let app = &raw[..end];
            if app.contains(['%', '+']) {
                decoded_app_name(query)
            } else {
                Cow::Borrowed(app)
            }
        }
        None => decoded_app_name(query),
    };
    if app.is_empty() {
        Cow::Borrowed("-")
    } else {
        app
    }
}

/// Whether any parameter name in `query` holds an escape (`%`) or a `+`: one pass, no split.
fn key_needs_decoding(query: &str) -> bool {
    let mut in_key = true;
    for b in query.bytes() {
        match b {
            b'&' => in_key = true,
            b'=' => in_key = false,
            b'%' | b'+' if in_key => return true,
            _ => {}
        }
    }
    false
}

/// [`app_name`] the long way: the first `name` parameter after form decoding.
fn decoded_app_name(query: &str) -> Cow<'static, str> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "name")
        .map(|(_, v)| Cow::Owned(v.split('{').next().unwrap_or_default().to_owned()))
        .unwrap_or(Cow::Borrowed(""))
}

/// Why a request body could not be read.
enum BodyError {
    TooLarge,
    Broken,
}

/// Reads a body whole, at most `max` bytes. A body that arrives in one piece is kept as it
/// came; one in several pieces is copied once, into a buffer sized from `declared`.
async fn read_body<B>(body: B, max: usize, declared: Option<u64>) -> Result<Bytes, BodyError>
where
    B: axum::body::HttpBody<Data = Bytes>,
{
    use http_body_util::BodyExt as _;
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Broken)?.into_data() else {
            continue; // trailers
        };
        len += data.len();
        if len > max {
            return Err(BodyError::TooLarge);
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            held => {
                if let Some(held) = held {
                    let expected = declared.map_or(0, |d| d.min(max as u64) as usize);
                    joined.reserve(expected.max(len));
                    joined.extend_from_slice(&held);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

#[tracing::instrument(skip_all, name = "push")] // skip_all: requests carry credentials
async fn push(
    State(state): State<IngestState>,
    caller: Option<Authenticated>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    accept(&state.inner, caller.map(|Authenticated(p)| p), parts, body).await
}

/// The push routes taken before the router ([`crate::edge::server::Intercept`]) on an ingest
/// node: the same gate and the same handling as the routes [`routes`] builds, without the
/// router's matching and middleware on the hot path. Anything else — other methods on these
/// paths included, which get the router's 405 — is given back.
pub struct PushIntercept {
    /// One reference counted per push, not one per field of the state and the gate.
    shared: Arc<(IngestState, AuthGate)>,
}

impl PushIntercept {
    pub fn new(state: IngestState, verifier: Arc<Verifier>, auth: &AuthSettings) -> Self {
        let gate = push_gate(&state, verifier, auth);
        PushIntercept {
            shared: Arc::new((state, gate)),
        }
    }
}

impl crate::edge::server::Intercept for PushIntercept {
    fn intercept(
        &self,
        req: axum::http::Request<hyper::body::Incoming>,
        memo: &Arc<crate::edge::auth::CredentialMemo>,
        peer: std::net::SocketAddr,
    ) -> Result<
        (&'static str, crate::edge::server::Intercepted),
        axum::http::Request<hyper::body::Incoming>,
    > {
        if req.method() != axum::http::Method::POST {
            return Err(req);
        }
        let Some(route) = ROUTES.iter().find(|r| **r == req.uri().path()) else {
            return Err(req);
        };
        let (shared, memo) = (self.shared.clone(), memo.clone());
        Ok((
            route,
            Box::pin(async move {
                let (state, gate) = &*shared;
                if let Some(refusal) = not_ready(&state.inner) {
                    return refusal.into_response();
                }
                let (parts, body) = req.into_parts();
                let principal = match gate.check_with(
                    &parts.headers,
                    parts.uri.query(),
                    Some(&memo),
                    Some(peer.ip()),
                ) {
                    Ok(principal) => principal,
                    Err(err) => return err.into_response(),
                };
                accept(&state.inner, principal, parts, body)
                    .await
                    .into_response()
            }),
        ))
    }
}

/// Why this node refuses every push right now, if it does: no verified revocation list in
/// force (a node still starting, or one whose cache was refused), or one older than
/// `sync.max-staleness`. Checked before the key too: with no key set in force every key would
/// read as unknown, and a 401 tells an agent its key is bad where a 503 says "try again".
fn not_ready(inner: &Inner) -> Option<ApiError> {
    if inner.unverified.load(std::sync::atomic::Ordering::Relaxed) {
        return Some(ApiError::Unavailable(
            "this node has no verified revocation list from the authority yet; refusing requests until it has one".into(),
        ));
    }
    if inner.stale.load(std::sync::atomic::Ordering::Relaxed) {
        return Some(ApiError::Unavailable(
            "this node can't reach the authority and its revocation list is too old; refusing requests (sync.max-staleness)".into(),
        ));
    }
    None
}

/// The read proxy's readiness check ([`not_ready`]), before its key check.
async fn refuse_unready(
    State(state): State<IngestState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match not_ready(&state.inner) {
        Some(refusal) => refusal.into_response(),
        None => next.run(req).await,
    }
}

/// One push, authorized: read the body under the limit, find the tenant, forward or keep it.
async fn accept<B>(
    inner: &Inner,
    principal: Option<Arc<crate::core::verifier::Principal>>,
    parts: axum::http::request::Parts,
    body: B,
) -> Result<Response, ApiError>
where
    B: axum::body::HttpBody<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Some(refusal) = not_ready(inner) {
        return Err(refusal);
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "request body exceeds the limit of {} bytes (ingest.max-body-size)",
            inner.max_body
        ))
    };
    if declared.is_some_and(|n| n > inner.max_body as u64) {
        return Err(too_large());
    }
    // A key over its limit is refused before its body is read (with a declared length, its
    // bytes too); a body of unknown length is paid for once read.
    let bucket = match (principal.as_deref(), inner.limiter.get()) {
        (Some(p), Some(limiter)) => limiter.admit(&p.jti, declared).map_err(|refusal| {
            if let Some(tally) = inner.tally.get() {
                tally.limited(&p.jti, &p.name, &app_name(parts.uri.query()));
            }
            tracing::info!(key = %p.name, "push over the key's limit");
            ApiError::Limited {
                message: refusal.message,
                retry_after_secs: refusal.retry_after_secs,
            }
        })?,
        _ => None,
    };
    let body = read_body(body, inner.max_body, declared)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => too_large(),
            BodyError::Broken => ApiError::bad_request("could not read the request body"),
        })?;
    if let (Some(bucket), None, Some(limiter)) = (&bucket, declared, inner.limiter.get())
        && bucket.limits_bytes()
    {
        limiter.charge_bytes(bucket, body.len() as u64);
    }
    let app = if parts.uri.path() == "/push.v1.PusherService/Push" {
        let header = |name| header_str(&parts.headers, name);
        let gzip = header(header::CONTENT_ENCODING).eq_ignore_ascii_case("gzip");
        Cow::Owned(
            labels::push_v1_app(&body, header(header::CONTENT_TYPE), gzip)
                .unwrap_or_else(|| "-".to_owned()),
        )
    } else {
        app_name(parts.uri.query())
    };
    let tally = inner.tally.get();
    if let Some(principal) = principal.as_deref()
        && let Some(scope) = principal.scope.as_deref()
        && !scope.apps.is_empty()
    {
        let enforced = enforce_apps(inner, principal, scope, &parts, &body);
        if let (Err(_), Some(tally)) = (&enforced, tally) {
            tally.refused(&principal.jti, &principal.name, &app);
        }
        enforced?;
    }
    let tenant = tenant_for(inner, principal.as_deref(), &parts.headers);
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let push = Push::new(path_and_query, parts.headers, tenant, body);
    if let Some(tally) = tally {
        let (jti, key) = principal
            .as_deref()
            .map_or(("", ""), |p| (p.jti.as_str(), p.name.as_str()));
        tally.pushed(jti, key, &app, push.body.len() as u64, inner.clock.now());
    }
    inner.stats.record(
        &app,
        principal.as_ref().map(|p| p.name.as_str()),
        push.body.len() as u64,
        inner.clock.now(),
    );
    match (&inner.forwarder, &inner.local) {
        (Some(forwarder), _) => forwarder.send(push).await,
        (None, Some(local)) => {
            local.store(&push, &app).await?;
            Ok(StatusCode::OK.into_response())
        }
        (None, None) => Err(ApiError::Unavailable("no destination for profiles".into())),
    }
}

/// Refuses a push by a key limited to applications unless every application in it is one the
/// key may push ([`apps`]); an application that can't be determined refuses it too. Counted
/// as `forbidden`/`scope_app`; nothing reaches the upstream.
fn enforce_apps(
    inner: &Inner,
    principal: &crate::core::verifier::Principal,
    scope: &crate::core::scope::Scope,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Result<(), ApiError> {
    let refuse = |why: String| {
        inner.metrics.count_forbidden("scope_app");
        inner
            .metrics
            .count_scope_refusal(&principal.name, "scope_app");
        tracing::info!(key = %principal.name, %why, "push outside the key's applications");
        ApiError::Forbidden(format!(
            "permission denied: key \"{}\" may push only applications {}; {why}",
            principal.name,
            scope.apps_text()
        ))
    };
    let apps = push_apps(parts, body, inner.max_body).map_err(|u| {
        refuse(format!(
            "this push's application can't be determined: {}",
            u.0
        ))
    })?;
    match apps.iter().find(|app| !scope.allows_app(app)) {
        Some(outside) => Err(refuse(format!("this push is for {outside:?}"))),
        None => Ok(()),
    }
}

/// Every application a push names, by protocol (the table in [`apps`]).
fn push_apps(
    parts: &axum::http::request::Parts,
    body: &[u8],
    cap: usize,
) -> Result<Vec<String>, apps::Undetermined> {
    let path = parts.uri.path();
    if path == "/ingest" || path == "/pyroscope/ingest" {
        return apps::legacy(parts.uri.query());
    }
    let header = |name| header_str(&parts.headers, name);
    let (encoding, gzip) = apps::encoding(
        header(header::CONTENT_TYPE),
        header(header::CONTENT_ENCODING),
    )?;
    let body = apps::inflate(body, gzip, cap)?;
    if path == "/push.v1.PusherService/Push" {
        apps::push_v1(&body, encoding)
    } else {
        apps::otlp(&body, encoding)
    }
}

/// A header's value as text; empty when absent or not text.
fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The tenant a push is for. With auth on, only the key decides (an agent can't pick another
/// tenant by sending its own header); with auth off, the agent's header is passed on.
fn tenant_for(
    inner: &Inner,
    principal: Option<&crate::core::verifier::Principal>,
    headers: &HeaderMap,
) -> Option<String> {
    if inner.auth_enabled {
        principal
            .and_then(|p| p.tenant.clone())
            .or_else(|| inner.default_tenant.clone())
    } else {
        headers
            .get(TENANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|t| crate::core::token::validate_tenant(t).is_ok())
            .map(str::to_owned)
            .or_else(|| inner.default_tenant.clone())
    }
}

/// Copies a header value, dropping values that are not valid HTTP header text.
pub(crate) fn header_value(v: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_come_from_the_legacy_name_parameter() {
        assert_eq!(
            app_name(Some("name=myapp.cpu%7Benv%3Dprod%7D&from=1")),
            "myapp.cpu"
        );
        assert_eq!(app_name(Some("name=svc{a=b}")), "svc");
        assert_eq!(app_name(Some("from=1")), "-");
        assert_eq!(app_name(None), "-");
        // Taken as it is when nothing in the app name needs decoding, decoded otherwise: the
        // same answer either way.
        for (query, app, borrowed) in [
            ("name=bench.cpu%7B%7D&format=folded", "bench.cpu", true),
            ("from=1&name=svc%7benv%3Dprod%7D", "svc", true),
            ("name=my%20app%7Benv%3Dprod%7D", "my app", false),
            ("name=a+b", "a b", false),
            ("name=%7Bx%7D", "-", true),
            ("name=", "-", true),
            ("n%61me=encoded-key", "encoded-key", false),
            ("n%61me=first&name=second", "first", false),
        ] {
            let got = app_name(Some(query));
            assert_eq!(got, app, "{query}");
            assert_eq!(matches!(got, Cow::Borrowed(_)), borrowed, "{query}");
            let decoded = decoded_app_name(query);
            assert_eq!(
                if decoded.is_empty() { "-" } else { &decoded },
                app,
                "{query}"
            );
        }
    }

    /// A body that arrives in `chunks`.
    struct Pieces(std::collections::VecDeque<Bytes>);

    impl axum::body::HttpBody for Pieces {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }

    fn chunked(chunks: &[&'static [u8]]) -> Pieces {
        Pieces(chunks.iter().map(|c| Bytes::from_static(c)).collect())
    }

    #[tokio::test]
    async fn bodies_are_read_whole_under_the_limit() {
        let one = Bytes::from_static(b"one piece");
        let whole = read_body(http_body_util::Full::new(one.clone()), 100, Some(9))
            .await
            .ok()
            .unwrap();
        // A body in one piece is not copied.
        assert_eq!(whole.as_ptr(), one.as_ptr());
        let joined = read_body(chunked(&[b"ab", b"", b"cde", b"f"]), 6, Some(6))
            .await
            .ok()
            .unwrap();
        assert_eq!(&joined[..], b"abcdef");
        // A declared length that lies (too small or absent) changes nothing.
        for declared in [None, Some(1), Some(u64::MAX)] {
            let joined = read_body(chunked(&[b"ab", b"cd"]), 4, declared)
                .await
                .ok()
                .unwrap();
            assert_eq!(&joined[..], b"abcd");
        }
        assert!(matches!(
            read_body(chunked(&[b"abc", b"def"]), 5, None).await,
            Err(BodyError::TooLarge)
        ));
        assert!(matches!(
            read_body(
                http_body_util::Full::new(Bytes::from_static(b"toolong")),
                5,
                None
            )
            .await,
            Err(BodyError::TooLarge)
        ));
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_not_forwarded() {
        for h in [
            "authorization",
            "cookie",
            "host",
            "connection",
            "x-scope-orgid",
        ] {
            assert!(!forwardable(h), "{h}");
        }
        for h in [
            "content-type",
            "content-encoding",
            "connect-protocol-version",
            "connect-timeout-ms",
        ] {
            assert!(forwardable(h), "{h}");
        }
    }
}
