//! `pyrogate bench spool`: how an ingest node catches up after an upstream outage while live
//! pushes keep coming.
//!
//! Everything runs in this process, on loopback, and stops by itself:
//! - an upstream standing in for Grafana Pyroscope's distributor answers every push `200` after
//!   a fixed latency and writes down each push it receives (every push body starts with its own
//!   sequence number). "Down" is a crash: the listener and every open connection are closed, so
//!   connects are refused until it is back on the same port;
//! - an ingest node (auth off, spool in a temp dir) forwards to it;
//! - a pacer sends small legacy `/ingest` pushes at a steady rate, open loop: one is due every
//!   1/R s whatever the answers. At most `clients` are outstanding; a push due while that many
//!   wait is counted late and not sent, so a slow node cannot slow the pacer down;
//! - after a warm-up the upstream goes down, then comes back, with the load still running, and
//!   the node's `pyrogate_spool_entries` (from its `/metrics`, the one thing the benchmark reads
//!   of the node besides its answers) is sampled every 100 ms until the spool is empty.
//!
//! Which pushes were spooled is what the node told the agent (`Pyrogate-Spooled: true`), so the
//! replay rate is measured at the upstream: receipts of those pushes per second, whatever the
//! node does with live pushes in the meantime.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::{TempDir, node_settings, start_node};

/// How often the spool gauge is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Longest wait, once the load has stopped, for the last pushes to reach the upstream.
const SETTLE: Duration = Duration::from_secs(10);
/// What a push body starts with; the push's sequence number follows, zero-padded.
const ID_PREFIX: &[u8] = b"bench;push_";
const ID_DIGITS: usize = 12;

/// What `pyrogate bench spool` is asked to do.
#[derive(Debug, Clone)]
pub struct SpoolParams {
    /// Live pushes per second.
    pub rate: f64,
    /// Time the upstream takes to answer a push.
    pub latency: Duration,
    /// Time the upstream takes instead, when it is to answer later than the node waits.
    pub slow_upstream: Option<Duration>,
    /// The node's `upstream.timeout`; `None` leaves the node's default.
    pub upstream_timeout: Option<Duration>,
    pub warmup: Duration,
    pub outage: Duration,
    /// Longest wait after the upstream's return for the spool to empty.
    pub max_drain: Duration,
    pub body_bytes: usize,
    /// Requests outstanding at most.
    pub clients: usize,
}

/// Result of `pyrogate bench spool`.
#[derive(Debug, Clone, Serialize)]
pub struct SpoolReport {
    pub rate: f64,
    pub latency_ms: u64,
    /// Set when the upstream answered this late instead of `latency_ms`.
    pub slow_upstream_ms: Option<u64>,
    /// The node's `upstream.timeout`.
    pub upstream_timeout_ms: u64,
    pub body_bytes: usize,
    pub warmup_seconds: f64,
    pub outage_seconds: f64,
    pub max_drain_seconds: f64,
    pub clients: usize,
    /// Pushes sent.
    pub sent: u64,
    /// Pushes due while `clients` requests were outstanding: counted, not sent.
    pub late: u64,
    /// Answered 200 (forwarded or spooled).
    pub acknowledged: u64,
    /// Answered 200 with `Pyrogate-Spooled: true`.
    pub spooled: u64,
    /// Of those, pushes sent after the upstream's return.
    pub spooled_after_return: u64,
    /// Anything but 200, no answer, or no answer in time: what an agent sees as a failure.
    pub errors: u64,
    pub peak_backlog: u64,
    /// Spool entries at the first sample after the upstream's return.
    pub backlog_at_return: u64,
    /// Seconds from the upstream's return to the first sample of an empty spool, with the live
    /// load still running; `None`: not within `max_drain_seconds`.
    pub drain_seconds: Option<f64>,
    /// Receipts per second, at the upstream, of pushes the node had spooled, from the
    /// upstream's return until the spool was empty (or the cap).
    pub replay_rate: Option<f64>,
    /// Receipts per second at the upstream over the same span, and that less the live pushes
    /// sent per second in it: positive when the node gains on its backlog.
    pub upstream_receipts_rate: Option<f64>,
    pub receipts_above_live_rate: Option<f64>,
    /// Pushes the upstream received more than once, and the most receipts of one push.
    pub delivered_more_than_once: u64,
    pub max_receipts: u32,
    /// Acknowledged pushes the upstream never received.
    pub not_received: u64,
    /// Spool entries when the benchmark stopped.
    pub spool_at_end: u64,
    /// Acknowledged pushes neither received nor still spooled: must be 0.
    pub lost: u64,
    /// The node's `pyrogate_spool_possible_duplicates_total` at the end.
    pub possible_duplicates_metric: Option<u64>,
    /// Spool entries once a second from the start.
    pub backlog_per_second: Vec<u64>,
    /// Seconds from the start at which the upstream went down and came back.
    pub down_at: Option<f64>,
    pub up_at: Option<f64>,
}

impl fmt::Display for SpoolReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let upstream = match self.slow_upstream_ms {
            Some(ms) => format!("upstream answering in {ms} ms (slow)"),
            None => format!("upstream latency {} ms", self.latency_ms),
        };
        let outage = if self.outage_seconds > 0.0 {
            format!(
                "outage {:.1} s after {:.1} s",
                self.outage_seconds, self.warmup_seconds
            )
        } else {
            format!("no outage, drain from {:.1} s", self.warmup_seconds)
        };
        writeln!(
            f,
            "spool benchmark: {} pushes/s of {} bytes, {upstream}, upstream.timeout {} ms, {outage}, drain capped at {:.0} s",
            self.rate, self.body_bytes, self.upstream_timeout_ms, self.max_drain_seconds
        )?;
        let row = |f: &mut fmt::Formatter<'_>, what: &str, value: String| {
            writeln!(f, "{what:<42} {value}")
        };
        row(
            f,
            "pushes sent",
            format!(
                "{} ({} late: due while {} requests were outstanding, not sent)",
                self.sent, self.late, self.clients
            ),
        )?;
        row(
            f,
            "acknowledged (200)",
            format!(
                "{} ({} spooled, {} of them sent after the upstream's return)",
                self.acknowledged, self.spooled, self.spooled_after_return
            ),
        )?;
        row(f, "agent-visible errors", self.errors.to_string())?;
        row(f, "peak backlog", self.peak_backlog.to_string())?;
        row(
            f,
            "backlog at the upstream's return",
            self.backlog_at_return.to_string(),
        )?;
        let drain = match self.drain_seconds {
            Some(s) => format!("{s:.1} s"),
            None => format!(
                "not drained within {:.0} s (backlog {} then)",
                self.max_drain_seconds,
                self.backlog_at_cap()
            ),
        };
        row(f, "return → empty spool, load running", drain)?;
        let rate = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.0} pushes/s"));
        row(
            f,
            "replay rate (spooled pushes received/s)",
            rate(self.replay_rate),
        )?;
        row(
            f,
            "upstream receipts/s, above the live rate",
            format!(
                "{}, {}",
                rate(self.upstream_receipts_rate),
                rate(self.receipts_above_live_rate)
            ),
        )?;
        row(
            f,
            "delivered more than once",
            format!(
                "{} (most receipts of one push: {}; node's possible-duplicates counter: {})",
                self.delivered_more_than_once,
                self.max_receipts,
                self.possible_duplicates_metric
                    .map_or("-".into(), |n| n.to_string())
            ),
        )?;
        row(
            f,
            "lost (acknowledged, never received)",
            if self.spool_at_end == 0 {
                self.lost.to_string()
            } else {
                format!(
                    "{} ({} not received, {} still spooled at the end)",
                    self.lost, self.not_received, self.spool_at_end
                )
            },
        )?;
        if let Some(up) = self.up_at {
            // The backlog every 5 s from the return, as far as the drain went.
            let from = up.ceil() as usize;
            let end = self
                .drain_seconds
                .map_or(self.backlog_per_second.len(), |d| {
                    (up + d).ceil() as usize + 1
                })
                .min(self.backlog_per_second.len());
            let series: Vec<String> = self
                .backlog_per_second
                .get(from..end)
                .unwrap_or_default()
                .iter()
                .step_by(5)
                .take(16)
                .map(|n| n.to_string())
                .collect();
            if !series.is_empty() {
                row(f, "backlog every 5 s from the return", series.join(" → "))?;
            }
        }
        Ok(())
    }
}

impl SpoolReport {
    fn backlog_at_cap(&self) -> u64 {
        let at = self.up_at.unwrap_or(self.warmup_seconds) + self.max_drain_seconds;
        self.backlog_per_second
            .get(at as usize)
            .or(self.backlog_per_second.last())
            .copied()
            .unwrap_or(0)
    }
}

/// What became of one push, as its agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Forwarded,
    Spooled,
    Failed,
}

/// Every push sent: when, and what the node answered.
#[derive(Default)]
struct Ledger {
    sent_at: Vec<f64>,
    outcome: Vec<Outcome>,
}

/// Runs the benchmark (see the module doc).
pub async fn spool(p: SpoolParams) -> anyhow::Result<SpoolReport> {
    let start = Instant::now();
    let delay = p.slow_upstream.unwrap_or(p.latency);
    let mut upstream = FakeUpstream::start(delay, start).await?;

    let dir = TempDir::new("spool-")?;
    let timeout_yaml = p
        .upstream_timeout
        .map(|t| format!("  timeout: {}ms\n", t.as_millis()))
        .unwrap_or_default();
    let yaml = format!(
        "api-bind-addr: 127.0.0.1:0\nstorage-path: {:?}\nlog-level: error\nupstream:\n  url: http://{}\n{timeout_yaml}auth:\n  ingestion:\n    enabled: false\n",
        dir.path(),
        upstream.addr,
    );
    let settings = node_settings(&yaml)?;
    let upstream_timeout = settings.ingest.upstream_timeout;
    let (stop, stopped) = watch::channel(false);
    let clock: Arc<dyn pyrogate::core::clock::Clock> = Arc::new(pyrogate::core::clock::SystemClock);
    let (port, node) = start_node(settings, clock, &stopped).await?;

    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(p.clients)
        .build_http();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let slots = Arc::new(Semaphore::new(p.clients));
    // An agent would give up on a push well after the node does.
    let client_timeout = upstream_timeout + Duration::from_secs(10);
    let (stop_load, load_stopped) = watch::channel(false);
    let pacer = tokio::spawn(pace(Pacer {
        client: client.clone(),
        url: format!("http://127.0.0.1:{port}/ingest?name=bench.cpu"),
        rate: p.rate,
        body_bytes: p.body_bytes,
        slots: slots.clone(),
        ledger: ledger.clone(),
        timeout: client_timeout,
        start,
        stop: load_stopped,
    }));
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");

    // The timeline, one step per sample.
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let (mut down_at, mut up_at) = (None, None);
    let mut drained_at = None;
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outage = !p.outage.is_zero();
    let back = p.warmup + p.outage;
    let cap = back + p.max_drain;
    loop {
        ticks.tick().await;
        let now = start.elapsed();
        if outage && down_at.is_none() && now >= p.warmup {
            upstream.down();
            down_at = Some(now.as_secs_f64());
        }
        let returned = now >= back;
        if outage && up_at.is_none() && returned {
            upstream.up().await?;
        }
        if returned && up_at.is_none() {
            up_at = Some(start.elapsed().as_secs_f64());
        }
        let t = start.elapsed().as_secs_f64();
        if let Some(entries) = spool_entries(&client, &metrics_url).await {
            samples.push((t, entries));
            if up_at.is_some() && entries == 0 {
                drained_at = Some(t);
                break;
            }
        }
        if now >= cap {
            break;
        }
    }
    let up_at = up_at.unwrap_or(back.as_secs_f64());
    let window_end = drained_at.unwrap_or(start.elapsed().as_secs_f64());

    // Stop the load and let every outstanding push be answered. After a drain, give the last
    // ones (pushes spooled during it) time to reach the upstream; against a slow upstream, give
    // the re-sends after a timeout theirs. Otherwise stop now: what is still spooled is counted
    // as such.
    stop_load.send_replace(true);
    let late = pacer.await.unwrap_or(0);
    let _all = tokio::time::timeout(
        client_timeout + Duration::from_secs(1),
        slots.acquire_many(p.clients as u32),
    )
    .await;
    let mut spool_at_end = spool_entries(&client, &metrics_url)
        .await
        .or(samples.last().map(|s| s.1))
        .unwrap_or(0);
    if drained_at.is_some() || p.slow_upstream.is_some() {
        let settle = SETTLE
            + p.slow_upstream
                .map_or(Duration::ZERO, |_| 2 * upstream_timeout);
        let settle_until = Instant::now() + settle;
        while !(spool_at_end == 0 && all_received(&ledger, &upstream))
            && Instant::now() < settle_until
        {
            tokio::time::sleep(SAMPLE_EVERY).await;
            if let Some(n) = spool_entries(&client, &metrics_url).await {
                spool_at_end = n;
            }
        }
    }
    let possible_duplicates = metric(
        &client,
        &metrics_url,
        "pyrogate_spool_possible_duplicates_total",
    )
    .await
    .map(|v| v as u64);
    stop.send_replace(true);
    let _ = node.await;
    upstream.down();
    drop(dir);

    let ledger = std::mem::take(&mut *lock(&ledger));
    let arrivals = upstream.arrivals();
    Ok(report(
        &p,
        upstream_timeout,
        Tally {
            ledger,
            arrivals,
            samples,
            late,
            down_at,
            up_at,
            drained_at,
            window_end,
            spool_at_end,
            possible_duplicates,
        },
    ))
}

/// Everything measured, before it is summed up.
struct Tally {
    ledger: Ledger,
    /// (push id, seconds from the start) per receipt at the upstream.
    arrivals: Vec<(u64, f64)>,
    /// (seconds from the start, spool entries).
    samples: Vec<(f64, u64)>,
    late: u64,
    down_at: Option<f64>,
    up_at: f64,
    drained_at: Option<f64>,
    window_end: f64,
    spool_at_end: u64,
    possible_duplicates: Option<u64>,
}

fn report(p: &SpoolParams, upstream_timeout: Duration, t: Tally) -> SpoolReport {
    let n = t.ledger.outcome.len();
    let mut counts = vec![0u32; n];
    for &(id, _) in &t.arrivals {
        if let Some(c) = counts.get_mut(id as usize) {
            *c += 1;
        }
    }
    let outcomes = &t.ledger.outcome;
    let count = |pred: &dyn Fn(usize) -> bool| (0..n).filter(|&i| pred(i)).count() as u64;
    let not_received = count(&|i| acknowledged(outcomes[i]) && counts[i] == 0);
    let window = t.window_end - t.up_at;
    let per_second = |k: u64| (window > 0.0).then(|| k as f64 / window);
    let in_window = |at: f64| at >= t.up_at && at < t.window_end;
    let received = t.arrivals.iter().filter(|(_, at)| in_window(*at));
    let replays = received
        .clone()
        .filter(|(id, _)| outcomes.get(*id as usize) == Some(&Outcome::Spooled))
        .count() as u64;
    let receipts = received.count() as u64;
    let live = t.ledger.sent_at.iter().filter(|at| in_window(**at)).count() as u64;
    let upstream_receipts_rate = per_second(receipts);
    let backlog_at_return = t
        .samples
        .iter()
        .find(|(at, _)| *at >= t.up_at)
        .map_or(0, |s| s.1);
    let mut backlog_per_second = Vec::new();
    for (at, entries) in &t.samples {
        while (backlog_per_second.len() as f64) <= *at {
            backlog_per_second.push(*entries);
        }
    }
    SpoolReport {
        rate: p.rate,
        latency_ms: p.latency.as_millis() as u64,
        slow_upstream_ms: p.slow_upstream.map(|d| d.as_millis() as u64),
        upstream_timeout_ms: upstream_timeout.as_millis() as u64,
        body_bytes: p.body_bytes,
        warmup_seconds: p.warmup.as_secs_f64(),
        outage_seconds: p.outage.as_secs_f64(),
        max_drain_seconds: p.max_drain.as_secs_f64(),
        clients: p.clients,
        sent: n as u64,
        late: t.late,
        acknowledged: count(&|i| acknowledged(outcomes[i])),
        spooled: count(&|i| outcomes[i] == Outcome::Spooled),
        spooled_after_return: count(&|i| {
            outcomes[i] == Outcome::Spooled && t.ledger.sent_at[i] >= t.up_at
        }),
        errors: count(&|i| !acknowledged(outcomes[i])),
        peak_backlog: t.samples.iter().map(|s| s.1).max().unwrap_or(0),
        backlog_at_return,
        drain_seconds: t.drained_at.map(|d| d - t.up_at),
        replay_rate: per_second(replays),
        upstream_receipts_rate,
        receipts_above_live_rate: upstream_receipts_rate.map(|r| r - live as f64 / window),
        delivered_more_than_once: counts.iter().filter(|&&c| c > 1).count() as u64,
        max_receipts: counts.iter().copied().max().unwrap_or(0),
        not_received,
        spool_at_end: t.spool_at_end,
        lost: not_received.saturating_sub(t.spool_at_end),
        possible_duplicates_metric: t.possible_duplicates,
        backlog_per_second,
        down_at: t.down_at,
        up_at: (!p.outage.is_zero()).then_some(t.up_at),
    }
}

/// Whether every acknowledged push has reached the upstream.
fn all_received(ledger: &Mutex<Ledger>, upstream: &FakeUpstream) -> bool {
    let ledger = lock(ledger);
    let counts = upstream.counts(ledger.outcome.len());
    ledger
        .outcome
        .iter()
        .zip(&counts)
        .all(|(o, &n)| !acknowledged(*o) || n > 0)
}

fn acknowledged(o: Outcome) -> bool {
    matches!(o, Outcome::Forwarded | Outcome::Spooled)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live load.
struct Pacer {
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
    rate: f64,
    body_bytes: usize,
    slots: Arc<Semaphore>,
    ledger: Arc<Mutex<Ledger>>,
    timeout: Duration,
    start: Instant,
    stop: watch::Receiver<bool>,
}

/// Sends pushes at `rate` until told to stop, open loop: each tick sends every push due by
/// then, so a late tick sends a burst rather than lowering the rate. Returns the pushes that
/// were due while every slot was taken (not sent).
async fn pace(mut p: Pacer) -> u64 {
    let tick = Duration::from_secs_f64((1.0 / p.rate).max(0.001));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let began = Instant::now();
    let (mut due_so_far, mut late) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = p.stop.wait_for(|s| *s) => return late,
        }
        let due = (began.elapsed().as_secs_f64() * p.rate) as u64;
        while due_so_far < due {
            due_so_far += 1;
            let Ok(slot) = p.slots.clone().try_acquire_owned() else {
                late += 1;
                continue;
            };
            let id = {
                let mut ledger = lock(&p.ledger);
                ledger.sent_at.push(p.start.elapsed().as_secs_f64());
                ledger.outcome.push(Outcome::Pending);
                ledger.outcome.len() - 1
            };
            let req = Request::post(p.url.as_str())
                .header("content-type", "application/octet-stream")
                .body(Full::new(push_body(id as u64, p.body_bytes)));
            let (client, ledger, timeout) = (p.client.clone(), p.ledger.clone(), p.timeout);
            tokio::spawn(async move {
                let outcome = match req {
                    Ok(req) => send(&client, req, timeout).await,
                    Err(_) => Outcome::Failed,
                };
                lock(&ledger).outcome[id] = outcome;
                drop(slot);
            });
        }
    }
}

/// One push, as an agent sees it: 200 (spooled or not), or a failure.
async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Outcome {
    let exchange = async {
        let resp = client.request(req).await.ok()?;
        let spooled = resp.headers().contains_key("pyrogate-spooled");
        let ok = resp.status() == StatusCode::OK;
        resp.into_body().collect().await.ok()?;
        Some(match (ok, spooled) {
            (true, true) => Outcome::Spooled,
            (true, false) => Outcome::Forwarded,
            (false, _) => Outcome::Failed,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(Outcome::Failed)
}

/// A folded-stacks body of `bytes` bytes (at least the first line) that starts with push `id`.
fn push_body(id: u64, bytes: usize) -> Bytes {
    let mut body = format!(
        "{}{id:0width$} 1\n",
        std::str::from_utf8(ID_PREFIX).unwrap_or_default(),
        width = ID_DIGITS
    )
    .into_bytes();
    const FILLER: &[u8] = b"bench;main;work;filler 1\n";
    while body.len() < bytes {
        let take = FILLER.len().min(bytes - body.len());
        body.extend_from_slice(&FILLER[..take]);
    }
    Bytes::from(body)
}

/// The push id a body starts with.
fn push_id(body: &[u8]) -> Option<u64> {
    let digits = body.strip_prefix(ID_PREFIX)?.get(..ID_DIGITS)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `pyrogate_spool_entries` from the node's `/metrics`.
async fn spool_entries(client: &Client<HttpConnector, Full<Bytes>>, url: &str) -> Option<u64> {
    metric(client, url, "pyrogate_spool_entries")
        .await
        .map(|v| v as u64)
}

/// One unlabelled sample from a Prometheus text exposition at `url`.
async fn metric(client: &Client<HttpConnector, Full<Bytes>>, url: &str, name: &str) -> Option<f64> {
    let get = async {
        let req = Request::get(url).body(Full::new(Bytes::new())).ok()?;
        let resp = client.request(req).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()
        .flatten()
}

/// The stand-in for Pyroscope's distributor.
struct FakeUpstream {
    addr: SocketAddr,
    delay: Duration,
    start: Instant,
    /// (push id, seconds from the start) per push received, in order of receipt.
    log: Arc<Mutex<Vec<(u64, f64)>>>,
    serving: Option<JoinHandle<()>>,
}

impl FakeUpstream {
    async fn start(delay: Duration, start: Instant) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut upstream = FakeUpstream {
            addr: listener.local_addr()?,
            delay,
            start,
            log: Arc::default(),
            serving: None,
        };
        upstream.serve(listener);
        Ok(upstream)
    }

    /// Down as a crashed process is: the listener closes and every connection with it,
    /// answers under way included (the node may have had those pushes received).
    fn down(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }

    /// Back on the same port.
    async fn up(&mut self) -> anyhow::Result<()> {
        let mut tries = 0;
        let listener = loop {
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            match socket.bind(self.addr).and_then(|()| socket.listen(1024)) {
                Ok(listener) => break listener,
                // The aborted server may not have let go of the port yet.
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("upstream back on {}", self.addr));
                }
            }
        };
        self.serve(listener);
        Ok(())
    }

    fn serve(&mut self, listener: TcpListener) {
        let (delay, start, log) = (self.delay, self.start, self.log.clone());
        self.serving = Some(tokio::spawn(async move {
            // Dropped with this task (`down`): aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let _ = tcp.set_nodelay(true);
                        let log = log.clone();
                        let service = hyper::service::service_fn(move |req| {
                            answer(req, delay, start, log.clone())
                        });
                        connections.spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        }));
    }

    /// Receipts per push id, for ids below `n`.
    fn counts(&self, n: usize) -> Vec<u32> {
        let mut counts = vec![0u32; n];
        for &(id, _) in lock(&self.log).iter() {
            if let Some(c) = counts.get_mut(id as usize) {
                *c += 1;
            }
        }
        counts
    }

    fn arrivals(&self) -> Vec<(u64, f64)> {
        lock(&self.log).clone()
    }
}

/// A push is received once its body is in; the answer follows `delay` later.
async fn answer(
    req: Request<hyper::body::Incoming>,
    delay: Duration,
    start: Instant,
    log: Arc<Mutex<Vec<(u64, f64)>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_push = req.uri().path() == "/ingest";
    let Ok(body) = req.into_body().collect().await else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    match push_id(&body.to_bytes()) {
        Some(id) if is_push => lock(&log).push((id, start.elapsed().as_secs_f64())),
        _ => return Ok(status(StatusCode::BAD_REQUEST)),
    }
    tokio::time::sleep(delay).await;
    Ok(Response::new(Full::new(Bytes::new())))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_body_carries_its_id() {
        for bytes in [0, 10, 1024] {
            let body = push_body(1234, bytes);
            assert!(body.len() >= bytes);
            assert_eq!(push_id(&body), Some(1234));
        }
        assert_eq!(push_id(b"bench;main 1\n"), None);
    }

    /// A short outage under a light load: every acknowledged push reaches the upstream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_outage_loses_nothing() {
        let report = spool(SpoolParams {
            rate: 20.0,
            latency: Duration::from_millis(5),
            slow_upstream: None,
            upstream_timeout: None,
            warmup: Duration::from_millis(500),
            outage: Duration::from_millis(500),
            max_drain: Duration::from_secs(8),
            body_bytes: 256,
            clients: 64,
        })
        .await
        .unwrap();
        assert!(report.sent > 0, "{report}");
        assert!(report.spooled > 0, "the outage spooled nothing: {report}");
        assert_eq!(report.errors, 0, "{report}");
        assert_eq!(report.lost, 0, "{report}");
    }
}
