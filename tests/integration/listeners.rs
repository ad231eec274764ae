//! Abuse resistance of every listener (the same server shell serves both roles): a slowloris
//! client is dropped after `server.http-server-read-timeout`; past the connection limits a new
//! connection takes an idle one's place, or with every one busy gets an immediate 503 in the
//! errors shape, and a request in flight is never cut; under a low open-files limit the caps
//! are lowered to fit, so a new client is still served. Then how connections are spread over
//! the serving threads.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::*;

fn port_of(node: &Node) -> u16 {
    node.url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Reads until the peer closes (Ok) or `limit` passes (Err).
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, ()> {
    let mut got = Vec::new();
    tokio::time::timeout(limit, async {
        let mut buf = [0u8; 512];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .map(|()| got)
    .map_err(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_dropped_after_the_read_timeout() {
    let storage = tempfile::tempdir().unwrap();
    let node = Node::start(storage.path(), "server:\n  http-server-read-timeout: 1s\n").await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port_of(&node)))
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
    // One byte every 300 ms: never a whole header, always just alive.
    let trickle = async {
        for b in b"st: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if tcp.write_all(&[*b]).await.is_err() {
                return true;
            }
        }
        false
    };
    let dropped = tokio::time::timeout(Duration::from_secs(8), trickle).await;
    assert!(
        matches!(dropped, Ok(true)),
        "the slow client was still connected after several seconds"
    );
    // And an idle keep-alive connection is closed after the same time.
    let mut idle = TcpStream::connect(("127.0.0.1", port_of(&node)))
        .await
        .unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut idle, Duration::from_secs(6)).await;
    let answer = answer.expect("the idle keep-alive connection is closed");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// A new connection from `from` (a loopback address) to `port`.
async fn connect_from(port: u16, from: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap()
}

/// A push on a new connection from `from` whose body is not sent: once the node asks for it
/// (`100 Continue`), the request is in flight, and stays so while the connection is kept.
async fn push_in_flight(port: u16, from: [u8; 4]) -> TcpStream {
    let mut tcp = connect_from(port, from).await;
    tcp.write_all(
        b"POST /ingest?name=held.cpu&from=1&until=2 HTTP/1.1\r\nHost: x\r\n\
          Content-Type: text/plain\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !got.ends_with(b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the node asks for the push's body");
    assert!(
        got.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    tcp
}

/// What a new connection from `from` gets for `GET /healthz` (with `Connection: close`): the
/// whole answer, or nothing if it is closed unanswered.
async fn healthz_from(port: u16, from: [u8; 4]) -> String {
    let mut tcp = connect_from(port, from).await;
    let _ = tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let got = closed_within(&mut tcp, Duration::from_secs(10))
        .await
        .expect("the answer, then the close");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limits_with_every_connection_busy_new_ones_get_a_503_and_freed_places_are_reused()
 {
    let upstream = Upstream::start().await;
    let storage = tempfile::tempdir().unwrap();
    let node = Node::start(
        storage.path(),
        &format!(
            "upstream: {}\nserver:\n  http-max-connections: 8\n  http-max-connections-per-client: 3\n",
            upstream.url()
        ),
    )
    .await;
    let port = port_of(&node);
    // Three pushes in flight hold the client's share: none of them is cut for a fourth.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(push_in_flight(port, [127, 0, 0, 1]).await);
    }
    let refused = healthz_from(port, [127, 0, 0, 1]).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains(r#"{"errors":["too many connections; retry shortly"]}"#),
        "{refused}"
    );
    // Another client address still gets in (the per-client limit is per address).
    let other = healthz_from(port, [127, 0, 0, 2]).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // The pushes in flight were not cut: each is answered once its body comes.
    for tcp in &mut held {
        tcp.write_all(b"main;work 1\n").await.unwrap();
        let answer = read_answer(tcp).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // A freed place is reused.
    held.clear();
    let deadline = Deadline::secs(10, "a freed place to be reused");
    loop {
        let got = healthz_from(port, [127, 0, 0, 1]).await;
        if got.starts_with("HTTP/1.1 200") {
            break;
        }
        deadline.tick(|| got.clone()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_its_share_has_its_oldest_idle_connection_closed_for_a_new_one() {
    let storage = tempfile::tempdir().unwrap();
    let node = Node::start(
        storage.path(),
        "server:\n  http-max-connections-per-client: 3\n",
    )
    .await;
    let port = port_of(&node);
    // Three kept-alive connections, idle once answered.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut tcp = connect_from(port, [127, 0, 0, 1]).await;
        assert_eq!(body_of_get(&mut tcp, "/healthz").await, "ok\n");
        idle.push(tcp);
    }
    // A fourth is served: the oldest idle one made room, the two others are still open.
    let mut fourth = connect_from(port, [127, 0, 0, 1]).await;
    assert_eq!(body_of_get(&mut fourth, "/healthz").await, "ok\n");
    let closed = closed_within(&mut idle[0], Duration::from_secs(10)).await;
    assert_eq!(closed, Ok(Vec::new()), "the oldest is closed, unanswered");
    for tcp in &mut idle[1..] {
        assert_eq!(body_of_get(tcp, "/healthz").await, "ok\n");
    }
}

/// A router whose `GET /wait` is in flight until the test lets it finish ([`Gate`]), and whose
/// `GET /ok` answers at once.
fn gated_router(gate: &Gate) -> axum::Router {
    use axum::routing::get;
    let gate = gate.clone();
    axum::Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/wait", get(move || async move { gate.pass().await }))
}

/// Requests held until the test opens the gate for them, one at a time: `entered` tells
/// the test each has begun.
#[derive(Clone)]
struct Gate {
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    open: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Gate {
    fn new() -> (Gate, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let (entered, entering) = tokio::sync::mpsc::unbounded_channel();
        let open = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        (Gate { entered, open }, entering)
    }

    /// Waits its turn (first come, first through), then answers `waited`.
    async fn pass(&self) -> &'static str {
        let _ = self.entered.send(());
        self.open.acquire().await.unwrap().forget();
        "waited"
    }

    /// Lets the first request waiting through.
    fn let_one_through(&self) {
        self.open.add_permits(1);
    }
}

/// Waits (bounded) until a request has entered the gate.
async fn entered(entering: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(Duration::from_secs(10), entering.recv())
        .await
        .expect("a request to reach the gate")
        .unwrap();
}

/// A server shell on 127.0.0.1:0 with node settings `yaml`, serving `router` (after `hold`, if
/// any) on the caller's runtime; stopped when dropped.
struct RunningShell {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningShell {
    async fn start(
        yaml: &str,
        router: axum::Router,
        hold: Option<std::sync::Arc<dyn pyrogate::edge::server::Hold>>,
    ) -> RunningShell {
        use pyrogate::edge::server::{Lifecycle, Server};
        let settings = node_settings(std::path::Path::new("/nonexistent"), yaml);
        let mut server = Server::bind(&settings.server, router).await.unwrap();
        if let Some(hold) = hold {
            server = server.with_hold(hold);
        }
        let port = server.local_addr().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run_until(
            async {
                let _ = stopped.await;
            },
            Lifecycle::new(),
        ));
        RunningShell {
            port,
            stop: Some(stop),
        }
    }
}

impl Drop for RunningShell {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends `GET path` on `tcp` (kept alive), not waiting for the answer.
async fn send_get(tcp: &mut TcpStream, path: &str) {
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_global_cap_the_oldest_idle_connection_makes_room_and_a_request_in_flight_is_never_cut()
 {
    let (gate, mut entering) = Gate::new();
    let shell = RunningShell::start(
        "server:\n  http-max-connections: 2\n  http-max-connections-per-client: 0\n",
        gated_router(&gate),
        None,
    )
    .await;
    let port = shell.port;
    // The oldest connection has a request in flight; the second is idle once answered.
    let mut in_flight = connect_from(port, [127, 0, 0, 1]).await;
    send_get(&mut in_flight, "/wait").await;
    entered(&mut entering).await;
    let mut idle = connect_from(port, [127, 0, 0, 1]).await;
    assert_eq!(body_of_get(&mut idle, "/ok").await, "ok");
    // Another client takes the idle one's place, not the busy one's.
    let mut newcomer = connect_from(port, [127, 0, 0, 2]).await;
    send_get(&mut newcomer, "/wait").await;
    entered(&mut entering).await;
    let closed = closed_within(&mut idle, Duration::from_secs(10)).await;
    assert_eq!(closed, Ok(Vec::new()), "the idle one is closed, unanswered");
    // Both places busy: a third client is refused, and nothing in flight is cut.
    let refused = healthz_from(port, [127, 0, 0, 3]).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    gate.let_one_through();
    let answer = read_answer(&mut in_flight).await;
    assert!(answer.ends_with("\r\n\r\nwaited"), "{answer}");
    // Answered, the oldest is idle: it makes room for the third client.
    let mut third = connect_from(port, [127, 0, 0, 3]).await;
    assert_eq!(body_of_get(&mut third, "/ok").await, "ok");
    let closed = closed_within(&mut in_flight, Duration::from_secs(10)).await;
    assert_eq!(closed, Ok(Vec::new()));
    gate.let_one_through();
    let answer = read_answer(&mut newcomer).await;
    assert!(answer.ends_with("\r\n\r\nwaited"), "{answer}");
    drop(shell);
}

/// Holds `GET /poll` as the authority holds a long-poll, until the [`Gate`] lets it through.
struct GatedHold(Gate);

impl pyrogate::edge::server::Hold for GatedHold {
    fn hold(
        &self,
        uri: &axum::http::Uri,
        _headers: &axum::http::HeaderMap,
    ) -> Option<pyrogate::edge::server::Held> {
        if uri.path() != "/poll" {
            return None;
        }
        let gate = self.0.clone();
        Some(Box::pin(async move {
            axum::http::Response::new(bytes::Bytes::from_static(gate.pass().await.as_bytes()))
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_long_poll_is_never_cut_and_its_connection_makes_room_once_answered() {
    let (gate, mut entering) = Gate::new();
    let shell = RunningShell::start(
        "server:\n  http-max-connections: 1\n",
        gated_router(&gate),
        Some(std::sync::Arc::new(GatedHold(gate.clone()))),
    )
    .await;
    let port = shell.port;
    let mut poll = connect_from(port, [127, 0, 0, 1]).await;
    send_get(&mut poll, "/poll").await;
    entered(&mut entering).await;
    let refused = healthz_from(port, [127, 0, 0, 2]).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    gate.let_one_through();
    let answer = read_answer(&mut poll).await;
    assert!(answer.ends_with("\r\n\r\nwaited"), "{answer}");
    // Waiting for its next poll, the connection is idle: a new client gets its place.
    let mut other = connect_from(port, [127, 0, 0, 2]).await;
    assert_eq!(body_of_get(&mut other, "/ok").await, "ok");
    let closed = closed_within(&mut poll, Duration::from_secs(10)).await;
    assert_eq!(closed, Ok(Vec::new()));
    drop(shell);
}

/// The `key=value` of a log line's field (quotes trimmed).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let value = line
        .split(&format!("{key}="))
        .nth(1)?
        .split_whitespace()
        .next()?;
    Some(value.trim_matches('"'))
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_low_open_files_limit_serves_a_new_client_while_another_holds_its_share() {
    let upstream = Upstream::start().await;
    let storage = tempfile::tempdir().unwrap();
    let node = Server::start_with_open_files(
        "ingest",
        256,
        &[
            "ingest",
            "--storage-path",
            storage.path().to_str().unwrap(),
            "--upstream",
            &upstream.url(),
        ],
        &[("RUST_LOG", "info")],
    )
    .await;
    // 256 descriptors: 128 kept back, 128 connections, a sixteenth of them per client.
    let log = node.log();
    let line = log
        .lines()
        .find(|l| l.contains("connection caps lowered"))
        .unwrap_or_else(|| panic!("no warning about the caps:\n{log}"));
    assert_eq!(field(line, "max"), Some("128"), "{line}");
    assert_eq!(field(line, "per_client"), Some("8"), "{line}");
    assert_eq!(field(line, "configured_max"), Some("16384"), "{line}");
    let port: u16 = node.url.rsplit(':').next().unwrap().parse().unwrap();
    // One client opens 300 connections and sends nothing on them: more than the node has
    // descriptors for.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(connect_from(port, [127, 0, 0, 1]).await);
    }
    // The last of them got a place (its own oldest idle ones were closed for it)...
    let mut last = idle.pop().unwrap();
    assert_eq!(body_of_get(&mut last, "/healthz").await, "ok\n");
    // ...and another client's push goes through.
    let agent = Http::new(&node.url).connecting_from([127, 0, 0, 2]);
    let pushed = agent
        .post("/ingest?name=fd.cpu&from=1&until=2")
        .raw("text/plain", "main;work 1\n")
        .send()
        .await;
    assert_eq!(pushed.status, 200, "{}", node.log());
    assert!(
        upstream
            .requests()
            .iter()
            .any(|r| r.path_and_query.contains("fd.cpu")),
        "the push reached the upstream"
    );
}

/// Sends `GET path` on `tcp` (kept alive) and returns the answer's body.
async fn body_of_get(tcp: &mut TcpStream, path: &str) -> String {
    send_get(tcp, path).await;
    let answer = read_answer(tcp).await;
    answer.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// Reads one whole answer (with a `content-length`) on `tcp`, head and body.
async fn read_answer(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .expect("a content-length")
                .trim()
                .parse()
                .unwrap();
            if body.len() >= length {
                return text;
            }
        }
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// The CPUs the calling thread may run on (none where there is no affinity mask to read).
fn cpus_of_this_thread() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{CpuSet, sched_getaffinity};
        let set = sched_getaffinity(None).unwrap();
        (0..CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

/// Each request answers with the serving thread it ran on, that thread's CPUs and the CPUs of
/// the thread its runtime runs blocking work on.
fn where_router() -> axum::Router {
    use axum::routing::get;
    use pyrogate::edge::server::current_worker;
    axum::Router::new().route(
        "/where",
        get(|| async {
            let here = cpus_of_this_thread();
            let blocking = tokio::task::spawn_blocking(cpus_of_this_thread)
                .await
                .unwrap();
            format!("{:?} {here:?} {blocking:?}", current_worker())
        }),
    )
}

/// What `/where` ([`where_router`]) answers on each of `connections` connections to a server
/// shell on `threads` threads of its own placed as `placement`, all opened first and kept open until every one has answered
/// (so the accept loop spreads them), in the order they were opened; the shell is stopped.
async fn where_each(
    threads: usize,
    placement: pyrogate::edge::server::Placement,
    connections: usize,
) -> Vec<String> {
    use pyrogate::edge::server::{Lifecycle, Server};
    let settings = node_settings(std::path::Path::new("/nonexistent"), "");
    let server = Server::bind(&settings.server, where_router())
        .await
        .unwrap()
        .with_workers(threads, placement);
    let port = server.local_addr().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(
        async {
            let _ = stopped.await;
        },
        Lifecycle::new(),
    ));
    let mut open = Vec::new();
    for _ in 0..connections {
        open.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let mut bodies = Vec::new();
    for tcp in &mut open {
        bodies.push(body_of_get(tcp, "/where").await);
    }
    drop(open);
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_evenly_over_the_serving_threads() {
    use pyrogate::edge::server::Placement;
    // Six connections opened in a burst and kept open: two on each thread.
    let mut threads: Vec<String> = where_each(3, Placement::Kernel, 6)
        .await
        .iter()
        .map(|body| body.split(' ').next().unwrap().to_owned())
        .collect();
    threads.sort();
    assert_eq!(
        threads,
        [
            "Some(0)", "Some(0)", "Some(1)", "Some(1)", "Some(2)", "Some(2)"
        ],
        "every request ran on a serving thread, two connections each"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_serving_thread_per_cpu_each_is_bound_to_its_own() {
    use pyrogate::edge::server::Placement;
    let all = cpus_of_this_thread();
    let parallelism = std::thread::available_parallelism().unwrap().get();
    // 0: one per CPU, as an ingest node starts by default.
    let mut got = where_each(0, Placement::OnePerCpu, parallelism).await;
    got.sort();
    let mut expected: Vec<String> = if all.len() >= 2 && parallelism == all.len() {
        // Thread i on the i-th CPU of the set; blocking work anywhere in it.
        all.iter()
            .enumerate()
            .map(|(i, cpu)| format!("Some({i}) [{cpu}] {all:?}"))
            .collect()
    } else {
        // One CPU, or a quota: nothing is bound.
        eprintln!(
            "{} CPUs, parallelism {parallelism}: nothing to bind here",
            all.len()
        );
        (0..parallelism)
            .map(|i| format!("Some({i}) {all:?} {all:?}"))
            .collect()
    };
    // Sorted as `got` is (as text: "Some(10)" before "Some(2)").
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(
        cpus_of_this_thread(),
        all,
        "the caller's threads are not bound"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pinning_off_or_fewer_threads_than_cpus_nothing_is_bound() {
    use pyrogate::edge::server::Placement;
    let all = cpus_of_this_thread();
    let parallelism = std::thread::available_parallelism().unwrap().get();
    for (threads, placement) in [
        (parallelism, Placement::Kernel),
        (parallelism + 1, Placement::OnePerCpu),
    ] {
        for body in where_each(threads, placement, threads).await {
            let (_, sets) = body.split_once(' ').unwrap();
            assert_eq!(
                sets,
                format!("{all:?} {all:?}"),
                "{threads} threads, {placement:?}"
            );
        }
    }
}
