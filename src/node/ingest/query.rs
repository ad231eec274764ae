//! The read proxy: with an upstream configured, Grafana Pyroscope's query API is reachable
//! through pyrogate for ReadOnly and Admin keys (e.g. a Grafana data source with a ReadOnly
//! key). Only an allowlist of read paths is proxied; the upstream's internal and admin paths
//! (ingester, store-gateway, ring, memberlist, runtime_config, debug, ops, …) answer 404 here
//! whatever the key.
//!
//! A key limited to applications (`apps`) reads only those: every label selector of its query
//! is confined to them before it leaves ([`super::confine`], which lists each method), or the
//! query is refused with 403 and nothing is sent. Answers are not filtered: the upstream is
//! only ever asked about allowed applications.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Request as HttpRequest, StatusCode};
use axum::response::Response;
use axum::routing::get;
use http_body_util::{BodyExt as _, Full, Limited};

use super::forwardable;
use super::upstream::Upstream;
use super::{TENANT_HEADER, header_value};
use crate::edge::auth::Authenticated;
use crate::edge::error::ApiError;

/// Largest query request body (queries are small).
const MAX_QUERY_BODY: usize = 1 << 20;
/// Largest response relayed (flame graphs can be large).
const MAX_RESPONSE_BODY: usize = 64 << 20;

/// Read paths proxied to the upstream. Everything else is not.
pub const QUERY_PATHS: &[&str] = &[
    "/querier.v1.QuerierService/{method}",
    "/pyroscope/render",
    "/pyroscope/render-diff",
    "/pyroscope/label-values",
    "/pyroscope/labels",
    "/pyroscope/api/apps",
    "/render",
    "/render-diff",
    "/label-values",
    "/labels",
];

#[derive(Clone)]
struct QueryState {
    upstream: Upstream,
    default_tenant: Option<String>,
    /// Where refusals of queries outside a key's applications are counted.
    metrics: std::sync::Arc<crate::edge::metrics::Metrics>,
}

/// The read-proxy routes, without their auth gate (the caller adds it).
pub fn routes(
    upstream: Upstream,
    default_tenant: Option<String>,
    metrics: std::sync::Arc<crate::edge::metrics::Metrics>,
) -> Router {
    let state = QueryState {
        upstream,
        default_tenant,
        metrics,
    };
    QUERY_PATHS
        .iter()
        .fold(Router::new(), |router, path| {
            // Connect unary calls are POSTs (GET for idempotent ones); the legacy read API is
            // GET. Nothing else reaches the upstream.
            let methods = if path.starts_with("/querier.v1.") {
                get(proxy).post(proxy)
            } else {
                get(proxy)
            };
            router.route(
                path,
                methods.fallback(|| async { ApiError::MethodNotAllowed }),
            )
        })
        .with_state(state)
}

/// A Connect method name: letters only (`SelectMergeStacktraces`), so nothing like `..`,
/// `%2e%2e` or `a\b` reaches the upstream's router.
fn valid_method_name(path: &str) -> bool {
    match path.strip_prefix("/querier.v1.QuerierService/") {
        Some(name) => !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphabetic()),
        None => true,
    }
}

#[tracing::instrument(skip_all, name = "query")] // skip_all: requests carry credentials
async fn proxy(
    State(state): State<QueryState>,
    Authenticated(principal): Authenticated,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    if !valid_method_name(parts.uri.path()) {
        return Err(ApiError::NotFound("not found".into()));
    }
    let body = axum::body::to_bytes(body, MAX_QUERY_BODY)
        .await
        .map_err(|_| ApiError::PayloadTooLarge("query body too large".into()))?;
    let mut confined = super::confine::Confined::default();
    if let Some(scope) = principal.scope.as_deref().filter(|s| !s.apps.is_empty()) {
        confined = super::confine::confine(&parts, &body, scope).map_err(|why| {
            state.metrics.count_forbidden("scope_app");
            tracing::info!(key = %principal.name, %why, "query outside the key's applications");
            ApiError::Forbidden(format!(
                "permission denied: key \"{}\" may read only applications {}; {why}",
                principal.name,
                scope.apps_text()
            ))
        })?;
    }
    let path = match confined.query {
        Some(query) => format!("{}?{query}", parts.uri.path()),
        None => parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| parts.uri.path().to_owned()),
    };
    let body = confined.body.unwrap_or(body);
    let upstream = &state.upstream;
    let mut builder = upstream.authorize(
        HttpRequest::builder()
            .method(parts.method.clone())
            .uri(upstream.uri(&path)),
    );
    for (name, value) in &parts.headers {
        if forwardable(name.as_str()) {
            builder = builder.header(name, value);
        }
    }
    if let Some(tenant) = principal
        .tenant
        .as_deref()
        .or(state.default_tenant.as_deref())
        .and_then(header_value)
    {
        builder = builder.header(TENANT_HEADER, tenant);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let upstream_error = |why: String| {
        tracing::warn!(%why, "query upstream failed");
        ApiError::Unavailable("the upstream Pyroscope is unavailable".into())
    };
    let response = tokio::time::timeout(upstream.timeout(), upstream.client().request(request))
        .await
        .map_err(|_| upstream_error("timed out".into()))?
        .map_err(|e| upstream_error(e.to_string()))?;
    let (rparts, rbody) = response.into_parts();
    let bytes = tokio::time::timeout(
        upstream.timeout(),
        Limited::new(rbody, MAX_RESPONSE_BODY).collect(),
    )
    .await
    .map_err(|_| upstream_error("timed out reading the response".into()))?
    .map_err(|e| upstream_error(e.to_string()))?
    .to_bytes();
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = rparts.status;
    for (name, value) in &rparts.headers {
        if forwardable(name.as_str()) || name.as_str() == "cache-control" {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    if out.status() == StatusCode::SWITCHING_PROTOCOLS {
        *out.status_mut() = StatusCode::BAD_GATEWAY;
    }
    Ok(out)
}
