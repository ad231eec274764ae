//! The authority's database: users, sessions, API-key metadata, revocations, audit.
//! Never on an ingest node's request path.
//!
//! [`Store`] is the one interface the routes, the UI, the ticker and the CLI use; they don't
//! know which database is behind it. Its methods are domain operations (create a key, delete
//! a key and revoke it, the list's snapshot, change a role without losing the last admin…),
//! each one transaction where it must be atomic, never SQL.
//!
//! `Store` is an enum over the backends with `async` methods that dispatch, not a trait
//! object: native `async fn` in traits is not object-safe, boxing every future buys nothing
//! for two backends, and a `match` is exhaustive, so a backend missing an operation does not
//! compile.
//!
//! - [`sqlite`]: the embedded default, one file under `storage-path` (its module docs say how
//!   it keeps every acknowledged change).
//! - [`postgres`]: PostgreSQL (any number of replicas on one database), chosen by a `postgres://` `database.url`.
//!
//! Rules every backend keeps:
//! - API keys are stored as metadata only (never the token). The `jti` — the revocation
//!   handle — is a NOT NULL column of the same row, so a key can't exist without it.
//! - Deleting a key marks the row deleted, adds the `jti` to the revocations and moves the
//!   list version in one transaction; the version is a counter row, so it only ever grows.
//! - A change that could leave no enabled admin checks and changes in one transaction that
//!   no other writer can interleave with.

use serde::Serialize;

use crate::core::limits::{KeyLimits, LimitEntry};
use crate::core::revocation::RevocationEntry;
use crate::core::token::Role;

pub mod postgres;
pub mod sqlite;

pub use postgres::{CopyCounts, Dump, KeyringChange, PgStore, SealedKey};
pub use sqlite::SqliteStore;

use crate::config::Database;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A uniqueness rule was broken; the message is user-facing.
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    /// A request the store refuses as it is; the message is user-facing.
    #[error("{0}")]
    Invalid(&'static str),
    #[error("database {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database can't be reached or set up; `target` never holds a password.
    #[error("database {target}: {reason}")]
    Connect { target: String, reason: String },
    /// No connection to the database right now.
    #[error("database {target} unavailable: {reason}")]
    Unavailable { target: String, reason: String },
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database task failed: {0}")]
    Task(String),
    /// The caller's keyring is older than the database's (another replica rotated or
    /// retired): reload it and try again.
    #[error("the signing keys changed on another replica; reload them and try again")]
    StaleKeyring,
}

impl StoreError {
    /// The database could not be reached, or the connection broke: nothing was decided, and
    /// the same request may succeed once the database is back (a 503, not a 500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Connect { .. } | StoreError::Unavailable { .. } => true,
            StoreError::Postgres(e) => {
                // Connection exceptions (08), the server shutting down or the connection
                // ended by an administrator (57), no room for the connection (53).
                let class = e.code().map(|c| &c.code()[..2]);
                e.is_closed() || matches!(class, Some("08" | "57" | "53")) || {
                    let mut source = std::error::Error::source(e);
                    let mut io = false;
                    while let Some(s) = source {
                        io |= s.is::<std::io::Error>();
                        source = s.source();
                    }
                    io
                }
            }
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub role: Role,
    pub is_disabled: bool,
    pub created_at: u64,
    pub updated_at: u64,
    pub password_changed_at: u64,
    pub last_seen_at: Option<u64>,
    /// The OpenID provider the user signs in with; `None` for a local (password) user.
    pub sso_issuer: Option<String>,
    /// The provider's groups for the user at their last single sign-on.
    pub sso_groups: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub password_hash: String,
    pub role: Role,
    /// A user who signs in with this identity at the OpenID provider (pre-created for
    /// `auth.oidc.allow-sign-up: false`); `password_hash` is then [`NO_PASSWORD`].
    pub sso: Option<SsoLink>,
}

/// The password hash of users who sign in only through the OpenID provider: not a PHC string,
/// so no password ever matches it.
pub const NO_PASSWORD: &str = "!sso";

/// An identity at an OpenID provider: users are keyed by (issuer, subject), never by e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoLink {
    pub issuer: String,
    pub subject: String,
}

/// What the provider says about a user at a single sign-on, already mapped to a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoIdentity {
    pub link: SsoLink,
    /// The user name for a user created at this sign-on.
    pub name: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub role: Role,
    pub groups: Vec<String>,
}

/// The names a user created at a single sign-on may get: the provider's, then that name with
/// a suffix from the identity (the same for the same identity), for when another user has it.
pub(crate) fn sso_names(identity: &SsoIdentity) -> [String; 2] {
    let digest = crate::core::crypto::sha256(
        format!("{}\n{}", identity.link.issuer, identity.link.subject).as_bytes(),
    );
    let suffix: String = digest[..3].iter().map(|b| format!("{b:02x}")).collect();
    [identity.name.clone(), format!("{}-{suffix}", identity.name)]
}

/// The outcome of [`Store::sso_sign_in`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoOutcome {
    /// The user, their role, e-mail, name and groups updated from the provider.
    SignedIn(User),
    /// The user exists and is disabled: nothing was changed.
    Disabled(User),
    /// No user has this identity and sign-up is off.
    Unknown,
}

/// Most sign-ins waiting for the provider's answer at once.
pub const MAX_PENDING_SSO: i64 = 10_000;

/// The refusal when [`MAX_PENDING_SSO`] sign-ins are waiting.
pub const TOO_MANY_PENDING_SSO: &str =
    "too many sign-ins are in progress; try again in a few minutes";

/// A sign-in sent to the provider and not yet back: single-use, bound to the browser that
/// started it (`browser` is the SHA-256 of the value in its short-lived cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSso {
    pub state: String,
    pub browser: String,
    pub nonce: String,
    pub verifier: String,
    pub next: String,
    pub expires_at: u64,
}

/// A change to a user's profile; `None` keeps the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    pub name: Option<String>,
    pub email: Option<String>,
    pub full_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub id: i64,
    pub name: String,
    pub role: Role,
    #[serde(skip)]
    pub jti: String,
    #[serde(skip)]
    pub kid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    pub last_used_at: Option<u64>,
    /// The key's `apps` scope, as signed into it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<String>>,
    /// The key's `cidrs` scope, as signed into it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidrs: Option<Vec<String>>,
    /// The key's fleet-wide limits (`None`: unlimited); not in the token, changeable.
    pub limits: Option<KeyLimits>,
    /// When a node last reported the key refused over its limit (the authority's clock).
    pub last_limited_at: Option<u64>,
}

/// A signed key's metadata, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub role: Role,
    pub jti: String,
    pub kid: String,
    pub tenant: Option<String>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub created_by: Option<String>,
    /// The key's `apps` scope, as signed into it (`None`: unscoped).
    pub apps: Option<Vec<String>>,
    /// The key's `cidrs` scope, as signed into it (`None`: unscoped).
    pub cidrs: Option<Vec<String>>,
    /// The key's limits (`None`: unlimited). A key created with limits moves the list version.
    pub limits: Option<KeyLimits>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: i64,
    pub at: u64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub client: Option<String>,
}

/// One audit-log line to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: u64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub client: Option<String>,
}

impl AuditEntry {
    pub fn new(at: u64, actor: &str, action: &str, target: Option<&str>) -> Self {
        AuditEntry {
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            client: None,
        }
    }

    pub fn client(mut self, client: &str) -> Self {
        self.client = Some(client.to_owned());
        self
    }
}

/// An ingest node as its reports left it (`nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub name: String,
    pub version: String,
    pub started_at: u64,
    /// The last report applied.
    pub seq: u64,
    pub interval_seconds: u64,
    pub first_seen_at: u64,
    /// When the authority took its last report (the authority's clock).
    pub last_report_at: u64,
    pub key_set_version: u64,
    pub revocations_version: u64,
    pub revocations_age_seconds: Option<u64>,
    pub stale: bool,
    pub spool_entries: u64,
    pub spool_bytes: u64,
    pub spool_oldest_seconds: u64,
    pub dead_letters: u64,
    pub report_failures: u64,
    /// Pushes refused by the node's auth gate since it was first seen, by reason.
    pub refusals: std::collections::BTreeMap<String, u64>,
}

/// Pushes of one key for one application through one node, summed over every report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    pub app: String,
    /// Empty for pushes without a key, and for the node's "(other)" row.
    pub jti: String,
    pub node: String,
    pub key_name: String,
    pub pushes: u64,
    pub bytes: u64,
    pub refused: u64,
    pub last_push_at: u64,
}

/// A key's last push seen by any node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastUse {
    pub jti: String,
    pub at: u64,
    pub node: String,
    pub app: String,
}

/// A count as stored: `BIGINT`, so values past `i64::MAX` are held there.
pub(crate) fn db_int(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// What the signed documents are made of, read in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The revocation list's version.
    pub version: u64,
    pub entries: Vec<RevocationEntry>,
    /// The key-set version for the published kids the snapshot was read for.
    pub keyset_version: u64,
    /// Every live key that has a limit, by id.
    pub limits: Vec<LimitEntry>,
}

/// The authority's database, whichever backend is behind it. Cheap to clone (a handle).
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Runs the same call on whichever backend `self` is.
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => $call,
            Store::Postgres($s) => $call,
        }
    };
}

impl Store {
    /// Opens the database `database.*` names, bringing its schema up to date.
    pub async fn connect(database: &Database) -> Result<Self> {
        match database {
            Database::Sqlite(dir) => Self::open(dir),
            Database::Postgres(pg) => Ok(Store::Postgres(PgStore::connect(pg).await?)),
        }
    }

    /// Opens (creating if needed) the embedded SQLite database in `dir`.
    pub fn open(dir: &std::path::Path) -> Result<Self> {
        Ok(Store::Sqlite(SqliteStore::open(dir)?))
    }

    /// The SQLite store, if that is the backend (tests that look at the file itself).
    pub fn sqlite(&self) -> Option<&SqliteStore> {
        match self {
            Store::Sqlite(s) => Some(s),
            Store::Postgres(_) => None,
        }
    }

    /// Where the data is, for logs and errors (never a password).
    pub fn describe(&self) -> String {
        dispatch!(self, s => s.describe())
    }

    /// A round trip to the database, for `/ready`.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, s => s.ping().await)
    }

    // --- API keys and revocations ---

    /// Records a signed key (refusing a live name that looks the same as `key.name`) and
    /// audits it, in one transaction.
    pub async fn create_key(&self, key: NewKey) -> Result<ApiKeyRecord> {
        dispatch!(self, s => s.create_key(key).await)
    }

    /// Live keys, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        dispatch!(self, s => s.list_keys().await)
    }

    pub async fn find_key_by_name(&self, name: &str) -> Result<ApiKeyRecord> {
        dispatch!(self, s => s.find_key_by_name(name).await)
    }

    /// Notes that the key with this `jti` was just used.
    pub async fn touch_key(&self, jti: &str, now: u64) -> Result<()> {
        dispatch!(self, s => s.touch_key(jti, now).await)
    }

    /// Deletes a key, revokes its `jti`, moves the list version and audits it by `actor`, in
    /// one transaction. Returns the deleted record and the new list version.
    pub async fn delete_key(&self, id: i64, now: u64, actor: &str) -> Result<(ApiKeyRecord, u64)> {
        dispatch!(self, s => s.delete_key(id, now, actor).await)
    }

    /// Revokes a `jti`: a registered key's is deleted as by [`Store::delete_key`]; any other
    /// (an offline-issued key) goes on the list as it is. One transaction; returns the key's
    /// name if it was registered, and the new list version.
    pub async fn revoke_jti(
        &self,
        jti: &str,
        exp: Option<u64>,
        now: u64,
        actor: &str,
    ) -> Result<(Option<String>, u64)> {
        dispatch!(self, s => s.revoke_jti(jti, exp, now, actor).await)
    }

    /// Sets (or, with `None`, removes) a live key's limits, moves the list version (the
    /// limits travel in it) and audits it by `actor`, in one transaction. Returns the record
    /// and the new list version.
    pub async fn set_key_limits(
        &self,
        id: i64,
        limits: Option<KeyLimits>,
        now: u64,
        actor: &str,
    ) -> Result<(ApiKeyRecord, u64)> {
        dispatch!(self, s => s.set_key_limits(id, limits, now, actor).await)
    }

    /// Moves the list version with nothing else changed, so long-polling nodes fetch it at
    /// once: how a change in the number of live nodes (each node's share of a limit)
    /// reaches them.
    pub async fn bump_revocations_version(&self) -> Result<u64> {
        dispatch!(self, s => s.bump_revocations_version().await)
    }

    /// Marks every live key signed by a key no longer `published` as deleted: retiring a
    /// signing key killed those tokens, so they should not be listed as if they worked.
    /// Returns their names.
    pub async fn delete_keys_of_unpublished(
        &self,
        published: &[String],
        now: u64,
    ) -> Result<Vec<String>> {
        dispatch!(self, s => s.delete_keys_of_unpublished(published, now).await)
    }

    pub async fn revocations_version(&self) -> Result<u64> {
        dispatch!(self, s => s.revocations_version().await)
    }

    /// The list, its version and the key-set version for the published `kids` (sorted,
    /// comma-joined), in one transaction. A change of `kids` moves the key-set version and
    /// also the list's, so long-polling nodes hear of it at once.
    ///
    /// `keyring` is the version of the caller's keyring when it lives in the database:
    /// [`StoreError::StaleKeyring`] if the database holds a newer one, so a replica that has
    /// not yet heard of a rotation never signs a key set that goes back on it.
    pub async fn snapshot(&self, kids: &str, keyring: Option<u64>) -> Result<Snapshot> {
        match self {
            Store::Sqlite(s) => s.snapshot(kids).await,
            Store::Postgres(s) => s.snapshot(kids, keyring).await,
        }
    }

    /// The PostgreSQL store, when that is the backend (the keyring lives there then).
    pub fn postgres(&self) -> Option<&PgStore> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(s) => Some(s),
        }
    }

    /// Drops entries whose tokens expired more than `skew` ago or whose signing key is no
    /// longer `published`; moves the version if anything went. Returns the current version.
    pub async fn prune_revocations(
        &self,
        now: u64,
        skew: u64,
        published: &[String],
    ) -> Result<u64> {
        dispatch!(self, s => s.prune_revocations(now, skew, published).await)
    }

    // --- fleet ---

    /// Applies one node report in one transaction: the node's row, its usage rows and its
    /// keys' last use. Returns false, changing nothing, for a report already applied (the
    /// same node start and a `seq` not above the last one): a resend whose first answer was
    /// lost.
    pub async fn record_report(
        &self,
        report: &crate::node::report::Report,
        now: u64,
    ) -> Result<bool> {
        dispatch!(self, s => s.record_report(report.clone(), now).await)
    }

    /// Every node that ever reported, by name.
    pub async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        dispatch!(self, s => s.list_nodes().await)
    }

    /// Every usage row, by app, node and key.
    pub async fn list_usage(&self) -> Result<Vec<UsageRecord>> {
        dispatch!(self, s => s.list_usage().await)
    }

    /// Each key's last push seen by a node.
    pub async fn last_uses(&self) -> Result<Vec<LastUse>> {
        dispatch!(self, s => s.last_uses().await)
    }

    // --- users ---

    pub async fn count_users(&self) -> Result<u64> {
        dispatch!(self, s => s.count_users().await)
    }

    /// Creates a user. A name that looks like an existing one (same confusable skeleton, e.g.
    /// `admіn` with a Cyrillic `і`) is refused like a duplicate.
    pub async fn create_user(&self, user: NewUser, now: u64) -> Result<User> {
        dispatch!(self, s => s.create_user(user, now).await)
    }

    pub async fn get_user(&self, id: i64) -> Result<User> {
        dispatch!(self, s => s.get_user(id).await)
    }

    /// The user (name compared case-insensitively) and their password hash, for login.
    pub async fn find_user_for_login(&self, name: &str) -> Result<Option<(User, String)>> {
        dispatch!(self, s => s.find_user_for_login(name).await)
    }

    pub async fn password_hash(&self, id: i64) -> Result<String> {
        dispatch!(self, s => s.password_hash(id).await)
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        dispatch!(self, s => s.list_users().await)
    }

    pub async fn update_user(&self, id: i64, update: UserUpdate, now: u64) -> Result<User> {
        dispatch!(self, s => s.update_user(id, update, now).await)
    }

    /// Sets a new password hash and ends every session of the user but `keep` (the session
    /// that made the change, if any).
    pub async fn set_password(
        &self,
        id: i64,
        hash: &str,
        now: u64,
        keep: Option<&str>,
    ) -> Result<()> {
        dispatch!(self, s => s.set_password(id, hash, now, keep).await)
    }

    /// Changes a user's role, refusing to demote the last enabled admin.
    pub async fn set_role(&self, id: i64, role: Role, now: u64) -> Result<User> {
        dispatch!(self, s => s.set_role(id, role, now).await)
    }

    /// Disables (ending every session and, with `revoke_keys`, revoking the keys they
    /// created) or re-enables a user; refuses to disable the last enabled admin. Returns the
    /// user and the keys revoked.
    pub async fn set_disabled(
        &self,
        id: i64,
        disabled: bool,
        revoke_keys: bool,
        now: u64,
    ) -> Result<(User, Vec<ApiKeyRecord>)> {
        dispatch!(self, s => s.set_disabled(id, disabled, revoke_keys, now).await)
    }

    /// Deletes a user (and, with `revoke_keys`, revokes the keys they created); refuses to
    /// delete the last enabled admin. Returns the user as it was and the keys revoked.
    pub async fn delete_user(
        &self,
        id: i64,
        revoke_keys: bool,
        now: u64,
    ) -> Result<(User, Vec<ApiKeyRecord>)> {
        dispatch!(self, s => s.delete_user(id, revoke_keys, now).await)
    }

    // --- sessions ---

    /// Records a UI session (a login) and marks the user seen.
    pub async fn create_session(
        &self,
        sid: &str,
        user_id: i64,
        now: u64,
        expires_at: u64,
    ) -> Result<()> {
        dispatch!(self, s => s.create_session(sid, user_id, now, expires_at).await)
    }

    /// The user of live session `sid` if it belongs to `user_id` and the user is enabled;
    /// marks them seen.
    pub async fn session_user(&self, sid: &str, user_id: i64, now: u64) -> Result<Option<User>> {
        dispatch!(self, s => s.session_user(sid, user_id, now).await)
    }

    pub async fn delete_session(&self, sid: &str) -> Result<()> {
        dispatch!(self, s => s.delete_session(sid).await)
    }

    /// Drops expired sessions (and sign-ins never finished); returns how many sessions went.
    pub async fn prune_sessions(&self, now: u64) -> Result<usize> {
        dispatch!(self, s => s.prune_sessions(now).await)
    }

    // --- single sign-on ---

    /// Records a sign-in sent to the OpenID provider; refused ([`StoreError::Invalid`]) while
    /// [`MAX_PENDING_SSO`] are waiting, so a flood of unfinished sign-ins can't fill the
    /// database (they expire in minutes and the ticker prunes them).
    pub async fn begin_sso(&self, pending: PendingSso) -> Result<()> {
        dispatch!(self, s => s.begin_sso(pending).await)
    }

    /// Takes (deletes and returns) the pending sign-in with this `state`, if it has not
    /// expired: a second callback with the same state finds nothing.
    pub async fn take_sso(&self, state: &str, now: u64) -> Result<Option<PendingSso>> {
        dispatch!(self, s => s.take_sso(state, now).await)
    }

    /// Signs in the user with this identity, in one transaction: an existing user gets the
    /// provider's role, e-mail, name and groups; with `allow_sign_up`, an unknown identity
    /// becomes a new user (named `identity.name`, or that name with a suffix when taken).
    pub async fn sso_sign_in(
        &self,
        identity: SsoIdentity,
        allow_sign_up: bool,
        now: u64,
    ) -> Result<SsoOutcome> {
        dispatch!(self, s => s.sso_sign_in(identity, allow_sign_up, now).await)
    }

    // --- settings and audit ---

    /// Whether this process runs periodic job `name` now: at most once per `every` seconds
    /// for every process on the database. Several authorities on one PostgreSQL database
    /// share one turn (a lease row); an SQLite database has one server, whose turn it always is.
    pub async fn claim_periodic(&self, name: &str, now: u64, every: u64) -> Result<bool> {
        match self {
            Store::Sqlite(_) => Ok(true),
            Store::Postgres(s) => s.claim_periodic(name, now, every).await,
        }
    }

    /// Wakes `changed` whenever another process commits a change the authority must publish
    /// (PostgreSQL `LISTEN`/`NOTIFY`), until `stop`. With SQLite there is one server and the
    /// ticker's once-a-second re-read finds the CLI's changes: this only waits for `stop`.
    pub async fn listen(
        &self,
        changed: std::sync::Arc<tokio::sync::Notify>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        match self {
            Store::Sqlite(_) => stop.await,
            Store::Postgres(s) => s.listen(changed, stop).await,
        }
    }

    pub async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        dispatch!(self, s => s.get_meta(key).await)
    }

    /// Sets `key` only if it is not set yet; returns the value that is stored (the first
    /// writer's, when several processes race).
    pub async fn init_meta(&self, key: &str, value: &str) -> Result<String> {
        dispatch!(self, s => s.init_meta(key, value).await)
    }

    pub async fn audit(&self, entry: AuditEntry) -> Result<()> {
        dispatch!(self, s => s.audit(entry).await)
    }

    /// The newest `limit` audit lines, newest first.
    pub async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        dispatch!(self, s => s.list_audit(limit).await)
    }
}

#[cfg(test)]
mod tests;
