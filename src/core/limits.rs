//! Per-key limits: what an admin sets on a key ([`KeyLimits`]), how the authority publishes
//! them to the nodes (the `limits` section of the signed revocation list, [`LimitsSection`]),
//! and how a node enforces its share of them on the request path ([`Limiter`]).
//!
//! Limits are not in the token: they change without reissuing the key. The authority puts
//! every live key that has a limit in the revocation list it signs anyway, with the number of
//! live (reporting) nodes; each node enforces `limit ÷ nodes` (Pyroscope's and Mimir's
//! "global" strategy) with the whole burst. Format and trade-offs: docs/token-format.md and
//! docs/architecture.md ("Per-key limits").
//!
//! The buckets are GCRA (the token bucket written as one "theoretical arrival time" per
//! bucket) in an [`AtomicU64`], updated with a compare-and-swap: no lock, no allocation, no
//! thread ever waits for another. A key without a limit costs one atomic load of the map's
//! pointer and an emptiness check when no key is limited, and one hash look-up when some are.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use foldhash::HashMap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

/// Highest pushes per second a limit may name (a node forwards ~60,000/s).
pub const MAX_PUSHES_PER_SECOND: f64 = 1_000_000.0;
/// Highest burst, in pushes.
pub const MAX_BURST_PUSHES: u64 = 10_000_000;
/// Highest bytes per second or burst in bytes (1 TB).
pub const MAX_BYTES: u64 = 1_000_000_000_000;
/// Most keys with limits one document may carry.
pub const MAX_LIMITED_KEYS: usize = 100_000;
/// Most live nodes a document may name.
pub const MAX_NODES: u64 = 100_000;

/// A key's limits as the admin sets them, for the whole fleet. A rate without a burst gets
/// the default burst (one second's worth, at least one push); a burst without a rate is
/// refused. All absent is "no limit".
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushes_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_pushes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<u64>,
}

// Rates are finite once validated (and JSON has no NaN), so `==` is an equivalence.
impl Eq for KeyLimits {}

impl KeyLimits {
    /// No rate at all: the key is unlimited.
    pub fn is_unlimited(&self) -> bool {
        self.pushes_per_second.is_none() && self.bytes_per_second.is_none()
    }

    /// Every problem at once; on success the limits with default bursts filled in, or `None`
    /// for "no limit".
    pub fn normalize(self) -> Result<Option<KeyLimits>, Vec<String>> {
        let mut errors = Vec::new();
        if let Some(r) = self.pushes_per_second
            && !(r.is_finite() && r > 0.0 && r <= MAX_PUSHES_PER_SECOND)
        {
            errors.push(format!(
                "limits.pushesPerSecond must be above 0 and at most {MAX_PUSHES_PER_SECOND}"
            ));
        }
        if let Some(b) = self.burst_pushes {
            if self.pushes_per_second.is_none() {
                errors.push("limits.burstPushes needs limits.pushesPerSecond".into());
            } else if !(1..=MAX_BURST_PUSHES).contains(&b) {
                errors.push(format!(
                    "limits.burstPushes must be 1 to {MAX_BURST_PUSHES}"
                ));
            }
        }
        if let Some(r) = self.bytes_per_second
            && !(1..=MAX_BYTES).contains(&r)
        {
            errors.push(format!("limits.bytesPerSecond must be 1 to {MAX_BYTES}"));
        }
        if let Some(b) = self.burst_bytes {
            if self.bytes_per_second.is_none() {
                errors.push("limits.burstBytes needs limits.bytesPerSecond".into());
            } else if !(1..=MAX_BYTES).contains(&b) {
                errors.push(format!("limits.burstBytes must be 1 to {MAX_BYTES}"));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if self.is_unlimited() {
            return Ok(None);
        }
        Ok(Some(KeyLimits {
            pushes_per_second: self.pushes_per_second,
            burst_pushes: self
                .pushes_per_second
                .map(|r| self.burst_pushes.unwrap_or((r.ceil() as u64).max(1))),
            bytes_per_second: self.bytes_per_second,
            burst_bytes: self.bytes_per_second.map(|r| self.burst_bytes.unwrap_or(r)),
        }))
    }

    /// `10 pushes/s (burst 20), 1000000 bytes/s (burst 1000000)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = self.pushes_per_second {
            parts.push(format!(
                "{r} pushes/s (burst {})",
                self.burst_pushes.unwrap_or(1)
            ));
        }
        if let Some(r) = self.bytes_per_second {
            parts.push(format!(
                "{r} bytes/s (burst {})",
                self.burst_bytes.unwrap_or(r)
            ));
        }
        if parts.is_empty() {
            "no limit".into()
        } else {
            parts.join(", ")
        }
    }
}

/// One limited key in the signed document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitEntry {
    pub jti: String,
    /// The key's name (its `sub`), for messages and metric labels.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushes_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_pushes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<u64>,
}

// As for [`KeyLimits`]: JSON carries no NaN.
impl Eq for LimitEntry {}

impl LimitEntry {
    pub fn new(jti: &str, name: &str, limits: &KeyLimits) -> Self {
        LimitEntry {
            jti: jti.to_owned(),
            name: name.to_owned(),
            pushes_per_second: limits.pushes_per_second,
            burst_pushes: limits.burst_pushes,
            bytes_per_second: limits.bytes_per_second,
            burst_bytes: limits.burst_bytes,
        }
    }

    pub fn limits(&self) -> KeyLimits {
        KeyLimits {
            pushes_per_second: self.pushes_per_second,
            burst_pushes: self.burst_pushes,
            bytes_per_second: self.bytes_per_second,
            burst_bytes: self.burst_bytes,
        }
    }
}

/// The `limits` section of the signed revocation list: the live keys that have a limit, and
/// the number of live nodes that share each limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Live (reporting) nodes, at least 1: each enforces `limit ÷ nodes`.
    pub nodes: u64,
    pub keys: Vec<LimitEntry>,
}

/// Why a `limits` section is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid limits section: {0}")]
pub struct LimitsError(pub String);

impl LimitsSection {
    /// The rules a document from outside must keep, beyond its JSON shape: a node count of 1
    /// to [`MAX_NODES`], each `jti` once and of token-like length, a name, and limits that
    /// [`KeyLimits::normalize`] takes as they are (bursts present, rates in range).
    pub fn validate(&self) -> Result<(), LimitsError> {
        if !(1..=MAX_NODES).contains(&self.nodes) {
            return Err(LimitsError(format!("nodes must be 1 to {MAX_NODES}")));
        }
        if self.keys.len() > MAX_LIMITED_KEYS {
            return Err(LimitsError("too many keys".into()));
        }
        let mut seen = foldhash::HashSet::default();
        for e in &self.keys {
            if !(1..=128).contains(&e.jti.len()) || !seen.insert(e.jti.as_str()) {
                return Err(LimitsError("a jti is missing, too long or repeated".into()));
            }
            if e.name.is_empty() || e.name.len() > 1024 {
                return Err(LimitsError("a key name is missing or too long".into()));
            }
            let limits = e.limits();
            match limits.normalize() {
                Ok(Some(n)) if n == limits => {}
                _ => {
                    return Err(LimitsError(format!(
                        "the limits of key \"{}\" are out of range or lack a burst",
                        e.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Parses and validates a section given as JSON (a document from outside).
    pub fn parse(json: &[u8]) -> Result<Self, LimitsError> {
        let section: LimitsSection =
            serde_json::from_slice(json).map_err(|e| LimitsError(e.to_string()))?;
        section.validate()?;
        Ok(section)
    }
}

/// The `{key}` label of the per-key limit metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub key: String,
}

/// The limiter's metrics, shared with whoever exports them (as the verifier's cache counters).
#[derive(Debug, Clone, Default)]
pub struct LimitMetrics {
    /// Pushes refused with 429, per key (`pyrogate_key_limited_total`).
    pub limited: Family<KeyLabels, Counter>,
    /// Pushes admitted, per limited key (`pyrogate_key_pushes_total`): its `rate()` is the
    /// key's current rate on this node.
    pub pushes: Family<KeyLabels, Counter>,
    /// Bytes admitted, per limited key (`pyrogate_key_bytes_total`).
    pub bytes: Family<KeyLabels, Counter>,
    /// This node's share of each key's pushes-per-second limit.
    pub share: Family<KeyLabels, Gauge<f64, AtomicU64>>,
}

/// One GCRA bucket: `tat` is the theoretical arrival time (ns since the limiter's epoch) of
/// the next unit at the sustained rate; a request costing `n` units passes when, after it,
/// `tat` is at most one burst ahead of now.
#[derive(Debug)]
struct Gcra {
    /// Nanoseconds one unit costs at this node's share of the rate.
    ns_per_unit: f64,
    /// The burst, in nanoseconds of credit.
    capacity: u64,
    tat: AtomicU64,
}

impl Gcra {
    fn new(rate: f64, burst: u64, tat: u64) -> Self {
        let ns_per_unit = 1e9 / rate;
        Gcra {
            ns_per_unit,
            capacity: (ns_per_unit * burst as f64).min(u64::MAX as f64 / 4.0) as u64,
            tat: AtomicU64::new(tat),
        }
    }

    /// This bucket with what `old` (the key's bucket under its previous limit) had used:
    /// the units still owed carry over, at most a full burst, so raising a limit frees the key
    /// at once and lowering it does not forgive what was just used.
    fn carrying(self, old: Option<&Gcra>, now: u64) -> Self {
        if let Some(old) = old {
            let ahead = old.tat.load(Ordering::Relaxed).saturating_sub(now);
            let owed = ahead as f64 / old.ns_per_unit;
            let ahead = (owed * self.ns_per_unit).min(self.capacity as f64) as u64;
            if ahead > 0 {
                self.tat.store(now + ahead, Ordering::Relaxed);
            }
        }
        self
    }

    fn cost(&self, units: u64) -> u64 {
        (self.ns_per_unit * units as f64).min(u64::MAX as f64 / 4.0) as u64
    }

    /// Takes `units` if the bucket allows it; else how long until it would (ns).
    fn take(&self, units: u64, now: u64) -> Result<(), u64> {
        let cost = self.cost(units);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let new = tat.max(now).saturating_add(cost);
            let ahead = new - now;
            if ahead > self.capacity {
                return Err(ahead - self.capacity);
            }
            match self
                .tat
                .compare_exchange_weak(tat, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Gives back what [`Gcra::take`] took (the other bucket of the key refused).
    fn refund(&self, units: u64) {
        let cost = self.cost(units);
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(cost))
            });
    }

    /// Takes `units` whether or not the bucket allows it: a body whose length was not declared
    /// is paid for once read, and the next request waits for the debt.
    fn charge(&self, units: u64, now: u64) {
        let cost = self.cost(units);
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.max(now).saturating_add(cost))
            });
    }
}

/// A limited key's buckets on this node.
#[derive(Debug)]
pub struct Bucket {
    name: String,
    /// The fleet-wide limits, and this node's share of them.
    limits: KeyLimits,
    nodes: u64,
    pushes: Option<Gcra>,
    bytes: Option<Gcra>,
    /// Counters of this key (clones of the families' children: an increment is one atomic add).
    admitted_pushes: Counter,
    admitted_bytes: Counter,
    limited: Counter,
}

impl Bucket {
    /// Whether the byte rate still has to be paid once the body is read.
    pub fn limits_bytes(&self) -> bool {
        self.bytes.is_some()
    }
}

/// A push the limiter refused: the 429's message and `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub retry_after_secs: u64,
}

type Buckets = HashMap<Box<str>, Arc<Bucket>>;

/// The buckets of every limited key, swapped whole when a new document is installed.
pub struct Limiter {
    buckets: ArcSwap<Buckets>,
    /// The monotonic clock buckets count from (real time: a rate is about real seconds).
    epoch: crate::core::clock::Stopwatch,
    metrics: std::sync::OnceLock<LimitMetrics>,
    /// The section in force, as installed (for `/ready`-style introspection and tests).
    section: ArcSwap<Option<LimitsSection>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("limited_keys", &self.buckets.load().len())
            .finish()
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            buckets: ArcSwap::from_pointee(Buckets::default()),
            epoch: crate::core::clock::Stopwatch::start(),
            metrics: std::sync::OnceLock::new(),
            section: ArcSwap::from_pointee(None),
        }
    }
}

impl Limiter {
    /// Counts into `metrics` from the next install on (the first call wins).
    pub fn set_metrics(&self, metrics: LimitMetrics) {
        if self.metrics.set(metrics).is_ok() {
            // Buckets built before had no counters: build them again, keeping their state.
            let current = (**self.section.load()).clone();
            self.rebuild(current.as_ref(), false);
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos().min(u64::MAX as u128 / 2) as u64
    }

    /// Puts `section` in force (`None`: no key is limited). A key whose limit is unchanged
    /// keeps its bucket; a changed one keeps how far ahead it was, so raising a limit frees
    /// the key at once and lowering it does not forgive what it already used.
    pub fn install(&self, section: Option<&LimitsSection>) {
        self.rebuild(section, true);
    }

    /// [`Limiter::install`]; with `reuse`, a key whose limit is unchanged keeps its bucket
    /// itself, else every bucket is new (carrying the old one's state).
    fn rebuild(&self, section: Option<&LimitsSection>, reuse: bool) {
        let old = self.buckets.load_full();
        let mut buckets = Buckets::default();
        if let Some(section) = section {
            let nodes = section.nodes.max(1);
            for e in &section.keys {
                let limits = e.limits();
                if let Some(b) = old.get(e.jti.as_str())
                    && reuse
                    && b.limits == limits
                    && b.nodes == nodes
                    && b.name == e.name
                {
                    buckets.insert(e.jti.as_str().into(), b.clone());
                    continue;
                }
                let prev = old.get(e.jti.as_str());
                let now = self.now();
                let share = |rate: f64| rate / nodes as f64;
                let labels = KeyLabels {
                    key: e.name.clone(),
                };
                let (admitted_pushes, admitted_bytes, limited) = match self.metrics.get() {
                    Some(m) => {
                        m.share
                            .get_or_create(&labels)
                            .set(limits.pushes_per_second.map_or(0.0, share));
                        (
                            m.pushes.get_or_create(&labels).clone(),
                            m.bytes.get_or_create(&labels).clone(),
                            m.limited.get_or_create(&labels).clone(),
                        )
                    }
                    None => Default::default(),
                };
                let bucket = Bucket {
                    name: e.name.clone(),
                    limits,
                    nodes,
                    pushes: limits.pushes_per_second.map(|r| {
                        Gcra::new(share(r), limits.burst_pushes.unwrap_or(1), 0)
                            .carrying(prev.and_then(|b| b.pushes.as_ref()), now)
                    }),
                    bytes: limits.bytes_per_second.map(|r| {
                        Gcra::new(share(r as f64), limits.burst_bytes.unwrap_or(r), 0)
                            .carrying(prev.and_then(|b| b.bytes.as_ref()), now)
                    }),
                    admitted_pushes,
                    admitted_bytes,
                    limited,
                };
                buckets.insert(e.jti.as_str().into(), Arc::new(bucket));
            }
        }
        // Keys no longer limited leave the share gauge (their counters stay, as counters do).
        if let Some(m) = self.metrics.get() {
            for b in old.values() {
                if !buckets.values().any(|n| n.name == b.name) {
                    m.share.remove(&KeyLabels {
                        key: b.name.clone(),
                    });
                }
            }
        }
        self.buckets.store(Arc::new(buckets));
        self.section.store(Arc::new(section.cloned()));
    }

    /// The section in force.
    pub fn section(&self) -> Option<LimitsSection> {
        (**self.section.load()).clone()
    }

    /// Whether any key is limited.
    pub fn is_empty(&self) -> bool {
        self.buckets.load().is_empty()
    }

    /// One push by key `jti`, of `declared` bytes if the request said so. `Ok(None)`: the key
    /// has no limit. `Ok(Some(bucket))`: admitted; when `declared` was `None` and the key has
    /// a byte rate, pay the body with [`Limiter::charge_bytes`] once it is read.
    #[inline]
    pub fn admit(&self, jti: &str, declared: Option<u64>) -> Result<Option<Arc<Bucket>>, Refusal> {
        let buckets = self.buckets.load();
        if buckets.is_empty() {
            return Ok(None);
        }
        let Some(bucket) = buckets.get(jti) else {
            return Ok(None);
        };
        let now = self.now();
        if let Some(g) = &bucket.pushes
            && let Err(wait) = g.take(1, now)
        {
            return Err(self.refuse(bucket, "pushes", wait));
        }
        if let (Some(g), Some(n)) = (&bucket.bytes, declared)
            && let Err(wait) = g.take(n, now)
        {
            if let Some(p) = &bucket.pushes {
                p.refund(1);
            }
            return Err(self.refuse(bucket, "bytes", wait));
        }
        bucket.admitted_pushes.inc();
        if let Some(n) = declared {
            bucket.admitted_bytes.inc_by(n);
        }
        Ok(Some(bucket.clone()))
    }

    /// Pays for a body read without a declared length (see [`Limiter::admit`]).
    pub fn charge_bytes(&self, bucket: &Bucket, n: u64) {
        bucket.admitted_bytes.inc_by(n);
        if let Some(g) = &bucket.bytes {
            g.charge(n, self.now());
        }
    }

    fn refuse(&self, bucket: &Bucket, what: &str, wait_ns: u64) -> Refusal {
        bucket.limited.inc();
        let retry_after_secs = wait_ns.div_ceil(1_000_000_000).max(1);
        let l = &bucket.limits;
        let limit = match what {
            "pushes" => format!(
                "{} pushes/s, burst {}",
                l.pushes_per_second.unwrap_or_default(),
                l.burst_pushes.unwrap_or(1)
            ),
            _ => format!(
                "{} bytes/s, burst {}",
                l.bytes_per_second.unwrap_or_default(),
                l.burst_bytes.unwrap_or_default()
            ),
        };
        let share = if bucket.nodes > 1 {
            format!(" across {} nodes", bucket.nodes)
        } else {
            String::new()
        };
        Refusal {
            message: format!(
                "key \"{}\" is over its {what} limit ({limit}{share}); retry after {retry_after_secs} s",
                bucket.name
            ),
            retry_after_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(nodes: u64, rate: f64, burst: u64) -> LimitsSection {
        LimitsSection {
            nodes,
            keys: vec![LimitEntry::new(
                "jti-aaaaaaaaaaaaaaaaaaaaa",
                "agent",
                &KeyLimits {
                    pushes_per_second: Some(rate),
                    burst_pushes: Some(burst),
                    ..KeyLimits::default()
                },
            )],
        }
    }

    #[test]
    fn a_burst_then_refusals_with_a_retry_after() {
        let limiter = Limiter::default();
        assert!(limiter.admit("jti-aaaaaaaaaaaaaaaaaaaaa", None).is_ok());
        limiter.install(Some(&section(1, 1.0, 5)));
        for _ in 0..5 {
            assert!(
                limiter
                    .admit("jti-aaaaaaaaaaaaaaaaaaaaa", Some(10))
                    .unwrap()
                    .is_some()
            );
        }
        let refused = limiter
            .admit("jti-aaaaaaaaaaaaaaaaaaaaa", Some(10))
            .unwrap_err();
        assert_eq!(refused.retry_after_secs, 1);
        assert!(refused.message.contains("\"agent\""), "{}", refused.message);
        // Another key is not limited.
        assert!(limiter.admit("other", None).unwrap().is_none());
    }

    #[test]
    fn raising_a_limit_frees_the_key_at_once() {
        let limiter = Limiter::default();
        limiter.install(Some(&section(1, 1.0, 2)));
        let jti = "jti-aaaaaaaaaaaaaaaaaaaaa";
        assert!(limiter.admit(jti, None).is_ok());
        assert!(limiter.admit(jti, None).is_ok());
        assert!(limiter.admit(jti, None).is_err());
        limiter.install(Some(&section(1, 1000.0, 100)));
        assert!(limiter.admit(jti, None).is_ok());
        limiter.install(None);
        assert!(limiter.is_empty());
        assert!(limiter.admit(jti, None).unwrap().is_none());
    }

    #[test]
    fn metrics_set_after_an_install_count_and_keep_the_buckets_state() {
        let limiter = Limiter::default();
        let jti = "jti-aaaaaaaaaaaaaaaaaaaaa";
        limiter.install(Some(&section(1, 1.0, 1)));
        assert!(limiter.admit(jti, None).is_ok());
        let metrics = LimitMetrics::default();
        limiter.set_metrics(metrics.clone());
        assert!(
            limiter.admit(jti, None).is_err(),
            "the used burst stays used"
        );
        let labels = KeyLabels {
            key: "agent".into(),
        };
        assert_eq!(metrics.limited.get_or_create(&labels).get(), 1);
        assert_eq!(metrics.share.get_or_create(&labels).get(), 1.0);
    }

    #[test]
    fn bytes_refused_give_the_push_back() {
        let limiter = Limiter::default();
        let jti = "jti-aaaaaaaaaaaaaaaaaaaaa";
        let mut s = section(2, 10.0, 1);
        s.keys[0].bytes_per_second = Some(1000);
        s.keys[0].burst_bytes = Some(1000);
        limiter.install(Some(&s));
        // A push bigger than the burst never passes, and costs no push.
        assert!(limiter.admit(jti, Some(5000)).is_err());
        assert!(limiter.admit(jti, Some(500)).is_ok());
    }

    #[test]
    fn normalize_fills_bursts_and_refuses_nonsense() {
        let l = KeyLimits {
            pushes_per_second: Some(2.5),
            ..KeyLimits::default()
        }
        .normalize()
        .unwrap()
        .unwrap();
        assert_eq!(l.burst_pushes, Some(3));
        assert_eq!(KeyLimits::default().normalize().unwrap(), None);
        let bad = KeyLimits {
            pushes_per_second: Some(-1.0),
            burst_bytes: Some(3),
            ..KeyLimits::default()
        }
        .normalize()
        .unwrap_err();
        assert_eq!(bad.len(), 2, "{bad:?}");
    }

    #[test]
    fn sections_are_validated() {
        assert!(section(1, 1.0, 1).validate().is_ok());
        assert!(section(0, 1.0, 1).validate().is_err());
        let mut s = section(1, 1.0, 1);
        s.keys[0].burst_pushes = None;
        assert!(s.validate().is_err());
        let mut s = section(1, 1.0, 1);
        s.keys.push(s.keys[0].clone());
        assert!(s.validate().is_err());
        assert!(LimitsSection::parse(br#"{"nodes":1,"keys":[],"x":1}"#).is_err());
    }
}
