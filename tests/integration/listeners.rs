//! Abuse resistance of every listener (the same server shell serves both roles): a slowloris
//! client is dropped after `server.http-server-read-timeout`, and past the connection limits
//! new connections get an immediate 503 in the errors shape instead of exhausting the
//! process's file descriptors.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limits_new_connections_get_a_503_and_freed_places_are_reused() {
    let storage = tempfile::tempdir().unwrap();
    let node = Node::start(
        storage.path(),
        "server:\n  http-max-connections: 8\n  http-max-connections-per-client: 3\n",
    )
    .await;
    let port = port_of(&node);
    let mut held = Vec::new();
    for _ in 0..3 {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        held.push(tcp);
    }
    // Give the server a moment to admit the three.
    let deadline = Deadline::secs(5, "the fourth connection to be refused");
    let refused = loop {
        let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let got = closed_within(&mut extra, Duration::from_secs(3))
            .await
            .unwrap_or_default();
        if got.starts_with(b"HTTP/1.1 503") {
            break String::from_utf8_lossy(&got).into_owned();
        }
        deadline
            .tick(|| String::from_utf8_lossy(&got).into_owned())
            .await;
    };
    assert!(
        refused.contains(r#"{"errors":["too many connections; retry shortly"]}"#),
        "{refused}"
    );
    // Another client address still gets in (the per-client limit is per address).
    let other = std::net::SocketAddr::from(([127, 0, 0, 2], 0));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(other).unwrap();
    let mut from_other = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    from_other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = closed_within(&mut from_other, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // A freed place is reused (raw TCP: a refused connection is closed under the client's
    // feet, which an HTTP client reports as an error rather than a status).
    held.clear();
    let deadline = Deadline::secs(10, "a freed place to be reused");
    loop {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = tcp
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let got = closed_within(&mut tcp, Duration::from_secs(5))
            .await
            .unwrap_or_default();
        if got.starts_with(b"HTTP/1.1 200") {
            break;
        }
        deadline
            .tick(|| String::from_utf8_lossy(&got).into_owned())
            .await;
    }
}

/// Sends `GET path` on `tcp` (kept alive) and returns the answer's body.
async fn body_of_get(tcp: &mut TcpStream, path: &str) -> String {
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
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
                return body.to_owned();
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
