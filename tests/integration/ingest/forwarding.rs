//! What reaches the upstream: the push byte for byte, the agent's protocol headers, the key's
//! tenant — and never the agent's credentials.

use bytes::Bytes;
use pyrogate::node::ingest::ROUTES;

use crate::harness::{Authority, Node, Upstream, basic, bearer, decisions, paths, plane};

/// Bytes that are not text and differ per call: a pprof-like gzip stream header, then noise.
fn profile_bytes(seed: u8, len: usize) -> Bytes {
    let mut body = vec![0x1f, 0x8b, 0x08, 0x00];
    body.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    Bytes::from(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_the_upstream_byte_for_byte_with_the_keys_tenant_and_no_credentials() {
    let p = plane().await;
    let (_, key) = p
        .authority
        .new_key("checkout", "Agent", Some("team-a"))
        .await;
    let body = profile_bytes(7, 4096);
    let path = "/push.v1.PusherService/Push?x=1&y=%20two";
    let auth = bearer(&key);
    let r = p
        .http
        .post(path)
        .headers(&[
            ("authorization", &auth),
            ("cookie", "pyrogate_session=secret-session; other=1"),
            ("content-type", "application/proto"),
            ("content-encoding", "gzip"),
            ("connect-protocol-version", "1"),
            ("connect-timeout-ms", "10000"),
            ("x-scope-orgid", "someone-else"),
            ("grpc-metadata-x-scope-orgid", "someone-else"),
            ("connect-x-scope-orgid", "someone-else"),
            ("x-custom-header", "stays-here"),
        ])
        .body(body.clone())
        .send()
        .await
        .expect(200);
    assert_eq!(r.header("content-type"), Some("application/proto"));
    assert_eq!(r.header("pyrogate-spooled"), None, "delivered, not spooled");

    let seen = p.upstream.wait_accepted(1, 10).await;
    assert_eq!(seen.len(), 1, "{:?}", paths(&seen));
    let got = &seen[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path_and_query, path);
    assert_eq!(got.body, body, "the exact bytes");
    assert_eq!(got.header("content-type"), Some("application/proto"));
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(got.header("connect-protocol-version"), Some("1"));
    assert_eq!(got.header("connect-timeout-ms"), Some("10000"));
    // Only named protocol headers pass: no prefix can smuggle a tenant.
    assert_eq!(got.header("grpc-metadata-x-scope-orgid"), None);
    assert_eq!(got.header("connect-x-scope-orgid"), None);
    assert_eq!(
        got.headers
            .get_all("x-scope-orgid")
            .iter()
            .collect::<Vec<_>>(),
        ["team-a"],
        "the key's tenant replaces the agent's X-Scope-OrgID"
    );
    for never in ["authorization", "cookie", "x-custom-header"] {
        assert!(
            got.headers.get(never).is_none(),
            "{never} was forwarded: {:?}",
            got.headers
        );
    }
    let raw = format!("{:?}", got.headers);
    assert!(!raw.contains(&key) && !raw.contains("secret-session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_route_is_forwarded_to_the_same_path() {
    let p = plane().await;
    let (_, key) = p.authority.new_key("all-routes", "Agent", Some("t1")).await;
    let auth = bearer(&key);
    let routes: Vec<String> = ROUTES
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{r}?name=app{i}.cpu&from=1&until=2"))
        .collect();
    assert_eq!(routes.len(), 4);
    for (i, route) in routes.iter().enumerate() {
        p.http
            .post(route)
            .headers(&[
                ("authorization", &auth),
                ("content-type", "application/octet-stream"),
            ])
            .body(profile_bytes(i as u8, 100 + i))
            .send()
            .await
            .expect(200);
    }
    let seen = p.upstream.wait_accepted(4, 10).await;
    assert_eq!(paths(&seen), routes);
    for (i, got) in seen.iter().enumerate() {
        assert_eq!(got.body, profile_bytes(i as u8, 100 + i));
        assert_eq!(got.tenant(), Some("t1"));
        assert!(got.header("authorization").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_the_key_as_password_works_and_is_not_forwarded() {
    let p = plane().await;
    let (_, key) = p
        .authority
        .new_key("python-app", "Agent", Some("grafana-123"))
        .await;
    let auth = basic("grafana-123", &key);
    p.http
        .post("/ingest?name=py.cpu&format=pprof")
        .headers(&[("authorization", &auth)])
        .body(profile_bytes(1, 64))
        .send()
        .await
        .expect(200);
    let seen = p.upstream.wait_accepted(1, 10).await;
    assert_eq!(seen[0].tenant(), Some("grafana-123"));
    assert!(seen[0].header("authorization").is_none());
    assert_eq!(seen[0].body, profile_bytes(1, 64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_readonly_and_revoked_keys_are_refused_and_nothing_reaches_the_upstream() {
    let p = plane().await;
    let (_, reader) = p
        .authority
        .new_key("dashboards", "ReadOnly", Some("t"))
        .await;
    let (revoked_id, revoked) = p.authority.new_key("old-agent", "Agent", Some("t")).await;
    let url = "/ingest?name=app.cpu";

    // Valid before the deletion.
    let auth = bearer(&revoked);
    p.http
        .post(url)
        .headers(&[("authorization", &auth)])
        .body("before")
        .send()
        .await
        .expect(200);
    p.upstream.wait_accepted(1, 10).await;

    p.authority.delete_key(revoked_id).await;
    p.node
        .wait_synced(p.authority.revocations_version().await)
        .await;

    let missing = p.http.post(url).body("no key").send().await.expect(401);
    assert!(
        missing
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{:?}",
        missing.headers
    );
    let auth = bearer(&reader);
    let forbidden = p
        .http
        .post(url)
        .headers(&[("authorization", &auth)])
        .body("read only")
        .send()
        .await
        .expect(403);
    assert!(
        forbidden.errors().join(" ").contains("role"),
        "{}",
        forbidden.text()
    );
    let auth = bearer(&revoked);
    let refused = p
        .http
        .post(url)
        .headers(&[("authorization", &auth)])
        .body("revoked")
        .send()
        .await
        .expect(401);
    assert!(
        refused.errors().join(" ").contains("revoked"),
        "{}",
        refused.text()
    );
    let auth = basic("t", &revoked);
    p.http
        .post(url)
        .headers(&[("authorization", &auth)])
        .body("revoked, basic")
        .send()
        .await
        .expect(401);

    assert_eq!(p.node.metric(&decisions("refused", "revoked")).await, 2.0);
    assert_eq!(
        paths(&p.upstream.requests()),
        ["/ingest?name=app.cpu"],
        "only the push made before the deletion"
    );
    assert_eq!(p.upstream.requests()[0].body, "before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_off_anyone_may_push_and_the_agents_tenant_passes_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    // The default: auth.ingestion.enabled is false, and no authority is needed.
    let node = Node::start(
        &dir.path().join("node"),
        &format!("upstream: {}\n", upstream.url()),
    )
    .await;
    node.client()
        .post("/ingest?name=a.cpu")
        .headers(&[
            ("x-scope-orgid", "agent-picked"),
            ("content-type", "text/plain"),
        ])
        .body("foo;bar 1\n")
        .send()
        .await
        .expect(200);
    node.client()
        .post("/ingest?name=b.cpu")
        .headers(&[
            ("authorization", "Bearer not-even-a-token"),
            ("cookie", "c=1"),
        ])
        .body("foo;baz 2\n")
        .send()
        .await
        .expect(200);
    let seen = upstream.wait_accepted(2, 10).await;
    assert_eq!(seen[0].tenant(), Some("agent-picked"));
    assert_eq!(seen[0].header("content-type"), Some("text/plain"));
    assert_eq!(seen[0].body, "foo;bar 1\n");
    assert_eq!(seen[1].tenant(), None, "no tenant given, none configured");
    assert!(seen[1].header("authorization").is_none());
    assert!(seen[1].header("cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_a_tenant_gets_tenant_default_or_no_header() {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = Authority::on_system_clock().await;
    let upstream = Upstream::start().await;
    let (_, key) = authority.new_key("no-tenant", "Agent", None).await;
    // A push that tries to pick its own tenant.
    let push = |node: &Node| {
        let http = node.client();
        let key = key.clone();
        async move {
            http.post("/ingest?name=a.cpu")
                .bearer(&key)
                .header("x-scope-orgid", "sneaky")
                .body("x 1\n")
                .send()
                .await
                .expect(200)
        }
    };

    let plain = Node::with_authority(&dir.path().join("a"), &authority, &upstream.url()).await;
    push(&plain).await;
    let seen = upstream.wait_accepted(1, 10).await;
    assert_eq!(
        seen[0].tenant(),
        None,
        "with auth on, the agent can't pick a tenant"
    );

    let defaulted = Node::start(
        &dir.path().join("b"),
        &format!(
            "authority-url: {}\nupstream: {}\ntenant:\n  default: fallback\nauth:\n  ingestion:\n    enabled: true\n{}",
            authority.origin(),
            upstream.url(),
            authority.trust_yaml()
        ),
    )
    .await;
    defaulted
        .wait_synced(authority.revocations_version().await)
        .await;
    push(&defaulted).await;
    let seen = upstream.wait_accepted(2, 10).await;
    assert_eq!(seen[1].tenant(), Some("fallback"));
}

/// An upstream that answers one request per connection and then hangs up, without saying
/// `Connection: close`: every connection the node keeps for reuse is dead by the time it is
/// taken again. Records each request body it answered.
async fn one_shot_upstream() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    scripted_upstream(listener, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
}

/// [`one_shot_upstream`] on `listener`, answering every request with `answer`.
fn scripted_upstream(
    listener: tokio::net::TcpListener,
    answer: &'static [u8],
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let Ok(n) = tcp.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(buf[head_end..head_end + length].to_vec());
                let _ = tcp.write_all(answer).await;
                // Hang up without a word.
            });
        }
    });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_an_upstream_that_hangs_up_after_every_answer_all_arrive_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, bodies) = one_shot_upstream().await;
    let node = Node::start(&dir.path().join("node"), &format!("upstream: {url}\n")).await;
    let sent: Vec<String> = (0..40).map(|i| format!("app;push{i} 1\n")).collect();
    let mut spooled = 0;
    for body in &sent {
        let r = node
            .client()
            .post("/ingest?name=a.cpu")
            .body(body.clone())
            .send()
            .await
            .expect(200);
        spooled += usize::from(r.header("pyrogate-spooled").is_some());
    }
    // The node sees the hang-up on an idle connection and takes a new one (or sends again a
    // push the dead one never took), so pushes go straight through. Only a hang-up racing a
    // push already written can send one to the spool; without those checks ~10 % did.
    assert!(
        spooled <= 2,
        "{spooled} of {} pushes were spooled",
        sent.len()
    );
    // A push written to a connection just hung up on may be spooled and replayed; every one
    // must arrive, none twice.
    let deadline = crate::harness::Deadline::secs(20, "every push to reach the upstream");
    while bodies.lock().unwrap().len() < sent.len() {
        deadline
            .tick(|| format!("{} of {}", bodies.lock().unwrap().len(), sent.len()))
            .await;
    }
    let mut got: Vec<String> = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    got.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(got, want);
}

/// An answer that breaks HTTP framing: two different lengths.
const UNREADABLE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nok";

/// An upstream that took a push and answered unreadably may have it: the agent gets a 502
/// saying so, and nothing is spooled to be sent again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_answer_is_a_502_and_the_push_is_not_spooled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (url, bodies) = scripted_upstream(listener, UNREADABLE);
    let node = Node::start(&dir.path().join("node"), &format!("upstream: {url}\n")).await;
    let r = node
        .client()
        .post("/ingest?name=a.cpu")
        .body("app;once 1\n")
        .send()
        .await
        .expect(502);
    assert!(r.header("pyrogate-spooled").is_none());
    assert!(
        r.errors()[0].contains("could not be read") && r.errors()[0].contains("not spooled"),
        "{:?}",
        r.errors()
    );
    assert_eq!(node.metric("pyrogate_spool_entries").await, 0.0);
    assert_eq!(bodies.lock().unwrap().len(), 1);
}

/// A spooled push whose replay is answered unreadably is kept aside with the reason, not
/// replayed for ever (each replay would hand the upstream the same push again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_push_answered_unreadably_is_dead_lettered_not_replayed() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The upstream's port, free while the push is made: it is spooled.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let node = Node::start(&dir.path().join("node"), &format!("upstream: {url}\n")).await;
    let r = node
        .client()
        .post("/ingest?name=a.cpu")
        .body("app;spooled 1\n")
        .send()
        .await
        .expect(200);
    assert_eq!(r.header("pyrogate-spooled"), Some("true"));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the upstream's port again");
    let (_, bodies) = scripted_upstream(listener, UNREADABLE);
    let deadline = crate::harness::Deadline::secs(20, "the push to be dead-lettered");
    loop {
        let dead = node.metric("pyrogate_spool_dead_letters").await;
        if dead == 1.0 {
            break;
        }
        deadline.tick(|| format!("{dead} dead letters")).await;
    }
    assert_eq!(node.metric("pyrogate_spool_entries").await, 0.0);
    assert_eq!(bodies.lock().unwrap().len(), 1, "replayed more than once");
}
