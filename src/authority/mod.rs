//! The authority (`pyrogate server`): users and login, the API-key REST API, and distribution
//! of the public key set and the signed revocation list to ingest nodes.
//!
//! | file | routes |
//! |---|---|
//! | [`session`] | `POST /api/login`, `POST /api/logout`, `GET /api/login/methods`; the [`session::Caller`] extractor (session cookie or Admin API key, with the cross-site check) |
//! | [`sso`] | `GET /auth/oidc/login`, `GET /auth/oidc/callback`: single sign-on through an OpenID provider ([`oidc`] is the relying party) |
//! | [`users`] | `/api/user…` (self) and `/api/users…` (admin) |
//! | [`keys`] | `/api/keys…`; the create/delete logic the CLI shares |
//! | [`signing`] | `/api/signing-keys…`: list, rotate, retire; keyring reload |
//! | [`nodes`] | `POST /api/nodes/report` (Node keys), `GET /api/nodes`: the fleet's reports |
//! | [`distribution`] | `/.well-known/jwks.json`, `/api/revocations` (ETag, long-poll) |
//! | [`throttle`] | failed-login counting per (user, client address) and per client address; progressive delays per user name |
//!
//! [`Application::build`] binds the listener (port 0 in tests) and [`Application::run_until`]
//! serves until a shutdown future fires, so tests run the real server in-process.

pub mod background;
mod errors;
pub mod kek;
pub mod keyring;
pub mod oidc;
pub mod passwords;
pub mod routes;
pub mod store;
pub mod throttle;

use routes::{distribution, keys, nodes, session, signing, sso, ui, users};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::config::Settings;
use crate::core::clock::Clock;
use crate::core::jws::Signer;
use crate::core::token::Role;
use crate::core::verifier::Verifier;
use crate::edge::error::ApiError;
use crate::edge::health;
use crate::edge::metrics::Metrics;
use crate::edge::server::{Lifecycle, Server};
use keyring::{Keyring, KeyringHome, Revision};
use store::Store;

/// Everything a handler may need. Cheap to clone (all shared).
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub keyring: Arc<Mutex<Keyring>>,
    /// Where the keyring is kept (the keys dir, or the database every replica shares).
    pub keyring_home: KeyringHome,
    pub verifier: Arc<Verifier>,
    pub publisher: Arc<distribution::Publisher>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub throttle: Arc<throttle::LoginThrottle>,
    /// Progressive delays per user name, across addresses.
    pub account_delays: Arc<throttle::AccountDelays>,
    pub sessions: Arc<session::SessionKey>,
    /// The keyring's change marker last applied (see [`signing::reload`]).
    pub keyring_seen: Arc<Mutex<Option<Revision>>>,
    /// Computed once so a login for an unknown user costs as much as one for a known user.
    pub dummy_hash: Arc<String>,
    /// The ingest plane of the all-in-one server.
    pub ingest: crate::node::ingest::IngestState,
    /// Shutdown: long-polls and background tasks watch it.
    pub life: Lifecycle,
    /// The OpenID provider, with `auth.oidc.enabled`.
    pub oidc: Option<Arc<oidc::Provider>>,
    /// Woken when another replica committed a change (see [`Store::listen`]): the ticker
    /// re-reads the store at once instead of at its next second.
    pub changes: Arc<tokio::sync::Notify>,
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

/// What a first start did, for the caller to report.
#[derive(Debug, Default)]
pub struct FirstStart {
    pub created_signing_key: Option<String>,
    /// Set when the first admin was created; `password` only when it was generated.
    pub created_admin: Option<(String, Option<String>)>,
}

/// A bound, ready-to-run authority.
pub struct Application {
    server: Server,
    state: AppState,
    pub first_start: FirstStart,
}

impl Application {
    /// Opens the store and keyring (creating them on first start), binds the listener.
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let (state, first_start) = open_state(settings, clock).await?;
        // Held long-polls are answered before hyper: an idle node's poll then costs the
        // authority a few hundred bytes instead of hyper's buffers (edge::server::Hold).
        let server = Server::bind(&state.settings.server, router(state.clone()))
            .await?
            .with_hold(Arc::new(distribution::HeldPolls::new(&state)));
        Ok(Application {
            server,
            state,
            first_start,
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

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes. Pending long-polls end as soon as shutdown begins,
    /// the background ticker and the spool replay stop with the server (as on an ingest node:
    /// the next process on this storage path owns the spool).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let life = self.state.life.clone();
        life.spawn(background::run(self.state.clone()));
        let (store, changes, stopping) = (
            self.state.store.clone(),
            self.state.changes.clone(),
            life.clone(),
        );
        life.spawn(async move { store.listen(changes, stopping.stopping()).await });
        life.spawn(nodes::metrics_loop(
            self.state.clone(),
            std::time::Duration::from_secs(15),
        ));
        self.state.ingest.start_background(&life);
        self.server.run_until(shutdown, life).await
    }
}

/// Opens everything the authority needs; also used by the CLI for offline commands.
pub async fn open_state(
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(AppState, FirstStart)> {
    let now = clock.now();
    let mut first = FirstStart::default();
    let store = Store::connect(&settings.authority.database).await?;
    tracing::info!(database = %store.describe(), "database open");
    let keyring_home = KeyringHome::for_store(
        &store,
        &settings.authority.keys_dir,
        settings.authority.key_encryption_key_file.as_deref(),
    )?;
    let (ring, created) = keyring_home.open_or_generate(now).await?;
    if created {
        first.created_signing_key = Some(ring.active().kid().to_owned());
    }
    let keyring_seen = keyring_home.revision_of(&ring).await?;
    let sessions = Arc::new(
        session::SessionKey::load(&store, settings.authority.sessions.jwt_secret.as_ref()).await?,
    );
    if settings.authority.internal_enabled && settings.authority.first_admin.create {
        first.created_admin = create_first_admin(&store, &settings, now).await?;
    }
    let verifier = Arc::new(Verifier::new(
        settings.auth.verifier_config(),
        ring.key_set(),
        clock.clone(),
    ));
    let metrics = Arc::new(Metrics::new());
    verifier.set_cache_counters(metrics.cache_counters());
    metrics
        .signing_keys_published
        .set(ring.key_set().len() as u64);
    let dummy_hash = Arc::new(
        crate::authority::passwords::hash_async("pyrogate-timing-equalizer".into()).await?,
    );
    let max_long_polls = settings.authority.revocations_max_long_polls;
    let ingest = crate::node::ingest::IngestState::new(
        &settings.ingest,
        settings.auth.ingestion_enabled,
        metrics.clone(),
        clock.clone(),
    )?;
    let oidc = match &settings.authority.oidc {
        Some(oidc) => Some(Arc::new(oidc::Provider::new(oidc.clone(), clock.clone())?)),
        None => None,
    };
    let state = AppState {
        oidc,
        ingest,
        throttle: Arc::new(throttle::LoginThrottle::new(
            settings.authority.login_max_failures,
            settings.authority.login_lockout,
            throttle::Place::for_store(&store, "failures:"),
        )),
        account_delays: Arc::new(throttle::AccountDelays::new(
            settings.authority.login_delays,
            settings.authority.login_lockout,
            throttle::Place::for_store(&store, "account:"),
        )),
        settings: Arc::new(settings),
        store,
        keyring: Arc::new(Mutex::new(ring)),
        verifier,
        publisher: Arc::new(distribution::Publisher::new(max_long_polls)),
        life: Lifecycle::new(),
        changes: Arc::default(),
        metrics,
        clock,
        sessions,
        dummy_hash,
        keyring_home,
        keyring_seen: Arc::new(Mutex::new(Some(keyring_seen))),
    };
    distribution::republish(&state).await?;
    Ok((state, first))
}

async fn create_first_admin(
    store: &Store,
    settings: &Settings,
    now: u64,
) -> anyhow::Result<Option<(String, Option<String>)>> {
    if store.count_users().await? > 0 {
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
    let hash = crate::authority::passwords::hash_async(password).await?;
    let name = settings.authority.first_admin.name.clone();
    let email = Some(settings.authority.first_admin.email.clone()).filter(|e| !e.is_empty());
    let admin = store::NewUser {
        name: name.clone(),
        email,
        full_name: None,
        password_hash: hash,
        role: Role::Admin,
        sso: None,
    };
    match store.create_user(admin, now).await {
        Ok(_) => {}
        // Another replica on the same database created it first.
        Err(store::StoreError::Conflict(_)) if store.count_users().await? > 0 => return Ok(None),
        Err(other) => return Err(other.into()),
    }
    store
        .audit(store::AuditEntry::new(
            now,
            "system",
            "user.create",
            Some(&name),
        ))
        .await?;
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
        &state.settings.auth,
        &state.settings.ingest,
    );
    // `auth.internal.enabled: false` turns off password login; without single sign-on too
    // there are no user routes and no cookie sessions (see `session::Caller`), and Admin API
    // keys still work.
    let users = if session::sessions_enabled(&state) {
        session::routes().merge(users::routes())
    } else {
        Router::new()
    };
    let users = if state.oidc.is_some() {
        users.merge(sso::routes())
    } else {
        users
    };
    Router::new()
        .merge(users)
        .merge(keys::routes())
        .merge(nodes::routes())
        .merge(signing::routes())
        .merge(distribution::routes())
        .merge(ui::routes())
        .merge(health::routes(ready))
        .route("/api/ingestion", get(routes::ingestion::ingestion))
        .fallback(|| async { ApiError::NotFound("not found".into()) })
        .with_state(state)
        .merge(ingest)
}

/// Ready while the database answers. A replica that lost it says so and which one (never a
/// password), and still serves the documents it last signed to nodes that poll it.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let store_ok = state.store.ping().await.is_ok();
    let published = state.publisher.current();
    let body = serde_json::json!({
        "ready": store_ok,
        "store": if store_ok { "ok" } else { "unavailable" },
        "database": state.store.describe(),
        "signingKeys": state.verifier.keys().len(),
        "revocationsVersion": published.version,
        "revocationsIssuedAt": published.issued_at,
    });
    health::readiness(store_ok, body)
}

impl health::Health for AppState {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
