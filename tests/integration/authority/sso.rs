//! Single sign-on end to end: the authority against npm's oidc-provider (a certified OpenID
//! Provider, run on loopback) for the real flow, and against a crafted provider for the ID
//! tokens no honest provider issues. Every refusal is an error page, an audit entry and no
//! session.

use hyper::StatusCode;
use pyrogate::core::clock::Clock as _;
use serde_json::{Value, json};

use crate::harness::*;

/// The authority with single sign-on against `issuer` (and `extra` under `auth.oidc`).
async fn authority(issuer: &str, extra: &str) -> (Authority, Browser) {
    let app = Authority::start_with(&sso_yaml(issuer, extra)).await;
    let browser = Browser::new(&app.origin());
    (app, browser)
}

/// Asserts a refusal: the status, an error page saying `says`, no session, and an audit entry.
async fn refused(app: &Authority, browser: &Browser, page: &Page, status: u16, says: &str) {
    assert_eq!(page.status.as_u16(), status, "{}", page.body);
    assert!(
        page.header("content-type")
            .unwrap_or("")
            .starts_with("text/html"),
        "{:?}",
        page.headers
    );
    assert!(page.body.contains(says), "{says:?} not in {}", page.body);
    assert!(!page.started_session(), "{:?}", page.set_cookies());
    assert_eq!(browser.api("/api/user").await.0, StatusCode::UNAUTHORIZED);
    let audit = app.state.store.list_audit(50).await.unwrap();
    assert!(
        audit.iter().any(|a| a.action == "login.sso.refused"),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_group_member_signs_in_as_admin_and_lands_on_next() {
    let idp = RealProvider::start();
    let (app, browser) = authority(&idp.issuer, "").await;
    let methods = app
        .client()
        .get("/api/login/methods")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(methods["sso"]["name"], "Test IdP");
    assert_eq!(methods["password"], true);

    let authorize = browser.start_sign_in("/settings/api-keys").await;
    assert!(authorize.starts_with(&idp.issuer), "{authorize}");
    assert_eq!(
        query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    for p in ["state", "nonce", "code_challenge"] {
        assert!(
            query_param(&authorize, p).is_some_and(|v| v.len() >= 43),
            "{p}"
        );
    }
    let callback = browser.through_provider(&authorize, "admin-alice").await;
    assert_eq!(
        query_param(&callback, "iss").as_deref(),
        Some(idp.issuer.as_str())
    );
    let page = browser.get(&callback).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert_eq!(page.location(), "/settings/api-keys");
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert!(page.started_session());
    assert!(
        browser.cookie(&app.origin(), "pyrogate_sso").is_none(),
        "binding cleared"
    );

    let (status, me) = browser.api("/api/user").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "admin-alice");
    assert_eq!(me["role"], "Admin");
    assert_eq!(me["email"], "admin-alice@example.com");
    assert_eq!(me["ssoIssuer"], idp.issuer.as_str());
    assert_eq!(me["groups"], json!(["pyro-admins", "everyone"]));
    assert_eq!(browser.api("/api/keys").await.0, StatusCode::OK);
    let audit = app.state.store.list_audit(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "login.sso" && a.actor == "user:admin-alice"),
        "{audit:?}"
    );

    // Signing in again: the same user, a new session id.
    let first = browser.cookie(&app.origin(), "pyrogate_session").unwrap();
    let again = browser.sign_in("admin-alice", "/").await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.body);
    let second = browser.cookie(&app.origin(), "pyrogate_session").unwrap();
    assert_ne!(first, second);
    assert_eq!(app.state.store.list_users().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_is_read_only_and_loses_admin_when_the_group_goes() {
    let idp = RealProvider::start_with(&[("ops-carol", &["pyro-admins"]), ("ops-dan", &["x"])]);
    let (app, browser) = authority(&idp.issuer, "").await;
    let page = browser.sign_in("dev-bob", "/").await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    let (_, me) = browser.api("/api/user").await;
    assert_eq!(me["role"], "ReadOnly");
    assert_eq!(browser.api("/api/keys").await.0, StatusCode::FORBIDDEN);
    // No mapped group: auth.signup-default-role (ReadOnly).
    let other = Browser::new(&app.origin());
    other.sign_in("ops-dan", "/").await;
    assert_eq!(other.api("/api/user").await.1["role"], "ReadOnly");
    // The users page says how each user signs in.
    let admin = app.admin().await;
    let users = admin.get("/api/users").send().await.expect(200).json();
    let bob = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "dev-bob")
        .unwrap();
    assert_eq!(bob["isExternal"], true);
    assert_eq!(bob["groups"], json!(["developers", "everyone"]));
    let local = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == ADMIN)
        .unwrap();
    assert_eq!(local["isExternal"], false);
    assert_eq!(local["ssoIssuer"], Value::Null);
    // Disabling an SSO user ends their session, and they can't sign in again.
    let id = bob["id"].as_i64().unwrap();
    admin
        .put(&format!("/api/users/{id}/disable"))
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(browser.api("/api/user").await.0, StatusCode::UNAUTHORIZED);
    let page = browser.sign_in("dev-bob", "/").await;
    refused(&app, &browser, &page, 403, "disabled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_single_use_bound_to_the_browser_and_checked() {
    let idp = RealProvider::start();
    let (app, browser) = authority(&idp.issuer, "").await;
    // Wrong state.
    let authorize = browser.start_sign_in("/").await;
    let callback = browser.through_provider(&authorize, "admin-a").await;
    let state = query_param(&callback, "state").unwrap();
    let wrong = callback.replace(&state, "not-the-state");
    let page = browser.get(&wrong).await;
    refused(&app, &browser, &page, 401, "expired or was already used").await;
    // The real callback after that still fails: the binding cookie was cleared with the
    // refusal, so the browser no longer holds the sign-in it started.
    let page = browser.get(&callback).await;
    refused(&app, &browser, &page, 401, "another browser").await;

    // Replayed state: the callback works once.
    let authorize = browser.start_sign_in("/").await;
    let callback = browser.through_provider(&authorize, "admin-a").await;
    assert_eq!(browser.get(&callback).await.status, StatusCode::FOUND);
    let attacker = Browser::new(&app.origin());
    let replay = attacker.get(&callback).await;
    refused(&app, &attacker, &replay, 401, "expired or was already used").await;

    // Another browser's callback (login CSRF): refused, and the state is spent.
    let authorize = browser.start_sign_in("/").await;
    let callback = browser.through_provider(&authorize, "admin-a").await;
    let victim = Browser::new(&app.origin());
    let page = victim.get(&callback).await;
    refused(&app, &victim, &page, 401, "another browser").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_code_or_a_wrong_iss_is_refused() {
    let idp = RealProvider::start();
    let (app, browser) = authority(&idp.issuer, "").await;
    let authorize = browser.start_sign_in("/").await;
    let used = browser.through_provider(&authorize, "admin-a").await;
    assert_eq!(browser.get(&used).await.status, StatusCode::FOUND);
    // A fresh sign-in, answered with the code already exchanged.
    let fresh = Browser::new(&app.origin());
    let authorize = fresh.start_sign_in("/").await;
    let callback = fresh.through_provider(&authorize, "admin-a").await;
    let code = query_param(&used, "code").unwrap();
    let fresh_code = query_param(&callback, "code").unwrap();
    let replayed = callback.replace(&fresh_code, &code);
    let page = fresh.get(&replayed).await;
    refused(
        &app,
        &fresh,
        &page,
        401,
        "refused the authorization code (invalid_grant)",
    )
    .await;

    // `iss` naming another provider (mix-up), and `iss` missing where the provider promises it.
    for (from, to) in [
        ("iss=", "iss=https%3A%2F%2Fevil.example&x="),
        ("iss=", "notiss="),
    ] {
        let b = Browser::new(&app.origin());
        let authorize = b.start_sign_in("/").await;
        let callback = b.through_provider(&authorize, "admin-a").await;
        let page = b.get(&callback.replacen(from, to, 1)).await;
        refused(&app, &b, &page, 401, "(iss)").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_must_be_a_path_on_this_site() {
    let idp = RealProvider::start();
    let (app, browser) = authority(&idp.issuer, "").await;
    for next in ["//evil.example", "https://evil.example", "/\\evil.example"] {
        let encoded: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let page = browser
            .get(&format!("/auth/oidc/login?next={encoded}"))
            .await;
        refused(&app, &browser, &page, 400, "not a page of this site").await;
        assert!(page.header("location").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_email_outside_the_allowed_domains_is_refused() {
    let idp = RealProvider::start();
    let (app, browser) = authority(&idp.issuer, "    allowed-domains: example.com\n").await;
    let page = browser.sign_in("unverified-eve", "/").await;
    refused(
        &app,
        &browser,
        &page,
        403,
        "not verified or not in a domain",
    )
    .await;
    let ok = Browser::new(&app.origin());
    assert_eq!(ok.sign_in("dev-frank", "/").await.status, StatusCode::FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_role_mapping_and_no_sign_up_refuse_and_pre_created_users_get_in() {
    let idp = RealProvider::start();
    let (app, browser) = authority(
        &idp.issuer,
        "    role-attribute-strict: true\n    allow-sign-up: false\n",
    )
    .await;
    let page = browser.sign_in("other-gina", "/").await;
    refused(&app, &browser, &page, 403, "None of your groups").await;
    let page = browser.sign_in("dev-hal", "/").await;
    refused(&app, &browser, &page, 403, "no user for you").await;
    let admin = app.admin().await;
    admin
        .post("/api/users")
        .json(&json!({"name": "hal", "role": "Agent", "ssoSubject": "dev-hal"}))
        .send()
        .await
        .expect(201);
    let page = browser.sign_in("dev-hal", "/").await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    let (_, me) = browser.api("/api/user").await;
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("hal"), Some("ReadOnly"))
    );
    // Password login for an SSO user fails like a wrong password.
    app.client()
        .login("hal", "whatever-password-1")
        .await
        .expect(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_password_login_off_only_sso_signs_in() {
    let idp = RealProvider::start();
    let app = Authority::start().await;
    let local = app.admin().await;
    let app = app
        .restart_with(&format!(
            "{}  internal:\n    enabled: false\n",
            sso_yaml(&idp.issuer, "")
        ))
        .await;
    let methods = app
        .client()
        .get("/api/login/methods")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(methods["password"], false);
    app.client().login(ADMIN, ADMIN_PASSWORD).await.expect(403);
    // The local admin's old session ends with password login.
    let old = app.client().with_jar();
    old.set_cookie(local.cookie());
    old.get("/api/keys").send().await.expect(401);
    let browser = Browser::new(&app.origin());
    assert_eq!(
        browser.sign_in("admin-x", "/").await.status,
        StatusCode::FOUND
    );
    assert_eq!(browser.api("/api/keys").await.0, StatusCode::OK);
}

// --- forged and broken ID tokens, from a crafted provider ---

/// Starts a sign-in and returns the state and nonce the authority sent to the provider.
async fn begin(browser: &Browser) -> (String, String) {
    let authorize = browser.start_sign_in("/settings").await;
    (
        query_param(&authorize, "state").unwrap(),
        query_param(&authorize, "nonce").unwrap(),
    )
}

async fn answer(browser: &Browser, idp: &Crafted, state: &str, code: &str) -> Page {
    let iss: String = form_urlencoded::byte_serialize(idp.issuer.as_bytes()).collect();
    browser
        .get(&format!(
            "/auth/oidc/callback?code={code}&state={state}&iss={iss}"
        ))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_broken_id_tokens_are_refused() {
    let idp = Crafted::start().await;
    let (app, _) = authority(&idp.issuer, "").await;
    let now = app.clock().now();
    let ed = json!({"alg": "EdDSA", "kid": ED_KID, "typ": "JWT"});
    // A good token first: the crafted provider works (EdDSA).
    {
        let browser = Browser::new(&app.origin());
        let (state, nonce) = begin(&browser).await;
        idp.serve_token(idp.sign_ed(&ed, &idp.claims("good", &nonce, now)));
        let page = answer(&browser, &idp, &state, "c").await;
        assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
        assert_eq!(browser.api("/api/user").await.1["role"], "Admin");
    }
    let public_x = b64_of_public(&idp);
    type Mint = Box<dyn Fn(&Crafted, &str) -> String>;
    let cases: Vec<(&str, Mint, &str)> = vec![
        (
            "wrong nonce",
            Box::new(move |idp, _| idp.sign_ed(&ed_h(), &idp.claims("u", "another-nonce", now))),
            "nonce",
        ),
        (
            "missing nonce",
            Box::new(move |idp, n| {
                let mut c = idp.claims("u", n, now);
                c.as_object_mut().unwrap().remove("nonce");
                idp.sign_ed(&ed_h(), &c)
            }),
            "nonce",
        ),
        (
            "another audience",
            Box::new(move |idp, n| {
                let mut c = idp.claims("u", n, now);
                c["aud"] = json!("someone-else");
                idp.sign_ed(&ed_h(), &c)
            }),
            "another client",
        ),
        (
            "another authorized party",
            Box::new(move |idp, n| {
                let mut c = idp.claims("u", n, now);
                c["aud"] = json!([CLIENT_ID, "someone-else"]);
                idp.sign_ed(&ed_h(), &c)
            }),
            "(azp)",
        ),
        (
            "another issuer",
            Box::new(move |idp, n| {
                let mut c = idp.claims("u", n, now);
                c["iss"] = json!("https://evil.example");
                idp.sign_ed(&ed_h(), &c)
            }),
            "another issuer",
        ),
        (
            "expired",
            Box::new(move |idp, n| {
                let mut c = idp.claims("u", n, now);
                c["iat"] = json!(now - 7200);
                c["exp"] = json!(now - 3600);
                idp.sign_ed(&ed_h(), &c)
            }),
            "expired",
        ),
        (
            "alg none",
            Box::new(move |idp, n| {
                let header = b64_json(&json!({"alg": "none", "typ": "JWT"}));
                format!("{header}.{}.", b64_json(&idp.claims("u", n, now)))
            }),
            "&quot;none&quot; is not allowed",
        ),
        (
            "HS256 with the provider's public key",
            Box::new(move |idp, n| {
                let header = b64_json(&json!({"alg": "HS256", "kid": ED_KID, "typ": "JWT"}));
                let input = format!("{header}.{}", b64_json(&idp.claims("u", n, now)));
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public_x.as_bytes());
                let tag = ring::hmac::sign(&key, input.as_bytes());
                format!("{input}.{}", pyrogate::core::b64::encode(tag))
            }),
            "&quot;HS256&quot; is not allowed",
        ),
        (
            "unknown kid",
            Box::new(move |idp, n| {
                idp.sign_ed(
                    &json!({"alg": "EdDSA", "kid": "nope"}),
                    &idp.claims("u", n, now),
                )
            }),
            "unknown kid",
        ),
        (
            "bad signature",
            Box::new(move |idp, n| {
                let token = idp.sign_ed(&ed_h(), &idp.claims("u", n, now));
                let other = idp.sign_ed(&ed_h(), &idp.claims("v", n, now));
                let sig = other.rsplit('.').next().unwrap();
                format!("{}.{sig}", token.rsplit_once('.').unwrap().0)
            }),
            "signature does not verify",
        ),
    ];
    for (what, mint, says) in cases {
        let browser = Browser::new(&app.origin());
        let (state, nonce) = begin(&browser).await;
        idp.serve_token(mint(&idp, &nonce));
        let page = answer(&browser, &idp, &state, "c").await;
        assert!(
            page.body.contains(says),
            "{what}: {says:?} not in {}",
            page.body
        );
        refused(&app, &browser, &page, 401, says).await;
    }
    // A code the provider refuses.
    let browser = Browser::new(&app.origin());
    let (state, nonce) = begin(&browser).await;
    idp.serve_token(idp.sign_ed(&ed, &idp.claims("u", &nonce, now)));
    let page = answer(&browser, &idp, &state, "used").await;
    refused(&app, &browser, &page, 401, "invalid_grant").await;
    assert_eq!(
        app.state.store.list_users().await.unwrap().len(),
        2,
        "admin + good"
    );
}

fn ed_h() -> Value {
    json!({"alg": "EdDSA", "kid": ED_KID, "typ": "JWT"})
}

fn b64_json(v: &Value) -> String {
    pyrogate::core::b64::encode(v.to_string())
}

fn b64_of_public(idp: &Crafted) -> String {
    idp.state.lock().unwrap().jwks.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refetches_the_keys_at_most_once_per_cooldown_and_es256_verifies() {
    let idp = Crafted::start().await;
    let (app, _) = authority(&idp.issuer, "").await;
    let now = app.clock().now();
    let sign_in = |mint: Box<dyn Fn(&str) -> String>| {
        let app_origin = app.origin();
        let idp = &idp;
        async move {
            let browser = Browser::new(&app_origin);
            let (state, nonce) = begin(&browser).await;
            idp.serve_token(mint(&nonce));
            answer(&browser, idp, &state, "c").await
        }
    };
    let ok = sign_in(Box::new(|n| idp.sign_ed(&ed_h(), &idp.claims("a", n, now)))).await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.body);
    assert_eq!(idp.jwks_fetches(), 1);
    // The provider rotates to a P-256 key: an unknown kid within the cooldown is refused
    // without asking the provider again…
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    use ring::signature::KeyPair as _;
    let point = pair.public_key().as_ref().to_vec();
    idp.state.lock().unwrap().jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
        "x": pyrogate::core::b64::encode(&point[1..33]),
        "y": pyrogate::core::b64::encode(&point[33..65]),
    }]});
    let es = |claims: &Value| {
        let input = format!(
            "{}.{}",
            b64_json(&json!({"alg": "ES256", "kid": "ec-1"})),
            b64_json(claims)
        );
        let sig = pair.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", pyrogate::core::b64::encode(sig.as_ref()))
    };
    let page = sign_in(Box::new(|n| es(&idp.claims("a", n, now)))).await;
    assert!(page.body.contains("unknown kid"), "{}", page.body);
    assert_eq!(idp.jwks_fetches(), 1);
    // … and after it, the keys are fetched again and the ES256 token verifies.
    app.clock().advance(31);
    let later = app.clock().now();
    let page = sign_in(Box::new(|n| es(&idp.claims("a", n, later)))).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert_eq!(idp.jwks_fetches(), 2);
}
