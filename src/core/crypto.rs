//! The one crypto implementation of the process: `ring`. It backs jsonwebtoken (through
//! [`PROVIDER`], a `jsonwebtoken::crypto::CryptoProvider`), and everything else that needs a
//! primitive calls ring directly through the small types here: Ed25519 keys, SHA-256 and the
//! operating system's random number generator. HMAC (session cookies) uses `ring::hmac` where it
//! is needed.
//!
//! The provider signs with exactly one algorithm, EdDSA over Ed25519, and verifies three:
//! EdDSA, and RS256 and ES256 for the ID tokens of OpenID providers (which sign with RSA or
//! P-256 far more often than with Ed25519). Every other algorithm — HMAC above all, and `none`,
//! which jsonwebtoken cannot even parse — is refused by the factories before any key material
//! is looked at, and each verifier checks that the key is of its algorithm's family, so a header
//! naming HS256 can never turn a public key into an HMAC secret whatever the caller's
//! `Validation` says. API keys and pyrogate's own documents still accept EdDSA only (their
//! headers are checked byte for byte, see [`crate::core::jws`]).

use std::sync::OnceLock;

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::rand::SecureRandom as _;
use ring::signature::{self as ring_sig, KeyPair as _};

/// Length of an Ed25519 public key, a seed, and a signature.
pub const PUBLIC_KEY_LEN: usize = 32;
pub const SEED_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

/// The jsonwebtoken crypto provider backed by ring. Install it with [`install`].
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components: |_| Err(ErrorKind::InvalidAlgorithm.into()),
        extract_ec_public_key_coordinates: |_, _| Err(ErrorKind::InvalidAlgorithm.into()),
        compute_digest,
    },
};

/// Another jsonwebtoken crypto provider was installed in this process before ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "another jsonwebtoken crypto provider is installed in this process; pyrogate needs its own \
     ring-backed provider (core::crypto::PROVIDER) to be the only one"
)]
pub struct ForeignProvider;

/// Makes [`PROVIDER`] jsonwebtoken's process-wide provider. Idempotent: calling it again (from
/// `main`, from tests, or lazily from the JWS code) is fine; it fails only if a different
/// provider got there first.
pub fn install() -> Result<(), ForeignProvider> {
    static RESULT: OnceLock<Result<(), ForeignProvider>> = OnceLock::new();
    *RESULT.get_or_init(|| match PROVIDER.install_default() {
        Ok(()) => Ok(()),
        Err(existing) if std::ptr::eq(existing, &PROVIDER) => Ok(()),
        Err(_) => Err(ForeignProvider),
    })
}

fn signer_factory(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, JwtError> {
    if *alg != Algorithm::EdDSA {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let pair = ring_sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.inner())
        .map_err(|_| JwtError::from(ErrorKind::InvalidEddsaKey))?;
    Ok(Box::new(RingEdDsaSigner(pair)))
}

fn verifier_factory(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, JwtError> {
    use jsonwebtoken::AlgorithmFamily as Family;
    use jsonwebtoken::DecodingKeyKind as Kind;
    match (alg, key.family(), key.kind()) {
        (Algorithm::EdDSA, Family::Ed, _) => {}
        (Algorithm::RS256, Family::Rsa, Kind::RsaModulusExponent { n, e }) => {
            return Ok(Box::new(RingRs256Verifier {
                n: n.clone(),
                e: e.clone(),
            }));
        }
        (Algorithm::ES256, Family::Ec, Kind::SecretOrDer(point)) => {
            // An uncompressed P-256 point: 0x04 ‖ x ‖ y.
            if point.len() != 65 || point[0] != 0x04 {
                return Err(ErrorKind::InvalidEcdsaKey.into());
            }
            return Ok(Box::new(RingEs256Verifier(point.clone())));
        }
        (Algorithm::EdDSA | Algorithm::RS256 | Algorithm::ES256, _, _) => {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    }
    let public: [u8; PUBLIC_KEY_LEN] = match key.kind() {
        jsonwebtoken::DecodingKeyKind::SecretOrDer(bytes) => bytes
            .as_slice()
            .try_into()
            .map_err(|_| JwtError::from(ErrorKind::InvalidEddsaKey))?,
        jsonwebtoken::DecodingKeyKind::RsaModulusExponent { .. } => {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
    };
    Ok(Box::new(RingEdDsaVerifier(public)))
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Vec<u8> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
    };
    ring::digest::digest(alg, data).as_ref().to_vec()
}

struct RingEdDsaSigner(ring_sig::Ed25519KeyPair);

impl signature::Signer<Vec<u8>> for RingEdDsaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(msg).as_ref().to_vec())
    }
}

impl JwtSigner for RingEdDsaSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct RingEdDsaVerifier([u8; PUBLIC_KEY_LEN]);

impl signature::Verifier<Vec<u8>> for RingEdDsaVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        verify_ed25519(&self.0, msg, signature).map_err(signature::Error::from_source)
    }
}

impl JwtVerifier for RingEdDsaVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

/// RS256 (RSASSA-PKCS1-v1_5 with SHA-256), 2048- to 8192-bit moduli, by ring.
struct RingRs256Verifier {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl signature::Verifier<Vec<u8>> for RingRs256Verifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        ring_sig::RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        }
        .verify(&ring_sig::RSA_PKCS1_2048_8192_SHA256, msg, sig)
        .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingRs256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

/// ES256 (ECDSA over P-256 with SHA-256, the JWS fixed-width signature), by ring.
struct RingEs256Verifier(Vec<u8>);

impl signature::Verifier<Vec<u8>> for RingEs256Verifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        ring_sig::UnparsedPublicKey::new(&ring_sig::ECDSA_P256_SHA256_FIXED, &self.0)
            .verify(msg, sig)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingEs256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

/// An Ed25519 signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature did not verify")]
pub struct SignatureError;

/// Raw Ed25519 verification by ring (RFC 8032; rejects `S ≥ L`). The provider calls this; so
/// does `pyrogate bench verify`, to measure the backend alone.
pub fn verify_ed25519(
    public: &[u8; PUBLIC_KEY_LEN],
    msg: &[u8],
    sig: &[u8],
) -> Result<(), SignatureError> {
    ring_sig::UnparsedPublicKey::new(&ring_sig::ED25519, public)
        .verify(msg, sig)
        .map_err(|_| SignatureError)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

fn system_random() -> &'static ring::rand::SystemRandom {
    static RNG: OnceLock<ring::rand::SystemRandom> = OnceLock::new();
    RNG.get_or_init(ring::rand::SystemRandom::new)
}

/// Fills `buf` from the operating system's CSPRNG (ring's `SystemRandom`). Failure to reach it
/// is unrecoverable for an authentication service, so it aborts rather than handing out
/// predictable bytes.
pub fn fill_random(buf: &mut [u8]) {
    if system_random().fill(buf).is_err() {
        panic!("operating system random number generator failed");
    }
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("not a 32-byte Ed25519 public key")]
    BadLength,
    #[error("a small-order Ed25519 point, which would verify forged signatures")]
    SmallOrder,
    #[error("not a PEM \"PRIVATE KEY\" block")]
    NotPem,
    #[error("not an unencrypted RFC 8410 PKCS#8 Ed25519 private key: {0}")]
    BadPkcs8(String),
}

/// An Ed25519 public key (32 bytes, RFC 8032 encoding). Small-order points are refused at
/// construction: ring's verification does not reject them, and a key of small order accepts
/// signatures that anyone can make.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct VerifyingKey([u8; PUBLIC_KEY_LEN]);

/// Encodings of the points of order 1, 2, 4 and 8 (canonical and non-canonical `y`), the sign
/// bit masked off: 0, 1, the two order-8 points, p − 1, p, p + 1.
const SMALL_ORDER: [[u8; 32]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// True for every encoding of a point of small order (either sign bit).
pub fn is_small_order(bytes: &[u8; PUBLIC_KEY_LEN]) -> bool {
    SMALL_ORDER
        .iter()
        .any(|p| p[..31] == bytes[..31] && p[31] == bytes[31] & 0x7f)
}

impl VerifyingKey {
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, KeyError> {
        if is_small_order(bytes) {
            return Err(KeyError::SmallOrder);
        }
        Ok(VerifyingKey(*bytes))
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::BadLength)?;
        Self::from_bytes(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0
    }

    /// The key as jsonwebtoken wants it for [`PROVIDER`]'s verifier: the raw 32 bytes.
    pub fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ed_der(&self.0)
    }

    /// Raw ring verification of an Ed25519 signature by this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
        verify_ed25519(&self.0, msg, sig)
    }
}

/// `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }`:
/// the 16 bytes before the seed in an RFC 8410 v1 PKCS#8 Ed25519 key, as `openssl genpkey
/// -algorithm ed25519` writes it.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// After the outer SEQUENCE header: version (0 or 1), algorithm, and the privateKey wrapper.
const PKCS8_BODY_AFTER_VERSION: [u8; 11] = [
    0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 private key (the 32-byte RFC 8032 seed) and its public key. Debug never prints
/// the seed.
#[derive(Clone)]
pub struct SigningKey {
    seed: [u8; SEED_LEN],
    public: VerifyingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .field("seed", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// A fresh key from ring (`Ed25519KeyPair::generate_pkcs8` over `SystemRandom`).
    pub fn generate() -> Self {
        match ring_sig::Ed25519KeyPair::generate_pkcs8(system_random())
            .map_err(|_| KeyError::BadPkcs8("ring could not generate a key".into()))
            .and_then(|doc| Self::from_pkcs8_der(doc.as_ref()))
        {
            Ok(key) => key,
            Err(err) => panic!("Ed25519 key generation failed: {err}"),
        }
    }

    /// The key whose RFC 8032 seed is `seed`.
    pub fn from_bytes(seed: &[u8; SEED_LEN]) -> Self {
        let public = match ring_sig::Ed25519KeyPair::from_seed_unchecked(seed) {
            Ok(pair) => {
                let mut bytes = [0u8; PUBLIC_KEY_LEN];
                bytes.copy_from_slice(pair.public_key().as_ref());
                bytes
            }
            // ring refuses only seeds of the wrong length, which the type rules out.
            Err(_) => unreachable!("a 32-byte seed is always a valid Ed25519 seed"),
        };
        // A key derived from a seed has prime order (the scalar is clamped to a multiple of 8).
        SigningKey {
            seed: *seed,
            public: VerifyingKey(public),
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.public
    }

    fn key_pair(&self) -> ring_sig::Ed25519KeyPair {
        match ring_sig::Ed25519KeyPair::from_seed_unchecked(&self.seed) {
            Ok(pair) => pair,
            Err(_) => unreachable!("a 32-byte seed is always a valid Ed25519 seed"),
        }
    }

    /// A raw Ed25519 signature (tests and benchmarks; tokens are signed through jsonwebtoken).
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.key_pair().sign(msg).as_ref());
        out
    }

    /// RFC 8410 PKCS#8 **v1** DER (no public key): the 48 bytes OpenSSL and Python
    /// `cryptography` read and write.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        [&PKCS8_V1_PREFIX[..], &self.seed[..]].concat()
    }

    /// The v1 DER as a `PRIVATE KEY` PEM block, LF line endings.
    pub fn to_pkcs8_pem(&self) -> String {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(self.to_pkcs8_der());
        format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
    }

    /// The key as jsonwebtoken wants it for [`PROVIDER`]'s signer: PKCS#8 v1 DER.
    pub fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_ed_der(&self.to_pkcs8_der())
    }

    /// Reads PKCS#8 v1 or v2 (with the public key, either tag: RFC 8410's `[1]` or the legacy
    /// constructed one). ring parses and, for v2, checks that the public key matches the seed.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = ring_sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| KeyError::BadPkcs8(e.to_string()))?;
        // ring has validated the structure; the seed is the inner OCTET STRING, which follows
        // the outer SEQUENCE header (short or one-byte long form), the version and the algorithm.
        let header = match der.get(1) {
            Some(len) if *len < 0x80 => 2,
            Some(0x81) => 3,
            _ => return Err(KeyError::BadPkcs8("unexpected length encoding".into())),
        };
        let body = der.get(header..).unwrap_or_default();
        let seed: [u8; SEED_LEN] = body
            .strip_prefix(&[0x02, 0x01, 0x00][..])
            .or_else(|| body.strip_prefix(&[0x02, 0x01, 0x01][..]))
            .and_then(|rest| rest.strip_prefix(&PKCS8_BODY_AFTER_VERSION[..]))
            .and_then(|rest| rest.get(..SEED_LEN))
            .and_then(|seed| seed.try_into().ok())
            .ok_or_else(|| KeyError::BadPkcs8("unexpected layout".into()))?;
        let key = SigningKey::from_bytes(&seed);
        if key.public.as_bytes()[..] != pair.public_key().as_ref()[..] {
            return Err(KeyError::BadPkcs8("seed and public key disagree".into()));
        }
        Ok(key)
    }

    /// Reads a `PRIVATE KEY` PEM block holding PKCS#8 v1 or v2.
    pub fn from_pkcs8_pem(text: &str) -> Result<Self, KeyError> {
        use base64::Engine as _;
        let text = text.trim();
        let body = text
            .strip_prefix("-----BEGIN PRIVATE KEY-----")
            .and_then(|t| t.strip_suffix("-----END PRIVATE KEY-----"))
            .ok_or(KeyError::NotPem)?;
        let b64: String = body.split_ascii_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| KeyError::NotPem)?;
        Self::from_pkcs8_der(&der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8037 Appendix A.
    const SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn rfc_key() -> SigningKey {
        SigningKey::from_bytes(&hex(SEED_HEX).try_into().unwrap())
    }

    #[test]
    fn the_rfc_8037_seed_gives_its_public_key_and_signature() {
        let key = rfc_key();
        assert_eq!(key.verifying_key().as_bytes().to_vec(), hex(PUBLIC_HEX));
        // RFC 8037 A.4: the signature over the JWS signing input of {"alg":"EdDSA"} + "Example of Ed25519 signing".
        let input = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let sig = key.sign(input);
        use base64::Engine as _;
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig),
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
        assert!(key.verifying_key().verify(input, &sig).is_ok());
    }

    #[test]
    fn pkcs8_v1_is_the_openssl_layout_and_round_trips() {
        let key = rfc_key();
        let der = key.to_pkcs8_der();
        assert_eq!(der.len(), 48);
        assert_eq!(der[..16], PKCS8_V1_PREFIX);
        let again = SigningKey::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(again.verifying_key(), key.verifying_key());
    }

    #[test]
    fn pkcs8_v2_as_earlier_versions_wrote_it_is_read() {
        let key = rfc_key();
        let public = key.verifying_key().to_bytes();
        // ed25519-dalek's v2: version 1, then `[1] IMPLICIT BIT STRING` with the public key.
        let mut v2 = vec![0x30, 0x51, 0x02, 0x01, 0x01];
        v2.extend_from_slice(&PKCS8_BODY_AFTER_VERSION);
        v2.extend_from_slice(&hex(SEED_HEX));
        v2.extend_from_slice(&[0x81, 0x21, 0x00]);
        v2.extend_from_slice(&public);
        assert_eq!(v2.len(), 83);
        let again = SigningKey::from_pkcs8_der(&v2).unwrap();
        assert_eq!(again.verifying_key(), key.verifying_key());
        // ring's own v2 (what generate_pkcs8 returns) is read too.
        let generated = ring_sig::Ed25519KeyPair::generate_pkcs8(system_random()).unwrap();
        let pair = ring_sig::Ed25519KeyPair::from_pkcs8(generated.as_ref()).unwrap();
        let read = SigningKey::from_pkcs8_der(generated.as_ref()).unwrap();
        assert_eq!(
            read.verifying_key().as_bytes()[..],
            pair.public_key().as_ref()[..]
        );
        // A v2 whose public key is not the seed's is refused.
        let mut wrong = v2.clone();
        wrong[82] ^= 1;
        assert!(SigningKey::from_pkcs8_der(&wrong).is_err());
    }

    #[test]
    fn small_order_public_keys_are_refused_in_every_encoding() {
        for p in SMALL_ORDER {
            for sign in [0u8, 0x80] {
                let mut bytes = p;
                bytes[31] |= sign;
                assert_eq!(
                    VerifyingKey::from_bytes(&bytes),
                    Err(KeyError::SmallOrder),
                    "{bytes:02x?}"
                );
            }
        }
        assert!(VerifyingKey::from_bytes(rfc_key().verifying_key().as_bytes()).is_ok());
    }

    #[test]
    fn install_is_idempotent() {
        assert_eq!(install(), Ok(()));
        assert_eq!(install(), Ok(()));
    }

    #[test]
    fn each_verifier_takes_only_a_key_of_its_own_family_and_hmac_never() {
        let ed = rfc_key().verifying_key().decoding_key();
        let rsa = DecodingKey::from_rsa_raw_components(&[0xc5; 256], &[1, 0, 1]);
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring_sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring_sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        // (base64 directly: core::b64 builds on this module.)
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let ec =
            DecodingKey::from_ec_components(&b64(&point[1..33]), &b64(&point[33..65])).unwrap();
        let secret = DecodingKey::from_secret(b"the provider's public key, as text");
        let ok = |alg: Algorithm, key: &DecodingKey| verifier_factory(&alg, key).is_ok();
        assert!(ok(Algorithm::EdDSA, &ed));
        assert!(ok(Algorithm::RS256, &rsa));
        assert!(ok(Algorithm::ES256, &ec));
        for (alg, key) in [
            (Algorithm::EdDSA, &rsa),
            (Algorithm::EdDSA, &ec),
            (Algorithm::RS256, &ed),
            (Algorithm::RS256, &ec),
            (Algorithm::ES256, &ed),
            (Algorithm::ES256, &rsa),
            (Algorithm::EdDSA, &secret),
            (Algorithm::ES256, &secret),
        ] {
            assert!(!ok(alg, key), "{alg:?}");
        }
        for alg in [
            Algorithm::HS256,
            Algorithm::HS384,
            Algorithm::HS512,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::ES384,
        ] {
            for key in [&ed, &rsa, &ec, &secret] {
                assert!(!ok(alg, key), "{alg:?}");
            }
        }
        // Signing stays EdDSA only.
        assert!(signer_factory(&Algorithm::RS256, &EncodingKey::from_secret(b"k")).is_err());
        // An ES256 signature by the key verifies; the same bytes under another message don't.
        let sig = pair.sign(&rng, b"message").unwrap();
        let v = verifier_factory(&Algorithm::ES256, &ec).unwrap();
        assert!(v.verify(b"message", &sig.as_ref().to_vec()).is_ok());
        assert!(v.verify(b"messagf", &sig.as_ref().to_vec()).is_err());
    }
}
