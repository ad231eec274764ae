//! Forwarding pushes to the upstream Grafana Pyroscope, with an on-disk spool for the times it
//! can't take them.
//!
//! A push goes straight to the upstream while the spool is empty. If the upstream is
//! unreachable, times out or answers 5xx, the push is written to the spool and the agent gets
//! `200` with `Pyrogate-Spooled: true` (Pyroscope's agents treat anything but 200 as a failure,
//! and the push is safely on disk). While anything is spooled, new pushes join the queue
//! behind it, so the upstream receives them in arrival order. A replay task drains the spool
//! with backoff; an entry is removed only after the upstream accepted it (at-least-once across
//! a crash between delivery and removal; exactly once otherwise). A full spool answers 503 —
//! nothing accepted is ever dropped silently.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::PathAndQuery;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

use super::spool::{Spool, SpooledRequest};
use super::upstream::Upstream;
use super::{Push, TENANT_HEADER, TENANT_HEADER_NAME, header_value};
use crate::core::clock::Stopwatch;
use crate::edge::error::ApiError;
use crate::edge::metrics::{Metrics, ResultLabels};
use crate::edge::origin::{PoolError, Post};
use crate::edge::server::Lifecycle;

/// Largest upstream response body relayed to an agent.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Upstream answer headers relayed to the agent: the body's type and encoding, when to retry,
/// and the Connect / gRPC protocol headers.
fn relayed(name: &str) -> bool {
    name == "content-type"
        || name == "content-encoding"
        || name == "retry-after"
        || name.starts_with("connect-")
        || name.starts_with("grpc-")
}

#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Upstream,
    spool: Spool,
    wake: Notify,
    metrics: Arc<Metrics>,
    /// `upstream_requests{result="ok"}`, looked up once: it is hit on every push.
    delivered: prometheus_client::metrics::counter::Counter,
}

#[derive(Debug)]
enum Failure {
    /// Could not connect, timed out, or the connection broke.
    Unreachable(String),
    /// The upstream answered 5xx.
    Status(StatusCode),
    /// The upstream took the push and answered something that can't be read (framing, size).
    /// It may well have the push: sending it again would only repeat that.
    BadAnswer(String),
}

impl Failure {
    fn timed_out(&self) -> bool {
        matches!(self, Failure::Unreachable(why) if why.starts_with("timed out"))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(why) => write!(f, "unreachable: {why}"),
            Failure::Status(status) => write!(f, "answered {status}"),
            Failure::BadAnswer(why) => write!(f, "answered unreadably: {why}"),
        }
    }
}

impl Forwarder {
    pub fn new(upstream: Upstream, spool: Spool, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        metrics.spool_entries.set(spool.len() as u64);
        metrics.spool_bytes.set(spool.bytes());
        metrics.spool_dead_letters.set(spool.dead_letters() as u64);
        let delivered = metrics
            .upstream_requests
            .get_or_create(&ResultLabels { result: "ok" })
            .clone();
        Ok(Forwarder {
            inner: Arc::new(Inner {
                upstream,
                spool,
                wake: Notify::new(),
                delivered,
                metrics,
            }),
        })
    }

    /// Forwards a push, or spools it when the upstream can't take it.
    pub async fn send(&self, push: Push) -> Result<Response, ApiError> {
        if !self.inner.spool.is_empty() {
            return self.enqueue(push).await;
        }
        match self.forward(&push).await {
            Ok(response) => Ok(response),
            // Not spooled: replaying it would send the same push again and again. The agent
            // hears of it and decides.
            Err(Failure::BadAnswer(why)) => {
                tracing::warn!(%why, path = %push.path_and_query, "the upstream's answer to a push could not be read");
                Err(ApiError::BadGateway(format!(
                    "the upstream's answer could not be read ({why}); the push was not spooled and may have reached it"
                )))
            }
            Err(failure) => {
                tracing::warn!(%failure, path = %push.path_and_query, "upstream can't take the push; spooling it");
                self.enqueue(push).await
            }
        }
    }

    async fn forward(&self, push: &Push) -> Result<Response, Failure> {
        let inner = &self.inner;
        let started = Stopwatch::start();
        let result = self.request(push).await;
        let label = match &result {
            Ok(r) if r.status().is_success() => "ok",
            Ok(r) if r.status().is_server_error() => "server_error",
            Ok(_) => "client_error",
            Err(Failure::BadAnswer(_)) => "bad_answer",
            Err(_) => "unreachable",
        };
        match label {
            "ok" => inner.delivered.inc(),
            _ => inner
                .metrics
                .upstream_requests
                .get_or_create(&ResultLabels { result: label })
                .inc(),
        };
        inner
            .metrics
            .upstream_latency
            .observe(started.elapsed_secs());
        match result {
            Ok(r) if r.status().is_server_error() => Err(Failure::Status(r.status())),
            other => other,
        }
    }

    async fn request(&self, push: &Push) -> Result<Response, Failure> {
        let inner = &self.inner;
        let upstream = &inner.upstream;
        let target = upstream.target(push.path_and_query.as_str());
        let tenant = push.tenant.as_deref().and_then(header_value);
        let headers = push
            .forwarded()
            .chain(upstream.credentials().map(|v| (&header::AUTHORIZATION, v)))
            .chain(tenant.as_ref().map(|v| (&TENANT_HEADER_NAME, v)));
        let post = Post {
            target: &target,
            headers,
            body: &push.body,
        };
        // One deadline for sending the push and reading the answer.
        let exchange = upstream.pool().post(post, MAX_RESPONSE_BYTES, relayed);
        let answer = tokio::time::timeout(upstream.timeout(), exchange)
            .await
            .map_err(|_| Failure::Unreachable("timed out".into()))?
            .map_err(|e| match e {
                PoolError::Answer(_) => Failure::BadAnswer(e.to_string()),
                _ => Failure::Unreachable(e.to_string()),
            })?;
        let mut out = Response::new(Body::from(answer.body));
        *out.status_mut() = answer.status;
        *out.headers_mut() = answer.headers;
        Ok(out)
    }

    async fn enqueue(&self, push: Push) -> Result<Response, ApiError> {
        let inner = self.inner.clone();
        let mut headers = push.header_pairs();
        if let Some(t) = &push.tenant {
            headers.push((TENANT_HEADER.to_owned(), t.clone()));
        }
        let entry = SpooledRequest {
            path_and_query: push.path_and_query.as_str().to_owned(),
            headers,
            body: push.body.clone(),
        };
        let result = tokio::task::spawn_blocking(move || {
            let r = inner.spool.push(&entry);
            (r, inner.spool.len(), inner.spool.bytes())
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
        let (result, len, bytes) = result;
        self.inner.metrics.spool_entries.set(len as u64);
        self.inner.metrics.spool_bytes.set(bytes);
        match result {
            Ok(_) => {
                self.inner.wake.notify_one();
                Ok(spooled_response(&push))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Starts the task that replays the spool in order, until `life` stops. It stops only
    /// between deliveries or while one is in flight: an entry whose delivery was under way stays
    /// in the spool (it may reach the upstream twice); one delivered is always removed first, so
    /// a new node opening the same spool after shutdown never races this one.
    pub fn start_replay(&self, life: &Lifecycle) {
        let this = self.clone();
        let stopping = life.clone();
        life.track(async move { this.replay(stopping).await });
    }

    async fn replay(&self, life: Lifecycle) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if life.is_stopping() {
                return;
            }
            let inner = self.inner.clone();
            let next = tokio::task::spawn_blocking(move || {
                // Dead letters handed back by `pyrogate spool dead retry` join the queue here;
                // while idle (once a second) the dead-letter gauge is recounted too, so a
                // `drop` shows.
                let adopted = inner.spool.adopt_retried().unwrap_or_else(|err| {
                    tracing::error!(error = %err, "taking retried dead letters into the spool failed");
                    0
                });
                let next = inner.spool.peek();
                if adopted > 0 || matches!(next, Ok(None)) {
                    let m = &inner.metrics;
                    m.spool_entries.set(inner.spool.len() as u64);
                    m.spool_bytes.set(inner.spool.bytes());
                    m.spool_dead_letters
                        .set(inner.spool.dead_letters() as u64);
                }
                next
            })
            .await;
            let (seq, entry) = match next {
                Ok(Ok(Some(next))) => next,
                Ok(Ok(None)) => {
                    tokio::select! {
                        _ = tokio::time::timeout(Duration::from_secs(1), self.inner.wake.notified()) => {}
                        () = life.stopping() => return,
                    }
                    continue;
                }
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "reading the spool failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = life.stopping() => return,
                    }
                    continue;
                }
                Err(err) if err.is_cancelled() => return, // the runtime is shutting down
                Err(err) => {
                    tracing::error!(error = %err, "spool task failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = life.stopping() => return,
                    }
                    continue;
                }
            };
            let Ok(path_and_query) = PathAndQuery::try_from(entry.path_and_query.as_str()) else {
                // Only a damaged or hand-made entry; it can never be sent.
                let reason = format!("entry {seq} has no valid request path");
                self.dead_letter(seq, reason, "a spooled push has no valid request path")
                    .await;
                continue;
            };
            let push = Push::new(
                path_and_query,
                Push::headers_from_pairs(entry.headers.iter().filter(|(k, _)| k != TENANT_HEADER)),
                entry
                    .headers
                    .iter()
                    .find(|(k, _)| k == TENANT_HEADER)
                    .map(|(_, v)| v.clone()),
                entry.body,
            );
            // A delivery cut short by a stop leaves the entry spooled for the next start.
            let delivered = tokio::select! {
                delivered = self.forward(&push) => delivered,
                () = life.stopping() => return,
            };
            match delivered {
                Ok(response) if response.status().is_success() => {
                    let inner = self.inner.clone();
                    let removed = tokio::task::spawn_blocking(move || {
                        let r = inner.spool.remove(seq);
                        (r, inner.spool.len(), inner.spool.bytes())
                    })
                    .await;
                    if let Ok((r, len, bytes)) = removed {
                        if let Err(err) = r {
                            tracing::error!(error = %err, seq, "removing a delivered spool entry failed");
                        }
                        self.inner.metrics.spool_entries.set(len as u64);
                        self.inner.metrics.spool_bytes.set(bytes);
                    }
                    backoff = Duration::from_millis(100);
                }
                Ok(response) if retryable(response.status()) => {
                    // 429 is what Pyroscope answers in the burst after an outage; 401/403 a
                    // credentials change on its side. The push stays first in line.
                    self.inner.metrics.spool_retries.inc();
                    let wait = retry_after(&response)
                        .unwrap_or(backoff)
                        .min(MAX_RETRY_WAIT);
                    tracing::debug!(status = %response.status(), wait_ms = wait.as_millis() as u64, "upstream asked to retry a spooled push later");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = life.stopping() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Ok(response) => {
                    // The upstream will never take it: keep it, aside, with why — never unlink
                    // an acknowledged push.
                    let reason = format!(
                        "upstream answered {} to {} (entry {seq})",
                        response.status(),
                        push.path_and_query
                    );
                    self.dead_letter(seq, reason, "upstream refused a spooled push for good")
                        .await;
                    backoff = Duration::from_millis(100);
                }
                Err(Failure::BadAnswer(why)) => {
                    // Replaying would repeat the push each time: keep it aside, with why.
                    let reason = format!(
                        "the upstream's answer to {} could not be read: {why} (entry {seq})",
                        push.path_and_query
                    );
                    self.dead_letter(
                        seq,
                        reason,
                        "the upstream's answer to a spooled push could not be read",
                    )
                    .await;
                    backoff = Duration::from_millis(100);
                }
                Err(failure) => {
                    tracing::debug!(%failure, "upstream still unavailable; retrying the spool later");
                    // After a timeout the upstream may have the push already: wait at least as
                    // long as it took to give up before sending it again, and count it.
                    let wait = if failure.timed_out() {
                        self.inner.metrics.spool_possible_duplicates.inc();
                        backoff.max(self.inner.upstream.timeout())
                    } else {
                        backoff
                    };
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = life.stopping() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

impl Forwarder {
    /// Moves spool entry `seq` aside with `reason` — never unlinks an acknowledged push — and
    /// logs `why` with where it went.
    async fn dead_letter(&self, seq: u64, reason: String, why: &'static str) {
        let inner = self.inner.clone();
        let moved = tokio::task::spawn_blocking(move || {
            let r = inner.spool.dead_letter(seq, &reason);
            (
                r,
                inner.spool.len(),
                inner.spool.bytes(),
                inner.spool.dead_letters(),
            )
        })
        .await;
        if let Ok((r, len, bytes, dead)) = moved {
            match r {
                Ok(path) => {
                    tracing::warn!(path = %path.display(), "{why}; moved it to the dead-letter directory")
                }
                Err(err) => {
                    tracing::error!(error = %err, seq, "dead-lettering a spool entry failed")
                }
            }
            self.inner.metrics.spool_entries.set(len as u64);
            self.inner.metrics.spool_bytes.set(bytes);
            self.inner.metrics.spool_dead_letters.set(dead as u64);
        }
    }
}

/// Longest pause between two replays of the same push.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest `Retry-After` honoured.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Upstream answers after which the same push is tried again later (not dead-lettered).
fn retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
    ) || status.is_server_error()
}

/// `Retry-After: <seconds>` (the HTTP-date form is rare for APIs and is ignored).
fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// What an agent gets for a spooled push: 200, with an empty message in the agent's encoding.
fn spooled_response(push: &Push) -> Response {
    let content_type = push.content_type();
    let connect = push.path_and_query.path().starts_with("/push.v1.");
    let body = if connect && content_type.contains("json") {
        "{}"
    } else {
        ""
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    if connect && let Some(v) = header_value(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert("pyrogate-spooled", header::HeaderValue::from_static("true"));
    response
}
