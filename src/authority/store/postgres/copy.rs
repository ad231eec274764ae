//! `pyrogate database copy`: an embedded SQLite install moved into PostgreSQL, so a
//! one-machine install can grow into replicas without reissuing a single key.
//!
//! What moves: users (with their password hashes), API-key metadata (deleted ones too, with
//! their scopes), the revocations, the list and key-set versions, the audit log and the
//! settings (`meta`: the session secret, the published kids), plus the signing keys from the
//! keys dir, sealed with the key-encryption key. Ids stay as they were. Sessions do not move:
//! users log in again. Everything is written in one PostgreSQL transaction, so a failed copy
//! leaves the target as it was.
//!
//! Nodes see nothing change: the same kids, the same key-set version for the same keys (so the
//! signed key-set chain continues), and the same revocation-list version — never a lower one,
//! which a node would refuse as a rollback.

use super::*;

/// A column's type, as both backends store it.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Int,
    Text,
    /// SQLite `INTEGER` 0/1, PostgreSQL `BOOLEAN`.
    Bool,
}

/// The tables copied row for row, with their columns (ids included).
const TABLES: &[(&str, &[(&str, Ty)])] = &[
    (
        "users",
        &[
            ("id", Ty::Int),
            ("name", Ty::Text),
            ("email", Ty::Text),
            ("full_name", Ty::Text),
            ("password_hash", Ty::Text),
            ("role", Ty::Text),
            ("disabled", Ty::Bool),
            ("created_at", Ty::Int),
            ("updated_at", Ty::Int),
            ("password_changed_at", Ty::Int),
            ("last_seen_at", Ty::Int),
            ("sso_issuer", Ty::Text),
            ("sso_subject", Ty::Text),
            ("sso_groups", Ty::Text),
        ],
    ),
    (
        "api_keys",
        &[
            ("id", Ty::Int),
            ("name", Ty::Text),
            ("role", Ty::Text),
            ("jti", Ty::Text),
            ("kid", Ty::Text),
            ("tenant", Ty::Text),
            ("created_at", Ty::Int),
            ("expires_at", Ty::Int),
            ("created_by", Ty::Text),
            ("last_used_at", Ty::Int),
            ("deleted_at", Ty::Int),
            ("apps", Ty::Text),
            ("cidrs", Ty::Text),
            ("limits", Ty::Text),
            ("last_limited_at", Ty::Int),
        ],
    ),
    (
        "revocations",
        &[
            ("jti", Ty::Text),
            ("exp", Ty::Int),
            ("kid", Ty::Text),
            ("revoked_at", Ty::Int),
        ],
    ),
    (
        "audit",
        &[
            ("id", Ty::Int),
            ("at", Ty::Int),
            ("actor", Ty::Text),
            ("action", Ty::Text),
            ("target", Ty::Text),
            ("client", Ty::Text),
        ],
    ),
];

/// Tables whose `id` is an identity column in PostgreSQL (moved past the copied ids).
const IDENTITIES: &[&str] = &["users", "api_keys", "audit"];

/// SQLite's `meta` keys that are counters in PostgreSQL (`counters`), not settings.
const SQLITE_COUNTERS: &[&str] = &["revocations_version", "keyset.version"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

/// Everything an SQLite install holds that moves, read in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    tables: Vec<(&'static str, Vec<Vec<Cell>>)>,
    meta: Vec<(String, String)>,
    revocations_version: u64,
    keyset_version: u64,
}

/// What a copy wrote, for the command to print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyCounts {
    pub users: usize,
    pub api_keys: usize,
    pub revocations: usize,
    pub audit: usize,
    pub meta: usize,
    pub signing_keys: usize,
    pub revocations_version: u64,
    pub keyset_version: u64,
}

impl Dump {
    fn rows(&self, table: &str) -> usize {
        self.tables
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(0, |(_, rows)| rows.len())
    }
}

impl SqliteStore {
    /// Reads everything [`PgStore::copy_in`] writes, in one transaction.
    pub async fn dump(&self) -> Result<Dump> {
        self.call(|c| {
            let tx = c.transaction()?;
            let mut tables = Vec::new();
            for (table, columns) in TABLES {
                let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
                let order = if columns[0].0 == "id" { "id" } else { "rowid" };
                let mut stmt = tx.prepare(&format!(
                    "SELECT {} FROM {table} ORDER BY {order}",
                    names.join(", ")
                ))?;
                let rows = stmt
                    .query_map([], |r| {
                        columns
                            .iter()
                            .enumerate()
                            .map(|(i, (_, ty))| {
                                Ok(match ty {
                                    Ty::Int => {
                                        r.get::<_, Option<i64>>(i)?.map_or(Cell::Null, Cell::Int)
                                    }
                                    Ty::Text => r
                                        .get::<_, Option<String>>(i)?
                                        .map_or(Cell::Null, Cell::Text),
                                    Ty::Bool => {
                                        r.get::<_, Option<bool>>(i)?.map_or(Cell::Null, Cell::Bool)
                                    }
                                })
                            })
                            .collect::<rusqlite::Result<Vec<Cell>>>()
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                tables.push((*table, rows));
            }
            let mut stmt = tx.prepare("SELECT key, value FROM meta ORDER BY key")?;
            let all: Vec<(String, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            drop(stmt);
            let counter = |name: &str| -> u64 {
                all.iter()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0)
            };
            let (revocations_version, keyset_version) =
                (counter("revocations_version"), counter("keyset.version"));
            let meta = all
                .into_iter()
                .filter(|(k, _)| !SQLITE_COUNTERS.contains(&k.as_str()))
                .collect();
            tx.commit()?;
            Ok(Dump {
                tables,
                meta,
                revocations_version,
                keyset_version,
            })
        })
        .await
    }
}

impl PgStore {
    /// Writes `dump` and the sealed signing keys into this database in one transaction.
    /// Refuses a database that holds anything unless `replace`, which empties it first.
    pub async fn copy_in(
        &self,
        dump: &Dump,
        signing_keys: &[SealedKey],
        replace: bool,
    ) -> Result<CopyCounts> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATIONS])
            .await?;
        if replace {
            tx.batch_execute(
                "TRUNCATE sessions, api_keys, revocations, audit, users, signing_keys, meta
                 RESTART IDENTITY CASCADE",
            )
            .await?;
        } else {
            let held: i64 = tx
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM api_keys)
                          + (SELECT COUNT(*) FROM revocations) + (SELECT COUNT(*) FROM audit)
                          + (SELECT COUNT(*) FROM signing_keys)
                          + (SELECT COUNT(*) FROM counters WHERE value > 0 AND name <> 'keyring')",
                    &[],
                )
                .await?
                .try_get(0)?;
            if held > 0 {
                return Err(StoreError::Conflict(
                    "the target database is not empty (a server has run on it, or a copy was made); copy into an empty database, or pass --replace to overwrite it",
                ));
            }
        }
        for (table, rows) in &dump.tables {
            let columns = TABLES
                .iter()
                .find(|(t, _)| t == table)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
            let slots: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
            let insert = tx
                .prepare(&format!(
                    "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ({})",
                    names.join(", "),
                    slots.join(", ")
                ))
                .await?;
            for row in rows {
                let params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = row
                    .iter()
                    .zip(columns)
                    .map(
                        |(cell, (_, ty))| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                            match (cell, ty) {
                                (Cell::Int(v), _) => Box::new(Some(*v)),
                                (Cell::Text(v), _) => Box::new(Some(v.clone())),
                                (Cell::Bool(v), _) => Box::new(Some(*v)),
                                (Cell::Null, Ty::Int) => Box::new(None::<i64>),
                                (Cell::Null, Ty::Text) => Box::new(None::<String>),
                                (Cell::Null, Ty::Bool) => Box::new(None::<bool>),
                            }
                        },
                    )
                    .collect();
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                tx.execute(&insert, &refs).await?;
            }
        }
        for table in IDENTITIES {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                                   COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                ),
                &[],
            )
            .await?;
        }
        for (key, value) in &dump.meta {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[key, value],
            )
            .await?;
        }
        for (name, value) in [
            ("revocations", dump.revocations_version),
            ("keyset", dump.keyset_version),
        ] {
            tx.execute(
                "UPDATE counters SET value = $2 WHERE name = $1",
                &[
                    &name as &(dyn tokio_postgres::types::ToSql + Sync),
                    &(value as i64),
                ],
            )
            .await?;
        }
        if !signing_keys.is_empty() && !super::keyring::create_keyring(&tx, signing_keys).await? {
            return Err(StoreError::Conflict(
                "the target database already has signing keys; pass --replace to overwrite them",
            ));
        }
        tx.commit().await?;
        Ok(CopyCounts {
            users: dump.rows("users"),
            api_keys: dump.rows("api_keys"),
            revocations: dump.rows("revocations"),
            audit: dump.rows("audit"),
            meta: dump.meta.len(),
            signing_keys: signing_keys.len(),
            revocations_version: dump.revocations_version,
            keyset_version: dump.keyset_version,
        })
    }
}
