//! `server.allowed-hosts` on the authority: requests addressed to another name are refused
//! before any route runs (DNS rebinding), IP-address hosts always pass.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_host_names_are_answered_and_ip_addresses_always_are() {
    let app = Authority::start_with("server:\n  allowed-hosts: pyro.test, admin.test:4040\n").await;
    let http = app.client();
    // The harness addresses the server as 127.0.0.1:PORT: an IP address, always answered.
    http.login(ADMIN, ADMIN_PASSWORD).await.expect(204);
    for host in [
        "pyro.test",
        "PYRO.test:8080",
        "pyro.test.",
        "admin.test:4040",
    ] {
        http.get("/api/user")
            .header("host", host)
            .send()
            .await
            .expect(200);
    }
    // A rebound name: refused in the errors shape, on every route, logins included.
    for host in [
        "evil.test",
        "admin.test:4041",
        "admin.test",
        "pyro.test.evil.test",
    ] {
        for path in ["/api/user", "/healthz", "/api/nope", "/"] {
            let r = http.get(path).header("host", host).send().await.expect(400);
            assert_eq!(
                r.errors(),
                vec!["this server does not answer for that host (server.allowed-hosts)"],
                "{host} {path}"
            );
        }
    }
    let r = app
        .client()
        .post("/api/login")
        .header("host", "evil.test")
        .json(&serde_json::json!({ "username": ADMIN, "password": ADMIN_PASSWORD }))
        .send()
        .await
        .expect(400);
    assert!(r.header("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_any_host_is_answered() {
    let app = Authority::start().await;
    app.client()
        .get("/healthz")
        .header("host", "anything.test")
        .send()
        .await
        .expect(200);
}

#[test]
fn an_entry_that_is_not_a_host_name_is_a_start_up_error_naming_the_key() {
    let out = pyrogate(
        &[
            "config",
            "check",
            "--server.allowed-hosts",
            "pyro.test, https://pyro.test/",
        ],
        &[],
        "",
    )
    .fails();
    assert!(
        out.stderr.contains("server.allowed-hosts"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("https://pyro.test/"), "{}", out.stderr);
}
