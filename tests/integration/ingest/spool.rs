//! The spool: while the upstream can't take pushes they wait on disk, and reach it exactly
//! once when it is back — across a restart of the node too — replayed many at a time while
//! live pushes go straight through. A full spool and an oversized body are refused with a
//! clear status.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{Deadline, Node, Recorded, Resp, Upstream, paths};

fn body(n: usize) -> Bytes {
    Bytes::from(format!("push number {n:02}\n{}", "x".repeat(n * 7)))
}

fn path(n: usize) -> String {
    format!("/ingest?name=spooled.cpu&from=1&until=2&n={n}")
}

async fn push(node: &Node, n: usize) -> Resp {
    node.client()
        .post(&path(n))
        .headers(&[
            ("content-type", "text/plain"),
            ("x-scope-orgid", "tenant-s"),
        ])
        .body(body(n))
        .send()
        .await
}

/// The `n` of a push's path.
fn number(got: &Recorded) -> usize {
    let (_, n) = got
        .path_and_query
        .rsplit_once("&n=")
        .unwrap_or_else(|| panic!("not a numbered push: {}", got.path_and_query));
    n.parse().expect("push number")
}

/// Asserts the accepted pushes are exactly `0..n`, each once, in any order (the replay sends
/// many at a time).
fn assert_exactly_once(accepted: &[Recorded], n: usize) {
    let mut accepted: Vec<&Recorded> = accepted.iter().collect();
    accepted.sort_by_key(|r| number(r));
    let expected: Vec<String> = (0..n).map(path).collect();
    let got: Vec<&str> = accepted.iter().map(|r| r.path_and_query.as_str()).collect();
    assert_eq!(got, expected, "each push once");
    for (i, got) in accepted.into_iter().enumerate() {
        assert_eq!(got.body, body(i), "body of push {i}");
        assert_eq!(got.header("content-type"), Some("text/plain"));
        assert_eq!(got.tenant(), Some("tenant-s"));
    }
}

/// Waits for `n` accepted pushes, then a little longer for any duplicate still in flight:
/// until the node reports an empty spool.
async fn drained(upstream: &Upstream, node: &Node, n: usize) -> Vec<Recorded> {
    upstream.wait_accepted(n, 30).await;
    let deadline = Deadline::secs(10, "the spool to drain");
    loop {
        let entries = node.metric("pyrogate_spool_entries").await;
        if entries == 0.0 {
            break;
        }
        deadline.tick(|| format!("{entries} entries")).await;
    }
    upstream.accepted()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_made_while_the_upstream_is_down_arrive_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    upstream.set_down(true);
    let node = Node::start(dir.path(), &format!("upstream: {}\n", upstream.url())).await;
    const N: usize = 20;
    for n in 0..N {
        let r = push(&node, n).await.expect(200);
        assert_eq!(r.header("pyrogate-spooled"), Some("true"), "push {n}");
    }
    assert!(upstream.accepted().is_empty());
    assert_eq!(node.metric("pyrogate_spool_entries").await, N as f64);

    upstream.set_down(false);
    let accepted = drained(&upstream, &node, N).await;
    assert_exactly_once(&accepted, N);

    // The spool is empty again: the next push goes straight through.
    let r = push(&node, N).await.expect(200);
    assert_eq!(r.header("pyrogate-spooled"), None);
    assert_exactly_once(&upstream.wait_accepted(N + 1, 10).await, N + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_accepted_is_lost_when_the_node_restarts_while_the_upstream_is_stopped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut upstream = Upstream::start().await;
    // Really gone: connections are refused.
    upstream.stop().await;
    let node = Node::start(dir.path(), &format!("upstream: {}\n", upstream.url())).await;
    for n in 0..10 {
        let r = push(&node, n).await.expect(200);
        assert_eq!(r.header("pyrogate-spooled"), Some("true"));
    }

    let node = node.restart().await;
    for n in 10..20 {
        let r = push(&node, n).await.expect(200);
        assert_eq!(r.header("pyrogate-spooled"), Some("true"));
    }
    assert_eq!(node.metric("pyrogate_spool_entries").await, 20.0);

    upstream.resume().await;
    let accepted = drained(&upstream, &node, 20).await;
    assert_exactly_once(&accepted, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_and_names_the_setting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    upstream.set_down(true);
    let node = Node::start(
        dir.path(),
        &format!(
            "upstream: {}\ningest:\n  spool:\n    max-bytes: 1000\n",
            upstream.url()
        ),
    )
    .await;
    let http = node.client();
    let mut accepted = 0;
    let full = loop {
        let r = http
            .post("/ingest?name=full.cpu")
            .body(vec![b'p'; 200])
            .send()
            .await;
        if r.status == 200 {
            assert_eq!(r.header("pyrogate-spooled"), Some("true"));
            accepted += 1;
            assert!(accepted < 10, "1000 bytes can't hold {accepted} pushes");
            continue;
        }
        break r.expect(503);
    };
    assert!(accepted >= 1, "the first push fits");
    let message = full.errors().join(" ");
    assert!(
        message.contains("spool is full") && message.contains("ingest.spool.max-bytes"),
        "{message}"
    );

    // Nothing accepted was dropped: when the upstream is back, every spooled push arrives.
    upstream.set_down(false);
    let delivered = drained(&upstream, &node, accepted).await;
    assert_eq!(delivered.len(), accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_body_size_is_413_with_or_without_a_content_length() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    let node = Node::start(
        dir.path(),
        &format!(
            "upstream: {}\ningest:\n  max-body-size: 1024\n",
            upstream.url()
        ),
    )
    .await;
    let http = node.client();
    let url = "/ingest?name=big.cpu";
    http.post(url)
        .body(vec![b'a'; 1024])
        .send()
        .await
        .expect(200);
    let r = http
        .post(url)
        .body(vec![b'a'; 1025])
        .send()
        .await
        .expect(413);
    assert!(
        r.errors().join(" ").contains("ingest.max-body-size"),
        "{}",
        r.text()
    );

    // Chunked, so the size is only known while reading.
    let addr = node.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let chunk = "b".repeat(600);
    let request = format!(
        "POST /ingest?name=big.cpu HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    // The node may close as soon as it has answered; what arrived before that is the answer.
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Deadline::secs(10, "the answer to a chunked oversized push");
    loop {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
            Err(_) => {
                deadline
                    .tick(|| String::from_utf8_lossy(&response).into_owned())
                    .await
            }
        }
    }
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 413"),
        "chunked oversized push: {response}"
    );

    let seen = upstream.wait_accepted(1, 10).await;
    assert_eq!(seen.len(), 1, "only the push within the limit");
    assert_eq!(seen[0].body.len(), 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_pushes_answered_429_401_or_403_are_retried_until_delivered_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    upstream.set_down(true);
    let node = Node::start(dir.path(), &format!("upstream: {}\n", upstream.url())).await;
    for n in 0..3 {
        let r = push(&node, n).await.expect(200);
        assert_eq!(r.header("pyrogate-spooled"), Some("true"), "push {n}");
    }
    // The burst after an outage: rate limited (honouring Retry-After), then a credentials
    // hiccup on the upstream's side, then it takes everything.
    upstream.script(&[(429, Some("1")), (401, None), (403, None), (429, None)]);
    upstream.set_down(false);
    let accepted = drained(&upstream, &node, 3).await;
    assert_exactly_once(&accepted, 3);
    assert!(node.metric("pyrogate_spool_retries_total").await >= 4.0);
    assert_eq!(node.metric("pyrogate_spool_dead_letters").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_push_the_upstream_refuses_for_good_is_kept_aside_with_its_reason_not_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    upstream.set_down(true);
    let node = Node::start(dir.path(), &format!("upstream: {}\n", upstream.url())).await;
    push(&node, 0).await.expect(200);
    upstream.script(&[(400, None)]);
    upstream.set_down(false);
    let deadline = Deadline::secs(20, "the refused push to be dead-lettered");
    while node.metric("pyrogate_spool_dead_letters").await < 1.0 {
        deadline.tick(String::new).await;
    }
    assert_eq!(node.metric("pyrogate_spool_entries").await, 0.0);
    assert!(
        upstream.accepted().is_empty(),
        "{:?}",
        paths(&upstream.accepted())
    );
    let dead = dir.path().join("spool/dead");
    let files: Vec<String> = std::fs::read_dir(&dead)
        .expect("spool/dead")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    let req = files
        .iter()
        .find(|f| f.ends_with(".req"))
        .expect("the entry");
    let reason =
        std::fs::read_to_string(dead.join(req.replace(".req", ".reason"))).expect("reason");
    assert!(reason.contains("400"), "{reason}");
    let kept = std::fs::read(dead.join(req)).expect("kept entry");
    assert!(
        kept.windows(body(0).len()).any(|w| w == body(0)),
        "the push's bytes are still there"
    );
    assert_eq!(node.ready().await["spoolDeadLetters"], serde_json::json!(1));
    // The queue is not blocked: the next push goes straight through.
    let r = push(&node, 1).await.expect(200);
    assert_eq!(r.header("pyrogate-spooled"), None);
}

/// Spools `n` pushes while the upstream answers 503.
async fn spool_while_down(upstream: &Upstream, node: &Node, n: usize) {
    upstream.set_down(true);
    for i in 0..n {
        let r = push(node, i).await.expect(200);
        assert_eq!(r.header("pyrogate-spooled"), Some("true"), "push {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_has_many_pushes_in_flight_against_a_slow_upstream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    let node = Node::start(dir.path(), &format!("upstream: {}\n", upstream.url())).await;
    const N: usize = 40;
    spool_while_down(&upstream, &node, N).await;
    // Each answer takes a while: one push per round trip would hold one connection at a time.
    upstream.set_delay(Duration::from_millis(100));
    upstream.set_down(false);
    let accepted = drained(&upstream, &node, N).await;
    assert_exactly_once(&accepted, N);
    assert!(
        upstream.max_in_flight() > 1,
        "the replay sent one push at a time"
    );
    assert!(node.metric("pyrogate_spool_replayed_total").await >= N as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_push_goes_straight_to_the_upstream_while_a_backlog_drains() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    // One replayed push at a time, each answered slowly: the backlog lasts seconds.
    let node = Node::start(
        dir.path(),
        &format!(
            "upstream: {}\ningest:\n  spool:\n    replay-concurrency: 1\n",
            upstream.url()
        ),
    )
    .await;
    const N: usize = 30;
    spool_while_down(&upstream, &node, N).await;
    upstream.set_delay(Duration::from_millis(300));
    upstream.set_down(false);
    // Once the replay has found the upstream up again...
    let deadline = Deadline::secs(20, "the first replayed push");
    while node.metric("pyrogate_spool_replayed_total").await < 1.0 {
        deadline.tick(String::new).await;
    }
    // ...a new push is forwarded, not queued behind the backlog.
    let r = push(&node, N).await.expect(200);
    assert_eq!(r.header("pyrogate-spooled"), None, "forwarded, not spooled");
    let waiting = node.metric("pyrogate_spool_entries").await;
    assert!(waiting > 0.0, "the backlog was still draining");
    let ready = node.ready().await;
    assert!(ready["spool"]["entries"].as_u64().is_some(), "{ready}");
    upstream.set_delay(Duration::ZERO);
    let accepted = drained(&upstream, &node, N + 1).await;
    assert_exactly_once(&accepted, N + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_pauses_the_whole_replay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    let node = Node::start(dir.path(), &format!("upstream: {}\n", upstream.url())).await;
    spool_while_down(&upstream, &node, 5).await;
    let before = upstream.requests().len();
    upstream.script(&[(429, Some("2"))]);
    upstream.set_down(false);
    let accepted = drained(&upstream, &node, 5).await;
    assert_exactly_once(&accepted, 5);
    let replay = &upstream.requests()[before..];
    let limited = replay
        .iter()
        .position(|r| r.status.as_u16() == 429)
        .expect("the 429");
    // The replay starts with one push in flight, so nothing was sent beside the limited one,
    // and nothing after it until Retry-After had passed.
    assert_eq!(limited, 0, "{:?}", paths(replay));
    for later in &replay[1..] {
        let waited = later.at.duration_since(replay[0].at);
        assert!(
            waited >= Duration::from_secs(2),
            "a push came {waited:?} after the 429 that asked for 2 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_whose_answer_times_out_reaches_a_slow_upstream_at_most_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    // The upstream answers 1.5 x the node's timeout late.
    let node = Node::start(
        dir.path(),
        &format!("upstream:\n  url: {}\n  timeout: 1s\n", upstream.url()),
    )
    .await;
    upstream.set_delay(Duration::from_millis(1500));
    const N: usize = 3;
    for i in 0..N {
        let r = push(&node, i).await.expect(200);
        assert_eq!(r.header("pyrogate-spooled"), Some("true"), "push {i}");
    }
    let deadline = Deadline::secs(30, "the spool to drain");
    loop {
        let entries = node.metric("pyrogate_spool_entries").await;
        if entries == 0.0 {
            break;
        }
        deadline.tick(|| format!("{entries} entries")).await;
    }
    let received = upstream.requests();
    for i in 0..N {
        let times = received.iter().filter(|r| number(r) == i).count();
        assert!(
            (1..=2).contains(&times),
            "push {i} reached the upstream {times} times: {:?}",
            paths(&received)
        );
    }
    assert!(
        node.metric("pyrogate_spool_possible_duplicates_total")
            .await
            >= 1.0
    );
}

/// An upstream that reads each request whole, then closes the connection without answering: it
/// crashed between ingesting a push and answering it.
async fn hanging_up_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + length {
                            // The whole push is in; hang up instead of answering.
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_broken_after_the_push_counts_as_a_possible_duplicate_a_refused_one_does_not()
{
    // Refused: nothing listens on the port, so nothing of the push reached anyone.
    let dir = tempfile::tempdir().expect("temp dir");
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("address"))
    };
    let node = Node::start(dir.path(), &format!("upstream: {refused}\n")).await;
    let r = push(&node, 0).await.expect(200);
    assert_eq!(r.header("pyrogate-spooled"), Some("true"));
    // Let the replay try it a few times.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        node.metric("pyrogate_spool_possible_duplicates_total")
            .await,
        0.0,
        "a refused connection delivered nothing"
    );
    drop(node);

    // Hung up on after the whole push was written: the upstream may have it.
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, upstream) = hanging_up_upstream().await;
    let node = Node::start(dir.path(), &format!("upstream: {url}\n")).await;
    let r = push(&node, 1).await.expect(200);
    assert_eq!(r.header("pyrogate-spooled"), Some("true"));
    assert!(
        node.metric("pyrogate_spool_possible_duplicates_total")
            .await
            >= 1.0,
        "a push cut off before its answer may have been ingested"
    );
    upstream.abort();
}
