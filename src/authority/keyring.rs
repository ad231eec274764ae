//! The authority's Ed25519 signing keys, kept in the keys dir:
//!
//! ```text
//! keys/
//!   keyring.json    manifest: every key's kid, status and dates (public data only)
//!   <kid>.pem       PKCS#8 private key, mode 0600, deleted when the key is retired
//! ```
//!
//! Private keys are written as RFC 8410 PKCS#8 v1 PEM, byte for byte what `openssl genpkey
//! -algorithm ed25519` writes, so `openssl pkey -in <kid>.pem -pubout` and other standard tools
//! read them. v2 (with the public key, as pyrogate wrote before it used ring) is still read and
//! checked for consistency, so existing keys dirs keep working.
//!
//! ```text
//! ```
//!
//! Exactly one key is `active` and signs. `rotate` makes a new active key and leaves the old
//! one `published`: it stays in the JWKS so the tokens it signed keep verifying. `retire`
//! removes a published key from the JWKS and deletes its private key, which invalidates every
//! token it signed — the way to end never-expiring keys in bulk.
//!
//! Like ssh, we refuse to load a private key that group or others can read. Every write goes
//! to a temporary file that is synced and renamed, so a crash leaves the old or the new state,
//! never half of one.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyringError + '_ {
    move |source| KeyringError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The keys dir, loaded: the manifest plus the private keys of every non-retired key.
pub struct Keyring {
    dir: PathBuf,
    manifest: Manifest,
    signers: BTreeMap<String, Signer>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("dir", &self.dir)
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
        let active = manifest
            .keys
            .iter()
            .filter(|k| k.status == KeyStatus::Active)
            .count();
        if active != 1 {
            return Err(KeyringError::Corrupt {
                path,
                reason: format!("expected exactly one active key, found {active}"),
            });
        }
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
            manifest,
            signers,
        })
    }

    /// Creates the first key of a new keyring. Fails if the dir already holds one.
    pub fn generate(dir: impl AsRef<Path>, now: u64) -> Result<Self, KeyringError> {
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
            manifest: Manifest::default(),
            signers: BTreeMap::new(),
        };
        ring.add_active_key(now)?;
        Ok(ring)
    }

    /// Opens the keyring, creating it with a fresh key if the dir has none (server first start).
    pub fn open_or_generate(dir: impl AsRef<Path>, now: u64) -> Result<(Self, bool), KeyringError> {
        match Keyring::open(dir.as_ref()) {
            Ok(ring) => Ok((ring, false)),
            Err(KeyringError::NotInitialized { .. }) => Ok((Keyring::generate(dir, now)?, true)),
            Err(other) => Err(other),
        }
    }

    /// Makes a new active key; the previous one stays published. Returns the new kid.
    pub fn rotate(&mut self, now: u64) -> Result<String, KeyringError> {
        self.add_active_key(now)
    }

    /// Unpublishes a non-active key and deletes its private key: every token it signed dies.
    pub fn retire(&mut self, kid: &str, now: u64) -> Result<(), KeyringError> {
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

    pub fn dir(&self) -> &Path {
        &self.dir
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
