//! The one server shell both roles run in: bind (port 0 in tests), serve a router with request
//! timeouts and request logs, and stop through one mechanism.
//!
//! **One way to stop.** A [`Lifecycle`] is a `CancellationToken` plus a `TaskTracker`: every
//! background task (the node's sync loop, the spool replay, the authority's ticker) is spawned
//! through it and ends when the token is cancelled, and every long-poll watches the same token.
//! When the shutdown future fires the token is cancelled, in-flight requests drain (each is
//! bounded by the request timeout), and then the tracked tasks are awaited, for at most
//! [`DRAIN`]: a process built next on the same storage path never races this one's replay.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::MatchedPath;
use axum::http::{Request, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

/// Longest time shutdown waits for background tasks once requests have drained.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Longest time one request may take, long-polls included (their wait is capped below this).
/// Streaming a large push from a slow agent fits well within it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The shutdown signal and the background tasks that must end with the server.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` until it finishes or shutdown begins, whichever is first; shutdown waits
    /// for it.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let token = self.token.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Runs `task`, which watches [`Lifecycle::stopping`] itself (to stop only at points where
    /// stopping is safe); shutdown waits for it.
    pub fn track(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Resolves when shutdown begins.
    pub async fn stopping(&self) {
        self.token.cancelled().await;
    }

    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Begins shutdown: long-polls return, background tasks stop.
    pub fn stop(&self) {
        self.token.cancel();
    }

    /// Waits (at most `limit`) for every task spawned through [`Lifecycle::spawn`].
    pub async fn wait(&self, limit: Duration) {
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                seconds = limit.as_secs(),
                "background tasks did not stop in time"
            );
        }
    }
}

/// A bound listener and the router it will serve.
pub struct Server {
    listener: TcpListener,
    router: Router,
}

impl Server {
    pub async fn bind(addr: SocketAddr, router: Router) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        Ok(Server { listener, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` completes, then stops `life` and drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        life: Lifecycle,
    ) -> anyhow::Result<()> {
        let router = self
            .router
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                REQUEST_TIMEOUT,
            ))
            // One log line per request at debug level: method, route (the matched pattern,
            // never the query string, which could carry a credential), status and latency.
            // Headers are never logged.
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|req: &Request<axum::body::Body>| {
                        let route = req
                            .extensions()
                            .get::<MatchedPath>()
                            .map(MatchedPath::as_str)
                            .unwrap_or("unmatched");
                        tracing::debug_span!("request", method = %req.method(), route)
                    })
                    .on_request(())
                    .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG)),
            );
        let stopping = life.clone();
        let result = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.stop();
        })
        .await;
        life.stop();
        life.wait(DRAIN).await;
        result.context("serving HTTP")
    }
}
