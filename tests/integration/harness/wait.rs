//! Deadlines instead of sleeps.

use std::time::{Duration, Instant};

/// A bound on a polling loop: `while !done { deadline.tick(|| state).await }`. Every wait in
/// these tests is one of these, never a fixed sleep.
pub struct Deadline {
    end: Instant,
    limit: Duration,
    what: String,
}

impl Deadline {
    pub fn after(limit: Duration, what: impl Into<String>) -> Self {
        Deadline {
            end: Instant::now() + limit,
            limit,
            what: what.into(),
        }
    }

    pub fn secs(secs: u64, what: impl Into<String>) -> Self {
        Self::after(Duration::from_secs(secs), what)
    }

    /// Sleeps one polling interval (10 ms), or fails the test with `detail()` once the
    /// deadline has passed.
    #[track_caller]
    pub fn tick(&self, detail: impl FnOnce() -> String) -> tokio::time::Sleep {
        if Instant::now() >= self.end {
            panic!(
                "timed out after {:?} waiting for {}; last seen: {}",
                self.limit,
                self.what,
                detail()
            );
        }
        tokio::time::sleep(Duration::from_millis(10))
    }
}
