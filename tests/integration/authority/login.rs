//! `POST /api/login`, `POST /api/logout`, and what a session cookie can and cannot do.

use serde_json::json;

use crate::harness::*;

const LOCKOUT: &str = "auth:\n  login-max-failures: 3\n  login-lockout: 10m\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_password_answers_204_with_an_http_only_lax_session_cookie() {
    let app = Authority::start().await;
    let http = app.client();
    let r = http.login(ADMIN, ADMIN_PASSWORD).await.expect(204);
    assert!(r.body.is_empty());
    let cookie = r.header("set-cookie").expect("Set-Cookie");
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(attrs[0].starts_with("pyrogate_session="), "{cookie}");
    assert!(attrs[0].len() > "pyrogate_session=".len() + 20, "{cookie}");
    for wanted in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attrs.contains(&wanted), "{wanted} missing from {cookie}");
    }
    assert!(!attrs.contains(&"Secure"), "not Secure unless configured");
    let me = http.get("/api/user").send().await.expect(200).json();
    assert_eq!(me["name"], ADMIN);
    assert_eq!(me["role"], "Admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_secure_when_configured() {
    let app =
        Authority::start_with("auth:\n  cookie-secure: true\n  cookie-same-site: Strict\n").await;
    let r = app.client().login(ADMIN, ADMIN_PASSWORD).await.expect(204);
    let cookie = r.header("set-cookie").expect("Set-Cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_user_get_the_same_401() {
    let app = Authority::start().await;
    let http = app.client();
    let wrong = http.login(ADMIN, "not-the-password").await.expect(401);
    let unknown = http.login("nobody", ADMIN_PASSWORD).await.expect(401);
    assert_eq!(wrong.errors(), vec!["invalid username or password"]);
    assert_eq!(unknown.errors(), wrong.errors());
    assert_eq!(wrong.body, unknown.body);
    assert!(wrong.header("set-cookie").is_none());
    assert!(unknown.header("set-cookie").is_none());
    assert!(http.cookie().is_none());
    http.get("/api/user").send().await.expect(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_names_are_matched_without_regard_to_case() {
    let app = Authority::start().await;
    app.client()
        .login("ADMIN", ADMIN_PASSWORD)
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_past_the_limit_lock_that_user_out_from_that_address_only() {
    let app = Authority::start_with(LOCKOUT).await;
    let admin = app.admin().await;
    create_user(&admin, "bob", "ReadOnly", "bob-password-1").await;

    let a = app.client_from([127, 0, 0, 1]);
    for _ in 0..3 {
        a.login(ADMIN, "wrong-password").await.expect(401);
    }
    // Even the right password is refused now, from this address, in any case …
    let locked = a.login(ADMIN, ADMIN_PASSWORD).await.expect(429);
    let msg = &locked.errors()[0];
    assert!(msg.starts_with("too many failed login attempts"), "{msg}");
    assert_eq!(
        locked.header("retry-after"),
        Some("600"),
        "the whole window"
    );
    assert!(a.cookie().is_none());
    a.login("Admin", ADMIN_PASSWORD).await.expect(429);
    // … but guesses from elsewhere can't lock the real admin out: from another address the
    // admin logs in (the count is per user and address).
    let b = app.client_from([127, 0, 0, 2]);
    b.login(ADMIN, ADMIN_PASSWORD).await.expect(204);
    b.login("bob", "bob-password-1").await.expect(204);
    // The window passes on the clock, not on the wall.
    app.clock().advance(10 * 60);
    a.login(ADMIN, ADMIN_PASSWORD).await.expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_address_is_throttled_not_the_proxy() {
    let app = Authority::start_with(&format!(
        "{LOCKOUT}  trusted-proxies: 127.0.0.5, 10.0.0.0/8\n"
    ))
    .await;
    let proxy = app.client_from([127, 0, 0, 5]);
    let login = |xff: &'static str, password: &'static str| {
        let proxy = proxy.clone();
        async move {
            proxy
                .post("/api/login")
                .header("x-forwarded-for", xff)
                .json(&json!({ "username": ADMIN, "password": password }))
                .send()
                .await
        }
    };
    // One client behind the balancer guesses (it also puts a made-up address in front).
    for _ in 0..3 {
        login("6.6.6.6, 203.0.113.9, 10.1.2.3", "wrong-password")
            .await
            .expect(401);
    }
    login("6.6.6.6, 203.0.113.9, 10.1.2.3", ADMIN_PASSWORD)
        .await
        .expect(429);
    // Another client through the same balancer is not affected.
    login("198.51.100.7, 10.1.2.3", ADMIN_PASSWORD)
        .await
        .expect(204);
    // An untrusted peer's X-Forwarded-For is ignored: it is throttled by its own address.
    let direct = app.client_from([127, 0, 0, 6]);
    for _ in 0..3 {
        direct
            .post("/api/login")
            .header("x-forwarded-for", "192.0.2.1")
            .json(&json!({ "username": ADMIN, "password": "wrong-password" }))
            .send()
            .await
            .expect(401);
    }
    direct
        .post("/api/login")
        .header("x-forwarded-for", "192.0.2.99")
        .json(&json!({ "username": ADMIN, "password": ADMIN_PASSWORD }))
        .send()
        .await
        .expect(429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_past_the_limit_lock_out_the_client_address_for_every_user() {
    let app = Authority::start_with(LOCKOUT).await;
    let a = app.client_from([127, 0, 0, 1]);
    for ghost in ["ghost1", "ghost2", "ghost3"] {
        a.login(ghost, "wrong-password").await.expect(401);
    }
    // One client spraying names is stopped, whether or not the next name exists.
    let known = a.login(ADMIN, ADMIN_PASSWORD).await.expect(429);
    let unknown = a.login("ghost4", "whatever-password").await.expect(429);
    assert_eq!(known.body, unknown.body);
    // The admin account itself is fine from another address.
    let b = app.client_from([127, 0, 0, 2]);
    b.login(ADMIN, ADMIN_PASSWORD).await.expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_login_requests_answer_400_in_pyroscope_shape() {
    let app = Authority::start().await;
    let http = app.client();
    let cases: Vec<(&str, &str, &str)> = vec![
        ("application/json", "{", "request body is not valid JSON"),
        ("application/json", "", "request body is not valid JSON"),
        ("application/json", r#"{"username":"admin"}"#, "password"),
        ("application/json", r#"{"password":"x"}"#, "username"),
        (
            "application/json",
            r#"{"username":1,"password":"x"}"#,
            "invalid request body",
        ),
        (
            "text/plain",
            r#"{"username":"admin","password":"correct-horse-battery-staple"}"#,
            "Content-Type: application/json",
        ),
        (
            "application/x-www-form-urlencoded",
            "username=admin&password=correct-horse-battery-staple",
            "Content-Type: application/json",
        ),
    ];
    for (content_type, body, wanted) in cases {
        let r = http
            .post("/api/login")
            .raw(content_type, body.to_owned())
            .send()
            .await;
        assert_eq!(r.status, 400, "{content_type} {body:?}: {}", r.text());
        let errors = r.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains(wanted),
            "{body:?}: {errors:?} lacks {wanted:?}"
        );
        assert!(
            !errors[0].contains("correct-horse"),
            "the password is echoed: {errors:?}"
        );
    }
    // A body with no Content-Type at all.
    let r = http
        .post("/api/login")
        .header("content-length", "0")
        .send()
        .await
        .expect(400);
    assert_eq!(r.errors().len(), 1);
    assert!(http.cookie().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_for_every_copy_of_the_cookie() {
    let app = Authority::start().await;
    let http = app.admin().await;
    http.get("/api/user").send().await.expect(200);
    let saved = http.cookie().expect("session cookie");
    let r = http.post("/api/logout").send().await.expect(204);
    let cleared = r.header("set-cookie").expect("logout clears the cookie");
    assert!(cleared.starts_with("pyrogate_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert!(http.cookie().is_none());
    // A copy of the old cookie (a stolen one, say) no longer works.
    http.set_cookie(Some(saved));
    let r = http.get("/api/user").send().await.expect(401);
    assert!(r.header("www-authenticate").is_some());
    http.get("/api/keys").send().await.expect(401);
    // Logging out twice, or without a session, is harmless.
    app.client().post("/api/logout").send().await.expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_with_a_tampered_signature_is_refused() {
    let app = Authority::start().await;
    let http = app.admin().await;
    let cookie = http.cookie().expect("session cookie");
    http.set_cookie(Some(tamper(&cookie)));
    let r = http.get("/api/user").send().await.expect(401);
    assert!(r.header("www-authenticate").is_some());
    // Nor does a cookie whose payload was changed under the old signature.
    let parts: Vec<&str> = cookie.split('.').collect();
    let mut claims = claims_of(&cookie);
    claims["uid"] = json!(claims["uid"].as_i64().expect("uid") + 1);
    let payload = pyrogate::core::b64::encode(claims.to_string().as_bytes());
    http.set_cookie(Some(format!("{}.{payload}.{}", parts[0], parts[2])));
    http.get("/api/user").send().await.expect(401);
    // The untouched cookie still works.
    http.set_cookie(Some(cookie));
    http.get("/api/user").send().await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_expires_after_the_maximum_lifetime_on_the_clock() {
    let app = Authority::start_with("auth:\n  login-maximum-lifetime-days: 1\n").await;
    let http = app.admin().await;
    let r = http.get("/api/user").send().await.expect(200);
    drop(r);
    app.clock().advance(86_400 - 1);
    http.get("/api/user").send().await.expect(200);
    app.clock().advance(1);
    let r = http.get("/api/user").send().await.expect(401);
    assert!(r.errors()[0].contains("expired"), "{:?}", r.errors());
    // A new login works again.
    app.admin().await.get("/api/user").send().await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_users_session_stops_working_on_the_next_request() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let bob_id = create_user(&admin, "bob", "ReadOnly", "bob-password-1").await;
    let bob = app.logged_in("bob", "bob-password-1").await;
    assert_eq!(
        bob.get("/api/user").send().await.expect(200).json()["name"],
        "bob"
    );
    let r = admin
        .put(&format!("/api/users/{bob_id}/disable"))
        .send()
        .await
        .expect(200);
    assert_eq!(r.json()["isDisabled"], true);
    bob.get("/api/user").send().await.expect(401);
    let r = bob.login("bob", "bob-password-1").await.expect(401);
    assert_eq!(r.errors(), vec!["invalid username or password"]);
    // Enabling lets bob log in again (the old session stays dead).
    let old = bob.cookie();
    admin
        .put(&format!("/api/users/{bob_id}/enable"))
        .send()
        .await
        .expect(200);
    bob.set_cookie(old);
    bob.get("/api/user").send().await.expect(401);
    app.logged_in("bob", "bob-password-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_demoted_to_read_only_gets_403_on_api_keys_on_the_next_request() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let carol_id = create_user(&admin, "carol", "Admin", "carol-password-1").await;
    let carol = app.logged_in("carol", "carol-password-1").await;
    carol.keys().await;
    let r = admin
        .put(&format!("/api/users/{carol_id}/role"))
        .json(&json!({ "role": "ReadOnly" }))
        .send()
        .await
        .expect(200);
    assert_eq!(r.json()["role"], "ReadOnly");
    let r = carol.get("/api/keys").send().await.expect(403);
    assert!(r.errors()[0].contains("Admin"), "{:?}", r.errors());
    carol
        .post("/api/keys")
        .json(&json!({ "name": "x", "role": "Agent" }))
        .send()
        .await
        .expect(403);
    assert_eq!(admin.keys().await, json!([]));
    // Her own account still works.
    carol.get("/api/user").send().await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_authenticated_cross_site_posts_are_refused_and_create_nothing() {
    let app = Authority::start().await;
    let http = app.admin().await;
    let body = json!({ "name": "csrf", "role": "Admin", "ttlSeconds": 0 });
    let evil_origin = format!("{}.evil.example", app.origin());
    let attacks: Vec<(&str, &str)> = vec![
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("origin", &evil_origin),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ];
    for (name, value) in attacks {
        let r = http
            .post("/api/keys")
            .header(name, value)
            .json(&body)
            .send()
            .await;
        assert_eq!(r.status, 403, "{name}: {value}: {}", r.text());
        assert_eq!(r.errors(), vec!["cross-site request refused"]);
    }
    // A cross-site DELETE is refused too.
    let key = http.create_key("victim", "Agent", 0).await;
    http.delete(&format!("/api/keys/{}", key["id"]))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect(403);
    let keys = http.keys().await;
    let names: Vec<&str> = keys
        .as_array()
        .expect("array")
        .iter()
        .map(|k| s(k, "name"))
        .collect();
    assert_eq!(names, vec!["victim"]);
    // Login CSRF: a cross-site form can't log a victim in either.
    app.client()
        .login(ADMIN, ADMIN_PASSWORD)
        .await
        .expect(204)
        .header("set-cookie")
        .expect("cookie");
    let r = app
        .client()
        .post("/api/login")
        .header("origin", "http://evil.example")
        .json(&json!({ "username": ADMIN, "password": ADMIN_PASSWORD }))
        .send()
        .await
        .expect(403);
    assert!(r.header("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_origin_post_with_a_session_cookie_works() {
    let app = Authority::start().await;
    let http = app.admin().await;
    http.post("/api/keys")
        .header("origin", &app.origin())
        .header("sec-fetch-site", "same-origin")
        .json(&json!({ "name": "from-ui", "role": "Agent" }))
        .send()
        .await
        .expect(201);
    http.post("/api/keys")
        .header("origin", &app.origin())
        .json(&json!({ "name": "old-browser", "role": "Agent" }))
        .send()
        .await
        .expect(201);
    // Cross-site GETs are harmless reads and are allowed.
    http.get("/api/keys")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_sent_as_a_bearer_token_is_refused() {
    let app = Authority::start().await;
    let cookie = app.admin().await.cookie().expect("session cookie");
    let r = app
        .client()
        .get("/api/keys")
        .bearer(&cookie)
        .send()
        .await
        .expect(401);
    let challenge = r.header("www-authenticate").expect("challenge");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("invalid_token"), "{challenge}");
    app.client()
        .get("/api/user")
        .bearer(&cookie)
        .send()
        .await
        .expect(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_sent_as_the_session_cookie_is_refused() {
    let app = Authority::start().await;
    let key = app.admin().await.create_key("automation", "Admin", 0).await;
    let key = s(&key, "key").to_owned();
    // The key works as a bearer token …
    app.client()
        .get("/api/keys")
        .bearer(&key)
        .send()
        .await
        .expect(200);
    // … but never as a session cookie.
    let http = app.client();
    http.set_cookie(Some(key));
    http.get("/api/keys").send().await.expect(401);
    http.get("/api/user").send().await.expect(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_guesses_never_get_past_the_limit_and_oversized_names_do_no_work() {
    let app = Authority::start_with(LOCKOUT).await;
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let http = app.client_from([127, 0, 0, 9]);
            async move {
                http.login(&format!("guess{i}"), "wrong-password")
                    .await
                    .status
                    .as_u16()
            }
        })
        .collect();
    let statuses = futures_join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    // The attempt is counted before the password is checked: at most `login-max-failures`
    // guesses from one address reach argon2, however many arrive at once.
    assert!(checked <= 3, "{checked} guesses were checked: {statuses:?}");
    assert_eq!(checked + throttled, statuses.len(), "{statuses:?}");

    let huge = "x".repeat(1 << 20);
    let r = app
        .client()
        .login(&huge, "whatever-password")
        .await
        .expect(400);
    assert!(r.errors()[0].contains("too long"), "{:?}", r.errors());
    let stored: i64 = app
        .state
        .store
        .sqlite()
        .expect("the test authority runs on SQLite")
        .with(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM audit WHERE length(actor) > 10000",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(stored, 0, "an oversized name reached the audit table");
}

/// Runs every future at once (tokio's JoinSet, so they really overlap).
async fn futures_join_all<F>(futures: Vec<F>) -> Vec<u16>
where
    F: std::future::Future<Output = u16> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

/// Delays from the fifth failure on one name, 1 s doubling to at most 4 s, two waiting at once;
/// each address may fail 3 times, so the guesses below come from many addresses.
const DELAYS: &str = "auth:\n  login-max-failures: 3\n  login-lockout: 10m\n  login-delay-after: 4\n  login-delay: 1s\n  login-max-delay: 4s\n  login-max-waiting: 2\n";

/// Waits (polling, bounded) until `n` attempts on `name` wait for their turn.
async fn until_waiting(app: &Authority, name: &str, n: u32) {
    let deadline = Deadline::secs(20, format!("{n} attempts on {name} to wait"));
    while app.state.account_delays.waiting(name).await.unwrap() != n {
        deadline.tick(|| format!("{n} wanted")).await;
    }
}

fn spawn_login(
    http: Http,
    user: &'static str,
    password: &'static str,
) -> tokio::task::JoinHandle<Resp> {
    tokio::spawn(async move { http.login(user, password).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guess_at_one_account_from_many_addresses_waits_ever_longer_turns_but_its_owner_still_gets_in()
 {
    let app = Authority::start_with(DELAYS).await;
    let admin = app.admin().await;
    create_user(&admin, "bob", "ReadOnly", "bob-password-1").await;
    // Four failures from four addresses, each well under its own limit: answered at once.
    for i in 1..=4 {
        app.client_from([127, 0, 1, i])
            .login(ADMIN, "wrong-password")
            .await
            .expect(401);
    }
    // The fifth guess waits its turn, 1 s on the authority's clock, before any hashing …
    let guess = spawn_login(app.client_from([127, 0, 1, 5]), ADMIN, "wrong-password");
    until_waiting(&app, ADMIN, 1).await;
    // … and so does the owner, from an address that never failed: 2 s after the guess.
    let owner = spawn_login(app.client_from([127, 0, 2, 1]), "Admin", ADMIN_PASSWORD);
    until_waiting(&app, ADMIN, 2).await;
    // Two are waiting, the most allowed: a third is turned away at once, told when to retry
    // (when the queued turns are over), and not counted against its address.
    for _ in 0..3 {
        let r = app
            .client_from([127, 0, 1, 6])
            .login(ADMIN, "wrong-password")
            .await
            .expect(429);
        assert_eq!(r.header("retry-after"), Some("3"));
        let msg = &r.errors()[0];
        assert!(
            msg.starts_with("too many login attempts on this account"),
            "{msg}"
        );
    }
    // Waiting attempts hold no hashing slot: other accounts log in meanwhile.
    app.client_from([127, 0, 3, 1])
        .login("bob", "bob-password-1")
        .await
        .expect(204);
    assert!(!guess.is_finished() && !owner.is_finished());
    app.clock().advance(1);
    guess.await.expect("guess").expect(401);
    // The clock is 1 s short of the owner's turn.
    assert!(!owner.is_finished());
    assert_eq!(app.state.account_delays.waiting(ADMIN).await.unwrap(), 1);
    app.clock().advance(2);
    let r = owner.await.expect("owner").expect(204);
    assert!(r.header("set-cookie").is_some());
    // The success ended the count: the next failure is answered at once, and the address that
    // was turned away three times still has its whole budget.
    app.client_from([127, 0, 1, 7])
        .login(ADMIN, "wrong-password")
        .await
        .expect(401);
    app.client_from([127, 0, 1, 6])
        .login(ADMIN, ADMIN_PASSWORD)
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_are_per_user_name_whether_or_not_the_user_exists() {
    let app = Authority::start_with(DELAYS).await;
    for i in 1..=4 {
        app.client_from([127, 0, 1, i])
            .login("ghost", "wrong-password")
            .await
            .expect(401);
    }
    // A name that does not exist is slowed like one that does (no way to tell them apart) …
    let guess = spawn_login(app.client_from([127, 0, 1, 5]), "GHOST", "wrong-password");
    until_waiting(&app, "ghost", 1).await;
    // … and other names are not.
    app.client_from([127, 0, 1, 6])
        .login(ADMIN, ADMIN_PASSWORD)
        .await
        .expect(204);
    app.clock().advance(1);
    let r = guess.await.expect("guess").expect(401);
    assert_eq!(r.errors(), vec!["invalid username or password"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_writes_need_an_origin_with_the_same_scheme_host_and_port() {
    let app = Authority::start().await;
    let http = app.admin().await;
    let port = port_of(&app);
    let create = |origin: String, host: Option<&'static str>| {
        let http = http.clone();
        async move {
            let mut req = http
                .post("/api/keys")
                .header("origin", &origin)
                .json(&json!({ "name": "k", "role": "Agent" }));
            if let Some(host) = host {
                req = req.header("host", host);
            }
            let r = req.send().await;
            (r.status.as_u16(), r)
        }
    };
    // Same scheme, host and port as the request: allowed (then deleted, names are unique).
    for (origin, host) in [
        (app.origin(), None),
        // The default port, written or not.
        ("http://pyro.test".to_owned(), Some("pyro.test:80")),
        ("http://pyro.test:80".to_owned(), Some("pyro.test")),
    ] {
        let (status, r) = create(origin.clone(), host).await;
        assert_eq!(status, 201, "{origin} {host:?}: {}", r.text());
        http.delete_key(r.json()["id"].as_i64().expect("id")).await;
    }
    // Another scheme, port or host: refused.
    for (origin, host) in [
        (format!("https://127.0.0.1:{port}"), None),
        (format!("http://127.0.0.1:{}", port + 1), None),
        (format!("http://localhost:{port}"), None),
        (format!("http://127.0.0.1:{port}.evil.example"), None),
        ("https://pyro.test".to_owned(), Some("pyro.test")),
        ("https://pyro.test:80".to_owned(), Some("pyro.test")),
        ("http://pyro.test:8080".to_owned(), Some("pyro.test")),
    ] {
        let (status, r) = create(origin.clone(), host).await;
        assert_eq!(status, 403, "{origin} {host:?}: {}", r.text());
        assert_eq!(r.errors(), vec!["cross-site request refused"]);
    }
    // A login from another origin is refused too.
    app.client()
        .post("/api/login")
        .header("origin", &format!("https://127.0.0.1:{port}"))
        .json(&json!({ "username": ADMIN, "password": ADMIN_PASSWORD }))
        .send()
        .await
        .expect(403);
    assert_eq!(http.keys().await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_or_behind_a_trusted_tls_proxy_the_origin_must_be_https() {
    let pki = Pki::new("origin");
    let cert = pki.server("authority");
    let app = Authority::start_with(&format!(
        "server:\n  http-tls-cert-path: {:?}\n  http-tls-key-path: {:?}\n",
        cert.cert, cert.key
    ))
    .await;
    let http = Http::trusting(app.tls_origin(), &pki.ca_path(), None).with_jar();
    http.login(ADMIN, ADMIN_PASSWORD).await.expect(204);
    let write = |origin: &str, host: Option<&str>| {
        let mut req = http
            .post("/api/keys")
            .header("origin", origin)
            .json(&json!({ "name": "k", "role": "Agent" }));
        if let Some(host) = host {
            req = req.header("host", host);
        }
        req.send()
    };
    let port = port_of(&app);
    let r = write(&app.tls_origin(), None).await.expect(201);
    http.delete_key(r.json()["id"].as_i64().expect("id")).await;
    let r = write("https://pyro.test", Some("pyro.test:443"))
        .await
        .expect(201);
    http.delete_key(r.json()["id"].as_i64().expect("id")).await;
    write(&format!("http://localhost:{port}"), None)
        .await
        .expect(403);
    write("http://pyro.test:443", Some("pyro.test:443"))
        .await
        .expect(403);

    // TLS ends at a trusted proxy: its X-Forwarded-Proto says the browser used https.
    let app = Authority::start_with("auth:\n  trusted-proxies: 127.0.0.5\n").await;
    let cookie = app.admin().await.cookie();
    let through = |from: [u8; 4], origin: &'static str| {
        let http = app.client_from(from);
        http.set_cookie(cookie.clone());
        async move {
            http.post("/api/keys")
                .header("host", "pyro.test")
                .header("x-forwarded-proto", "https")
                .header("origin", origin)
                .json(&json!({ "name": "k", "role": "Agent" }))
                .send()
                .await
        }
    };
    through([127, 0, 0, 5], "https://pyro.test")
        .await
        .expect(201);
    through([127, 0, 0, 5], "http://pyro.test")
        .await
        .expect(403);
    // From anyone else the header is ignored: the listener is plain HTTP.
    through([127, 0, 0, 6], "https://pyro.test")
        .await
        .expect(403);
}

/// The port the authority listens on (from its origin, `http://127.0.0.1:PORT`).
fn port_of(app: &Authority) -> u16 {
    let origin = app.origin();
    origin
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}
