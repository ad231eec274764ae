//! `pyrogate ingest`: a stateless ingest node. It verifies keys locally with the key set and
//! revocation list that [`crate::node::sync`] keeps current, and forwards pushes upstream. Its only
//! disk state lives under `storage-path`: the cache of the last good key set and list, and the
//! spool.

pub mod ingest;
pub mod sync;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::core::clock::Clock;
use crate::core::jwk::KeySet;
use crate::core::verifier::{Verifier, VerifierConfig};
use crate::edge::error::ApiError;
use crate::edge::metrics::Metrics;
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
    listener: TcpListener,
    router: Router,
    syncer: Option<Syncer>,
    ingest: IngestState,
    status: Arc<SyncStatus>,
    verifier: Arc<Verifier>,
}

impl IngestNode {
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let source = match (&settings.node.authority_url, &settings.node.jwks_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("set either authority-url or jwks-file (air-gapped), not both")
            }
            (Some(url), None) => Some(Source::Authority {
                url: url.clone(),
                cache_dir: settings.server.storage_path.join("cache"),
            }),
            (None, Some(jwks)) => Some(Source::Files {
                jwks: jwks.clone(),
                revocations: settings.node.revocations_file.clone(),
            }),
            (None, None) if !settings.auth.ingestion_enabled => None,
            (None, None) => anyhow::bail!(
                "auth.ingestion.enabled needs keys to check: set authority-url (--authority-url URL), or jwks-file and revocations-file for an air-gapped node"
            ),
        };
        if let Some(Source::Authority { cache_dir, .. }) = &source {
            std::fs::create_dir_all(cache_dir)
                .with_context(|| format!("creating {}", cache_dir.display()))?;
        }
        let metrics = Arc::new(Metrics::new());
        let verifier = Arc::new(Verifier::new(
            VerifierConfig {
                issuer: settings.auth.issuer.clone(),
                clock_skew_secs: settings.auth.clock_skew.as_secs(),
                cache_capacity: settings.auth.cache_size,
            },
            KeySet::default(),
            clock.clone(),
        ));
        verifier.set_cache_counters(metrics.cache_counters());
        let ingest = IngestState::new(&settings, metrics.clone(), clock.clone())?;
        let status = Arc::new(SyncStatus {
            stale: ingest.stale_flag(),
            ..SyncStatus::default()
        });
        let syncer = match source {
            Some(source) => {
                let syncer = Syncer::new(
                    SyncConfig {
                        source,
                        issuer: settings.auth.issuer.clone(),
                        wait: settings.node.sync_wait,
                        jwks_interval: settings.node.sync_jwks_interval,
                        max_staleness: settings.node.sync_max_staleness,
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
        let node_state = NodeState {
            status: status.clone(),
            metrics: metrics.clone(),
            verifier: verifier.clone(),
            auth_enabled: settings.auth.ingestion_enabled,
            clock,
        };
        let router = ingest::routes(ingest.clone(), verifier.clone(), &settings).merge(
            Router::new()
                .route("/healthz", get(|| async { "ok\n" }))
                .route("/ready", get(ready))
                .route("/metrics", get(metrics_text))
                .fallback(|| async { ApiError::NotFound("not found".into()) })
                .with_state(node_state),
        );
        let listener = TcpListener::bind(settings.server.api_bind_addr)
            .await
            .with_context(|| format!("binding {}", settings.server.api_bind_addr))?;
        Ok(IngestNode {
            listener,
            router,
            syncer,
            ingest,
            status,
            verifier,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
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

    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let sync = self.syncer.map(|s| tokio::spawn(s.run()));
        let replay = self.ingest.start_background();
        let result = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        if let Some(task) = sync {
            task.abort();
        }
        // The spool is one process's: a node built next on this storage path must not find
        // this one's replay still delivering from it.
        if let Some(replay) = replay {
            replay.stop().await;
        }
        result.context("serving HTTP")
    }
}

async fn ready(State(state): State<NodeState>) -> impl IntoResponse {
    let s = &state.status;
    let keys = s.keys_loaded.load(Ordering::Relaxed);
    let stale = s.stale.load(Ordering::Relaxed);
    let last = s.last_success.load(Ordering::Relaxed);
    let ready = (keys || !state.auth_enabled) && !stale;
    let body = serde_json::json!({
        "ready": ready,
        "keysLoaded": keys,
        "signingKeys": state.verifier.keys().len(),
        "revocationsVersion": s.list_version.load(Ordering::Relaxed),
        "revocationsIssuedAt": s.list_issued_at.load(Ordering::Relaxed),
        "secondsSinceAuthorityContact": (last > 0).then(|| state.clock.now().saturating_sub(last)),
        "stale": stale,
    });
    readiness(ready, body)
}

/// `GET /ready`: 200 or 503 with a JSON body that says why.
pub(crate) fn readiness(ready: bool, body: serde_json::Value) -> axum::response::Response {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(state): State<NodeState>) -> impl IntoResponse {
    state.metrics.response()
}
