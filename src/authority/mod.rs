//! The authority (`pyrogate server`): users and login, the API-key REST API, and distribution
//! of the public key set and the signed revocation list to ingest nodes.
//!
//! | file | routes |
//! |---|---|
//! | [`session`] | `POST /api/login`, `POST /api/logout`; the [`session::Caller`] extractor (session cookie or Admin API key, with the cross-site check) |
//! | [`users`] | `/api/user…` (self) and `/api/users…` (admin) |
//! | [`keys`] | `/api/keys…`; the create/delete logic the CLI shares |
//! | [`signing`] | `/api/signing-keys…`: list, rotate, retire; keyring reload |
//! | [`distribution`] | `/.well-known/jwks.json`, `/api/revocations` (ETag, long-poll) |
//! | [`throttle`] | failed-login counting per user and per client address |
//!
//! [`Application::build`] binds the listener (port 0 in tests) and [`Application::run_until`]
//! serves until a shutdown future fires, so tests run the real server in-process.

pub mod keyring;
pub mod passwords;
pub mod routes;
pub mod store;
pub mod throttle;

use routes::{distribution, keys, session, signing, ui, users};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::core::clock::Clock;
use crate::core::jws::Signer;
use crate::core::token::Role;
use crate::core::verifier::{Verifier, VerifierConfig};
use crate::edge::error::ApiError;
use crate::edge::metrics::Metrics;
use keyring::Keyring;
use store::{Store, StoreError};

/// Everything a handler may need. Cheap to clone (all shared).
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub keyring: Arc<Mutex<Keyring>>,
    pub verifier: Arc<Verifier>,
    pub publisher: Arc<distribution::Publisher>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub throttle: Arc<throttle::LoginThrottle>,
    pub sessions: Arc<session::SessionKey>,
    /// Modification time of `keyring.json` last applied (see [`signing::reload`]).
    pub keyring_seen: Arc<Mutex<Option<std::time::SystemTime>>>,
    /// Computed once so a login for an unknown user costs as much as one for a known user.
    pub dummy_hash: Arc<String>,
    /// The ingest plane of the all-in-one server.
    pub ingest: crate::node::ingest::IngestState,
}

impl AppState {
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The key that signs new tokens right now.
    pub fn signer(&self) -> Result<Signer, ApiError> {
        self.keyring
            .lock()
            .map(|ring| ring.active().clone())
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("keyring lock poisoned")))
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(msg) => ApiError::Conflict(msg.into()),
            StoreError::NotFound(msg) => ApiError::NotFound(msg.into()),
            other => ApiError::Internal(other.into()),
        }
    }
}

/// What a first start did, for the caller to report.
#[derive(Debug, Default)]
pub struct FirstStart {
    pub created_signing_key: Option<String>,
    /// Set when the first admin was created; `password` only when it was generated.
    pub created_admin: Option<(String, Option<String>)>,
}

/// A bound, ready-to-run authority.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    pub first_start: FirstStart,
}

impl Application {
    /// Opens the store and keyring (creating them on first start), binds the listener.
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let (state, first_start) = open_state(settings, clock).await?;
        let listener = TcpListener::bind(state.settings.server.api_bind_addr)
            .await
            .with_context(|| format!("binding {}", state.settings.server.api_bind_addr))?;
        let router = router(state.clone());
        Ok(Application {
            listener,
            router,
            state,
            first_start,
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

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let background = tokio::spawn(background(self.state.clone()));
        let replay = self.state.ingest.start_background();
        // Graceful shutdown waits for in-flight requests, so pending long-polls must end as
        // soon as shutdown begins, not after.
        let publisher = self.state.publisher.clone();
        let shutdown = async move {
            shutdown.await;
            publisher.close();
        };
        let result = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        background.abort();
        // As on an ingest node: the next process on this storage path owns the spool.
        if let Some(replay) = replay {
            replay.stop().await;
        }
        result.context("serving HTTP")
    }
}

/// Opens everything the authority needs; also used by the CLI for offline commands.
pub async fn open_state(
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(AppState, FirstStart)> {
    let now = clock.now();
    let mut first = FirstStart::default();
    let (ring, created) = Keyring::open_or_generate(&settings.authority.keys_dir, now)?;
    if created {
        first.created_signing_key = Some(ring.active().kid().to_owned());
    }
    let store = Store::open(&settings.server.storage_path)?;
    let sessions = Arc::new(session::SessionKey::load(
        &store,
        settings.authority.sessions.jwt_secret.as_ref(),
    )?);
    if settings.authority.internal_enabled && settings.authority.first_admin.create {
        first.created_admin = create_first_admin(&store, &settings, now).await?;
    }
    let verifier = Arc::new(Verifier::new(
        VerifierConfig {
            issuer: settings.auth.issuer.clone(),
            clock_skew_secs: settings.auth.clock_skew.as_secs(),
            cache_capacity: settings.auth.cache_size,
        },
        ring.key_set(),
        clock.clone(),
    ));
    let keys_dir = settings.authority.keys_dir.clone();
    let metrics = Arc::new(Metrics::new());
    verifier.set_cache_counters(metrics.cache_counters());
    metrics
        .signing_keys_published
        .set(ring.key_set().len() as u64);
    let dummy_hash = Arc::new(
        tokio::task::spawn_blocking(|| {
            crate::authority::passwords::hash("pyrogate-timing-equalizer")
        })
        .await??,
    );
    let ingest = crate::node::ingest::IngestState::new(&settings, metrics.clone(), clock.clone())?;
    let state = AppState {
        ingest,
        throttle: Arc::new(throttle::LoginThrottle::new(
            settings.authority.login_max_failures,
            settings.authority.login_lockout,
        )),
        settings: Arc::new(settings),
        store,
        keyring: Arc::new(Mutex::new(ring)),
        verifier,
        publisher: Arc::new(distribution::Publisher::new()),
        metrics,
        clock,
        sessions,
        dummy_hash,
        keyring_seen: Arc::new(Mutex::new(
            std::fs::metadata(keys_dir.join("keyring.json"))
                .and_then(|m| m.modified())
                .ok(),
        )),
    };
    distribution::republish(&state).await?;
    Ok((state, first))
}

async fn create_first_admin(
    store: &Store,
    settings: &Settings,
    now: u64,
) -> anyhow::Result<Option<(String, Option<String>)>> {
    if store.with(|c| store::count_users(c))? > 0 {
        return Ok(None);
    }
    let (password, generated) = match &settings.authority.first_admin.password {
        Some(p) => (p.expose().to_owned(), None),
        None => {
            let p = crate::authority::passwords::generate();
            (p.clone(), Some(p))
        }
    };
    crate::authority::passwords::validate(&password)
        .map_err(|e| anyhow::anyhow!("auth.internal.admin.password: {e}"))?;
    let hash =
        tokio::task::spawn_blocking(move || crate::authority::passwords::hash(&password)).await??;
    let name = settings.authority.first_admin.name.clone();
    let email = Some(settings.authority.first_admin.email.clone()).filter(|e| !e.is_empty());
    store.with(|c| {
        store::create_user(
            c,
            &store::NewUser {
                name: &name,
                email: email.as_deref(),
                full_name: None,
                password_hash: &hash,
                role: Role::Admin,
            },
            now,
        )?;
        store::audit(c, now, "system", "user.create", Some(&name), None)
    })?;
    Ok(Some((
        settings.authority.first_admin.name.clone(),
        generated,
    )))
}

/// All routes of the authority.
pub fn router(state: AppState) -> Router {
    let ingest = crate::node::ingest::routes(
        state.ingest.clone(),
        state.verifier.clone(),
        &state.settings,
    );
    // `auth.internal.enabled: false` turns off built-in users: no login, no user routes, and
    // no cookie sessions (see `session::Caller`); Admin API keys still work.
    let users = if state.settings.authority.internal_enabled {
        session::routes().merge(users::routes())
    } else {
        Router::new()
    };
    Router::new()
        .merge(users)
        .merge(keys::routes())
        .merge(signing::routes())
        .merge(distribution::routes())
        .merge(ui::routes())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/ingestion", get(ingestion))
        .fallback(|| async { ApiError::NotFound("not found".into()) })
        .with_state(state)
        .merge(ingest)
}

/// `GET /api/ingestion` (Admin): what arrived per app, and from which keys.
async fn ingestion(
    State(state): State<AppState>,
    caller: session::Caller,
) -> Result<axum::response::Response, ApiError> {
    caller.require(crate::edge::auth::Access::Admin)?;
    let apps: Vec<serde_json::Value> = state
        .ingest
        .stats()
        .snapshot()
        .into_iter()
        .map(|a| {
            serde_json::json!({
                "app": a.app,
                "pushes": a.pushes,
                "bytes": a.bytes,
                "lastPushAt": crate::core::clock::rfc3339(a.last_push_at),
                "keys": a.keys,
            })
        })
        .collect();
    let local = state
        .ingest
        .local()
        .map(|l| serde_json::json!({ "profiles": l.len(), "bytes": l.bytes() }));
    Ok(crate::edge::json::json(
        StatusCode::OK,
        &serde_json::json!({ "apps": apps, "localStore": local }),
    ))
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let store_ok = state
        .store
        .call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await
        .is_ok();
    let published = state.publisher.current();
    let body = serde_json::json!({
        "ready": store_ok,
        "store": if store_ok { "ok" } else { "unavailable" },
        "signingKeys": state.verifier.keys().len(),
        "revocationsVersion": published.version,
    });
    crate::node::readiness(store_ok, body)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.response()
}

/// Periodic work: notice revocations and key changes made by other processes (the CLI), prune
/// expired revocations and sessions. Also reloads the keyring on SIGHUP.
async fn background(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let prune_every = state.settings.authority.prune_interval.as_secs().max(1);
    let mut last_prune = state.now();
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            _ = hangup => {
                tracing::info!("SIGHUP: reloading signing keys");
                if let Err(err) = signing::reload(&state, true).await {
                    tracing::error!(error = format!("{err:#}"), "reloading signing keys failed");
                }
            }
        }
        if let Err(err) = signing::reload(&state, false).await {
            tracing::error!(error = format!("{err:#}"), "reloading signing keys failed");
        }
        let now = state.now();
        let prune = now.saturating_sub(last_prune) >= prune_every;
        if prune {
            last_prune = now;
        }
        if let Err(err) = distribution::refresh(&state, prune).await {
            tracing::error!(
                error = format!("{err:#}"),
                "refreshing the revocation list failed"
            );
        }
    }
}
