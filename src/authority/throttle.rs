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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::LoginDelays;
use crate::core::clock::Clock;

/// Entries kept before old windows are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window: u64,
    failures: Mutex<HashMap<String, (u32, u64)>>,
}

impl LoginThrottle {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        LoginThrottle {
            max_failures,
            window: window.as_secs().max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// One user name (any case) from one client address.
    pub fn pair_key(name: &str, addr: &str) -> String {
        format!("user:{}|client:{addr}", name.to_lowercase())
    }

    pub fn client_key(addr: &str) -> String {
        format!("client:{addr}")
    }

    /// Checks and counts an attempt in one step: `Err(seconds until retry)` when any of `keys`
    /// is locked out, else the attempt is counted as a failure *before* the password is
    /// checked, so concurrent guesses can't all slip past the limit. A login that then
    /// succeeds calls [`LoginThrottle::succeeded`].
    pub fn reserve(&self, keys: &[String], now: u64) -> Result<(), u64> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = 0;
        for key in keys {
            if let Some((count, start)) = map.get(key)
                && *count >= self.max_failures
                && now < start + self.window
            {
                wait = wait.max(start + self.window - now);
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        if map.len() >= SWEEP_AT {
            let window = self.window;
            map.retain(|_, (_, start)| now < *start + window);
        }
        for key in keys {
            let entry = map.entry(key.clone()).or_insert((0, now));
            if now >= entry.1 + self.window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
        Ok(())
    }

    /// Undoes a [`LoginThrottle::reserve`] for a login that succeeded: the (user, address)
    /// count is cleared, the address's reservation returned.
    pub fn succeeded(&self, pair_key: &str, client_key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(pair_key);
        if let Some(entry) = map.get_mut(client_key) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    /// Gives back a [`LoginThrottle::reserve`] whose password was never checked (the attempt
    /// was turned away later), so it costs the client nothing.
    pub fn release(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            if let Some(entry) = map.get_mut(key) {
                entry.0 = entry.0.saturating_sub(1);
            }
        }
    }

    pub fn reset(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }
}

/// Accounts tracked at most; past it (after sweeping quiet ones and those below the delay
/// threshold), a new name is not tracked until room frees up.
const MAX_ACCOUNTS: usize = 100_000;
/// How often a waiting attempt looks at the clock.
const POLL: Duration = Duration::from_millis(100);

/// One user name's failures and queue.
#[derive(Debug, Default)]
struct Account {
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
    accounts: Mutex<HashMap<String, Account>>,
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
        let mut map = self.delays.lock();
        if let Some(account) = map.get_mut(&self.key) {
            account.waiting = account.waiting.saturating_sub(1);
        }
    }
}

impl AccountDelays {
    pub fn new(policy: LoginDelays, window: Duration) -> Self {
        AccountDelays {
            policy,
            window: window.as_secs().max(1),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Account>> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The delay of an attempt made after `failures` counted ones (`failures >= after`).
    fn delay_after(&self, failures: u32) -> u64 {
        let doublings = (failures - self.policy.after).min(63);
        self.policy
            .first_secs
            .saturating_mul(1u64 << doublings)
            .min(self.policy.max_secs)
    }

    /// Counts an attempt on `name` (any case) at `now` — before the password is checked, like
    /// [`LoginThrottle::reserve`] — and says whether it goes now, waits, or is turned away.
    /// An attempt turned away is not counted.
    pub fn admit(self: &Arc<Self>, name: &str, now: u64) -> Admission {
        if self.policy.after == 0 {
            return Admission::Now;
        }
        let key = name.to_lowercase();
        let mut map = self.lock();
        if map.len() >= MAX_ACCOUNTS && !map.contains_key(&key) {
            let (window, after) = (self.window, self.policy.after);
            map.retain(|_, a| a.waiting > 0 || now < a.last + window);
            if map.len() >= MAX_ACCOUNTS {
                map.retain(|_, a| a.waiting > 0 || a.failures >= after);
            }
            if map.len() >= MAX_ACCOUNTS {
                tracing::warn!("login delays: too many accounts under attack to track another");
                return Admission::Now;
            }
        }
        let account = map.entry(key.clone()).or_default();
        if now >= account.last + self.window {
            // A window without failures ends the count.
            account.failures = 0;
        }
        if account.failures < self.policy.after {
            account.failures += 1;
            account.last = now;
            return Admission::Now;
        }
        // Turns given up on (the client went away) leave `next` where they pushed it; only
        // those still waiting may hold the queue up, each for at most one longest delay, so
        // abandoned attempts can't push the owner's turn past the request timeout.
        let start = account
            .next
            .max(now)
            .min(now + u64::from(account.waiting) * self.policy.max_secs);
        if account.waiting >= self.policy.max_waiting {
            return Admission::Full {
                retry: (start - now).max(1),
            };
        }
        let delay = self.delay_after(account.failures);
        let until = start + delay;
        account.next = until;
        account.waiting += 1;
        account.failures = account.failures.saturating_add(1);
        account.last = now;
        drop(map);
        Admission::Wait(Turn {
            delays: self.clone(),
            key,
            until,
            delay,
        })
    }

    /// A login on `name` succeeded: its count ends (attempts already queued keep their turn).
    pub fn succeeded(&self, name: &str) {
        if let Some(account) = self.lock().get_mut(&name.to_lowercase()) {
            account.failures = 0;
            account.next = 0;
        }
    }

    /// Attempts on `name` waiting for their turn right now.
    pub fn waiting(&self, name: &str) -> u32 {
        self.lock()
            .get(&name.to_lowercase())
            .map_or(0, |a| a.waiting)
    }
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
        ))
    }

    fn turn(a: Admission) -> Turn {
        match a {
            Admission::Wait(turn) => turn,
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn past_the_threshold_delays_double_up_to_the_cap_and_queue_one_after_another() {
        let d = delays(3, 1, 30, 100);
        for _ in 0..3 {
            assert!(matches!(d.admit("Alice", 100), Admission::Now));
        }
        let mut turns = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..8 {
            let t = turn(d.admit("alice", 100));
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
        assert_eq!(d.waiting("ALICE"), 8);
        drop(turns);
        assert_eq!(d.waiting("alice"), 0);
        // Other names are not slowed.
        assert!(matches!(d.admit("bob", 100), Admission::Now));
    }

    #[test]
    fn waiting_places_are_bounded_and_a_full_queue_says_when_to_retry() {
        let d = delays(1, 5, 30, 2);
        assert!(matches!(d.admit("a", 100), Admission::Now));
        let first = turn(d.admit("a", 100));
        let second = turn(d.admit("a", 100));
        assert_eq!((first.until, second.until), (105, 115));
        match d.admit("a", 101) {
            Admission::Full { retry } => assert_eq!(retry, 14),
            other => panic!("{other:?}"),
        }
        // The refused attempt was not counted: the next one is 20 s after the second.
        drop(first);
        assert_eq!(turn(d.admit("a", 106)).until, 135);
    }

    #[test]
    fn turns_given_up_on_do_not_push_the_next_one_past_the_queue_bound() {
        let d = delays(1, 30, 30, 4);
        assert!(matches!(d.admit("a", 100), Admission::Now));
        // A client that reserves turns and hangs up at once, again and again …
        for _ in 0..50 {
            drop(turn(d.admit("a", 100)));
        }
        // … leaves nobody waiting, so the next attempt waits one delay, not 50.
        let next = turn(d.admit("a", 100));
        assert_eq!(next.until, 130);
        let after = turn(d.admit("a", 100));
        assert_eq!(after.until, 160);
    }

    #[test]
    fn a_success_or_a_quiet_window_ends_the_count() {
        let d = delays(2, 1, 30, 4);
        for _ in 0..2 {
            assert!(matches!(d.admit("a", 100), Admission::Now));
        }
        drop(turn(d.admit("a", 100)));
        d.succeeded("A");
        for _ in 0..2 {
            assert!(matches!(d.admit("a", 200), Admission::Now));
        }
        drop(turn(d.admit("a", 200)));
        // 600 s after the last failure the count starts again.
        assert!(matches!(d.admit("a", 800), Admission::Now));
        assert!(matches!(d.admit("a", 800), Admission::Now));
        assert_eq!(turn(d.admit("a", 800)).delay, 1);
    }

    #[test]
    fn off_when_the_threshold_is_zero() {
        let d = delays(0, 1, 30, 4);
        for _ in 0..100 {
            assert!(matches!(d.admit("a", 100), Admission::Now));
        }
    }

    #[test]
    fn a_success_gives_its_reservation_back() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let (user, client) = (
            LoginThrottle::pair_key("a", "1"),
            LoginThrottle::client_key("1"),
        );
        let keys = [user.clone(), client.clone()];
        for _ in 0..5 {
            assert!(t.reserve(&keys, 100).is_ok());
            t.succeeded(&user, &client);
        }
    }

    #[test]
    fn locks_out_after_max_failures_until_the_window_passes() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        let keys = [LoginThrottle::pair_key("Alice", "1")];
        for _ in 0..3 {
            assert!(t.reserve(&keys, 100).is_ok());
        }
        assert_eq!(t.reserve(&keys, 110), Err(50));
        assert!(
            t.reserve(&[LoginThrottle::pair_key("alice", "1")], 110)
                .is_err()
        );
        assert!(t.reserve(&keys, 160).is_ok());
        t.reset(&keys[0]);
        assert!(t.reserve(&keys, 110).is_ok());
    }
}
