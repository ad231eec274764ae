//! The API-key REST API: `GET/POST /api/keys`, `DELETE /api/keys/{id}`, by session and by an
//! Admin key, and what every bad request answers.

use std::collections::BTreeSet;

use pyrogate::core::clock::Clock as _;
use serde_json::{Value, json};

use crate::harness::*;

fn field_names(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|k| s(k, "name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_key_answers_201_with_the_key_shown_once() {
    let app = Authority::start().await;
    let http = app.admin().await;
    let now = app.clock().now();
    let created = http.create_key("checkout-service", "Agent", 3600).await;
    assert_eq!(
        field_names(&created),
        [
            "createdAt",
            "expiresAt",
            "id",
            "key",
            "limits",
            "name",
            "role"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(created["limits"], Value::Null, "no limit unless asked for");
    assert!(created["id"].as_i64().is_some());
    assert_eq!(created["name"], "checkout-service");
    assert_eq!(created["role"], "Agent");
    assert_eq!(created["createdAt"], pyrogate::core::clock::rfc3339(now));
    assert_eq!(
        created["expiresAt"],
        pyrogate::core::clock::rfc3339(now + 3600)
    );
    let claims = claims_of(s(&created, "key"));
    assert_eq!(claims["iss"], "pyrogate");
    assert_eq!(claims["sub"], "checkout-service");
    assert_eq!(claims["role"], "Agent");
    assert_eq!(claims["iat"], now);
    assert_eq!(claims["exp"], now + 3600);
    assert!(s(&claims, "jti").len() >= 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_of_zero_or_none_makes_a_key_that_never_expires() {
    let app = Authority::start().await;
    let http = app.admin().await;
    let zero = http.create_key("zero", "Agent", 0).await;
    let absent = http
        .post("/api/keys")
        .json(&json!({ "name": "absent", "role": "ReadOnly" }))
        .send()
        .await
        .expect(201)
        .json();
    for created in [&zero, &absent] {
        assert_eq!(created["expiresAt"], Value::Null, "{created}");
        let claims = claims_of(s(created, "key"));
        assert!(claims.get("exp").is_none(), "{claims}");
    }
    for listed in http.keys().await.as_array().expect("array") {
        assert_eq!(listed["expiresAt"], Value::Null);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_names_are_case_insensitive_and_written_canonically() {
    let app = Authority::start().await;
    let http = app.admin().await;
    assert_eq!(http.create_key("a", "agent", 0).await["role"], "Agent");
    assert_eq!(
        http.create_key("b", "READONLY", 0).await["role"],
        "ReadOnly"
    );
    assert_eq!(http.create_key("c", "admin", 0).await["role"], "Admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_keys_never_shows_a_key_or_its_jti() {
    let app = Authority::start().await;
    let http = app.admin().await;
    let mut secrets = Vec::new();
    for (name, role, ttl) in [("ci", "Agent", 60), ("grafana", "ReadOnly", 0)] {
        let created = http.create_key(name, role, ttl).await;
        let key = s(&created, "key").to_owned();
        secrets.push(s(&claims_of(&key), "jti").to_owned());
        secrets.push(key.split('.').nth(2).expect("signature").to_owned());
        secrets.push(key);
    }
    let r = http.get("/api/keys").send().await.expect(200);
    let text = r.text();
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "{text} leaks {secret}");
    }
    let list = r.json();
    assert_eq!(names(&list), vec!["ci", "grafana"]);
    for k in list.as_array().expect("array") {
        let fields = field_names(k);
        for wanted in ["id", "name", "role", "createdAt", "expiresAt", "lastUsedAt"] {
            assert!(fields.contains(wanted), "{wanted} missing from {k}");
        }
        for never in ["key", "jti", "token"] {
            assert!(!fields.contains(never), "{never} in {k}");
        }
        assert_eq!(k["lastUsedAt"], Value::Null);
        assert_eq!(k["createdBy"], "user:admin");
    }
}

/// Every bad request, its status and its message; none of them may change the key list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_key_requests_are_refused_with_pyroscope_messages_and_change_nothing() {
    let app = Authority::start().await;
    let http = app.admin().await;
    http.create_key("existing", "Agent", 0).await;
    let before = http.keys().await;
    let long = |n: usize| "k".repeat(n);
    let cases: Vec<(String, u16, &str)> = vec![
        (
            json!({"name": "", "role": "Agent"}).to_string(),
            400,
            "api key name can't be empty",
        ),
        (
            json!({"name": "   ", "role": "Agent"}).to_string(),
            400,
            "api key name can't be empty",
        ),
        (
            json!({"role": "Agent"}).to_string(),
            400,
            "api key name can't be empty",
        ),
        (
            json!({"name": long(256), "role": "Agent"}).to_string(),
            400,
            "api key name must not exceed 255 characters",
        ),
        (
            json!({"name": long(10_000), "role": "Agent"}).to_string(),
            400,
            "api key name must not exceed 255 characters",
        ),
        (
            json!({"name": "a\nb", "role": "Agent"}).to_string(),
            400,
            "api key name must not contain control characters",
        ),
        (
            json!({"name": "nul\u{0}byte", "role": "Agent"}).to_string(),
            400,
            "api key name must not contain control characters",
        ),
        (
            json!({"name": "del\u{7f}", "role": "Agent"}).to_string(),
            400,
            "api key name must not contain control characters",
        ),
        (
            json!({"name": "existing", "role": "Agent"}).to_string(),
            409,
            "api key with this name already exists",
        ),
        (
            json!({"name": "x", "role": "Superuser"}).to_string(),
            400,
            "unknown role",
        ),
        (
            json!({"name": "x", "role": ""}).to_string(),
            400,
            "unknown role",
        ),
        (json!({"name": "x"}).to_string(), 400, "unknown role"),
        (
            json!({"name": "x", "role": "Agent", "ttlSeconds": -1}).to_string(),
            400,
            "ttlSeconds must not be negative",
        ),
        (
            json!({"name": "x", "role": "Agent", "ttlSeconds": 1_000_000_000_000_i64}).to_string(),
            400,
            "ttlSeconds must be at most",
        ),
        (
            r#"{"name":"x","role":"Agent","ttlSeconds":1e12}"#.to_owned(),
            400,
            "invalid request body",
        ),
        (
            r#"{"name":"x","role":"Agent","ttlSeconds":99999999999999999999999}"#.to_owned(),
            400,
            "invalid request body",
        ),
        (
            json!({"name": "x", "role": "Agent", "ttlSeconds": "60"}).to_string(),
            400,
            "invalid request body",
        ),
        (
            json!({"name": "x", "role": "Agent", "ttlSeconds": 1.5}).to_string(),
            400,
            "invalid request body",
        ),
        (
            json!({"name": "x", "role": "Agent", "expires": 60}).to_string(),
            400,
            "unknown field",
        ),
        (
            json!({"name": 7, "role": "Agent"}).to_string(),
            400,
            "invalid request body",
        ),
        (
            json!({"name": "x", "role": "Agent", "tenant": "a/b"}).to_string(),
            400,
            "invalid tenant id",
        ),
        ("{".to_owned(), 400, "request body is not valid JSON"),
        ("null".to_owned(), 400, "invalid request body"),
    ];
    for (body, status, wanted) in cases {
        let shown: String = body.chars().take(80).collect();
        let r = http
            .post("/api/keys")
            .raw("application/json", body.clone())
            .send()
            .await;
        assert_eq!(r.status.as_u16(), status, "{shown}: {}", r.text());
        let errors = r.errors();
        assert!(
            errors.iter().any(|e| e.contains(wanted)),
            "{shown}: {errors:?} lacks {wanted:?}"
        );
        assert_eq!(http.keys().await, before, "{shown} changed the key list");
    }
    // Every problem is reported at once.
    let r = http
        .post("/api/keys")
        .json(&json!({"name": "", "role": "nope", "ttlSeconds": -5}))
        .send()
        .await
        .expect(400);
    assert_eq!(r.errors().len(), 3, "{:?}", r.errors());
    // Not JSON at all.
    http.post("/api/keys")
        .raw("text/plain", "name=x&role=Agent")
        .send()
        .await
        .expect(400);
    assert_eq!(http.keys().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_name_and_the_longest_ttl_are_accepted() {
    let app = Authority::start().await;
    let http = app.admin().await;
    let name = "é".repeat(255);
    let created = http.create_key(&name, "Agent", 100 * 365 * 86_400).await;
    assert_eq!(created["name"], name.as_str());
    assert!(created["expiresAt"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_unknown_or_non_numeric_id_answers_404() {
    let app = Authority::start().await;
    let http = app.admin().await;
    let created = http.create_key("keep", "Agent", 0).await;
    let before = http.keys().await;
    for id in [
        "999",
        "0",
        "-1",
        "abc",
        "1.0",
        "1%20",
        "99999999999999999999999",
    ] {
        let r = http.delete(&format!("/api/keys/{id}")).send().await;
        assert_eq!(r.status, 404, "{id}: {}", r.text());
        assert_eq!(r.errors(), vec!["api key not found"], "{id}");
        assert_eq!(http.keys().await, before);
    }
    let path = format!("/api/keys/{}", created["id"]);
    http.delete(&path).send().await.expect(204);
    let r = http.delete(&path).send().await.expect(404);
    assert_eq!(r.errors(), vec!["api key not found"]);
    assert_eq!(http.keys().await, json!([]));
    // The name of a deleted key is free again.
    http.create_key("keep", "Agent", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_key_can_create_list_and_delete_keys_as_a_bearer_token() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let automation = admin.create_key("automation", "Admin", 0).await;
    let bot = app.client();
    let token = s(&automation, "key").to_owned();
    let created = bot
        .post("/api/keys")
        .bearer(&token)
        .json(&json!({ "name": "made-by-bot", "role": "Agent", "ttlSeconds": 60 }))
        .send()
        .await
        .expect(201)
        .json();
    let list = bot.get("/api/keys").bearer(&token).send().await.expect(200);
    let list = list.json();
    assert_eq!(names(&list), vec!["automation", "made-by-bot"]);
    assert_eq!(list[1]["createdBy"], "key:automation");
    // The bot's own key records its last use.
    assert!(list[0]["lastUsedAt"].is_string(), "{list}");
    bot.delete(&format!("/api/keys/{}", created["id"]))
        .bearer(&token)
        .send()
        .await
        .expect(204);
    // Bearer requests carry no cookie, so a cross-site header does not matter.
    bot.post("/api/keys")
        .bearer(&token)
        .header("origin", "http://elsewhere.example")
        .json(&json!({ "name": "cross", "role": "Agent" }))
        .send()
        .await
        .expect(201);
    // Endpoints about "me" need a user, not a key.
    bot.get("/api/user").bearer(&token).send().await.expect(403);
    // A key that deletes itself is refused from the next request on.
    bot.delete(&format!("/api/keys/{}", automation["id"]))
        .bearer(&token)
        .send()
        .await
        .expect(204);
    let r = bot.get("/api/keys").bearer(&token).send().await.expect(401);
    assert_eq!(r.errors(), vec!["invalid credentials: revoked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_read_only_keys_get_403_naming_the_admin_role() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let victim = admin.create_key("victim", "Agent", 0).await;
    let before = admin.keys().await;
    for role in ["Agent", "ReadOnly"] {
        let token = admin.create_key(&format!("{role}-key"), role, 0).await;
        let token = s(&token, "key").to_owned();
        let http = app.client();
        let attempts = [
            http.get("/api/keys").bearer(&token).send().await,
            http.post("/api/keys")
                .bearer(&token)
                .json(&json!({ "name": "escalate", "role": "Admin" }))
                .send()
                .await,
            http.delete(&format!("/api/keys/{}", victim["id"]))
                .bearer(&token)
                .send()
                .await,
            http.get("/api/users").bearer(&token).send().await,
            http.post("/api/signing-keys/rotate")
                .bearer(&token)
                .send()
                .await,
        ];
        for r in attempts {
            assert_eq!(r.status, 403, "{role}: {}", r.text());
            let errors = r.errors();
            assert!(errors[0].contains("Admin"), "{errors:?}");
            assert!(r.header("www-authenticate").is_none());
        }
    }
    let after = admin.keys().await;
    assert_eq!(
        names(&after),
        [
            names(&before),
            vec!["Agent-key".into(), "ReadOnly-key".into()]
        ]
        .concat()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_credentials_answer_401_with_a_bearer_challenge() {
    let app = Authority::start().await;
    let http = app.client();
    let attempts = [
        http.get("/api/keys").send().await,
        http.post("/api/keys")
            .json(&json!({ "name": "x", "role": "Admin" }))
            .send()
            .await,
        http.delete("/api/keys/1").send().await,
        http.get("/api/users").send().await,
        http.get("/api/user").send().await,
        http.post("/api/signing-keys/rotate").send().await,
    ];
    for r in attempts {
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.errors(), vec!["invalid credentials: missing"]);
        let challenge = r.header("www-authenticate").expect("WWW-Authenticate");
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
    }
    // Garbage and an unsupported scheme are 401 too, never 400 or 500.
    for auth in ["Bearer not-a-token", "Token abc", "Bearer ", "Basic !!!"] {
        let r = http
            .get("/api/keys")
            .header("authorization", auth)
            .send()
            .await;
        assert_eq!(r.status, 401, "{auth}: {}", r.text());
        assert!(r.header("www-authenticate").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_expires_on_the_clock() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let key = admin.create_key("short", "Admin", 60).await;
    let token = s(&key, "key").to_owned();
    let bot = app.client();
    bot.get("/api/keys").bearer(&token).send().await.expect(200);
    // Past exp plus the 60 s clock-skew allowance.
    app.clock().advance(60 + 60);
    let r = bot.get("/api/keys").bearer(&token).send().await.expect(401);
    assert_eq!(r.errors(), vec!["invalid credentials: expired"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_by_the_api_verifies_offline_until_it_is_deleted() {
    let app = Authority::start().await;
    let http = app.admin().await;
    let created = http.create_key("offline", "Agent", 3600).await;
    let token = s(&created, "key").to_owned();
    let jti = s(&claims_of(&token), "jti").to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let jwks = dir.path().join("jwks.json");
    let revocations = dir.path().join("revocations.jwt");
    let body = http
        .get("/.well-known/jwks.json")
        .send()
        .await
        .expect(200)
        .body;
    std::fs::write(&jwks, &body).expect("write jwks");
    let jwks_arg = jwks.to_str().expect("utf-8 path");
    let out = pyrogate_async(&["token", "verify", "--jwks", jwks_arg, &token], &[], "")
        .await
        .ok();
    let claims: Value = serde_json::from_str(&out.stdout).expect("claims JSON");
    assert_eq!(claims["sub"], "offline");
    assert_eq!(claims["jti"], jti.as_str());

    http.delete(&format!("/api/keys/{}", created["id"]))
        .send()
        .await
        .expect(204);
    let list = http.get("/api/revocations").send().await.expect(200).text();
    let payload = claims_of(&list);
    let jtis: Vec<&str> = payload["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| s(e, "jti"))
        .collect();
    assert_eq!(jtis, vec![jti.as_str()]);
    std::fs::write(&revocations, &list).expect("write list");
    let out = pyrogate_async(
        &[
            "token",
            "verify",
            "--jwks",
            jwks_arg,
            "--revocations",
            revocations.to_str().expect("utf-8 path"),
            &token,
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("invalid credentials: revoked"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_must_be_json_objects_not_arrays() {
    let app = Authority::start().await;
    let http = app.admin().await;
    // serde would fill a struct from an array in field order; the API takes objects only.
    let r = http
        .post("/api/keys")
        .raw("application/json", r#"["from-array","Admin",0,null]"#)
        .send()
        .await
        .expect(400);
    assert!(
        r.errors()[0].contains("expected a JSON object"),
        "{:?}",
        r.errors()
    );
    assert_eq!(http.keys().await, json!([]));
    let r = app
        .client()
        .post("/api/login")
        .raw(
            "application/json",
            json!([ADMIN, ADMIN_PASSWORD]).to_string(),
        )
        .send()
        .await
        .expect(400);
    assert!(r.header("set-cookie").is_none());
    http.post("/api/users")
        .raw(
            "application/json",
            json!(["eve", null, null, "eve-password-1", "Admin"]).to_string(),
        )
        .send()
        .await
        .expect(400);
    // Duplicate members are refused, not resolved silently.
    http.post("/api/keys")
        .raw(
            "application/json",
            r#"{"name":"a","role":"Agent","name":"b"}"#,
        )
        .send()
        .await
        .expect(400);
    assert_eq!(http.keys().await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_name_make_exactly_one_key() {
    let app = Authority::start().await;
    let http = app.admin().await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            http.post("/api/keys")
                .json(&json!({ "name": "race", "role": "Agent" }))
                .send()
                .await
                .status
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [&[201][..], &[409; 9][..]].concat());
    assert_eq!(names(&http.keys().await), vec!["race"]);
}

/// Scopes through the API: `apps` and `cidrs` are signed into the key (under the scoped
/// `typ`), returned on creation and by `GET /api/keys`, and a bad one is a 400 naming its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_keys_are_created_listed_and_validated_by_field() {
    let app = Authority::start().await;
    let http = app.admin().await;
    let created = http
        .post("/api/keys")
        .json(
            &json!({"name": "checkout-agent", "role": "Agent", "ttlSeconds": 0,
                      "apps": ["checkout", "checkout-*"], "cidrs": ["10.0.0.0/8", "::1"]}),
        )
        .send()
        .await
        .expect(201)
        .json();
    assert_eq!(created["apps"], json!(["checkout", "checkout-*"]));
    assert_eq!(created["cidrs"], json!(["10.0.0.0/8", "::1"]));
    let token = created["key"].as_str().expect("key");
    let claims = crate::support::claims_of(token);
    assert_eq!(claims["apps"], created["apps"]);
    assert_eq!(claims["cidrs"], created["cidrs"]);
    http.create_key("plain", "ReadOnly", 0).await;
    let listed = http.keys().await;
    assert_eq!(listed[0]["apps"], json!(["checkout", "checkout-*"]));
    assert_eq!(listed[0]["cidrs"], json!(["10.0.0.0/8", "::1"]));
    assert!(listed[1].get("apps").is_none() && listed[1].get("cidrs").is_none());

    for (body, field) in [
        (
            json!({"name": "a", "role": "Agent", "apps": ["bad app"]}),
            "apps: ",
        ),
        (json!({"name": "a", "role": "Agent", "apps": []}), "apps: "),
        (
            json!({"name": "a", "role": "Admin", "apps": ["x"]}),
            "apps: ",
        ),
        (
            json!({"name": "a", "role": "Agent", "cidrs": ["10.0.0.1/8"]}),
            "cidrs: ",
        ),
        (
            json!({"name": "a", "role": "Agent", "cidrs": ["nowhere"]}),
            "cidrs: ",
        ),
    ] {
        let r = http.post("/api/keys").json(&body).send().await.expect(400);
        let errors = r.errors();
        assert!(
            errors.iter().any(|e| e.starts_with(field)),
            "{body}: {errors:?}"
        );
    }
    assert_eq!(http.keys().await.as_array().expect("list").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_set_at_creation_defaulted_by_role_changed_and_validated() {
    let app = Authority::start_with(
        "auth:\n  default-key-limits:\n    agent:\n      pushes-per-second: \"2.5\"\n",
    )
    .await;
    let http = app.admin().await;
    let post = |body: Value| {
        let http = http.clone();
        async move { http.post("/api/keys").json(&body).send().await }
    };
    // Absent: the role's default (burst filled in); null: none; given: as given.
    let agent = post(json!({ "name": "a", "role": "Agent" }))
        .await
        .expect(201)
        .json();
    assert_eq!(
        agent["limits"],
        json!({ "pushesPerSecond": 2.5, "burstPushes": 3 })
    );
    let free = post(json!({ "name": "b", "role": "Agent", "limits": null }))
        .await
        .expect(201)
        .json();
    assert_eq!(free["limits"], Value::Null);
    let reader = post(json!({ "name": "c", "role": "ReadOnly" }))
        .await
        .expect(201)
        .json();
    assert_eq!(
        reader["limits"],
        Value::Null,
        "no default for a role that can't push"
    );
    let given = json!({ "pushesPerSecond": 10.0, "burstPushes": 20, "bytesPerSecond": 1000, "burstBytes": 5000 });
    let set = post(json!({ "name": "d", "role": "Admin", "limits": given.clone() }))
        .await
        .expect(201)
        .json();
    assert_eq!(set["limits"], given);

    // Every problem at once, each named by its field.
    let bad = post(json!({
        "name": "e", "role": "Agent",
        "limits": { "pushesPerSecond": 0, "burstBytes": 10 }
    }))
    .await
    .expect(400)
    .errors();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad.iter().all(|e| e.starts_with("limits.")), "{bad:?}");
    post(json!({ "name": "e", "role": "Agent", "limits": { "rate": 1 } }))
        .await
        .expect(400);

    // PATCH changes the limits of the same key and moves the list version.
    let id = agent["id"].as_i64().unwrap();
    let before = app.revocations_version().await;
    let patch = |path: String, body: Value| {
        let http = http.clone();
        async move {
            http.request(axum::http::Method::PATCH, &path)
                .json(&body)
                .send()
                .await
        }
    };
    let changed = patch(
        format!("/api/keys/{id}"),
        json!({ "limits": { "bytesPerSecond": 4096 } }),
    )
    .await
    .expect(200)
    .json();
    assert_eq!(
        changed["limits"],
        json!({ "bytesPerSecond": 4096, "burstBytes": 4096 })
    );
    assert_eq!(changed["name"], "a");
    assert!(app.revocations_version().await > before);
    let listed = http.keys().await;
    let a = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "a")
        .unwrap();
    assert_eq!(a["limits"]["bytesPerSecond"], 4096);
    assert_eq!(a["limitedRecently"], false);
    assert_eq!(a["lastLimitedAt"], Value::Null);
    patch(format!("/api/keys/{id}"), json!({}))
        .await
        .expect(400);
    patch("/api/keys/999999".into(), json!({ "limits": null }))
        .await
        .expect(404);
    patch(
        format!("/api/keys/{id}"),
        json!({ "limits": { "burstPushes": 3 } }),
    )
    .await
    .expect(400);

    // Only an admin may change a limit.
    let (_, agent_key) = app.new_key("pusher", "Agent", None).await;
    app.client()
        .request(axum::http::Method::PATCH, &format!("/api/keys/{id}"))
        .bearer(&agent_key)
        .json(&json!({ "limits": null }))
        .send()
        .await
        .expect(403);
}
