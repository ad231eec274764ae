//! The read proxy of an ingest node: Grafana Pyroscope's query API for ReadOnly and Admin keys,
//! with the key's tenant, and never the upstream's internal or admin paths.

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use pyrogate::core::clock::SystemClock;
use pyrogate::core::jwk::KeySet;
use pyrogate::core::token::{self, KeyRequest, Role};

use crate::harness::{Http, Node, Upstream};
use crate::support::{random_key, signer};

struct Fixture {
    http: Http,
    _node: Node,
    upstream: Upstream,
    tokens: std::collections::HashMap<Role, String>,
    _dir: tempfile::TempDir,
}

async fn node_in_front_of_an_upstream() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // Answers 200 `{"ok":true}`, and records every request.
    let upstream = Upstream::answering("application/json", "{\"ok\":true}").await;
    let key = random_key();
    let jwks = KeySet::new([key.verifying_key()]).to_jwks();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, serde_json::to_vec(&jwks).unwrap()).unwrap();
    let yaml = format!(
        "upstream: {}\njwks-file: {:?}\nauth:\n  ingestion:\n    enabled: true\n",
        upstream.url(),
        jwks_path
    );
    let node = Node::start(&dir.path().join("node"), &yaml).await;
    let now = pyrogate::core::clock::Clock::now(&SystemClock);
    let s = signer(&key);
    let tokens = [Role::ReadOnly, Role::Agent, Role::Admin]
        .into_iter()
        .map(|role| {
            let t = token::issue(
                &s,
                "pyrogate",
                now,
                &KeyRequest {
                    name: &format!("{role}-key"),
                    role,
                    ttl_seconds: 3600,
                    tenant: Some("team-r"),
                    apps: None,
                    cidrs: None,
                },
            )
            .unwrap();
            (role, t.token.expose().to_owned())
        })
        .collect();
    Fixture {
        http: node.client(),
        _node: node,
        upstream,
        tokens,
        _dir: dir,
    }
}

async fn call(
    node: &Http,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &'static str,
) -> (StatusCode, Bytes) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = node.request(method, path).raw("application/json", body);
    if let Some(t) = token {
        req = req.bearer(t);
    }
    let resp = req.send().await;
    (resp.status, resp.body)
}

#[tokio::test]
async fn a_readonly_key_reads_through_the_proxy_with_its_tenant_and_without_its_key() {
    let f = node_in_front_of_an_upstream().await;
    let ro = f.tokens[&Role::ReadOnly].as_str();
    let (status, body) = call(
        &f.http,
        "GET",
        "/pyroscope/render?query=app.cpu%7B%7D&from=now-1h",
        Some(ro),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"{\"ok\":true}");
    let (status, _) = call(
        &f.http,
        "POST",
        "/querier.v1.QuerierService/LabelNames",
        Some(ro),
        "{\"matchers\":[]}",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = f.upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].path_and_query,
        "/pyroscope/render?query=app.cpu%7B%7D&from=now-1h"
    );
    assert_eq!(
        seen[1].path_and_query,
        "/querier.v1.QuerierService/LabelNames"
    );
    assert_eq!(&seen[1].body[..], b"{\"matchers\":[]}");
    for s in &seen {
        assert_eq!(s.tenant(), Some("team-r"));
        assert!(
            s.header("authorization").is_none(),
            "the key must not reach the upstream"
        );
    }
}

#[tokio::test]
async fn an_admin_key_may_read_and_an_agent_key_or_no_key_may_not() {
    let f = node_in_front_of_an_upstream().await;
    let path = "/querier.v1.QuerierService/ProfileTypes";
    let (status, _) = call(&f.http, "POST", path, Some(&f.tokens[&Role::Admin]), "{}").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&f.http, "POST", path, Some(&f.tokens[&Role::Agent]), "{}").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("ReadOnly or Admin"));
    let (status, _) = call(&f.http, "POST", path, None, "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.upstream.requests().len(),
        1,
        "only the Admin read went through"
    );
}

#[tokio::test]
async fn the_upstreams_internal_and_admin_paths_are_never_proxied() {
    let f = node_in_front_of_an_upstream().await;
    let admin = f.tokens[&Role::Admin].as_str();
    for path in [
        "/ingester.v1.IngesterService/Push",
        "/storegateway.v1.StoreGatewayService/MergeProfilesStacktraces",
        "/ring",
        "/distributor/ring",
        "/memberlist",
        "/runtime_config",
        "/debug/pprof/profile",
        "/ops/ready",
        "/api/v1/status/config",
        "/querier.v1.QuerierService",
        "/pyroscope/render/../../ring",
    ] {
        for method in ["GET", "POST"] {
            let (status, _) = call(&f.http, method, path, Some(admin), "{}").await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        }
    }
    assert!(f.upstream.requests().is_empty());
}

#[tokio::test]
async fn querier_method_names_and_http_methods_outside_the_read_api_never_reach_the_upstream() {
    let f = node_in_front_of_an_upstream().await;
    let admin = f.tokens[&Role::Admin].as_str();
    for path in [
        "/querier.v1.QuerierService/..",
        "/querier.v1.QuerierService/%2e%2e",
        "/querier.v1.QuerierService/..%2f..%2fmetrics",
        "/querier.v1.QuerierService/a%5cb",
        "/querier.v1.QuerierService/Select_Merge",
        "/querier.v1.QuerierService/Label1",
    ] {
        let (status, _) = call(&f.http, "POST", path, Some(admin), "{}").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "POST {path}");
    }
    for method in ["DELETE", "PUT", "PATCH", "TRACE", "OPTIONS"] {
        for path in [
            "/querier.v1.QuerierService/LabelNames",
            "/pyroscope/render?query=x",
        ] {
            let (status, body) = call(&f.http, method, path, Some(admin), "{}").await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                String::from_utf8_lossy(&body).contains("\"errors\""),
                "{method} {path}: {body:?}"
            );
        }
    }
    assert!(
        f.upstream.requests().is_empty(),
        "{:?}",
        f.upstream
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path_and_query))
            .collect::<Vec<_>>()
    );
    // The real methods still go through.
    let (status, _) = call(
        &f.http,
        "POST",
        "/querier.v1.QuerierService/LabelNames",
        Some(admin),
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}
