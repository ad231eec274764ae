//! `pyrogate bench long-poll`: what N idle long-polls of the revocation list cost the
//! authority in memory, and how long one revocation takes to reach all of them.
//!
//! The authority is this binary (`pyrogate server`, or `--server-binary`) in a child process,
//! so its resident set (`VmRSS` in `/proc/<pid>/status`) holds nothing of the clients. The
//! clients are plain TCP streams in this process, one task each, sending what an ingest node's
//! sync loop sends: `GET /api/revocations?wait=SECONDS` with `If-None-Match` set to the current
//! version.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use super::TempDir;

/// Polls per client address: below the default `server.http-max-connections-per-client`
/// (1024), which the benchmark leaves as it is.
const POLLS_PER_ADDRESS: usize = 1000;

/// Connections being opened at once: well below the listener's accept backlog (128, the
/// standard library's), so no SYN is dropped and retried a second later.
const CONNECTING_AT_ONCE: usize = 64;

/// Short polls answered before the baseline is taken.
const WARM_UP_POLLS: usize = 200;

const ADMIN_PASSWORD: &str = "bench-long-poll-admin-password";

/// Result of `pyrogate bench long-poll`.
#[derive(Debug, Clone, Serialize)]
pub struct LongPollReport {
    pub polls: usize,
    /// Loopback addresses the polls come from (at most 1000 each).
    pub client_addresses: usize,
    pub wait_seconds: u64,
    /// Time to open every poll and see the authority hold them all.
    pub open_seconds: f64,
    /// The authority's `VmRSS` before the polls and with all of them held (first round).
    pub rss_before_bytes: u64,
    pub rss_held_bytes: u64,
    /// (held − before) / polls.
    pub bytes_per_poll: f64,
    /// One revocation per round; every poll polls again at once with the new version.
    pub rounds: Vec<FanOut>,
    /// The median round (by p99 from the acknowledgement): the robust figure on a shared machine.
    pub median_round: FanOut,
    /// Highest p99 of any round.
    pub worst_p99_ms: f64,
    /// Polls that failed (connection error, wrong status or version), over all rounds; the
    /// reasons are printed.
    pub failed: usize,
}

/// One revocation reaching every poll.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FanOut {
    /// Round trip of the `DELETE /api/keys/{id}` that revokes.
    pub revoke_ms: f64,
    /// From the revocation's acknowledgement to each poll's complete response (a response
    /// that arrived before the acknowledgement counts as 0).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Responses complete before the acknowledgement reached the client.
    pub before_ack: usize,
    /// The same from the moment the revocation request was sent (an upper bound: it includes
    /// the deletion's commit and the list's signing).
    pub from_request_p50_ms: f64,
    pub from_request_p99_ms: f64,
    pub from_request_max_ms: f64,
    /// The list version after the deletion, and how many polls answered with it.
    pub new_version: u64,
    pub got_new_version: usize,
}

impl fmt::Display for LongPollReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "long-poll benchmark: {} polls (wait={}s) from {} loopback addresses, opened and held in {:.1} s",
            self.polls, self.wait_seconds, self.client_addresses, self.open_seconds
        )?;
        writeln!(
            f,
            "authority RSS: {:.1} MiB before, {:.1} MiB held → {:.0} bytes per idle poll",
            self.rss_before_bytes as f64 / 1048576.0,
            self.rss_held_bytes as f64 / 1048576.0,
            self.bytes_per_poll
        )?;
        writeln!(
            f,
            "fan-out of one revocation (DELETE /api/keys/{{id}}), ms from its acknowledgement [from the request]:"
        )?;
        writeln!(
            f,
            "{:>5} {:>8} {:>16} {:>16} {:>16} {:>10} {:>8}",
            "round", "ack", "p50", "p99", "max", "before ack", "new ver"
        )?;
        for (i, r) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "{:>5} {:>8.1} {:>7.1} [{:>6.1}] {:>7.1} [{:>6.1}] {:>7.1} [{:>6.1}] {:>10} {:>4}/{}",
                i + 1,
                r.revoke_ms,
                r.p50_ms,
                r.from_request_p50_ms,
                r.p99_ms,
                r.from_request_p99_ms,
                r.max_ms,
                r.from_request_max_ms,
                r.before_ack,
                r.got_new_version,
                self.polls
            )?;
        }
        writeln!(
            f,
            "median round: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; worst p99 {:.1} ms; {} failed",
            self.median_round.p50_ms,
            self.median_round.p99_ms,
            self.median_round.max_ms,
            self.worst_p99_ms,
            self.failed
        )
    }
}

/// What one poll saw.
struct PollOutcome {
    done: Instant,
    version: Option<u64>,
}

pub async fn long_poll(
    polls: usize,
    rounds: usize,
    wait_seconds: u64,
    server_binary: Option<&Path>,
) -> anyhow::Result<LongPollReport> {
    raise_open_files_limit(polls)?;
    let cleanup = TempDir::new("poll-")?;
    let dir = cleanup.path().to_path_buf();

    // A free port, handed to the child (a small race with other processes, fine here).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = dir.join("authority.yaml");
    std::fs::write(
        &config,
        format!(
            "api-bind-addr: \"127.0.0.1:{port}\"\nstorage-path: {:?}\nkeys-dir: {:?}\nlog-level: warn\n\
             server:\n  http-max-connections: {}\n\
             auth:\n  internal:\n    admin:\n      password: {ADMIN_PASSWORD:?}\n\
             revocations:\n  max-long-polls: {polls}\n  max-wait: {wait_seconds}s\n",
            dir.join("data"),
            dir.join("keys"),
            polls + 64,
        ),
    )?;
    let binary = match server_binary {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe().context("finding this binary")?,
    };
    let log = std::fs::File::create(dir.join("authority.log"))?;
    let child = Command::new(&binary)
        .args(["server", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut child = KillOnDrop(child);
    let result = run(&mut child, addr, polls, rounds, wait_seconds).await;
    child.stop();
    if result.is_err() {
        let log = std::fs::read_to_string(dir.join("authority.log")).unwrap_or_default();
        if !log.trim().is_empty() {
            eprintln!("authority log:\n{log}");
        }
    }
    result
}

async fn run(
    child: &mut KillOnDrop,
    addr: SocketAddr,
    polls: usize,
    rounds: usize,
    wait_seconds: u64,
) -> anyhow::Result<LongPollReport> {
    let pid = child.0.id();
    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait()? {
            bail!("the authority exited at start-up ({status})");
        }
        if let Ok(r) = http(addr, "GET", "/healthz", &[], None).await
            && r.status == 200
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the authority did not come up in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The admin logs in and makes the key the benchmark will delete.
    let login = http(
        addr,
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        Some(format!(r#"{{"username":"admin","password":"{ADMIN_PASSWORD}"}}"#).as_bytes()),
    )
    .await?;
    if login.status != 204 {
        bail!("login: {} {}", login.status, login.text());
    }
    let cookie = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .context("login set no cookie")?
        .to_owned();
    // One key to delete per round.
    let mut key_ids = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let created = http(
            addr,
            "POST",
            "/api/keys",
            &[("content-type", "application/json"), ("cookie", &cookie)],
            Some(
                format!(r#"{{"name":"bench-long-poll-{i}","role":"Agent","ttlSeconds":3600}}"#)
                    .as_bytes(),
            ),
        )
        .await?;
        if created.status != 201 {
            bail!("creating a key: {} {}", created.status, created.text());
        }
        key_ids.push(
            serde_json::from_slice::<serde_json::Value>(&created.body)?["id"]
                .as_i64()
                .context("the created key has no id")?,
        );
    }
    let etag = http(addr, "GET", "/api/revocations", &[], None)
        .await?
        .header("etag")
        .context("the revocation list has no ETag")?
        .to_owned();
    let version = parse_etag(&etag).context("the ETag is not a version")?;

    // Warm-up: a few short polls that time out (304), so the runtime's workers, the timer
    // and the allocator have seen this traffic and the login's password hash (argon2, many
    // MiB) is given back before the baseline.
    let warm_up: Vec<_> = (0..WARM_UP_POLLS)
        .map(|_| {
            let etag = etag.clone();
            tokio::spawn(async move {
                http(
                    addr,
                    "GET",
                    "/api/revocations?wait=1",
                    &[("if-none-match", &etag)],
                    None,
                )
                .await
            })
        })
        .collect();
    for poll in warm_up {
        let r = poll.await??;
        if r.status != 304 {
            bail!("a warm-up poll: {} {}", r.status, r.text());
        }
    }
    let rss_before_bytes = settled_rss(pid).await?;

    // Every poll: its own connection, from 127.0.0.(1 + i / 1000).
    let client_addresses = polls.div_ceil(POLLS_PER_ADDRESS);
    if client_addresses > 254 {
        bail!("at most {} polls", 254 * POLLS_PER_ADDRESS);
    }
    let opening = Arc::new(tokio::sync::Semaphore::new(CONNECTING_AT_ONCE));
    // Each poll reports each round's outcome here and polls again at once with the version it
    // got, on the same connection, as a node does; it keeps the connection open until every
    // poll is done, so closing connections is not part of any fan-out.
    let (report, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::watch::channel(false);
    let opened_at = Instant::now();
    let mut tasks = Vec::with_capacity(polls);
    for i in 0..polls {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i / POLLS_PER_ADDRESS) as u8);
        let opening = opening.clone();
        let (report, mut released, etag) = (report.clone(), released.clone(), etag.clone());
        tasks.push(tokio::spawn(async move {
            let request = |etag: &str| {
                format!(
                    "GET /api/revocations?wait={wait_seconds} HTTP/1.1\r\nhost: {addr}\r\nif-none-match: {etag}\r\nuser-agent: pyrogate-bench\r\naccept: */*\r\n\r\n"
                )
            };
            let connected = async {
                let _turn = opening.acquire().await?;
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((source, 0)))?;
                let mut tcp = socket.connect(addr).await?;
                tcp.write_all(request(&etag).as_bytes()).await?;
                anyhow::Ok(tcp)
            };
            let mut tcp = match connected.await {
                Ok(tcp) => tcp,
                Err(e) => {
                    let e = format!("{e:#}");
                    for _ in 0..rounds {
                        let _ = report.send(Err(anyhow::anyhow!("{e}")));
                    }
                    return;
                }
            };
            for round in 0..rounds {
                let polled = async {
                    let outcome = poll_response(&mut tcp).await?;
                    if round + 1 < rounds {
                        let version = outcome.version.context("no version")?;
                        tcp.write_all(request(&format!("\"{version}\"")).as_bytes())
                            .await?;
                    }
                    anyhow::Ok(outcome)
                };
                match polled.await {
                    Ok(outcome) => {
                        let _ = report.send(Ok(outcome));
                    }
                    Err(e) => {
                        let e = format!("{e:#}");
                        for _ in round..rounds {
                            let _ = report.send(Err(anyhow::anyhow!("{e}")));
                        }
                        return;
                    }
                }
            }
            let _ = released.wait_for(|r| *r).await;
        }));
    }
    drop(report);
    let (mut rss_held_bytes, mut open_seconds) = (0, 0.0);
    let mut results = Vec::with_capacity(rounds);
    let mut failed = 0;
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    let mut version = version;
    for (round, key_id) in key_ids.iter().enumerate() {
        // Held: the authority's own count of waiting polls says so (failed polls excepted).
        let waiting = Instant::now();
        loop {
            let held = held_polls(addr).await.unwrap_or(0);
            if held + failed as u64 >= polls as u64 {
                break;
            }
            if let Ok(outcome) = outcomes.try_recv() {
                bail!(
                    "a poll ended before revocation {} ({held} held): {}",
                    round + 1,
                    match outcome {
                        Ok(o) => format!("answered with version {:?}", o.version),
                        Err(e) => format!("{e:#}"),
                    }
                );
            }
            if waiting.elapsed() > Duration::from_secs(wait_seconds.saturating_sub(10).max(5)) {
                bail!(
                    "only {held} of {polls} polls held after {:?}",
                    waiting.elapsed()
                );
            }
            tokio::time::sleep(Duration::from_millis(if round == 0 { 100 } else { 10 })).await;
        }
        if round == 0 {
            open_seconds = opened_at.elapsed().as_secs_f64();
            rss_held_bytes = settled_rss(pid).await?;
        }
        let sent = Instant::now();
        let revoked = http(
            addr,
            "DELETE",
            &format!("/api/keys/{key_id}"),
            &[("cookie", &cookie)],
            None,
        )
        .await?;
        let ack = Instant::now();
        if revoked.status != 204 {
            bail!("deleting a key: {} {}", revoked.status, revoked.text());
        }
        let mut from_ack = Vec::with_capacity(polls);
        let mut from_request = Vec::with_capacity(polls);
        let (mut before_ack, mut versions) = (0, Vec::with_capacity(polls));
        for _ in 0..polls {
            let Some(outcome) = outcomes.recv().await else {
                bail!("a poll task ended without a word");
            };
            match outcome {
                Ok(outcome) => {
                    from_request.push(outcome.done.duration_since(sent).as_secs_f64() * 1e3);
                    match outcome.done.checked_duration_since(ack) {
                        Some(d) => from_ack.push(d.as_secs_f64() * 1e3),
                        None => {
                            before_ack += 1;
                            from_ack.push(0.0);
                        }
                    }
                    versions.push(outcome.version);
                }
                Err(e) => {
                    failed += 1;
                    *reasons.entry(format!("{e:#}")).or_default() += 1;
                }
            }
        }
        let new_version = http(addr, "GET", "/api/revocations", &[], None)
            .await?
            .header("etag")
            .and_then(parse_etag)
            .context("the revocation list has no ETag")?;
        if new_version <= version {
            bail!("the deletion did not move the revocation list's version");
        }
        version = new_version;
        let got_new_version = versions.iter().filter(|v| **v == Some(new_version)).count();
        failed += versions.len() - got_new_version;
        for v in versions.iter().filter(|v| **v != Some(new_version)) {
            *reasons
                .entry(format!("answered with version {v:?}, not {new_version}"))
                .or_default() += 1;
        }
        from_ack.sort_by(f64::total_cmp);
        from_request.sort_by(f64::total_cmp);
        results.push(FanOut {
            revoke_ms: ack.duration_since(sent).as_secs_f64() * 1e3,
            p50_ms: percentile(&from_ack, 0.50),
            p99_ms: percentile(&from_ack, 0.99),
            max_ms: from_ack.last().copied().unwrap_or(0.0),
            before_ack,
            from_request_p50_ms: percentile(&from_request, 0.50),
            from_request_p99_ms: percentile(&from_request, 0.99),
            from_request_max_ms: from_request.last().copied().unwrap_or(0.0),
            new_version,
            got_new_version,
        });
    }
    release.send_replace(true);
    for task in tasks {
        task.await?;
    }
    for (reason, n) in &reasons {
        eprintln!("{n} polls: {reason}");
    }
    let mut by_p99 = results.clone();
    by_p99.sort_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
    Ok(LongPollReport {
        polls,
        client_addresses,
        wait_seconds,
        open_seconds,
        rss_before_bytes,
        rss_held_bytes,
        bytes_per_poll: rss_held_bytes.saturating_sub(rss_before_bytes) as f64 / polls as f64,
        median_round: by_p99[by_p99.len() / 2].clone(),
        worst_p99_ms: by_p99.last().map_or(0.0, |r| r.p99_ms),
        rounds: results,
        failed,
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn parse_etag(etag: &str) -> Option<u64> {
    etag.trim().trim_matches('"').parse().ok()
}

/// Reads one response to a long-poll: `200` with an `ETag`, or an error.
async fn poll_response(tcp: &mut TcpStream) -> anyhow::Result<PollOutcome> {
    let mut buf = Vec::new();
    let (head_end, body_len) = loop {
        if tcp.read_buf(&mut buf).await? == 0 {
            bail!("connection closed before a response");
        }
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).context("response head")?;
            let len = header(head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, len);
        }
    };
    while buf.len() < head_end + body_len {
        if tcp.read_buf(&mut buf).await? == 0 {
            bail!("connection closed inside a response");
        }
    }
    let done = Instant::now();
    let head = std::str::from_utf8(&buf[..head_end])?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        bail!("status {status}");
    }
    Ok(PollOutcome {
        done,
        version: header(head, "etag").and_then(parse_etag),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.head, name)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on its own connection (`connection: close`).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<Response> {
    let mut tcp = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    req.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    tcp.write_all(req.as_bytes()).await?;
    tcp.write_all(body).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut buf))
        .await
        .context("no response in 30 s")??;
    let end = find(&buf, b"\r\n\r\n").context("no response head")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let mut body = buf[end + 4..].to_vec();
    if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    Ok(Response { status, head, body })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line) = find(raw, b"\r\n") {
        let size = std::str::from_utf8(&raw[..line])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[line + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
    out
}

/// `pyrogate_revocation_long_polls` from the authority's `/metrics`.
async fn held_polls(addr: SocketAddr) -> anyhow::Result<u64> {
    let metrics = http(addr, "GET", "/metrics", &[], None).await?.text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("pyrogate_revocation_long_polls "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .context("no pyrogate_revocation_long_polls in /metrics")
}

/// `VmRSS` of `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .context("no VmRSS")
}

/// `VmRSS` once it has stopped moving: two readings 250 ms apart within 64 KiB of each other
/// (at most 5 s).
async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    let mut last = rss(pid)?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss(pid)?;
        if now.abs_diff(last) <= 64 * 1024 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// The clients need a descriptor per poll: raise the soft limit to the hard one, and say so
/// when even that is too low.
fn raise_open_files_limit(polls: usize) -> anyhow::Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).context("raising the open-files limit")?;
    }
    if let Some(max) = limit.current
        && max < polls as u64 + 256
    {
        bail!("the open-files limit ({max}) is too low for {polls} polls; raise it (ulimit -n)");
    }
    Ok(())
}

/// Kills the authority if the benchmark ends early.
struct KillOnDrop(Child);

impl KillOnDrop {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}
