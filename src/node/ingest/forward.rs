//! Forwarding pushes to the upstream Grafana Pyroscope, with an on-disk spool for the times it
//! can't take them.
//!
//! A push goes straight to the upstream. If the upstream is unreachable, times out or answers
//! 5xx, the push is written to the spool and the agent gets `200` with `Pyrogate-Spooled: true`
//! (Pyroscope's agents treat anything but 200 as a failure, and the push is safely on disk),
//! and the upstream is marked *down*: while it is down and anything is spooled, new pushes go
//! to the spool at once instead of each waiting for its own failure. The first push the
//! upstream takes again — live or replayed — marks it up, and live pushes go straight to it
//! again while the backlog drains beside them: they are never queued behind it (Pyroscope
//! does not need pushes in arrival order; docs/architecture.md says why).
//!
//! The [`replay`] task drains the spool with many pushes in flight, as many as the upstream
//! takes; an entry is removed only after the upstream accepted it (at-least-once across a
//! crash between delivery and removal; exactly once otherwise). A push whose answer timed out
//! may have been taken: it is sent again with a doubled timeout, so a slow upstream is not
//! sent the same push over and over. A full spool answers 503 — nothing accepted is ever
//! dropped silently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::PathAndQuery;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

mod replay;

use super::spool::{Spool, SpooledRequest};
use super::upstream::Upstream;
use super::{Push, TENANT_HEADER, TENANT_HEADER_NAME, header_value};
use crate::core::clock::{Clock, Stopwatch};
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
    /// Told when a push is spooled: the replay may have room for it.
    wake: Notify,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// `upstream_requests{result="ok"}`, looked up once: it is hit on every push.
    delivered: prometheus_client::metrics::counter::Counter,
    /// The last exchange with the upstream failed (unreachable, timed out, 5xx) and none has
    /// succeeded since: new pushes go to the spool without trying.
    down: AtomicBool,
    /// Most spooled pushes in flight at once (`ingest.spool.replay-concurrency`).
    replay_max: usize,
    /// Spool entries whose last delivery timed out, and how many times: the next one waits
    /// longer ([`Forwarder::timeout_after`]). Touched only when a push has timed out or is
    /// replayed.
    timeouts: Mutex<HashMap<u64, u32>>,
}

#[derive(Debug)]
enum Failure {
    /// No connection could be made, or it failed before any of the push was written: nothing
    /// reached the upstream.
    NotSent {
        why: String,
        /// The upstream refused or never answered the connection (it is down, not busy).
        connecting: bool,
    },
    /// No answer within the timeout: the upstream may have the push.
    TimedOut,
    /// The connection failed mid-push or before the answer: the upstream may have the push.
    Broken(String),
    /// The upstream answered 5xx.
    Status(StatusCode),
    /// The upstream took the push and answered something that can't be read (framing, size).
    /// It may well have the push: sending it again would only repeat that.
    BadAnswer(String),
}

impl Failure {
    /// The upstream may have taken the push: sending it again may deliver it twice.
    fn maybe_delivered(&self) -> bool {
        matches!(self, Failure::TimedOut | Failure::Broken(_))
    }

    /// No connection could be made: the upstream is down rather than slow.
    fn not_connected(&self) -> bool {
        matches!(
            self,
            Failure::NotSent {
                connecting: true,
                ..
            }
        )
    }
}

impl From<PoolError> for Failure {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Connect(_) => Failure::NotSent {
                why: e.to_string(),
                connecting: true,
            },
            PoolError::Unsent(_) => Failure::NotSent {
                why: e.to_string(),
                connecting: false,
            },
            PoolError::Exchange(why) => Failure::Broken(why),
            PoolError::Answer(_) => Failure::BadAnswer(e.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotSent { why, .. } | Failure::Broken(why) => write!(f, "unreachable: {why}"),
            Failure::TimedOut => write!(f, "unreachable: timed out"),
            Failure::Status(status) => write!(f, "answered {status}"),
            Failure::BadAnswer(why) => write!(f, "answered unreadably: {why}"),
        }
    }
}

impl Forwarder {
    pub fn new(
        upstream: Upstream,
        spool: Spool,
        replay_max: usize,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
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
                clock,
                // A spool left by the last run may be waiting: try the upstream first all the
                // same (the replay finds out as fast as a push would).
                down: AtomicBool::new(false),
                replay_max: replay_max.max(1),
                timeouts: Mutex::default(),
            }),
        })
    }

    /// Forwards a push, or spools it when the upstream can't take it.
    pub async fn send(&self, push: Push) -> Result<Response, ApiError> {
        if self.inner.down.load(Ordering::Relaxed) && !self.inner.spool.is_empty() {
            // The replay is probing the upstream; it says when it is back.
            return self.enqueue(push, false).await;
        }
        match self.forward(&push, self.inner.upstream.timeout()).await {
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
                if failure.maybe_delivered() {
                    self.inner.metrics.spool_possible_duplicates.inc();
                }
                self.enqueue(push, matches!(failure, Failure::TimedOut))
                    .await
            }
        }
    }

    /// Sends `push` and waits at most `timeout` for the answer; marks the upstream down or up.
    async fn forward(&self, push: &Push, timeout: Duration) -> Result<Response, Failure> {
        let inner = &self.inner;
        let started = Stopwatch::start();
        let result = self.request(push, timeout).await;
        let label = match &result {
            Ok(r) if r.status().is_success() => "ok",
            Ok(r) if r.status().is_server_error() => "server_error",
            Ok(_) => "client_error",
            Err(Failure::BadAnswer(_)) => "bad_answer",
            Err(_) => "unreachable",
        };
        match label {
            "ok" | "client_error" => self.mark_down(false),
            "server_error" | "unreachable" => self.mark_down(true),
            _ => {}
        }
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

    /// Marks the upstream down or up, writing the flag only when it changes (every push
    /// reads it).
    fn mark_down(&self, down: bool) {
        let flag = &self.inner.down;
        if flag.load(Ordering::Relaxed) != down && flag.swap(down, Ordering::Relaxed) != down {
            if down {
                tracing::info!(
                    "upstream down: new pushes go to the spool until it takes one again"
                );
            } else {
                tracing::info!("upstream up: pushes go straight to it again");
            }
        }
    }

    async fn request(&self, push: &Push, timeout: Duration) -> Result<Response, Failure> {
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
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Failure::TimedOut)??;
        let mut out = Response::new(Body::from(answer.body));
        *out.status_mut() = answer.status;
        *out.headers_mut() = answer.headers;
        Ok(out)
    }

    /// Spools `push`; `timed_out` says its answer timed out (the upstream may have it), so its
    /// replay waits longer.
    async fn enqueue(&self, push: Push, timed_out: bool) -> Result<Response, ApiError> {
        let inner = self.inner.clone();
        let mut headers = push.header_pairs();
        if let Some(t) = &push.tenant {
            headers.push((TENANT_HEADER.to_owned(), t.clone()));
        }
        let entry = SpooledRequest {
            path_and_query: stamped(&push.path_and_query, self.inner.clock.now()).into_owned(),
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
            Ok(seq) => {
                if timed_out {
                    self.timeouts().insert(seq, 1);
                }
                self.inner.wake.notify_one();
                Ok(spooled_response(&push))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Starts the task that replays the spool ([`replay`]), until `life` stops.
    pub fn start_replay(&self, life: &Lifecycle) {
        let this = self.clone();
        let stopping = life.clone();
        life.track(async move { this.replay(stopping).await });
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

/// Longest pause of the replay after a failure (a `Retry-After` may ask for longer).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
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

/// A legacy `/ingest` push without `from` or `until` is dated by Pyroscope when it arrives;
/// spooled, it arrives late. The time it reached the node (Unix seconds, a form Pyroscope
/// reads for both) is added for each one missing, so a replayed push lands where it belongs.
/// Other paths carry their time in the profile.
fn stamped(path_and_query: &PathAndQuery, now: u64) -> std::borrow::Cow<'_, str> {
    let whole = path_and_query.as_str();
    if !path_and_query.path().ends_with("/ingest") {
        return whole.into();
    }
    let query = path_and_query.query().unwrap_or("");
    let has = |key: &str| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(key))
    };
    let mut out = whole.to_owned();
    for key in ["from", "until"] {
        if !has(key) {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(&format!("{key}={now}"));
        }
    }
    out.into()
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

#[cfg(test)]
mod tests {
    use super::stamped;
    use axum::http::uri::PathAndQuery;

    fn stamp(pq: &'static str) -> String {
        stamped(&PathAndQuery::from_static(pq), 1_700_000_000).into_owned()
    }

    #[test]
    fn a_spooled_ingest_push_keeps_the_time_it_arrived() {
        assert_eq!(
            stamp("/ingest?name=app.cpu"),
            "/ingest?name=app.cpu&from=1700000000&until=1700000000"
        );
        assert_eq!(
            stamp("/pyroscope/ingest?name=app.cpu&from=1699999990"),
            "/pyroscope/ingest?name=app.cpu&from=1699999990&until=1700000000"
        );
        assert_eq!(
            stamp("/ingest?from=now-10s&until=now&name=a"),
            "/ingest?from=now-10s&until=now&name=a",
            "an agent's own times are kept as they are"
        );
        assert_eq!(stamp("/ingest"), "/ingest?from=1700000000&until=1700000000");
        assert_eq!(
            stamp("/ingest?name=a&fromage=1"),
            "/ingest?name=a&fromage=1&from=1700000000&until=1700000000",
            "only the whole key counts"
        );
    }

    #[test]
    fn other_pushes_carry_their_time_in_the_profile() {
        assert_eq!(
            stamp("/push.v1.PusherService/Push"),
            "/push.v1.PusherService/Push"
        );
        assert_eq!(stamp("/v1development/profiles"), "/v1development/profiles");
    }
}
