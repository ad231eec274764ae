//! The ingest node's side of distribution: keep the verifier's key set and revocation set in
//! step with the authority, off the request path, trusting nothing that does not verify.
//!
//! - **The key set is authenticated**, not fetched: the node pulls the signed key-set document
//!   (`GET /.well-known/pyrogate-keyset`, see [`crate::core::keyset`]) and accepts it only if
//!   it chains to what the node already trusts — the kids pinned with
//!   `authority.trusted-keys` at first contact, the set in force after that — and has a higher
//!   version. Whoever answers at the authority's address cannot add a key. A refused document
//!   leaves the set in force, is counted in `pyrogate_keyset_refused_total`, and is logged once
//!   per distinct reason.
//! - **Start-up**: the cache (`<storage-path>/cache`) holds the chain of accepted key-set
//!   documents and the last revocation list; the chain is replayed from the trust anchor and
//!   the list verified against its result, so a hand-edited cache is refused like a forged
//!   answer, and a node restarted while the authority is down still refuses revoked keys.
//!   The node never starts *less* sure than it was: a chain whose newest document does not
//!   verify (no falling back to an older key set), a list signed for a newer key set than the
//!   chain's or by a key it does not hold, or a cache below the high-water marks
//!   ([`marks`]) is not put in force. The node then holds no keys and is not ready (`/ready`
//!   says why in `cacheRefused`) until the authority answers; the verified part of the chain
//!   stays the trust the authority's answer must chain to, so it recovers by itself.
//! - **Steady state**: long-poll `GET /api/revocations?wait=…` with `If-None-Match`; the
//!   authority answers as soon as the list changes. Re-fetch the key set every
//!   `sync.jwks-interval`, at once when the list is signed by a key we don't know (the authority
//!   rotated), and soon after a request presented an unknown `kid`.
//! - **Every list is verified** against the key set in force before it is used, a list with a
//!   lower version than the one in force is ignored, and the list is checked again whenever the
//!   key set changes.
//! - **Freshness is signed**: the authority re-signs the list every
//!   `revocations.resign-interval`; the node fetches it whole once its signed `iat` ages, and
//!   `sync.max-staleness` is measured from that `iat` — a 304 proves nothing, and a list
//!   loaded from the cache is as old as its signature, from the first second. `/ready`
//!   (`revocationsAgeSeconds`) and `pyrogate_revocation_list_age_seconds` show that age.
//!   Until a verified list is in force the node is not ready and refuses pushes (503).
//! - **Air-gapped** nodes use `--jwks-file` and `--revocations-file` instead, re-read when they
//!   change; the operator who places the files is the trust anchor.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};

use crate::core::clock::Stopwatch;
use crate::core::jwk::{JwkSet, KeySet};
use crate::core::keyset::KeySetClaims;
use crate::core::revocation::{MAX_LIST_BYTES, RevocationList};
use crate::core::verifier::{Verifier, VerifyError};
use crate::edge::client::{HttpClient, http_client};
use crate::edge::metrics::Metrics;

mod keyset;
mod marks;

use marks::{Mark, Marks};

const CHAIN_FILE: &str = "keyset-chain.json";
const LIST_FILE: &str = "revocations.jwt";
/// Where the authority serves the signed key-set document.
pub const KEYSET_PATH: &str = "/.well-known/pyrogate-keyset";
/// Accepted key-set documents kept in the cache, oldest dropped first. Replay needs the chain
/// from the pin: a node whose pinned key is older than the 64 documents kept (64 rotations or
/// retirements) cannot start from its cache and must be re-pinned to a current kid.
const MAX_CHAIN: usize = 64;
/// Shortest pause between JWKS fetches triggered by unknown `kid`s.
const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(5);

/// Where the key set and revocation list come from.
#[derive(Debug, Clone)]
pub enum Source {
    Authority {
        url: String,
        cache_dir: PathBuf,
        /// TLS towards the authority (`authority.tls-*`), for https URLs.
        tls: Arc<rustls::ClientConfig>,
    },
    Files {
        jwks: PathBuf,
        revocations: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub source: Source,
    pub issuer: String,
    pub wait: Duration,
    pub jwks_interval: Duration,
    pub max_staleness: Option<Duration>,
    /// `authority.trusted-keys`: what the first key set must be signed by.
    pub pins: BTreeSet<String>,
    /// No pins: accept the first key set on its own signatures (TLS-authenticated authority,
    /// or `authority.insecure-trust-first-use`).
    pub first_use: bool,
}

/// What `/ready` and `/metrics` report.
#[derive(Debug, Default)]
pub struct SyncStatus {
    /// A key set is loaded (from the authority, the cache or a file).
    pub keys_loaded: AtomicBool,
    /// Unix time of the last successful contact with the source.
    pub last_success: AtomicU64,
    pub list_version: AtomicU64,
    pub list_issued_at: AtomicU64,
    /// Set when `sync.max-staleness` is exceeded.
    pub stale: Arc<AtomicBool>,
    /// Set while no verified revocation list is in force (authority-fed nodes).
    pub unverified: Arc<AtomicBool>,
    pub keyset_version: AtomicU64,
    /// Why the last key set offered was refused, until one is accepted.
    pub keyset_refusal: Mutex<Option<String>>,
    /// Why the cache was not put in force at start-up, until the authority's documents are.
    pub cache_refusal: Mutex<Option<String>>,
}

impl SyncStatus {
    /// Seconds since the list in force was signed, by `now`; `None` without a list.
    pub fn revocations_age(&self, now: u64) -> Option<u64> {
        let signed = self.list_issued_at.load(Ordering::Relaxed);
        (signed > 0).then(|| now.saturating_sub(signed))
    }
}

pub struct Syncer {
    config: SyncConfig,
    verifier: Arc<Verifier>,
    /// Only with an authority to talk to.
    client: Option<HttpClient>,
    status: Arc<SyncStatus>,
    metrics: Arc<Metrics>,
    /// The key set in force and the chain of documents that led to it.
    trusted: Mutex<Chain>,
    /// The revocation list in force, as signed, to check again when the key set changes.
    list_text: Mutex<Option<String>>,
    /// The highest documents ever accepted ([`marks`]): floors for the cache at start-up and
    /// for what the authority offers.
    marks: Mutex<Marks>,
    /// Where they are kept; only with an authority.
    marks_path: Option<PathBuf>,
}

#[derive(Default)]
struct Chain {
    in_force: Option<(KeySetClaims, KeySet)>,
    documents: Vec<String>,
    /// The chain came from a cache that was not put in force: `in_force` is only what the
    /// authority's next key set must chain to, and the verifier holds no keys yet.
    withheld: bool,
}

impl Syncer {
    /// The verifier's clock: tests move it to check `sync.max-staleness`.
    fn now(&self) -> u64 {
        self.verifier.clock().now()
    }

    pub fn new(
        config: SyncConfig,
        verifier: Arc<Verifier>,
        status: Arc<SyncStatus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let client = match &config.source {
            Source::Authority { tls, .. } => Some(http_client(Duration::from_secs(5), tls.clone())),
            Source::Files { .. } => None,
        };
        let marks_path = match &config.source {
            Source::Authority { cache_dir, .. } => Some(marks::marks_path(cache_dir)),
            Source::Files { .. } => None,
        };
        Syncer {
            config,
            verifier,
            client,
            status,
            metrics,
            trusted: Mutex::default(),
            list_text: Mutex::default(),
            marks: Mutex::default(),
            marks_path,
        }
    }

    fn marks(&self) -> Marks {
        *self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Raises the marks to `to` and writes them when they moved. Callers raise them only once
    /// the documents are in the cache, so the cache is never below its own marks.
    fn raise_marks(&self, to: Marks) {
        let Some(path) = &self.marks_path else { return };
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let raised = marks.max(to);
        if raised == *marks {
            return;
        }
        *marks = raised;
        if let Err(e) = raised.write(path) {
            tracing::error!(
                file = %path.display(),
                error = %e,
                "can't write the high-water marks; a cache rolled back to this point would not be noticed at the next start"
            );
        }
    }

    /// Loads whatever is on disk: the cache of an authority-fed node, or an air-gapped node's
    /// files. Errors only for an air-gapped node whose files are unusable.
    pub fn load_from_disk(&self) -> anyhow::Result<()> {
        match &self.config.source {
            Source::Authority { cache_dir, .. } => {
                self.load_cache(cache_dir);
                Ok(())
            }
            Source::Files { jwks, revocations } => {
                self.load_files(jwks, revocations.as_deref())?;
                self.status
                    .last_success
                    .store(self.now(), Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn load_files(&self, jwks: &Path, list: Option<&Path>) -> anyhow::Result<()> {
        let text =
            std::fs::read_to_string(jwks).with_context(|| format!("reading {}", jwks.display()))?;
        let keys = parse_jwks(&text).with_context(|| format!("{}", jwks.display()))?;
        let parsed = match list.filter(|p| p.exists()) {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let list = RevocationList::verify(&text, &keys, &self.config.issuer)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Some((list, text))
            }
            None => None,
        };
        self.install_keys(keys);
        if let Some((list, text)) = parsed {
            self.install_list(&list, &text);
        }
        Ok(())
    }

    fn install_keys(&self, keys: KeySet) {
        self.metrics.signing_keys_published.set(keys.len() as u64);
        self.verifier.set_keys(keys);
        self.status.keys_loaded.store(true, Ordering::Relaxed);
    }

    /// Installs a verified list unless it is older than the one in force.
    /// `list_version` is a floor that outlives a dropped list, so an older list still signed
    /// by a trusted key can never be replayed in; a list signed in the future (beyond the
    /// clock skew) is refused, so it can't stay "fresh" for `sync.max-staleness`.
    fn install_list(&self, list: &RevocationList, text: &str) -> bool {
        let floor = self
            .status
            .list_version
            .load(Ordering::Relaxed)
            .max(self.marks().revocations.ver);
        if list.ver < floor {
            tracing::warn!(
                offered = list.ver,
                current = floor,
                "ignoring a revocation list older than the one in force"
            );
            return false;
        }
        let skew = self.verifier.config().clock_skew_secs;
        if list.iat > self.now().saturating_add(skew) {
            tracing::warn!(
                iat = list.iat,
                "ignoring a revocation list signed in the future"
            );
            return false;
        }
        self.verifier.set_revocations(list.to_set());
        self.verifier.limiter().install(list.limits.as_ref());
        *self.list_text.lock().unwrap_or_else(|e| e.into_inner()) = Some(text.to_owned());
        self.status.unverified.store(false, Ordering::Relaxed);
        self.status.list_version.store(list.ver, Ordering::Relaxed);
        self.status
            .list_issued_at
            .store(list.iat, Ordering::Relaxed);
        self.metrics.revocation_version.set(list.ver);
        self.metrics
            .revocation_entries
            .set(list.entries.len() as u64);
        self.metrics.revocation_issued_at.set(list.iat);
        // The flag follows the list in force at once, not at the end of the exchange.
        self.check_staleness();
        true
    }

    fn contacted(&self) {
        let t = self.now();
        self.status.last_success.store(t, Ordering::Relaxed);
        self.metrics.sync_last_success.set(t);
        self.check_staleness();
    }

    /// Stale when the list in force was signed longer than `sync.max-staleness` ago: the signed
    /// `iat` is the evidence, not the last answer from the network.
    fn check_staleness(&self) {
        let now = self.now();
        let age = self.status.revocations_age(now);
        self.metrics.revocation_age.set(age.unwrap_or(now));
        let Some(max) = self.config.max_staleness else {
            return;
        };
        let stale = age.is_none_or(|age| age > max.as_secs());
        let was = self.status.stale.swap(stale, Ordering::Relaxed);
        if stale && !was {
            tracing::error!(
                max_staleness_secs = max.as_secs(),
                "the revocation list in force is older than sync.max-staleness; refusing pushes until a current one arrives"
            );
        } else if was && !stale {
            tracing::info!("a current revocation list is in force again; accepting pushes");
        }
    }

    /// Runs until the process ends.
    pub async fn run(self) {
        match self.config.source.clone() {
            Source::Authority { url, cache_dir, .. } => self.run_authority(&url, &cache_dir).await,
            Source::Files { jwks, revocations } => {
                self.run_files(&jwks, revocations.as_deref()).await
            }
        }
    }

    async fn run_files(&self, jwks: &Path, list: Option<&Path>) {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let stamp = || (mtime(jwks), list.and_then(mtime));
        let mut seen: (Option<SystemTime>, Option<SystemTime>) = stamp();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let current = stamp();
            if current != seen {
                seen = current;
                match self.load_files(jwks, list) {
                    Ok(()) => {
                        self.contacted();
                        tracing::info!("reloaded the key set and revocation list files");
                    }
                    Err(err) => tracing::error!(
                        error = format!("{err:#}"),
                        "keeping the previous files' contents"
                    ),
                }
            }
        }
    }

    async fn run_authority(&self, base: &str, cache_dir: &Path) {
        let mut backoff = Duration::from_secs(1);
        let mut next_keyset = 0u64;
        // Real elapsed time, not the node's clock: this only paces requests.
        let mut last_keyset_fetch: Option<Stopwatch> = None;
        loop {
            let t = self.now();
            let cooled = last_keyset_fetch.is_none_or(|s| s.elapsed() >= UNKNOWN_KID_COOLDOWN);
            // Within the cooldown the flag stays set: the fetch it asks for happens when the
            // cooldown ends, however many requests named unknown kids meanwhile.
            let wanted = cooled && self.verifier.take_unknown_key_seen();
            let keys_loaded = self.status.keys_loaded.load(Ordering::Relaxed);
            if t >= next_keyset || wanted || !keys_loaded {
                last_keyset_fetch = Some(Stopwatch::start());
                match self.fetch_keyset(base, cache_dir).await {
                    Ok(()) => next_keyset = t + self.config.jwks_interval.as_secs().max(1),
                    Err(err) => {
                        self.failed(&err);
                        self.check_staleness();
                        if !keys_loaded {
                            // Nothing to check a list with yet.
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                            continue;
                        }
                        // Keep the set in force and keep following the list meanwhile.
                        next_keyset = t + self.config.jwks_interval.as_secs().clamp(1, 30);
                    }
                }
            }
            let cooldown_left = last_keyset_fetch
                .map(|s| UNKNOWN_KID_COOLDOWN.saturating_sub(s.elapsed()))
                .unwrap_or_default();
            let poll = self.poll_list(base, cache_dir);
            let result = tokio::select! {
                r = poll => r,
                // A request saw an unknown kid: cut the long-poll short to fetch the key set.
                _ = self.verifier.unknown_key_notified(), if cooled => Ok(()),
                // Within the cooldown, at most one restart when it ends.
                () = tokio::time::sleep(cooldown_left), if !cooled => Ok(()),
            };
            match result {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(err) => {
                    self.failed(&err);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            self.check_staleness();
        }
    }

    /// How old the signed list in force may get before the node fetches it whole.
    fn refresh_after(&self) -> Duration {
        match self.config.max_staleness {
            Some(max) => (max / 3).max(Duration::from_secs(1)),
            None => Duration::from_secs(300),
        }
    }

    fn failed(&self, err: &anyhow::Error) {
        self.metrics.sync_failures.inc();
        tracing::warn!(
            error = format!("{err:#}"),
            "can't reach the authority; serving with the last good key set and revocation list"
        );
    }

    async fn get(
        &self,
        url: &str,
        etag: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<(StatusCode, Option<String>, Bytes)> {
        let mut req = Request::get(url);
        if let Some(tag) = etag {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .context("building the request")?;
        let client = self
            .client
            .as_ref()
            .context("this node reads files and has no authority to ask")?;
        let response = tokio::time::timeout(timeout, client.request(req))
            .await
            .context("timed out")?
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = tokio::time::timeout(
            timeout,
            Limited::new(response.into_body(), MAX_LIST_BYTES).collect(),
        )
        .await
        .context("timed out reading the response")?
        .map_err(|e| anyhow::anyhow!("reading the response of GET {url}: {e}"))?
        .to_bytes();
        Ok((status, etag, body))
    }

    async fn poll_list(&self, base: &str, cache_dir: &Path) -> anyhow::Result<()> {
        let issued = self.status.list_issued_at.load(Ordering::Relaxed);
        // Once the signed list in force ages, ask for it whole: only a freshly signed `iat`
        // shows it is still current.
        let have = issued > 0 && self.now().saturating_sub(issued) < self.refresh_after().as_secs();
        let etag =
            have.then(|| format!("\"{}\"", self.status.list_version.load(Ordering::Relaxed)));
        let wait = self.config.wait.as_secs();
        let url = if have {
            format!("{base}/api/revocations?wait={wait}")
        } else {
            format!("{base}/api/revocations")
        };
        let timeout = self.config.wait + Duration::from_secs(10);
        let started = Stopwatch::start();
        let (status, _, body) = self.get(&url, etag.as_deref(), timeout).await?;
        match status {
            StatusCode::NOT_MODIFIED => {
                self.contacted();
                Ok(())
            }
            StatusCode::OK => {
                let text = std::str::from_utf8(&body).context("revocation list is not UTF-8")?;
                let list = match RevocationList::verify(
                    text,
                    &self.verifier.keys(),
                    &self.config.issuer,
                ) {
                    Err(VerifyError::UnknownKey) => {
                        // Signed by a key we don't have yet: the authority rotated.
                        self.fetch_keyset(base, cache_dir).await?;
                        RevocationList::verify(text, &self.verifier.keys(), &self.config.issuer)
                    }
                    other => other,
                }
                .map_err(|e| {
                    anyhow::anyhow!("the authority's revocation list does not verify: {e}")
                })?;
                if let Some(ksv) = list.ksv
                    && ksv > self.status.keyset_version.load(Ordering::Relaxed)
                {
                    // The authority's keys changed (a rotation or a retirement): follow now.
                    // The list belongs to that key set; until it is in force the list is not
                    // installed (it may no longer revoke tokens of a key this node still
                    // trusts), and the list in force stays.
                    let followed = self.fetch_keyset(base, cache_dir).await;
                    let have = self.status.keyset_version.load(Ordering::Relaxed);
                    if have < ksv {
                        let why = followed
                            .err()
                            .map(|e| format!(": {e:#}"))
                            .unwrap_or_default();
                        anyhow::bail!(
                            "the revocation list belongs to key set version {ksv}, but only version {have} is trusted{why}"
                        );
                    }
                }
                let unchanged = self
                    .list_text
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_deref()
                    == Some(text);
                if unchanged {
                    // A static mirror answers at once, whatever `?wait=`: pace the polls.
                    self.contacted();
                    let rest = self.config.wait.saturating_sub(started.elapsed());
                    tokio::time::sleep(rest).await;
                    return Ok(());
                }
                if self.install_list(&list, text) {
                    let path = cache_dir.join(LIST_FILE);
                    crate::edge::files::write_atomic(&path, text.as_bytes(), 0o644)
                        .with_context(|| format!("writing {}", path.display()))?;
                    self.raise_marks(Marks {
                        revocations: Mark {
                            ver: list.ver,
                            iat: list.iat,
                        },
                        ..Marks::default()
                    });
                    self.cache_recovered();
                    tracing::debug!(
                        version = list.ver,
                        entries = list.entries.len(),
                        "revocation list updated"
                    );
                }
                self.contacted();
                Ok(())
            }
            other => anyhow::bail!("GET {url}: {other}"),
        }
    }
}

fn parse_jwks(text: &str) -> anyhow::Result<KeySet> {
    let set: JwkSet = serde_json::from_str(text).context("not a JWK Set")?;
    Ok(KeySet::from_jwks(&set)?)
}
