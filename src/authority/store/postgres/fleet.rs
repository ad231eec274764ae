//! Fleet reports on PostgreSQL: `nodes`, `usage`, `key_last_use`. A report is one
//! transaction of four statements whatever its size: the usage rows and the keys' last uses
//! go in as arrays (`unnest`).

use std::collections::BTreeMap;

use super::*;
use crate::node::report::Report;

const NODE_COLUMNS: &str = "name, version, started_at, seq, interval_seconds, first_seen_at, last_report_at, keyset_version, revocations_version, revocations_age, stale, spool_entries, spool_bytes, spool_oldest, dead_letters, report_failures, refusals";

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

fn node_row(row: &Row) -> Result<NodeRecord> {
    let refusals: String = row.try_get(16)?;
    Ok(NodeRecord {
        name: row.try_get(0)?,
        version: row.try_get(1)?,
        started_at: u(row.try_get(2)?),
        seq: u(row.try_get(3)?),
        interval_seconds: u(row.try_get(4)?),
        first_seen_at: u(row.try_get(5)?),
        last_report_at: u(row.try_get(6)?),
        key_set_version: u(row.try_get(7)?),
        revocations_version: u(row.try_get(8)?),
        revocations_age_seconds: ts(row.try_get(9)?),
        stale: row.try_get(10)?,
        spool_entries: u(row.try_get(11)?),
        spool_bytes: u(row.try_get(12)?),
        spool_oldest_seconds: u(row.try_get(13)?),
        dead_letters: u(row.try_get(14)?),
        report_failures: u(row.try_get(15)?),
        refusals: serde_json::from_str(&refusals).unwrap_or_default(),
    })
}

impl PgStore {
    pub async fn record_report(&self, r: Report, now: u64) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Two replicas taking two reports of one node: the node's row orders them. A node
        // reporting for the first time has no row yet; the insert's conflict then waits.
        let known = tx
            .query_opt(
                "SELECT started_at, seq, refusals FROM nodes WHERE name = $1 FOR UPDATE",
                &[&r.node],
            )
            .await?;
        let mut refusals: BTreeMap<String, u64> = BTreeMap::new();
        if let Some(row) = known {
            let (started_at, seq): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            if u(started_at) == r.started_at && u(seq) >= r.seq {
                return Ok(false);
            }
            refusals = serde_json::from_str(&row.try_get::<_, String>(2)?).unwrap_or_default();
        }
        for (reason, n) in &r.refusals {
            *refusals.entry(reason.clone()).or_default() += n;
        }
        let refusals = serde_json::to_string(&refusals).unwrap_or_else(|_| "{}".into());
        let applied = tx
            .execute(
                &format!(
                    "INSERT INTO nodes ({NODE_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                     ON CONFLICT (name) DO UPDATE SET
                         version = excluded.version, started_at = excluded.started_at,
                         seq = excluded.seq, interval_seconds = excluded.interval_seconds,
                         last_report_at = excluded.last_report_at,
                         keyset_version = excluded.keyset_version,
                         revocations_version = excluded.revocations_version,
                         revocations_age = excluded.revocations_age, stale = excluded.stale,
                         spool_entries = excluded.spool_entries, spool_bytes = excluded.spool_bytes,
                         spool_oldest = excluded.spool_oldest, dead_letters = excluded.dead_letters,
                         report_failures = excluded.report_failures, refusals = excluded.refusals
                     WHERE nodes.started_at <> excluded.started_at OR nodes.seq < excluded.seq"
                ),
                &[
                    &r.node,
                    &r.version,
                    &db_int(r.started_at),
                    &db_int(r.seq),
                    &db_int(r.interval_seconds),
                    &db_int(now),
                    &db_int(r.key_set_version),
                    &db_int(r.revocations_version),
                    &r.revocations_age_seconds.map(db_int),
                    &r.stale,
                    &db_int(r.spool.entries),
                    &db_int(r.spool.bytes),
                    &db_int(r.spool.oldest_seconds),
                    &db_int(r.spool.dead_letters),
                    &db_int(r.report_failures),
                    &refusals,
                ],
            )
            .await?;
        if applied == 0 {
            // A replica applied this very report between our read and our write.
            return Ok(false);
        }
        let usage = r.merged_usage();
        let col = |f: fn(&crate::node::report::Usage) -> u64| -> Vec<i64> {
            usage.iter().map(|x| db_int(f(x))).collect()
        };
        let apps: Vec<&str> = usage.iter().map(|x| x.app.as_str()).collect();
        let jtis: Vec<&str> = usage.iter().map(|x| x.jti.as_str()).collect();
        let keys: Vec<&str> = usage.iter().map(|x| x.key.as_str()).collect();
        tx.execute(
            "INSERT INTO usage (app, jti, node, key_name, pushes, bytes, refused, last_push_at)
             SELECT a, j, $1, k, p, b, r, l
             FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[])
                  AS t (a, j, k, p, b, r, l)
             ON CONFLICT (app, jti, node) DO UPDATE SET
                 key_name = excluded.key_name,
                 pushes = usage.pushes + excluded.pushes, bytes = usage.bytes + excluded.bytes,
                 refused = usage.refused + excluded.refused,
                 last_push_at = GREATEST(usage.last_push_at, excluded.last_push_at)",
            &[
                &r.node,
                &apps,
                &jtis,
                &keys,
                &col(|x| x.pushes),
                &col(|x| x.bytes),
                &col(|x| x.refused),
                &col(|x| x.last_push_at),
            ],
        )
        .await?;
        let last = r.last_uses();
        let jtis: Vec<&str> = last.iter().map(|l| l.0).collect();
        let ats: Vec<i64> = last.iter().map(|l| db_int(l.1)).collect();
        let apps: Vec<&str> = last.iter().map(|l| l.2).collect();
        tx.execute(
            "INSERT INTO key_last_use (jti, at, node, app)
             SELECT j, t, $1, a FROM unnest($2::text[], $3::bigint[], $4::text[]) AS x (j, t, a)
             ON CONFLICT (jti) DO UPDATE SET at = excluded.at, node = excluded.node, app = excluded.app
             WHERE excluded.at >= key_last_use.at",
            &[&r.node, &jtis, &ats, &apps],
        )
        .await?;
        let limited = r.limited_jtis();
        if !limited.is_empty() {
            tx.execute(
                "UPDATE api_keys SET last_limited_at = $2 WHERE jti = ANY($1)",
                &[&limited, &db_int(now)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let client = self.client().await?;
        let found = client
            .query(
                &format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY name"),
                &[],
            )
            .await?;
        rows(found, node_row)
    }

    pub async fn list_usage(&self) -> Result<Vec<UsageRecord>> {
        let client = self.client().await?;
        let found = client
            .query(
                "SELECT app, jti, node, key_name, pushes, bytes, refused, last_push_at
                 FROM usage ORDER BY app, node, jti",
                &[],
            )
            .await?;
        rows(found, |row| {
            Ok(UsageRecord {
                app: row.try_get(0)?,
                jti: row.try_get(1)?,
                node: row.try_get(2)?,
                key_name: row.try_get(3)?,
                pushes: u(row.try_get(4)?),
                bytes: u(row.try_get(5)?),
                refused: u(row.try_get(6)?),
                last_push_at: u(row.try_get(7)?),
            })
        })
    }

    pub async fn last_uses(&self) -> Result<Vec<LastUse>> {
        let client = self.client().await?;
        let found = client
            .query("SELECT jti, at, node, app FROM key_last_use", &[])
            .await?;
        rows(found, |row| {
            Ok(LastUse {
                jti: row.try_get(0)?,
                at: u(row.try_get(1)?),
                node: row.try_get(2)?,
                app: row.try_get(3)?,
            })
        })
    }
}
