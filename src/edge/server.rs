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
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;

use crate::config::ServerTls;
pub use crate::edge::lifecycle::Lifecycle;
use crate::edge::tls::ServerTlsConfig;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

/// Longest time shutdown waits for background tasks once requests have drained.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Longest time one request may take, long-polls included (their wait is capped below this).
/// Streaming a large push from a slow agent fits well within it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A bound listener and the router it will serve, over HTTP or HTTPS.
pub struct Server {
    listener: TcpListener,
    router: Router,
    tls: Option<ServerTlsConfig>,
}

impl Server {
    /// Binds `addr`; with `tls`, every TLS file is read and checked here, so a bad one fails
    /// start-up with the name of its key.
    pub async fn bind(
        addr: SocketAddr,
        router: Router,
        tls: Option<&ServerTls>,
    ) -> anyhow::Result<Self> {
        let tls = tls.map(ServerTlsConfig::load).transpose()?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        Ok(Server {
            listener,
            router,
            tls,
        })
    }

    /// `https` when serving TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
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
        let shutdown = async move {
            shutdown.await;
            stopping.stop();
        };
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let result = match &self.tls {
            None => {
                axum::serve(self.listener, service)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Some(tls) => {
                // `tap_io` gives the TLS listener axum's `ConnectInfo<SocketAddr>`.
                let listener = tls.listen(self.listener, &life).tap_io(|_| {});
                axum::serve(listener, service)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        life.stop();
        life.wait(DRAIN).await;
        result.context("serving HTTP")
    }
}
