//! The one server shell both roles run in: bind (port 0 in tests), accept connections under
//! limits, serve a router with timeouts and request logs, and stop through one mechanism.
//!
//! **Limits on every listener.** A client has `server.http-server-read-timeout` to send a
//! request's headers — which also closes keep-alive connections left idle that long — so a
//! slowloris client holding connections open byte by byte is dropped. At most
//! `server.http-max-connections` connections are open at once, and at most
//! `server.http-max-connections-per-client` from one address. A connection past either cap
//! takes the place of an idle one — the client's own oldest idle connection when it is at its
//! share, else the oldest idle connection of anyone — which is closed (hyper's graceful
//! close: a request whose head has arrived meanwhile is answered first; one still on the wire
//! meets a closed connection, as at the keep-alive timeout); a connection with a request in
//! flight is never closed for another. Only when every connection in the way is busy does the
//! newcomer get an immediate `503` in the `{"errors":[…]}` shape (plain HTTP) or get closed
//! (TLS). At start the soft `RLIMIT_NOFILE` is raised to the hard limit, and caps above what
//! it leaves for connections — the limit less a reserve for everything else the process keeps
//! open — are lowered to fit, so a cap is reached before `accept` fails for want of
//! descriptors (`limits::caps`); the caps in force are logged, with a warning when lowered. Each request
//! flips its connection's busy flag (a relaxed atomic store each way): nothing shared is
//! locked per request. A request, long-polls included, takes at most [`REQUEST_TIMEOUT`].
//!
//! **One way to stop.** A [`Lifecycle`] is a `CancellationToken` plus a `TaskTracker`: every
//! background task (the node's sync loop, the spool replay, the authority's ticker) is spawned
//! through it and ends when the token is cancelled, and every long-poll watches the same token.
//! When the shutdown future fires the token is cancelled, the listener stops accepting, every
//! connection is asked to close as an idle one is to make room — it finishes its in-flight
//! request and closes — and then the tracked tasks are awaited, for at most [`DRAIN`]: a
//! process built next on the same storage path never races this one's replay.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath};
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tower::Service as _;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::config::ServerSettings;
use crate::edge::auth::CredentialMemo;
pub use crate::edge::lifecycle::Lifecycle;
use crate::edge::tls::{HANDSHAKE_TIMEOUT, ServerTlsConfig};

mod cpus;
mod held;
mod limits;

use limits::{Activity, Admitted, Caps, CloseRequest, Limits, Why};

/// Longest time shutdown waits for connections to finish, then for background tasks.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Longest time one request may take, long-polls included (their wait is capped below this).
/// Streaming a large push from a slow agent fits well within it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A handler that takes some requests before the router sees them: the ingest node's push
/// routes, the hot path, skip the router's matching, middleware and per-layer boxing. It gives
/// back every request it does not take. What it takes gets the same request timeout as the
/// router, and a debug log line of the same shape (method, route, status, latency).
pub trait Intercept: Send + Sync + 'static {
    /// The route a taken request is logged under, or the request back (moved, not copied:
    /// the size of the `Err` is the request's own). `memo` is the request's connection's:
    /// requests on one connection come one after another; `peer` is its remote address.
    #[allow(clippy::result_large_err)]
    fn intercept(
        &self,
        req: Request<Incoming>,
        memo: &Arc<CredentialMemo>,
        peer: SocketAddr,
    ) -> Result<(&'static str, Intercepted), Request<Incoming>>;
}

/// The response future of an intercepted request.
pub type Intercepted = std::pin::Pin<Box<dyn Future<Output = axum::response::Response> + Send>>;

/// Requests the shell answers itself, before hyper: the authority's held long-polls.
///
/// A held poll waits up to a minute on every node's connection. Under hyper that wait keeps
/// the connection's 8 KiB read and write buffers (a resident page of each) and the router's
/// futures; answered here, it keeps only the hold's own future and the socket. The shell
/// reads each request head on such a connection itself and offers it to [`Hold::hold`] only
/// when it is a plain `GET` — HTTP/1.1, no body, no `Expect`/`Upgrade`/`Connection` other
/// than keep-alive, an origin-form target, a host `server.allowed-hosts` accepts. Everything
/// else, and every request the hold declines, goes to hyper and the router with the bytes
/// read so far, and the connection stays with hyper from then on: the shell parses nothing
/// it then acts on besides what it answers itself.
pub trait Hold: Send + Sync + 'static {
    /// The future of the answer to a request (its target and headers; the hold copies what
    /// it keeps), or `None` to leave it to the router.
    fn hold(&self, uri: &axum::http::Uri, headers: &axum::http::HeaderMap) -> Option<Held>;
}

/// The answer of a held request, once it is ready (its body whole).
pub type Held = std::pin::Pin<Box<dyn Future<Output = axum::http::Response<bytes::Bytes>> + Send>>;

/// Raises the soft open-files limit to the hard one (systemd's default soft limit is 1024),
/// once per process, and logs the figure. Returns the limit in force (`None`: unlimited).
fn raise_open_files_limit() -> Option<u64> {
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        let before = limit.current;
        if limit.current < limit.maximum {
            limit.current = limit.maximum;
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::warn!(error = %e, "could not raise the open-files limit");
                return before;
            }
        }
        tracing::info!(
            before = figure(before),
            now = figure(limit.current),
            "open-files limit"
        );
        limit.current
    })
}

/// An open-files figure for the log.
fn figure(limit: Option<u64>) -> String {
    limit.map_or("unlimited".to_owned(), |n| n.to_string())
}

/// The connection caps for `settings` under the open-files limit, logged with their reason:
/// a warning when the limit lowered them.
fn connection_caps(settings: &ServerSettings, open_files: Option<u64>) -> Caps {
    let caps = limits::caps(
        settings.max_connections,
        settings.max_connections_per_client,
        open_files,
    );
    let reserve = open_files.map(limits::reserve);
    let (max, per_client) = (caps.max, caps.per_client);
    match caps.why {
        Why::Configured => tracing::info!(
            max,
            per_client,
            open_files = figure(open_files),
            "connection caps as configured (0 = none)"
        ),
        Why::OpenFiles => tracing::info!(
            max,
            per_client,
            open_files = figure(open_files),
            reserve,
            "connection caps: none configured, the open-files limit less its reserve"
        ),
        Why::Lowered => tracing::warn!(
            max,
            per_client,
            configured_max = settings.max_connections,
            configured_per_client = settings.max_connections_per_client,
            open_files = figure(open_files),
            reserve,
            "connection caps lowered to fit the open-files limit; raise it (ulimit -n, \
             LimitNOFILE) to have the configured ones"
        ),
    }
    caps
}

/// A bound listener and the router it will serve, over HTTP or HTTPS.
pub struct Server {
    listener: TcpListener,
    router: Router,
    tls: Option<ServerTlsConfig>,
    read_timeout: Duration,
    limits: Arc<Limits>,
    /// `Some(n)`: serve on n threads of their own ([`Server::with_workers`]).
    workers: Option<(usize, Placement)>,
    intercept: Option<Arc<dyn Intercept>>,
    hold: Option<Arc<dyn Hold>>,
    allowed_hosts: Arc<[crate::config::HostPattern]>,
}

impl Server {
    /// Binds `settings.api_bind_addr`; with TLS, every TLS file is read and checked here, so a
    /// bad one fails start-up with the name of its key.
    pub async fn bind(settings: &ServerSettings, router: Router) -> anyhow::Result<Self> {
        let caps = connection_caps(settings, raise_open_files_limit());
        let tls = settings
            .tls
            .as_ref()
            .map(ServerTlsConfig::load)
            .transpose()?;
        let addr = settings.api_bind_addr;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        Ok(Server {
            listener,
            router: crate::edge::hosts::guard(router, &settings.allowed_hosts),
            tls,
            read_timeout: settings.read_timeout,
            limits: Arc::new(Limits::new(caps)),
            workers: None,
            intercept: None,
            hold: None,
            allowed_hosts: settings.allowed_hosts.clone().into(),
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

    /// Serves on `n` threads, each with its own single-threaded event loop (0 = one per CPU
    /// core), instead of on the caller's runtime: the caller's runtime accepts and hands each
    /// connection to the thread with the fewest open. Work a request
    /// starts stays on its thread: no hand-off between threads per request, and each thread
    /// can keep its own upstream connections ([`current_worker`]). For a uniform proxy load —
    /// the ingest node — that is what fewer context switches and cross-thread wake-ups buy.
    /// `placement` says whether the threads are bound to CPUs.
    pub fn with_workers(mut self, n: usize, placement: Placement) -> Self {
        self.workers = Some((worker_count(n), placement));
        self
    }

    /// Lets `intercept` take requests before the router ([`Intercept`]).
    pub fn with_intercept(mut self, intercept: Arc<dyn Intercept>) -> Self {
        self.intercept = Some(intercept);
        self
    }

    /// Lets `hold` answer some requests before hyper ([`Hold`]).
    pub fn with_hold(mut self, hold: Arc<dyn Hold>) -> Self {
        self.hold = Some(hold);
        self
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
                    .make_span_with(|req: &Request<Body>| {
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
        if let Some(tls) = &self.tls {
            tls.watch(&life);
        }
        let stopping = life.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopping.stop();
        });
        let shell = Arc::new(Shell {
            router,
            acceptor: self.tls.as_ref().map(ServerTlsConfig::acceptor),
            read_timeout: self.read_timeout,
            limits: self.limits,
            intercept: self.intercept,
            hold: self.hold,
            allowed_hosts: self.allowed_hosts,
        });
        match self.workers {
            None => accept_loop(self.listener, shell, life.clone(), None).await,
            Some((n, placement)) => {
                let bound = place(n, placement);
                let mut workers = Vec::with_capacity(n);
                let mut done = Vec::with_capacity(n);
                for index in 0..n {
                    let (handoff, incoming) = tokio::sync::mpsc::unbounded_channel();
                    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                    let (shell, life) = (shell.clone(), life.clone());
                    let (finished, finishing) = tokio::sync::oneshot::channel::<()>();
                    let cpu = bound.as_ref().map(|cpus| cpus[index]);
                    std::thread::Builder::new()
                        // Short: the kernel cuts thread names to 15 bytes (`top`, `perf`, /proc).
                        .name(format!("pyrogate-s{index}"))
                        .spawn(move || worker(index, cpu, incoming, shell, life, finished))
                        .context("starting a worker thread")?;
                    workers.push(Worker { handoff, open });
                    done.push(finishing);
                }
                accept_loop(self.listener, shell, life.clone(), Some(&workers)).await;
                // Closing the hand-off channels lets each worker drain and end.
                drop(workers);
                for finishing in done {
                    // An error only means that worker has already ended.
                    let _ = finishing.await;
                }
            }
        }
        life.wait(DRAIN).await;
        Ok(())
    }
}

/// What every accept loop serves with: the router with its layers, TLS, timeouts, limits.
struct Shell {
    router: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    read_timeout: Duration,
    limits: Arc<Limits>,
    intercept: Option<Arc<dyn Intercept>>,
    hold: Option<Arc<dyn Hold>>,
    allowed_hosts: Arc<[crate::config::HostPattern]>,
}

thread_local! {
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The index of the serving thread this code runs on ([`Server::with_workers`]), or `None`
/// on any other thread: lets a component keep one connection pool per thread, so a request
/// never waits on a connection driven by another thread's event loop.
pub fn current_worker() -> Option<usize> {
    WORKER.with(std::cell::Cell::get)
}

/// Whether serving threads are bound to CPUs ([`Server::with_workers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Each thread bound to a CPU of its own where there is one thread per CPU the process may
    /// use and no CPU quota below that; elsewhere as [`Placement::Kernel`].
    OnePerCpu,
    /// Wherever the kernel's scheduler puts them.
    Kernel,
}

/// The CPU each of `n` serving threads is bound to, by index, or `None`; logs which, and why.
fn place(n: usize, placement: Placement) -> Option<Vec<usize>> {
    if placement == Placement::Kernel {
        tracing::info!(
            threads = n,
            "serving threads placed by the kernel (ingest.pin-threads off)"
        );
        return None;
    }
    let allowed = cpus::allowed();
    let parallelism = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    match cpus::plan(n, &allowed, parallelism) {
        Ok(plan) => {
            tracing::info!(threads = n, cpus = ?plan, "binding serving threads one per CPU");
            Some(plan)
        }
        Err(why) => {
            tracing::info!(
                threads = n,
                reason = why,
                "serving threads placed by the kernel"
            );
            None
        }
    }
}

/// `configured`, or one per CPU core when 0.
pub fn worker_count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    }
}

/// A serving thread as the accept loop sees it: where to hand a connection, and how many it
/// has open.
struct Worker {
    handoff: tokio::sync::mpsc::UnboundedSender<Handoff>,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

/// An accepted connection on its way to a worker, with its place under the limits and its
/// count on the worker.
struct Handoff {
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    _counted: Counted,
}

/// One connection counted on a worker's `open`; dropping it — when the connection ends, or
/// when it never reaches the worker — uncounts it.
struct Counted(Arc<std::sync::atomic::AtomicUsize>);

impl Counted {
    fn on(open: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Counted(open.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One serving thread: a single-threaded runtime serving the connections the accept loop
/// hands it, until the hand-off channel closes; then it drains its connections. With `cpu`,
/// the thread is bound to that CPU, and the threads its runtime starts for blocking work may
/// run wherever the process may (they would otherwise inherit the binding and compete with
/// the serving thread for its CPU).
fn worker(
    index: usize,
    cpu: Option<usize>,
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
    shell: Arc<Shell>,
    life: Lifecycle,
    finished: tokio::sync::oneshot::Sender<()>,
) {
    WORKER.with(|w| w.set(Some(index)));
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder
        .enable_all()
        .thread_name(format!("pyrogate-b{index}"));
    if let Some(cpu) = cpu {
        if let Err(err) = cpus::bind(&[cpu]) {
            tracing::warn!(error = %err, cpu, "could not bind a serving thread to its CPU");
        }
        builder.on_thread_start(|| {
            static WARNED: std::sync::Once = std::sync::Once::new();
            if let Err(err) = cpus::unbind() {
                WARNED.call_once(|| {
                    tracing::warn!(
                        error = %err,
                        "a blocking-work thread stays on its serving thread's CPU"
                    );
                });
            }
        });
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "could not start a worker's event loop");
            life.stop();
            return;
        }
    };
    runtime.block_on(async move {
        let connections = TaskTracker::new();
        while let Some(handoff) = incoming.recv().await {
            let Handoff {
                tcp,
                peer,
                admitted,
                _counted: counted,
            } = handoff;
            let tcp = match TcpStream::from_std(tcp) {
                Ok(tcp) => tcp,
                Err(err) => {
                    tracing::warn!(error = %err, "a worker could not take a connection");
                    continue;
                }
            };
            let shell = shell.clone();
            connections.spawn(async move {
                let _counted = counted;
                serve(tcp, peer, admitted, shell).await;
            });
        }
        drain(connections).await;
    });
    let _ = finished.send(());
}

/// Accepts connections until shutdown begins, then waits (at most [`DRAIN`]) for the ones
/// open here to finish their requests. With `workers`, each connection goes to the worker with
/// the fewest open — kept balanced here, since every worker sharing one listener let the
/// first awake take them all.
async fn accept_loop(
    listener: TcpListener,
    shell: Arc<Shell>,
    life: Lifecycle,
    workers: Option<&[Worker]>,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = life.stopping() => break,
        };
        // Past the caps, an idle connection may be asked to close to make room.
        let Some(admitted) = shell.limits.admit(peer.ip()) else {
            tracing::debug!(%peer, "too many connections; shedding this one");
            if shell.acceptor.is_none() {
                connections.spawn(refuse(tcp));
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        match workers {
            None => {
                connections.spawn(serve(tcp, peer, admitted, shell.clone()));
            }
            Some(workers) => {
                use std::sync::atomic::Ordering::Relaxed;
                let Some(worker) = workers.iter().min_by_key(|w| w.open.load(Relaxed)) else {
                    continue;
                };
                let tcp = match tcp.into_std() {
                    Ok(tcp) => tcp,
                    Err(err) => {
                        tracing::warn!(error = %err, "could not hand a connection to a worker");
                        continue;
                    }
                };
                let handoff = Handoff {
                    tcp,
                    peer,
                    admitted,
                    _counted: Counted::on(&worker.open),
                };
                if worker.handoff.send(handoff).is_err() {
                    tracing::warn!("a worker has stopped; dropping a connection");
                }
            }
        }
    }
    drop(listener);
    // Every connection finishes its request in flight and closes.
    shell.limits.close_all();
    drain(connections).await;
}

/// Waits at most [`DRAIN`] for `connections` to finish.
async fn drain(connections: TaskTracker) {
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections did not finish in time");
    }
}

/// One admitted connection: the TLS handshake if serving TLS, then HTTP/1.1. Its place is
/// freed when it ends.
async fn serve(tcp: TcpStream, peer: SocketAddr, mut admitted: Admitted, shell: Arc<Shell>) {
    let activity = admitted.activity.clone();
    let close = &mut admitted.close;
    match &shell.acceptor {
        None => serve_connection(tcp, peer, shell.clone(), activity, close).await,
        // Boxed: see `serve_tls`.
        Some(acceptor) => {
            Box::pin(serve_tls(
                acceptor,
                tcp,
                peer,
                shell.clone(),
                activity,
                close,
            ))
            .await;
        }
    }
}

/// The TLS handshake, then [`serve_connection`] over TLS. Kept out of line (and boxed by
/// [`serve`]) because its state — a rustls connection inline — is several KiB: inline, every
/// plain-HTTP connection's task would be that large too (6.5 KiB instead of ~1 KiB each, which
/// is what an idle long-poll costs the authority). A connection asked to close during its
/// handshake has sent no request yet: it is dropped.
async fn serve_tls(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    shell: Arc<Shell>,
    activity: Arc<Activity>,
    close: &mut CloseRequest,
) {
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => handshake,
        () = close.asked() => return,
    };
    match handshake {
        Ok(Ok(tls)) => serve_connection(tls, peer, shell, activity, close).await,
        Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Serves HTTP/1.1 on one connection until it closes, or until it is asked to close (to make
/// room, or at shutdown), finishing the request in flight first: the shell's [`Hold`] first,
/// if there is one, then hyper.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    shell: Arc<Shell>,
    activity: Arc<Activity>,
    close: &mut CloseRequest,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match shell.hold.clone() {
        None => serve_http(io, peer, shell, activity, close).await,
        Some(hold) => {
            if let Some((io, read)) = held::serve(io, &*hold, &shell, &activity, close).await {
                let io = held::Prefixed::new(read, io);
                serve_http(io, peer, shell, activity, close).await;
            }
        }
    }
}

/// What the requests of one connection share: the shell, what the intercept remembers of the
/// connection between its requests, and the connection's [`Activity`].
struct Connection {
    shell: Arc<Shell>,
    peer: SocketAddr,
    memo: Option<Arc<CredentialMemo>>,
    activity: Arc<Activity>,
}

impl Connection {
    /// The answer to `req`: the intercept's, or the router's.
    async fn answer(&self, req: Request<Incoming>) -> axum::response::Response {
        let shell = &self.shell;
        let mut req = match (&shell.intercept, &self.memo) {
            (Some(intercept), Some(memo)) => match intercept.intercept(req, memo, self.peer) {
                Ok((route, handling)) => return intercepted(route, handling).await,
                Err(req) => req,
            },
            _ => req,
        };
        // What `ConnectInfo<SocketAddr>` extractors (the login throttle) read; intercepted
        // requests don't need it (and skip allocating the extensions map).
        req.extensions_mut().insert(ConnectInfo(self.peer));
        match shell.router.clone().call(req.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// hyper's HTTP/1.1 on one connection, the router behind it. Each request marks the
/// connection busy, and its answer's body marks it idle again once hyper has taken all of it
/// ([`Answer`]); asked to close, the connection closes at once when idle, or after the
/// request in flight (hyper's graceful shutdown).
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    shell: Arc<Shell>,
    activity: Arc<Activity>,
    close: &mut CloseRequest,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let read_timeout = shell.read_timeout;
    let memo = shell
        .intercept
        .as_ref()
        .map(|_| Arc::new(CredentialMemo::default()));
    let connection = Arc::new(Connection {
        shell,
        peer,
        memo,
        activity,
    });
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        own_head(&mut req);
        connection.activity.busy();
        let connection = connection.clone();
        async move {
            let response = connection.answer(req).await;
            Ok::<_, Infallible>(response.map(|body| Answer { body, connection }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        // The connection first: bytes read ahead of it (a request the shell handed over)
        // make a request in flight before a close asked already is seen.
        biased;
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::trace!(%peer, error = %err, "connection ended with an error");
            }
        }
        () = close.asked() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// An answer's body, which marks its connection idle when hyper is done with it (hyper drops
/// it as soon as it has its last bytes, before the next request can be read).
struct Answer {
    body: Body,
    connection: Arc<Connection>,
}

impl hyper::body::Body for Answer {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.connection.activity.idle();
    }
}

/// Gives a request without a body its own copy of its URI and header values. hyper parses
/// them as slices of the connection's read buffer, so while such a request is in flight — a
/// long-poll held for a minute — the buffer is shared, and hyper's next read (it watches for
/// the client hanging up) allocates a second 8 KiB one. With the head copied out (one small
/// allocation), hyper reuses its buffer. Requests with a body are left as they are: their body
/// is read on anyway.
fn own_head(req: &mut Request<Incoming>) {
    use axum::http::{HeaderValue, Uri};
    use hyper::body::Body as _;
    use std::fmt::Write as _;
    if !req.body().is_end_stream() {
        return;
    }
    let values: usize = req.headers().values().map(HeaderValue::len).sum();
    let mut owned = bytes::BytesMut::with_capacity(64 + values);
    let _ = write!(owned, "{}", req.uri());
    let uri_len = owned.len();
    for value in req.headers().values() {
        owned.extend_from_slice(value.as_bytes());
    }
    let owned = owned.freeze();
    if let Ok(uri) = Uri::from_maybe_shared(owned.slice(..uri_len)) {
        *req.uri_mut() = uri;
    }
    let mut at = uri_len;
    for value in req.headers_mut().values_mut() {
        let end = at + value.len();
        if let Ok(mut copy) = HeaderValue::from_maybe_shared(owned.slice(at..end)) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
        at = end;
    }
}

/// An intercepted request under the router's timeout, logged like the router logs.
async fn intercepted(route: &'static str, handling: Intercepted) -> axum::response::Response {
    let started =
        tracing::enabled!(tracing::Level::DEBUG).then(crate::core::clock::Stopwatch::start);
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, handling).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    };
    if let Some(started) = started {
        tracing::debug!(
            route,
            status = response.status().as_u16(),
            latency_ms = started.elapsed_secs() * 1000.0,
            "finished processing request"
        );
    }
    response
}

/// Over the connection limits: a short `503` in the errors shape, then close.
async fn refuse(mut tcp: TcpStream) {
    const BODY: &str = r#"{"errors":["too many connections; retry shortly"]}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tcp.write_all(response.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}
