//! The web UI: a small single-page app (vanilla JS modules, no build step) that uses the same
//! JSON API as automation. Every file is compiled into the binary from `src/authority/ui/`, so the
//! authority serves its UI with nothing on disk and nothing from a CDN.
//!
//! | path | answer |
//! |---|---|
//! | `GET /` | redirect: `/settings/api-keys` for a logged-in admin, `/profile` for other users, `/login` otherwise |
//! | `GET /login`, `/settings…`, `/profile` | `index.html`; the app routes on the client |
//! | `GET /assets/{file}` | the embedded file, with its content type and an `ETag` |
//!
//! Every answer carries a strict Content-Security-Policy (no inline script or style at all),
//! `nosniff`, `no-referrer` and `DENY` framing. Unknown paths fall through to the authority's
//! JSON 404, so `/api/…` keeps answering like an API.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::session::Caller;
use crate::authority::AppState;
use crate::core::token::Role;
use crate::edge::error::ApiError;

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Paths the client-side router knows; each serves `index.html`.
pub const PAGES: &[&str] = &[
    "/login",
    "/settings",
    "/settings/api-keys",
    "/settings/users",
    "/settings/signing-keys",
    "/settings/ingestion",
    "/settings/nodes",
    "/profile",
];

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

static INDEX: &str = include_str!("../ui/index.html");

static ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_str!("../ui/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: JS,
        body: include_str!("../ui/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: JS,
        body: include_str!("../ui/dom.js"),
    },
    Asset {
        name: "format.js",
        content_type: JS,
        body: include_str!("../ui/format.js"),
    },
    Asset {
        name: "login.js",
        content_type: JS,
        body: include_str!("../ui/login.js"),
    },
    Asset {
        name: "keys.js",
        content_type: JS,
        body: include_str!("../ui/keys.js"),
    },
    Asset {
        name: "users.js",
        content_type: JS,
        body: include_str!("../ui/users.js"),
    },
    Asset {
        name: "signing.js",
        content_type: JS,
        body: include_str!("../ui/signing.js"),
    },
    Asset {
        name: "ingestion.js",
        content_type: JS,
        body: include_str!("../ui/ingestion.js"),
    },
    Asset {
        name: "nodes.js",
        content_type: JS,
        body: include_str!("../ui/nodes.js"),
    },
    Asset {
        name: "profile.js",
        content_type: JS,
        body: include_str!("../ui/profile.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../ui/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../ui/favicon.svg"),
    },
];

/// Strong ETags, computed once: the files can only change with the binary.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = crate::core::crypto::sha256(a.body.as_bytes());
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

pub fn routes() -> Router<AppState> {
    let mut router = Router::new()
        .route("/", get(root))
        .route("/assets/{file}", get(asset));
    for page in PAGES {
        router = router.route(page, get(index));
    }
    router.layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ] {
        headers.insert(name, value);
    }
    response
}

/// `/`: where a visitor should start. An invalid or missing session is not an error here.
async fn root(caller: Result<Caller, ApiError>) -> Redirect {
    match caller {
        Ok(caller) if caller.role() == Role::Admin => Redirect::to("/settings/api-keys"),
        Ok(_) => Redirect::to("/profile"),
        Err(_) => Redirect::to("/login"),
    }
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page is tiny and names the assets; always revalidate it.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some((i, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == file) else {
        return ApiError::NotFound("not found".into()).into_response();
    };
    let etag = ETAGS.get(i).map(String::as_str).unwrap_or("\"0\"");
    // Asset names carry no version, so browsers revalidate; the answer is then a 304.
    let cache = (header::CACHE_CONTROL, "no-cache");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), cache], ()).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::ETAG, etag),
            cache,
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path as FsPath;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::{ASSETS, CONTENT_SECURITY_POLICY, PAGES};
    use crate::config::{Layers, Settings};
    use crate::core::clock::ManualClock;

    async fn app(root: &FsPath) -> axum::Router {
        let yaml = format!(
            "storage-path: {:?}\nkeys-dir: {:?}\n\
             auth:\n  internal:\n    admin:\n      password: \"correct-horse-battery\"\n",
            root.join("data"),
            root.join("keys"),
        );
        let mut layers = Layers::defaults();
        layers
            .merge_yaml(&yaml, FsPath::new("test.yaml"))
            .expect("config");
        let settings = Settings::from_layers(&layers).expect("settings");
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let (state, _) = crate::authority::open_state(settings, clock)
            .await
            .expect("state");
        crate::authority::router(state)
    }

    async fn get(app: &axum::Router, path: &str) -> axum::response::Response {
        let req = Request::get(path).body(Body::empty()).expect("request");
        app.clone().oneshot(req).await.expect("infallible")
    }

    fn header(res: &axum::response::Response, name: header::HeaderName) -> &str {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn pages_are_html_with_a_strict_content_security_policy() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = app(dir.path()).await;
        for page in PAGES {
            let res = get(&app, page).await;
            assert_eq!(res.status(), StatusCode::OK, "{page}");
            assert!(header(&res, header::CONTENT_TYPE).starts_with("text/html"));
            assert_eq!(
                header(&res, header::CONTENT_SECURITY_POLICY),
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(header(&res, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(header(&res, header::X_FRAME_OPTIONS), "DENY");
            assert_eq!(header(&res, header::REFERRER_POLICY), "no-referrer");
            let body = res.into_body().collect().await.expect("body").to_bytes();
            let html = String::from_utf8_lossy(&body);
            assert!(html.contains("<script type=\"module\" src=\"/assets/app.js\">"));
            assert!(!html.contains("style="), "no inline styles");
        }
    }

    #[tokio::test]
    async fn the_root_sends_a_visitor_without_a_session_to_the_login_page() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = app(dir.path()).await;
        let res = get(&app, "/").await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(header(&res, header::LOCATION), "/login");
        assert_eq!(
            header(&res, header::CONTENT_SECURITY_POLICY),
            CONTENT_SECURITY_POLICY
        );
    }

    #[tokio::test]
    async fn assets_have_their_content_type_and_revalidate_with_an_etag() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = app(dir.path()).await;
        for asset in ASSETS {
            let res = get(&app, &format!("/assets/{}", asset.name)).await;
            assert_eq!(res.status(), StatusCode::OK, "{}", asset.name);
            assert_eq!(header(&res, header::CONTENT_TYPE), asset.content_type);
            assert_eq!(header(&res, header::CACHE_CONTROL), "no-cache");
            assert_eq!(
                header(&res, header::CONTENT_SECURITY_POLICY),
                CONTENT_SECURITY_POLICY
            );
            let etag = header(&res, header::ETAG).to_owned();
            let req = Request::get(format!("/assets/{}", asset.name))
                .header(header::IF_NONE_MATCH, &etag)
                .body(Body::empty())
                .expect("request");
            let res = app.clone().oneshot(req).await.expect("infallible");
            assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{}", asset.name);
        }
        let res = get(&app, "/assets/nope.js").await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn unknown_api_paths_still_answer_json_404() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = app(dir.path()).await;
        for path in ["/api/nope", "/api/settings/api-keys", "/settings/nope"] {
            let res = get(&app, path).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(header(&res, header::CONTENT_TYPE).starts_with("application/json"));
            let body = res.into_body().collect().await.expect("body").to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(json["errors"][0], "not found");
        }
    }
}
