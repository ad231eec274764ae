//! The operations [`super::super::Store`] dispatches to, on PostgreSQL. Each opens one
//! transaction where the operation must be atomic; the helpers below run inside it.

use tokio_postgres::Transaction as Tx;

use super::*;

impl PgStore {
    pub async fn ping(&self) -> Result<()> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    pub async fn create_key(&self, key: NewKey) -> Result<ApiKeyRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, LOCK_KEYS).await?;
        let live = list_keys(&tx).await?;
        if crate::core::names::look_alike(&key.name, live.iter().map(|k| k.name.as_str())).is_some()
        {
            return Err(StoreError::Conflict(
                "an api key with a name that looks the same already exists",
            ));
        }
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO api_keys (name, role, jti, kid, tenant, created_at, expires_at, created_by, apps, cidrs, limits)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {KEY_COLUMNS}"
                ),
                &[
                    &key.name,
                    &key.role.as_str(),
                    &key.jti,
                    &key.kid,
                    &key.tenant,
                    &(key.created_at as i64),
                    &key.expires_at.map(|e| e as i64),
                    &key.created_by,
                    &key.apps.as_deref().map(json_list),
                    &key.cidrs.as_deref().map(json_list),
                    &key.limits.as_ref().map(json_limits),
                ],
            )
            .await
            .map_err(conflict_as("api key with this name already exists"))?;
        let record = key_row(&row)?;
        if key.limits.is_some() {
            bump(&tx, "revocations").await?;
        }
        let actor = key.created_by.as_deref().unwrap_or("system");
        let entry = AuditEntry::new(key.created_at, actor, "apikey.create", Some(&key.name));
        audit(&tx, &entry).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        list_keys(&tx).await
    }

    pub async fn find_key_by_name(&self, name: &str) -> Result<ApiKeyRecord> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE name = $1 AND deleted_at IS NULL"
                ),
                &[&name],
            )
            .await?
            .ok_or(StoreError::NotFound("api key not found"))?;
        key_row(&row)
    }

    pub async fn touch_key(&self, jti: &str, now: u64) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE api_keys SET last_used_at = $2 WHERE jti = $1",
                &[&jti, &(now as i64)],
            )
            .await?;
        Ok(())
    }

    pub async fn delete_key(&self, id: i64, now: u64, actor: &str) -> Result<(ApiKeyRecord, u64)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let out = delete_key_audited(&tx, id, now, actor).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn revoke_jti(
        &self,
        jti: &str,
        exp: Option<u64>,
        now: u64,
        actor: &str,
    ) -> Result<(Option<String>, u64)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let registered = tx
            .query_opt(
                "SELECT id FROM api_keys WHERE deleted_at IS NULL AND jti = $1",
                &[&jti],
            )
            .await?;
        let out = match registered {
            Some(row) => {
                let (record, version) =
                    delete_key_audited(&tx, row.try_get(0)?, now, actor).await?;
                (Some(record.name), version)
            }
            None => {
                revoke(&tx, jti, exp, None, now).await?;
                let version = bump(&tx, "revocations").await?;
                audit(
                    &tx,
                    &AuditEntry::new(now, actor, "apikey.revoke-jti", Some(jti)),
                )
                .await?;
                (None, version)
            }
        };
        tx.commit().await?;
        Ok(out)
    }

    pub async fn delete_keys_of_unpublished(
        &self,
        published: &[String],
        now: u64,
    ) -> Result<Vec<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut gone: Vec<(i64, String, String)> = tx
            .query(
                "UPDATE api_keys SET deleted_at = $2
                 WHERE deleted_at IS NULL AND NOT (kid = ANY($1)) RETURNING id, name, kid",
                &[&published, &(now as i64)],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_>>()?;
        gone.sort_unstable();
        for (_, name, kid) in &gone {
            let target = format!("{name} ({kid})");
            let entry = AuditEntry::new(
                now,
                "system",
                "apikey.delete.retired-signing-key",
                Some(&target),
            );
            audit(&tx, &entry).await?;
        }
        tx.commit().await?;
        Ok(gone.into_iter().map(|(_, name, _)| name).collect())
    }

    pub async fn set_key_limits(
        &self,
        id: i64,
        limits: Option<KeyLimits>,
        now: u64,
        actor: &str,
    ) -> Result<(ApiKeyRecord, u64)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE api_keys SET limits = $2 WHERE id = $1 AND deleted_at IS NULL
                     RETURNING {KEY_COLUMNS}"
                ),
                &[&id, &limits.as_ref().map(json_limits)],
            )
            .await?
            .ok_or(StoreError::NotFound("api key not found"))?;
        let record = key_row(&row)?;
        let version = bump(&tx, "revocations").await?;
        let target = format!(
            "{}: {}",
            record.name,
            limits
                .as_ref()
                .map_or("no limit".into(), KeyLimits::describe)
        );
        audit(
            &tx,
            &AuditEntry::new(now, actor, "apikey.limits", Some(&target)),
        )
        .await?;
        tx.commit().await?;
        Ok((record, version))
    }

    pub async fn bump_revocations_version(&self) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let version = bump(&tx, "revocations").await?;
        tx.commit().await?;
        Ok(version)
    }

    pub async fn revocations_version(&self) -> Result<u64> {
        let client = self.client().await?;
        counter(&**client, "revocations").await
    }

    pub async fn snapshot(&self, kids: &str, keyring: Option<u64>) -> Result<Snapshot> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The row lock orders replicas reading the snapshot for a new key set.
        let version: i64 = tx
            .query_one(
                "SELECT value FROM counters WHERE name = 'keyset' FOR UPDATE",
                &[],
            )
            .await?
            .try_get(0)?;
        if let Some(seen) = keyring
            && counter(&*tx, "keyring").await? > seen
        {
            return Err(StoreError::StaleKeyring);
        }
        let before: Option<String> = tx
            .query_opt("SELECT value FROM meta WHERE key = 'keyset.kids'", &[])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        // And the list's own counter, so no delete commits between reading the entries and
        // reading the version: every replica signing version V signs the same entries.
        tx.execute(
            "SELECT value FROM counters WHERE name = 'revocations' FOR UPDATE",
            &[],
        )
        .await?;
        let keyset_version = if before.as_deref() == Some(kids) {
            version.max(0) as u64
        } else {
            set_meta(&tx, "keyset.kids", kids).await?;
            // The first key set is news to nobody.
            if before.is_some() {
                bump(&tx, "revocations").await?;
            }
            bump(&tx, "keyset").await?
        };
        let entries = tx
            .query(
                r#"SELECT jti, exp, kid FROM revocations ORDER BY revoked_at, jti COLLATE "C""#,
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(RevocationEntry {
                    jti: r.try_get(0)?,
                    exp: ts(r.try_get(1)?),
                    kid: r.try_get(2)?,
                })
            })
            .collect::<Result<_>>()?;
        let limits = tx
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys
                     WHERE deleted_at IS NULL AND limits IS NOT NULL ORDER BY id"
                ),
                &[],
            )
            .await?
            .iter()
            .map(key_row)
            .collect::<Result<Vec<_>>>()?
            .iter()
            .filter_map(|k| Some(LimitEntry::new(&k.jti, &k.name, k.limits.as_ref()?)))
            .collect();
        let version = counter(&*tx, "revocations").await?;
        tx.commit().await?;
        Ok(Snapshot {
            version,
            entries,
            keyset_version,
            limits,
        })
    }

    pub async fn prune_revocations(
        &self,
        now: u64,
        skew: u64,
        published: &[String],
    ) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let removed = tx
            .execute(
                "DELETE FROM revocations
                 WHERE (exp IS NOT NULL AND exp + $2 <= $1)
                    OR (kid IS NOT NULL AND NOT (kid = ANY($3)))",
                &[&(now as i64), &(skew as i64), &published],
            )
            .await?;
        let version = if removed > 0 {
            bump(&tx, "revocations").await?
        } else {
            counter(&*tx, "revocations").await?
        };
        tx.commit().await?;
        Ok(version)
    }

    pub async fn count_users(&self) -> Result<u64> {
        let n: i64 = self
            .client()
            .await?
            .query_one("SELECT COUNT(*) FROM users", &[])
            .await?
            .try_get(0)?;
        Ok(n as u64)
    }

    pub async fn create_user(&self, u: NewUser, now: u64) -> Result<User> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, LOCK_USERS).await?;
        let user = insert_user(&tx, &u, now).await?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn get_user(&self, id: i64) -> Result<User> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        get_user(&tx, id).await
    }

    pub async fn find_user_for_login(&self, name: &str) -> Result<Option<(User, String)>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {USER_COLUMNS}, password_hash FROM users WHERE lower(name) = lower($1)"
                ),
                &[&name],
            )
            .await?;
        row.map(|r| Ok((user_row(&r)?, r.try_get(PASSWORD_COLUMN)?)))
            .transpose()
    }

    pub async fn password_hash(&self, id: i64) -> Result<String> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT password_hash FROM users WHERE id = $1", &[&id])
            .await?
            .ok_or(StoreError::NotFound("user not found"))?;
        Ok(row.try_get(0)?)
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let found = self
            .client()
            .await?
            .query(
                &format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"),
                &[],
            )
            .await?;
        rows(found, user_row)
    }

    pub async fn update_user(&self, id: i64, u: UserUpdate, now: u64) -> Result<User> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email),
                        full_name = COALESCE($4, full_name), updated_at = $5
                     WHERE id = $1 RETURNING {USER_COLUMNS}"
                ),
                &[&id, &u.name, &u.email, &u.full_name, &(now as i64)],
            )
            .await
            .map_err(conflict_as("user with this name already exists"))?
            .ok_or(StoreError::NotFound("user not found"))?;
        user_row(&row)
    }

    pub async fn set_password(
        &self,
        id: i64,
        hash: &str,
        now: u64,
        keep: Option<&str>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE users SET password_hash = $2, password_changed_at = $3, updated_at = $3
                 WHERE id = $1",
                &[&id, &hash, &(now as i64)],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound("user not found"));
        }
        tx.execute(
            "DELETE FROM sessions WHERE user_id = $1 AND sid IS DISTINCT FROM $2",
            &[&id, &keep],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_role(&self, id: i64, role: Role, now: u64) -> Result<User> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        keep_an_admin(&tx, id, role != Role::Admin).await?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE users SET role = $2, updated_at = $3 WHERE id = $1 RETURNING {USER_COLUMNS}"
                ),
                &[&id, &role.as_str(), &(now as i64)],
            )
            .await?
            .ok_or(StoreError::NotFound("user not found"))?;
        let user = user_row(&row)?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn set_disabled(
        &self,
        id: i64,
        disabled: bool,
        revoke_keys: bool,
        now: u64,
    ) -> Result<(User, Vec<ApiKeyRecord>)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        keep_an_admin(&tx, id, disabled).await?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE users SET disabled = $2, updated_at = $3 WHERE id = $1 RETURNING {USER_COLUMNS}"
                ),
                &[&id, &disabled, &(now as i64)],
            )
            .await?
            .ok_or(StoreError::NotFound("user not found"))?;
        let user = user_row(&row)?;
        if disabled {
            tx.execute("DELETE FROM sessions WHERE user_id = $1", &[&id])
                .await?;
        }
        let revoked = keys_of(&tx, &user, disabled && revoke_keys, now).await?;
        tx.commit().await?;
        Ok((user, revoked))
    }

    pub async fn delete_user(
        &self,
        id: i64,
        revoke_keys: bool,
        now: u64,
    ) -> Result<(User, Vec<ApiKeyRecord>)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        keep_an_admin(&tx, id, true).await?;
        let user = get_user(&tx, id).await?;
        let revoked = keys_of(&tx, &user, revoke_keys, now).await?;
        tx.execute("DELETE FROM users WHERE id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok((user, revoked))
    }

    pub async fn create_session(
        &self,
        sid: &str,
        user_id: i64,
        now: u64,
        expires_at: u64,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO sessions (sid, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            &[&sid, &user_id, &(now as i64), &(expires_at as i64)],
        )
        .await?;
        touch_user(&tx, user_id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn session_user(&self, sid: &str, user_id: i64, now: u64) -> Result<Option<User>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let live = tx
            .query_opt(
                "SELECT 1 FROM sessions WHERE sid = $1 AND user_id = $2 AND expires_at > $3",
                &[&sid, &user_id, &(now as i64)],
            )
            .await?;
        if live.is_none() {
            return Ok(None);
        }
        let user = get_user(&tx, user_id).await?;
        if user.is_disabled {
            return Ok(None);
        }
        touch_user(&tx, user_id, now).await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    pub async fn delete_session(&self, sid: &str) -> Result<()> {
        self.client()
            .await?
            .execute("DELETE FROM sessions WHERE sid = $1", &[&sid])
            .await?;
        Ok(())
    }

    /// A lease row per periodic job in `meta` (`periodic.NAME`: when it last ran): the row
    /// lock orders replicas, and only the first one past `every` seconds gets the turn.
    pub async fn claim_periodic(&self, name: &str, now: u64, every: u64) -> Result<bool> {
        let key = format!("periodic.{name}");
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, '0') ON CONFLICT (key) DO NOTHING",
                &[&key],
            )
            .await?;
        let claimed = client
            .execute(
                "UPDATE meta SET value = $2::BIGINT::TEXT
                 WHERE key = $1 AND value::BIGINT + $3 <= $2",
                &[&key, &(now as i64), &(every as i64)],
            )
            .await?;
        Ok(claimed == 1)
    }

    /// Login-throttle entries, shared by every replica: runs `f` on the entries of `keys`
    /// (`None`: none yet, or expired) while their rows are locked, then keeps what it leaves
    /// (`None`: removed). Rows are made first and locked in key order, so two logins on the
    /// same keys wait for each other and never deadlock.
    pub async fn update_login_counts<R>(
        &self,
        keys: &[String],
        now: u64,
        f: impl FnOnce(&mut [Option<(String, u64)>]) -> R,
    ) -> Result<R> {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO login_counts (key, value, expires_at)
             SELECT k, '', 0 FROM unnest($1::TEXT[]) AS k ORDER BY k
             ON CONFLICT (key) DO NOTHING",
            &[&keys],
        )
        .await?;
        let rows = tx
            .query(
                "SELECT key, value, expires_at FROM login_counts WHERE key = ANY($1)
                 ORDER BY key FOR UPDATE",
                &[&keys],
            )
            .await?;
        let mut entries: Vec<Option<(String, u64)>> = vec![None; keys.len()];
        for row in rows {
            let key: String = row.try_get(0)?;
            let expires: i64 = row.try_get(2)?;
            if let Ok(i) = keys.binary_search(&key)
                && expires > now as i64
            {
                entries[i] = Some((row.try_get(1)?, expires as u64));
            }
        }
        let out = f(&mut entries);
        for (key, entry) in keys.iter().zip(&entries) {
            match entry {
                Some((value, expires)) => {
                    tx.execute(
                        "UPDATE login_counts SET value = $2, expires_at = $3 WHERE key = $1",
                        &[key, value, &(*expires as i64)],
                    )
                    .await?
                }
                None => {
                    tx.execute("DELETE FROM login_counts WHERE key = $1", &[key])
                        .await?
                }
            };
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn prune_sessions(&self, now: u64) -> Result<usize> {
        self.client()
            .await?
            .execute(
                "DELETE FROM login_counts WHERE expires_at <= $1",
                &[&(now as i64)],
            )
            .await?;
        self.client()
            .await?
            .execute(
                "DELETE FROM sso_logins WHERE expires_at <= $1",
                &[&(now as i64)],
            )
            .await?;
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM sessions WHERE expires_at <= $1",
                &[&(now as i64)],
            )
            .await?;
        Ok(n as usize)
    }

    pub async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn init_meta(&self, key: &str, value: &str) -> Result<String> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )
            .await?;
        let row = client
            .query_one("SELECT value FROM meta WHERE key = $1", &[&key])
            .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn audit(&self, entry: AuditEntry) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        audit(&tx, &entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        let found = self
            .client()
            .await?
            .query(
                "SELECT id, at, actor, action, target, client FROM audit ORDER BY id DESC LIMIT $1",
                &[&i64::from(limit)],
            )
            .await?;
        rows(found, |r| {
            Ok(AuditRecord {
                id: r.try_get(0)?,
                at: r.try_get::<_, i64>(1)?.max(0) as u64,
                actor: r.try_get(2)?,
                action: r.try_get(3)?,
                target: r.try_get(4)?,
                client: r.try_get(5)?,
            })
        })
    }
}

/// Waits for the transaction-level advisory lock `key` (released at commit or rollback).
/// Inserts a user; run under [`LOCK_USERS`], so the look-alike check and the insert can't
/// interleave with another writer's.
pub(super) async fn insert_user(tx: &Tx<'_>, u: &NewUser, now: u64) -> Result<User> {
    let existing: Vec<String> = tx
        .query("SELECT name FROM users", &[])
        .await?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect::<Result<_>>()?;
    if crate::core::names::look_alike(&u.name, existing.iter().map(String::as_str)).is_some() {
        return Err(StoreError::Conflict(
            "a user with a name that looks the same already exists",
        ));
    }
    let now = now as i64;
    let (issuer, subject) = (
        u.sso.as_ref().map(|l| &l.issuer),
        u.sso.as_ref().map(|l| &l.subject),
    );
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO users (name, email, full_name, password_hash, role, created_at, updated_at, password_changed_at, sso_issuer, sso_subject)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7, $8) RETURNING {USER_COLUMNS}"
            ),
            &[&u.name, &u.email, &u.full_name, &u.password_hash, &u.role.as_str(), &now, &issuer, &subject],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) && u.sso.is_some() {
                StoreError::Conflict("a user already signs in with this identity")
            } else {
                conflict_as("user with this name already exists")(e)
            }
        })?;
    user_row(&row)
}

pub(super) async fn lock(tx: &Tx<'_>, key: i64) -> Result<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .await?;
    Ok(())
}

async fn list_keys(tx: &Tx<'_>) -> Result<Vec<ApiKeyRecord>> {
    let found = tx
        .query(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE deleted_at IS NULL ORDER BY id"),
            &[],
        )
        .await?;
    rows(found, key_row)
}

pub(super) async fn get_user(tx: &Tx<'_>, id: i64) -> Result<User> {
    let row = tx
        .query_opt(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
            &[&id],
        )
        .await?
        .ok_or(StoreError::NotFound("user not found"))?;
    user_row(&row)
}

async fn touch_user(tx: &Tx<'_>, id: i64, now: u64) -> Result<()> {
    tx.execute(
        "UPDATE users SET last_seen_at = $2 WHERE id = $1",
        &[&id, &(now as i64)],
    )
    .await?;
    Ok(())
}

/// Refuses a change to user `id` that would leave no enabled admin when `removes_admin`.
/// Every such change takes [`LOCK_USERS`] first, so two admins demoting each other at the
/// same moment leave one standing.
async fn keep_an_admin(tx: &Tx<'_>, id: i64, removes_admin: bool) -> Result<()> {
    lock(tx, LOCK_USERS).await?;
    if !removes_admin {
        return Ok(());
    }
    let target = get_user(tx, id).await?;
    if target.role != Role::Admin || target.is_disabled {
        return Ok(());
    }
    let others: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM users WHERE role = 'Admin' AND NOT disabled AND id <> $1",
            &[&id],
        )
        .await?
        .try_get(0)?;
    if others == 0 {
        return Err(StoreError::Conflict(
            "this is the last enabled admin; make another user an admin first",
        ));
    }
    Ok(())
}

/// Moves counter `name` by one and returns its new value; the row lock it takes orders
/// concurrent writers until commit.
/// Every other replica hears of it when the transaction commits (`NOTIFY`, see
/// [`super::listen`]).
pub(super) async fn bump(tx: &Tx<'_>, name: &str) -> Result<u64> {
    let v: i64 = tx
        .query_one(
            "UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value",
            &[&name],
        )
        .await?
        .try_get(0)?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&super::listen::CHANNEL, &name],
    )
    .await?;
    Ok(v.max(0) as u64)
}

pub(super) async fn counter(c: &impl tokio_postgres::GenericClient, name: &str) -> Result<u64> {
    let v: i64 = c
        .query_one("SELECT value FROM counters WHERE name = $1", &[&name])
        .await?
        .try_get(0)?;
    Ok(v.max(0) as u64)
}

async fn set_meta(tx: &Tx<'_>, key: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&key, &value],
    )
    .await?;
    Ok(())
}

async fn revoke(
    tx: &Tx<'_>,
    jti: &str,
    exp: Option<u64>,
    kid: Option<&str>,
    now: u64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO revocations (jti, exp, kid, revoked_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (jti) DO NOTHING",
        &[&jti, &exp.map(|e| e as i64), &kid, &(now as i64)],
    )
    .await?;
    Ok(())
}

async fn audit(tx: &Tx<'_>, e: &AuditEntry) -> Result<()> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, target, client) VALUES ($1, $2, $3, $4, $5)",
        &[&(e.at as i64), &e.actor, &e.action, &e.target, &e.client],
    )
    .await?;
    Ok(())
}

/// Marks key `id` deleted (if it still is live), revokes its `jti`, moves the list version and
/// audits it. The `UPDATE … WHERE deleted_at IS NULL` makes two concurrent deletes of one key
/// one delete and one "not found".
async fn delete_key_audited(
    tx: &Tx<'_>,
    id: i64,
    now: u64,
    actor: &str,
) -> Result<(ApiKeyRecord, u64)> {
    let row = tx
        .query_opt(
            &format!(
                "UPDATE api_keys SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL
                 RETURNING {KEY_COLUMNS}"
            ),
            &[&id, &(now as i64)],
        )
        .await?
        .ok_or(StoreError::NotFound("api key not found"))?;
    let record = key_row(&row)?;
    revoke(tx, &record.jti, record.expires_at, Some(&record.kid), now).await?;
    let version = bump(tx, "revocations").await?;
    audit(
        tx,
        &AuditEntry::new(now, actor, "apikey.delete", Some(&record.name)),
    )
    .await?;
    Ok((record, version))
}

/// With `revoke`, revokes the live keys `user` created, moving the list version once.
async fn keys_of(
    tx: &Tx<'_>,
    user: &User,
    revoke_them: bool,
    now: u64,
) -> Result<Vec<ApiKeyRecord>> {
    if !revoke_them {
        return Ok(Vec::new());
    }
    let found = tx
        .query(
            &format!(
                "UPDATE api_keys SET deleted_at = $2 WHERE deleted_at IS NULL AND created_by = $1
                 RETURNING {KEY_COLUMNS}"
            ),
            &[&format!("user:{}", user.name), &(now as i64)],
        )
        .await?;
    let mut keys = rows(found, key_row)?;
    keys.sort_unstable_by_key(|k| k.id);
    for k in &keys {
        revoke(tx, &k.jti, k.expires_at, Some(&k.kid), now).await?;
    }
    if !keys.is_empty() {
        bump(tx, "revocations").await?;
    }
    Ok(keys)
}
