//! Draining the spool: many pushes in flight at once, as many as the upstream takes.
//!
//! After an outage the spool holds everything agents pushed meanwhile, and agents keep
//! pushing. One push per upstream round trip (≈ 50/s at 20 ms) never catches up with a fleet
//! pushing 100/s; the replay must use the upstream's capacity without flooding it the moment
//! it comes back. It does what TCP does with a congestion window ([`Window`]):
//!
//! - **Slow start.** It begins with one push in flight and adds one for every push the
//!   upstream takes, doubling the window each round trip, until the first sign of trouble
//!   or `ingest.spool.replay-concurrency`. A recovering upstream sees a probe, then a ramp.
//! - **Additive increase, multiplicative decrease.** A 429, 5xx, timeout or refused
//!   connection halves the window, once per round trip (the other pushes of the same flight
//!   failing too are the same signal), and pauses the replay for a backoff that doubles up to
//!   [`MAX_BACKOFF`]; past the threshold the window grows by one per round trip. A
//!   `Retry-After` pauses the whole replay that long (at most [`MAX_RETRY_WAIT`]). Answers
//!   slower than half the upstream timeout do not grow it.
//! - **Its own connections.** Replayed pushes go through the pool of connections that is not
//!   any serving thread's ([`super::Upstream::pool`]), so live pushes never wait for a
//!   connection the replay holds; live pushes are forwarded directly while the backlog drains.
//! - **Time-outs back off in time.** A push whose answer timed out may have been ingested.
//!   Each re-send waits twice as long for its answer as the last ([`Forwarder::timeout_after`]),
//!   up to 8 × `upstream.timeout`: an upstream slower than the timeout gets each push at most
//!   a few times, not once per backoff, and `pyrogate_spool_possible_duplicates_total` counts
//!   them. The count is kept in memory: a restart starts again from `upstream.timeout`.
//!
//! Entries are taken from the spool with [`Spool::claim`](super::Spool::claim), oldest first;
//! one that must wait is released and claimed again before newer ones. Each delivery runs in a
//! task of its own that reads the entry, sends it and, once the upstream took it, removes it —
//! even when shutdown begins right then, so a node started next on the same spool never sends
//! a delivered push again. Shutdown cuts the exchanges still waiting for an answer; their
//! entries stay spooled.

use std::time::Duration;

use axum::http::uri::PathAndQuery;
use axum::response::Response;
use tokio::task::JoinSet;

use super::{
    Failure, Forwarder, MAX_BACKOFF, MAX_RETRY_WAIT, Push, TENANT_HEADER, retry_after, retryable,
};
use crate::core::clock::Stopwatch;
use crate::edge::server::Lifecycle;

/// First pause after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause after a connection to the upstream could not be made at all.
const MAX_PROBE_WAIT: Duration = Duration::from_millis(250);
/// How often the replay adopts retried dead letters and refreshes its gauges while busy.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Most doublings of a re-sent push's timeout (8 × `upstream.timeout`).
const MAX_TIMEOUT_DOUBLINGS: u32 = 3;

/// How many spooled pushes may be in flight: a congestion window (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Window {
    limit: f64,
    threshold: f64,
    max: f64,
    /// Deliveries started so far; each gets the next number (its ticket).
    started: u64,
    /// The last ticket handed out when the window was last cut: failures of deliveries
    /// started before then are the same congestion, not more of it.
    cut_at: u64,
}

impl Window {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.max(1) as f64;
        Window {
            limit: 1.0,
            threshold: max,
            max,
            started: 0,
            cut_at: 0,
        }
    }

    /// Deliveries that may be in flight now.
    pub(crate) fn size(&self) -> usize {
        self.limit as usize
    }

    /// A delivery starts; returns its ticket.
    pub(crate) fn start(&mut self) -> u64 {
        self.started += 1;
        self.started
    }

    /// The upstream took a push: grow, one per push below the threshold (doubling per round
    /// trip), one per window above it. A `slow` answer does not grow the window.
    pub(crate) fn taken(&mut self, slow: bool) {
        if slow {
            return;
        }
        let step = if self.limit < self.threshold {
            1.0
        } else {
            1.0 / self.limit
        };
        self.limit = (self.limit + step).min(self.max);
    }

    /// The delivery with `ticket` met congestion (429, 5xx, a timeout, no connection): halve
    /// the window, unless it was cut since that delivery started. True if it was cut.
    pub(crate) fn congested(&mut self, ticket: u64) -> bool {
        if ticket <= self.cut_at {
            return false;
        }
        self.threshold = (self.limit / 2.0).max(1.0);
        self.limit = self.threshold;
        self.cut_at = self.started;
        true
    }
}

/// How one delivery ended.
enum Delivered {
    /// The upstream took it; the entry is removed.
    Taken { slow: bool },
    /// The entry is no longer in the spool (removed by hand, or corrupt and moved aside).
    Gone,
    /// Reading it from disk failed.
    Unreadable(String),
    /// Its request path can't be sent (a damaged or hand-made entry).
    NoPath,
    /// The upstream answered something other than success.
    Answered(Response, String),
    /// No usable answer.
    Failed(Failure, String),
    /// Shutdown began while it was in flight; it stays spooled.
    Stopped,
}

struct Outcome {
    seq: u64,
    ticket: u64,
    delivered: Delivered,
}

impl Forwarder {
    /// Drains the spool until `life` stops (see the module docs).
    pub(super) async fn replay(&self, life: Lifecycle) {
        let inner = &self.inner;
        let epoch = Stopwatch::start();
        let mut window = Window::new(inner.replay_max);
        let mut flights: JoinSet<Outcome> = JoinSet::new();
        let mut paused_until = Duration::ZERO;
        let mut backoff = MIN_BACKOFF;
        let mut next_housekeeping = Duration::ZERO;
        loop {
            if life.is_stopping() {
                break;
            }
            let now = epoch.elapsed();
            if now >= next_housekeeping {
                self.housekeeping().await;
                next_housekeeping = epoch.elapsed() + HOUSEKEEPING;
            }
            let paused = now < paused_until;
            if !paused {
                let room = window.size().saturating_sub(flights.len());
                if room > 0 {
                    for seq in inner.spool.claim(room) {
                        let ticket = window.start();
                        let timeout = self.timeout_after(seq);
                        let this = self.clone();
                        let life = life.clone();
                        flights.spawn(async move {
                            let delivered = this.deliver(seq, timeout, &life).await;
                            Outcome {
                                seq,
                                ticket,
                                delivered,
                            }
                        });
                    }
                }
            }
            inner
                .metrics
                .spool_replay_in_flight
                .set(flights.len() as i64);
            inner.metrics.spool_replay_window.set(window.size() as i64);
            let can_start = !paused && flights.len() < window.size();
            let until_next = if paused {
                paused_until.saturating_sub(now)
            } else {
                next_housekeeping.saturating_sub(now)
            };
            tokio::select! {
                Some(joined) = flights.join_next(), if !flights.is_empty() => {
                    let Ok(outcome) = joined else {
                        // Only a panic in a delivery: its entry stays claimed until a restart.
                        tracing::error!("a spool delivery task failed");
                        continue;
                    };
                    self.settle(outcome, &mut window, &mut backoff, &mut paused_until, epoch.elapsed()).await;
                }
                () = inner.wake.notified(), if can_start => {}
                () = tokio::time::sleep(until_next) => {}
                () = life.stopping() => break,
            }
        }
        // Each flight watches `life` and ends at once (a taken push is removed first).
        while let Some(joined) = flights.join_next().await {
            if let Ok(Outcome { seq, .. }) = joined {
                inner.spool.release(seq);
            }
        }
        inner.metrics.spool_replay_in_flight.set(0);
    }

    /// The time to wait for the answer to spool entry `seq`: `upstream.timeout`, doubled for
    /// each time its answer timed out before (at most [`MAX_TIMEOUT_DOUBLINGS`] times).
    pub(super) fn timeout_after(&self, seq: u64) -> Duration {
        let base = self.inner.upstream.timeout();
        match self.timeouts().get(&seq) {
            None => base,
            Some(&n) => base * (1 << n.min(MAX_TIMEOUT_DOUBLINGS)),
        }
    }

    pub(super) fn timeouts(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, u32>> {
        self.inner
            .timeouts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads, sends and (once taken) removes one spool entry.
    async fn deliver(&self, seq: u64, timeout: Duration, life: &Lifecycle) -> Delivered {
        let inner = self.inner.clone();
        let entry = match tokio::task::spawn_blocking(move || inner.spool.read(seq)).await {
            Ok(Ok(Some(entry))) => entry,
            Ok(Ok(None)) => return Delivered::Gone,
            Ok(Err(err)) => return Delivered::Unreadable(err.to_string()),
            Err(err) => return Delivered::Unreadable(err.to_string()),
        };
        let Ok(path_and_query) = PathAndQuery::try_from(entry.path_and_query.as_str()) else {
            return Delivered::NoPath;
        };
        let push = Push::new(
            path_and_query,
            Push::headers_from_pairs(entry.headers.iter().filter(|(k, _)| k != TENANT_HEADER)),
            entry
                .headers
                .iter()
                .find(|(k, _)| k == TENANT_HEADER)
                .map(|(_, v)| v.clone()),
            entry.body,
        );
        let started = Stopwatch::start();
        let answer = tokio::select! {
            answer = self.forward(&push, timeout) => answer,
            () = life.stopping() => return Delivered::Stopped,
        };
        let path = push.path_and_query.to_string();
        match answer {
            Ok(response) if response.status().is_success() => {
                let inner = self.inner.clone();
                let removed = tokio::task::spawn_blocking(move || inner.spool.remove(seq)).await;
                if let Ok(Err(err)) = removed {
                    tracing::error!(error = %err, seq, "removing a delivered spool entry failed");
                }
                Delivered::Taken {
                    slow: started.elapsed() > self.inner.upstream.timeout() / 2,
                }
            }
            Ok(response) => Delivered::Answered(response, path),
            Err(failure) => Delivered::Failed(failure, path),
        }
    }

    /// Acts on how a delivery ended: grow or cut the window, pause, release or set aside.
    async fn settle(
        &self,
        Outcome {
            seq,
            ticket,
            delivered,
        }: Outcome,
        window: &mut Window,
        backoff: &mut Duration,
        paused_until: &mut Duration,
        now: Duration,
    ) {
        let inner = &self.inner;
        // Cut the window (once per flight: then the backoff doubles too) and pause.
        let congestion = |window: &mut Window,
                          backoff: &mut Duration,
                          paused_until: &mut Duration,
                          wait: Duration| {
            if window.congested(ticket) {
                *backoff = (*backoff * 2).min(MAX_BACKOFF);
            }
            *paused_until = (*paused_until).max(now + wait);
        };
        match delivered {
            Delivered::Taken { slow } => {
                inner.metrics.spool_replayed.inc();
                self.timeouts().remove(&seq);
                window.taken(slow);
                *backoff = MIN_BACKOFF;
            }
            Delivered::Gone => {
                self.timeouts().remove(&seq);
            }
            Delivered::Stopped => inner.spool.release(seq),
            Delivered::Unreadable(err) => {
                tracing::error!(error = %err, seq, "reading a spool entry failed");
                inner.spool.release(seq);
                *paused_until = (*paused_until).max(now + HOUSEKEEPING);
            }
            Delivered::NoPath => {
                let reason = format!("entry {seq} has no valid request path");
                self.dead_letter(seq, reason, "a spooled push has no valid request path")
                    .await;
            }
            Delivered::Answered(response, _) if retryable(response.status()) => {
                // 429 is what Pyroscope answers in the burst after an outage; 401/403 a
                // credentials change on its side. The push is claimed again first.
                inner.metrics.spool_retries.inc();
                inner.spool.release(seq);
                let wait = retry_after(&response)
                    .map(|asked| asked.min(MAX_RETRY_WAIT))
                    .unwrap_or(*backoff);
                tracing::debug!(status = %response.status(), wait_ms = wait.as_millis() as u64, "upstream asked to retry spooled pushes later");
                congestion(window, backoff, paused_until, wait);
            }
            Delivered::Answered(response, path) => {
                // The upstream will never take it: keep it, aside, with why — never unlink
                // an acknowledged push.
                self.timeouts().remove(&seq);
                let reason = format!(
                    "upstream answered {} to {path} (entry {seq})",
                    response.status()
                );
                self.dead_letter(seq, reason, "upstream refused a spooled push for good")
                    .await;
            }
            Delivered::Failed(Failure::BadAnswer(why), path) => {
                // Replaying would repeat the push each time: keep it aside, with why.
                self.timeouts().remove(&seq);
                let reason = format!(
                    "the upstream's answer to {path} could not be read: {why} (entry {seq})"
                );
                self.dead_letter(
                    seq,
                    reason,
                    "the upstream's answer to a spooled push could not be read",
                )
                .await;
            }
            Delivered::Failed(failure, _) => {
                tracing::debug!(%failure, "upstream can't take spooled pushes yet");
                if failure.maybe_delivered() {
                    // It may have the push: it is sent again, so count it.
                    inner.metrics.spool_possible_duplicates.inc();
                }
                if matches!(failure, Failure::TimedOut) {
                    // Slower than the timeout: the next try gets longer to answer.
                    *self.timeouts().entry(seq).or_insert(0) += 1;
                }
                inner.spool.release(seq);
                // A connection that can't be made costs an upstream that is down nothing: probe
                // for its return often, so live pushes go straight to it again soon after.
                let wait = if failure.not_connected() {
                    (*backoff).min(MAX_PROBE_WAIT)
                } else {
                    *backoff
                };
                congestion(window, backoff, paused_until, wait);
            }
        }
    }

    /// Adopts dead letters handed back by `pyrogate spool dead retry` and refreshes the spool
    /// gauges (a `drop` by hand shows too).
    async fn housekeeping(&self) {
        let inner = self.inner.clone();
        let done = tokio::task::spawn_blocking(move || {
            if let Err(err) = inner.spool.adopt_retried() {
                tracing::error!(error = %err, "taking retried dead letters into the spool failed");
            }
            let m = &inner.metrics;
            m.spool_entries.set(inner.spool.len() as u64);
            m.spool_bytes.set(inner.spool.bytes());
            m.spool_dead_letters.set(inner.spool.dead_letters() as u64);
            let age = inner
                .spool
                .oldest_at()
                .map_or(0, |at| inner.clock.now().saturating_sub(at));
            m.spool_oldest_seconds.set(age);
        })
        .await;
        if let Err(err) = done
            && !err.is_cancelled()
        {
            tracing::error!(error = %err, "spool housekeeping failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn the_window_starts_at_one_and_doubles_per_round_trip() {
        let mut w = Window::new(64);
        assert_eq!(w.size(), 1);
        for expected in [2, 4, 8, 16, 32, 64] {
            let flight = w.size();
            for _ in 0..flight {
                w.start();
                w.taken(false);
            }
            assert_eq!(w.size(), expected);
        }
        w.start();
        w.taken(false);
        assert_eq!(w.size(), 64, "capped at the setting");
    }

    #[test]
    fn one_congested_flight_halves_the_window_once() {
        let mut w = Window::new(64);
        for _ in 0..31 {
            w.start();
            w.taken(false);
        }
        assert_eq!(w.size(), 32);
        let tickets: Vec<u64> = (0..32).map(|_| w.start()).collect();
        assert!(w.congested(tickets[0]));
        assert_eq!(w.size(), 16);
        for &t in &tickets[1..] {
            assert!(!w.congested(t), "the same flight's failures cut once");
        }
        assert_eq!(w.size(), 16);
        let later = w.start();
        assert!(
            w.congested(later),
            "a delivery started after the cut cuts again"
        );
        assert_eq!(w.size(), 8);
    }

    #[test]
    fn above_the_threshold_it_grows_by_one_per_window() {
        let mut w = Window::new(64);
        for _ in 0..15 {
            w.start();
            w.taken(false);
        }
        let t = w.start();
        w.congested(t);
        assert_eq!(w.size(), 8);
        for _ in 0..8 {
            w.start();
            w.taken(false);
        }
        assert_eq!(w.size(), 8, "less than one more after a window of eight");
        w.start();
        w.taken(false);
        assert_eq!(w.size(), 9, "one more after about a window");
    }

    #[test]
    fn slow_answers_do_not_grow_it_and_it_never_drops_below_one() {
        let mut w = Window::new(8);
        w.start();
        w.taken(true);
        assert_eq!(w.size(), 1);
        for _ in 0..5 {
            let t = w.start();
            w.congested(t);
        }
        assert_eq!(w.size(), 1);
        let mut zero = Window::new(0);
        zero.start();
        zero.taken(false);
        assert_eq!(zero.size(), 1, "a max of 0 means 1");
    }
}
