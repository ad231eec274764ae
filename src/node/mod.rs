//! `pyrogate ingest`: a stateless ingest node. It verifies keys locally with the key set and
//! revocation list that [`crate::node::sync`] keeps current, and forwards pushes upstream. Its only
//! disk state lives under `storage-path`: the cache of the last good key set and list, and the
//! spool.

mod errors;
pub mod ingest;
pub mod report;
pub mod sync;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;

use axum::extract::State;

use axum::response::IntoResponse;

use crate::config::Settings;
use crate::core::clock::Clock;
use crate::core::jwk::KeySet;
use crate::core::verifier::Verifier;
use crate::edge::error::ApiError;
use crate::edge::health;
use crate::edge::metrics::Metrics;
use crate::edge::server::{Lifecycle, Placement, Server};
use ingest::IngestState;
use sync::{Source, SyncConfig, SyncStatus, Syncer};

#[derive(Clone)]
struct NodeState {
    status: Arc<SyncStatus>,
    metrics: Arc<Metrics>,
    verifier: Arc<Verifier>,
    auth_enabled: bool,
    clock: Arc<dyn Clock>,
}

pub struct IngestNode {
    server: Server,
    syncer: Option<Syncer>,
    /// With `authority.node-key`: the fleet reports.
    reporter: Option<report::reporter::Reporter>,
    ingest: IngestState,
    status: Arc<SyncStatus>,
    verifier: Arc<Verifier>,
}

impl IngestNode {
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let node = &settings.node;
        let source = match (&node.authority_url, &node.jwks_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("set either authority-url or jwks-file (air-gapped), not both")
            }
            (Some(url), None) => Some(Source::Authority {
                url: url.clone(),
                cache_dir: settings.server.storage_path.join("cache"),
                tls: crate::edge::tls::client_config(&node.authority_tls)?,
            }),
            (None, Some(jwks)) => Some(Source::Files {
                jwks: jwks.clone(),
                revocations: node.revocations_file.clone(),
            }),
            (None, None) if !settings.auth.ingestion_enabled => None,
            (None, None) => anyhow::bail!(
                "auth.ingestion.enabled needs keys to check: set authority-url (--authority-url URL), or jwks-file and revocations-file for an air-gapped node"
            ),
        };
        if let Some(Source::Authority { url, cache_dir, .. }) = &source {
            if node.trusted_keys.is_empty()
                && !node.insecure_trust_first_use
                && url.starts_with("http://")
            {
                anyhow::bail!(
                    "authority.url {url} is plain http and no trust anchor is set: whoever can answer at that address could publish signing keys and mint Admin keys. \
                     Pin the authority's signing key with --authority.trusted-keys KID (the kid `pyrogate signing-key list` prints on the authority, also in its start-up log), \
                     or reach the authority over https; for a lab only, --authority.insecure-trust-first-use trusts the first key set it sees"
                );
            }
            if node.trusted_keys.is_empty() {
                tracing::warn!(%url, "no authority.trusted-keys: trusting the first key set this authority serves (pin it for production)");
            }
            std::fs::create_dir_all(cache_dir)
                .with_context(|| format!("creating {}", cache_dir.display()))?;
        }
        let authority_fed = matches!(source, Some(Source::Authority { .. }));
        let metrics = Arc::new(Metrics::new());
        let verifier = Arc::new(Verifier::new(
            settings.auth.verifier_config(),
            KeySet::default(),
            clock.clone(),
        ));
        verifier.set_cache_counters(metrics.cache_counters());
        let ingest = IngestState::new(
            &settings.ingest,
            settings.auth.ingestion_enabled,
            metrics.clone(),
            clock.clone(),
        )?;
        let status = Arc::new(SyncStatus {
            stale: ingest.stale_flag(),
            unverified: ingest.unverified_flag(),
            ..SyncStatus::default()
        });
        // An authority-fed node with auth on refuses pushes until a verified list is in force:
        // "no list" must never read as "nothing is revoked".
        status.unverified.store(
            authority_fed && settings.auth.ingestion_enabled,
            Ordering::Relaxed,
        );
        let syncer = match source {
            Some(source) => {
                let syncer = Syncer::new(
                    SyncConfig {
                        source,
                        issuer: settings.auth.issuer.clone(),
                        wait: node.sync_wait,
                        jwks_interval: node.sync_jwks_interval,
                        max_staleness: node.sync_max_staleness,
                        pins: node.trusted_keys.iter().cloned().collect(),
                        first_use: node.trusted_keys.is_empty(),
                    },
                    verifier.clone(),
                    status.clone(),
                    metrics.clone(),
                );
                syncer.load_from_disk()?;
                Some(syncer)
            }
            None => None,
        };
        let reporter = match (&node.node_key, &node.authority_url) {
            (Some(key), Some(url)) => {
                let tally = ingest.start_tally();
                tracing::info!(node = %node.name, interval = ?node.report_interval, "reporting to the authority");
                Some(report::reporter::Reporter::new(
                    report::reporter::ReporterConfig {
                        url: url.clone(),
                        key: key.clone(),
                        name: node.name.clone(),
                        interval: node.report_interval,
                        tls: crate::edge::tls::client_config(&node.authority_tls)?,
                    },
                    tally,
                    status.clone(),
                    metrics.clone(),
                    clock.clone(),
                ))
            }
            (Some(_), None) => anyhow::bail!(
                "authority.node-key: a node reports to its authority; set authority.url too"
            ),
            (None, _) => None,
        };
        let node_state = NodeState {
            status: status.clone(),
            metrics: metrics.clone(),
            verifier: verifier.clone(),
            auth_enabled: settings.auth.ingestion_enabled,
            clock,
        };
        let router = ingest::routes(
            ingest.clone(),
            verifier.clone(),
            &settings.auth,
            &settings.ingest,
        )
        .merge(
            health::routes(ready)
                .fallback(|| async { ApiError::NotFound("not found".into()) })
                .with_state(node_state),
        );
        let intercept =
            ingest::PushIntercept::new(ingest.clone(), verifier.clone(), &settings.auth);
        let server = Server::bind(&settings.server, router)
            .await?
            .with_workers(
                settings.ingest.worker_threads,
                if settings.ingest.pin_threads {
                    Placement::OnePerCpu
                } else {
                    Placement::Kernel
                },
            )
            .with_intercept(Arc::new(intercept));
        Ok(IngestNode {
            server,
            syncer,
            reporter,
            ingest,
            status,
            verifier,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// `https` when serving TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        self.server.scheme()
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn status(&self) -> Arc<SyncStatus> {
        self.status.clone()
    }

    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.clone()
    }

    pub fn ingest(&self) -> &IngestState {
        &self.ingest
    }

    /// Serves until `shutdown` completes; the sync loop and the spool replay stop with it
    /// (the spool is one process's: a node built next on this storage path must not find this
    /// one's replay still delivering from it).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let life = Lifecycle::new();
        if let Some(syncer) = self.syncer {
            life.spawn(syncer.run());
        }
        if let Some(reporter) = self.reporter {
            life.track(reporter.run(life.clone()));
        }
        self.ingest.start_background(&life);
        self.server.run_until(shutdown, life).await
    }
}

impl health::Health for NodeState {
    /// The age of the list in force moves with the clock, not with the sync loop: it is set
    /// here, for the scrape that asks.
    fn metrics(&self) -> &Metrics {
        let now = self.clock.now();
        let age = self.status.revocations_age(now);
        if age.is_some() || self.auth_enabled {
            self.metrics.revocation_age.set(age.unwrap_or(now));
        }
        &self.metrics
    }
}

async fn ready(State(state): State<NodeState>) -> impl IntoResponse {
    let s = &state.status;
    let keys = s.keys_loaded.load(Ordering::Relaxed);
    let stale = s.stale.load(Ordering::Relaxed);
    let last = s.last_success.load(Ordering::Relaxed);
    let unverified = s.unverified.load(Ordering::Relaxed);
    let ready = (keys || !state.auth_enabled) && !stale && !unverified;
    let body = serde_json::json!({
        "ready": ready,
        "keysLoaded": keys,
        "revocationsVerified": !unverified,
        "keySetVersion": s.keyset_version.load(Ordering::Relaxed),
        "keySetRefused": s.keyset_refusal.lock().map(|r| r.clone()).unwrap_or_default(),
        "spoolDeadLetters": state.metrics.spool_dead_letters.get(),
        "spool": {
            "entries": state.metrics.spool_entries.get(),
            "bytes": state.metrics.spool_bytes.get(),
            "oldestSeconds": state.metrics.spool_oldest_seconds.get(),
            "replayInFlight": state.metrics.spool_replay_in_flight.get(),
            "replayWindow": state.metrics.spool_replay_window.get(),
        },
        "signingKeys": state.verifier.keys().len(),
        "revocationsVersion": s.list_version.load(Ordering::Relaxed),
        "revocationsIssuedAt": s.list_issued_at.load(Ordering::Relaxed),
        "revocationsAgeSeconds": s.revocations_age(state.clock.now()),
        "cacheRefused": s.cache_refusal.lock().map(|r| r.clone()).unwrap_or_default(),
        "secondsSinceAuthorityContact": (last > 0).then(|| state.clock.now().saturating_sub(last)),
        "stale": stale,
    });
    health::readiness(ready, body)
}
