//! Single sign-on test parts: the real OpenID Provider (npm `oidc-provider`, started by
//! [`RealProvider::start`] on 127.0.0.1:0), a crafted provider in Rust ([`Crafted`]) that
//! serves whatever ID token a test mints (forged ones included), and a [`Browser`]: an HTTP
//! client with a cookie jar per origin that follows nothing by itself, so a test can stop at,
//! look at and tamper with every hop.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pyrogate::core::b64;
use serde_json::{Value, json};

/// The redirect URL registered at the providers and configured in the authority. Nothing
/// listens there: [`Browser`] sends what the provider redirects to it to the authority under
/// test instead.
pub const REDIRECT: &str = "http://pyrogate.test/auth/oidc/callback";
pub const CLIENT_ID: &str = "pyrogate";
pub const CLIENT_SECRET: &str = "a-client-secret-for-tests-0123456789";

fn deps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/oidc")
}

/// The authority's `auth.oidc` settings for a provider at `issuer`: Admin from
/// `pyro-admins`, ReadOnly from `developers`, then `extra` (more YAML under `auth.oidc`,
/// indented by four spaces).
pub fn sso_yaml(issuer: &str, extra: &str) -> String {
    format!(
        "auth:\n  oidc:\n    enabled: true\n    name: Test IdP\n    issuer-url: {issuer:?}\n    \
         client-id: {CLIENT_ID}\n    client-secret: {CLIENT_SECRET}\n    redirect-url: {REDIRECT}\n    \
         scopes: openid profile email groups\n    role-mapping:\n      admin: pyro-admins\n      \
         read-only: developers\n{extra}"
    )
}

/// npm's oidc-provider on loopback, stopped when dropped.
pub struct RealProvider {
    pub issuer: String,
    child: Child,
}

impl RealProvider {
    /// Starts tests/oidc/provider.mjs with one client (`pyrogate`, [`REDIRECT`]).
    pub fn start() -> RealProvider {
        RealProvider::start_with(&[])
    }

    /// … with `groups` overriding the groups of the named logins.
    pub fn start_with(groups: &[(&str, &[&str])]) -> RealProvider {
        let deps = deps();
        assert!(
            deps.join("node_modules/oidc-provider").is_dir(),
            "run `bash scripts/install-test-deps.sh` to install oidc-provider under target/test-deps/oidc"
        );
        let clients = json!([{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [REDIRECT],
        }]);
        let groups: serde_json::Map<String, Value> = groups
            .iter()
            .map(|(name, list)| ((*name).to_owned(), json!(list)))
            .collect();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .env("PYROGATE_OIDC_DEPS", &deps)
            .env("OIDC_CLIENTS", clients.to_string())
            .env("OIDC_GROUPS", Value::Object(groups).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node tests/oidc/provider.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut reader = std::io::BufReader::new(stdout);
        reader
            .read_line(&mut line)
            .expect("the provider's first line");
        // The provider logs to stdout too: keep reading, or its writes fail (EPIPE) and it dies.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let started: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the provider did not start: {line:?}"));
        RealProvider {
            issuer: started["issuer"].as_str().expect("issuer").to_owned(),
            child,
        }
    }
}

impl Drop for RealProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer, fully read.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> String {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no Location: {} {}", self.status, self.body))
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Set-Cookie` values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    /// True when the answer started a session (set a non-empty `pyrogate_session`).
    pub fn started_session(&self) -> bool {
        self.set_cookies()
            .iter()
            .any(|c| c.starts_with("pyrogate_session=") && !c.starts_with("pyrogate_session=;"))
    }
}

/// A browser's HTTP: a cookie jar per `host:port`; redirects are not followed.
#[derive(Clone)]
pub struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    jar: Arc<Mutex<HashMap<String, BTreeMap<String, String>>>>,
    /// Where [`REDIRECT`]'s origin really is: the authority under test.
    authority: String,
}

fn origin_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split('/').next().unwrap_or("").to_owned()
}

impl Browser {
    pub fn new(authority_origin: &str) -> Browser {
        Browser {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            jar: Arc::default(),
            authority: authority_origin.trim_end_matches('/').to_owned(),
        }
    }

    /// `url` with the redirect URL's origin replaced by the authority's.
    pub fn real(&self, url: &str) -> String {
        match url.strip_prefix("http://pyrogate.test") {
            Some(rest) => format!("{}{rest}", self.authority),
            None if url.starts_with('/') => format!("{}{url}", self.authority),
            None => url.to_owned(),
        }
    }

    pub fn cookie(&self, origin_url: &str, name: &str) -> Option<String> {
        let origin = origin_of(&self.real(origin_url));
        self.jar.lock().unwrap().get(&origin)?.get(name).cloned()
    }

    async fn send(&self, method: &str, url: &str, form: Option<String>) -> Page {
        let url = self.real(url);
        let origin = origin_of(&url);
        let mut req = Request::builder().method(method).uri(&url);
        let cookies = self
            .jar
            .lock()
            .unwrap()
            .get(&origin)
            .map(|jar| {
                jar.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        if !cookies.is_empty() {
            req = req.header(header::COOKIE, cookies);
        }
        let body = match form {
            Some(form) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Bytes::from(form)
            }
            None => Bytes::new(),
        };
        let res = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            self.client.request(req.body(Full::new(body)).unwrap()),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {url} timed out"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        {
            let mut jar = self.jar.lock().unwrap();
            let jar = jar.entry(origin).or_default();
            for value in parts.headers.get_all(header::SET_COOKIE) {
                let Ok(value) = value.to_str() else { continue };
                let pair = value.split(';').next().unwrap_or("");
                let Some((name, v)) = pair.split_once('=') else {
                    continue;
                };
                let lower = value.to_ascii_lowercase();
                if v.is_empty()
                    || lower.contains("max-age=0")
                    || lower.contains("expires=thu, 01 jan 1970")
                {
                    jar.remove(name.trim());
                } else {
                    jar.insert(name.trim().to_owned(), v.to_owned());
                }
            }
        }
        Page {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        self.send("GET", url, None).await
    }

    pub async fn post_form(&self, url: &str, pairs: &[(&str, &str)]) -> Page {
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.send("POST", url, Some(form)).await
    }

    /// `GET /auth/oidc/login?next=…` at the authority: the provider's authorization URL.
    /// The provider's cookies are dropped first, so each sign-in shows its login form (a
    /// provider session would sign in whoever signed in before).
    pub async fn start_sign_in(&self, next: &str) -> String {
        let own = origin_of(&self.authority);
        self.jar.lock().unwrap().retain(|origin, _| *origin == own);
        let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let page = self.get(&format!("/auth/oidc/login?next={next}")).await;
        assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
        page.location()
    }

    /// Through the real provider's login form as `login`, up to the redirect back: the
    /// callback URL (at the authority) the provider sends the browser to, not yet visited.
    pub async fn through_provider(&self, authorize: &str, login: &str) -> String {
        let mut url = authorize.to_owned();
        for _ in 0..10 {
            if url.starts_with("http://pyrogate.test") {
                return self.real(&url);
            }
            let page = self.get(&url).await;
            let base = format!("http://{}", origin_of(&url));
            match page.status.as_u16() {
                301..=303 | 307 | 308 => {
                    let loc = page.location();
                    url = if loc.starts_with('/') {
                        format!("{base}{loc}")
                    } else {
                        loc
                    };
                }
                200 => {
                    let action = page
                        .body
                        .split("action=\"")
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                        .unwrap_or_else(|| panic!("no form: {}", page.body))
                        .replace("&amp;", "&");
                    let target = if action.starts_with('/') {
                        format!("{base}{action}")
                    } else {
                        action
                    };
                    let page = self
                        .post_form(
                            &target,
                            &[("prompt", "login"), ("login", login), ("password", "any")],
                        )
                        .await;
                    let loc = page.location();
                    url = if loc.starts_with('/') {
                        format!("{base}{loc}")
                    } else {
                        loc
                    };
                }
                _ => panic!("the provider answered {}: {}", page.status, page.body),
            }
        }
        panic!("too many hops at the provider")
    }

    /// A whole sign-in at the real provider: the authority's answer to the callback.
    pub async fn sign_in(&self, login: &str, next: &str) -> Page {
        let authorize = self.start_sign_in(next).await;
        let callback = self.through_provider(&authorize, login).await;
        self.get(&callback).await
    }

    /// `GET` at the authority with the session in the jar, as JSON.
    pub async fn api(&self, path: &str) -> (StatusCode, Value) {
        let page = self.get(path).await;
        (
            page.status,
            serde_json::from_str(&page.body).unwrap_or(Value::Null),
        )
    }
}

/// The query parameter `name` of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// What the crafted provider serves.
pub struct CraftedState {
    pub base: String,
    pub jwks: Value,
    pub id_token: String,
    pub iss_supported: bool,
    pub jwks_fetches: usize,
}

/// A provider of the test's own on loopback: discovery, JWKS and a token endpoint that answers
/// any code but `used` with [`CraftedState::id_token`].
pub struct Crafted {
    pub issuer: String,
    pub state: Arc<Mutex<CraftedState>>,
    _server: tokio::task::JoinHandle<()>,
    pub ed: pyrogate::core::crypto::SigningKey,
}

pub const ED_KID: &str = "ed-1";

impl Crafted {
    pub async fn start() -> Crafted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let ed = pyrogate::core::crypto::SigningKey::generate();
        let state = Arc::new(Mutex::new(CraftedState {
            base: issuer.clone(),
            jwks: json!({"keys": [ed_jwk(&ed, ED_KID)]}),
            id_token: String::new(),
            iss_supported: true,
            jwks_fetches: 0,
        }));
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Crafted {
            issuer,
            state,
            _server: server,
            ed,
        }
    }

    pub fn serve_token(&self, token: String) {
        self.state.lock().unwrap().id_token = token;
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.lock().unwrap().jwks_fetches
    }

    /// Claims the authority accepts, for `nonce`, at `now`.
    pub fn claims(&self, sub: &str, nonce: &str, now: u64) -> Value {
        json!({
            "iss": self.issuer,
            "sub": sub,
            "aud": CLIENT_ID,
            "exp": now + 300,
            "iat": now,
            "nonce": nonce,
            "preferred_username": sub,
            "email": format!("{sub}@example.com"),
            "email_verified": true,
            "groups": ["pyro-admins"],
        })
    }

    /// A compact JWS of `header` and `claims` signed with the provider's Ed25519 key.
    pub fn sign_ed(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string()),
            b64::encode(claims.to_string())
        );
        let sig = self.ed.sign(input.as_bytes());
        format!("{input}.{}", b64::encode(sig))
    }
}

pub fn ed_jwk(key: &pyrogate::core::crypto::SigningKey, kid: &str) -> Value {
    json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64::encode(key.verifying_key().as_bytes()),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    })
}

async fn discovery(State(state): State<Arc<Mutex<CraftedState>>>) -> axum::Json<Value> {
    let s = state.lock().unwrap();
    axum::Json(json!({
        "issuer": s.base,
        "authorization_endpoint": format!("{}/authorize", s.base),
        "token_endpoint": format!("{}/token", s.base),
        "jwks_uri": format!("{}/jwks", s.base),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA", "ES256"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": s.iss_supported,
    }))
}

async fn jwks(State(state): State<Arc<Mutex<CraftedState>>>) -> axum::Json<Value> {
    let mut s = state.lock().unwrap();
    s.jwks_fetches += 1;
    axum::Json(s.jwks.clone())
}

async fn token(
    State(state): State<Arc<Mutex<CraftedState>>>,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let code = form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if code == "used" {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let s = state.lock().unwrap();
    axum::Json(json!({"id_token": s.id_token, "token_type": "Bearer", "expires_in": 300}))
        .into_response()
}
