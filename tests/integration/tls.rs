//! TLS on every hop, with a throwaway CA per test ([`Pki`]) and real TLS servers on loopback:
//! a node serving HTTPS in front of an HTTPS upstream that gets the node's own credentials and
//! never the agent's key; an upstream the node must not trust gets nothing and the push waits
//! in the spool; an authority over TLS with and without client certificates; certificate files
//! rotated under a running node; bad TLS files refused at start-up by key name.

use std::sync::Arc;

use base64::Engine as _;
use pyrogate::config::{Layers, Settings};
use pyrogate::node::IngestNode;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::*;

const PUSH: &str = "/ingest?name=tls.cpu&format=folded";

fn node_yaml(authority: &str, extra: &str) -> String {
    format!("authority-url: {authority}\nauth:\n  ingestion:\n    enabled: true\n{extra}")
}

fn serving(files: &CertFiles) -> String {
    format!(
        "server:\n  http-tls-cert-path: {:?}\n  http-tls-key-path: {:?}\n",
        files.cert, files.key
    )
}

#[tokio::test]
async fn a_push_over_https_reaches_an_https_upstream_with_the_nodes_credentials_and_never_the_agents_key()
 {
    let pki = Pki::new("tls");
    let upstream = Upstream::start_tls(&pki.server("upstream")).await;
    let authority = Authority::on_system_clock().await;
    let (_, key) = authority.new_key("agent", "Agent", Some("team-a")).await;
    let storage = tempfile::tempdir().unwrap();
    let node = Node::start(
        storage.path(),
        &node_yaml(
            &authority.origin(),
            &format!(
                "{}{}upstream:\n  url: {}\n  tls-ca-path: {:?}\n  basic-auth-username: \"123456\"\n  basic-auth-password: glc_cloud_token\n",
                authority.trust_yaml(),
                serving(&pki.server("node")),
                upstream.url(),
                pki.ca_path()
            ),
        ),
    )
    .await;
    assert!(node.url.starts_with("https://"), "{}", node.url);
    let http = Http::trusting(&node.url, &pki.ca_path(), None);
    wait_synced(
        &http,
        authority.revocations_version().await,
        Deadline::secs(20, "the TLS node to sync"),
        String::new,
    )
    .await;

    let r = http
        .post(PUSH)
        .header("authorization", &basic("team-a", &key))
        .body("a;b 1\n")
        .send()
        .await
        .expect(200);
    assert_eq!(r.header("pyrogate-spooled"), None, "delivered, not spooled");
    let got = upstream.wait_accepted(1, 10).await;
    let cloud = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("123456:glc_cloud_token")
    );
    assert_eq!(got[0].header("authorization"), Some(cloud.as_str()));
    assert_eq!(got[0].tenant(), Some("team-a"));
    assert_eq!(got[0].body, "a;b 1\n");
    for (name, value) in &got[0].headers {
        let value = value.to_str().unwrap_or_default();
        assert!(
            !value.contains(&key),
            "the agent's key reached the upstream in {name}"
        );
    }

    // Plain HTTP to the TLS listener gets no HTTP answer.
    let port: u16 = node.url.rsplit(':').next().unwrap().parse().unwrap();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tcp.read_to_end(&mut answer),
    )
    .await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "a TLS node answered plain HTTP: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn an_upstream_the_node_does_not_trust_gets_nothing_and_the_push_waits_in_the_spool_until_the_ca_is_fixed()
 {
    let trusted = Pki::new("trusted");
    let rogue = Pki::new("rogue");
    let upstream = Upstream::start_tls(&rogue.server("impostor")).await;
    let storage = tempfile::tempdir().unwrap();
    let yaml = |ca: &std::path::Path| {
        format!(
            "upstream:\n  url: {}\n  tls-ca-path: {ca:?}\n  bearer-token: node-secret\n",
            upstream.url()
        )
    };
    let node = Node::start(storage.path(), &yaml(&trusted.ca_path())).await;
    let r = node
        .client()
        .post(PUSH)
        .body("a;b 1\n")
        .send()
        .await
        .expect(200);
    assert_eq!(r.header("pyrogate-spooled"), Some("true"));
    // The replay keeps trying; every handshake fails before any byte of HTTP is sent.
    let deadline = Deadline::secs(20, "the node to try the untrusted upstream twice");
    while upstream.failed_handshakes() < 2 {
        deadline.tick(String::new).await;
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    assert_eq!(node.metric("pyrogate_spool_entries").await, 1.0);

    // Fix the CA: the spooled push is delivered, once.
    let node = node.restart_with(&yaml(&rogue.ca_path())).await;
    let got = upstream.wait_accepted(1, 20).await;
    assert_eq!(got[0].header("authorization"), Some("Bearer node-secret"));
    let deadline = Deadline::secs(10, "the spool to drain");
    while node.metric("pyrogate_spool_entries").await > 0.0 {
        deadline.tick(String::new).await;
    }
    assert_eq!(upstream.accepted().len(), 1, "delivered exactly once");
}

#[tokio::test]
async fn a_node_syncs_from_an_authority_over_tls_and_with_client_certificates_only_when_it_presents_one()
 {
    let pki = Pki::new("mtls");
    let authority_cert = pki.server("authority");
    let authority = Authority::start_with(&format!(
        "{}  http-tls-client-auth: RequireAndVerifyClientCert\n  http-tls-ca-path: {:?}\n",
        serving(&authority_cert),
        pki.ca_path()
    ))
    .await;
    let client = pki.client("node-1");
    let version = revocations_version(&Http::trusting(
        authority.tls_origin(),
        &pki.ca_path(),
        Some(&client),
    ))
    .await;

    // With its client certificate: synced and ready.
    let with_cert = tempfile::tempdir().unwrap();
    let node = Node::start(
        with_cert.path(),
        &node_yaml(
            &authority.tls_origin(),
            &format!(
                "authority:\n  tls-ca-path: {:?}\n  tls-cert-path: {:?}\n  tls-key-path: {:?}\n",
                pki.ca_path(),
                client.cert,
                client.key
            ),
        ),
    )
    .await;
    node.wait_synced(version).await;

    // Without one: the authority refuses the handshake and the node never gets a key set.
    let without = tempfile::tempdir().unwrap();
    let refused = Node::start(
        without.path(),
        &node_yaml(
            &authority.tls_origin(),
            &format!("authority:\n  tls-ca-path: {:?}\n", pki.ca_path()),
        ),
    )
    .await;
    let deadline = Deadline::secs(20, "the node without a certificate to fail to sync");
    while refused.metric("pyrogate_sync_failures_total").await < 1.0 {
        deadline.tick(String::new).await;
    }
    let ready = refused.ready().await;
    assert_eq!(ready["keysLoaded"], json!(false), "{ready}");
    assert_eq!(ready["ready"], json!(false), "{ready}");

    // And a browser over TLS gets a Secure session cookie without being told to.
    let browser = Http::trusting(authority.tls_origin(), &pki.ca_path(), Some(&client));
    let login = browser.login(ADMIN, ADMIN_PASSWORD).await;
    let cookie = login.header("set-cookie").unwrap_or_default().to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

/// One TLS connection by hand: the certificate the server presented, and the stream.
async fn connect(
    port: u16,
    ca: &std::path::Path,
) -> (
    String,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(ca, None)));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (
        base64::engine::general_purpose::STANDARD.encode(presented),
        tls,
    )
}

async fn healthz_on(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("an answer on the old connection")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn replaced_certificate_files_are_served_to_new_handshakes_and_open_connections_live_on() {
    let pki = Pki::new("rotate");
    let first = pki.server("node-a");
    let second = pki.server("node-b");
    let served = pki.dir().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let live = CertFiles {
        cert: served.join("tls.crt"),
        key: served.join("tls.key"),
    };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let storage = tempfile::tempdir().unwrap();
    let node = Node::start(storage.path(), &serving(&live)).await;
    let port: u16 = node.url.rsplit(':').next().unwrap().parse().unwrap();

    let (before, mut open) = connect(port, &pki.ca_path()).await;
    assert!(healthz_on(&mut open).await.starts_with("HTTP/1.1 200"));

    // As cert-manager does: new files renamed into place.
    for (from, to) in [(&second.key, &live.key), (&second.cert, &live.cert)] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    let deadline = Deadline::secs(20, "new handshakes to get the new certificate");
    loop {
        let (now, _) = connect(port, &pki.ca_path()).await;
        if now != before {
            break;
        }
        deadline.tick(String::new).await;
    }
    assert!(
        healthz_on(&mut open).await.starts_with("HTTP/1.1 200"),
        "the connection opened before the rotation still works"
    );
}

/// `GET /healthz` over a fresh mTLS connection presenting `client`: the status line, or why
/// there was none (a refused client certificate shows up as an alert on the first read).
async fn healthz_presenting(
    port: u16,
    ca: &std::path::Path,
    client: &CertFiles,
) -> Result<String, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(ca, Some(client))));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed without an answer".into()),
        Ok(Ok(n)) => Ok(String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in 5 s".into()),
    }
}

#[tokio::test]
async fn a_replaced_client_ca_file_decides_which_client_certificates_new_handshakes_accept() {
    let old = Pki::new("old-clients");
    let new = Pki::new("new-clients");
    let server = old.server("node");
    let (old_client, new_client) = (old.client("agent-old"), new.client("agent-new"));
    let served_ca = old.dir().join("client-ca.pem");
    std::fs::copy(old.ca_path(), &served_ca).unwrap();
    let storage = tempfile::tempdir().unwrap();
    let node = Node::start(
        storage.path(),
        &format!(
            "{}  http-tls-client-auth: RequireAndVerifyClientCert\n  http-tls-ca-path: {served_ca:?}\n",
            serving(&server)
        ),
    )
    .await;
    let port: u16 = node.url.rsplit(':').next().unwrap().parse().unwrap();
    // The server certificate is the old PKI's either way; only the client CA changes.
    let trust = old.ca_path();
    assert_eq!(
        healthz_presenting(port, &trust, &old_client)
            .await
            .as_deref(),
        Ok("HTTP/1.1 200 OK")
    );
    let refused = healthz_presenting(port, &trust, &new_client).await;
    assert!(refused.is_err(), "a client of the other CA got {refused:?}");

    // Rotated as cert-manager does it: a new file renamed into place.
    let tmp = served_ca.with_extension("tmp");
    std::fs::copy(new.ca_path(), &tmp).unwrap();
    std::fs::rename(&tmp, &served_ca).unwrap();
    let deadline = Deadline::secs(20, "new handshakes to accept the new CA's clients");
    loop {
        match healthz_presenting(port, &trust, &new_client).await {
            Ok(status) if status == "HTTP/1.1 200 OK" => break,
            other => deadline.tick(|| format!("{other:?}")).await,
        }
    }
    let refused = healthz_presenting(port, &trust, &old_client).await;
    assert!(
        refused.is_err(),
        "a client of the replaced CA still got {refused:?}"
    );

    // A broken file is not taken: the last good CA stays in force.
    std::fs::write(&tmp, "not a certificate\n").unwrap();
    std::fs::rename(&tmp, &served_ca).unwrap();
    tokio::time::sleep(pyrogate::edge::tls::CERT_RELOAD_INTERVAL * 2).await;
    assert_eq!(
        healthz_presenting(port, &trust, &new_client)
            .await
            .as_deref(),
        Ok("HTTP/1.1 200 OK")
    );
}

#[tokio::test]
async fn credentials_in_an_upstream_url_stop_the_start_naming_the_key_and_never_echoing_them() {
    let storage = tempfile::tempdir().unwrap();
    let path = storage.path().to_str().unwrap();
    for args in [
        vec![
            "ingest",
            "--storage-path",
            path,
            "--upstream.url",
            "https://123456:glc_hunter2@localhost:1",
        ],
        vec![
            "config",
            "check",
            "--upstream",
            "https://123456:glc_hunter2@localhost:1/x",
        ],
    ] {
        let out = pyrogate_async(&args, &[], "").await.fails();
        assert!(out.stderr.contains("upstream.url"), "{}", out.stderr);
        assert!(
            out.stderr.contains("upstream.basic-auth-username"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
        assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
    }
}

/// What stops a node with `yaml` from starting: a settings error or a build error.
async fn build_error(yaml: &str) -> String {
    let storage = tempfile::tempdir().unwrap();
    let mut layers = Layers::defaults();
    let base = format!(
        "api-bind-addr: \"127.0.0.1:0\"\nstorage-path: {:?}\n",
        storage.path()
    );
    for (i, text) in [base.as_str(), yaml].iter().enumerate() {
        layers
            .merge_yaml(text, std::path::Path::new(&format!("test-{i}.yaml")))
            .unwrap();
    }
    let settings = match Settings::from_layers(&layers) {
        Ok(settings) => settings,
        Err(e) => return e.to_string(),
    };
    match IngestNode::build(settings, Arc::new(pyrogate::core::clock::SystemClock)).await {
        Ok(_) => panic!("the node started with {yaml}"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn unreadable_or_invalid_tls_files_are_start_up_errors_that_name_the_key() {
    let pki = Pki::new("bad");
    let good = pki.server("good");
    let garbage = pki.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();

    let err =
        build_error("upstream:\n  url: https://localhost:1\n  tls-ca-path: /nonexistent/ca.pem\n")
            .await;
    assert!(err.contains("upstream.tls-ca-path"), "{err}");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");

    let err = build_error(&format!(
        "upstream:\n  url: https://localhost:1\n  tls-ca-path: {garbage:?}\n"
    ))
    .await;
    assert!(err.contains("upstream.tls-ca-path"), "{err}");

    let err = build_error(&format!(
        "server:\n  http-tls-cert-path: {:?}\n  http-tls-key-path: {garbage:?}\n",
        good.cert
    ))
    .await;
    assert!(err.contains("server.http-tls-key-path"), "{err}");
    assert!(
        !err.contains("not a certificate"),
        "file contents echoed: {err}"
    );

    let other = pki.server("other");
    let err = build_error(&format!(
        "server:\n  http-tls-cert-path: {:?}\n  http-tls-key-path: {:?}\n",
        good.cert, other.key
    ))
    .await;
    assert!(err.contains("does not match"), "{err}");

    let err = build_error(&format!(
        "authority-url: https://localhost:1\nauth:\n  ingestion:\n    enabled: true\nauthority:\n  tls-cert-path: {:?}\n",
        good.cert
    ))
    .await;
    assert!(err.contains("authority.tls-key-path"), "{err}");
}
