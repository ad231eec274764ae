//! API keys and the revocation list they feed (one transaction per delete).

use super::*;

pub fn insert_key(conn: &Connection, k: &NewKey) -> Result<ApiKeyRecord> {
    conn.execute(
        "INSERT INTO api_keys (name, role, jti, kid, tenant, created_at, expires_at, created_by, apps, cidrs, limits)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            k.name,
            k.role.as_str(),
            k.jti,
            k.kid,
            k.tenant,
            k.created_at as i64,
            k.expires_at.map(|e| e as i64),
            k.created_by,
            k.apps.as_deref().map(json_list),
            k.cidrs.as_deref().map(json_list),
            k.limits.as_ref().map(json_limits)
        ],
    )
    .map_err(conflict_as("api key with this name already exists"))?;
    get_key(conn, conn.last_insert_rowid())
}

fn json_list(list: &[String]) -> String {
    serde_json::Value::from(list).to_string()
}

/// A key's limits as stored: a JSON object.
pub(crate) fn json_limits(limits: &KeyLimits) -> String {
    serde_json::to_string(limits).unwrap_or_else(|_| "{}".into())
}

/// Sets a live key's limits and moves the list version, inside the caller's transaction.
pub fn set_key_limits(
    conn: &Connection,
    id: i64,
    limits: Option<&KeyLimits>,
) -> Result<(ApiKeyRecord, u64)> {
    get_key(conn, id)?;
    conn.execute(
        "UPDATE api_keys SET limits = ?2 WHERE id = ?1",
        params![id, limits.map(json_limits)],
    )?;
    let version = bump_version(conn)?;
    Ok((get_key(conn, id)?, version))
}

/// Every live key that has a limit, oldest first.
pub fn limit_entries(conn: &Connection) -> Result<Vec<LimitEntry>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE deleted_at IS NULL AND limits IS NOT NULL ORDER BY id"
    ))?;
    let rows = stmt.query_map([], key_row)?;
    let keys: Vec<ApiKeyRecord> = rows.collect::<rusqlite::Result<_>>()?;
    Ok(keys
        .iter()
        .filter_map(|k| Some(LimitEntry::new(&k.jti, &k.name, k.limits.as_ref()?)))
        .collect())
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

/// Deletes a key and revokes its `jti`, inside the caller's transaction. Returns the deleted
/// record and the new revocation-list version.
pub fn delete_key(conn: &Connection, id: i64, now: u64) -> Result<(ApiKeyRecord, u64)> {
    let record = get_key(conn, id)?;
    mark_deleted_and_revoke(conn, &record, now)?;
    let version = bump_version(conn)?;
    Ok((record, version))
}

/// Marks a key deleted and puts its `jti` on the list (the caller moves the version).
fn mark_deleted_and_revoke(conn: &Connection, record: &ApiKeyRecord, now: u64) -> Result<()> {
    conn.execute(
        "UPDATE api_keys SET deleted_at = ?2 WHERE id = ?1",
        params![record.id, now as i64],
    )?;
    conn.execute(
        "INSERT OR IGNORE INTO revocations (jti, exp, kid, revoked_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            record.jti,
            record.expires_at.map(|e| e as i64),
            record.kid,
            now as i64
        ],
    )?;
    Ok(())
}

/// Revokes every live key `actor` created (`user:NAME`), inside the caller's transaction:
/// a disabled or deleted user's keys stop working with them. Moves the list version once if
/// anything was revoked.
pub fn delete_keys_created_by(
    conn: &Connection,
    actor: &str,
    now: u64,
) -> Result<Vec<ApiKeyRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE deleted_at IS NULL AND created_by = ?1 ORDER BY id"
    ))?;
    let keys: Vec<ApiKeyRecord> = stmt
        .query_map([actor], key_row)?
        .collect::<rusqlite::Result<_>>()?;
    for record in &keys {
        mark_deleted_and_revoke(conn, record, now)?;
    }
    if !keys.is_empty() {
        bump_version(conn)?;
    }
    Ok(keys)
}

/// The live key whose `jti` this is, if it is registered.
pub fn find_key_by_jti(conn: &Connection, jti: &str) -> Result<Option<ApiKeyRecord>> {
    Ok(conn
        .query_row(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE deleted_at IS NULL AND jti = ?1"),
            [jti],
            key_row,
        )
        .optional()?)
}

/// Revokes a `jti` that has no key record (an unregistered, offline-issued key), inside the
/// caller's transaction.
pub fn revoke_jti(
    conn: &Connection,
    jti: &str,
    exp: Option<u64>,
    kid: Option<&str>,
    now: u64,
) -> Result<u64> {
    conn.execute(
        "INSERT OR IGNORE INTO revocations (jti, exp, kid, revoked_at) VALUES (?1, ?2, ?3, ?4)",
        params![jti, exp.map(|e| e as i64), kid, now as i64],
    )?;
    bump_version(conn)
}

pub(crate) fn bump_version(conn: &Connection) -> Result<u64> {
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
    tx: &Connection,
    now: u64,
    skew: u64,
    published: &[String],
) -> Result<u64> {
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
    if removed > 0 {
        bump_version(tx)
    } else {
        revocations_version(tx)
    }
}

/// Marks every live key signed by a key no longer published as deleted: retiring a signing key
/// killed those tokens, so they should not be listed as if they worked. Returns their names.
pub fn delete_keys_of_unpublished(
    tx: &Connection,
    published: &[String],
    now: u64,
) -> Result<Vec<String>> {
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
            tx,
            &AuditEntry::new(
                now,
                "system",
                "apikey.delete.retired-signing-key",
                Some(&format!("{name} ({kid})")),
            ),
        )?;
        names.push(name);
    }
    Ok(names)
}
