//! The key-encryption key (KEK): seals private signing keys with AES-256-GCM before they are
//! stored anywhere the replicas share, so the database never holds them in plain text.
//!
//! Not wired in yet: the foundation of the shared keyring (a later step stores the keyring in
//! PostgreSQL under this key, read from `authority.key-encryption-key-file`).
//!
//! - The file holds 32 random bytes in standard base64, as `openssl rand -base64 32` writes
//!   them (surrounding whitespace ignored); anything else is refused, and errors never quote
//!   the file.
//! - A sealed value is `nonce (12 bytes) || ciphertext || tag (16 bytes)`, with a fresh random
//!   nonce each time; `aad` binds it to where it belongs (e.g. the key's `kid`), so a sealed key
//!   moved to another row does not open.

use std::path::Path;

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Bytes in a key-encryption key.
pub const KEK_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KekError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {path} must hold {KEK_LEN} random bytes in base64 (`openssl rand -base64 32`)")]
    Malformed { key: &'static str, path: String },
    /// Only for inputs near AES-GCM's limit (64 GiB).
    #[error("a value is too large to seal")]
    Seal,
    /// Wrong key, wrong `aad`, or a damaged value: AES-GCM can't tell them apart.
    #[error("a sealed value does not open with this key-encryption key")]
    Open,
}

/// A key-encryption key. Its bytes never leave it (no `Debug` of them, no accessor).
pub struct Kek(LessSafeKey);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek([redacted])")
    }
}

impl Kek {
    /// Reads the key from `path`; `key` (the setting's name) is what errors name.
    pub fn from_file(path: &Path, key: &'static str) -> Result<Self, KekError> {
        let shown = path.display().to_string();
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            KekError::Read {
                key,
                path: shown.clone(),
                source,
            }
        })?);
        let malformed = || KekError::Malformed {
            key,
            path: shown.clone(),
        };
        let bytes = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| malformed())?,
        );
        Self::from_bytes(&bytes).ok_or_else(malformed)
    }

    /// The key from its raw bytes; `None` unless there are exactly [`KEK_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEK_LEN {
            return None;
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(Kek(LessSafeKey::new(unbound)))
    }

    /// Encrypts `plaintext` bound to `aad`, under a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::core::b64::fill_random(&mut nonce);
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed[NONCE_LEN..],
            )
            .map_err(|_| KekError::Seal)?;
        sealed.extend_from_slice(tag.as_ref());
        Ok(sealed)
    }

    /// Decrypts what [`Kek::seal`] made with this key and the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, KekError> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(KekError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KekError::Open)?;
        let mut buf = zeroize::Zeroizing::new(body.to_vec());
        let plain_len = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| KekError::Open)?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "authority.key-encryption-key-file";

    fn kek(byte: u8) -> Kek {
        Kek::from_bytes(&[byte; KEK_LEN]).unwrap()
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_aad_and_never_repeat() {
        let k = kek(7);
        let a = k.seal(b"private key", b"kid-1").unwrap();
        let b = k.seal(b"private key", b"kid-1").unwrap();
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(!a.windows(11).any(|w| w == b"private key"));
        assert_eq!(&k.open(&a, b"kid-1").unwrap()[..], b"private key");
        assert!(matches!(k.open(&a, b"kid-2"), Err(KekError::Open)));
        assert!(matches!(kek(8).open(&a, b"kid-1"), Err(KekError::Open)));
        for i in 0..a.len() {
            let mut damaged = a.clone();
            damaged[i] ^= 1;
            assert!(k.open(&damaged, b"kid-1").is_err(), "byte {i}");
        }
        assert!(k.open(&a[..20], b"kid-1").is_err());
    }

    #[test]
    fn the_file_holds_32_bytes_in_base64_as_openssl_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kek");
        let encoded = base64::engine::general_purpose::STANDARD.encode([9u8; KEK_LEN]);
        std::fs::write(&file, format!("{encoded}\n")).unwrap();
        let k = Kek::from_file(&file, KEY).unwrap();
        assert_eq!(
            &kek(9).open(&k.seal(b"x", b"").unwrap(), b"").unwrap()[..],
            b"x"
        );
        assert_eq!(format!("{k:?}"), "Kek([redacted])");
        for bad in [
            base64::engine::general_purpose::STANDARD.encode([9u8; 31]),
            "c2VjcmV0LXRoYXQtaXMtbm90LWEta2V5".to_owned(),
            "not base64 at all!".to_owned(),
        ] {
            std::fs::write(&file, &bad).unwrap();
            let err = Kek::from_file(&file, KEY).unwrap_err().to_string();
            assert!(err.starts_with(KEY), "{err}");
            assert!(!err.contains(bad.trim()), "the file is never quoted: {err}");
        }
        let err = Kek::from_file(&dir.path().join("missing"), KEY)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
