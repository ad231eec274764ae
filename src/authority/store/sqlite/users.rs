//! Users: accounts, passwords, roles, the last-admin rule's count.

use super::*;

pub fn count_users(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))? as u64)
}

/// Creates a user. A name that looks like an existing one (same confusable skeleton, e.g.
/// `admіn` with a Cyrillic `і`) is refused like a duplicate.
pub fn create_user(conn: &Connection, u: &NewUser, now: u64) -> Result<User> {
    let existing: Vec<String> = conn
        .prepare("SELECT name FROM users")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if crate::core::names::look_alike(&u.name, existing.iter().map(String::as_str)).is_some() {
        return Err(StoreError::Conflict(
            "a user with a name that looks the same already exists",
        ));
    }
    let now = now as i64;
    conn.execute(
        "INSERT INTO users (name, email, full_name, password_hash, role, created_at, updated_at, password_changed_at, sso_issuer, sso_subject)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6, ?7, ?8)",
        params![
            u.name,
            u.email,
            u.full_name,
            u.password_hash,
            u.role.as_str(),
            now,
            u.sso.as_ref().map(|l| &l.issuer),
            u.sso.as_ref().map(|l| &l.subject),
        ],
    )
    .map_err(|e| {
        if unique_violation(&e) && u.sso.is_some() {
            StoreError::Conflict("a user already signs in with this identity")
        } else {
            conflict_as("user with this name already exists")(e)
        }
    })?;
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
            |row| Ok((user_row(row)?, row.get::<_, String>(PASSWORD_COLUMN)?)),
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

pub fn update_user(conn: &Connection, id: i64, u: &UserUpdate, now: u64) -> Result<User> {
    let changed = conn
        .execute(
            "UPDATE users SET name = COALESCE(?2, name), email = COALESCE(?3, email),
                full_name = COALESCE(?4, full_name), updated_at = ?5 WHERE id = ?1",
            params![id, u.name, u.email, u.full_name, now as i64],
        )
        .map_err(conflict_as("user with this name already exists"))?;
    if changed == 0 {
        return Err(StoreError::NotFound("user not found"));
    }
    get_user(conn, id)
}

/// Sets a new password hash and ends every session of the user but `keep` (the session that
/// made the change, if any), inside the caller's transaction.
pub fn set_password(
    tx: &Connection,
    id: i64,
    hash: &str,
    now: u64,
    keep: Option<&str>,
) -> Result<()> {
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

/// Disables (ending every session) or re-enables a user, inside the caller's transaction.
pub fn set_disabled(conn: &Connection, id: i64, disabled: bool, now: u64) -> Result<User> {
    let changed = conn.execute(
        "UPDATE users SET disabled = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, disabled, now as i64],
    )?;
    if changed == 0 {
        return Err(StoreError::NotFound("user not found"));
    }
    if disabled {
        conn.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
    }
    get_user(conn, id)
}

/// Refuses a change to user `id` that would leave no enabled admin when `removes_admin`. Run
/// inside an IMMEDIATE transaction with the change, so check and change can't interleave with
/// another request's or another process's (the CLI's): two admins demoting each other at the
/// same moment leave one standing.
pub fn keep_an_admin(conn: &Connection, id: i64, removes_admin: bool) -> Result<()> {
    if removes_admin {
        let target = get_user(conn, id)?;
        if target.role == Role::Admin && !target.is_disabled && other_enabled_admins(conn, id)? == 0
        {
            return Err(StoreError::Conflict(
                "this is the last enabled admin; make another user an admin first",
            ));
        }
    }
    Ok(())
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
