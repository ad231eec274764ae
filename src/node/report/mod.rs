//! Fleet reports: what an ingest node tells the authority about itself and its traffic.
//!
//! A node with a Node-role key (`authority.node-key`) posts one [`Report`] every
//! `node.report-interval` to `POST /api/nodes/report`: its name, version and start time, the
//! key-set and revocation versions in force, its spool, and per key (`jti`) and application
//! the pushes, bytes and refusals since its last *acknowledged* report.
//!
//! - [`tally`]: the push path's counters — one shard per serving thread, so a push never
//!   contends with another thread or waits for the reporter.
//! - [`reporter`]: the background loop that drains the tally, sends and resends.
//!
//! Counts are deltas, and a delta is sent until the authority acknowledges it: a report that
//! fails is resent as it was, under the same sequence number (`seq`, counted from 1 per node
//! start), while new counts wait for the next one. The authority ignores a report whose
//! `(startedAt, seq)` it has already applied, so a report whose answer was lost is never
//! counted twice. A report is bounded ([`MAX_USAGE`] rows: the busiest key/application pairs,
//! the rest folded into one [`OTHER`] row), and the authority refuses one outside the bounds.

pub mod reporter;
pub mod tally;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most key/application rows in one report; the rest are folded into one [`OTHER`] row.
pub const MAX_USAGE: usize = 500;
/// Most refusal reasons in one report.
pub const MAX_REASONS: usize = 32;
/// Largest report body the authority reads.
pub const MAX_REPORT_BYTES: usize = 1 << 20;
/// Longest application name kept (longer ones are cut on a character boundary).
pub const MAX_APP_BYTES: usize = 256;
/// Largest count or timestamp a report may carry (2^48): sums over years of reports stay
/// far inside a database's 64-bit integers.
pub const MAX_COUNT: u64 = 1 << 48;
/// The application (and key name) of the row that holds everything past [`MAX_USAGE`].
pub const OTHER: &str = "(other)";

/// One report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `node.name`.
    pub node: String,
    /// The node's pyrogate version.
    pub version: String,
    /// When the node process started (Unix seconds): with `seq`, what makes a report unique.
    pub started_at: u64,
    /// 1, 2, 3… per node start; a report is resent under its own number until acknowledged.
    pub seq: u64,
    /// `node.report-interval` in seconds: the authority calls a node not reporting after
    /// three of them.
    pub interval_seconds: u64,
    /// The signed key set in force (0: none yet).
    pub key_set_version: u64,
    /// The revocation list in force (0: none yet).
    pub revocations_version: u64,
    /// Seconds since the list in force was signed; `None` without one.
    pub revocations_age_seconds: Option<u64>,
    /// True while the node refuses pushes because its list is too old (`sync.max-staleness`).
    pub stale: bool,
    pub spool: SpoolState,
    /// Reports that failed since the node started.
    pub report_failures: u64,
    /// Pushes refused by the node's auth gate since the last acknowledged report, by reason
    /// (`missing`, `expired`, `revoked`, `role`, `scope_app`, …).
    #[serde(default)]
    pub refusals: BTreeMap<String, u64>,
    /// Per key and application, since the last acknowledged report.
    #[serde(default)]
    pub usage: Vec<Usage>,
}

/// The node's spool right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpoolState {
    pub entries: u64,
    pub bytes: u64,
    /// Age of the oldest queued push, in seconds.
    pub oldest_seconds: u64,
    pub dead_letters: u64,
}

/// Pushes of one key for one application through one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// The key's `jti`; empty for pushes without a key (ingestion auth off) and for the
    /// [`OTHER`] row.
    pub jti: String,
    /// The key's name (`sub`), for keys the authority does not know (issued offline).
    pub key: String,
    pub app: String,
    pub pushes: u64,
    pub bytes: u64,
    /// Pushes of this key for this application the node refused (outside the key's `apps`).
    pub refused: u64,
    /// Pushes of this key the node refused with 429, over the key's limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limited: u64,
    /// Unix seconds of the last push counted here.
    pub last_push_at: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a report was refused; the text goes into the 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn short(field: &str, text: &str, max: usize) -> Result<(), Invalid> {
    if text.len() > max {
        return Err(Invalid(format!("{field} is longer than {max} bytes")));
    }
    Ok(())
}

impl Report {
    /// Reads and checks a report: JSON of this shape (unknown members ignored, so a newer
    /// node can report to an older authority), a valid node name, and every list and string
    /// within its bound.
    pub fn parse(body: &[u8]) -> Result<Report, Invalid> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(Invalid(format!(
                "the report is larger than {MAX_REPORT_BYTES} bytes"
            )));
        }
        let report: Report = serde_json::from_slice(body)
            .map_err(|e| Invalid(format!("the report is not valid: {e}")))?;
        report.check()?;
        Ok(report)
    }

    /// The bounds [`Report::parse`] enforces.
    pub fn check(&self) -> Result<(), Invalid> {
        if !crate::config::valid_node_name(&self.node) {
            return Err(Invalid(
                "node must be 1 to 64 letters, digits, '.', '_' or '-'".into(),
            ));
        }
        short("version", &self.version, 64)?;
        if self.seq == 0 {
            return Err(Invalid("seq starts at 1".into()));
        }
        if self.usage.len() > MAX_USAGE + 1 {
            return Err(Invalid(format!(
                "usage has more than {} rows",
                MAX_USAGE + 1
            )));
        }
        if self.refusals.len() > MAX_REASONS {
            return Err(Invalid(format!(
                "refusals has more than {MAX_REASONS} reasons"
            )));
        }
        for reason in self.refusals.keys() {
            short("a refusal reason", reason, 32)?;
        }
        let counts = [
            self.started_at,
            self.seq,
            self.interval_seconds,
            self.key_set_version,
            self.revocations_version,
            self.revocations_age_seconds.unwrap_or(0),
            self.spool.entries,
            self.spool.bytes,
            self.spool.oldest_seconds,
            self.spool.dead_letters,
            self.report_failures,
        ]
        .into_iter()
        .chain(self.refusals.values().copied())
        .chain(
            self.usage
                .iter()
                .flat_map(|u| [u.pushes, u.bytes, u.refused, u.limited, u.last_push_at]),
        );
        for n in counts {
            if n > MAX_COUNT {
                return Err(Invalid(format!("a number is larger than {MAX_COUNT}")));
            }
        }
        for u in &self.usage {
            short("jti", &u.jti, 128)?;
            short("key", &u.key, crate::core::token::MAX_NAME_CHARS * 4)?;
            short("app", &u.app, MAX_APP_BYTES)?;
        }
        Ok(())
    }
}

impl Report {
    /// The usage rows with any two for the same key and application merged (a report
    /// should hold none, but a store applies each pair once per statement).
    pub fn merged_usage(&self) -> Vec<Usage> {
        let mut merged: BTreeMap<(&str, &str), Usage> = BTreeMap::new();
        for u in &self.usage {
            let e = merged
                .entry((u.app.as_str(), u.jti.as_str()))
                .or_insert_with(|| Usage {
                    pushes: 0,
                    bytes: 0,
                    refused: 0,
                    limited: 0,
                    last_push_at: 0,
                    ..u.clone()
                });
            e.pushes = e.pushes.saturating_add(u.pushes);
            e.bytes = e.bytes.saturating_add(u.bytes);
            e.refused = e.refused.saturating_add(u.refused);
            e.limited = e.limited.saturating_add(u.limited);
            e.last_push_at = e.last_push_at.max(u.last_push_at);
        }
        merged.into_values().collect()
    }

    /// The keys this report saw refused over their limit.
    pub fn limited_jtis(&self) -> Vec<&str> {
        let mut jtis: Vec<&str> = self
            .usage
            .iter()
            .filter(|u| u.limited > 0 && !u.jti.is_empty())
            .map(|u| u.jti.as_str())
            .collect();
        jtis.sort_unstable();
        jtis.dedup();
        jtis
    }

    /// Each key's latest push in this report: `(jti, at, app)`, keys only.
    pub fn last_uses(&self) -> Vec<(&str, u64, &str)> {
        let mut last: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
        for u in self
            .usage
            .iter()
            .filter(|u| !u.jti.is_empty() && u.pushes > 0)
        {
            let e = last.entry(&u.jti).or_insert((u.last_push_at, &u.app));
            if u.last_push_at > e.0 {
                *e = (u.last_push_at, &u.app);
            }
        }
        last.into_iter()
            .map(|(j, (at, app))| (j, at, app))
            .collect()
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            node: "ingest-1".into(),
            version: "0.1.0".into(),
            started_at: 1_700_000_000,
            seq: 1,
            interval_seconds: 15,
            key_set_version: 1,
            revocations_version: 3,
            revocations_age_seconds: Some(4),
            stale: false,
            spool: SpoolState::default(),
            report_failures: 0,
            refusals: BTreeMap::from([("expired".into(), 2)]),
            usage: vec![Usage {
                jti: "a".repeat(22),
                key: "checkout-agent".into(),
                app: "checkout.cpu".into(),
                pushes: 3,
                bytes: 300,
                refused: 0,
                limited: 0,
                last_push_at: 1_700_000_010,
            }],
        }
    }

    #[test]
    fn a_report_round_trips_and_unknown_members_are_ignored() {
        let report = sample();
        let mut json = serde_json::to_value(&report).unwrap();
        json["fromTheFuture"] = serde_json::json!(1);
        let parsed = Report::parse(json.to_string().as_bytes()).unwrap();
        assert_eq!(parsed, report);
    }

    #[test]
    fn reports_outside_the_bounds_are_refused() {
        let mut r = sample();
        r.node = "no spaces".into();
        assert!(r.check().is_err());
        let mut r = sample();
        r.seq = 0;
        assert!(r.check().is_err());
        let mut r = sample();
        r.usage = vec![Usage::default(); MAX_USAGE + 2];
        assert!(r.check().is_err());
        let mut r = sample();
        r.usage[0].app = "x".repeat(MAX_APP_BYTES + 1);
        assert!(r.check().is_err());
        let mut r = sample();
        r.refusals = (0..=MAX_REASONS).map(|i| (i.to_string(), 1)).collect();
        assert!(r.check().is_err());
        assert!(Report::parse(&vec![b' '; MAX_REPORT_BYTES + 1]).is_err());
        assert!(Report::parse(b"{}").is_err());
        assert!(Report::parse(b"\xff").is_err());
    }
}
