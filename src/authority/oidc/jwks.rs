//! The provider's signing keys (its JWK Set): RSA (RS256), P-256 (ES256) and Ed25519 (EdDSA)
//! public keys, each bound to the one algorithm it may verify.

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// The algorithms an ID token may be signed with. Never `none`, never HMAC: an HMAC "key"
/// would be something the provider publishes, the classic confusion attack.
pub const ALLOWED: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// One usable key.
#[derive(Clone)]
pub struct ProviderKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// Parses a JWK Set. Keys pyrogate cannot use (encryption keys, HMAC `oct` keys, other curves,
/// malformed members, an `alg` that disagrees with the key type) are skipped, not fatal: a
/// provider publishes many kinds. `None` when the document is not a JWK Set at all.
pub fn parse(body: &[u8]) -> Option<Vec<ProviderKey>> {
    let set: RawSet = serde_json::from_slice(body).ok()?;
    Some(
        set.keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<RawKey>(v).ok())
            .filter_map(usable)
            .collect(),
    )
}

fn usable(k: RawKey) -> Option<ProviderKey> {
    if k.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let b64 = |s: &Option<String>| s.as_deref().and_then(crate::core::b64::decode);
    let (alg, key) = match (k.kty.as_str(), k.crv.as_deref()) {
        ("RSA", _) => {
            let (n, e) = (b64(&k.n)?, b64(&k.e)?);
            // ring verifies 2048- to 8192-bit moduli; anything else is refused up front.
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if !(2048..=8192).contains(&bits) || e.is_empty() || e.len() > 8 {
                return None;
            }
            (
                Algorithm::RS256,
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        ("EC", Some("P-256")) => {
            let (x, y) = (b64(&k.x)?, b64(&k.y)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let key = DecodingKey::from_ec_components(k.x.as_deref()?, k.y.as_deref()?).ok()?;
            (Algorithm::ES256, key)
        }
        ("OKP", Some("Ed25519")) => {
            let x = b64(&k.x)?;
            if x.len() != 32 {
                return None;
            }
            let key = DecodingKey::from_ed_components(k.x.as_deref()?).ok()?;
            (Algorithm::EdDSA, key)
        }
        _ => return None,
    };
    if let Some(named) = &k.alg
        && named.parse::<Algorithm>().ok() != Some(alg)
    {
        return None;
    }
    Some(ProviderKey {
        kid: k.kid,
        alg,
        key,
    })
}
