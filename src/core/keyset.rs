//! The signed key-set document: how a node learns the authority's signing keys without
//! trusting whoever answers at the authority's address.
//!
//! The document is a JSON object `{"signatures": [JWS, …]}`: one compact JWS (`typ`
//! `keyset+jwt`) per published signing key, each signed by that key, all over the same payload
//! `{"iss", "ver", "iat", "keys": <JWK Set>}`. A node accepts a document only when
//!
//! 1. every signature verifies with the key it names, every key in `keys` has signed (proof of
//!    possession: nobody can publish a key they don't hold), and all payloads are identical;
//! 2. at least one signing key is one the node already trusts — a key of the set in force, or
//!    at first contact a `kid` pinned with `authority.trusted-keys` (a kid is the key's RFC 7638
//!    thumbprint, so the pin binds the key itself, as kubeadm's CA-cert hash does);
//! 3. its `ver` is higher than the set in force (the same `ver` must be the same payload).
//!
//! A rotation publishes {old, new} signed by both, so a node that trusts `old` follows; retiring
//! `old` publishes {new}, which the node now trusts. A node that missed both steps trusts
//! nothing in the new set and must be re-pinned — [`KeySetError::NotSignedByTrusted`] says with
//! which kids. Because every distribution document is signed, any mirror or CDN may serve them.
//! docs/token-format.md specifies the format and these rules.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::core::error::VerifyError;
use crate::core::jwk::{JwkSet, KeySet};
use crate::core::jws::{self, Signer};

/// `typ` of every signature in a key-set document.
pub const KEYSET_TYP: &str = "keyset+jwt";
/// Largest document accepted (a handful of keys is ~2 KiB).
pub const MAX_KEYSET_BYTES: usize = 256 * 1024;
/// Most signatures (hence published keys) in one document.
pub const MAX_SIGNATURES: usize = 16;

/// The signed payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySetClaims {
    pub iss: String,
    /// Increases with every change of the published keys.
    pub ver: u64,
    pub iat: u64,
    pub keys: JwkSet,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    signatures: Vec<String>,
}

/// Why a key-set document was not accepted. Messages never quote the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    #[error("the key-set document is malformed: {0}")]
    Malformed(&'static str),
    #[error("a signature of the key-set document does not verify: {0}")]
    Signature(VerifyError),
    #[error("key {0} is in the key set but did not sign it")]
    UnsignedKey(String),
    #[error(
        "the key set is not signed by any key this node trusts (it is signed by {}); if the authority really rotated past this node's keys, re-pin it with --authority.trusted-keys {}",
        offered.join(","), offered.join(",")
    )]
    NotSignedByTrusted { offered: Vec<String> },
    #[error("the key set is version {offered}, older than version {current} in force")]
    Rollback { offered: u64, current: u64 },
    #[error("two different key sets claim version {0}")]
    Equivocation(u64),
    #[error("the key set names another issuer than this node's")]
    WrongIssuer,
}

/// What the node trusts before looking at a document.
#[derive(Debug, Clone)]
pub enum Trust<'a> {
    /// First contact: these kids (`authority.trusted-keys`).
    Pinned(&'a BTreeSet<String>),
    /// A verified set in force, at version `ver`, with its payload.
    InForce {
        ver: u64,
        keys: &'a KeySet,
        claims: &'a KeySetClaims,
    },
    /// `authority.insecure-trust-first-use`, or an authority reached over verified TLS with
    /// no pin: the document's own signatures are the only check.
    FirstUse,
}

/// An accepted document.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub claims: KeySetClaims,
    pub keys: KeySet,
    /// `false` when the document is the set already in force (nothing to install).
    pub changed: bool,
}

/// Signs `claims` with every key in `signers` (the published keys).
pub fn sign(claims: &KeySetClaims, signers: &[Signer]) -> Result<String, jws::SignError> {
    let signatures = signers
        .iter()
        .map(|s| s.encode(KEYSET_TYP, claims))
        .collect::<Result<Vec<_>, _>>()?;
    serde_json::to_string(&Document { signatures })
        .map_err(|e| jws::SignError::from(format!("serializing the key-set document: {e}")))
}

/// Checks `text` against `trust` (the rules in the module doc).
pub fn verify(text: &str, trust: &Trust<'_>, issuer: &str) -> Result<Accepted, KeySetError> {
    if text.len() > MAX_KEYSET_BYTES {
        return Err(KeySetError::Malformed("too large"));
    }
    let doc: Document = jws::from_json_object(text.as_bytes())
        .map_err(|_| KeySetError::Malformed("not a {\"signatures\": [...]} object"))?;
    if doc.signatures.is_empty() || doc.signatures.len() > MAX_SIGNATURES {
        return Err(KeySetError::Malformed("needs 1 to 16 signatures"));
    }
    let mut parts = Vec::with_capacity(doc.signatures.len());
    for sig in &doc.signatures {
        parts.push(jws::split(sig, MAX_KEYSET_BYTES).map_err(KeySetError::Signature)?);
    }
    if parts.iter().any(|p| p.payload != parts[0].payload) {
        return Err(KeySetError::Malformed("signatures over different payloads"));
    }
    // The keys the document claims, read before any signature is checked only to know which
    // key each signature must verify with; nothing is trusted until the checks below pass.
    let offered: KeySetClaims = jws::decode_unverified(parts[0])
        .and_then(|(_, claims)| serde_json::from_value(claims).ok())
        .ok_or(KeySetError::Malformed("the payload is not a key set"))?;
    if offered.keys.keys.len() > MAX_SIGNATURES {
        return Err(KeySetError::Malformed("more keys than signatures allowed"));
    }
    let candidate = KeySet::from_jwks(&offered.keys)
        .map_err(|_| KeySetError::Malformed("the payload's keys are not a usable JWK Set"))?;
    let validation = jws::validation(issuer, 0, false);
    let mut signed_by = BTreeSet::new();
    let mut claims = None;
    for p in parts {
        let verified = jws::verify::<KeySetClaims>(p, &[KEYSET_TYP], &candidate, &validation)
            .map_err(|e| match e {
                VerifyError::WrongIssuer => KeySetError::WrongIssuer,
                other => KeySetError::Signature(other),
            })?;
        if !signed_by.insert(verified.kid) {
            return Err(KeySetError::Malformed("a key signed twice"));
        }
        claims = Some(verified.claims);
    }
    let claims = claims.ok_or(KeySetError::Malformed("no signature"))?;
    if claims.iss != issuer {
        return Err(KeySetError::WrongIssuer);
    }
    if let Some(kid) = candidate.kids().find(|k| !signed_by.contains(*k)) {
        return Err(KeySetError::UnsignedKey(kid.to_owned()));
    }
    let trusted = |kid: &String| match trust {
        Trust::Pinned(pins) => pins.contains(kid),
        Trust::InForce { keys, .. } => keys.contains(kid),
        Trust::FirstUse => true,
    };
    if !signed_by.iter().any(trusted) {
        return Err(KeySetError::NotSignedByTrusted {
            offered: signed_by.into_iter().collect(),
        });
    }
    let changed = match trust {
        Trust::InForce {
            ver,
            claims: current,
            ..
        } => {
            if claims.ver < *ver {
                return Err(KeySetError::Rollback {
                    offered: claims.ver,
                    current: *ver,
                });
            }
            if claims.ver == *ver {
                // Re-signed (a new iat) or refetched: the keys must be the same.
                if claims.keys != current.keys {
                    return Err(KeySetError::Equivocation(claims.ver));
                }
                false
            } else {
                true
            }
        }
        _ => true,
    };
    Ok(Accepted {
        claims,
        keys: candidate,
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::SigningKey;

    fn signer(seed: u8) -> Signer {
        Signer::new(SigningKey::from_bytes(&[seed; 32]))
    }

    fn claims(ver: u64, signers: &[&Signer]) -> KeySetClaims {
        KeySetClaims {
            iss: "pyrogate".into(),
            ver,
            iat: 1_800_000_000,
            keys: KeySet::new(signers.iter().map(|s| s.verifying_key())).to_jwks(),
        }
    }

    fn doc(ver: u64, keys: &[&Signer], signers: &[&Signer]) -> String {
        let owned: Vec<Signer> = signers.iter().map(|s| (*s).clone()).collect();
        sign(&claims(ver, keys), &owned).unwrap()
    }

    fn pins(signers: &[&Signer]) -> BTreeSet<String> {
        signers.iter().map(|s| s.kid().to_owned()).collect()
    }

    #[test]
    fn a_rotation_chains_from_the_pinned_key_and_a_node_that_missed_it_is_told_to_re_pin() {
        let (old, new) = (signer(1), signer(2));
        let pinned = pins(&[&old]);
        let first = verify(
            &doc(1, &[&old], &[&old]),
            &Trust::Pinned(&pinned),
            "pyrogate",
        )
        .unwrap();
        let rotated = doc(2, &[&old, &new], &[&old, &new]);
        let second = verify(
            &rotated,
            &Trust::InForce {
                ver: 1,
                keys: &first.keys,
                claims: &first.claims,
            },
            "pyrogate",
        )
        .unwrap();
        assert!(second.changed && second.keys.contains(new.kid()));
        let retired = doc(3, &[&new], &[&new]);
        let third = verify(
            &retired,
            &Trust::InForce {
                ver: 2,
                keys: &second.keys,
                claims: &second.claims,
            },
            "pyrogate",
        )
        .unwrap();
        assert!(!third.keys.contains(old.kid()));
        // A node still at version 1 (trusting only `old`) cannot follow to version 3.
        let err = verify(
            &retired,
            &Trust::InForce {
                ver: 1,
                keys: &first.keys,
                claims: &first.claims,
            },
            "pyrogate",
        )
        .unwrap_err();
        assert_eq!(
            err,
            KeySetError::NotSignedByTrusted {
                offered: vec![new.kid().to_owned()]
            }
        );
        assert!(
            err.to_string()
                .contains(&format!("--authority.trusted-keys {}", new.kid()))
        );
    }

    #[test]
    fn forged_replayed_and_half_signed_documents_are_refused() {
        let (real, fake, extra) = (signer(1), signer(9), signer(3));
        let pinned = pins(&[&real]);
        let pin = Trust::Pinned(&pinned);
        // A fake authority's own key, self-signed.
        assert!(matches!(
            verify(&doc(7, &[&fake], &[&fake]), &pin, "pyrogate"),
            Err(KeySetError::NotSignedByTrusted { .. })
        ));
        // The real key signs, but a key that did not sign is smuggled in.
        assert_eq!(
            verify(&doc(2, &[&real, &extra], &[&real]), &pin, "pyrogate").unwrap_err(),
            KeySetError::UnsignedKey(extra.kid().to_owned())
        );
        // Rollback and equivocation.
        let v2 = verify(&doc(2, &[&real], &[&real]), &pin, "pyrogate").unwrap();
        let in_force = Trust::InForce {
            ver: 2,
            keys: &v2.keys,
            claims: &v2.claims,
        };
        assert_eq!(
            verify(&doc(1, &[&real], &[&real]), &in_force, "pyrogate").unwrap_err(),
            KeySetError::Rollback {
                offered: 1,
                current: 2
            }
        );
        assert_eq!(
            verify(
                &doc(2, &[&real, &extra], &[&real, &extra]),
                &in_force,
                "pyrogate"
            )
            .unwrap_err(),
            KeySetError::Equivocation(2)
        );
        assert!(
            !verify(&doc(2, &[&real], &[&real]), &in_force, "pyrogate")
                .unwrap()
                .changed
        );
        // Wrong issuer; garbage; a signature over another payload.
        assert!(matches!(
            verify(&doc(2, &[&real], &[&real]), &pin, "someone-else"),
            Err(KeySetError::WrongIssuer)
        ));
        assert!(matches!(
            verify("{\"signatures\":[\"a.b.c\"]}", &pin, "pyrogate"),
            Err(KeySetError::Malformed("the payload is not a key set"))
        ));
        let a = doc(2, &[&real], &[&real]);
        let b = doc(3, &[&real], &[&real]);
        let sig = |d: &str| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["signatures"][0]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let mixed = serde_json::json!({ "signatures": [sig(&a), sig(&b)] }).to_string();
        assert_eq!(
            verify(&mixed, &pin, "pyrogate").unwrap_err(),
            KeySetError::Malformed("signatures over different payloads")
        );
    }
}
