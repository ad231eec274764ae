//! UI sessions (server-side ids behind the signed cookie).

use super::*;

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
