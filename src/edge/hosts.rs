//! `server.allowed-hosts`: answer only requests addressed to this server's own names.
//!
//! DNS rebinding lets a web page on `evil.example` re-point its own name at an address inside
//! the network (the authority, a node) and then read the answers as same-origin. The browser
//! still sends `Host: evil.example`, so a server that knows its names can refuse: with the
//! list set, a request whose `Host` (or absolute-form request target) is not on it gets `400`
//! in the errors shape before any route runs. A `Host` that is an IP address always passes —
//! rebinding needs a name, and probes, scrapers and agents that address a server by IP keep
//! working — as does every request while the list is empty (the default).

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::HostPattern;
use crate::edge::error::ApiError;

/// `router` behind the host check; unchanged when `allowed` is empty.
pub fn guard(router: Router, allowed: &[HostPattern]) -> Router {
    if allowed.is_empty() {
        return router;
    }
    let allowed: Arc<[HostPattern]> = allowed.into();
    router.layer(axum::middleware::from_fn_with_state(allowed, check))
}

async fn check(State(allowed): State<Arc<[HostPattern]>>, req: Request, next: Next) -> Response {
    if is_allowed(&allowed, req.uri(), req.headers()) {
        next.run(req).await
    } else {
        tracing::debug!("request for a host not in server.allowed-hosts refused");
        ApiError::bad_request("this server does not answer for that host (server.allowed-hosts)")
            .into_response()
    }
}

/// True when the host a request is addressed to is on `allowed` or is an IP address. The
/// host is the request target's authority when it has one (absolute form), else the one
/// `Host` header; no host, several `Host` headers or an unparsable one are refused.
pub fn is_allowed(allowed: &[HostPattern], uri: &Uri, headers: &HeaderMap) -> bool {
    let host = match uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => {
            let mut hosts = headers.get_all(header::HOST).iter();
            match (hosts.next(), hosts.next()) {
                (Some(host), None) => host.to_str().ok(),
                _ => None,
            }
        }
    };
    let Some((host, port)) = host.and_then(HostPattern::split) else {
        return false;
    };
    host.parse::<IpAddr>().is_ok() || allowed.iter().any(|p| p.allows(&host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt as _;

    fn router() -> Router {
        let allowed: Vec<HostPattern> = ["pyro.example.com", "pyro.internal:4040"]
            .into_iter()
            .map(|h| HostPattern::parse(h).unwrap())
            .collect();
        guard(Router::new().route("/x", get(|| async { "ok" })), &allowed)
    }

    async fn status(uri: &str, hosts: &[&str]) -> (StatusCode, String) {
        let mut req = Request::builder().uri(uri);
        for host in hosts {
            req = req.header(header::HOST, *host);
        }
        let res = router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn only_listed_names_and_ip_addresses_are_answered() {
        for host in [
            "pyro.example.com",
            "PYRO.example.com.",
            "pyro.example.com:4040",
            "pyro.internal:4040",
            "10.1.2.3:4040",
            "127.0.0.1",
            "[::1]:4040",
        ] {
            assert_eq!(status("/x", &[host]).await.0, StatusCode::OK, "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:4040",
            "pyro.example.com.evil.example",
            "pyro.internal:4041",
            "pyro.internal",
            "u@pyro.example.com",
            "",
        ] {
            let (status, body) = status("/x", &[host]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{host}");
            assert_eq!(
                body,
                r#"{"errors":["this server does not answer for that host (server.allowed-hosts)"]}"#
            );
        }
        // No Host, two of them, or an absolute-form target naming another host.
        assert_eq!(status("/x", &[]).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(
            status("/x", &["pyro.example.com", "evil.example"]).await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status("http://evil.example/x", &["pyro.example.com"])
                .await
                .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status("http://pyro.example.com/x", &["evil.example"])
                .await
                .0,
            StatusCode::OK
        );
        // Unknown routes are refused for a wrong host before they are looked up.
        assert_eq!(
            status("/nope", &["evil.example"]).await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn an_empty_list_allows_any_host() {
        let open = guard(Router::new().route("/x", get(|| async { "ok" })), &[]);
        let req = Request::builder()
            .uri("/x")
            .header(header::HOST, "evil.example")
            .body(Body::empty())
            .unwrap();
        assert_eq!(open.oneshot(req).await.unwrap().status(), StatusCode::OK);
    }
}
