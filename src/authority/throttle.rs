//! Failed-login throttling. Failures are counted per (user name, client address) and per
//! client address over a window (`auth.login-lockout`); past `auth.login-max-failures` either
//! one, logins answer 429 until the window has passed. Counting the pair stops one client
//! guessing one account without letting guesses from elsewhere lock the real user out;
//! counting the address stops one client spraying many accounts. The client address is the
//! peer, or what a trusted proxy says it is (`auth.trusted-proxies`). The answer is the same
//! whether or not the user exists.
//!
//! Neither count slows a guess at one account spread over many addresses. [`AccountDelays`]
//! does: past `auth.login-delay-after` failures for a user name (from anywhere), every further
//! attempt on that name waits its turn before the password is checked — `auth.login-delay`,
//! doubling per failure up to `auth.login-max-delay` — and the turns are spaced one after the
//! other, so however many addresses guess at once the account sees at most one check per
//! delay. The wait holds no hashing slot. At most `auth.login-max-waiting` attempts per name
//! wait at once; more get 429 with `Retry-After`. The account's owner is slowed, never locked
//! out: the right password still succeeds after its wait, and a success clears the count.
//!
//! Where the counts live: with SQLite (one server) in this process's memory; with PostgreSQL
//! in the database every replica shares (`login_counts`: one row per key, locked while an
//! attempt is counted), so a load balancer spreading guesses over replicas counts each one
//! once ([`Place`]). The rules are the same code for both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::authority::store::{PgStore, Store, StoreError};
use crate::config::LoginDelays;
use crate::core::clock::Clock;

/// Entries kept in memory before expired ones are swept; past it after a sweep, a new key is
/// not tracked until room frees up.
const MAX_ENTRIES: usize = 100_000;

/// Where the counts of a throttle live.
#[derive(Debug)]
pub enum Place<E> {
    /// This process's memory: one server on SQLite.
    Memory(Mutex<HashMap<String, (E, u64)>>),
    /// The database replicas share (PostgreSQL), under `prefix`.
    Shared {
        store: PgStore,
        prefix: &'static str,
    },
}

impl<E> Place<E> {
    /// Memory for an SQLite store, the shared table for PostgreSQL.
    pub fn for_store(store: &Store, prefix: &'static str) -> Self {
        match store {
            Store::Postgres(pg) => Place::Shared {
                store: pg.clone(),
                prefix,
            },
            Store::Sqlite(_) => Place::Memory(Mutex::default()),
        }
    }
}

impl<E: Clone + Serialize + DeserializeOwned> Place<E> {
    /// Runs `f` on the entries of `keys` (`None`: none yet, or expired at `now`) with every
    /// other update of them excluded until it returns, and keeps what it leaves: `Some((entry,
    /// expires_at))`, or `None` to forget the key.
    async fn update<R>(
        &self,
        keys: &[String],
        now: u64,
        f: impl FnOnce(&mut [Option<(E, u64)>]) -> R,
    ) -> Result<R, StoreError> {
        match self {
            Place::Memory(map) => Ok(Self::update_memory(map, keys, now, f)),
            Place::Shared { store, prefix } => {
                let keys: Vec<String> = keys.iter().map(|k| format!("{prefix}{k}")).collect();
                store
                    .update_login_counts(&keys, now, |rows| {
                        let mut entries: Vec<Option<(E, u64)>> = rows
                            .iter()
                            .map(|row| {
                                row.as_ref().and_then(|(json, exp)| {
                                    serde_json::from_str(json).ok().map(|e| (e, *exp))
                                })
                            })
                            .collect();
                        let out = f(&mut entries);
                        for (row, entry) in rows.iter_mut().zip(entries) {
                            *row = entry.and_then(|(e, exp)| {
                                serde_json::to_string(&e).ok().map(|json| (json, exp))
                            });
                        }
                        out
                    })
                    .await
            }
        }
    }

    fn update_memory<R>(
        map: &Mutex<HashMap<String, (E, u64)>>,
        keys: &[String],
        now: u64,
        f: impl FnOnce(&mut [Option<(E, u64)>]) -> R,
    ) -> R {
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, expires)| *expires > now);
        }
        let mut entries: Vec<Option<(E, u64)>> = keys
            .iter()
            .map(|k| map.get(k).filter(|(_, exp)| *exp > now).cloned())
            .collect();
        let out = f(&mut entries);
        for (key, entry) in keys.iter().zip(entries) {
            match entry {
                Some(entry) if map.len() < MAX_ENTRIES || map.contains_key(key) => {
                    map.insert(key.clone(), entry);
                }
                Some(_) => {
                    tracing::warn!("login throttle: too many keys under attack to track another");
                }
                None => {
                    map.remove(key);
                }
            }
        }
        out
    }
}

/// Failures of one key since `start`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Count {
    n: u32,
    start: u64,
}

#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window: u64,
    counts: Place<Count>,
}

impl LoginThrottle {
    pub fn new(max_failures: u32, window: Duration, counts: Place<Count>) -> Self {
        LoginThrottle {
            max_failures,
            window: window.as_secs().max(1),
            counts,
        }
    }

    /// One user name (any case) from one client address.
    pub fn pair_key(name: &str, addr: &str) -> String {
        format!("user:{}|client:{addr}", name.to_lowercase())
    }

    pub fn client_key(addr: &str) -> String {
        format!("client:{addr}")
    }

    /// Checks and counts an attempt in one step: `Ok(Err(seconds until retry))` when any of
    /// `keys` is locked out, else the attempt is counted as a failure *before* the password
    /// is checked, so concurrent guesses can't all slip past the limit. A login that then
    /// succeeds calls [`LoginThrottle::succeeded`].
    pub async fn reserve(&self, keys: &[String], now: u64) -> Result<Result<(), u64>, StoreError> {
        if self.max_failures == 0 {
            return Ok(Ok(()));
        }
        let (max, window) = (self.max_failures, self.window);
        self.counts
            .update(keys, now, |entries| {
                let wait = entries
                    .iter()
                    .flatten()
                    .filter(|(c, _)| c.n >= max && now < c.start + window)
                    .map(|(c, _)| c.start + window - now)
                    .max()
                    .unwrap_or(0);
                if wait > 0 {
                    return Err(wait);
                }
                for entry in entries.iter_mut() {
                    let (count, expires) = entry.get_or_insert((Count { n: 0, start: now }, 0));
                    if now >= count.start + window {
                        *count = Count { n: 0, start: now };
                    }
                    count.n += 1;
                    *expires = count.start + window;
                }
                Ok(())
            })
            .await
    }

    /// Undoes a [`LoginThrottle::reserve`] for a login that succeeded: the (user, address)
    /// count is cleared, the address's reservation returned.
    pub async fn succeeded(&self, pair_key: &str, client_key: &str) -> Result<(), StoreError> {
        let keys = [pair_key.to_owned(), client_key.to_owned()];
        self.counts
            .update(&keys, 0, |entries| {
                entries[0] = None;
                if let Some((count, _)) = &mut entries[1] {
                    count.n = count.n.saturating_sub(1);
                }
            })
            .await
    }

    /// Gives back a [`LoginThrottle::reserve`] whose password was never checked (the attempt
    /// was turned away later), so it costs the client nothing.
    pub async fn release(&self, keys: &[String]) -> Result<(), StoreError> {
        self.counts
            .update(keys, 0, |entries| {
                for (count, _) in entries.iter_mut().flatten() {
                    count.n = count.n.saturating_sub(1);
                }
            })
            .await
    }

    pub async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.counts
            .update(&[key.to_owned()], 0, |entries| entries[0] = None)
            .await
    }
}

/// How often a waiting attempt looks at the clock.
const POLL: Duration = Duration::from_millis(100);
/// How long after its last turn was due an account's waiting count is trusted: a turn is
/// served within seconds of being due, so a count left by a replica that died with attempts
/// waiting ends by itself instead of holding the queue full.
const STALE_TURNS: u64 = 60;

/// One user name's failures and queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Account {
    /// Attempts counted since the count last ended.
    failures: u32,
    /// When the last attempt was counted.
    last: u64,
    /// The turn of the last attempt queued: the next one goes `delay` after it.
    next: u64,
    /// Attempts waiting for their turn right now.
    waiting: u32,
}

/// Progressive delays per user name, across every client address (see the module docs).
#[derive(Debug)]
pub struct AccountDelays {
    policy: LoginDelays,
    /// Seconds without a failure after which an account's count ends (`auth.login-lockout`).
    window: u64,
    accounts: Place<Account>,
}

/// What [`AccountDelays::admit`] decided for one attempt.
#[derive(Debug)]
pub enum Admission {
    /// Check the password now.
    Now,
    /// Check the password once the clock reaches `until` ([`Turn::wait`]).
    Wait(Turn),
    /// Too many attempts on this name are already waiting: 429, retry in `retry` seconds.
    Full { retry: u64 },
}

/// A queued attempt's place; dropping it (served, or the client gave up) frees the place.
#[derive(Debug)]
pub struct Turn {
    delays: Arc<AccountDelays>,
    key: String,
    /// The clock second from which the password may be checked.
    pub until: u64,
    /// How long this attempt was told to wait after the one before it, in seconds.
    pub delay: u64,
}

impl Turn {
    /// Waits until the clock reaches [`Turn::until`]; `false` when `stop` resolved first
    /// (shutdown). Only the clock decides, so a test moves a manual clock instead of sleeping.
    pub async fn wait(
        &self,
        clock: &dyn Clock,
        stop: impl std::future::Future<Output = ()>,
    ) -> bool {
        tokio::pin!(stop);
        loop {
            let now = clock.now();
            if now >= self.until {
                return true;
            }
            let step = POLL.min(Duration::from_secs(self.until - now));
            tokio::select! {
                () = tokio::time::sleep(step) => {}
                () = &mut stop => return false,
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let keys = [std::mem::take(&mut self.key)];
        let leave = |entries: &mut [Option<(Account, u64)>]| {
            if let Some((account, _)) = &mut entries[0] {
                account.waiting = account.waiting.saturating_sub(1);
            }
        };
        match &self.delays.accounts {
            Place::Memory(map) => Place::update_memory(map, &keys, 0, leave),
            Place::Shared { .. } => {
                // The database is a round trip away; a drop can't wait for it.
                let delays = self.delays.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Err(err) = delays.accounts.update(&keys, 0, leave).await {
                            tracing::warn!(error = %err, "freeing a login turn failed; it frees itself later");
                        }
                    });
                }
            }
        }
    }
}

impl AccountDelays {
    pub fn new(policy: LoginDelays, window: Duration, accounts: Place<Account>) -> Self {
        AccountDelays {
            policy,
            window: window.as_secs().max(1),
            accounts,
        }
    }

    /// The delay of an attempt made after `failures` counted ones (`failures >= after`).
    fn delay_after(&self, failures: u32) -> u64 {
        let doublings = (failures - self.policy.after).min(63);
        self.policy
            .first_secs
            .saturating_mul(1u64 << doublings)
            .min(self.policy.max_secs)
    }

    /// When an account may be forgotten: its count has ended and nobody can still be waiting.
    fn expiry(&self, account: &Account) -> u64 {
        (account.last + self.window).max(account.next + self.policy.max_secs + STALE_TURNS)
    }

    /// Counts an attempt on `name` (any case) at `now` — before the password is checked, like
    /// [`LoginThrottle::reserve`] — and says whether it goes now, waits, or is turned away.
    /// An attempt turned away is not counted.
    pub async fn admit(self: &Arc<Self>, name: &str, now: u64) -> Result<Admission, StoreError> {
        if self.policy.after == 0 {
            return Ok(Admission::Now);
        }
        let key = name.to_lowercase();
        let decided = self
            .accounts
            .update(std::slice::from_ref(&key), now, |entries| {
                let (account, expires) = entries[0].get_or_insert_with(Default::default);
                let decided = self.decide(account, now);
                *expires = self.expiry(account);
                decided
            })
            .await?;
        Ok(match decided {
            Decided::Now => Admission::Now,
            Decided::Full { retry } => Admission::Full { retry },
            Decided::Wait { until, delay } => Admission::Wait(Turn {
                delays: self.clone(),
                key,
                until,
                delay,
            }),
        })
    }

    fn decide(&self, account: &mut Account, now: u64) -> Decided {
        if now >= account.last + self.window {
            // A window without failures ends the count.
            account.failures = 0;
        }
        if now > account.next + self.policy.max_secs + STALE_TURNS {
            // Every turn given out was due long ago: nobody is still waiting for one.
            account.waiting = 0;
        }
        if account.failures < self.policy.after {
            account.failures += 1;
            account.last = now;
            return Decided::Now;
        }
        // Turns given up on (the client went away) leave `next` where they pushed it; only
        // those still waiting may hold the queue up, each for at most one longest delay, so
        // abandoned attempts can't push the owner's turn past the request timeout.
        let start = account
            .next
            .max(now)
            .min(now + u64::from(account.waiting) * self.policy.max_secs);
        if account.waiting >= self.policy.max_waiting {
            return Decided::Full {
                retry: (start - now).max(1),
            };
        }
        let delay = self.delay_after(account.failures);
        let until = start + delay;
        account.next = until;
        account.waiting += 1;
        account.failures = account.failures.saturating_add(1);
        account.last = now;
        Decided::Wait { until, delay }
    }

    /// A login on `name` succeeded: its count ends (attempts already queued keep their turn).
    pub async fn succeeded(&self, name: &str, now: u64) -> Result<(), StoreError> {
        self.accounts
            .update(&[name.to_lowercase()], now, |entries| {
                if let Some((account, _)) = &mut entries[0] {
                    account.failures = 0;
                    account.next = 0;
                }
            })
            .await
    }

    /// Attempts on `name` waiting for their turn right now.
    pub async fn waiting(&self, name: &str) -> Result<u32, StoreError> {
        self.accounts
            .update(&[name.to_lowercase()], 0, |entries| {
                entries[0].as_ref().map_or(0, |(a, _)| a.waiting)
            })
            .await
    }
}

/// [`AccountDelays::decide`]'s answer, before a [`Turn`] is made of it.
enum Decided {
    Now,
    Wait { until: u64, delay: u64 },
    Full { retry: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(after: u32, first: u64, max: u64, waiting: u32) -> Arc<AccountDelays> {
        Arc::new(AccountDelays::new(
            LoginDelays {
                after,
                first_secs: first,
                max_secs: max,
                max_waiting: waiting,
            },
            Duration::from_secs(600),
            Place::Memory(Mutex::default()),
        ))
    }

    fn turn(a: Admission) -> Turn {
        match a {
            Admission::Wait(turn) => turn,
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn past_the_threshold_delays_double_up_to_the_cap_and_queue_one_after_another() {
        let d = delays(3, 1, 30, 100);
        for _ in 0..3 {
            assert!(matches!(
                d.admit("Alice", 100).await.unwrap(),
                Admission::Now
            ));
        }
        let mut turns = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..8 {
            let t = turn(d.admit("alice", 100).await.unwrap());
            seen.push((t.delay, t.until));
            turns.push(t);
        }
        // 1, 2, 4, 8, 16, then capped at 30; each turn comes after the one before it.
        assert_eq!(
            seen,
            vec![
                (1, 101),
                (2, 103),
                (4, 107),
                (8, 115),
                (16, 131),
                (30, 161),
                (30, 191),
                (30, 221)
            ]
        );
        assert_eq!(d.waiting("ALICE").await.unwrap(), 8);
        drop(turns);
        assert_eq!(d.waiting("alice").await.unwrap(), 0);
        // Other names are not slowed.
        assert!(matches!(d.admit("bob", 100).await.unwrap(), Admission::Now));
    }

    #[tokio::test]
    async fn waiting_places_are_bounded_and_a_full_queue_says_when_to_retry() {
        let d = delays(1, 5, 30, 2);
        assert!(matches!(d.admit("a", 100).await.unwrap(), Admission::Now));
        let first = turn(d.admit("a", 100).await.unwrap());
        let second = turn(d.admit("a", 100).await.unwrap());
        assert_eq!((first.until, second.until), (105, 115));
        match d.admit("a", 101).await.unwrap() {
            Admission::Full { retry } => assert_eq!(retry, 14),
            other => panic!("{other:?}"),
        }
        // The refused attempt was not counted: the next one is 20 s after the second.
        drop(first);
        assert_eq!(turn(d.admit("a", 106).await.unwrap()).until, 135);
    }

    #[tokio::test]
    async fn turns_given_up_on_do_not_push_the_next_one_past_the_queue_bound() {
        let d = delays(1, 30, 30, 4);
        assert!(matches!(d.admit("a", 100).await.unwrap(), Admission::Now));
        // A client that reserves turns and hangs up at once, again and again …
        for _ in 0..50 {
            drop(turn(d.admit("a", 100).await.unwrap()));
        }
        // … leaves nobody waiting, so the next attempt waits one delay, not 50.
        let next = turn(d.admit("a", 100).await.unwrap());
        assert_eq!(next.until, 130);
        let after = turn(d.admit("a", 100).await.unwrap());
        assert_eq!(after.until, 160);
    }

    #[tokio::test]
    async fn a_success_or_a_quiet_window_ends_the_count() {
        let d = delays(2, 1, 30, 4);
        for _ in 0..2 {
            assert!(matches!(d.admit("a", 100).await.unwrap(), Admission::Now));
        }
        drop(turn(d.admit("a", 100).await.unwrap()));
        d.succeeded("A", 100).await.unwrap();
        for _ in 0..2 {
            assert!(matches!(d.admit("a", 200).await.unwrap(), Admission::Now));
        }
        drop(turn(d.admit("a", 200).await.unwrap()));
        // 600 s after the last failure the count starts again.
        assert!(matches!(d.admit("a", 800).await.unwrap(), Admission::Now));
        assert!(matches!(d.admit("a", 800).await.unwrap(), Admission::Now));
        assert_eq!(turn(d.admit("a", 800).await.unwrap()).delay, 1);
    }

    #[tokio::test]
    async fn a_waiting_count_left_by_a_replica_that_died_ends_by_itself() {
        let d = delays(1, 5, 30, 2);
        assert!(matches!(d.admit("a", 100).await.unwrap(), Admission::Now));
        // Two turns given out, and never handed back (their process died).
        std::mem::forget(turn(d.admit("a", 100).await.unwrap()));
        std::mem::forget(turn(d.admit("a", 100).await.unwrap()));
        assert!(matches!(
            d.admit("a", 101).await.unwrap(),
            Admission::Full { .. }
        ));
        // Long after the last turn was due, nobody can still be waiting for one.
        let later = 115 + 30 + STALE_TURNS + 1;
        assert!(matches!(
            d.admit("a", later).await.unwrap(),
            Admission::Wait(_)
        ));
    }

    #[tokio::test]
    async fn off_when_the_threshold_is_zero() {
        let d = delays(0, 1, 30, 4);
        for _ in 0..100 {
            assert!(matches!(d.admit("a", 100).await.unwrap(), Admission::Now));
        }
    }

    #[tokio::test]
    async fn a_success_gives_its_reservation_back() {
        let t = LoginThrottle::new(2, Duration::from_secs(60), Place::Memory(Mutex::default()));
        let (user, client) = (
            LoginThrottle::pair_key("a", "1"),
            LoginThrottle::client_key("1"),
        );
        let keys = [user.clone(), client.clone()];
        for _ in 0..5 {
            assert!(t.reserve(&keys, 100).await.unwrap().is_ok());
            t.succeeded(&user, &client).await.unwrap();
        }
    }

    #[tokio::test]
    async fn locks_out_after_max_failures_until_the_window_passes() {
        let t = LoginThrottle::new(3, Duration::from_secs(60), Place::Memory(Mutex::default()));
        let keys = [LoginThrottle::pair_key("Alice", "1")];
        for _ in 0..3 {
            assert!(t.reserve(&keys, 100).await.unwrap().is_ok());
        }
        assert_eq!(t.reserve(&keys, 110).await.unwrap(), Err(50));
        assert!(
            t.reserve(&[LoginThrottle::pair_key("alice", "1")], 110)
                .await
                .unwrap()
                .is_err()
        );
        assert!(t.reserve(&keys, 160).await.unwrap().is_ok());
        t.reset(&keys[0]).await.unwrap();
        assert!(t.reserve(&keys, 110).await.unwrap().is_ok());
    }
}
