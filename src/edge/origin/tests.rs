//! The push path's client against a real TCP server that answers from a script: each accepted
//! connection reads whole requests (head and `Content-Length` body) and writes the next
//! scripted answer; an answer marked `close` ends the connection after it is written.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

struct Script {
    answers: Mutex<std::collections::VecDeque<(&'static [u8], bool)>>,
    connections: AtomicUsize,
}

/// A server answering with `answers` in order, across connections; the requests it read
/// (raw bytes) come out of the receiver.
async fn server(
    answers: Vec<(&'static [u8], bool)>,
) -> (OriginPool, Arc<Script>, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new(Script {
        answers: Mutex::new(answers.into()),
        connections: AtomicUsize::new(0),
    });
    let (seen, requests) = mpsc::unbounded_channel();
    let shared = script.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let (script, seen) = (shared.clone(), seen.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(request) = read_request(&mut socket, &mut buf).await else {
                        return;
                    };
                    let _ = seen.send(request);
                    let next = script.answers.lock().unwrap().pop_front();
                    let Some((answer, close)) = next else { return };
                    if socket.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    let origin: http::Uri = format!("http://{addr}").parse().unwrap();
    let tls = crate::edge::tls::client_config(&Default::default()).unwrap();
    let pool = OriginPool::new(&origin, Duration::from_secs(5), tls).unwrap();
    (pool, script, requests)
}

/// One whole request from `socket` (`buf` keeps what was read past it), or `None` at its end.
async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut slots);
        if let Ok(httparse::Status::Complete(head)) = request.parse(buf) {
            let len: usize = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= head + len {
                return Some(buf.drain(..head + len).collect());
            }
        }
        let mut chunk = [0u8; 65536];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn keep_all(_: &str) -> bool {
    true
}

async fn post(pool: &OriginPool, body: &[u8]) -> Result<Answer, PoolError> {
    let content_type = HeaderValue::from_static("text/plain");
    let headers = [(&http::header::CONTENT_TYPE, &content_type)];
    pool.post(
        Post {
            target: "/ingest?name=app.cpu",
            headers,
            body,
        },
        1024,
        keep_all,
    )
    .await
}

/// A `200` with `n` headers besides its `Content-Length`, and `body`.
fn with_extra_headers(n: usize, body: &str) -> &'static [u8] {
    let extra: String = (0..n).map(|i| format!("x-extra-{i}: {i}\r\n")).collect();
    let answer = format!(
        "HTTP/1.1 200 OK\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    Box::leak(answer.into_bytes().into_boxed_slice())
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";

#[tokio::test]
async fn writes_one_request_and_reuses_the_connection() {
    let (pool, script, mut requests) = server(vec![(OK, false), (OK, false)]).await;
    let answer = post(&pool, b"app 1").await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(&answer.body[..], b"ok");
    assert_eq!(answer.headers["content-type"], "text/plain");
    // Framing headers are the pool's business, never handed on.
    assert!(answer.headers.get("content-length").is_none());
    let port = pool.origin.port_u16().unwrap();
    assert_eq!(
        String::from_utf8(requests.recv().await.unwrap()).unwrap(),
        format!(
            "POST /ingest?name=app.cpu HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\napp 1"
        )
    );
    post(&pool, b"app 2").await.unwrap();
    assert!(requests.recv().await.unwrap().ends_with(b"app 2"));
    assert_eq!(script.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_large_body_is_written_whole() {
    let (pool, _, mut requests) = server(vec![(OK, false)]).await;
    let body: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    post(&pool, &body).await.unwrap();
    assert!(requests.recv().await.unwrap().ends_with(&body));
}

#[tokio::test]
async fn chunked_answers_are_decoded_and_their_trailers_dropped() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nx-trailer: 1\r\n\r\n";
    let (pool, script, _requests) = server(vec![(answer, false), (OK, false)]).await;
    assert_eq!(&post(&pool, b"x").await.unwrap().body[..], b"abcdefg");
    assert_eq!(&post(&pool, b"x").await.unwrap().body[..], b"ok");
    assert_eq!(script.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let answer: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    let (pool, _, _requests) = server(vec![(answer, false)]).await;
    let answer = post(&pool, b"x").await.unwrap();
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.body.is_empty());
}

#[tokio::test]
async fn a_body_without_length_runs_to_the_close_and_the_connection_is_not_reused() {
    let until_close: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\n\r\nbroken";
    let (pool, script, _requests) = server(vec![(until_close, true), (OK, false)]).await;
    let answer = post(&pool, b"x").await.unwrap();
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(&answer.body[..], b"broken");
    post(&pool, b"x").await.unwrap();
    assert_eq!(script.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connection_close_and_http_1_0_end_the_connection() {
    let close: &[u8] =
        b"HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n";
    let old: &[u8] = b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
    let (pool, script, _requests) = server(vec![(close, false), (old, false), (OK, false)]).await;
    for _ in 0..3 {
        post(&pool, b"x").await.unwrap();
    }
    assert_eq!(script.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let (pool, script, mut requests) = server(vec![(OK, true), (OK, false)]).await;
    post(&pool, b"first").await.unwrap();
    // The server has closed its end; let the event loop take in the end of stream.
    requests.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answer = post(&pool, b"second").await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert!(requests.recv().await.unwrap().ends_with(b"second"));
    assert_eq!(script.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_connection_closed_by_the_upstream_is_let_go_even_if_never_taken_again() {
    // Two at once open two connections; the upstream then closes one of them.
    let (pool, _, mut requests) = server(vec![(OK, true), (OK, false), (OK, false)]).await;
    let (a, b) = tokio::join!(post(&pool, b"a"), post(&pool, b"b"));
    a.unwrap();
    b.unwrap();
    requests.recv().await.unwrap();
    requests.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // One more exchange, on the live one: the dead one — oldest or newest — is gone after it
    // (without the look at the oldest, it stayed whenever it was the oldest).
    post(&pool, b"c").await.unwrap();
    assert_eq!(pool.idle.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_list_of_equal_lengths_is_one_length_and_many_headers_are_fine() {
    let listed: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok";
    let many = with_extra_headers(90, "ok");
    let (pool, _, _requests) = server(vec![(listed, false), (many, false)]).await;
    assert_eq!(&post(&pool, b"x").await.unwrap().body[..], b"ok");
    let answer = post(&pool, b"x").await.unwrap();
    assert_eq!(answer.headers.len(), 90);
}

#[tokio::test]
async fn a_connection_with_bytes_past_the_answer_is_not_reused() {
    let extra: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
    let (pool, script, _requests) = server(vec![(extra, false), (OK, false)]).await;
    assert_eq!(&post(&pool, b"x").await.unwrap().body[..], b"ok");
    post(&pool, b"x").await.unwrap();
    assert_eq!(script.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn broken_answers_are_errors_that_name_the_problem() {
    let cases: [(&'static [u8], &str); 8] = [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1 answer"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            "conflicting Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: many\r\n\r\n",
            "not a number",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok",
            "conflicting Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n",
            "over 1024 bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n801\r\n",
            "over 1024 bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "chunk size is malformed",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "switched protocols",
        ),
    ];
    for (answer, why) in cases {
        let (pool, _, _requests) = server(vec![(answer, false)]).await;
        let err = post(&pool, b"x").await.unwrap_err().to_string();
        assert!(err.contains(why), "{err:?} should say {why:?}");
    }
}

#[tokio::test]
async fn an_answer_cut_short_is_an_exchange_error() {
    let cut: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort";
    let (pool, _, _requests) = server(vec![(cut, true)]).await;
    let err = post(&pool, b"x").await.unwrap_err();
    assert!(matches!(err, PoolError::Exchange(_)), "{err:?}");
    assert!(err.to_string().contains("mid-answer"), "{err}");
    // A server that closes without a word is told apart.
    let (pool, _, _requests) = server(vec![]).await;
    let err = post(&pool, b"x").await.unwrap_err().to_string();
    assert!(err.contains("without answering"), "{err}");
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin: http::Uri = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(listener);
    let tls = crate::edge::tls::client_config(&Default::default()).unwrap();
    let pool = OriginPool::new(&origin, Duration::from_secs(5), tls).unwrap();
    let err = post(&pool, b"x").await.unwrap_err();
    assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
}

#[test]
fn lengths_are_written_in_decimal() {
    for n in [0, 7, 10, 4096, 1 << 20, usize::MAX] {
        assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
    }
}

#[tokio::test]
async fn an_answer_with_over_a_hundred_headers_is_refused() {
    let many = with_extra_headers(101, "");
    let (pool, _, _requests) = server(vec![(many, false)]).await;
    let err = post(&pool, b"x").await.unwrap_err().to_string();
    assert!(err.contains("over 100 headers"), "{err}");
}
