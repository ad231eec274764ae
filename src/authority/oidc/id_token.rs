//! ID-token verification (OpenID Connect Core §3.1.3.7). jsonwebtoken, through the ring
//! provider, checks the signature with the one key the header's `kid` names, under the one
//! algorithm that key is for; every claim rule is checked here, with the injected clock.

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{ALLOWED, ProviderKey};
use crate::core::b64;

/// Why an ID token was refused. The messages are shown on the error page and logged; none
/// holds the token or a claim value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is malformed")]
    Malformed,
    #[error("the ID token's algorithm {0:?} is not allowed (RS256, ES256 or EdDSA only)")]
    Algorithm(String),
    #[error("the ID token is signed by a key the provider does not publish (unknown kid)")]
    UnknownKey,
    #[error("the ID token's signature does not verify")]
    BadSignature,
    #[error("the ID token was issued by another issuer")]
    Issuer,
    #[error("the ID token is for another client (aud)")]
    Audience,
    #[error("the ID token was issued to another party (azp)")]
    AuthorizedParty,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token is not valid yet (iat or nbf in the future)")]
    NotYetValid,
    #[error("the ID token's nonce does not match this sign-in")]
    Nonce,
    #[error("the ID token has no subject")]
    Subject,
}

/// What a valid ID token must say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now: u64,
    pub skew: u64,
}

/// The parts of the header that choose the key: the algorithm (from [`ALLOWED`] only) and
/// the `kid`. A header with `crit` is refused (no extension is understood).
pub fn header(token: &str) -> Result<(Algorithm, Option<String>), IdTokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::Malformed);
    };
    if token.len() > 64 * 1024 {
        return Err(IdTokenError::Malformed);
    }
    let header: Map<String, Value> = b64::decode(header)
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(IdTokenError::Malformed)?;
    if header.contains_key("crit") {
        return Err(IdTokenError::Malformed);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(IdTokenError::Malformed)?;
    let allowed = ALLOWED
        .iter()
        .find(|a| alg.parse::<Algorithm>().ok().as_ref() == Some(*a))
        .copied()
        .ok_or_else(|| IdTokenError::Algorithm(alg.chars().take(16).collect()))?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if kid.len() <= 256 => Some(kid.clone()),
        Some(_) => return Err(IdTokenError::Malformed),
    };
    Ok((allowed, kid))
}

/// The provider key for a token's header: the one with its `kid` and algorithm, or, when the
/// header names no `kid`, the only key of the algorithm.
pub fn select<'a>(
    keys: &'a [ProviderKey],
    alg: Algorithm,
    kid: Option<&str>,
) -> Option<&'a ProviderKey> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid) && k.alg == alg),
        None => {
            let mut of_alg = keys.iter().filter(|k| k.alg == alg);
            match (of_alg.next(), of_alg.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        }
    }
}

/// Verifies `token`'s signature with `key` and checks its claims; returns them.
pub fn verify(
    token: &str,
    key: &ProviderKey,
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    crate::core::crypto::install().map_err(|_| IdTokenError::BadSignature)?;
    let (alg, _) = header(token)?;
    if alg != key.alg {
        return Err(IdTokenError::UnknownKey);
    }
    let mut validation = Validation::new(key.alg);
    // Time, issuer and audience are checked below, with the injected clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(token, &key.key, &validation).map_err(|e| match e
        .kind()
    {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => IdTokenError::BadSignature,
        jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
        | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat => IdTokenError::UnknownKey,
        _ => IdTokenError::Malformed,
    })?;
    let Value::Object(claims) = data.claims else {
        return Err(IdTokenError::Malformed);
    };
    check_claims(&claims, expected)?;
    Ok(claims)
}

/// Seconds since the epoch in a JSON number (integer or not), if it is one.
fn seconds(v: Option<&Value>) -> Option<i64> {
    let v = v?;
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

/// The claim rules, on claims whose signature has been verified.
pub fn check_claims(claims: &Map<String, Value>, e: &Expected<'_>) -> Result<(), IdTokenError> {
    if claims.get("iss").and_then(Value::as_str) != Some(e.issuer) {
        return Err(IdTokenError::Issuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => return Err(IdTokenError::Audience),
    };
    if !audiences.contains(&e.client_id) {
        return Err(IdTokenError::Audience);
    }
    match claims.get("azp") {
        None if audiences.len() > 1 => return Err(IdTokenError::AuthorizedParty),
        None => {}
        Some(azp) if azp.as_str() == Some(e.client_id) => {}
        Some(_) => return Err(IdTokenError::AuthorizedParty),
    }
    let now = i64::try_from(e.now).unwrap_or(i64::MAX);
    let skew = i64::try_from(e.skew).unwrap_or(i64::MAX);
    let exp = seconds(claims.get("exp")).ok_or(IdTokenError::Malformed)?;
    if now >= exp.saturating_add(skew) {
        return Err(IdTokenError::Expired);
    }
    let iat = seconds(claims.get("iat")).ok_or(IdTokenError::Malformed)?;
    if iat > now.saturating_add(skew) {
        return Err(IdTokenError::NotYetValid);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = seconds(Some(nbf)).ok_or(IdTokenError::Malformed)?;
        if nbf > now.saturating_add(skew) {
            return Err(IdTokenError::NotYetValid);
        }
    }
    match claims.get("nonce").and_then(Value::as_str) {
        Some(nonce) if nonce == e.nonce => {}
        _ => return Err(IdTokenError::Nonce),
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() && sub.len() <= 255 => Ok(()),
        _ => Err(IdTokenError::Subject),
    }
}
