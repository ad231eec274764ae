//! Distribution to ingest nodes: the public key set (`GET /.well-known/jwks.json`) and the
//! signed revocation list (`GET /api/revocations`).
//!
//! The list is built from the store, signed once per version and kept in memory, so serving it
//! costs nothing. Its `ETag` is the version. A node that sends `If-None-Match` with the version
//! it has gets `304`; with `?wait=SECONDS` the request is held until the version changes (or
//! the wait ends, then `304`), so a deletion reaches every long-polling node as soon as it
//! commits.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::sync::watch;

use crate::authority::AppState;
use crate::authority::keyring::{Keyring, Revision};
pub use crate::authority::store::Snapshot;
use crate::authority::store::StoreError;
use crate::core::jwk::KeySet;
use crate::core::jws::Signer;
use crate::core::keyset;
use crate::core::limits::LimitsSection;
use crate::core::revocation::RevocationList;
use crate::edge::error::ApiError;
use crate::edge::metrics::Metrics;
use crate::edge::server::{Held, Hold, Lifecycle};

/// One signed version of the list, and the signed key-set document beside it.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub version: u64,
    pub jws: String,
    pub entries: usize,
    pub issued_at: u64,
    /// The signed key-set document (`GET /.well-known/pyrogate-keyset`).
    pub keyset: String,
    pub keyset_version: u64,
    /// Keys with a limit in the list, and the live nodes their limits were divided by.
    pub limited_keys: usize,
    pub nodes: u64,
    /// What every `200` carries: the JWS and its `ETag`, made once per version and shared by
    /// every response (a long-poll fan-out sends the same bytes to every node).
    body: Bytes,
    etag_header: Option<HeaderValue>,
}

impl Published {
    fn new(
        version: u64,
        jws: String,
        entries: usize,
        issued_at: u64,
        keyset: String,
        keyset_version: u64,
    ) -> Self {
        Published {
            body: Bytes::from(jws.clone()),
            etag_header: HeaderValue::from_str(&format!("\"{version}\"")).ok(),
            version,
            jws,
            entries,
            issued_at,
            keyset,
            keyset_version,
            limited_keys: 0,
            nodes: 1,
        }
    }

    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

#[derive(Debug)]
pub struct Publisher {
    current: ArcSwap<Published>,
    version: watch::Sender<u64>,
    /// One republish at a time (request handlers and the ticker both republish), so a
    /// slower one holding an older snapshot can never publish over a newer one.
    republishing: tokio::sync::Mutex<()>,
    /// Places for pending long-polls (`revocations.max-long-polls`).
    long_polls: Arc<tokio::sync::Semaphore>,
}

impl Default for Publisher {
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl Publisher {
    pub fn new(max_long_polls: usize) -> Self {
        Publisher {
            current: ArcSwap::from_pointee(Published::default()),
            version: watch::channel(0).0,
            republishing: tokio::sync::Mutex::new(()),
            long_polls: Arc::new(tokio::sync::Semaphore::new(max_long_polls)),
        }
    }

    pub fn current(&self) -> Arc<Published> {
        self.current.load_full()
    }

    fn publish(&self, published: Published) {
        let version = published.version;
        self.current.store(Arc::new(published));
        self.version.send_replace(version);
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route(KEYSET_PATH, get(keyset))
        .route("/api/revocations", get(revocations))
}

/// Where the signed key-set document is served.
pub const KEYSET_PATH: &str = "/.well-known/pyrogate-keyset";

/// Re-reads the list from the store, signs it and the key-set document (with every published
/// key), and publishes both to readers and the list to this process's own verifier. The
/// key-set version moves whenever the published keys change. A replica whose keyring is older
/// than the shared database's loads the newer one first (see `Store::snapshot`).
pub async fn republish(state: &AppState) -> anyhow::Result<()> {
    for _ in 0..3 {
        match republish_once(state).await {
            Err(e) if matches!(e.downcast_ref(), Some(StoreError::StaleKeyring)) => {
                catch_up(state).await?;
            }
            done => return done,
        }
    }
    anyhow::bail!("the signing keys kept changing while the documents were being signed")
}

/// Installs the newest keyring without the work that follows a change (the replica that made
/// the change did it): for a replica that learns of a rotation while signing documents.
pub async fn catch_up(state: &AppState) -> anyhow::Result<()> {
    let revision = state.keyring_home.revision().await?;
    let ring = state.keyring_home.open().await?;
    install(state, ring, revision);
    Ok(())
}

/// Makes `ring` the authority's keyring (and its key set the verifier's), unless a newer one
/// from the database is already in place. Returns the published kids.
pub(super) fn install(state: &AppState, ring: Keyring, revision: Revision) -> Vec<String> {
    let revision = ring.version().map_or(revision, Revision::Version);
    let mut current = state.keyring.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(new), Some(old)) = (ring.version(), current.version())
        && new < old
    {
        return current.key_set().kids().map(str::to_owned).collect();
    }
    let keys = ring.key_set();
    let published: Vec<String> = keys.kids().map(str::to_owned).collect();
    state.metrics.signing_keys_published.set(keys.len() as u64);
    state.verifier.set_keys(keys);
    *current = ring;
    *state.keyring_seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(revision);
    published
}

async fn republish_once(state: &AppState) -> anyhow::Result<()> {
    let _one_at_a_time = state.publisher.republishing.lock().await;
    let (signers, active, keyring) = state
        .keyring
        .lock()
        .map(|ring| {
            (
                ring.published_signers(),
                ring.active().clone(),
                ring.version(),
            )
        })
        .map_err(|_| anyhow::anyhow!("keyring lock poisoned"))?;
    let kids = kid_list(&signers);
    // Read before the snapshot: a node that starts reporting in between moves the version
    // again (see `refresh`), so no share is published for long on a stale count.
    let nodes = live_nodes(&state.store, state.now()).await?;
    let snapshot = state.store.snapshot(&kids, keyring).await?;
    let (list, published) = sign_documents(
        snapshot,
        &signers,
        &active,
        &state.settings.auth.issuer,
        state.now(),
        nodes,
    )?;
    state.verifier.set_revocations(list.to_set());
    state.verifier.limiter().install(list.limits.as_ref());
    state.metrics.revocation_version.set(published.version);
    state
        .metrics
        .revocation_entries
        .set(published.entries as u64);
    state.metrics.revocation_issued_at.set(published.issued_at);
    state.publisher.publish(published);
    Ok(())
}

/// The published kids, sorted and comma-joined: what the key-set version is kept for.
pub fn kid_list(signers: &[Signer]) -> String {
    let mut kids: Vec<&str> = signers.iter().map(|s| s.kid()).collect();
    kids.sort_unstable();
    kids.join(",")
}

/// The nodes that share each key's limit: those that reported within the last
/// [`MISSED_INTERVALS`](super::nodes::MISSED_INTERVALS) intervals, at least 1 (the authority's
/// own ingest routes, or a fleet that does not report).
pub async fn live_nodes(store: &crate::authority::store::Store, now: u64) -> anyhow::Result<u64> {
    let nodes = store.list_nodes().await?;
    let live = nodes
        .iter()
        .filter(|n| super::nodes::state_of(n, now) != "not_reporting")
        .count() as u64;
    Ok(live.max(1))
}

/// Signs the revocation list (with the active key) and the key-set document (with every
/// published key). Used by the server and by `pyrogate signing-key export`. `nodes` is the
/// number of live nodes each key's limit is shared by.
pub fn sign_documents(
    snapshot: Snapshot,
    signers: &[Signer],
    active: &Signer,
    issuer: &str,
    now: u64,
    nodes: u64,
) -> anyhow::Result<(RevocationList, Published)> {
    let keyset = keyset::sign(
        &keyset::KeySetClaims {
            iss: issuer.to_owned(),
            ver: snapshot.keyset_version,
            iat: now,
            keys: KeySet::new(signers.iter().map(|s| s.verifying_key())).to_jwks(),
        },
        signers,
    )?;
    let list = RevocationList {
        iss: issuer.to_owned(),
        ver: snapshot.version,
        iat: now,
        entries: snapshot.entries,
        ksv: Some(snapshot.keyset_version),
        limits: (!snapshot.limits.is_empty()).then(|| LimitsSection {
            nodes: nodes.max(1),
            keys: snapshot.limits,
        }),
    };
    let mut published = Published::new(
        snapshot.version,
        active.encode(crate::core::token::REVOCATIONS_TYP, &list)?,
        list.entries.len(),
        now,
        keyset,
        snapshot.keyset_version,
    );
    if let Some(limits) = &list.limits {
        published.limited_keys = limits.keys.len();
        published.nodes = limits.nodes;
    }
    Ok((list, published))
}

/// Republishes if the store's version moved (a change by this or another process), or when
/// the signed documents are `revocations.resign-interval` old (their signed `iat` is how
/// nodes tell a current list from a replayed one); with `prune`, first drops entries that no
/// longer matter.
pub async fn refresh(state: &AppState, prune: bool) -> anyhow::Result<()> {
    let skew = state.settings.auth.clock_skew.as_secs();
    let now = state.now();
    let published: Vec<String> = state.verifier.keys().kids().map(str::to_owned).collect();
    let version = if prune {
        state.store.prune_sessions(now).await?;
        state.store.prune_revocations(now, skew, &published).await?
    } else {
        state.store.revocations_version().await?
    };
    let current = state.publisher.current();
    // Each node's share of a limit is the limit ÷ the live nodes: when their number changes,
    // move the version so long-polling nodes take the new share at once. Only while some key
    // is limited (otherwise the count is in no document).
    let version =
        if current.limited_keys > 0 && live_nodes(&state.store, now).await? != current.nodes {
            state.store.bump_revocations_version().await?
        } else {
            version
        };
    let resign = state
        .settings
        .authority
        .revocations_resign_interval
        .as_secs();
    if version != current.version || now.saturating_sub(current.issued_at) >= resign.max(1) {
        republish(state).await?;
    }
    Ok(())
}

async fn keyset(State(state): State<AppState>) -> Response {
    let current = state.publisher.current();
    (
        [
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_TYPE, "application/json"),
        ],
        current.keyset.clone(),
    )
        .into_response()
}

async fn jwks(State(state): State<AppState>) -> Response {
    let body = state.verifier.keys().to_jwks();
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(body)).into_response()
}

/// `?wait=SECONDS`, once at most; anything wrong is a 400 in the `{"errors":[…]}` shape.
fn wait_param(
    query: Option<&str>,
    max: std::time::Duration,
) -> Result<Option<std::time::Duration>, ApiError> {
    let mut waits = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "wait")
        .map(|(_, v)| v.into_owned());
    let Some(wait) = waits.next() else {
        return Ok(None);
    };
    if waits.next().is_some() {
        return Err(ApiError::bad_request("give wait once"));
    }
    crate::config::parse_duration(&wait)
        .map(|d| Some(d.min(max)))
        .ok_or_else(|| ApiError::bad_request("wait must be a number of seconds"))
}

/// The entity tags a request names in `If-None-Match`, copied out of the request: a held
/// poll keeps this instead of the request's headers, which share the connection's read buffer.
#[derive(Debug, Default)]
struct IfNoneMatch(Option<Box<str>>);

impl IfNoneMatch {
    fn of(headers: &HeaderMap) -> Self {
        let values: Vec<&str> = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        IfNoneMatch((!values.is_empty()).then(|| values.join(",").into_boxed_str()))
    }

    fn matches(&self, etag: &str) -> bool {
        self.0
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag || t == "*")
    }
}

/// `GET /api/revocations`. Not an `async fn`: what it needs from the request and the state is
/// taken here, and the future it returns — which is what a held poll is, for up to a minute,
/// on every node's connection — keeps only the publisher, the shutdown token, the gauge and
/// the tags. (The request's URI and headers are slices of the connection's read buffer: a held
/// poll must not keep them.)
fn revocations(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> impl Future<Output = Result<Response, ApiError>> + Send {
    let wait = wait_param(
        request.uri().query(),
        state.settings.authority.revocations_max_wait,
    );
    let tags = IfNoneMatch::of(request.headers());
    drop(request);
    let publisher = state.publisher.clone();
    let life = state.life.clone();
    let metrics = state.metrics.clone();
    drop(state);
    async move {
        match Poll::start(&publisher, &life, &metrics, tags, wait?) {
            Start::Now(current, tags) => Ok(answer(&current, &tags).map(Body::from)),
            Start::Wait(poll) => Ok(poll.answer().await.map(Body::from)),
            // Each held poll is a connection and a task: past the cap, shed it clearly (the
            // node backs off and polls again) instead of holding all it is sent.
            Start::NoPlace => Err(ApiError::Unavailable(
                "too many pending long-polls; retry shortly".into(),
            )),
        }
    }
}

/// What `GET /api/revocations` answers with the list `current` in force: `304` when the
/// request's tags name it, else `200` with the signed list.
fn answer(current: &Published, tags: &IfNoneMatch) -> Response<Bytes> {
    if tags.matches(&current.etag()) {
        return not_modified(current);
    }
    let mut response = Response::new(current.body.clone());
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwt"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(etag) = &current.etag_header {
        h.insert(header::ETAG, etag.clone());
    }
    response
}

/// One held long-poll: everything it keeps while it waits, and nothing of its request.
struct Poll {
    publisher: Arc<Publisher>,
    life: Lifecycle,
    metrics: Arc<Metrics>,
    tags: IfNoneMatch,
    changes: watch::Receiver<u64>,
    /// The version the request named.
    seen: u64,
    wait: Duration,
    /// Its place under `revocations.max-long-polls`.
    _place: tokio::sync::OwnedSemaphorePermit,
}

/// How a poll for the list starts.
enum Start {
    /// Answer at once: the list in force, to be compared with the request's tags.
    Now(Arc<Published>, IfNoneMatch),
    /// Hold it until a new version, the end of its wait or shutdown.
    Wait(Poll),
    /// It would wait, but `revocations.max-long-polls` are held already.
    NoPlace,
}

impl Poll {
    /// The one decision the route and the server shell ([`HeldPolls`]) both make: a poll is
    /// held only if it names the list in force and asks to wait, and only with a place under
    /// the cap. It subscribes before reading the list, so a change in between is not missed.
    fn start(
        publisher: &Arc<Publisher>,
        life: &Lifecycle,
        metrics: &Arc<Metrics>,
        tags: IfNoneMatch,
        wait: Option<Duration>,
    ) -> Start {
        let changes = publisher.version.subscribe();
        let current = publisher.current();
        let wait = match wait {
            Some(wait) if !wait.is_zero() && tags.matches(&current.etag()) => wait,
            _ => return Start::Now(current, tags),
        };
        let Ok(place) = publisher.long_polls.clone().try_acquire_owned() else {
            return Start::NoPlace;
        };
        Start::Wait(Poll {
            publisher: publisher.clone(),
            life: life.clone(),
            metrics: metrics.clone(),
            tags,
            changes,
            seen: current.version,
            wait,
            _place: place,
        })
    }

    /// Waits for a new version, the end of the wait or shutdown, then answers.
    async fn answer(mut self) -> Response<Bytes> {
        let _counted = HeldPoll::count(&self.metrics.revocation_long_polls);
        let (seen, changes) = (self.seen, &mut self.changes);
        let changed = async {
            loop {
                if *changes.borrow_and_update() != seen {
                    return;
                }
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(self.wait, changed) => {}
            () = self.life.stopping() => {}
        }
        answer(&self.publisher.current(), &self.tags)
    }
}

/// Held long-polls answered by the server shell before hyper ([`Hold`]): the same poll as the
/// route's, taken only when it will wait — the request names the list in force, asks to
/// wait, and there is a place for it. Anything else (a new version to send at once, a bad
/// `wait`, no place left) is left to the route, which answers it as before.
pub struct HeldPolls {
    publisher: Arc<Publisher>,
    life: Lifecycle,
    metrics: Arc<Metrics>,
    max_wait: Duration,
}

impl HeldPolls {
    pub fn new(state: &AppState) -> Self {
        HeldPolls {
            publisher: state.publisher.clone(),
            life: state.life.clone(),
            metrics: state.metrics.clone(),
            max_wait: state.settings.authority.revocations_max_wait,
        }
    }
}

impl Hold for HeldPolls {
    fn hold(&self, uri: &Uri, headers: &HeaderMap) -> Option<Held> {
        if uri.path() != "/api/revocations" {
            return None;
        }
        let wait = wait_param(uri.query(), self.max_wait).ok()?;
        let tags = IfNoneMatch::of(headers);
        match Poll::start(&self.publisher, &self.life, &self.metrics, tags, wait) {
            Start::Wait(poll) => Some(Box::pin(poll.answer())),
            Start::Now(..) | Start::NoPlace => None,
        }
    }
}

/// One held long-poll in `pyrogate_revocation_long_polls`, for as long as it lives.
struct HeldPoll<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> HeldPoll<'a> {
    fn count(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        HeldPoll(gauge)
    }
}

impl Drop for HeldPoll<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn not_modified(current: &Published) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    if let Some(etag) = &current.etag_header {
        response.headers_mut().insert(header::ETAG, etag.clone());
    }
    response
}
