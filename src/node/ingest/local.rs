//! The embedded default: with no upstream, received profiles are kept on disk under
//! `<storage-path>/profiles`, bounded by `ingest.local.max-bytes` — the oldest are dropped first
//! — and counted per app for `GET /api/ingestion`. It lets a single `pyrogate server` show that
//! agents and keys work before any Grafana Pyroscope exists; it is not a profile database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::Push;
use super::spool::{Spool, SpoolError, SpooledRequest};

/// Distinct key names remembered per app.
const MAX_KEYS_PER_APP: usize = 16;
/// Distinct apps counted; past it, the app pushed to least recently is evicted.
const MAX_APPS: usize = 10_000;
/// Longest app name kept (longer ones are cut, on a character boundary): with 10,000 apps,
/// at most ~2.5 MiB of names.
const MAX_APP_NAME_BYTES: usize = 256;

/// Why a profile was not kept.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "the profile is larger than the local store ({max_bytes} bytes, ingest.local.max-bytes)"
    )]
    TooLarge { max_bytes: u64 },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("the local store's worker failed")]
    Worker(#[from] tokio::task::JoinError),
}

#[derive(Clone)]
pub struct LocalStore {
    spool: Arc<Spool>,
    max_bytes: u64,
}

impl LocalStore {
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        Ok(LocalStore {
            spool: Arc::new(Spool::open(dir, max_bytes)?),
            max_bytes,
        })
    }

    /// Keeps a push, dropping the oldest ones to make room.
    pub async fn store(&self, push: &Push, app: &str) -> Result<(), LocalError> {
        let spool = self.spool.clone();
        let entry = SpooledRequest {
            path_and_query: push.path_and_query.as_str().to_owned(),
            headers: push
                .header_pairs()
                .into_iter()
                .chain([("pyrogate-app".to_owned(), app.to_owned())])
                .collect(),
            body: push.body.clone(),
        };
        // Framing adds a header line and a checksum to the body; this bound is generous.
        let framed = entry.body.len()
            + entry.path_and_query.len()
            + entry
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
            + 256;
        if framed as u64 > self.max_bytes {
            return Err(LocalError::TooLarge {
                max_bytes: self.max_bytes,
            });
        }
        tokio::task::spawn_blocking(move || {
            // Other pushes may hold the space while their entries are being written; give
            // them a moment before deciding the profile can't fit at all.
            let mut waits = 0;
            loop {
                match spool.push(&entry) {
                    Ok(_) => return Ok(()),
                    Err(SpoolError::Full { max_bytes }) => match spool.peek() {
                        Ok(Some((seq, _))) => spool.remove(seq)?,
                        Ok(None) if waits < 200 => {
                            waits += 1;
                            std::thread::sleep(std::time::Duration::from_millis(5));
                        }
                        Ok(None) => return Err(LocalError::TooLarge { max_bytes }),
                        Err(err) => return Err(err.into()),
                    },
                    Err(other) => return Err(other.into()),
                }
            }
        })
        .await?
    }

    /// Profiles kept, oldest first: `(path and query, headers, body)`.
    pub fn len(&self) -> usize {
        self.spool.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spool.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.spool.bytes()
    }
}

/// What arrived, per app.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStats {
    pub app: String,
    pub pushes: u64,
    pub bytes: u64,
    pub last_push_at: u64,
    /// Names of the keys that pushed (none when ingestion auth is off).
    pub keys: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct Stats {
    apps: Mutex<BTreeMap<String, AppStats>>,
}

impl Stats {
    /// Counts a push. Memory is bounded whatever agents send: names are cut to 256 bytes,
    /// at most 10,000 apps are kept (the least recently pushed to makes room) and 16 key
    /// names per app.
    pub fn record(&self, app: &str, key: Option<&str>, bytes: u64, now: u64) {
        let app = crate::node::report::truncate(app, MAX_APP_NAME_BYTES);
        let key = key.map(|k| crate::node::report::truncate(k, MAX_APP_NAME_BYTES));
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        // The common case — an app and key seen before — allocates nothing.
        if !apps.contains_key(app) {
            if apps.len() >= MAX_APPS {
                let oldest = apps
                    .iter()
                    .min_by_key(|(_, s)| s.last_push_at)
                    .map(|(name, _)| name.clone());
                if let Some(oldest) = oldest {
                    apps.remove(&oldest);
                }
            }
            apps.insert(
                app.to_owned(),
                AppStats {
                    app: app.to_owned(),
                    pushes: 0,
                    bytes: 0,
                    last_push_at: now,
                    keys: BTreeSet::new(),
                },
            );
        }
        let Some(entry) = apps.get_mut(app) else {
            return;
        };
        entry.pushes += 1;
        entry.bytes += bytes;
        entry.last_push_at = now;
        if let Some(key) = key
            && entry.keys.len() < MAX_KEYS_PER_APP
            && !entry.keys.contains(key)
        {
            entry.keys.insert(key.to_owned());
        }
    }

    pub fn len(&self) -> usize {
        self.apps.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn snapshot(&self) -> Vec<AppStats> {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        apps.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_app_stats_stay_bounded_whatever_the_names() {
        let stats = Stats::default();
        let long = "é".repeat(30_000);
        for i in 0..(MAX_APPS + 500) {
            stats.record(&format!("{i}{long}"), Some(&long), 1, i as u64);
        }
        assert_eq!(stats.len(), MAX_APPS);
        let snapshot = stats.snapshot();
        assert!(snapshot.iter().all(|a| a.app.len() <= MAX_APP_NAME_BYTES));
        assert!(
            snapshot
                .iter()
                .all(|a| a.keys.iter().all(|k| k.len() <= MAX_APP_NAME_BYTES))
        );
        // The least recently pushed-to apps made room: the newest are all there.
        let newest = format!("{}{long}", MAX_APPS + 499);
        assert!(
            snapshot
                .iter()
                .any(|a| a.app == crate::node::report::truncate(&newest, MAX_APP_NAME_BYTES))
        );
    }
}
