//! How many connections the shell keeps open, and which it closes to make room.
//!
//! **Caps that fit the open-files limit.** Every connection is a file descriptor, and so is
//! everything else the process keeps open: the listener, the event loops' own descriptors,
//! the log, the database or the spool and key-set cache, the connection to the authority, and
//! on an ingest node its upstream connections (up to 64 kept idle per serving thread, and one
//! held by each push while it is forwarded). A cap above what the limit leaves for
//! connections does not protect anything: `accept` fails with "too many open files" first and
//! a legitimate client times out. So [`caps`] keeps a reserve of [`reserve`] descriptors —
//! an eighth of the limit, at least [`RESERVE_MIN`], at most half — and lowers the caps to
//! what is left when they are above it, keeping the configured per-client share of the whole.
//! Why those figures: the fixed descriptors are a few dozen, and a node's idle upstream pool
//! is 64 per serving thread — 128 covers a small host's; an eighth grows with the hosts that
//! get large limits (8,192 of 65,536), and leaves the default 16,384 connections standing from
//! a limit of 18,725 up. Pushes in flight each hold an upstream connection beyond that; a
//! node expecting many at once wants a limit well above its cap (docs/deployment.md).
//!
//! **Room is made, not refused.** A client holding its share of connections that opens
//! another gets its own oldest idle one closed instead of a refusal; when every place is
//! taken, the oldest idle connection of anyone is closed for the newcomer. Idle: no request
//! in flight — a connection between requests (keep-alive), or one that has sent nothing yet.
//! A connection with a request in flight is never chosen, and the close itself is hyper's
//! graceful one: a request whose head has arrived meanwhile is answered first. Only when every
//! connection in the way is busy does the newcomer get the refusal.
//!
//! The bookkeeping is per connection, under one lock taken when a connection opens or
//! closes (at a cap, finding the oldest idle connection walks them oldest first); a request
//! costs its connection two relaxed atomic stores ([`Activity`]) and nothing shared.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Fewest descriptors kept for everything but client connections.
pub(super) const RESERVE_MIN: u64 = 128;

/// The descriptors of an open-files limit of `limit` kept for everything but client
/// connections: an eighth, at least [`RESERVE_MIN`], at most half the limit.
pub(super) fn reserve(limit: u64) -> u64 {
    (limit / 8).max(RESERVE_MIN).min(limit / 2)
}

/// The connection caps in force (0 = no cap), and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Caps {
    pub max: usize,
    pub per_client: usize,
    pub why: Why,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    /// The configured caps fit the open-files limit (or there is none).
    Configured,
    /// No global cap is configured; the open-files limit gives one.
    OpenFiles,
    /// The configured caps were above what the open-files limit leaves: lowered.
    Lowered,
}

/// The caps for `max` connections at once and `per_client` from one address (0 = no cap)
/// under an open-files limit of `open_files` (`None`: unlimited). The limit, less its
/// [`reserve`], caps the whole; a lowered global cap takes the per-client cap down in
/// proportion (1024 of 16384 stays a sixteenth), never below 1.
pub(super) fn caps(max: usize, per_client: usize, open_files: Option<u64>) -> Caps {
    let configured = Caps {
        max,
        per_client,
        why: Why::Configured,
    };
    let Some(limit) = open_files else {
        return configured;
    };
    let room = usize::try_from(limit - reserve(limit))
        .unwrap_or(usize::MAX)
        .max(1);
    if max != 0 && max <= room {
        return configured;
    }
    if max == 0 {
        return Caps {
            max: room,
            per_client: per_client.min(room),
            why: Why::OpenFiles,
        };
    }
    let share = (per_client as u128 * room as u128 / max as u128) as usize;
    Caps {
        max: room,
        per_client: if per_client == 0 {
            0
        } else {
            share.clamp(1, room)
        },
        why: Why::Lowered,
    }
}

/// Whether a connection has a request in flight, as its requests flip it.
#[derive(Debug)]
pub(super) struct Activity(AtomicBool);

impl Activity {
    /// A request began.
    pub(super) fn busy(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    /// Its answer is written (or abandoned).
    pub(super) fn idle(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_idle(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A connection's side of the request to close it: the shell asks when it needs the place,
/// and at shutdown.
pub(super) struct CloseRequest(Option<oneshot::Receiver<()>>);

impl CloseRequest {
    /// Resolves once the connection is asked to close (at once if it was already).
    pub(super) async fn asked(&mut self) {
        if let Some(rx) = &mut self.0 {
            // Asking is dropping the sender; nothing is ever sent.
            let _ = rx.await;
            self.0 = None;
        }
    }

    /// Whether the connection has been asked to close.
    pub(super) fn was_asked(&mut self) -> bool {
        match &mut self.0 {
            None => true,
            Some(rx) => match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => false,
                _ => {
                    self.0 = None;
                    true
                }
            },
        }
    }
}

/// How many connections are open, overall and per client address, and which are idle.
#[derive(Debug)]
pub(super) struct Limits {
    caps: Caps,
    open: Mutex<Open>,
}

/// Every admitted connection, by order of admission (oldest first).
#[derive(Debug, Default)]
struct Open {
    next: u64,
    all: BTreeMap<u64, Entry>,
    by_client: HashMap<IpAddr, BTreeSet<u64>>,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    activity: Arc<Activity>,
    /// Dropped to ask the connection to close.
    close: Option<oneshot::Sender<()>>,
}

/// One admitted connection; dropping it frees its place (unless it was given to another).
pub(super) struct Admitted {
    limits: Arc<Limits>,
    id: u64,
    pub(super) activity: Arc<Activity>,
    pub(super) close: CloseRequest,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limits.lock().remove(self.id);
    }
}

impl Open {
    /// Forgets `id`: its place is free. Dropping what is returned asks it to close.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.all.remove(&id)?;
        if let Some(ids) = self.by_client.get_mut(&entry.ip) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_client.remove(&entry.ip);
            }
        }
        Some(entry)
    }

    /// The first of `ids` (oldest first) with no request in flight.
    fn oldest_idle<'a>(&self, mut ids: impl Iterator<Item = &'a u64>) -> Option<u64> {
        ids.find(|id| self.all.get(id).is_some_and(|e| e.activity.is_idle()))
            .copied()
    }
}

impl Limits {
    pub(super) fn new(caps: Caps) -> Self {
        Limits {
            caps,
            open: Mutex::new(Open::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `ip`, or `None` when the caps are reached and no idle
    /// connection can make room. The idle connection that makes room is asked to close and
    /// gives its place at once (a request whose head raced in is answered first).
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let Caps {
            max, per_client, ..
        } = self.caps;
        let mut open = self.lock();
        let from_ip = open.by_client.get(&ip).map_or(0, BTreeSet::len);
        let victim = if per_client > 0 && from_ip >= per_client {
            let id = open.oldest_idle(open.by_client.get(&ip)?.iter())?;
            open.remove(id)
        } else if max > 0 && open.all.len() >= max {
            let id = open.oldest_idle(open.all.keys())?;
            open.remove(id)
        } else {
            None
        };
        let id = open.next;
        open.next += 1;
        let activity = Arc::new(Activity(AtomicBool::new(true)));
        let (close, asked) = oneshot::channel();
        open.all.insert(
            id,
            Entry {
                ip,
                activity: activity.clone(),
                close: Some(close),
            },
        );
        open.by_client.entry(ip).or_default().insert(id);
        drop(open);
        if let Some(victim) = victim {
            tracing::debug!(client = %victim.ip, "closing an idle connection to make room");
        }
        Some(Admitted {
            limits: self.clone(),
            id,
            activity,
            close: CloseRequest(Some(asked)),
        })
    }

    /// Asks every open connection to close (shutdown: no more are admitted).
    pub(super) fn close_all(&self) {
        let asks: Vec<_> = self
            .lock()
            .all
            .values_mut()
            .filter_map(|e| e.close.take())
            .collect();
        drop(asks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn configured_caps_stand_when_the_limit_leaves_room_for_them() {
        let unlimited = caps(16384, 1024, None);
        assert_eq!((unlimited.max, unlimited.per_client), (16384, 1024));
        assert_eq!(unlimited.why, Why::Configured);
        // 1 Mi descriptors: an eighth kept back, the rest far above 16384.
        let roomy = caps(16384, 1024, Some(1 << 20));
        assert_eq!(
            (roomy.max, roomy.per_client, roomy.why),
            (16384, 1024, Why::Configured)
        );
        // Exactly enough: 16384 + an eighth of the limit.
        let exact = caps(16384, 1024, Some(18725));
        assert_eq!(reserve(18725), 2340);
        assert_eq!(exact.why, Why::Configured);
    }

    #[test]
    fn caps_above_the_limit_are_lowered_keeping_the_per_client_share() {
        // The measured case: 256 descriptors. 128 kept back, 128 for connections, a
        // sixteenth of them per client.
        assert_eq!(reserve(256), 128);
        assert_eq!(
            caps(16384, 1024, Some(256)),
            Caps {
                max: 128,
                per_client: 8,
                why: Why::Lowered
            }
        );
        // systemd's soft default, if the hard limit is no higher.
        assert_eq!(reserve(1024), 128);
        let c = caps(16384, 1024, Some(1024));
        assert_eq!((c.max, c.per_client), (896, 56));
        // An eighth once the limit is above 1024.
        assert_eq!(reserve(20_000), 2500);
        assert_eq!(caps(16384, 1024, Some(20_000)).max, 16384);
        assert_eq!(caps(65536, 1024, Some(20_000)).max, 17_500);
    }

    #[test]
    fn the_per_client_cap_is_never_zero_nor_above_the_whole() {
        // A tiny share rounds up to one connection.
        assert_eq!(caps(16384, 1, Some(256)).per_client, 1);
        // A per-client cap above the global one is the global one.
        let c = caps(1000, 5000, Some(256));
        assert_eq!((c.max, c.per_client), (128, 128));
        // No per-client cap stays none.
        assert_eq!(caps(16384, 0, Some(256)).per_client, 0);
        // A tiny limit still leaves half of itself, and at least one.
        assert_eq!(caps(16384, 1024, Some(100)).max, 50);
        assert_eq!(caps(16384, 1024, Some(1)).max, 1);
        assert_eq!(caps(16384, 1024, Some(0)).max, 1);
    }

    #[test]
    fn no_configured_cap_becomes_the_limits_room() {
        assert_eq!(
            caps(0, 1024, Some(256)),
            Caps {
                max: 128,
                per_client: 128,
                why: Why::OpenFiles
            }
        );
        assert_eq!(caps(0, 0, None).max, 0);
    }

    fn limits(max: usize, per_client: usize) -> Arc<Limits> {
        Arc::new(Limits::new(Caps {
            max,
            per_client,
            why: Why::Configured,
        }))
    }

    #[test]
    fn a_client_at_its_share_gets_its_oldest_idle_connection_closed() {
        let limits = limits(0, 2);
        let mut first = limits.admit(ip(1)).unwrap();
        let mut second = limits.admit(ip(1)).unwrap();
        first.activity.busy();
        // The oldest is busy: the second, idle, makes room.
        let mut third = limits.admit(ip(1)).unwrap();
        assert!(!first.close.was_asked());
        assert!(second.close.was_asked());
        assert!(!third.close.was_asked());
        // Its place was given away: closing it frees nothing more.
        drop(second);
        first.activity.busy();
        third.activity.busy();
        assert!(
            limits.admit(ip(1)).is_none(),
            "two busy connections: the share"
        );
        assert!(
            limits.admit(ip(2)).is_some(),
            "another client still gets in"
        );
    }

    #[test]
    fn a_busy_connection_is_never_chosen_and_then_the_newcomer_is_refused() {
        let limits = limits(2, 0);
        let mut a = limits.admit(ip(1)).unwrap();
        let mut b = limits.admit(ip(2)).unwrap();
        a.activity.busy();
        b.activity.busy();
        assert!(limits.admit(ip(3)).is_none(), "every place is busy");
        assert!(!a.close.was_asked() && !b.close.was_asked());
        // Once b's request is answered, b is the oldest idle one.
        b.activity.idle();
        let c = limits.admit(ip(3)).unwrap();
        c.activity.busy();
        assert!(b.close.was_asked());
        assert!(!a.close.was_asked());
        // b's place went to c: when b closes, there is still no room for a fourth.
        drop(b);
        assert!(limits.admit(ip(4)).is_none());
        // a frees a place when it closes.
        drop(a);
        assert!(limits.admit(ip(4)).is_some());
    }

    #[test]
    fn the_global_cap_closes_the_oldest_idle_connection_of_anyone() {
        let limits = limits(3, 0);
        let mut a = limits.admit(ip(1)).unwrap();
        let mut b = limits.admit(ip(2)).unwrap();
        let mut c = limits.admit(ip(2)).unwrap();
        let mut d = limits.admit(ip(3)).unwrap();
        assert!(a.close.was_asked());
        assert!(!b.close.was_asked() && !c.close.was_asked() && !d.close.was_asked());
    }

    #[test]
    fn shutdown_asks_every_connection_to_close() {
        let limits = limits(0, 0);
        let mut a = limits.admit(ip(1)).unwrap();
        let mut b = limits.admit(ip(2)).unwrap();
        b.activity.busy();
        limits.close_all();
        assert!(a.close.was_asked() && b.close.was_asked());
    }
}
