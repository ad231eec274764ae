//! The push path's counters for fleet reports: pushes, bytes and refusals per key and
//! application.
//!
//! One shard per serving thread (a thread takes the shard its index picks, so with no more
//! threads than shards no two threads share one): a push locks only its own thread's shard,
//! which nobody else touches except the reporter draining it once per interval, so the lock
//! is uncontended and never waited on. A known key and application cost two hash look-ups and
//! no allocation. Each shard holds at most [`MAX_ROWS_PER_SHARD`] key/application pairs;
//! pushes for pairs past that are counted in one "other" row, so memory stays bounded
//! whatever agents send.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{MAX_APP_BYTES, OTHER, Usage, truncate};

/// Key/application pairs one shard holds before counting in the "other" row.
pub const MAX_ROWS_PER_SHARD: usize = 4096;
/// Shards: one per serving thread up to this many.
const SHARDS: usize = 64;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// `(jti, app)` → `(key name, counts)`.
type Merged = Map<(Box<str>, Box<str>), (Box<str>, Counts)>;

/// What was counted for one key and application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pushes: u64,
    pub bytes: u64,
    pub refused: u64,
    /// Pushes refused with 429: over the key's limit.
    pub limited: u64,
    pub last_push_at: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.pushes += other.pushes;
        self.bytes += other.bytes;
        self.refused += other.refused;
        self.limited += other.limited;
        self.last_push_at = self.last_push_at.max(other.last_push_at);
    }
}

#[derive(Default)]
struct KeyCounts {
    name: Box<str>,
    apps: Map<Box<str>, Counts>,
}

#[derive(Default)]
struct Shard {
    /// By `jti` (empty: no key).
    keys: Map<Box<str>, KeyCounts>,
    rows: usize,
    other: Counts,
}

impl Shard {
    fn count(&mut self, jti: &str, key: &str, app: &str, add: Counts) {
        let app = truncate(app, MAX_APP_BYTES);
        if let Some(k) = self.keys.get_mut(jti)
            && let Some(c) = k.apps.get_mut(app)
        {
            c.add(&add);
            return;
        }
        if self.rows >= MAX_ROWS_PER_SHARD {
            self.other.add(&add);
            return;
        }
        self.rows += 1;
        let k = self.keys.entry(jti.into()).or_insert_with(|| KeyCounts {
            name: truncate(key, 1024).into(),
            apps: Map::default(),
        });
        k.apps.entry(app.into()).or_default().add(&add);
    }
}

/// The counters of one node (see the module docs).
pub struct Tally {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, picked the first time it counts.
    static SHARD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

impl Tally {
    fn count(&self, jti: &str, key: &str, app: &str, add: Counts) {
        let i = SHARD.with(|i| *i);
        let mut shard = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
        shard.count(jti, key, app, add);
    }

    /// One push of `bytes` by the key `jti` (named `key`; both empty without a key) for `app`.
    pub fn pushed(&self, jti: &str, key: &str, app: &str, bytes: u64, now: u64) {
        self.count(
            jti,
            key,
            app,
            Counts {
                pushes: 1,
                bytes,
                refused: 0,
                limited: 0,
                last_push_at: now,
            },
        );
    }

    /// One push by the key `jti` for `app`, refused with 429 (over the key's limit).
    pub fn limited(&self, jti: &str, key: &str, app: &str) {
        self.count(
            jti,
            key,
            app,
            Counts {
                limited: 1,
                ..Counts::default()
            },
        );
    }

    /// One push by the key `jti` for `app`, refused (outside the key's applications).
    pub fn refused(&self, jti: &str, key: &str, app: &str) {
        self.count(
            jti,
            key,
            app,
            Counts {
                refused: 1,
                ..Counts::default()
            },
        );
    }

    /// Everything counted since the last drain, merged across shards, and the shards emptied.
    pub fn drain(&self) -> Vec<Usage> {
        let mut merged = Merged::default();
        let mut other = Counts::default();
        for shard in self.shards.iter() {
            let taken = {
                let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
                std::mem::take(&mut *shard)
            };
            other.add(&taken.other);
            for (jti, k) in taken.keys {
                for (app, c) in k.apps {
                    merged
                        .entry((jti.clone(), app))
                        .or_insert_with(|| (k.name.clone(), Counts::default()))
                        .1
                        .add(&c);
                }
            }
        }
        let mut out: Vec<Usage> = merged
            .into_iter()
            .map(|((jti, app), (key, c))| usage(&jti, &key, &app, &c))
            .collect();
        if other != Counts::default() {
            out.push(usage("", OTHER, OTHER, &other));
        }
        out
    }
}

pub(super) fn usage(jti: &str, key: &str, app: &str, c: &Counts) -> Usage {
    Usage {
        jti: jti.into(),
        key: key.into(),
        app: app.into(),
        pushes: c.pushes,
        bytes: c.bytes,
        refused: c.refused,
        limited: c.limited,
        last_push_at: c.last_push_at,
    }
}

pub(super) fn counts(u: &Usage) -> Counts {
    Counts {
        pushes: u.pushes,
        bytes: u.bytes,
        refused: u.refused,
        limited: u.limited,
        last_push_at: u.last_push_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_from_many_threads_are_all_counted_once() {
        let tally = std::sync::Arc::new(Tally::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let tally = tally.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        tally.pushed("jti-a", "agent-a", "checkout.cpu", 10, 100 + i);
                        if t % 2 == 0 {
                            tally.refused("jti-b", "agent-b", "billing.cpu");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut rows = tally.drain();
        rows.sort_by(|a, b| a.jti.cmp(&b.jti));
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].pushes, rows[0].bytes), (8000, 80_000));
        assert_eq!(rows[0].last_push_at, 1099);
        assert_eq!((rows[1].pushes, rows[1].refused), (0, 4000));
        assert!(tally.drain().is_empty(), "a drain empties the shards");
    }

    #[test]
    fn a_shard_holds_a_bounded_number_of_rows_and_counts_the_rest_as_other() {
        let tally = Tally::default();
        let long = "é".repeat(1000);
        for i in 0..(MAX_ROWS_PER_SHARD + 10) {
            tally.pushed("j", "k", &format!("{i}{long}"), 1, 1);
        }
        let rows = tally.drain();
        assert_eq!(rows.len(), MAX_ROWS_PER_SHARD + 1);
        assert!(rows.iter().all(|r| r.app.len() <= MAX_APP_BYTES));
        let other = rows.iter().find(|r| r.app == OTHER).unwrap();
        assert_eq!(other.pushes, 10);
    }
}
