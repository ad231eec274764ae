//! Prometheus metrics (`GET /metrics`), shared by the authority and ingest nodes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub result: &'static str,
    pub reason: &'static str,
}

/// A refusal for a key's scope: which key (its name, as the admin gave it) and why.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub key: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

impl DecisionLabels {
    pub fn of(result: Result<(), crate::core::error::VerifyError>) -> Self {
        match result {
            Ok(()) => DecisionLabels {
                result: "accepted",
                reason: "ok",
            },
            Err(e) => DecisionLabels {
                result: "refused",
                reason: e.label(),
            },
        }
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub auth_decisions: Family<DecisionLabels, Counter>,
    /// Requests refused for a key's scope, per key name. Only keys with a scope are ever
    /// refused so, and admins create those: the label set is bounded by the key list.
    pub scope_refusals: Family<ScopeLabels, Counter>,
    pub logins: Family<ResultLabels, Counter>,
    pub api_keys_created: Counter,
    pub api_keys_deleted: Counter,
    pub revocation_version: Gauge<u64, AtomicU64>,
    pub revocation_entries: Gauge<u64, AtomicU64>,
    pub revocation_issued_at: Gauge<u64, AtomicU64>,
    pub revocation_age: Gauge<u64, AtomicU64>,
    pub revocation_long_polls: Gauge,
    pub signing_keys_published: Gauge<u64, AtomicU64>,
    pub verify_latency: Histogram,
    pub upstream_requests: Family<ResultLabels, Counter>,
    pub upstream_latency: Histogram,
    pub spool_entries: Gauge<u64, AtomicU64>,
    pub spool_bytes: Gauge<u64, AtomicU64>,
    pub spool_dead_letters: Gauge<u64, AtomicU64>,
    pub spool_retries: Counter,
    pub spool_possible_duplicates: Counter,
    pub spool_replayed: Counter,
    pub spool_replay_in_flight: Gauge,
    pub spool_replay_window: Gauge,
    pub spool_oldest_seconds: Gauge<u64, AtomicU64>,
    pub sync_last_success: Gauge<u64, AtomicU64>,
    pub sync_failures: Counter,
    pub keyset_version: Gauge<u64, AtomicU64>,
    pub keyset_refused: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    /// Ingest node: fleet reports the authority did not take.
    pub report_failures: Counter,
    /// Authority: reporting nodes by state (ok, stale, backlog, not_reporting).
    pub fleet_nodes: Family<StateLabels, Gauge<u64, AtomicU64>>,
    /// Authority: each reporting node's spool entries, as last reported.
    pub fleet_spool_entries: Family<NodeLabels, Gauge<u64, AtomicU64>>,
    /// Authority: live API keys expiring within `auth.key-expiry-warning`.
    pub api_keys_expiring: Gauge<u64, AtomicU64>,
    /// Authority: live API keys not used for 30 days (created at least 30 days ago).
    pub api_keys_unused: Gauge<u64, AtomicU64>,
    /// Per-key limits: refusals, admitted pushes and bytes, this node's share.
    pub limits: crate::core::limits::LimitMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts an authenticated request refused after the key check, for `reason` (a key's
    /// scope: `scope_app`).
    pub fn count_forbidden(&self, reason: &'static str) {
        self.auth_decisions
            .get_or_create(&DecisionLabels {
                result: "forbidden",
                reason,
            })
            .inc();
    }

    /// Counts a request refused for `key`'s scope (`scope_app`, `scope_cidr`), by key name.
    pub fn count_scope_refusal(&self, key: &str, reason: &'static str) {
        self.scope_refusals
            .get_or_create(&ScopeLabels {
                key: key.to_owned(),
                reason,
            })
            .inc();
    }

    /// The limiter's metrics, registered here (see [`crate::core::limits::Limiter::set_metrics`]).
    pub fn limit_metrics(&self) -> crate::core::limits::LimitMetrics {
        self.limits.clone()
    }

    /// The verifier's cache counters, registered here.
    pub fn cache_counters(&self) -> crate::core::verifier::CacheCounters {
        crate::core::verifier::CacheCounters {
            hits: self.cache_hits.clone(),
            misses: self.cache_misses.clone(),
        }
    }

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pyrogate");
        let m = Metrics {
            auth_decisions: Family::default(),
            scope_refusals: Family::default(),
            logins: Family::default(),
            api_keys_created: Counter::default(),
            api_keys_deleted: Counter::default(),
            revocation_version: Gauge::default(),
            revocation_entries: Gauge::default(),
            revocation_issued_at: Gauge::default(),
            revocation_age: Gauge::default(),
            revocation_long_polls: Gauge::default(),
            signing_keys_published: Gauge::default(),
            verify_latency: Histogram::new(exponential_buckets(1e-7, 4.0, 10)),
            upstream_requests: Family::default(),
            upstream_latency: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            spool_entries: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_dead_letters: Gauge::default(),
            spool_retries: Counter::default(),
            spool_possible_duplicates: Counter::default(),
            spool_replayed: Counter::default(),
            spool_replay_in_flight: Gauge::default(),
            spool_replay_window: Gauge::default(),
            spool_oldest_seconds: Gauge::default(),
            sync_last_success: Gauge::default(),
            sync_failures: Counter::default(),
            keyset_version: Gauge::default(),
            keyset_refused: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            report_failures: Counter::default(),
            fleet_nodes: Family::default(),
            fleet_spool_entries: Family::default(),
            api_keys_expiring: Gauge::default(),
            api_keys_unused: Gauge::default(),
            limits: crate::core::limits::LimitMetrics::default(),
            registry: Registry::default(),
        };
        registry.register(
            "auth_decisions",
            "API-key authentication decisions by result and reason",
            m.auth_decisions.clone(),
        );
        registry.register(
            "scope_refusals",
            "Requests refused for a key's scope (apps: scope_app, cidrs: scope_cidr), by key name",
            m.scope_refusals.clone(),
        );
        registry.register("logins", "UI login attempts by result", m.logins.clone());
        registry.register(
            "api_keys_created",
            "API keys created",
            m.api_keys_created.clone(),
        );
        registry.register(
            "api_keys_deleted",
            "API keys deleted (revoked)",
            m.api_keys_deleted.clone(),
        );
        registry.register(
            "revocation_list_version",
            "Version of the revocation list in force",
            m.revocation_version.clone(),
        );
        registry.register(
            "revocation_list_entries",
            "Entries in the revocation list in force",
            m.revocation_entries.clone(),
        );
        registry.register(
            "revocation_list_issued_at_seconds",
            "Unix time the revocation list in force was signed",
            m.revocation_issued_at.clone(),
        );
        registry.register(
            "revocation_list_age_seconds",
            "Seconds since the revocation list in force was signed, on the node's clock (sync.max-staleness compares this); the Unix time itself while none is in force",
            m.revocation_age.clone(),
        );
        registry.register(
            "revocation_long_polls",
            "Long-polls of the revocation list held open (authority)",
            m.revocation_long_polls.clone(),
        );
        registry.register(
            "spool_dead_letters",
            "Spooled pushes the upstream refused for good, kept in spool/dead/",
            m.spool_dead_letters.clone(),
        );
        registry.register(
            "spool_retries",
            "Replays of a spooled push the upstream asked to retry later (408, 429, 401, 403, 5xx)",
            m.spool_retries.clone(),
        );
        registry.register(
            "spool_possible_duplicates",
            "Pushes to be sent again that the upstream may already have (the answer timed out, or the connection broke after the push was written)",
            m.spool_possible_duplicates.clone(),
        );
        registry.register(
            "spool_replayed",
            "Spooled pushes the upstream took on replay (its rate is the replay rate)",
            m.spool_replayed.clone(),
        );
        registry.register(
            "spool_replay_in_flight",
            "Spooled pushes being replayed right now",
            m.spool_replay_in_flight.clone(),
        );
        registry.register(
            "spool_replay_window",
            "Spooled pushes the replay may have in flight now (grows while the upstream takes them, halves on 429, 5xx or timeouts)",
            m.spool_replay_window.clone(),
        );
        registry.register(
            "spool_oldest_seconds",
            "Age of the oldest push waiting in the spool (0 when empty)",
            m.spool_oldest_seconds.clone(),
        );
        registry.register(
            "keyset_version",
            "Version of the signed key set in force (ingest node)",
            m.keyset_version.clone(),
        );
        registry.register(
            "keyset_refused",
            "Key-set documents refused: not chaining to a trusted key, rolled back, or broken",
            m.keyset_refused.clone(),
        );
        registry.register(
            "signing_keys_published",
            "Signing keys in the published key set",
            m.signing_keys_published.clone(),
        );
        registry.register(
            "verify_duration_seconds",
            "Time to authenticate a request's API key",
            m.verify_latency.clone(),
        );
        registry.register(
            "upstream_requests",
            "Pushes sent to the upstream, by result",
            m.upstream_requests.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Latency of requests to the upstream",
            m.upstream_latency.clone(),
        );
        registry.register(
            "spool_entries",
            "Pushes waiting in the spool",
            m.spool_entries.clone(),
        );
        registry.register(
            "spool_bytes",
            "Bytes waiting in the spool",
            m.spool_bytes.clone(),
        );
        registry.register(
            "sync_last_success_seconds",
            "Unix time of the last successful contact with the authority",
            m.sync_last_success.clone(),
        );
        registry.register(
            "sync_failures",
            "Failed attempts to reach the authority",
            m.sync_failures.clone(),
        );
        registry.register(
            "verify_cache_hits",
            "API-key verifications answered by the verified-token cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "verify_cache_misses",
            "API-key verifications that needed the signature check",
            m.cache_misses.clone(),
        );
        registry.register(
            "node_report_failures",
            "Fleet reports to the authority that failed (ingest node; resent until taken)",
            m.report_failures.clone(),
        );
        registry.register(
            "fleet_nodes",
            "Ingest nodes that have reported to this authority, by state: ok, stale (refusing pushes: revocation list too old), backlog (spool not empty), not_reporting (no report for 3 intervals)",
            m.fleet_nodes.clone(),
        );
        registry.register(
            "fleet_spool_entries",
            "Pushes waiting in each reporting node's spool, as last reported",
            m.fleet_spool_entries.clone(),
        );
        registry.register(
            "api_keys_expiring",
            "Live API keys that expire within auth.key-expiry-warning",
            m.api_keys_expiring.clone(),
        );
        registry.register(
            "api_keys_unused",
            "Live API keys at least 30 days old with no use in the last 30 days",
            m.api_keys_unused.clone(),
        );
        registry.register(
            "key_limited",
            "Pushes refused with 429 because the key was over its limit, by key",
            m.limits.limited.clone(),
        );
        registry.register(
            "key_pushes",
            "Pushes admitted for each limited key (rate() of it is the key's current rate on this node)",
            m.limits.pushes.clone(),
        );
        registry.register(
            "key_bytes",
            "Request-body bytes admitted for each limited key",
            m.limits.bytes.clone(),
        );
        registry.register(
            "key_limit_pushes_per_second",
            "This node's share of each limited key's pushes-per-second limit (the limit divided by the live nodes)",
            m.limits.share.clone(),
        );
        Metrics { registry, ..m }
    }

    /// `GET /metrics`: the OpenMetrics text exposition.
    pub fn response(&self) -> impl axum::response::IntoResponse + use<> {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            self.render(),
        )
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
