//! The authority's SQLite database: users, sessions, API-key metadata, revocations, audit.
//! Never on an ingest node's request path.
//!
//! - One file, `<storage-path>/pyrogate.db`, in WAL mode with `synchronous=FULL`: every
//!   acknowledged change survives a crash, and a crash mid-write leaves the last committed state.
//! - Migrations are embedded and versioned with `PRAGMA user_version`; each runs in its own
//!   transaction.
//! - API keys are stored as metadata only (never the token). The `jti` — the revocation handle —
//!   is a NOT NULL column of the same row, so a key can't exist without it. Deleting a key marks
//!   the row deleted, adds the `jti` to `revocations` and bumps the list version in one
//!   transaction.
//! - One connection behind a mutex; async callers go through `spawn_blocking`. The authority's
//!   write rate is a human's, so a pool would buy nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;

use crate::core::revocation::RevocationEntry;
use crate::core::token::Role;

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
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A uniqueness rule was broken; the message is user-facing.
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(String),
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser<'a> {
    pub name: &'a str,
    pub email: Option<&'a str>,
    pub full_name: Option<&'a str>,
    pub password_hash: &'a str,
    pub role: Role,
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

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
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

const USER_COLUMNS: &str = "id, name, email, full_name, role, disabled, created_at, updated_at, password_changed_at, last_seen_at";

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
    })
}

const KEY_COLUMNS: &str =
    "id, name, role, jti, kid, tenant, created_at, expires_at, created_by, last_used_at";

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
    })
}

impl Store {
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
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(open_err)?;
        migrate(&mut conn).map_err(open_err)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

// ---- users -------------------------------------------------------------------------------

pub fn count_users(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))? as u64)
}

pub fn create_user(conn: &Connection, u: &NewUser<'_>, now: u64) -> Result<User> {
    let now = now as i64;
    conn.execute(
        "INSERT INTO users (name, email, full_name, password_hash, role, created_at, updated_at, password_changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)",
        params![u.name, u.email, u.full_name, u.password_hash, u.role.as_str(), now],
    )
    .map_err(conflict_as("user with this name already exists"))?;
    get_user(conn, conn.last_insert_rowid())
}

pub fn get_user(conn: &Connection, id: i64) -> Result<User> {
    conn.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
        [id],
        user_row,
    )
    .optional()?
    .ok_or(StoreError::NotFound("user not found"))
}

/// The user and their password hash, for login.
pub fn find_user_for_login(conn: &Connection, name: &str) -> Result<Option<(User, String)>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {USER_COLUMNS}, password_hash FROM users WHERE name = ?1 COLLATE NOCASE"
            ),
            [name],
            |row| Ok((user_row(row)?, row.get::<_, String>(10)?)),
        )
        .optional()?)
}

pub fn password_hash(conn: &Connection, id: i64) -> Result<String> {
    conn.query_row("SELECT password_hash FROM users WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or(StoreError::NotFound("user not found"))
}

pub fn list_users(conn: &Connection) -> Result<Vec<User>> {
    let mut stmt = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))?;
    let rows = stmt.query_map([], user_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn update_user(
    conn: &Connection,
    id: i64,
    name: Option<&str>,
    email: Option<&str>,
    full_name: Option<&str>,
    now: u64,
) -> Result<User> {
    let changed = conn
        .execute(
            "UPDATE users SET name = COALESCE(?2, name), email = COALESCE(?3, email),
                full_name = COALESCE(?4, full_name), updated_at = ?5 WHERE id = ?1",
            params![id, name, email, full_name, now as i64],
        )
        .map_err(conflict_as("user with this name already exists"))?;
    if changed == 0 {
        return Err(StoreError::NotFound("user not found"));
    }
    get_user(conn, id)
}

/// Sets a new password hash and ends every session of the user but `keep` (the session that
/// made the change, if any).
pub fn set_password(
    conn: &mut Connection,
    id: i64,
    hash: &str,
    now: u64,
    keep: Option<&str>,
) -> Result<()> {
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE users SET password_hash = ?2, password_changed_at = ?3, updated_at = ?3 WHERE id = ?1",
        params![id, hash, now as i64],
    )?;
    if changed == 0 {
        return Err(StoreError::NotFound("user not found"));
    }
    tx.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND sid IS NOT ?2",
        params![id, keep],
    )?;
    tx.commit()?;
    Ok(())
}

pub fn set_role(conn: &Connection, id: i64, role: Role, now: u64) -> Result<User> {
    let changed = conn.execute(
        "UPDATE users SET role = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, role.as_str(), now as i64],
    )?;
    if changed == 0 {
        return Err(StoreError::NotFound("user not found"));
    }
    get_user(conn, id)
}

/// Disables (ending every session) or re-enables a user.
pub fn set_disabled(conn: &mut Connection, id: i64, disabled: bool, now: u64) -> Result<User> {
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE users SET disabled = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, disabled, now as i64],
    )?;
    if changed == 0 {
        return Err(StoreError::NotFound("user not found"));
    }
    if disabled {
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
    }
    tx.commit()?;
    get_user(conn, id)
}

pub fn delete_user(conn: &Connection, id: i64) -> Result<()> {
    if conn.execute("DELETE FROM users WHERE id = ?1", [id])? == 0 {
        return Err(StoreError::NotFound("user not found"));
    }
    Ok(())
}

/// Number of enabled admins other than `except`.
pub fn other_enabled_admins(conn: &Connection, except: i64) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM users WHERE role = 'Admin' AND disabled = 0 AND id != ?1",
        [except],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

pub fn touch_user(conn: &Connection, id: i64, now: u64) -> Result<()> {
    conn.execute(
        "UPDATE users SET last_seen_at = ?2 WHERE id = ?1",
        params![id, now as i64],
    )?;
    Ok(())
}

// ---- sessions ----------------------------------------------------------------------------

pub fn create_session(
    conn: &Connection,
    sid: &str,
    user_id: i64,
    now: u64,
    expires_at: u64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO sessions (sid, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![sid, user_id, now as i64, expires_at as i64],
    )?;
    Ok(())
}

/// The user of a live session, if the session exists and has not expired.
pub fn session_user(conn: &Connection, sid: &str, now: u64) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT user_id FROM sessions WHERE sid = ?1 AND expires_at > ?2",
            params![sid, now as i64],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn delete_session(conn: &Connection, sid: &str) -> Result<()> {
    conn.execute("DELETE FROM sessions WHERE sid = ?1", [sid])?;
    Ok(())
}

pub fn prune_sessions(conn: &Connection, now: u64) -> Result<usize> {
    Ok(conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now as i64])?)
}

// ---- API keys and revocations ------------------------------------------------------------

pub struct NewKey<'a> {
    pub name: &'a str,
    pub role: Role,
    pub jti: &'a str,
    pub kid: &'a str,
    pub tenant: Option<&'a str>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub created_by: Option<&'a str>,
}

pub fn insert_key(conn: &Connection, k: &NewKey<'_>) -> Result<ApiKeyRecord> {
    conn.execute(
        "INSERT INTO api_keys (name, role, jti, kid, tenant, created_at, expires_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            k.name,
            k.role.as_str(),
            k.jti,
            k.kid,
            k.tenant,
            k.created_at as i64,
            k.expires_at.map(|e| e as i64),
            k.created_by
        ],
    )
    .map_err(conflict_as("api key with this name already exists"))?;
    get_key(conn, conn.last_insert_rowid())
}

pub fn get_key(conn: &Connection, id: i64) -> Result<ApiKeyRecord> {
    conn.query_row(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1 AND deleted_at IS NULL"),
        [id],
        key_row,
    )
    .optional()?
    .ok_or(StoreError::NotFound("api key not found"))
}

pub fn find_key_by_name(conn: &Connection, name: &str) -> Result<ApiKeyRecord> {
    conn.query_row(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE name = ?1 AND deleted_at IS NULL"),
        [name],
        key_row,
    )
    .optional()?
    .ok_or(StoreError::NotFound("api key not found"))
}

pub fn list_keys(conn: &Connection) -> Result<Vec<ApiKeyRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE deleted_at IS NULL ORDER BY id"
    ))?;
    let rows = stmt.query_map([], key_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn touch_key(conn: &Connection, jti: &str, now: u64) -> Result<()> {
    conn.execute(
        "UPDATE api_keys SET last_used_at = ?2 WHERE jti = ?1",
        params![jti, now as i64],
    )?;
    Ok(())
}

/// Deletes a key and revokes its `jti` in one transaction. Returns the deleted record and the
/// new revocation-list version.
pub fn delete_key(conn: &mut Connection, id: i64, now: u64) -> Result<(ApiKeyRecord, u64)> {
    let tx = conn.transaction()?;
    let record = get_key(&tx, id)?;
    tx.execute(
        "UPDATE api_keys SET deleted_at = ?2 WHERE id = ?1",
        params![id, now as i64],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO revocations (jti, exp, kid, revoked_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            record.jti,
            record.expires_at.map(|e| e as i64),
            record.kid,
            now as i64
        ],
    )?;
    let version = bump_version(&tx)?;
    tx.commit()?;
    Ok((record, version))
}

/// Revokes a `jti` that has no key record (an unregistered, offline-issued key).
pub fn revoke_jti(
    conn: &mut Connection,
    jti: &str,
    exp: Option<u64>,
    kid: Option<&str>,
    now: u64,
) -> Result<u64> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO revocations (jti, exp, kid, revoked_at) VALUES (?1, ?2, ?3, ?4)",
        params![jti, exp.map(|e| e as i64), kid, now as i64],
    )?;
    let version = bump_version(&tx)?;
    tx.commit()?;
    Ok(version)
}

fn bump_version(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row(
        "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revocations_version'
         RETURNING CAST(value AS INTEGER)",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

pub fn revocations_version(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'revocations_version'",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

pub fn revocation_entries(conn: &Connection) -> Result<Vec<RevocationEntry>> {
    let mut stmt =
        conn.prepare("SELECT jti, exp, kid FROM revocations ORDER BY revoked_at, jti")?;
    let rows = stmt.query_map([], |r| {
        Ok(RevocationEntry {
            jti: r.get(0)?,
            exp: ts(r.get(1)?),
            kid: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Drops entries whose tokens expired more than `skew` ago or whose signing key is no longer
/// published; bumps the version if anything went. Returns the (possibly new) version.
pub fn prune_revocations(
    conn: &mut Connection,
    now: u64,
    skew: u64,
    published: &[String],
) -> Result<u64> {
    let tx = conn.transaction()?;
    let mut removed = tx.execute(
        "DELETE FROM revocations WHERE exp IS NOT NULL AND exp + ?2 <= ?1",
        params![now as i64, skew as i64],
    )?;
    let kids: Vec<String> = {
        let mut stmt = tx.prepare("SELECT DISTINCT kid FROM revocations WHERE kid IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for kid in kids.iter().filter(|k| !published.contains(k)) {
        removed += tx.execute("DELETE FROM revocations WHERE kid = ?1", [kid])?;
    }
    let version = if removed > 0 {
        bump_version(&tx)?
    } else {
        revocations_version(&tx)?
    };
    tx.commit()?;
    Ok(version)
}

/// Marks every live key signed by a key no longer published as deleted: retiring a signing key
/// killed those tokens, so they should not be listed as if they worked. Returns their names.
pub fn delete_keys_of_unpublished(
    conn: &mut Connection,
    published: &[String],
    now: u64,
) -> Result<Vec<String>> {
    let tx = conn.transaction()?;
    let live: Vec<(i64, String, String)> = {
        let mut stmt = tx.prepare("SELECT id, name, kid FROM api_keys WHERE deleted_at IS NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut names = Vec::new();
    for (id, name, kid) in live
        .into_iter()
        .filter(|(_, _, kid)| !published.contains(kid))
    {
        tx.execute(
            "UPDATE api_keys SET deleted_at = ?2 WHERE id = ?1",
            params![id, now as i64],
        )?;
        audit(
            &tx,
            now,
            "system",
            "apikey.delete.retired-signing-key",
            Some(&format!("{name} ({kid})")),
            None,
        )?;
        names.push(name);
    }
    tx.commit()?;
    Ok(names)
}

// ---- meta and audit ----------------------------------------------------------------------

pub fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Sets `key` only if it is not set yet; returns the value that is stored.
pub fn init_meta(conn: &Connection, key: &str, value: &str) -> Result<String> {
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
        params![key, value],
    )?;
    get_meta(conn, key)?.ok_or(StoreError::NotFound("meta value vanished"))
}

pub fn audit(
    conn: &Connection,
    now: u64,
    actor: &str,
    action: &str,
    target: Option<&str>,
    client: Option<&str>,
) -> Result<()> {
    conn.execute(
        "INSERT INTO audit (at, actor, action, target, client) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now as i64, actor, action, target, client],
    )?;
    Ok(())
}

pub fn list_audit(conn: &Connection, limit: u32) -> Result<Vec<AuditRecord>> {
    let mut stmt = conn.prepare(
        "SELECT id, at, actor, action, target, client FROM audit ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(AuditRecord {
            id: r.get(0)?,
            at: r.get::<_, i64>(1)?.max(0) as u64,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            client: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn key<'a>(name: &'a str, jti: &'a str) -> NewKey<'a> {
        NewKey {
            name,
            role: Role::Agent,
            jti,
            kid: "k1",
            tenant: None,
            created_at: 100,
            expires_at: Some(1000),
            created_by: Some("admin"),
        }
    }

    #[test]
    fn deleting_a_key_revokes_its_jti_and_bumps_the_version() {
        let (_d, s) = store();
        s.with(|c| {
            let k = insert_key(c, &key("ci", "jti-1"))?;
            assert_eq!(revocations_version(c)?, 0);
            let (_, v) = delete_key(c, k.id, 200)?;
            assert_eq!(v, 1);
            let entries = revocation_entries(c)?;
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].jti, "jti-1");
            assert_eq!(entries[0].exp, Some(1000));
            assert!(matches!(get_key(c, k.id), Err(StoreError::NotFound(_))));
            // The name is free again.
            insert_key(c, &key("ci", "jti-2"))?;
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn live_key_names_are_unique() {
        let (_d, s) = store();
        s.with(|c| {
            insert_key(c, &key("ci", "a"))?;
            let err = insert_key(c, &key("ci", "b")).unwrap_err();
            assert_eq!(err.to_string(), "api key with this name already exists");
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn pruning_drops_expired_and_unpublished_entries() {
        let (_d, s) = store();
        s.with(|c| {
            revoke_jti(c, "old", Some(100), Some("k1"), 50)?;
            revoke_jti(c, "forever", None, Some("k1"), 50)?;
            revoke_jti(c, "retired", None, Some("k0"), 50)?;
            let v = revocations_version(c)?;
            let v2 = prune_revocations(c, 1000, 60, &["k1".to_owned()])?;
            assert_eq!(v2, v + 1);
            let left: Vec<String> = revocation_entries(c)?.into_iter().map(|e| e.jti).collect();
            assert_eq!(left, vec!["forever".to_owned()]);
            assert_eq!(prune_revocations(c, 1000, 60, &["k1".to_owned()])?, v2);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.with(|c| {
                create_user(
                    c,
                    &NewUser {
                        name: "alice",
                        email: None,
                        full_name: None,
                        password_hash: "h",
                        role: Role::Admin,
                    },
                    1,
                )?;
                Ok(())
            })
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let users = s.with(|c| list_users(c)).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].name, "alice");
    }
}
