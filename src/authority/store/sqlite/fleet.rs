//! Fleet reports: `nodes`, `usage`, `key_last_use`.

use std::collections::BTreeMap;

use super::*;
use crate::node::report::Report;

const NODE_COLUMNS: &str = "name, version, started_at, seq, interval_seconds, first_seen_at, last_report_at, keyset_version, revocations_version, revocations_age, stale, spool_entries, spool_bytes, spool_oldest, dead_letters, report_failures, refusals";

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

fn node_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRecord> {
    let refusals: String = row.get(16)?;
    Ok(NodeRecord {
        name: row.get(0)?,
        version: row.get(1)?,
        started_at: u(row.get(2)?),
        seq: u(row.get(3)?),
        interval_seconds: u(row.get(4)?),
        first_seen_at: u(row.get(5)?),
        last_report_at: u(row.get(6)?),
        key_set_version: u(row.get(7)?),
        revocations_version: u(row.get(8)?),
        revocations_age_seconds: ts(row.get(9)?),
        stale: row.get(10)?,
        spool_entries: u(row.get(11)?),
        spool_bytes: u(row.get(12)?),
        spool_oldest_seconds: u(row.get(13)?),
        dead_letters: u(row.get(14)?),
        report_failures: u(row.get(15)?),
        refusals: serde_json::from_str(&refusals).unwrap_or_default(),
    })
}

/// [`super::super::Store::record_report`], inside the caller's (immediate) transaction.
pub fn record_report(conn: &Connection, r: &Report, now: u64) -> Result<bool> {
    let known: Option<(i64, i64, String)> = conn
        .query_row(
            "SELECT started_at, seq, refusals FROM nodes WHERE name = ?1",
            params![r.node],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let mut refusals: BTreeMap<String, u64> = BTreeMap::new();
    if let Some((started_at, seq, stored)) = known {
        if u(started_at) == r.started_at && u(seq) >= r.seq {
            return Ok(false);
        }
        refusals = serde_json::from_str(&stored).unwrap_or_default();
    }
    for (reason, n) in &r.refusals {
        *refusals.entry(reason.clone()).or_default() += n;
    }
    let refusals = serde_json::to_string(&refusals).unwrap_or_else(|_| "{}".into());
    conn.execute(
        &format!(
            "INSERT INTO nodes ({NODE_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (name) DO UPDATE SET
                 version = excluded.version, started_at = excluded.started_at,
                 seq = excluded.seq, interval_seconds = excluded.interval_seconds,
                 last_report_at = excluded.last_report_at,
                 keyset_version = excluded.keyset_version,
                 revocations_version = excluded.revocations_version,
                 revocations_age = excluded.revocations_age, stale = excluded.stale,
                 spool_entries = excluded.spool_entries, spool_bytes = excluded.spool_bytes,
                 spool_oldest = excluded.spool_oldest, dead_letters = excluded.dead_letters,
                 report_failures = excluded.report_failures, refusals = excluded.refusals"
        ),
        params![
            r.node,
            r.version,
            db_int(r.started_at),
            db_int(r.seq),
            db_int(r.interval_seconds),
            db_int(now),
            db_int(r.key_set_version),
            db_int(r.revocations_version),
            r.revocations_age_seconds.map(db_int),
            r.stale,
            db_int(r.spool.entries),
            db_int(r.spool.bytes),
            db_int(r.spool.oldest_seconds),
            db_int(r.spool.dead_letters),
            db_int(r.report_failures),
            refusals,
        ],
    )?;
    let mut usage = conn.prepare_cached(
        "INSERT INTO usage (app, jti, node, key_name, pushes, bytes, refused, last_push_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (app, jti, node) DO UPDATE SET
             key_name = excluded.key_name,
             pushes = pushes + excluded.pushes, bytes = bytes + excluded.bytes,
             refused = refused + excluded.refused,
             last_push_at = max(last_push_at, excluded.last_push_at)",
    )?;
    let mut last = conn.prepare_cached(
        "INSERT INTO key_last_use (jti, at, node, app) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (jti) DO UPDATE SET at = excluded.at, node = excluded.node, app = excluded.app
         WHERE excluded.at >= key_last_use.at",
    )?;
    for row in r.merged_usage() {
        usage.execute(params![
            row.app,
            row.jti,
            r.node,
            row.key,
            db_int(row.pushes),
            db_int(row.bytes),
            db_int(row.refused),
            db_int(row.last_push_at),
        ])?;
    }
    for (jti, at, app) in r.last_uses() {
        last.execute(params![jti, db_int(at), r.node, app])?;
    }
    for jti in r.limited_jtis() {
        conn.execute(
            "UPDATE api_keys SET last_limited_at = ?2 WHERE jti = ?1",
            params![jti, db_int(now)],
        )?;
    }
    Ok(true)
}

pub fn list_nodes(conn: &Connection) -> Result<Vec<NodeRecord>> {
    let mut stmt = conn.prepare(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY name"))?;
    let rows = stmt.query_map([], node_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn list_usage(conn: &Connection) -> Result<Vec<UsageRecord>> {
    let mut stmt = conn.prepare(
        "SELECT app, jti, node, key_name, pushes, bytes, refused, last_push_at
         FROM usage ORDER BY app, node, jti",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(UsageRecord {
            app: row.get(0)?,
            jti: row.get(1)?,
            node: row.get(2)?,
            key_name: row.get(3)?,
            pushes: u(row.get(4)?),
            bytes: u(row.get(5)?),
            refused: u(row.get(6)?),
            last_push_at: u(row.get(7)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn last_uses(conn: &Connection) -> Result<Vec<LastUse>> {
    let mut stmt = conn.prepare("SELECT jti, at, node, app FROM key_last_use")?;
    let rows = stmt.query_map([], |row| {
        Ok(LastUse {
            jti: row.get(0)?,
            at: u(row.get(1)?),
            node: row.get(2)?,
            app: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

impl SqliteStore {
    pub async fn record_report(&self, report: Report, now: u64) -> Result<bool> {
        self.transaction(true, move |tx| record_report(tx, &report, now))
            .await
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.call(|c| list_nodes(c)).await
    }

    pub async fn list_usage(&self) -> Result<Vec<UsageRecord>> {
        self.call(|c| list_usage(c)).await
    }

    pub async fn last_uses(&self) -> Result<Vec<LastUse>> {
        self.call(|c| last_uses(c)).await
    }
}
