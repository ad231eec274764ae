//! The node's reporting loop: every `node.report-interval`, drain the [`Tally`], build one
//! bounded [`Report`] and post it to the authority with the node's own key.
//!
//! A report is sent until the authority acknowledges it (2xx): a failed one is resent as it
//! was (same `seq`, same counts; only the gauges — spool, versions — are refreshed), and the
//! counts that arrived meanwhile wait for the next one. A 400 (a report the authority can't
//! take) is dropped rather than resent forever. Failures are counted
//! (`pyrogate_node_report_failures_total`) and logged at most once a minute. Nothing here is
//! on the push path: the push path only counts into its thread's shard of the tally.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};

use super::tally::{Counts, Tally, counts, usage};
use super::{MAX_REASONS, MAX_USAGE, OTHER, Report, SpoolState};
use crate::core::clock::Clock;
use crate::core::token::Secret;
use crate::edge::client::{HttpClient, http_client};
use crate::edge::metrics::{DecisionLabels, Metrics};
use crate::node::sync::SyncStatus;

/// The refusal reasons a report carries (the auth gate's metric labels).
const REASONS: &[(&str, &str)] = &[
    ("refused", "missing"),
    ("refused", "multiple_credentials"),
    ("refused", "unsupported_scheme"),
    ("refused", "token_in_query"),
    ("refused", "too_large"),
    ("refused", "malformed"),
    ("refused", "unsupported_algorithm"),
    ("refused", "forbidden_header"),
    ("refused", "wrong_type"),
    ("refused", "missing_kid"),
    ("refused", "unknown_key"),
    ("refused", "bad_signature"),
    ("refused", "invalid_claim"),
    ("refused", "wrong_issuer"),
    ("refused", "unknown_role"),
    ("refused", "expired"),
    ("refused", "not_yet_valid"),
    ("refused", "revoked"),
    ("forbidden", "role"),
    ("forbidden", "scope_app"),
    ("forbidden", "scope_cidr"),
];

/// Who the node is and where it reports.
pub struct ReporterConfig {
    /// The authority's base URL.
    pub url: String,
    pub key: Secret,
    pub name: String,
    pub interval: Duration,
    pub tls: Arc<rustls::ClientConfig>,
}

pub struct Reporter {
    config: ReporterConfig,
    client: HttpClient,
    tally: Arc<Tally>,
    status: Arc<SyncStatus>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    started_at: u64,
    /// The next report's sequence number.
    seq: u64,
    /// Counts drained from the tally, not yet in a report.
    pending: HashMap<(String, String), (String, Counts)>,
    /// The report sent and not yet acknowledged.
    inflight: Option<Report>,
    /// The refusal counters as of the last report built.
    refusals_seen: BTreeMap<String, u64>,
    failures: u64,
    last_warned: Option<u64>,
}

impl Reporter {
    pub fn new(
        config: ReporterConfig,
        tally: Arc<Tally>,
        status: Arc<SyncStatus>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let client = http_client(Duration::from_secs(5), config.tls.clone());
        let started_at = clock.now();
        Reporter {
            config,
            client,
            tally,
            status,
            metrics,
            clock,
            started_at,
            seq: 1,
            pending: HashMap::new(),
            inflight: None,
            refusals_seen: BTreeMap::new(),
            failures: 0,
            last_warned: None,
        }
    }

    /// Reports at once, then every interval; when `life` stops, one last report (bounded to
    /// a few seconds) hands over what was counted since the previous one.
    pub async fn run(mut self, life: crate::edge::server::Lifecycle) {
        loop {
            self.tick().await;
            tokio::select! {
                () = tokio::time::sleep(self.config.interval) => {}
                () = life.stopping() => break,
            }
        }
        let last = tokio::time::timeout(Duration::from_secs(3), async {
            // The report in flight first, then the counts since.
            self.tick().await;
            if self.inflight.is_none() && !self.tally_is_empty() {
                self.tick().await;
            }
        });
        let _ = last.await;
    }

    fn tally_is_empty(&mut self) -> bool {
        for u in self.tally.drain() {
            self.add_pending(u);
        }
        self.pending.is_empty()
    }

    fn add_pending(&mut self, u: super::Usage) {
        let c = counts(&u);
        let entry = self
            .pending
            .entry((u.jti, u.app))
            .or_insert_with(|| (u.key, Counts::default()));
        let mut sum = entry.1;
        sum.pushes += c.pushes;
        sum.bytes += c.bytes;
        sum.refused += c.refused;
        sum.last_push_at = sum.last_push_at.max(c.last_push_at);
        entry.1 = sum;
    }

    /// One round: build (or refresh) the report in flight and send it.
    pub async fn tick(&mut self) {
        for u in self.tally.drain() {
            self.add_pending(u);
        }
        let mut report = match self.inflight.take() {
            Some(report) => report,
            None => self.next_report(),
        };
        self.refresh(&mut report);
        match self.send(&report).await {
            Ok(()) => {}
            Err(Failure::Refused(why)) => {
                self.failed(&why);
            }
            Err(Failure::Retry(why)) => {
                self.failed(&why);
                self.inflight = Some(report);
            }
        }
    }

    fn failed(&mut self, why: &str) {
        self.failures += 1;
        self.metrics.report_failures.inc();
        let now = self.clock.now();
        if self.last_warned.is_none_or(|t| now.saturating_sub(t) >= 60) {
            self.last_warned = Some(now);
            tracing::warn!(error = %why, failures = self.failures, "fleet report to the authority failed; counts are kept and resent");
        }
    }

    /// A new report from the pending counts: the [`MAX_USAGE`] busiest pairs, the rest in one
    /// [`OTHER`] row.
    fn next_report(&mut self) -> Report {
        let mut rows: Vec<_> = self
            .pending
            .drain()
            .map(|((jti, app), (key, c))| usage(&jti, &key, &app, &c))
            .collect();
        rows.sort_by(|a, b| b.pushes.cmp(&a.pushes).then(b.refused.cmp(&a.refused)));
        if rows.len() > MAX_USAGE {
            let mut other = Counts::default();
            for u in rows.drain(MAX_USAGE..) {
                other.pushes += u.pushes;
                other.bytes += u.bytes;
                other.refused += u.refused;
                other.last_push_at = other.last_push_at.max(u.last_push_at);
            }
            rows.push(usage("", OTHER, OTHER, &other));
        }
        let current = self.refusal_counters();
        let refusals = current
            .iter()
            .filter_map(|(reason, n)| {
                let delta = n.saturating_sub(*self.refusals_seen.get(reason).unwrap_or(&0));
                (delta > 0).then(|| (reason.clone(), delta))
            })
            .take(MAX_REASONS)
            .collect();
        self.refusals_seen = current;
        let seq = self.seq;
        self.seq += 1;
        Report {
            node: self.config.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at,
            seq,
            interval_seconds: self.config.interval.as_secs().max(1),
            key_set_version: 0,
            revocations_version: 0,
            revocations_age_seconds: None,
            stale: false,
            spool: SpoolState::default(),
            report_failures: 0,
            refusals,
            usage: rows,
        }
    }

    /// The gauges, as they are now.
    fn refresh(&self, report: &mut Report) {
        let s = &self.status;
        let m = &self.metrics;
        report.key_set_version = s.keyset_version.load(Ordering::Relaxed);
        report.revocations_version = s.list_version.load(Ordering::Relaxed);
        report.revocations_age_seconds = s.revocations_age(self.clock.now());
        report.stale = s.stale.load(Ordering::Relaxed);
        report.spool = SpoolState {
            entries: m.spool_entries.get(),
            bytes: m.spool_bytes.get(),
            oldest_seconds: m.spool_oldest_seconds.get(),
            dead_letters: m.spool_dead_letters.get(),
        };
        report.report_failures = self.failures;
    }

    /// The auth gate's refusal counters by reason (`expired`, `role`, …), cumulative.
    fn refusal_counters(&self) -> BTreeMap<String, u64> {
        REASONS
            .iter()
            .filter_map(|(result, reason)| {
                let n = self
                    .metrics
                    .auth_decisions
                    .get(&DecisionLabels { result, reason })
                    .map(|c| c.get())?;
                (n > 0).then(|| ((*reason).to_owned(), n))
            })
            .collect()
    }

    async fn send(&self, report: &Report) -> Result<(), Failure> {
        let url = format!("{}/api/nodes/report", self.config.url.trim_end_matches('/'));
        let body = serde_json::to_vec(report)
            .map_err(|e| Failure::Refused(format!("encoding the report: {e}")))?;
        let req = Request::post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.config.key.expose()),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Refused(format!("building the request: {e}")))?;
        let timeout = self.config.interval.max(Duration::from_secs(10));
        let response = tokio::time::timeout(timeout, self.client.request(req))
            .await
            .map_err(|_| Failure::Retry(format!("POST {url}: timed out")))?
            .map_err(|e| Failure::Retry(format!("POST {url}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The authority's reason (never a secret: the errors shape), for the log.
        let text = tokio::time::timeout(
            Duration::from_secs(5),
            Limited::new(response.into_body(), 4096).collect(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
        let why = format!("POST {url}: {status} {}", text.trim());
        if status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE {
            Err(Failure::Refused(why))
        } else {
            Err(Failure::Retry(why))
        }
    }
}

enum Failure {
    /// Sending it again would get the same answer: drop it.
    Refused(String),
    /// Keep it and send it again next round.
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::ManualClock;

    fn reporter(tally: Arc<Tally>) -> Reporter {
        let tls = crate::edge::tls::client_config(&crate::config::ClientTls {
            peer: "authority",
            ..Default::default()
        })
        .unwrap();
        Reporter::new(
            ReporterConfig {
                // Nothing listens on port 9 of loopback: every send fails at once.
                url: "http://127.0.0.1:9".into(),
                key: Secret::new("k".into()),
                name: "ingest-1".into(),
                interval: Duration::from_secs(15),
                tls,
            },
            tally,
            Arc::default(),
            Arc::new(Metrics::new()),
            Arc::new(ManualClock::new(1000)),
        )
    }

    #[test]
    fn a_report_holds_the_busiest_pairs_and_folds_the_rest_into_other() {
        let tally = Arc::new(Tally::default());
        let mut r = reporter(tally.clone());
        for i in 0..(MAX_USAGE + 20) {
            for _ in 0..=(i % 3) {
                tally.pushed(&format!("jti-{i}"), "k", "app", 10, 5);
            }
        }
        for u in tally.drain() {
            r.add_pending(u);
        }
        let report = r.next_report();
        assert_eq!(report.usage.len(), MAX_USAGE + 1);
        assert!(report.check().is_ok());
        let total: u64 = report.usage.iter().map(|u| u.pushes).sum();
        let expected: u64 = (0..(MAX_USAGE + 20) as u64).map(|i| i % 3 + 1).sum();
        assert_eq!(total, expected, "nothing lost in the fold");
        let other = report.usage.last().unwrap();
        assert_eq!((other.app.as_str(), other.jti.as_str()), (OTHER, ""));
        assert_eq!((report.seq, r.next_report().seq), (1, 2));
    }

    #[tokio::test]
    async fn a_failed_report_is_kept_and_resent_as_it_was() {
        let tally = Arc::new(Tally::default());
        let mut r = reporter(tally.clone());
        tally.pushed("jti-a", "agent-a", "checkout.cpu", 100, 7);
        r.tick().await;
        let kept = r.inflight.clone().expect("kept after a failure");
        assert_eq!((kept.seq, kept.usage[0].pushes), (1, 1));
        // More pushes meanwhile: they wait for the next report, the one in flight is unchanged.
        tally.pushed("jti-a", "agent-a", "checkout.cpu", 100, 8);
        r.tick().await;
        let again = r.inflight.clone().expect("still kept");
        assert_eq!((again.seq, again.usage.clone()), (1, kept.usage));
        assert_eq!(again.report_failures, 1, "the gauges are refreshed");
        assert_eq!(r.pending.len(), 1);
        assert_eq!(r.metrics.report_failures.get(), 2);
    }
}
