//! JWS compact serialization (RFC 7515) restricted to one algorithm: EdDSA over Ed25519
//! (RFC 8037). Every signed pyrogate document (API keys, revocation lists) goes through here;
//! they differ only in `typ`, which the caller pins.
//!
//! Signing and verifying are jsonwebtoken's (`encode`, `decode` with a [`Validation`]), over the
//! ring-backed provider in [`crate::core::crypto`]. jsonwebtoken leaves to its caller the rules
//! that give every token exactly one meaning and one spelling, so this module keeps them, as a
//! thin layer around the library call:
//!
//! - before it, without any base64 or JSON work: a size cap and a byte-class screen (three
//!   segments, base64url alphabet only), so garbage is refused in nanoseconds;
//! - before it, on the header only: exact `alg`, pinned `typ`, required `kid` that we trust, no
//!   `jku`/`jwk`/`x5u`/`x5c`/`x5t`/`crit` (present even as `null`), no unknown or duplicate
//!   member, a signature segment of exactly 64 bytes;
//! - inside it, through the claims type [`Object`]: the claims are one JSON object with no
//!   duplicate member;
//! - after it: the whole payload is valid UTF-8 with valid escapes, unknown claims included.
//!
//! Strict base64url (no padding, no `+`/`/`, no set trailing bits) is what jsonwebtoken's
//! decoder does too; the screen makes it hold before anything is decoded. See
//! docs/token-format.md and docs/architecture.md ("Choosing the crypto").

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::core::b64;
use crate::core::crypto::{self, SigningKey, VerifyingKey};
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
    encoding: EncodingKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// Signing failed: only possible if another jsonwebtoken crypto provider was installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct SignError(String);

impl From<String> for SignError {
    fn from(reason: String) -> Self {
        SignError(reason)
    }
}

impl Signer {
    pub fn new(key: SigningKey) -> Self {
        Signer {
            kid: thumbprint(&key.verifying_key()),
            encoding: key.encoding_key(),
            key,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// `{"typ":typ,"alg":"EdDSA","kid":kid}` (jsonwebtoken writes `typ` first).
    fn header(&self, typ: &str) -> Header {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        header
    }

    /// Compact JWS of `claims` through `jsonwebtoken::encode`.
    pub fn encode<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, SignError> {
        crypto::install().map_err(|e| SignError(e.to_string()))?;
        jsonwebtoken::encode(&self.header(typ), claims, &self.encoding)
            .map_err(|e| SignError(e.to_string()))
    }

    /// Compact JWS of a payload that is already JSON text (tests, raw documents). The payload
    /// is signed byte for byte. Returns an empty string, which never verifies, in the one case
    /// [`Signer::encode`] can fail; callers that can report errors use `encode`.
    pub fn sign(&self, typ: &str, payload: &[u8]) -> String {
        let signed = match serde_json::from_slice::<&serde_json::value::RawValue>(payload) {
            // A payload without surrounding whitespace is written verbatim by `encode`.
            Ok(raw) if raw.get().len() == payload.len() => self.encode(typ, &raw),
            // Anything else (whitespace, not JSON): the same header, signed by the same
            // provider over the exact bytes.
            _ => self.sign_bytes(typ, payload),
        };
        signed.unwrap_or_else(|err| {
            tracing::error!(%err, "could not sign a document");
            String::new()
        })
    }

    fn sign_bytes(&self, typ: &str, payload: &[u8]) -> Result<String, SignError> {
        crypto::install().map_err(|e| SignError(e.to_string()))?;
        let header = serde_json::to_vec(&self.header(typ)).map_err(|e| SignError(e.to_string()))?;
        let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, Algorithm::EdDSA)
                .map_err(|e| SignError(e.to_string()))?;
        Ok(format!("{input}.{signature}"))
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
    /// The whole token.
    pub token: &'a str,
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
        token,
        header,
        payload,
        signature,
        signing_input: &token[..header.len() + 1 + payload.len()],
    })
}

/// A JWS whose header passed every rule, whose signature verified, and whose claims decoded.
#[derive(Debug)]
pub struct Verified<T> {
    pub kid: String,
    /// Which of the accepted `typ`s the header named.
    pub typ: &'static str,
    pub claims: T,
    /// Set when jsonwebtoken refused the token on `exp` or `nbf` (system clock, see
    /// [`validation`]). It does so only after the signature verified, so the claims are
    /// authentic; the caller applies its own rules first, in its own order, and this verdict
    /// after them, so a token's reason does not depend on which layer saw it first.
    pub time_verdict: Option<VerifyError>,
}

/// The [`Validation`] for pyrogate documents: EdDSA only, the one issuer, no claim required by
/// the library (each document type requires its own), no `aud` rule (API keys carry none and
/// ignore unknown claims).
///
/// `time` turns on jsonwebtoken's `exp` and `nbf` checks with `skew` as leeway. jsonwebtoken
/// reads the system clock for them, so they are on only when the caller's clock is the system
/// clock; the caller checks `exp`, `nbf` and `iat` against its own clock in any case.
pub fn validation(issuer: &str, skew: u64, time: bool) -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_required_spec_claims::<&str>(&[]);
    v.set_issuer(&[issuer]);
    v.validate_aud = false;
    v.leeway = skew;
    v.validate_exp = time;
    v.validate_nbf = time;
    v
}

/// Checks the header rules, then lets `jsonwebtoken::decode` verify the signature (through
/// [`crate::core::crypto::PROVIDER`]), decode the claims and apply `validation`. Nothing from
/// the payload is interpreted before the signature has verified.
pub fn verify<T: DeserializeOwned>(
    parts: Parts<'_>,
    typs: &[&'static str],
    keys: &KeySet,
    validation: &Validation,
) -> Result<Verified<T>, VerifyError> {
    let (kid, typ) = check_header(parts.header, typs)?;
    let key = keys.decoding_key(&kid).ok_or(VerifyError::UnknownKey)?;
    if parts.signature.len() != SIGNATURE_B64 {
        return Err(VerifyError::Malformed);
    }
    if crypto::install().is_err() {
        tracing::error!("{}", crypto::ForeignProvider);
        return Err(VerifyError::BadSignature);
    }
    let (data, time_verdict) = match jsonwebtoken::decode::<Object<T>>(parts.token, key, validation)
    {
        Ok(data) => (data, None),
        // jsonwebtoken checks time only once the signature has verified and the claims
        // have decoded; decode them again (no check needed) for the caller's rules.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature
            ) =>
        {
            let data = jsonwebtoken::dangerous::insecure_decode::<Object<T>>(parts.token)
                .map_err(|e| from_jwt_error(e.kind()))?;
            (data, Some(from_jwt_error(e.kind())))
        }
        // Refused on a claim after the signature verified: an unclean payload is the
        // first reason, as it would have been had the claims been parsed whole.
        Err(e) if matches!(e.kind(), ErrorKind::InvalidIssuer) => {
            if !clean_payload(parts.payload) {
                return Err(VerifyError::Malformed);
            }
            return Err(from_jwt_error(e.kind()));
        }
        Err(e) => return Err(from_jwt_error(e.kind())),
    };
    if !clean_payload(parts.payload) {
        return Err(VerifyError::Malformed);
    }
    // Our header parse and jsonwebtoken's saw the same kid (one parser differential less).
    if data.header.kid.as_deref() != Some(kid.as_str()) {
        return Err(VerifyError::Malformed);
    }
    Ok(Verified {
        kid,
        typ,
        claims: data.claims.0,
        time_verdict,
    })
}

fn from_jwt_error(kind: &ErrorKind) -> VerifyError {
    match kind {
        ErrorKind::InvalidSignature => VerifyError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            VerifyError::UnsupportedAlgorithm
        }
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
        ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
        ErrorKind::InvalidSubject => VerifyError::InvalidClaim("sub"),
        ErrorKind::InvalidAudience => VerifyError::InvalidClaim("aud"),
        ErrorKind::InvalidEddsaKey | ErrorKind::InvalidKeyFormat | ErrorKind::Provider(_) => {
            VerifyError::BadSignature
        }
        // Base64, JSON, UTF-8, shape, claim formats: not one of our spellings.
        _ => VerifyError::Malformed,
    }
}

/// Decodes a segment without verifying anything (for `token inspect`).
pub fn decode_unverified(parts: Parts<'_>) -> Option<(serde_json::Value, serde_json::Value)> {
    let header = serde_json::from_slice(&b64::decode(parts.header)?).ok()?;
    let payload = serde_json::from_slice(&b64::decode(parts.payload)?).ok()?;
    Some((header, payload))
}

fn check_header(
    header_b64: &str,
    typs: &[&'static str],
) -> Result<(String, &'static str), VerifyError> {
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
    let typ = typs
        .iter()
        .find(|t| header.typ.as_deref() == Some(**t))
        .ok_or(VerifyError::WrongType)?;
    Ok((header.kid.ok_or(VerifyError::MissingKeyId)?, typ))
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

/// The claims type handed to `jsonwebtoken::decode`: `T`, which must come from a JSON object.
/// serde's derived structs also accept a JSON array of the field values in declaration order,
/// a second spelling no issuer writes; asking the parser for a map refuses it, and the map is
/// handed to `T` as it is read (no buffering, no second parse). serde_json skips unknown
/// members without checking their bytes, so [`verify`] checks the payload's UTF-8 and escapes
/// itself ([`clean_payload`]).
pub struct Object<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: DeserializeOwned> serde::de::Visitor<'de> for Visit<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// True when the payload segment decodes to valid UTF-8 whose `\u` escapes (never in what
/// pyrogate writes) are all valid code points, which serde_json checks when it parses the
/// whole object as a `Value` (it refuses lone surrogates).
fn clean_payload(payload_b64: &str) -> bool {
    let Some(bytes) = b64::decode(payload_b64) else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return false;
    };
    !text.contains("\\u") || serde_json::from_str::<serde_json::Value>(text).is_ok()
}
