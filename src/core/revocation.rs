//! The signed revocation list: the only state an ingest node needs besides the public keys.
//!
//! Deleting a key puts its `jti` here. The list is small because an entry only has to live as
//! long as the token it kills: it is pruned once past the token's `exp` (plus clock skew), and
//! entries of never-expiring keys are dropped when the key that signed them is retired (which
//! kills those tokens anyway). The authority signs the list with its active key, so nodes can
//! take it from any cache, mirror or file and still trust it. Format: docs/token-format.md.

use foldhash::HashSet;

use serde::{Deserialize, Serialize};

use crate::core::error::VerifyError;
use crate::core::jwk::KeySet;
use crate::core::jws::{self, Signer};
use crate::core::limits::LimitsSection;
use crate::core::token::REVOCATIONS_TYP;

/// Largest signed list accepted (≈150k entries).
pub const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationEntry {
    pub jti: String,
    /// The revoked token's `exp`; `null` for a never-expiring key.
    pub exp: Option<u64>,
    /// `kid` of the key that signed the revoked token, so the entry can be dropped when that
    /// key is retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// The payload of the signed list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    pub iss: String,
    /// Increases with every change; nodes never replace a list with one of a lower version.
    pub ver: u64,
    pub iat: u64,
    pub entries: Vec<RevocationEntry>,
    /// The key-set version current when this list was signed: a node holding an older key set
    /// fetches the new one at once (how a retirement travels as fast as a deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksv: Option<u64>,
    /// The live keys that have a limit and the number of live nodes sharing each limit
    /// ([`crate::core::limits`]); absent when no key is limited, so a list without limits is
    /// the same document it was before limits existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSection>,
}

impl RevocationList {
    pub fn empty(issuer: &str, now: u64) -> Self {
        RevocationList {
            iss: issuer.to_owned(),
            ver: 0,
            iat: now,
            entries: Vec::new(),
            ksv: None,
            limits: None,
        }
    }

    /// Drops entries whose tokens have expired (beyond the skew allowance) or whose signing
    /// key is no longer published.
    pub fn prune(&mut self, now: u64, skew: u64, published: &KeySet) {
        self.entries.retain(|e| {
            let live = e.exp.is_none_or(|exp| exp.saturating_add(skew) > now);
            let key_published = e.kid.as_deref().is_none_or(|kid| published.contains(kid));
            live && key_published
        });
    }

    /// The signed list. Empty (which never verifies) only if signing failed; see
    /// [`Signer::sign`].
    pub fn sign(&self, signer: &Signer) -> String {
        signer.encode(REVOCATIONS_TYP, self).unwrap_or_else(|err| {
            tracing::error!(%err, "could not sign the revocation list");
            String::new()
        })
    }

    /// Verifies a signed list against the trusted keys and the expected issuer.
    pub fn verify(jws_text: &str, keys: &KeySet, issuer: &str) -> Result<Self, VerifyError> {
        let parts = jws::split(jws_text.trim_end(), MAX_LIST_BYTES)?;
        // The list has no `exp` or `nbf`: jsonwebtoken checks the signature and the issuer.
        let validation = jws::validation(issuer, 0, false);
        let list =
            jws::verify::<RevocationList>(parts, &[REVOCATIONS_TYP], keys, &validation)?.claims;
        if list.iss != issuer {
            return Err(VerifyError::WrongIssuer);
        }
        if let Some(limits) = &list.limits {
            limits
                .validate()
                .map_err(|_| VerifyError::InvalidClaim("limits"))?;
        }
        Ok(list)
    }

    pub fn to_set(&self) -> RevocationSet {
        RevocationSet {
            version: self.ver,
            issued_at: self.iat,
            jtis: self.entries.iter().map(|e| e.jti.clone()).collect(),
        }
    }
}

/// The verifier's view of the list: a set of revoked `jti`s, immutable once built.
#[derive(Debug, Clone, Default)]
pub struct RevocationSet {
    version: u64,
    issued_at: u64,
    jtis: HashSet<String>,
}

impl RevocationSet {
    pub fn contains(&self, jti: &str) -> bool {
        self.jtis.contains(jti)
    }
    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
    pub fn len(&self) -> usize {
        self.jtis.len()
    }
    pub fn is_empty(&self) -> bool {
        self.jtis.is_empty()
    }
}
