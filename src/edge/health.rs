//! `GET /healthz`, `GET /ready` and `GET /metrics`: the same three routes on both roles.

use axum::Router;
use axum::extract::State;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::edge::metrics::Metrics;

/// A server state that can answer the health routes.
pub trait Health: Clone + Send + Sync + 'static {
    fn metrics(&self) -> &Metrics;
}

/// `/healthz` (the process answers), `/ready` (answered by `ready`, which knows what the
/// role needs) and `/metrics`.
pub fn routes<S: Health, T: 'static>(ready: impl Handler<T, S>) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::<S>))
}

async fn metrics<S: Health>(State(state): State<S>) -> Response {
    state.metrics().response().into_response()
}

/// `GET /ready`: 200 or 503 with a JSON body that says why.
pub fn readiness(ready: bool, body: serde_json::Value) -> Response {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
