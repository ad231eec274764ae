//! The shared keyring's rows (`signing_keys`) and its version (`counters.keyring`). The store
//! moves sealed bytes only: sealing, opening and the keyring's rules are `authority::keyring`'s.
//! Every change takes [`LOCK_KEYRING`] and bumps the version in its transaction, so replicas
//! changing the keyring at once apply one change after the other, and a replica that compares
//! the version notices any of them.

use tokio_postgres::Transaction as Tx;

use super::ops::{bump, counter, lock};
use super::*;

/// One signing key as the database keeps it: public facts, and the private key sealed with
/// the key-encryption key (`None` once retired).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub kid: String,
    /// `active`, `published` or `retired`.
    pub status: String,
    pub created_at: u64,
    pub retired_at: Option<u64>,
    /// The public key (RFC 8037 `x`).
    pub x: String,
    pub sealed: Option<Vec<u8>>,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKey")
            .field("kid", &self.kid)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// What a retire did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyringChange {
    /// Done; the keyring's new version.
    Done(u64),
    UnknownKid,
    Active,
    AlreadyRetired,
}

impl PgStore {
    /// The keyring's version: moves with every change made by any replica.
    pub async fn keyring_version(&self) -> Result<u64> {
        let client = self.client().await?;
        counter(&**client, "keyring").await
    }

    /// The keyring's version and keys (oldest first), read from one snapshot; no keys when
    /// none was created yet.
    pub async fn keyring_load(&self) -> Result<(u64, Vec<SealedKey>)> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let version = counter(&*tx, "keyring").await?;
        let keys = tx
            .query(
                "SELECT kid, status, created_at, retired_at, x, sealed FROM signing_keys ORDER BY seq",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(SealedKey {
                    kid: r.try_get(0)?,
                    status: r.try_get(1)?,
                    created_at: r.try_get::<_, i64>(2)?.max(0) as u64,
                    retired_at: ts(r.try_get(3)?),
                    x: r.try_get(4)?,
                    sealed: r.try_get(5)?,
                })
            })
            .collect::<Result<_>>()?;
        tx.commit().await?;
        Ok((version, keys))
    }

    /// Stores `keys` as the keyring if there is none yet; `false` (nothing written) when
    /// another replica created one first.
    pub async fn keyring_create(&self, keys: &[SealedKey]) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let created = create_keyring(&tx, keys).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Makes `new` the active key; the active one becomes published. Returns the version.
    pub async fn keyring_rotate(&self, new: &SealedKey) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, LOCK_KEYRING).await?;
        let demoted = tx
            .execute(
                "UPDATE signing_keys SET status = 'published' WHERE status = 'active'",
                &[],
            )
            .await?;
        if demoted == 0 {
            return Err(StoreError::NotFound("there is no keyring to rotate"));
        }
        insert_key(&tx, new).await?;
        let version = bump(&tx, "keyring").await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Retires published key `kid`: its sealed private key is deleted.
    pub async fn keyring_retire(&self, kid: &str, now: u64) -> Result<KeyringChange> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, LOCK_KEYRING).await?;
        let status: Option<String> = tx
            .query_opt("SELECT status FROM signing_keys WHERE kid = $1", &[&kid])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        match status.as_deref() {
            None => return Ok(KeyringChange::UnknownKid),
            Some("active") => return Ok(KeyringChange::Active),
            Some("retired") => return Ok(KeyringChange::AlreadyRetired),
            Some(_) => {}
        }
        tx.execute(
            "UPDATE signing_keys SET status = 'retired', retired_at = $2, sealed = NULL WHERE kid = $1",
            &[&kid, &(now as i64)],
        )
        .await?;
        let version = bump(&tx, "keyring").await?;
        tx.commit().await?;
        Ok(KeyringChange::Done(version))
    }
}

/// In `tx`: stores `keys` as the keyring unless one exists (then `false`).
pub(super) async fn create_keyring(tx: &Tx<'_>, keys: &[SealedKey]) -> Result<bool> {
    lock(tx, LOCK_KEYRING).await?;
    let existing: i64 = tx
        .query_one("SELECT COUNT(*) FROM signing_keys", &[])
        .await?
        .try_get(0)?;
    if existing > 0 {
        return Ok(false);
    }
    for key in keys {
        insert_key(tx, key).await?;
    }
    bump(tx, "keyring").await?;
    Ok(true)
}

async fn insert_key(tx: &Tx<'_>, k: &SealedKey) -> Result<()> {
    tx.execute(
        "INSERT INTO signing_keys (kid, status, created_at, retired_at, x, sealed)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &k.kid,
            &k.status,
            &(k.created_at as i64),
            &k.retired_at.map(|t| t as i64),
            &k.x,
            &k.sealed,
        ],
    )
    .await
    .map_err(conflict_as("a signing key with this kid already exists"))?;
    Ok(())
}
