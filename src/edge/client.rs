//! The one HTTP client constructor: the upstream forwarder, the read proxy and the node's sync
//! loop all get their client here, so connection settings and TLS are decided once. `http://`
//! and `https://` URLs both work; https verifies the peer with the TLS configuration built for
//! it in [`crate::edge::tls`].

use std::sync::Arc;
use std::time::Duration;

use axum::http;
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTP/1 client: TCP_NODELAY, `connect_timeout` per connection, up to 64 idle
/// connections per host kept for 90 s, TLS from `tls` for https URLs.
pub fn http_client(connect_timeout: Duration, tls: Arc<rustls::ClientConfig>) -> HttpClient {
    let connector = connector(connect_timeout, tls);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// How every client here connects: TCP_NODELAY, `connect_timeout`, TLS from `tls` for https.
fn connector(
    connect_timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
) -> HttpsConnector<HttpConnector> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector)
}

/// HTTP/1 connections to one origin, kept by the thread that opened them.
///
/// The pooled [`HttpClient`] hands every request to a connection task through its pool's
/// lock, key hashing, URI re-parsing and a dispatch channel, and any thread's event loop may be
/// driving the connection it gets. An ingest node forwards every push to the same origin, from
/// one event loop per core ([`crate::edge::server::current_worker`]): with one `OriginPool` per
/// loop, a push goes out on a connection that loop opened and drives, taken from a plain stack.
/// Connections are made by the same connector as [`http_client`] (TCP_NODELAY, connect
/// timeout, TLS from the same configuration).
pub struct OriginPool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority`, what the connector dials.
    origin: http::Uri,
    /// The `Host` header every request carries.
    host: http::HeaderValue,
    idle: std::sync::Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
}

/// Connections kept open per pool, past which a finished one is closed.
const MAX_IDLE: usize = 256;

/// Why a request through an [`OriginPool`] failed.
#[derive(Debug)]
pub enum PoolError {
    Connect(String),
    Request(hyper::Error),
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Connect(why) => write!(f, "connecting: {why}"),
            PoolError::Request(err) => write!(f, "{err}"),
        }
    }
}

/// A connection lent for one request; [`Lease::release`] once its response is read whole
/// gives it back, dropping it closes it (a half-read response can't share a connection).
pub struct Lease<'a> {
    pool: &'a OriginPool,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Lease<'_> {
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(self.sender);
        }
    }
}

impl OriginPool {
    /// A pool for `origin` (`scheme://host[:port]`, any path ignored).
    pub fn new(
        origin: &http::Uri,
        connect_timeout: Duration,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Self> {
        let (Some(scheme), Some(authority)) = (origin.scheme(), origin.authority()) else {
            anyhow::bail!("{origin} has no scheme and host");
        };
        Ok(OriginPool {
            connector: connector(connect_timeout, tls),
            origin: http::Uri::builder()
                .scheme(scheme.clone())
                .authority(authority.clone())
                .path_and_query("/")
                .build()?,
            host: http::HeaderValue::from_str(authority.as_str())?,
            idle: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Sends `request` (its URI in origin form: path and query) on an idle connection, or a new
    /// one. A request a reused connection could not take — the upstream closed it while idle —
    /// is sent again once on a new connection; nothing was written, so it can't arrive twice.
    pub async fn send(
        &self,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<(http::Response<hyper::body::Incoming>, Lease<'_>), PoolError> {
        request
            .headers_mut()
            .insert(http::header::HOST, self.host.clone());
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(PoolError::Connect("the connection closed at once".into()));
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok((response, Lease { pool: self, sender }));
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(PoolError::Request(err.into_error())),
                },
            }
        }
    }

    fn take_idle(&self) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, PoolError> {
        use tower::Service as _;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| PoolError::Connect(e.to_string()))?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(|e| PoolError::Connect(e.to_string()))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| PoolError::Connect(e.to_string()))?;
        // Driven by the event loop of the thread that opened it, which is the one that uses it.
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::trace!(error = %err, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}
