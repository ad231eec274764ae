//! The authority's Ed25519 signing keys, in one of two places behind one API
//! ([`KeyringHome`]):
//!
//! - **the keys dir** (with the embedded SQLite database):
//!
//!   ```text
//!   keys/
//!     keyring.json    manifest: every key's kid, status and dates (public data only)
//!     <kid>.pem       PKCS#8 private key, mode 0600, deleted when the key is retired
//!   ```
//!
//!   Private keys are written as RFC 8410 PKCS#8 v1 PEM, byte for byte what `openssl genpkey
//!   -algorithm ed25519` writes, so `openssl pkey -in <kid>.pem -pubout` and other standard
//!   tools read them. v2 (with the public key, as pyrogate wrote before it used ring) is still
//!   read and checked for consistency, so existing keys dirs keep working. Like ssh, we refuse
//!   to load a private key that group or others can read. Every write goes to a temporary file
//!   that is synced and renamed, so a crash leaves the old or the new state, never half of one.
//!
//! - **the database** (with PostgreSQL, which every replica shares): the same facts in plain
//!   columns, each private key's PKCS#8 sealed with the key-encryption key
//!   (`authority.key-encryption-key-file`, see [`super::kek`]) with its kid as AAD, so the
//!   database never holds a private key in plain text and a sealed key copied to another row
//!   does not open. Every change bumps the keyring's version in its transaction; replicas
//!   compare it every second ([`KeyringHome::revision`]) and reload. The first replica to
//!   start on an empty database creates the keyring under a lock; the others load that one.
//!
//! Exactly one key is `active` and signs. `rotate` makes a new active key and leaves the old
//! one `published`: it stays in the JWKS so the tokens it signed keep verifying. `retire`
//! removes a published key from the JWKS and deletes its private key, which invalidates every
//! token it signed — the way to end never-expiring keys in bulk.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::authority::kek::{Kek, KekError};
use crate::authority::store::{KeyringChange, PgStore, SealedKey, Store, StoreError};
use crate::core::b64;
use crate::core::crypto::SigningKey;
use crate::core::jwk::{JwkSet, KeySet, thumbprint};
use crate::core::jws::Signer;
use crate::edge::files;

const MANIFEST: &str = "keyring.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Signs new tokens and is published.
    Active,
    /// Published so its tokens verify; no longer signs.
    Published,
    /// Gone from the JWKS; its private key is deleted and its tokens are dead.
    Retired,
}

impl std::fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyStatus::Active => "active",
            KeyStatus::Published => "published",
            KeyStatus::Retired => "retired",
        })
    }
}

/// Public facts about one key, as stored in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyInfo {
    pub kid: String,
    pub status: KeyStatus,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<u64>,
    /// The public key (RFC 8037 `x`).
    pub x: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    keys: Vec<KeyInfo>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no signing keys in {dir}; create one with `pyrogate signing-key generate --keys-dir {dir}`"
    )]
    NotInitialized { dir: PathBuf },
    #[error(
        "{dir} already has an active signing key ({kid}); use `pyrogate signing-key rotate` to replace it"
    )]
    AlreadyInitialized { dir: PathBuf, kid: String },
    #[error(
        "private key {path} is accessible by group or others (mode {mode:o}); fix it with `chmod 600 {path}`"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("no signing key with kid {0}")]
    UnknownKid(String),
    #[error("{0} is the active signing key; rotate first, then retire it")]
    RetireActive(String),
    #[error("{0} is already retired")]
    AlreadyRetired(String),
    #[error(
        "no signing keys in the database yet; `pyrogate server` creates them at its first start"
    )]
    NotInitializedInDatabase,
    #[error(
        "the database already has an active signing key ({kid}); use `pyrogate signing-key rotate` to replace it"
    )]
    AlreadyInitializedInDatabase { kid: String },
    #[error(
        "{KEK_SETTING} is required with a postgres:// database.url: the signing keys are kept in the database sealed with it (create one with `openssl rand -base64 32 > kek` and give the same file to every replica)"
    )]
    KekRequired,
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error(
        "signing key {kid} in the database does not open with {KEK_SETTING}: is it the key-encryption key the keyring was sealed with (the same file on every replica)?"
    )]
    Sealed { kid: String },
    #[error("signing keys in the database: {0}")]
    Database(#[from] StoreError),
}

/// The setting naming the key-encryption key's file.
pub const KEK_SETTING: &str = "authority.key-encryption-key-file";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyringError + '_ {
    move |source| KeyringError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A keyring, loaded: every key's public facts plus the private keys of every non-retired key.
pub struct Keyring {
    /// The keys dir; empty for a keyring loaded from the database.
    dir: PathBuf,
    /// The database's keyring version this was loaded at (`None`: from the keys dir).
    version: Option<u64>,
    manifest: Manifest,
    signers: BTreeMap<String, Signer>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("dir", &self.dir)
            .field("version", &self.version)
            .field("keys", &self.manifest.keys)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Loads an existing keyring.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, KeyringError> {
        let dir = dir.as_ref().to_owned();
        let path = dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyringError::NotInitialized { dir });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| KeyringError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        one_active(&manifest, &path)?;
        let mut signers = BTreeMap::new();
        for info in manifest
            .keys
            .iter()
            .filter(|k| k.status != KeyStatus::Retired)
        {
            let signer = load_private_key(&dir, &info.kid)?;
            signers.insert(info.kid.clone(), signer);
        }
        Ok(Keyring {
            dir,
            version: None,
            manifest,
            signers,
        })
    }

    /// Creates the first key of a new keyring. Fails if the dir already holds one.
    fn generate(dir: impl AsRef<Path>, now: u64) -> Result<Self, KeyringError> {
        let dir = dir.as_ref().to_owned();
        match Keyring::open(&dir) {
            Ok(existing) => {
                return Err(KeyringError::AlreadyInitialized {
                    kid: existing.active().kid().to_owned(),
                    dir,
                });
            }
            Err(KeyringError::NotInitialized { .. }) => {}
            Err(other) => return Err(other),
        }
        create_private_dir(&dir)?;
        let mut ring = Keyring {
            dir,
            version: None,
            manifest: Manifest::default(),
            signers: BTreeMap::new(),
        };
        ring.add_active_key(now)?;
        Ok(ring)
    }

    /// Makes a new active key; the previous one stays published. Returns the new kid.
    fn rotate(&mut self, now: u64) -> Result<String, KeyringError> {
        self.add_active_key(now)
    }

    /// Unpublishes a non-active key and deletes its private key: every token it signed dies.
    fn retire(&mut self, kid: &str, now: u64) -> Result<(), KeyringError> {
        let info = self
            .manifest
            .keys
            .iter_mut()
            .find(|k| k.kid == kid)
            .ok_or_else(|| KeyringError::UnknownKid(kid.to_owned()))?;
        match info.status {
            KeyStatus::Active => return Err(KeyringError::RetireActive(kid.to_owned())),
            KeyStatus::Retired => return Err(KeyringError::AlreadyRetired(kid.to_owned())),
            KeyStatus::Published => {}
        }
        info.status = KeyStatus::Retired;
        info.retired_at = Some(now);
        self.save_manifest()?;
        self.signers.remove(kid);
        let pem = self.dir.join(format!("{kid}.pem"));
        match fs::remove_file(&pem) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&pem)(e)),
        }
    }

    /// The database's keyring version this was loaded at; `None` for the keys dir.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Every key ever created, oldest first, retired ones included.
    pub fn keys(&self) -> &[KeyInfo] {
        &self.manifest.keys
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> &Signer {
        let kid = self
            .manifest
            .keys
            .iter()
            .find(|k| k.status == KeyStatus::Active)
            .map(|k| k.kid.as_str())
            .unwrap_or_default();
        // `open` and every mutation keep exactly one active key with its signer loaded.
        match self.signers.get(kid) {
            Some(signer) => signer,
            None => unreachable!("keyring invariant: the active key is loaded"),
        }
    }

    /// The published keys (active + published), as the verifier's key set.
    pub fn key_set(&self) -> KeySet {
        KeySet::new(self.signers.values().map(Signer::verifying_key))
    }

    /// Every published key's signer: they all sign the key-set document.
    pub fn published_signers(&self) -> Vec<Signer> {
        self.signers.values().cloned().collect()
    }

    /// The published keys as an RFC 8037 JWK Set.
    pub fn jwks(&self) -> JwkSet {
        self.key_set().to_jwks()
    }

    fn add_active_key(&mut self, now: u64) -> Result<String, KeyringError> {
        let key = SigningKey::generate();
        let kid = thumbprint(&key.verifying_key());
        let pem = key.to_pkcs8_pem();
        write_atomic(&self.dir.join(format!("{kid}.pem")), pem.as_bytes(), 0o600)?;
        for info in &mut self.manifest.keys {
            if info.status == KeyStatus::Active {
                info.status = KeyStatus::Published;
            }
        }
        self.manifest.keys.push(KeyInfo {
            kid: kid.clone(),
            status: KeyStatus::Active,
            created_at: now,
            retired_at: None,
            x: b64::encode(key.verifying_key().as_bytes()),
        });
        self.save_manifest()?;
        self.signers.insert(kid.clone(), Signer::new(key));
        Ok(kid)
    }

    fn save_manifest(&self) -> Result<(), KeyringError> {
        let mut text = serde_json::to_string_pretty(&self.manifest).unwrap_or_default();
        text.push('\n');
        write_atomic(&self.dir.join(MANIFEST), text.as_bytes(), 0o644)
    }
}

fn load_private_key(dir: &Path, kid: &str) -> Result<Signer, KeyringError> {
    let path = dir.join(format!("{kid}.pem"));
    let meta = fs::metadata(&path).map_err(io_err(&path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyringError::InsecurePermissions { path, mode });
    }
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyringError::Corrupt {
        path: path.clone(),
        reason: format!("not a PKCS#8 Ed25519 private key ({e})"),
    })?;
    let actual = thumbprint(&key.verifying_key());
    if actual != kid {
        return Err(KeyringError::Corrupt {
            path,
            reason: format!("holds key {actual}, but the manifest expects {kid}"),
        });
    }
    Ok(Signer::new(key))
}

/// Creates the keys dir readable by its owner only.
fn create_private_dir(dir: &Path) -> Result<(), KeyringError> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// [`files::write_atomic`] with the keyring's error.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyringError> {
    files::write_atomic(path, bytes, mode).map_err(io_err(path))
}

/// Refuses a manifest without exactly one active key.
fn one_active(manifest: &Manifest, path: &Path) -> Result<(), KeyringError> {
    let active = manifest
        .keys
        .iter()
        .filter(|k| k.status == KeyStatus::Active)
        .count();
    if active != 1 {
        return Err(KeyringError::Corrupt {
            path: path.to_owned(),
            reason: format!("expected exactly one active key, found {active}"),
        });
    }
    Ok(())
}

/// Where a keyring is kept; every use of the keyring goes through it.
#[derive(Clone, Debug)]
pub enum KeyringHome {
    /// The keys dir (with the embedded SQLite database).
    Dir(PathBuf),
    /// The shared database, private keys sealed with the key-encryption key.
    Database { store: PgStore, kek: Arc<Kek> },
}

/// What a keyring's change marker was when last looked at: a different value means another
/// process (the CLI, another replica) changed the keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// The manifest's modification time (keys dir).
    Modified(Option<std::time::SystemTime>),
    /// The keyring's version (database).
    Version(u64),
}

impl KeyringHome {
    /// The keys dir with SQLite; the database with PostgreSQL, whose key-encryption key
    /// ([`KEK_SETTING`]) must then be configured.
    pub fn for_store(
        store: &Store,
        keys_dir: &Path,
        kek_file: Option<&Path>,
    ) -> Result<Self, KeyringError> {
        match store.postgres() {
            None => Ok(KeyringHome::Dir(keys_dir.to_owned())),
            Some(pg) => {
                let file = kek_file.ok_or(KeyringError::KekRequired)?;
                Ok(KeyringHome::Database {
                    store: pg.clone(),
                    kek: Arc::new(Kek::from_file(file, KEK_SETTING)?),
                })
            }
        }
    }

    /// Loads the keyring.
    pub async fn open(&self) -> Result<Keyring, KeyringError> {
        match self {
            KeyringHome::Dir(dir) => Keyring::open(dir),
            KeyringHome::Database { store, kek } => {
                let (version, rows) = store.keyring_load().await?;
                unseal(version, &rows, kek)
            }
        }
    }

    /// Creates the first key of a new keyring; fails if there is one.
    pub async fn generate(&self, now: u64) -> Result<Keyring, KeyringError> {
        match self.open_or_generate(now).await? {
            (ring, true) => Ok(ring),
            (ring, false) => Err(match self {
                KeyringHome::Dir(dir) => KeyringError::AlreadyInitialized {
                    dir: dir.clone(),
                    kid: ring.active().kid().to_owned(),
                },
                KeyringHome::Database { .. } => KeyringError::AlreadyInitializedInDatabase {
                    kid: ring.active().kid().to_owned(),
                },
            }),
        }
    }

    /// Opens the keyring, creating it with a fresh key if there is none (a server's first
    /// start). With the database, replicas starting together create one keyring: the first
    /// to take the lock writes its key, the others find it there and load it.
    pub async fn open_or_generate(&self, now: u64) -> Result<(Keyring, bool), KeyringError> {
        match self {
            KeyringHome::Dir(dir) => match Keyring::open(dir) {
                Ok(ring) => Ok((ring, false)),
                Err(KeyringError::NotInitialized { .. }) => {
                    Ok((Keyring::generate(dir, now)?, true))
                }
                Err(other) => Err(other),
            },
            KeyringHome::Database { store, kek } => {
                let (version, rows) = store.keyring_load().await?;
                if !rows.is_empty() {
                    return Ok((unseal(version, &rows, kek)?, false));
                }
                let key = SigningKey::generate();
                let first = seal(&key, KeyStatus::Active, now, None, kek)?;
                let created = store.keyring_create(&[first]).await?;
                Ok((self.open().await?, created))
            }
        }
    }

    /// Makes a new active key; the previous one stays published. Returns the keyring as it
    /// is now and the new kid.
    pub async fn rotate(&self, now: u64) -> Result<(Keyring, String), KeyringError> {
        match self {
            KeyringHome::Dir(dir) => {
                let mut ring = Keyring::open(dir)?;
                let kid = ring.rotate(now)?;
                Ok((ring, kid))
            }
            KeyringHome::Database { store, kek } => {
                let key = SigningKey::generate();
                let row = seal(&key, KeyStatus::Active, now, None, kek)?;
                let kid = row.kid.clone();
                store.keyring_rotate(&row).await.map_err(|e| match e {
                    StoreError::NotFound(_) => KeyringError::NotInitializedInDatabase,
                    other => other.into(),
                })?;
                Ok((self.open().await?, kid))
            }
        }
    }

    /// Unpublishes a non-active key and deletes its private key: every token it signed dies.
    pub async fn retire(&self, kid: &str, now: u64) -> Result<Keyring, KeyringError> {
        match self {
            KeyringHome::Dir(dir) => {
                let mut ring = Keyring::open(dir)?;
                ring.retire(kid, now)?;
                Ok(ring)
            }
            KeyringHome::Database { store, .. } => {
                match store.keyring_retire(kid, now).await? {
                    KeyringChange::Done(_) => {}
                    KeyringChange::UnknownKid => {
                        return Err(KeyringError::UnknownKid(kid.to_owned()));
                    }
                    KeyringChange::Active => {
                        return Err(KeyringError::RetireActive(kid.to_owned()));
                    }
                    KeyringChange::AlreadyRetired => {
                        return Err(KeyringError::AlreadyRetired(kid.to_owned()));
                    }
                }
                self.open().await
            }
        }
    }

    /// The change marker to compare with the last one seen: cheap (a stat, or one small query).
    pub async fn revision(&self) -> Result<Revision, KeyringError> {
        match self {
            KeyringHome::Dir(dir) => Ok(Revision::Modified(
                fs::metadata(dir.join(MANIFEST))
                    .and_then(|m| m.modified())
                    .ok(),
            )),
            KeyringHome::Database { store, .. } => {
                Ok(Revision::Version(store.keyring_version().await?))
            }
        }
    }

    /// The marker of `ring` as loaded from here (no query for the database).
    pub async fn revision_of(&self, ring: &Keyring) -> Result<Revision, KeyringError> {
        match (self, ring.version) {
            (KeyringHome::Database { .. }, Some(v)) => Ok(Revision::Version(v)),
            _ => self.revision().await,
        }
    }
}

/// The AAD a sealed private key is bound to: its kid.
fn aad(kid: &str) -> Vec<u8> {
    format!("pyrogate signing key {kid}").into_bytes()
}

/// `key` as the database keeps it, its PKCS#8 sealed with `kek` (retired keys keep no
/// private key).
fn seal(
    key: &SigningKey,
    status: KeyStatus,
    created_at: u64,
    retired_at: Option<u64>,
    kek: &Kek,
) -> Result<SealedKey, KeyringError> {
    let kid = thumbprint(&key.verifying_key());
    let sealed = match status {
        KeyStatus::Retired => None,
        _ => {
            let der = zeroize::Zeroizing::new(key.to_pkcs8_der());
            Some(kek.seal(&der, &aad(&kid))?)
        }
    };
    Ok(SealedKey {
        status: status.to_string(),
        created_at,
        retired_at,
        x: b64::encode(key.verifying_key().as_bytes()),
        sealed,
        kid,
    })
}

/// Every key of `ring` as the database keeps it, sealed with `kek`: how `pyrogate database
/// copy` moves a keys dir into PostgreSQL with the same kids.
pub fn seal_all(ring: &Keyring, kek: &Kek) -> Result<Vec<SealedKey>, KeyringError> {
    ring.manifest
        .keys
        .iter()
        .map(|info| match ring.signers.get(&info.kid) {
            Some(signer) => seal(
                signer.signing_key(),
                info.status,
                info.created_at,
                info.retired_at,
                kek,
            ),
            None => Ok(SealedKey {
                kid: info.kid.clone(),
                status: KeyStatus::Retired.to_string(),
                created_at: info.created_at,
                retired_at: info.retired_at,
                x: info.x.clone(),
                sealed: None,
            }),
        })
        .collect()
}

/// The keyring the database's rows make, every private key opened with `kek` and checked
/// against its kid.
fn unseal(version: u64, rows: &[SealedKey], kek: &Kek) -> Result<Keyring, KeyringError> {
    if rows.is_empty() {
        return Err(KeyringError::NotInitializedInDatabase);
    }
    let where_ = PathBuf::from("database table signing_keys");
    let corrupt = |reason: String| KeyringError::Corrupt {
        path: where_.clone(),
        reason,
    };
    let mut manifest = Manifest::default();
    let mut signers = BTreeMap::new();
    for row in rows {
        let status = match row.status.as_str() {
            "active" => KeyStatus::Active,
            "published" => KeyStatus::Published,
            "retired" => KeyStatus::Retired,
            other => return Err(corrupt(format!("key {} has status {other:?}", row.kid))),
        };
        if status != KeyStatus::Retired {
            let sealed = row
                .sealed
                .as_deref()
                .ok_or_else(|| corrupt(format!("key {} has no private key", row.kid)))?;
            let der = kek
                .open(sealed, &aad(&row.kid))
                .map_err(|_| KeyringError::Sealed {
                    kid: row.kid.clone(),
                })?;
            let key = SigningKey::from_pkcs8_der(&der)
                .map_err(|e| corrupt(format!("key {}: not a PKCS#8 Ed25519 key ({e})", row.kid)))?;
            let actual = thumbprint(&key.verifying_key());
            if actual != row.kid {
                return Err(corrupt(format!(
                    "holds key {actual} in the row of {}",
                    row.kid
                )));
            }
            signers.insert(row.kid.clone(), Signer::new(key));
        }
        manifest.keys.push(KeyInfo {
            kid: row.kid.clone(),
            status,
            created_at: row.created_at,
            retired_at: row.retired_at,
            x: row.x.clone(),
        });
    }
    one_active(&manifest, &where_)?;
    Ok(Keyring {
        dir: PathBuf::new(),
        version: Some(version),
        manifest,
        signers,
    })
}

#[cfg(test)]
mod homes_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_8037_private_key_round_trips_through_pkcs8_pem() {
        let seed: [u8; 32] = b64::decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap()
            .try_into()
            .unwrap();
        let key = SigningKey::from_bytes(&seed);
        assert_eq!(
            b64::encode(key.verifying_key().as_bytes()),
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        let pem = key.to_pkcs8_pem();
        let again = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.verifying_key(), key.verifying_key());
        assert_eq!(again.to_pkcs8_der()[16..], seed);
    }

    #[test]
    fn rfc_8037_signature_vector() {
        let seed: [u8; 32] = b64::decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap()
            .try_into()
            .unwrap();
        let key = SigningKey::from_bytes(&seed);
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        assert_eq!(
            b64::encode(key.sign(input.as_bytes())),
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
    }
}
