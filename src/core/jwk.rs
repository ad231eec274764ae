//! Public keys as RFC 8037 OKP JWKs, RFC 7638 thumbprints (our `kid`), and [`KeySet`], the
//! immutable snapshot of trusted keys the verifier consults.

use foldhash::HashMap;
use std::sync::Arc;

use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};

use crate::core::b64;
pub use crate::core::crypto::VerifyingKey;

/// One public key in a JWK Set. Only Ed25519 keys are ever produced or accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwkError {
    #[error("key {index}: only kty \"OKP\" with crv \"Ed25519\" is supported")]
    UnsupportedKeyType { index: usize },
    #[error("key {index}: \"x\" is not a 32-byte base64url Ed25519 public key")]
    BadPublicKey { index: usize },
    #[error("key {index}: \"alg\" must be \"EdDSA\" and \"use\" must be \"sig\" when present")]
    BadUsage { index: usize },
    #[error("key {index}: \"kid\" {kid:?} is not the RFC 7638 thumbprint of the key ({expected})")]
    KidMismatch {
        index: usize,
        kid: String,
        expected: String,
    },
    #[error("key set holds no keys")]
    Empty,
}

impl Jwk {
    /// The published form of `key`: `kty`, `crv`, `x`, `kid` (thumbprint), `alg`, `use`.
    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: b64::encode(key.as_bytes()),
            kid: Some(thumbprint(key)),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
        }
    }
}

/// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, no spaces.
pub fn thumbprint(key: &VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        b64::encode(key.as_bytes())
    );
    b64::encode(crate::core::crypto::sha256(canonical.as_bytes()))
}

/// The keys a verifier trusts, by `kid`. Built once, shared behind an `Arc`, swapped whole.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, Trusted>,
}

/// A trusted key, with the jsonwebtoken form of it built once rather than per token.
#[derive(Debug, Clone)]
struct Trusted {
    key: VerifyingKey,
    decoding: DecodingKey,
}

impl KeySet {
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        KeySet {
            keys: keys
                .into_iter()
                .map(|key| {
                    let decoding = key.decoding_key();
                    (thumbprint(&key), Trusted { key, decoding })
                })
                .collect(),
        }
    }

    /// Validates every member of a JWK Set; a single bad key rejects the whole set so that a
    /// node never runs with a silently shrunken key set.
    pub fn from_jwks(set: &JwkSet) -> Result<Self, JwkError> {
        if set.keys.is_empty() {
            return Err(JwkError::Empty);
        }
        let mut keys = Vec::with_capacity(set.keys.len());
        for (index, jwk) in set.keys.iter().enumerate() {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                return Err(JwkError::UnsupportedKeyType { index });
            }
            if jwk.alg.as_deref().is_some_and(|a| a != "EdDSA")
                || jwk.use_.as_deref().is_some_and(|u| u != "sig")
            {
                return Err(JwkError::BadUsage { index });
            }
            // Small-order points are refused here (ring's verification would accept them).
            let key = b64::decode(&jwk.x)
                .and_then(|bytes| VerifyingKey::from_slice(&bytes).ok())
                .ok_or(JwkError::BadPublicKey { index })?;
            let expected = thumbprint(&key);
            if let Some(kid) = &jwk.kid
                && *kid != expected
            {
                return Err(JwkError::KidMismatch {
                    index,
                    kid: kid.clone(),
                    expected,
                });
            }
            keys.push(key);
        }
        Ok(KeySet::new(keys))
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid).map(|t| &t.key)
    }

    /// The key for `kid` as jsonwebtoken's [`DecodingKey`] (for [`crate::core::crypto::PROVIDER`]).
    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid).map(|t| &t.decoding)
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn to_jwks(&self) -> JwkSet {
        let mut keys: Vec<Jwk> = self
            .keys
            .values()
            .map(|t| Jwk::from_verifying_key(&t.key))
            .collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        JwkSet { keys }
    }

    pub fn into_shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8037 Appendix A (docs/token-format.md, "Test vectors").
    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    fn rfc_key() -> VerifyingKey {
        VerifyingKey::from_slice(&b64::decode(X).unwrap()).unwrap()
    }

    #[test]
    fn thumbprint_matches_rfc_8037_vector() {
        assert_eq!(thumbprint(&rfc_key()), THUMBPRINT);
    }

    #[test]
    fn published_jwk_carries_thumbprint_kid_alg_and_use() {
        let jwk = Jwk::from_verifying_key(&rfc_key());
        let json = serde_json::to_value(&jwk).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kty":"OKP","crv":"Ed25519","x":X,"kid":THUMBPRINT,"alg":"EdDSA","use":"sig"})
        );
    }

    #[test]
    fn jwks_with_a_wrong_kid_is_rejected_whole() {
        let mut jwk = Jwk::from_verifying_key(&rfc_key());
        jwk.kid = Some("not-the-thumbprint".into());
        let err = KeySet::from_jwks(&JwkSet { keys: vec![jwk] }).unwrap_err();
        assert!(matches!(err, JwkError::KidMismatch { .. }));
    }

    #[test]
    fn jwks_rejects_other_key_types_and_short_keys() {
        let mut rsa = Jwk::from_verifying_key(&rfc_key());
        rsa.kty = "RSA".into();
        assert!(KeySet::from_jwks(&JwkSet { keys: vec![rsa] }).is_err());
        let mut short = Jwk::from_verifying_key(&rfc_key());
        short.x = b64::encode([1u8; 31]);
        short.kid = None;
        assert_eq!(
            KeySet::from_jwks(&JwkSet { keys: vec![short] }).unwrap_err(),
            JwkError::BadPublicKey { index: 0 }
        );
        assert_eq!(
            KeySet::from_jwks(&JwkSet::default()).unwrap_err(),
            JwkError::Empty
        );
    }

    #[test]
    fn jwks_rejects_small_order_keys() {
        // The identity point, and an order-8 point with the sign bit set.
        let mut order8 = [0u8; 32];
        order8
            .copy_from_slice(&b64::decode("JuiVj8KyJ7BFw_SJ8u-Y8NXfrAXTxjM5sTgCiG1T_IU").unwrap());
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for bytes in [identity, order8] {
            let mut jwk = Jwk::from_verifying_key(&rfc_key());
            jwk.x = b64::encode(bytes);
            jwk.kid = None;
            assert_eq!(
                KeySet::from_jwks(&JwkSet { keys: vec![jwk] }).unwrap_err(),
                JwkError::BadPublicKey { index: 0 }
            );
        }
    }

    #[test]
    fn jwks_round_trips() {
        let set = KeySet::new([rfc_key()]);
        let again = KeySet::from_jwks(&set.to_jwks()).unwrap();
        assert!(again.contains(THUMBPRINT));
    }
}
