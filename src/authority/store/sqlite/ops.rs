//! The operations [`super::super::Store`] dispatches to: each runs the submodules' functions
//! on the blocking pool, in one transaction where the operation must be atomic.

use super::*;

impl SqliteStore {
    pub async fn ping(&self) -> Result<()> {
        self.call(|c| {
            Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(drop)?)
        })
        .await
    }

    pub async fn create_key(&self, key: NewKey) -> Result<ApiKeyRecord> {
        self.transaction(false, move |tx| {
            let live = list_keys(tx)?;
            if crate::core::names::look_alike(&key.name, live.iter().map(|k| k.name.as_str()))
                .is_some()
            {
                return Err(StoreError::Conflict(
                    "an api key with a name that looks the same already exists",
                ));
            }
            let record = insert_key(tx, &key)?;
            if key.limits.is_some() {
                bump_version(tx)?;
            }
            let actor = key.created_by.as_deref().unwrap_or("system");
            audit(
                tx,
                &AuditEntry::new(key.created_at, actor, "apikey.create", Some(&key.name)),
            )?;
            Ok(record)
        })
        .await
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        self.call(|c| list_keys(c)).await
    }

    pub async fn find_key_by_name(&self, name: &str) -> Result<ApiKeyRecord> {
        let name = name.to_owned();
        self.call(move |c| find_key_by_name(c, &name)).await
    }

    pub async fn touch_key(&self, jti: &str, now: u64) -> Result<()> {
        let jti = jti.to_owned();
        self.call(move |c| touch_key(c, &jti, now)).await
    }

    pub async fn delete_key(&self, id: i64, now: u64, actor: &str) -> Result<(ApiKeyRecord, u64)> {
        let actor = actor.to_owned();
        self.transaction(false, move |tx| delete_key_audited(tx, id, now, &actor))
            .await
    }

    pub async fn revoke_jti(
        &self,
        jti: &str,
        exp: Option<u64>,
        now: u64,
        actor: &str,
    ) -> Result<(Option<String>, u64)> {
        let (jti, actor) = (jti.to_owned(), actor.to_owned());
        self.transaction(false, move |tx| {
            if let Some(record) = find_key_by_jti(tx, &jti)? {
                let (record, version) = delete_key_audited(tx, record.id, now, &actor)?;
                return Ok((Some(record.name), version));
            }
            let version = revoke_jti(tx, &jti, exp, None, now)?;
            audit(
                tx,
                &AuditEntry::new(now, &actor, "apikey.revoke-jti", Some(&jti)),
            )?;
            Ok((None, version))
        })
        .await
    }

    pub async fn delete_keys_of_unpublished(
        &self,
        published: &[String],
        now: u64,
    ) -> Result<Vec<String>> {
        let published = published.to_vec();
        self.transaction(false, move |tx| {
            delete_keys_of_unpublished(tx, &published, now)
        })
        .await
    }

    pub async fn set_key_limits(
        &self,
        id: i64,
        limits: Option<KeyLimits>,
        now: u64,
        actor: &str,
    ) -> Result<(ApiKeyRecord, u64)> {
        let actor = actor.to_owned();
        self.transaction(false, move |tx| {
            let (record, version) = set_key_limits(tx, id, limits.as_ref())?;
            let target = format!(
                "{}: {}",
                record.name,
                limits
                    .as_ref()
                    .map_or("no limit".into(), KeyLimits::describe)
            );
            audit(
                tx,
                &AuditEntry::new(now, &actor, "apikey.limits", Some(&target)),
            )?;
            Ok((record, version))
        })
        .await
    }

    pub async fn bump_revocations_version(&self) -> Result<u64> {
        self.transaction(false, bump_version).await
    }

    pub async fn revocations_version(&self) -> Result<u64> {
        self.call(|c| revocations_version(c)).await
    }

    pub async fn snapshot(&self, kids: &str) -> Result<Snapshot> {
        let kids = kids.to_owned();
        self.transaction(false, move |tx| {
            let keyset_version = keyset_version(tx, &kids)?;
            Ok(Snapshot {
                version: revocations_version(tx)?,
                entries: revocation_entries(tx)?,
                keyset_version,
                limits: limit_entries(tx)?,
            })
        })
        .await
    }

    pub async fn prune_revocations(
        &self,
        now: u64,
        skew: u64,
        published: &[String],
    ) -> Result<u64> {
        let published = published.to_vec();
        self.transaction(false, move |tx| {
            prune_revocations(tx, now, skew, &published)
        })
        .await
    }

    pub async fn count_users(&self) -> Result<u64> {
        self.call(|c| count_users(c)).await
    }

    pub async fn create_user(&self, user: NewUser, now: u64) -> Result<User> {
        self.transaction(false, move |tx| create_user(tx, &user, now))
            .await
    }

    pub async fn get_user(&self, id: i64) -> Result<User> {
        self.call(move |c| get_user(c, id)).await
    }

    pub async fn find_user_for_login(&self, name: &str) -> Result<Option<(User, String)>> {
        let name = name.to_owned();
        self.call(move |c| find_user_for_login(c, &name)).await
    }

    pub async fn password_hash(&self, id: i64) -> Result<String> {
        self.call(move |c| password_hash(c, id)).await
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.call(|c| list_users(c)).await
    }

    pub async fn update_user(&self, id: i64, update: UserUpdate, now: u64) -> Result<User> {
        self.call(move |c| update_user(c, id, &update, now)).await
    }

    pub async fn set_password(
        &self,
        id: i64,
        hash: &str,
        now: u64,
        keep: Option<&str>,
    ) -> Result<()> {
        let (hash, keep) = (hash.to_owned(), keep.map(str::to_owned));
        self.transaction(false, move |tx| {
            set_password(tx, id, &hash, now, keep.as_deref())
        })
        .await
    }

    pub async fn set_role(&self, id: i64, role: Role, now: u64) -> Result<User> {
        self.transaction(true, move |tx| {
            keep_an_admin(tx, id, role != Role::Admin)?;
            set_role(tx, id, role, now)
        })
        .await
    }

    pub async fn set_disabled(
        &self,
        id: i64,
        disabled: bool,
        revoke_keys: bool,
        now: u64,
    ) -> Result<(User, Vec<ApiKeyRecord>)> {
        self.transaction(true, move |tx| {
            keep_an_admin(tx, id, disabled)?;
            let user = set_disabled(tx, id, disabled, now)?;
            let revoked = keys_of(tx, &user, disabled && revoke_keys, now)?;
            Ok((user, revoked))
        })
        .await
    }

    pub async fn delete_user(
        &self,
        id: i64,
        revoke_keys: bool,
        now: u64,
    ) -> Result<(User, Vec<ApiKeyRecord>)> {
        self.transaction(true, move |tx| {
            keep_an_admin(tx, id, true)?;
            let user = get_user(tx, id)?;
            let revoked = keys_of(tx, &user, revoke_keys, now)?;
            delete_user(tx, id)?;
            Ok((user, revoked))
        })
        .await
    }

    pub async fn create_session(
        &self,
        sid: &str,
        user_id: i64,
        now: u64,
        expires_at: u64,
    ) -> Result<()> {
        let sid = sid.to_owned();
        self.transaction(false, move |tx| {
            create_session(tx, &sid, user_id, now, expires_at)?;
            touch_user(tx, user_id, now)
        })
        .await
    }

    pub async fn session_user(&self, sid: &str, user_id: i64, now: u64) -> Result<Option<User>> {
        let sid = sid.to_owned();
        self.call(move |c| {
            if session_user(c, &sid, now)? != Some(user_id) {
                return Ok(None);
            }
            let user = get_user(c, user_id)?;
            if user.is_disabled {
                return Ok(None);
            }
            touch_user(c, user_id, now)?;
            Ok(Some(user))
        })
        .await
    }

    pub async fn delete_session(&self, sid: &str) -> Result<()> {
        let sid = sid.to_owned();
        self.call(move |c| delete_session(c, &sid)).await
    }

    pub async fn prune_sessions(&self, now: u64) -> Result<usize> {
        self.call(move |c| {
            prune_sso(c, now)?;
            prune_sessions(c, now)
        })
        .await
    }

    pub async fn begin_sso(&self, pending: PendingSso) -> Result<()> {
        self.call(move |c| begin_sso(c, &pending)).await
    }

    pub async fn take_sso(&self, state: &str, now: u64) -> Result<Option<PendingSso>> {
        let state = state.to_owned();
        self.call(move |c| take_sso(c, &state, now)).await
    }

    pub async fn sso_sign_in(
        &self,
        identity: SsoIdentity,
        allow_sign_up: bool,
        now: u64,
    ) -> Result<SsoOutcome> {
        self.transaction(true, move |tx| {
            sso_sign_in(tx, &identity, allow_sign_up, now)
        })
        .await
    }

    pub async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_owned();
        self.call(move |c| get_meta(c, &key)).await
    }

    pub async fn init_meta(&self, key: &str, value: &str) -> Result<String> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.call(move |c| init_meta(c, &key, &value)).await
    }

    pub async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.call(move |c| audit(c, &entry)).await
    }

    pub async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        self.call(move |c| list_audit(c, limit)).await
    }
}

/// Deletes key `id` (revoking it) and audits it, inside the caller's transaction.
fn delete_key_audited(
    tx: &Connection,
    id: i64,
    now: u64,
    actor: &str,
) -> Result<(ApiKeyRecord, u64)> {
    let (record, version) = delete_key(tx, id, now)?;
    audit(
        tx,
        &AuditEntry::new(now, actor, "apikey.delete", Some(&record.name)),
    )?;
    Ok((record, version))
}

/// With `revoke`, revokes the live keys `user` created (inside the caller's transaction).
fn keys_of(tx: &Connection, user: &User, revoke: bool, now: u64) -> Result<Vec<ApiKeyRecord>> {
    if !revoke {
        return Ok(Vec::new());
    }
    delete_keys_created_by(tx, &format!("user:{}", user.name), now)
}
