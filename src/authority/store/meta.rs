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
