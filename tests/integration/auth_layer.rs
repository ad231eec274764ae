//! The auth layer in a real axum router, driven with `oneshot`: which credentials pass, which
//! role reaches which route, and the exact shape of every 401 and 403. Every response in this
//! file goes through [`Harness::call`], which also checks that no token ever comes back.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::routing::{get, post};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use pyrogate::core::clock::ManualClock;
use pyrogate::core::crypto::SigningKey;
use pyrogate::core::token::{Role, SESSION_TYP};
use pyrogate::core::verifier::Verifier;
use pyrogate::edge::auth::{Access, AuthGate, Authenticated, require};
use tower::ServiceExt as _;

use crate::support::*;

async fn echo(Authenticated(principal): Authenticated) -> String {
    principal.name.clone()
}

async fn echo_or_anonymous(auth: Option<Authenticated>) -> String {
    auth.map_or_else(|| "anonymous".to_owned(), |a| a.0.name.clone())
}

/// `/ingest` (Agent or Admin), `/query` (ReadOnly or Admin), `/admin` (Admin), each behind its
/// own gate; `gate` can adjust the gates.
fn router(verifier: &Arc<Verifier>, gate: impl Fn(AuthGate) -> AuthGate) -> Router {
    let layer = |access| {
        axum::middleware::from_fn_with_state(gate(AuthGate::new(verifier.clone(), access)), require)
    };
    Router::new()
        .route("/ingest", post(echo))
        .layer(layer(Access::Ingest))
        .merge(
            Router::new()
                .route("/query", get(echo))
                .layer(layer(Access::Query)),
        )
        .merge(
            Router::new()
                .route("/admin", get(echo))
                .layer(layer(Access::Admin)),
        )
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    fn assert_unauthorized(&self, reason: &str) {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "body: {}", self.body);
        assert_eq!(
            self.body,
            format!(r#"{{"errors":["invalid credentials: {reason}"]}}"#)
        );
        let challenge = self
            .headers
            .get(header::WWW_AUTHENTICATE)
            .expect("a 401 carries WWW-Authenticate")
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
    }

    fn assert_forbidden(&self, needs: &str) {
        assert_eq!(self.status, StatusCode::FORBIDDEN, "body: {}", self.body);
        let json = self.json();
        let errors = json["errors"].as_array().expect("an errors array");
        assert_eq!(errors.len(), 1);
        let message = errors[0].as_str().unwrap();
        assert!(message.contains(needs), "{message}");
        assert!(self.headers.get(header::WWW_AUTHENTICATE).is_none());
    }

    fn assert_ok(&self, name: &str) {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        assert_eq!(self.body, name);
    }
}

struct Harness {
    key: SigningKey,
    clock: ManualClock,
    verifier: Arc<Verifier>,
    app: Router,
    /// Every token handed out; no response may contain any of them.
    secrets: std::sync::Mutex<Vec<String>>,
}

impl Harness {
    fn new() -> Self {
        Self::with_gate(|g| g)
    }

    fn with_gate(gate: impl Fn(AuthGate) -> AuthGate) -> Self {
        let key = random_key();
        let (verifier, clock) = verifier(&[&key]);
        let app = router(&verifier, gate);
        Harness {
            key,
            clock,
            verifier,
            app,
            secrets: Default::default(),
        }
    }

    fn token(&self, name: &str, role: Role) -> String {
        self.token_with(name, role, 3600, None)
    }

    fn token_with(&self, name: &str, role: Role, ttl: u64, tenant: Option<&str>) -> String {
        let token = issue(&self.key, name, role, ttl, tenant);
        self.secrets.lock().unwrap().push(token.clone());
        token
    }

    /// Puts `token` on the verifier's revocation list.
    fn revoke(&self, token: &str) {
        let jti = claims_of(token)["jti"].as_str().unwrap().to_owned();
        self.verifier
            .set_revocations(revoking(&jti, Some(NOW + 3600)).to_set());
    }

    fn secret(&self, extra: &str) {
        self.secrets.lock().unwrap().push(extra.to_owned());
    }

    async fn call(&self, req: Request<Body>) -> Reply {
        let secrets = self.secrets.lock().unwrap().clone();
        call(&self.app, req, &secrets).await
    }
}

/// Sends one request and checks that no secret appears in the status line, headers or body.
async fn call(app: &Router, req: Request<Body>, secrets: &[String]) -> Reply {
    let response = app.clone().oneshot(req).await.expect("infallible router");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(bytes.to_vec()).expect("UTF-8 body");
    for secret in secrets {
        // Compare on a distinctive slice too, so a truncated echo is caught.
        let needles = [secret.as_str(), &secret[secret.len().saturating_sub(40)..]];
        for needle in needles {
            assert!(
                !body.contains(needle),
                "response body leaks a secret: {body}"
            );
            for (name, value) in &headers {
                let value = String::from_utf8_lossy(value.as_bytes());
                assert!(
                    !value.contains(needle),
                    "header {name} leaks a secret: {value}"
                );
            }
        }
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn request(method: Method, uri: &str, headers: &[(header::HeaderName, &str)]) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

fn ingest(headers: &[(header::HeaderName, &str)]) -> Request<Body> {
    request(Method::POST, "/ingest", headers)
}

fn bearer(token: &str) -> (header::HeaderName, String) {
    (header::AUTHORIZATION, format!("Bearer {token}"))
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn a_bearer_token_is_accepted() {
    let h = Harness::new();
    let token = h.token("ci", Role::Agent);
    let (name, value) = bearer(&token);
    h.call(ingest(&[(name, &value)])).await.assert_ok("ci");
}

#[tokio::test]
async fn the_authorization_scheme_is_case_insensitive() {
    let h = Harness::new();
    let token = h.token("ci", Role::Agent);
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {token}");
        h.call(ingest(&[(header::AUTHORIZATION, &value)]))
            .await
            .assert_ok("ci");
    }
    let value = basic("pyroscope", &token).replacen("Basic", "BASIC", 1);
    h.call(ingest(&[(header::AUTHORIZATION, &value)]))
        .await
        .assert_ok("ci");
}

#[tokio::test]
async fn basic_auth_with_the_key_as_password_is_accepted_for_any_user() {
    let h = Harness::new();
    let token = h.token("python-agent", Role::Agent);
    for user in ["", "pyroscope", "123456", "anyone at all"] {
        let value = basic(user, &token);
        h.secret(&value);
        h.call(ingest(&[(header::AUTHORIZATION, &value)]))
            .await
            .assert_ok("python-agent");
    }
}

#[tokio::test]
async fn basic_auth_with_an_empty_password_is_refused_as_missing() {
    let h = Harness::new();
    let value = basic("pyroscope", "");
    h.call(ingest(&[(header::AUTHORIZATION, &value)]))
        .await
        .assert_unauthorized("missing");
}

#[tokio::test]
async fn malformed_basic_credentials_are_refused() {
    let h = Harness::new();
    let token = h.token("ci", Role::Agent);
    let no_colon = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(&token)
    );
    h.secret(&no_colon);
    for value in [no_colon.as_str(), "Basic !!!not-base64!!!", "Basic /w=="] {
        h.call(ingest(&[(header::AUTHORIZATION, value)]))
            .await
            .assert_unauthorized("malformed");
    }
}

#[tokio::test]
async fn two_authorization_headers_are_refused_even_if_both_are_valid() {
    let h = Harness::new();
    let token = h.token("ci", Role::Agent);
    let (name, value) = bearer(&token);
    h.call(ingest(&[(name.clone(), &value), (name, &value)]))
        .await
        .assert_unauthorized("more than one authorization header");
}

#[tokio::test]
async fn a_token_in_the_query_string_is_refused_even_with_a_valid_header() {
    let h = Harness::new();
    let token = h.token("ci", Role::Agent);
    let (name, value) = bearer(&token);
    for param in ["token", "access_token", "api_key", "ACCESS_TOKEN"] {
        let uri = format!("/ingest?name=app.cpu&{param}={token}");
        h.call(request(Method::POST, &uri, &[(name.clone(), &value)]))
            .await
            .assert_unauthorized("tokens are not accepted in the query string");
    }
    // Ordinary Pyroscope ingest parameters are fine.
    let uri = "/ingest?name=app.cpu%7Benv%3Dprod%7D&from=1&until=2&format=pprof";
    h.call(request(Method::POST, uri, &[(name, &value)]))
        .await
        .assert_ok("ci");
}

#[tokio::test]
async fn an_unknown_scheme_is_refused() {
    let h = Harness::new();
    let token = h.token("ci", Role::Agent);
    let token_scheme = format!("Token {token}");
    for value in ["Token x", token_scheme.as_str(), "Digest username=\"a\""] {
        h.call(ingest(&[(header::AUTHORIZATION, value)]))
            .await
            .assert_unauthorized("unsupported authorization scheme");
    }
    // A known scheme with nothing after it is missing credentials, not a strange scheme.
    for value in ["Bearer", "bearer", "Basic"] {
        h.call(ingest(&[(header::AUTHORIZATION, value)]))
            .await
            .assert_unauthorized("missing");
    }
}

#[tokio::test]
async fn a_request_without_credentials_is_refused_as_missing() {
    let h = Harness::new();
    h.call(ingest(&[])).await.assert_unauthorized("missing");
    h.call(ingest(&[(header::AUTHORIZATION, "Bearer ")]))
        .await
        .assert_unauthorized("missing");
}

#[tokio::test]
async fn every_refusal_is_a_401_with_the_pyroscope_error_body_and_a_bearer_challenge() {
    let h = Harness::new();
    let valid = h.token("ci", Role::Agent);
    let foreign = issue(&random_key(), "elsewhere", Role::Agent, 3600, None);
    h.secret(&foreign);
    let session = signer(&h.key).sign(SESSION_TYP, claims_json().as_bytes());
    h.secret(&session);
    let mut bad_sig = valid.clone();
    bad_sig.replace_range(bad_sig.len() - 5.., "AAAAA");
    h.secret(&bad_sig);
    let huge = "A".repeat(5000);

    let cases: Vec<(String, &str)> = vec![
        ("Bearer not-a-token".into(), "malformed"),
        (format!("Bearer {valid}x"), "malformed"),
        (format!("Bearer {foreign}"), "unknown signing key"),
        (format!("Bearer {session}"), "wrong token type"),
        (format!("Bearer {bad_sig}"), "bad signature"),
        (format!("Bearer {huge}"), "token too large"),
        (basic("u", "garbage"), "malformed"),
    ];
    for (value, reason) in cases {
        for path in ["/query", "/admin"] {
            h.call(request(
                Method::GET,
                path,
                &[(header::AUTHORIZATION, &value)],
            ))
            .await
            .assert_unauthorized(reason);
        }
        h.call(ingest(&[(header::AUTHORIZATION, &value)]))
            .await
            .assert_unauthorized(reason);
    }
}

#[tokio::test]
async fn a_header_value_that_is_not_visible_ascii_is_refused_as_malformed() {
    let h = Harness::new();
    let mut req = ingest(&[]);
    req.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_bytes(b"Bearer caf\xe9").unwrap(),
    );
    h.call(req).await.assert_unauthorized("malformed");
}

#[tokio::test]
async fn an_expired_token_is_refused_as_expired() {
    let h = Harness::new();
    let token = h.token("ci", Role::Agent);
    let (name, value) = bearer(&token);
    h.call(ingest(&[(name.clone(), &value)]))
        .await
        .assert_ok("ci");
    h.clock.advance(3600 + SKEW);
    h.call(ingest(&[(name, &value)]))
        .await
        .assert_unauthorized("expired");
}

#[tokio::test]
async fn a_revoked_token_is_refused_as_revoked() {
    let h = Harness::new();
    let token = h.token("ci", Role::Agent);
    let (name, value) = bearer(&token);
    h.call(ingest(&[(name.clone(), &value)]))
        .await
        .assert_ok("ci");
    h.revoke(&token);
    h.call(ingest(&[(name, &value)]))
        .await
        .assert_unauthorized("revoked");
}

#[tokio::test]
async fn an_agent_key_on_a_query_route_is_forbidden() {
    let h = Harness::new();
    let (name, value) = bearer(&h.token("ci", Role::Agent));
    h.call(request(Method::GET, "/query", &[(name, &value)]))
        .await
        .assert_forbidden("ReadOnly or Admin");
}

#[tokio::test]
async fn a_readonly_key_on_an_ingest_route_is_forbidden() {
    let h = Harness::new();
    let (name, value) = bearer(&h.token("grafana", Role::ReadOnly));
    h.call(ingest(&[(name.clone(), &value)]))
        .await
        .assert_forbidden("Agent or Admin");
    h.call(request(Method::GET, "/query", &[(name, &value)]))
        .await
        .assert_ok("grafana");
}

#[tokio::test]
async fn agent_and_readonly_keys_on_the_admin_route_are_forbidden() {
    let h = Harness::new();
    for role in [Role::Agent, Role::ReadOnly] {
        let (name, value) = bearer(&h.token("someone", role));
        let reply = h
            .call(request(Method::GET, "/admin", &[(name, &value)]))
            .await;
        reply.assert_forbidden("requires the Admin role");
        assert!(reply.body.contains(&format!("has role {role}")));
    }
}

#[tokio::test]
async fn an_admin_key_passes_everywhere() {
    let h = Harness::new();
    let (name, value) = bearer(&h.token("root-of-trust", Role::Admin));
    h.call(ingest(&[(name.clone(), &value)]))
        .await
        .assert_ok("root-of-trust");
    for path in ["/query", "/admin"] {
        h.call(request(Method::GET, path, &[(name.clone(), &value)]))
            .await
            .assert_ok("root-of-trust");
    }
}

#[tokio::test]
async fn a_session_cookie_alone_is_refused_as_missing() {
    let h = Harness::new();
    let token = h.token("ci", Role::Admin);
    let cookie = format!("pyrogate_session={token}");
    for path in ["/query", "/admin"] {
        h.call(request(Method::GET, path, &[(header::COOKIE, &cookie)]))
            .await
            .assert_unauthorized("missing");
    }
    h.call(ingest(&[(header::COOKIE, &cookie)]))
        .await
        .assert_unauthorized("missing");
}

#[tokio::test]
async fn a_disabled_gate_lets_a_request_without_credentials_through() {
    let key = random_key();
    let (verifier, _) = verifier(&[&key]);
    let app = Router::new()
        .route("/ingest", post(echo_or_anonymous))
        .layer(axum::middleware::from_fn_with_state(
            AuthGate::new(verifier, Access::Ingest).enabled(false),
            require,
        ));
    let reply = call(&app, ingest(&[]), &[]).await;
    reply.assert_ok("anonymous");
    // Even garbage credentials are not looked at when auth is off.
    let reply = call(&app, ingest(&[(header::AUTHORIZATION, "Bearer junk")]), &[]).await;
    reply.assert_ok("anonymous");
}

#[tokio::test]
async fn an_explicitly_enabled_gate_refuses_a_request_without_credentials() {
    let h = Harness::with_gate(|g| g.enabled(true));
    h.call(ingest(&[])).await.assert_unauthorized("missing");
}

#[tokio::test]
async fn with_basic_user_is_tenant_the_basic_user_must_be_the_keys_tenant() {
    let h = Harness::with_gate(|g| g.basic_user_is_tenant(true));
    let token = h.token_with("team-a-agent", Role::Agent, 3600, Some("team-a"));
    let same = basic("team-a", &token);
    let other = basic("team-b", &token);
    h.secret(&same);
    h.secret(&other);
    h.call(ingest(&[(header::AUTHORIZATION, &same)]))
        .await
        .assert_ok("team-a-agent");
    h.call(ingest(&[(header::AUTHORIZATION, &other)]))
        .await
        .assert_forbidden("tenant");
    // Bearer carries no user, so there is nothing to compare.
    let (name, value) = bearer(&token);
    h.call(ingest(&[(name, &value)]))
        .await
        .assert_ok("team-a-agent");
    // A key without a tenant cannot be presented under any user.
    let untenanted = h.token("no-tenant", Role::Agent);
    let value = basic("team-a", &untenanted);
    h.secret(&value);
    h.call(ingest(&[(header::AUTHORIZATION, &value)]))
        .await
        .assert_forbidden("tenant");
}

#[tokio::test]
async fn without_basic_user_is_tenant_the_basic_user_is_ignored() {
    let h = Harness::new();
    let token = h.token_with("team-a-agent", Role::Agent, 3600, Some("team-a"));
    let value = basic("team-b", &token);
    h.secret(&value);
    h.call(ingest(&[(header::AUTHORIZATION, &value)]))
        .await
        .assert_ok("team-a-agent");
}

/// A `MakeWriter` that appends every log line to a shared buffer.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn the_auth_layer_logs_reasons_and_names_but_never_a_credential() {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    // tokio::test runs on this thread, so a thread-local default catches every event.
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new();
    let agent = h.token("log-agent", Role::Agent);
    let mut tampered = agent.clone();
    tampered.replace_range(tampered.len() - 5.., "AAAAA");
    h.secret(&tampered);
    let basic_value = basic("team-a", &agent);
    h.secret(&basic_value);
    let (name, value) = bearer(&agent);
    h.call(ingest(&[(name.clone(), &value)]))
        .await
        .assert_ok("log-agent");
    h.call(request(Method::GET, "/query", &[(name, &value)]))
        .await
        .assert_forbidden("ReadOnly or Admin");
    let (name, value) = bearer(&tampered);
    h.call(ingest(&[(name, &value)]))
        .await
        .assert_unauthorized("bad signature");
    h.call(ingest(&[(header::AUTHORIZATION, &basic_value)]))
        .await
        .assert_ok("log-agent");

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("credentials refused"), "{text}");
    assert!(text.contains("bad_signature"), "{text}");
    assert!(text.contains("log-agent"), "{text}");
    for secret in h.secrets.lock().unwrap().iter() {
        let tail = &secret[secret.len() - 40..];
        assert!(
            !text.contains(tail),
            "a credential reached the logs: {text}"
        );
    }
}

/// The connection memo of the push path (`CredentialMemo`): a key seen again on its
/// connection is compared byte for byte and checked like a cache hit, so every rule that can
/// change — revocation, expiry, a retired signing key — still applies to the next request,
/// and any other bytes are verified whole.
#[tokio::test]
async fn a_key_remembered_by_its_connection_is_still_checked_on_every_request() {
    use pyrogate::core::error::VerifyError;
    use pyrogate::edge::auth::CredentialMemo;
    use pyrogate::edge::error::ApiError;
    let h = Harness::new();
    let gate = AuthGate::new(h.verifier.clone(), Access::Ingest);
    let memo = CredentialMemo::default();
    let token = h.token("ci", Role::Agent);
    let headers = |value: &str| {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    };
    let check = |value: &str| gate.check_with(&headers(value), None, Some(&memo), None);
    let refused =
        |result: Result<Option<Arc<pyrogate::core::verifier::Principal>>, ApiError>| match result {
            Err(ApiError::Unauthorized(reason)) => reason,
            other => panic!("expected a 401, got {other:?}"),
        };
    let bearer = format!("Bearer {token}");
    for _ in 0..3 {
        assert_eq!(check(&bearer).unwrap().unwrap().name, "ci");
    }
    // One byte of the signature changed, with the original remembered: verified whole, refused.
    let mut tampered = bearer.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(matches!(
        refused(check(&tampered)),
        VerifyError::BadSignature
    ));
    // The same key by Basic auth on the same connection, then by Bearer again.
    let basic_value = basic("anyone", &token);
    assert_eq!(check(&basic_value).unwrap().unwrap().name, "ci");
    assert_eq!(check(&bearer).unwrap().unwrap().name, "ci");
    // Revoked while remembered: refused at the next request.
    h.revoke(&token);
    assert!(matches!(refused(check(&bearer)), VerifyError::Revoked));
    // Expired while remembered: refused at the next request.
    let short = h.token_with("short", Role::Agent, 60, None);
    let short = format!("Bearer {short}");
    assert_eq!(check(&short).unwrap().unwrap().name, "short");
    h.clock.advance(60 + SKEW);
    assert!(matches!(refused(check(&short)), VerifyError::Expired));
    // A remembered key's role is checked on every request too.
    let read_gate = AuthGate::new(h.verifier.clone(), Access::Query);
    let reader = format!("Bearer {}", h.token("reader", Role::ReadOnly));
    let memo = CredentialMemo::default();
    for _ in 0..2 {
        assert!(matches!(
            gate.check_with(&headers(&reader), None, Some(&memo), None),
            Err(ApiError::Forbidden(_))
        ));
        assert_eq!(
            read_gate
                .check_with(&headers(&reader), None, Some(&memo), None)
                .unwrap()
                .unwrap()
                .name,
            "reader"
        );
    }
}
