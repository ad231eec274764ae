//! Failed-login throttling. Failures are counted per (user name, client address) and per
//! client address over a window (`auth.login-lockout`); past `auth.login-max-failures` either
//! one, logins answer 429 until the window has passed. Counting the pair stops one client
//! guessing one account without letting guesses from elsewhere lock the real user out;
//! counting the address stops one client spraying many accounts. The client address is the
//! peer, or what a trusted proxy says it is (`auth.trusted-proxies`). The answer is the same
//! whether or not the user exists.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

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

    pub fn reset(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
