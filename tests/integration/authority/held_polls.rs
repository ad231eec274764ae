//! Held long-polls answered by the server shell before hyper (`edge::server::Hold`), over raw
//! TCP, so what goes over the wire is what is checked: the shell's answer is the route's
//! answer, a connection goes on to hyper for whatever the shell does not take, a client that
//! hangs up frees its place, and the limits (read timeout, allowed hosts) hold.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::*;

async fn connect(app: &Authority) -> TcpStream {
    let addr = app.origin().trim_start_matches("http://").to_owned();
    TcpStream::connect(addr).await.expect("connect")
}

/// One answer read off `conn`: status, headers (lower-case names), body. `buf` keeps what was
/// read past it.
async fn read_answer(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut answer = httparse::Response::new(&mut slots);
        if let Ok(httparse::Status::Complete(head)) = answer.parse(buf) {
            let headers: Vec<(String, String)> = answer
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().expect("a length"));
            let status = answer.code.expect("a status");
            if buf.len() >= head + len {
                let body = buf[head..head + len].to_vec();
                buf.drain(..head + len);
                return (status, headers, body);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "the connection closed; read so far: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn poll(wait: u64, etag: &str) -> String {
    format!(
        "GET /api/revocations?wait={wait} HTTP/1.1\r\nhost: 127.0.0.1\r\nif-none-match: {etag}\r\naccept: */*\r\n\r\n"
    )
}

/// Long-polls the authority counts as held.
async fn held(app: &Authority) -> f64 {
    let text = app.client().get("/metrics").send().await.expect(200).text();
    metric_value(&text, "pyrogate_revocation_long_polls")
}

async fn wait_held(app: &Authority, n: f64) {
    let deadline = Deadline::secs(20, format!("{n} held polls"));
    loop {
        let now = held(app).await;
        if now == n {
            return;
        }
        deadline.tick(|| format!("{now} held")).await;
    }
}

#[tokio::test]
async fn a_held_poll_gets_the_routes_answer_and_the_connection_goes_on_to_hyper() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let key = admin.create_key("held", "Agent", 0).await;
    let mut conn = connect(&app).await;
    let mut buf = Vec::new();
    conn.write_all(poll(30, "\"0\"").as_bytes()).await.unwrap();
    wait_held(&app, 1.0).await;
    admin
        .delete(&format!("/api/keys/{}", key["id"]))
        .send()
        .await
        .expect(204);
    let (status, headers, body) = read_answer(&mut conn, &mut buf).await;
    assert_eq!(status, 200);
    // The same answer the route gives a plain fetch of the new version.
    let plain = app
        .client()
        .get("/api/revocations")
        .send()
        .await
        .expect(200);
    assert_eq!(body, plain.body.to_vec());
    for name in ["etag", "content-type", "cache-control"] {
        assert_eq!(header(&headers, name), plain.header(name), "{name}");
    }
    assert!(header(&headers, "date").is_some_and(|d| d.ends_with(" GMT")));
    wait_held(&app, 0.0).await;

    // The next requests on the same connection: a poll for the new version is held again,
    // and one the shell doesn't answer — sent ahead while the poll is held — is hyper's.
    let etag = header(&headers, "etag").unwrap().to_owned();
    conn.write_all(poll(1, &etag).as_bytes()).await.unwrap();
    wait_held(&app, 1.0).await;
    conn.write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (status, headers, _) = read_answer(&mut conn, &mut buf).await;
    assert_eq!(status, 304, "the wait ended without a change");
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    assert_eq!(header(&headers, "content-length"), None);
    let (status, _, body) = read_answer(&mut conn, &mut buf).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"keys\""));
    // hyper keeps the connection: a poll now is the route's, and answered the same way.
    conn.write_all(poll(0, &etag).as_bytes()).await.unwrap();
    let (status, _, _) = read_answer(&mut conn, &mut buf).await;
    assert_eq!(status, 304);
}

#[tokio::test]
async fn a_client_that_hangs_up_frees_its_place() {
    let app = Authority::start_with("revocations:\n  max-long-polls: 1\n").await;
    let mut conn = connect(&app).await;
    conn.write_all(poll(60, "\"0\"").as_bytes()).await.unwrap();
    wait_held(&app, 1.0).await;
    drop(conn);
    wait_held(&app, 0.0).await;
    // The one place is free again.
    let mut conn = connect(&app).await;
    conn.write_all(poll(60, "\"0\"").as_bytes()).await.unwrap();
    wait_held(&app, 1.0).await;
}

#[tokio::test]
async fn requests_the_shell_does_not_answer_are_the_routers() {
    let app = Authority::start().await;
    let cases: [(&str, u16); 5] = [
        // A body, `Connection: close`, `Expect`: framing and connection headers are hyper's.
        (
            "GET /api/revocations?wait=1 HTTP/1.1\r\nhost: 127.0.0.1\r\nif-none-match: \"0\"\r\ncontent-length: 0\r\n\r\n",
            304,
        ),
        (
            "GET /api/revocations?wait=1 HTTP/1.1\r\nhost: 127.0.0.1\r\nif-none-match: \"0\"\r\nconnection: close\r\n\r\n",
            304,
        ),
        // Not the list in force: answered at once, with the list.
        (&poll(30, "\"41\""), 200),
        // A wait that is not a duration: the route's 400.
        (
            "GET /api/revocations?wait=soon HTTP/1.1\r\nhost: 127.0.0.1\r\nif-none-match: \"0\"\r\n\r\n",
            400,
        ),
        // HTTP/1.0.
        (
            "GET /api/revocations?wait=1 HTTP/1.0\r\nhost: 127.0.0.1\r\nif-none-match: \"0\"\r\n\r\n",
            304,
        ),
    ];
    for (request, expected) in cases {
        let mut conn = connect(&app).await;
        conn.write_all(request.as_bytes()).await.unwrap();
        let (status, _, _) = read_answer(&mut conn, &mut Vec::new()).await;
        assert_eq!(status, expected, "{request:?}");
    }
}

#[tokio::test]
async fn a_host_outside_server_allowed_hosts_is_refused_before_any_hold() {
    let app = Authority::start_with("server:\n  allowed-hosts: pyrogate.example\n").await;
    let mut conn = connect(&app).await;
    conn.write_all(
        b"GET /api/revocations?wait=30 HTTP/1.1\r\nhost: evil.example\r\nif-none-match: \"0\"\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, _, body) = read_answer(&mut conn, &mut Vec::new()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("server.allowed-hosts"));
    // An allowed host is held.
    let mut conn = connect(&app).await;
    conn.write_all(
        b"GET /api/revocations?wait=30 HTTP/1.1\r\nhost: pyrogate.example\r\nif-none-match: \"0\"\r\n\r\n",
    )
    .await
    .unwrap();
    wait_held(&app, 1.0).await;
}

#[tokio::test]
async fn a_head_sent_too_slowly_ends_the_connection() {
    let app = Authority::start_with("server:\n  http-server-read-timeout: 1s\n").await;
    let mut conn = connect(&app).await;
    conn.write_all(b"GET /api/revocations?wait=30 HTTP/1.1\r\nhost: 127.")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection");
    assert!(
        read.is_ok_and(|n| n == 0),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test]
async fn shutdown_closes_connections_between_requests_at_once() {
    let mut app = Authority::start().await;
    // One connection that sent nothing yet, one between two polls.
    let mut idle = connect(&app).await;
    let mut between = connect(&app).await;
    between
        .write_all(poll(1, "\"0\"").as_bytes())
        .await
        .unwrap();
    let (status, _, _) = read_answer(&mut between, &mut Vec::new()).await;
    assert_eq!(status, 304);
    // Under the drain limit (10 s): shutdown did not wait for either connection to time out.
    tokio::time::timeout(Duration::from_secs(8), app.stop())
        .await
        .expect("shutdown waited for idle connections");
    for conn in [&mut idle, &mut between] {
        let mut rest = Vec::new();
        let n = conn.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&rest));
    }
}
