//! The embedded SQLite backend: one file, `<storage-path>/pyrogate.db`.
//!
//! - WAL mode with `synchronous=FULL`: every acknowledged change survives a crash, and a crash
//!   mid-write leaves the last committed state.
//! - Migrations are embedded and versioned with `PRAGMA user_version`; each runs in its own
//!   transaction.
//! - One connection behind a mutex; async callers go through `spawn_blocking`. The authority's
//!   write rate is a human's, so a pool would buy nothing. The functions of the submodules
//!   take a connection (or the transaction the operation opened); [`SqliteStore`]'s async
//!   methods are the operations [`super::Store`] dispatches to.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension as _, params};

use super::*;

const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    r#"
    CREATE TABLE users (
        id                  INTEGER PRIMARY KEY,
        name                TEXT NOT NULL,
        email               TEXT,
        full_name           TEXT,
        password_hash       TEXT NOT NULL,
        role                TEXT NOT NULL CHECK (role IN ('Admin','ReadOnly','Agent')),
        disabled            INTEGER NOT NULL DEFAULT 0,
        created_at          INTEGER NOT NULL,
        updated_at          INTEGER NOT NULL,
        password_changed_at INTEGER NOT NULL,
        last_seen_at        INTEGER
    );
    CREATE UNIQUE INDEX users_name ON users (name COLLATE NOCASE);

    CREATE TABLE sessions (
        sid        TEXT PRIMARY KEY,
        user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX sessions_user ON sessions (user_id);

    CREATE TABLE api_keys (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL,
        role         TEXT NOT NULL CHECK (role IN ('Admin','ReadOnly','Agent')),
        jti          TEXT NOT NULL UNIQUE,
        kid          TEXT NOT NULL,
        tenant       TEXT,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        created_by   TEXT,
        last_used_at INTEGER,
        deleted_at   INTEGER
    );
    CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE deleted_at IS NULL;

    CREATE TABLE revocations (
        jti        TEXT PRIMARY KEY,
        exp        INTEGER,
        kid        TEXT,
        revoked_at INTEGER NOT NULL
    );

    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('revocations_version', '0');

    CREATE TABLE audit (
        id     INTEGER PRIMARY KEY,
        at     INTEGER NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        client TEXT
    );
    "#,
    // 2: key scopes — JSON arrays of strings, NULL for an unscoped key
    r#"
    ALTER TABLE api_keys ADD COLUMN apps TEXT;
    ALTER TABLE api_keys ADD COLUMN cidrs TEXT;
    "#,
    // fleet reports: the Node role for keys, reporting nodes, usage per app, key and node,
    // and each key's last use. The role's CHECK is widened in place (SQLite can't alter a
    // constraint; rewriting the table's schema text is its documented way to loosen one, and
    // leaves every column another migration may have added as it is).
    r#"
    PRAGMA writable_schema = ON;
    UPDATE sqlite_schema
       SET sql = replace(sql, 'CHECK (role IN (''Admin'',''ReadOnly'',''Agent''))',
                              'CHECK (role IN (''Admin'',''ReadOnly'',''Agent'',''Node''))')
     WHERE type = 'table' AND name = 'api_keys';
    PRAGMA writable_schema = RESET;

    CREATE TABLE nodes (
        name                TEXT PRIMARY KEY,
        version             TEXT NOT NULL,
        started_at          INTEGER NOT NULL,
        seq                 INTEGER NOT NULL,
        interval_seconds    INTEGER NOT NULL,
        first_seen_at       INTEGER NOT NULL,
        last_report_at      INTEGER NOT NULL,
        keyset_version      INTEGER NOT NULL,
        revocations_version INTEGER NOT NULL,
        revocations_age     INTEGER,
        stale               INTEGER NOT NULL,
        spool_entries       INTEGER NOT NULL,
        spool_bytes         INTEGER NOT NULL,
        spool_oldest        INTEGER NOT NULL,
        dead_letters        INTEGER NOT NULL,
        report_failures     INTEGER NOT NULL,
        refusals            TEXT NOT NULL
    );

    CREATE TABLE usage (
        app          TEXT NOT NULL,
        jti          TEXT NOT NULL,
        node         TEXT NOT NULL,
        key_name     TEXT NOT NULL,
        pushes       INTEGER NOT NULL,
        bytes        INTEGER NOT NULL,
        refused      INTEGER NOT NULL,
        last_push_at INTEGER NOT NULL,
        PRIMARY KEY (app, jti, node)
    );

    CREATE TABLE key_last_use (
        jti  TEXT PRIMARY KEY,
        at   INTEGER NOT NULL,
        node TEXT NOT NULL,
        app  TEXT NOT NULL
    );
    "#,
    // single sign-on: users keyed by (issuer, subject) at an OpenID provider, their groups at
    // the last sign-in (a JSON array), and sign-ins sent to the provider and not yet back
    r#"
    ALTER TABLE users ADD COLUMN sso_issuer TEXT;
    ALTER TABLE users ADD COLUMN sso_subject TEXT;
    ALTER TABLE users ADD COLUMN sso_groups TEXT;
    CREATE UNIQUE INDEX users_sso ON users (sso_issuer, sso_subject) WHERE sso_issuer IS NOT NULL;

    CREATE TABLE sso_logins (
        state      TEXT PRIMARY KEY,
        browser    TEXT NOT NULL,
        nonce      TEXT NOT NULL,
        verifier   TEXT NOT NULL,
        next       TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    "#,
    // per-key limits: a JSON object ({"pushesPerSecond", "burstPushes", "bytesPerSecond",
    // "burstBytes"}), NULL for an unlimited key
    r#"
    ALTER TABLE api_keys ADD COLUMN limits TEXT;
    ALTER TABLE api_keys ADD COLUMN last_limited_at INTEGER;
    "#,
];

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn role_of(text: String) -> rusqlite::Result<Role> {
    text.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown role {text:?}").into(),
        )
    })
}

fn ts(v: Option<i64>) -> Option<u64> {
    v.map(|v| v.max(0) as u64)
}

/// Maps a uniqueness violation to [`StoreError::Conflict`] with a user-facing message.
fn conflict_as(message: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| {
        if unique_violation(&e) {
            StoreError::Conflict(message)
        } else {
            e.into()
        }
    }
}

fn unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

const USER_COLUMNS: &str = "id, name, email, full_name, role, disabled, created_at, updated_at, password_changed_at, last_seen_at, sso_issuer, sso_groups";
/// The index of `password_hash` after [`USER_COLUMNS`].
const PASSWORD_COLUMN: usize = 12;

fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        email: row.get(2)?,
        full_name: row.get(3)?,
        role: role_of(row.get(4)?)?,
        is_disabled: row.get(5)?,
        created_at: row.get::<_, i64>(6)?.max(0) as u64,
        updated_at: row.get::<_, i64>(7)?.max(0) as u64,
        password_changed_at: row.get::<_, i64>(8)?.max(0) as u64,
        last_seen_at: ts(row.get(9)?),
        sso_issuer: row.get(10)?,
        sso_groups: string_list(row, 11)?,
    })
}

const KEY_COLUMNS: &str = "id, name, role, jti, kid, tenant, created_at, expires_at, created_by, last_used_at, apps, cidrs, limits, last_limited_at";

fn key_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        role: role_of(row.get(2)?)?,
        jti: row.get(3)?,
        kid: row.get(4)?,
        tenant: row.get(5)?,
        created_at: row.get::<_, i64>(6)?.max(0) as u64,
        expires_at: ts(row.get(7)?),
        created_by: row.get(8)?,
        last_used_at: ts(row.get(9)?),
        apps: string_list(row, 10)?,
        cidrs: string_list(row, 11)?,
        limits: key_limits(row, 12)?,
        last_limited_at: ts(row.get(13)?),
    })
}

/// A nullable column holding a key's limits as a JSON object.
fn key_limits(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<KeyLimits>> {
    row.get::<_, Option<String>>(i)?
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
            })
        })
        .transpose()
}

/// A nullable column holding a JSON array of strings.
fn string_list(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<Vec<String>>> {
    row.get::<_, Option<String>>(i)?
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
            })
        })
        .transpose()
}

impl SqliteStore {
    /// Opens (creating if needed) `<dir>/pyrogate.db` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Self> {
        // Owner-only: the database holds password hashes and the session secret.
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::Open {
                path: dir.to_owned(),
                source: rusqlite::Error::InvalidPath(format!("{}: {e}", dir.display()).into()),
            })?;
        let path = dir.join("pyrogate.db");
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        private_files(dir, &path).map_err(|e| {
            open_err(rusqlite::Error::InvalidPath(
                format!("{}: {e}", path.display()).into(),
            ))
        })?;
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(open_err)?;
        // SQLite creates the -wal and -shm files with the database file's mode; make sure
        // files left by an older version are private too.
        private_files(dir, &path).map_err(|e| {
            open_err(rusqlite::Error::InvalidPath(
                format!("{}: {e}", path.display()).into(),
            ))
        })?;
        migrate(&mut conn).map_err(open_err)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    /// Runs `f` in one transaction on the blocking pool; `immediate` takes the write lock at
    /// once, so a check and the change it allows can't interleave with another writer (this
    /// process or the CLI).
    async fn transaction<T: Send + 'static>(
        &self,
        immediate: bool,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.call(move |c| {
            let behavior = if immediate {
                rusqlite::TransactionBehavior::Immediate
            } else {
                rusqlite::TransactionBehavior::Deferred
            };
            let tx = c.transaction_with_behavior(behavior)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Runs `f` with the connection on the calling thread (CLI, tests, start-up).
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Task("database lock poisoned".into()))?;
        f(&mut conn)
    }

    /// Runs `f` on the blocking pool, so request handlers never block the async runtime.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.with(f))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// The database and its WAL/SHM files are owner-only (0600) whatever the directory's mode: they
/// hold password hashes and the session secret. A directory others can read or enter is
/// warned about at every start (the files in it are still private).
fn private_files(dir: &Path, db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::metadata(dir)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the storage directory is accessible to other users; run `chmod 700` on it (the database files are kept 0600)"
        );
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(db)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

mod fleet;
mod keys;
mod meta;
mod ops;
mod sessions;
mod sso;
mod users;

use keys::*;
use meta::*;
use sessions::*;
use sso::*;
use users::*;
