//! Settings kept in the database (the session secret) and the audit log.

use super::*;

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

/// Sets `key` to `value`.
pub fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
        params![key, value],
    )?;
    Ok(())
}

/// The key-set version for the published `kids` (sorted, comma-joined): the stored version
/// if they are the ones it was given for, else the next one, stored with them. A change also
/// moves the revocation list's version, so long-polling nodes hear of it at once (a retired
/// key must stop working as fast as a deleted API key).
pub fn keyset_version(tx: &Connection, kids: &str) -> Result<u64> {
    let version: u64 = get_meta(tx, "keyset.version")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let before = get_meta(tx, "keyset.kids")?;
    let version = if before.as_deref() == Some(kids) {
        version
    } else {
        let next = version + 1;
        set_meta(tx, "keyset.version", &next.to_string())?;
        set_meta(tx, "keyset.kids", kids)?;
        // The first key set is news to nobody.
        if before.is_some() {
            super::keys::bump_version(tx)?;
        }
        next
    };
    Ok(version)
}

pub fn audit(conn: &Connection, e: &AuditEntry) -> Result<()> {
    conn.execute(
        "INSERT INTO audit (at, actor, action, target, client) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![e.at as i64, e.actor, e.action, e.target, e.client],
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
