//! Token → [`Principal`] or a typed [`VerifyError`]. This is the request path: pure CPU, no I/O,
//! no locks held across awaits. The trusted key set and the revocation set are immutable
//! snapshots behind [`ArcSwap`]s, replaced whole by the sync loop or the authority; a reader
//! always sees one consistent pair of snapshots and never waits for a writer.
//!
//! A bounded cache of verified tokens, keyed by the token's SHA-256, skips the signature on
//! repeat visits (agents send the same key every 10 s). A hit still checks expiry, revocation
//! and that the signing key is still published, so the cache can never extend a token's life.
//! Keying by a 256-bit digest makes a false hit as unlikely as a SHA-256 collision, and the
//! cache holds no bearer secrets.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Deserializer};

use crate::core::clock::Clock;
pub use crate::core::error::VerifyError;
use crate::core::jwk::KeySet;
use crate::core::jws;
use crate::core::limits::Limiter;
use crate::core::revocation::RevocationSet;
use crate::core::scope::Scope;
use crate::core::token::{
    API_KEY_TYP, MAX_NAME_CHARS, MAX_TIMESTAMP, Role, SCOPED_API_KEY_TYP, validate_tenant,
};

/// Longest token accepted; checked before anything is parsed. Ours are ~350 bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Shortest `jti` accepted: 22 base64url characters carry 128 bits.
const MIN_JTI_CHARS: usize = 22;
const MAX_JTI_CHARS: usize = 128;

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Principal {
    /// The key's name (`sub`).
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub jti: String,
    pub kid: String,
    pub issued_at: u64,
    pub expires_at: Option<u64>,
    /// The key's `apps` and `cidrs`; `None` for an unscoped key, which pays nothing for scopes.
    #[serde(skip)]
    pub scope: Option<Arc<Scope>>,
}

#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The only accepted `iss`.
    pub issuer: String,
    /// Allowance for clocks that disagree, applied to `exp`, `nbf` and `iat`.
    pub clock_skew_secs: u64,
    /// Verified tokens remembered; 0 disables the cache.
    pub cache_capacity: usize,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            issuer: "pyrogate".into(),
            clock_skew_secs: 60,
            cache_capacity: 65_536,
        }
    }
}

/// Claims as they arrive: everything optional so that a missing claim gets its own reason.
/// `null` is never accepted where a value is expected.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default, deserialize_with = "not_null")]
    iss: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    sub: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    role: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    iat: Option<u64>,
    #[serde(default, deserialize_with = "not_null")]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "not_null")]
    nbf: Option<u64>,
    #[serde(default, deserialize_with = "not_null")]
    jti: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    tenant: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    apps: Option<Vec<String>>,
    #[serde(default, deserialize_with = "not_null")]
    cidrs: Option<Vec<String>>,
}

fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Counters the verifier bumps on each cache look-up. They are Prometheus counters (clones share
/// one atomic), so the edge's registry exports them without the core knowing about it.
#[derive(Debug, Clone, Default)]
pub struct CacheCounters {
    pub hits: prometheus_client::metrics::counter::Counter,
    pub misses: prometheus_client::metrics::counter::Counter,
}

/// The `typ`s an API key may have: unscoped, or scoped (docs/token-format.md).
const KEY_TYPS: &[&str] = &[API_KEY_TYP, SCOPED_API_KEY_TYP];

/// The scope of a key, by the `typ` rule: a scoped `typ` must carry `apps` or `cidrs`, an
/// unscoped one neither (a scope under the unscoped `typ` would be ignored by older
/// verifiers, so no issuer may write one and no verifier accepts one). An Admin key carries no
/// `apps`.
fn scope_of(
    scoped: bool,
    role: Role,
    apps: Option<&[String]>,
    cidrs: Option<&[String]>,
) -> Result<Option<Arc<Scope>>, VerifyError> {
    let has_scope = apps.is_some() || cidrs.is_some();
    if scoped != has_scope {
        return Err(VerifyError::InvalidClaim(if scoped {
            "apps"
        } else {
            "typ"
        }));
    }
    if role == Role::Admin && apps.is_some() {
        return Err(VerifyError::InvalidClaim("apps"));
    }
    match Scope::parse(apps, cidrs) {
        Ok(scope) => Ok(scope.map(Arc::new)),
        Err(crate::core::scope::ScopeError::Apps(_)) => Err(VerifyError::InvalidClaim("apps")),
        Err(crate::core::scope::ScopeError::Cidrs(_)) => Err(VerifyError::InvalidClaim("cidrs")),
    }
}

pub struct Verifier {
    config: VerifierConfig,
    /// jsonwebtoken's part of the rules, built once (see [`jws::validation`]).
    validation: jsonwebtoken::Validation,
    keys: ArcSwap<KeySet>,
    revoked: ArcSwap<RevocationSet>,
    cache: Option<quick_cache::sync::Cache<[u8; 32], Arc<Principal>>>,
    clock: Arc<dyn Clock>,
    /// Raised when a token names a `kid` we don't know, so the sync loop (off the request
    /// path) can fetch the key set early: the authority may have rotated.
    unknown_key_seen: std::sync::atomic::AtomicBool,
    unknown_key: tokio::sync::Notify,
    /// Cache hit and miss counters, shared with whoever exports them (see [`CacheCounters`]).
    counters: std::sync::OnceLock<CacheCounters>,
    /// Per-key limits in force (the revocation list's `limits` section), installed beside
    /// the revocation set; the push path asks it after the key verified.
    limiter: Arc<Limiter>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .field("keys", &self.keys.load().len())
            .field("revoked", &self.revoked.load().len())
            .finish()
    }
}

impl Verifier {
    pub fn new(config: VerifierConfig, keys: KeySet, clock: Arc<dyn Clock>) -> Self {
        let cache = (config.cache_capacity > 0)
            .then(|| quick_cache::sync::Cache::new(config.cache_capacity));
        let validation = jws::validation(&config.issuer, config.clock_skew_secs, clock.is_system());
        Verifier {
            config,
            validation,
            keys: ArcSwap::from_pointee(keys),
            revoked: ArcSwap::from_pointee(RevocationSet::default()),
            cache,
            clock,
            unknown_key_seen: std::sync::atomic::AtomicBool::new(false),
            unknown_key: tokio::sync::Notify::new(),
            counters: std::sync::OnceLock::new(),
            limiter: Arc::new(Limiter::default()),
        }
    }

    /// The per-key limits in force on this process.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Counts cache hits and misses into `counters` from now on (the first call wins).
    pub fn set_cache_counters(&self, counters: CacheCounters) {
        let _ = self.counters.set(counters);
    }

    /// True (once) if a token named an unknown `kid` since the last call.
    pub fn take_unknown_key_seen(&self) -> bool {
        self.unknown_key_seen
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Resolves when a token names an unknown `kid`.
    pub async fn unknown_key_notified(&self) {
        self.unknown_key.notified().await;
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Replaces the trusted keys. Cached tokens signed by a key that is gone stop verifying at
    /// once (the cache checks the `kid` on every hit).
    pub fn set_keys(&self, keys: KeySet) {
        self.keys.store(Arc::new(keys));
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Replaces the revocation snapshot. Takes effect for the next request, cached or not.
    pub fn set_revocations(&self, revoked: RevocationSet) {
        self.revoked.store(Arc::new(revoked));
    }

    pub fn revocations(&self) -> Arc<RevocationSet> {
        self.revoked.load_full()
    }

    /// Verifies an API key, using the cache when possible.
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, VerifyError> {
        let parts = jws::split(token, MAX_TOKEN_BYTES)?;
        let Some(cache) = &self.cache else {
            return self.verify_parts(parts).map(Arc::new);
        };
        let digest = crate::core::crypto::sha256(token.as_bytes());
        let hit = cache.get(&digest);
        if let Some(c) = self.counters.get() {
            if hit.is_some() {
                c.hits.inc();
            } else {
                c.misses.inc();
            }
        }
        if let Some(principal) = hit {
            self.check_live(&principal, self.clock.now())?;
            return Ok(principal);
        }
        let principal = Arc::new(self.verify_parts(parts)?);
        cache.insert(digest, principal.clone());
        Ok(principal)
    }

    /// Checks again a principal this verifier verified from a token, as a cache hit does: the
    /// signing key still published, not expired, not revoked — so whoever remembers a verified
    /// token (the connection a key came on, [`crate::edge::auth::CredentialMemo`]) never
    /// extends its life. Counted as a cache hit. `None` when the cache is off: then every
    /// token is verified whole, remembered or not.
    pub fn recheck(&self, principal: &Principal) -> Option<Result<(), VerifyError>> {
        self.cache.as_ref()?;
        if let Some(c) = self.counters.get() {
            c.hits.inc();
        }
        Some(self.check_live(principal, self.clock.now()))
    }

    /// Verifies without consulting or filling the cache (benchmarks, the CLI).
    pub fn verify_uncached(&self, token: &str) -> Result<Principal, VerifyError> {
        self.verify_parts(jws::split(token, MAX_TOKEN_BYTES)?)
    }

    /// The checks that can change after a token was first verified.
    fn check_live(&self, p: &Principal, now: u64) -> Result<(), VerifyError> {
        if !self.keys.load().contains(&p.kid) {
            return Err(VerifyError::UnknownKey);
        }
        if let Some(exp) = p.expires_at
            && now >= exp.saturating_add(self.config.clock_skew_secs)
        {
            return Err(VerifyError::Expired);
        }
        if self.revoked.load().contains(&p.jti) {
            return Err(VerifyError::Revoked);
        }
        Ok(())
    }

    fn verify_parts(&self, parts: jws::Parts<'_>) -> Result<Principal, VerifyError> {
        let verified =
            match jws::verify::<RawClaims>(parts, KEY_TYPS, &self.keys.load(), &self.validation) {
                Ok(v) => v,
                Err(VerifyError::UnknownKey) => {
                    // Non-blocking: a flag and a stored permit, no lock, no I/O.
                    if !self
                        .unknown_key_seen
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        self.unknown_key.notify_one();
                    }
                    return Err(VerifyError::UnknownKey);
                }
                Err(e) => return Err(e),
            };
        let scoped = verified.typ == SCOPED_API_KEY_TYP;
        let claims = verified.claims;
        let now = self.clock.now();
        let skew = self.config.clock_skew_secs;

        if claims.iss.as_deref() != Some(self.config.issuer.as_str()) {
            return Err(VerifyError::WrongIssuer);
        }
        let name = claims
            .sub
            .filter(|s| !s.is_empty() && s.chars().count() <= MAX_NAME_CHARS)
            .ok_or(VerifyError::InvalidClaim("sub"))?;
        let jti = claims
            .jti
            .filter(|j| {
                (MIN_JTI_CHARS..=MAX_JTI_CHARS).contains(&j.len())
                    && crate::core::b64::is_alphabet(j.as_bytes())
            })
            .ok_or(VerifyError::InvalidClaim("jti"))?;
        let iat = claims
            .iat
            .filter(|t| *t <= MAX_TIMESTAMP)
            .ok_or(VerifyError::InvalidClaim("iat"))?;
        if let Some(exp) = claims.exp
            && (exp > MAX_TIMESTAMP || exp <= iat)
        {
            return Err(VerifyError::InvalidClaim("exp"));
        }
        let role: Role = claims
            .role
            .ok_or(VerifyError::InvalidClaim("role"))?
            .parse()
            .map_err(|_| VerifyError::UnknownRole)?;
        if let Some(tenant) = &claims.tenant {
            validate_tenant(tenant).map_err(|_| VerifyError::InvalidClaim("tenant"))?;
        }
        let scope = scope_of(
            scoped,
            role,
            claims.apps.as_deref(),
            claims.cidrs.as_deref(),
        )?;
        if iat > now.saturating_add(skew)
            || claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(skew))
        {
            return Err(VerifyError::NotYetValid);
        }
        if let Some(verdict) = verified.time_verdict {
            return Err(verdict);
        }
        let principal = Principal {
            name,
            role,
            tenant: claims.tenant,
            jti,
            kid: verified.kid,
            issued_at: iat,
            expires_at: claims.exp,
            scope,
        };
        self.check_live(&principal, now)?;
        Ok(principal)
    }
}
