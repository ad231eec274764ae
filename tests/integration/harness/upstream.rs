//! A recording stand-in for Grafana Pyroscope: an axum server on 127.0.0.1:0 that keeps every
//! request it gets (method, path and query, headers, body bytes) and answers 200 (empty, or a
//! fixed body) — or 503 while it is switched down, or nothing at all once it is really stopped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::wait::Deadline;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the upstream answered.
    pub status: StatusCode,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn tenant(&self) -> Option<&str> {
        self.header("x-scope-orgid")
    }
}

#[derive(Default)]
struct Shared {
    down: AtomicBool,
    /// Answers queued ahead of the normal ones: `(status, Retry-After)`, first one first.
    scripted: Mutex<std::collections::VecDeque<(StatusCode, Option<&'static str>)>>,
    failed_handshakes: std::sync::atomic::AtomicUsize,
    log: Mutex<Vec<Recorded>>,
    /// The `Content-Type` and body of every 200, if not empty.
    answer: Option<(&'static str, &'static str)>,
    /// Milliseconds each answer waits (a distributor's latency, or one slower than the
    /// node's timeout).
    delay_ms: std::sync::atomic::AtomicU64,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
}

pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Serving HTTPS with this configuration.
    tls: Option<Arc<rustls::ServerConfig>>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Upstream {
    /// Answers 200 with an empty body (a Connect push: in the encoding it was sent in).
    pub async fn start() -> Upstream {
        Upstream::with(Shared::default()).await
    }

    /// Answers 200 with `body` as `content_type`.
    pub async fn answering(content_type: &'static str, body: &'static str) -> Upstream {
        Upstream::with(Shared {
            answer: Some((content_type, body)),
            ..Shared::default()
        })
        .await
    }

    /// Answers 200 over HTTPS with the certificate in `files` (its own rustls set-up, not
    /// pyrogate's), at `https://localhost:<port>`.
    pub async fn start_tls(files: &super::pki::CertFiles) -> Upstream {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&files.cert)
            .expect("read the certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_file(&files.key).expect("key PEM");
        let config = rustls::ServerConfig::builder_with_provider(pyrogate::edge::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        Upstream::serving(Shared::default(), Some(Arc::new(config))).await
    }

    async fn with(shared: Shared) -> Upstream {
        Upstream::serving(shared, None).await
    }

    async fn serving(shared: Shared, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let addr = listener.local_addr().expect("upstream address");
        let shared = Arc::new(shared);
        let server = Some(serve(listener, shared.clone(), tls.clone()));
        Upstream {
            addr,
            shared,
            tls,
            server,
        }
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// TLS handshakes that failed (a client that did not trust this upstream's certificate).
    pub fn failed_handshakes(&self) -> usize {
        self.shared.failed_handshakes.load(Ordering::SeqCst)
    }

    /// The next requests get these answers, in order (and are still recorded); then the
    /// usual ones again.
    pub fn script(&self, answers: &[(u16, Option<&'static str>)]) {
        let mut q = self.shared.scripted.lock().expect("script");
        for (status, retry_after) in answers {
            q.push_back((StatusCode::from_u16(*status).expect("status"), *retry_after));
        }
    }

    /// Down: every request is answered 503 (and still recorded). Up: 200.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Every answer waits this long from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The most requests this upstream was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Really stops listening: connections are refused until [`Upstream::resume`].
    pub async fn stop(&mut self) {
        if let Some((tx, task)) = self.server.take() {
            let _ = tx.send(());
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the upstream stops in time")
                .expect("upstream task");
        }
    }

    /// Listens again on the same address.
    pub async fn resume(&mut self) {
        assert!(self.server.is_none(), "the upstream is already running");
        let deadline = Deadline::secs(10, format!("rebinding the upstream on {}", self.addr));
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) => deadline.tick(|| e.to_string()).await,
            }
        };
        self.server = Some(serve(listener, self.shared.clone(), self.tls.clone()));
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().expect("log").clone()
    }

    /// The requests answered 200, in arrival order.
    pub fn accepted(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.status == StatusCode::OK)
            .collect()
    }

    /// Waits until at least `n` requests were accepted; returns them all.
    pub async fn wait_accepted(&self, n: usize, secs: u64) -> Vec<Recorded> {
        let deadline = Deadline::secs(secs, format!("{n} pushes to reach the upstream"));
        loop {
            let accepted = self.accepted();
            if accepted.len() >= n {
                return accepted;
            }
            deadline
                .tick(|| format!("{} accepted: {:?}", accepted.len(), paths(&accepted)))
                .await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.server.take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}

pub fn paths(requests: &[Recorded]) -> Vec<&str> {
    requests.iter().map(|r| r.path_and_query.as_str()).collect()
}

fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let recording = shared.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let shared = recording.clone();
        async move { record(&shared, req).await }
    });
    let (tx, rx) = oneshot::channel::<()>();
    let stop = async move {
        let _ = rx.await;
    };
    let task = tokio::spawn(async move {
        let _ = match tls {
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            Some(config) => {
                let listener = TlsUpstream {
                    tcp: listener,
                    acceptor: tokio_rustls::TlsAcceptor::from(config),
                    shared,
                };
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
    });
    (tx, task)
}

/// The test upstream's TLS listener: handshakes one at a time (fine for a test peer), counting
/// the ones that fail.
struct TlsUpstream {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for TlsUpstream {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.shared.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

async fn record(shared: &Shared, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let scripted = shared.scripted.lock().expect("script").pop_front();
    let status = match scripted {
        Some((status, _)) => status,
        None if shared.down.load(Ordering::SeqCst) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::OK,
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let is_connect = path_and_query.starts_with("/push.v1.");
    shared.log.lock().expect("log").push(Recorded {
        method: parts.method.to_string(),
        path_and_query,
        headers: parts.headers,
        body,
        status,
        // A test peer's own record of when a request came, to check a pause's lower bound.
        #[allow(clippy::disallowed_methods)]
        at: std::time::Instant::now(),
    });
    {
        // Counted while it is answered, also when the client gives up and the answer is dropped.
        struct Answering<'a>(&'a Shared);
        impl Drop for Answering<'_> {
            fn drop(&mut self) {
                self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _answering = Answering(shared);
        let delay = shared.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
    if status != StatusCode::OK {
        let mut response = (status, "upstream says no").into_response();
        if let Some((_, Some(after))) = scripted {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(after),
            );
        }
        return response;
    }
    if let Some((content_type, body)) = shared.answer {
        return ([(header::CONTENT_TYPE, content_type)], body).into_response();
    }
    // Connect unary: an empty message in the encoding that was asked for.
    let mut response = StatusCode::OK.into_response();
    if is_connect && let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}
