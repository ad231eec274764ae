//! The ingest node's side of distribution: keep the verifier's key set and revocation set in
//! step with the authority, off the request path.
//!
//! - **Start-up**: load the last good copies from `<storage-path>/cache` (`jwks.json`,
//!   `revocations.jwt`), verifying the list's signature again, so a node restarted while the
//!   authority is down still refuses revoked keys.
//! - **Steady state**: long-poll `GET /api/revocations?wait=…` with `If-None-Match`; the
//!   authority answers as soon as the list changes. Re-fetch the JWKS every
//!   `sync.jwks-interval`, at once when the list is signed by a key we don't know (the authority
//!   rotated), and soon after a request presented an unknown `kid`.
//! - **Every list is verified** against the key set before it is used, and a list with a lower
//!   version than the one in force is ignored, so a stale mirror or a replayed response can't
//!   un-revoke a key.
//! - **Staleness**: the time since the last successful contact is exported; with
//!   `sync.max-staleness` set, pushes are refused once it is exceeded. The default keeps
//!   serving with the last good copy: an authority outage must not become an ingestion outage.
//! - **Air-gapped** nodes use `--jwks-file` and `--revocations-file` instead, re-read when they
//!   change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};

use crate::core::jwk::{JwkSet, KeySet};
use crate::core::revocation::{MAX_LIST_BYTES, RevocationList};
use crate::core::verifier::{Verifier, VerifyError};
use crate::edge::client::{HttpClient, http_client};
use crate::edge::metrics::Metrics;

const JWKS_FILE: &str = "jwks.json";
const LIST_FILE: &str = "revocations.jwt";
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
}

pub struct Syncer {
    config: SyncConfig,
    verifier: Arc<Verifier>,
    /// Only with an authority to talk to.
    client: Option<HttpClient>,
    status: Arc<SyncStatus>,
    metrics: Arc<Metrics>,
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
        Syncer {
            config,
            verifier,
            client,
            status,
            metrics,
        }
    }

    /// Loads whatever is on disk: the cache of an authority-fed node, or an air-gapped node's
    /// files. Errors only for an air-gapped node whose files are unusable.
    pub fn load_from_disk(&self) -> anyhow::Result<()> {
        match &self.config.source {
            Source::Authority { cache_dir, .. } => {
                let jwks = cache_dir.join(JWKS_FILE);
                if !jwks.exists() {
                    return Ok(());
                }
                match self.load_files(&jwks, Some(&cache_dir.join(LIST_FILE))) {
                    Ok(()) => {
                        tracing::info!(dir = %cache_dir.display(), "loaded the cached key set and revocation list")
                    }
                    Err(err) => {
                        tracing::warn!(error = format!("{err:#}"), "ignoring an unusable cache")
                    }
                }
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
                Some(
                    RevocationList::verify(&text, &keys, &self.config.issuer)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                )
            }
            None => None,
        };
        self.install_keys(keys);
        if let Some(list) = parsed {
            self.install_list(&list);
        }
        Ok(())
    }

    fn install_keys(&self, keys: KeySet) {
        self.metrics.signing_keys_published.set(keys.len() as u64);
        self.verifier.set_keys(keys);
        self.status.keys_loaded.store(true, Ordering::Relaxed);
    }

    /// Installs a verified list unless it is older than the one in force.
    fn install_list(&self, list: &RevocationList) -> bool {
        let current = self.verifier.revocations();
        let have_list = self.status.list_issued_at.load(Ordering::Relaxed) > 0;
        if have_list && list.ver < current.version() {
            tracing::warn!(
                offered = list.ver,
                current = current.version(),
                "ignoring a revocation list older than the one in force"
            );
            return false;
        }
        self.verifier.set_revocations(list.to_set());
        self.status.list_version.store(list.ver, Ordering::Relaxed);
        self.status
            .list_issued_at
            .store(list.iat, Ordering::Relaxed);
        self.metrics.revocation_version.set(list.ver);
        self.metrics
            .revocation_entries
            .set(list.entries.len() as u64);
        self.metrics.revocation_issued_at.set(list.iat);
        true
    }

    fn contacted(&self) {
        let t = self.now();
        self.status.last_success.store(t, Ordering::Relaxed);
        self.metrics.sync_last_success.set(t);
        self.status.stale.store(false, Ordering::Relaxed);
    }

    fn check_staleness(&self) {
        if let Some(max) = self.config.max_staleness {
            let last = self.status.last_success.load(Ordering::Relaxed);
            let stale = self.now().saturating_sub(last) > max.as_secs();
            if stale && !self.status.stale.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    max_staleness_secs = max.as_secs(),
                    "the authority has been unreachable for too long; refusing pushes until it is back"
                );
            }
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
        let mut next_jwks = 0u64;
        let mut last_kid_fetch = 0u64;
        loop {
            let t = self.now();
            let wanted = self.verifier.take_unknown_key_seen()
                && t >= last_kid_fetch + UNKNOWN_KID_COOLDOWN.as_secs();
            if t >= next_jwks || wanted || !self.status.keys_loaded.load(Ordering::Relaxed) {
                last_kid_fetch = t;
                match self.fetch_jwks(base, cache_dir).await {
                    Ok(()) => next_jwks = t + self.config.jwks_interval.as_secs().max(1),
                    Err(err) => {
                        self.failed(&err);
                        self.check_staleness();
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
            }
            let poll = self.poll_list(base, cache_dir);
            let result = tokio::select! {
                r = poll => r,
                // A request saw an unknown kid: cut the long-poll short to fetch the JWKS.
                _ = self.verifier.unknown_key_notified() => Ok(()),
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

    async fn fetch_jwks(&self, base: &str, cache_dir: &Path) -> anyhow::Result<()> {
        let url = format!("{base}/.well-known/jwks.json");
        let (status, _, body) = self.get(&url, None, Duration::from_secs(10)).await?;
        if status != StatusCode::OK {
            anyhow::bail!("GET {url}: {status}");
        }
        let text = std::str::from_utf8(&body).context("JWKS is not UTF-8")?;
        let keys = parse_jwks(text).with_context(|| format!("GET {url}"))?;
        let path = cache_dir.join(JWKS_FILE);
        crate::edge::files::write_atomic(&path, text.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
        self.install_keys(keys);
        self.contacted();
        Ok(())
    }

    async fn poll_list(&self, base: &str, cache_dir: &Path) -> anyhow::Result<()> {
        let have = self.status.list_issued_at.load(Ordering::Relaxed) > 0;
        let etag =
            have.then(|| format!("\"{}\"", self.status.list_version.load(Ordering::Relaxed)));
        let wait = self.config.wait.as_secs();
        let url = if have {
            format!("{base}/api/revocations?wait={wait}")
        } else {
            format!("{base}/api/revocations")
        };
        let timeout = self.config.wait + Duration::from_secs(10);
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
                        self.fetch_jwks(base, cache_dir).await?;
                        RevocationList::verify(text, &self.verifier.keys(), &self.config.issuer)
                    }
                    other => other,
                }
                .map_err(|e| {
                    anyhow::anyhow!("the authority's revocation list does not verify: {e}")
                })?;
                if self.install_list(&list) {
                    let path = cache_dir.join(LIST_FILE);
                    crate::edge::files::write_atomic(&path, text.as_bytes(), 0o644)
                        .with_context(|| format!("writing {}", path.display()))?;
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
