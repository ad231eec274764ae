//! Shared helpers: keys from fixed or random seeds, a verifier on a manual clock, issued tokens,
//! and hand-crafted tokens whose header and claims are raw JSON text behind a VALID signature,
//! so that every claim rule is tested past the signature check.

use std::sync::Arc;

use pyrogate::core::clock::ManualClock;
use pyrogate::core::crypto::SigningKey;
use pyrogate::core::jwk::KeySet;
use pyrogate::core::jws::Signer;
use pyrogate::core::revocation::{RevocationEntry, RevocationList};
use pyrogate::core::token::{self, API_KEY_TYP, KeyRequest, Role};
use pyrogate::core::verifier::{Verifier, VerifierConfig};

/// The fixed "now" of every verifier test (2027-01-15).
pub const NOW: u64 = 1_800_000_000;
pub const ISSUER: &str = "pyrogate";
pub const SKEW: u64 = 60;
/// A well-formed 22-character `jti` for crafted tokens.
pub const JTI: &str = "AAECAwQFBgcICQoLDA0ODw";

/// A revocation list (version 1, issued at [`NOW`]) naming the one `jti`, its entry kept
/// until `exp` (`None`: the key never expires).
pub fn revoking(jti: &str, exp: Option<u64>) -> RevocationList {
    RevocationList {
        ksv: None,
        limits: None,
        iss: ISSUER.into(),
        ver: 1,
        iat: NOW,
        entries: vec![RevocationEntry {
            jti: jti.to_owned(),
            exp,
            kid: None,
        }],
    }
}

/// A signing key from a fixed seed: the same bytes every run, so crafted tokens are stable.
pub fn fixed_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A signing key from fresh OS randomness.
pub fn random_key() -> SigningKey {
    SigningKey::generate()
}

pub fn signer(key: &SigningKey) -> Signer {
    Signer::new(key.clone())
}

pub fn kid_of(key: &SigningKey) -> String {
    signer(key).kid().to_owned()
}

/// A verifier trusting `keys`, with issuer "pyrogate", 60 s skew, the cache on, and a manual
/// clock at [`NOW`] that the caller can move.
pub fn verifier(keys: &[&SigningKey]) -> (Arc<Verifier>, ManualClock) {
    let clock = ManualClock::new(NOW);
    let config = VerifierConfig {
        issuer: ISSUER.into(),
        clock_skew_secs: SKEW,
        cache_capacity: 1024,
    };
    let verifier = Verifier::new(config, key_set(keys), Arc::new(clock.clone()));
    (Arc::new(verifier), clock)
}

pub fn key_set(keys: &[&SigningKey]) -> KeySet {
    KeySet::new(keys.iter().map(|k| k.verifying_key()))
}

/// A real API key issued at [`NOW`] by `pyrogate::core::token::issue`.
pub fn issue(key: &SigningKey, name: &str, role: Role, ttl: u64, tenant: Option<&str>) -> String {
    issue_at(key, NOW, name, role, ttl, tenant)
}

pub fn issue_at(
    key: &SigningKey,
    now: u64,
    name: &str,
    role: Role,
    ttl: u64,
    tenant: Option<&str>,
) -> String {
    let req = KeyRequest {
        name,
        role,
        ttl_seconds: ttl,
        tenant,
        apps: None,
        cidrs: None,
    };
    token::issue(&signer(key), ISSUER, now, &req)
        .expect("issue a token")
        .token
        .expose()
        .to_owned()
}

/// A scoped key (Agent or ReadOnly) issued at [`NOW`] for one hour: `apps` and `cidrs` as
/// given, an empty list meaning the claim is left out.
pub fn issue_scoped(
    key: &SigningKey,
    name: &str,
    role: Role,
    apps: &[&str],
    cidrs: &[&str],
) -> String {
    let apps: Vec<String> = apps.iter().map(|s| s.to_string()).collect();
    let cidrs: Vec<String> = cidrs.iter().map(|s| s.to_string()).collect();
    let req = KeyRequest {
        name,
        role,
        ttl_seconds: 3600,
        tenant: None,
        apps: (!apps.is_empty()).then_some(apps.as_slice()),
        cidrs: (!cidrs.is_empty()).then_some(cidrs.as_slice()),
    };
    token::issue(&signer(key), ISSUER, NOW, &req)
        .expect("issue a scoped token")
        .token
        .expose()
        .to_owned()
}

/// The header pyrogate writes, as text.
pub fn header_json(key: &SigningKey) -> String {
    format!(
        r#"{{"alg":"EdDSA","typ":"{API_KEY_TYP}","kid":"{}"}}"#,
        kid_of(key)
    )
}

/// Valid claims as text: Agent "ci", issued at [`NOW`], one hour of validity.
pub fn claims_json() -> String {
    format!(
        r#"{{"iss":"{ISSUER}","sub":"ci","role":"Agent","iat":{NOW},"exp":{},"jti":"{JTI}"}}"#,
        NOW + 3600
    )
}

/// `b64(header).b64(payload)` signed with `key`: any JSON text, duplicates and all.
pub fn craft(key: &SigningKey, header: &str, payload: &str) -> String {
    craft_bytes(key, header.as_bytes(), payload.as_bytes())
}

/// Like [`craft`] but with raw bytes, for JSON that is not even UTF-8.
pub fn craft_bytes(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let input = signing_input(header, payload);
    let signature = key.sign(input.as_bytes());
    with_signature(&input, &signature)
}

/// A token with the given claims text and pyrogate's own header, signed by `key`.
pub fn craft_claims(key: &SigningKey, payload: &str) -> String {
    craft(key, &header_json(key), payload)
}

pub fn signing_input(header: &[u8], payload: &[u8]) -> String {
    format!(
        "{}.{}",
        pyrogate::core::b64::encode(header),
        pyrogate::core::b64::encode(payload)
    )
}

pub fn with_signature(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", pyrogate::core::b64::encode(signature))
}

/// The decoded signature bytes of a compact token.
pub fn signature_of(token: &str) -> Vec<u8> {
    let sig = token.rsplit('.').next().expect("a signature segment");
    pyrogate::core::b64::decode(sig).expect("base64url signature")
}

/// The token's `header.payload` part.
pub fn signing_input_of(token: &str) -> &str {
    let dot = token.rfind('.').expect("a signature segment");
    &token[..dot]
}

/// The decoded claims of a compact token (no verification).
pub fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a payload segment");
    serde_json::from_slice(&pyrogate::core::b64::decode(payload).expect("base64url payload"))
        .expect("JSON claims")
}

/// HMAC-SHA256 (RFC 2104, ring's), for forging an HS256 token keyed with a public key.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The Ed25519 group order L, little-endian.
pub const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// `S + L` as 32 little-endian bytes (never overflows: S < L < 2^253).
pub fn add_group_order(s: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(s[i]) + u16::from(GROUP_ORDER[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    out
}

#[test]
fn hmac_sha256_matches_rfc_4231_test_case_2() {
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn a_crafted_token_with_pyrogate_header_and_claims_verifies() {
    let key = fixed_key(1);
    let (verifier, _) = verifier(&[&key]);
    let token = craft_claims(&key, &claims_json());
    let principal = verifier.verify(&token).expect("crafted token verifies");
    assert_eq!(principal.jti, JTI);
}
