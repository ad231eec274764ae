//! JWS compact serialization (RFC 7515) restricted to one algorithm: EdDSA over Ed25519
//! (RFC 8037). Every pyrogate token kind (API keys, UI sessions, revocation lists) goes through
//! here; they differ only in `typ`, which the caller pins.
//!
//! Why not a general JWT library: the rules we need (exact `alg`, pinned `typ`, required `kid`,
//! no `jku`/`jwk`/`x5u`/`x5c`/`crit`, strict base64url, one spelling per token) are the ones a
//! general library leaves to the caller, and a single-algorithm parser has no algorithm
//! confusion to get wrong. See docs/token-format.md.

use ed25519_dalek::{Signature, Signer as _, SigningKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::core::b64;
use crate::core::error::VerifyError;
use crate::core::jwk::{KeySet, thumbprint};

/// Longest header segment we will decode (ours are ~110 characters).
const MAX_HEADER_B64: usize = 512;
/// Base64url length of a 64-byte Ed25519 signature.
const SIGNATURE_B64: usize = 86;

/// A signing key with its `kid`. Debug never prints the key.
#[derive(Clone)]
pub struct Signer {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("key", &"[redacted]")
            .finish()
    }
}

#[derive(Serialize)]
struct OutHeader<'a> {
    alg: &'static str,
    typ: &'a str,
    kid: &'a str,
}

impl Signer {
    pub fn new(key: SigningKey) -> Self {
        Signer {
            kid: thumbprint(&key.verifying_key()),
            key,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// Compact JWS of `payload` with header `{"alg":"EdDSA","typ":typ,"kid":kid}`.
    pub fn sign(&self, typ: &str, payload: &[u8]) -> String {
        let header = OutHeader {
            alg: "EdDSA",
            typ,
            kid: &self.kid,
        };
        // Serializing three string fields cannot fail.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut out = b64::encode(header);
        out.push('.');
        out.push_str(&b64::encode(payload));
        let signature = self.key.sign(out.as_bytes());
        out.push('.');
        out.push_str(&b64::encode(signature.to_bytes()));
        out
    }
}

/// Header parameters we understand. Anything else is malformed; the dangerous ones are named so
/// the rejection says why.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
    #[serde(default, deserialize_with = "present")]
    x5t: bool,
    #[serde(rename = "x5t#S256", default, deserialize_with = "present")]
    x5t_s256: bool,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// The pieces of a compact JWS, found without decoding anything.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
}

/// Cheap structural screen, run before anything is hashed or decoded: bounded length, exactly
/// three segments, base64url alphabet only. Garbage stops here in well under a microsecond.
pub fn split(token: &str, max_len: usize) -> Result<Parts<'_>, VerifyError> {
    if token.len() > max_len {
        return Err(VerifyError::TooLarge);
    }
    // Branch-free classification of every byte (the compiler vectorizes this loop); the dot
    // positions are looked up only for a token that passes.
    let (mut bad, mut dots) = (false, 0usize);
    // u8 counters per 255-byte chunk keep the loop vectorizable without overflow.
    for chunk in token.as_bytes().chunks(255) {
        let mut chunk_dots = 0u8;
        for &b in chunk {
            let letter = (b | 0x20).wrapping_sub(b'a') < 26;
            let digit = b.wrapping_sub(b'0') < 10;
            let dot = b == b'.';
            bad |= !(letter | digit | dot | (b == b'-') | (b == b'_'));
            chunk_dots += u8::from(dot);
        }
        dots += usize::from(chunk_dots);
    }
    if bad || dots != 2 {
        return Err(VerifyError::Malformed);
    }
    let (header, rest) = token.split_once('.').ok_or(VerifyError::Malformed)?;
    let (payload, signature) = rest.split_once('.').ok_or(VerifyError::Malformed)?;
    Ok(Parts {
        header,
        payload,
        signature,
        signing_input: &token[..header.len() + 1 + payload.len()],
    })
}

/// A JWS whose header passed every rule and whose signature verified.
#[derive(Debug)]
pub struct Verified {
    pub kid: String,
    pub payload: Vec<u8>,
}

/// Checks header rules, then the signature, and only then decodes the payload: nothing from
/// an unauthenticated payload is ever interpreted.
pub fn verify(parts: Parts<'_>, typ: &str, keys: &KeySet) -> Result<Verified, VerifyError> {
    let kid = check_header(parts.header, typ)?;
    let key = keys.get(&kid).ok_or(VerifyError::UnknownKey)?;
    let signature = decode_signature(parts.signature)?;
    key.verify_strict(parts.signing_input.as_bytes(), &signature)
        .map_err(|_| VerifyError::BadSignature)?;
    let payload = b64::decode(parts.payload).ok_or(VerifyError::Malformed)?;
    Ok(Verified { kid, payload })
}

/// Decodes a segment without verifying anything (for `token inspect`).
pub fn decode_unverified(parts: Parts<'_>) -> Option<(serde_json::Value, serde_json::Value)> {
    let header = serde_json::from_slice(&b64::decode(parts.header)?).ok()?;
    let payload = serde_json::from_slice(&b64::decode(parts.payload)?).ok()?;
    Some((header, payload))
}

fn check_header(header_b64: &str, typ: &str) -> Result<String, VerifyError> {
    if header_b64.len() > MAX_HEADER_B64 {
        return Err(VerifyError::Malformed);
    }
    let bytes = b64::decode(header_b64).ok_or(VerifyError::Malformed)?;
    let header: RawHeader = from_json_object(&bytes)?;
    if header.alg.as_deref() != Some("EdDSA") {
        return Err(VerifyError::UnsupportedAlgorithm);
    }
    for (name, set) in [
        ("jku", header.jku),
        ("jwk", header.jwk),
        ("x5u", header.x5u),
        ("x5c", header.x5c),
        ("x5t", header.x5t),
        ("x5t#S256", header.x5t_s256),
        ("crit", header.crit),
    ] {
        if set {
            return Err(VerifyError::ForbiddenHeader(name));
        }
    }
    if header.typ.as_deref() != Some(typ) {
        return Err(VerifyError::WrongType);
    }
    header.kid.ok_or(VerifyError::MissingKeyId)
}

/// Parses a JOSE header or claims set, which must be a JSON object (RFC 7515 §4, RFC 7519 §7.2).
/// serde's derived structs also accept a JSON array of the field values in declaration order,
/// a second spelling no issuer writes; refuse it before parsing.
pub fn from_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, VerifyError> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(VerifyError::Malformed);
    }
    serde_json::from_slice(bytes).map_err(|_| VerifyError::Malformed)
}

fn decode_signature(text: &str) -> Result<Signature, VerifyError> {
    if text.len() != SIGNATURE_B64 {
        return Err(VerifyError::Malformed);
    }
    let bytes: [u8; 64] = b64::decode(text)
        .and_then(|b| b.try_into().ok())
        .ok_or(VerifyError::Malformed)?;
    Ok(Signature::from_bytes(&bytes))
}
