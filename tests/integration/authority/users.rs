//! Users: `/api/user` and `PUT /api/user/password` for oneself, `/api/users…` for admins, and
//! the rule that there is always an enabled admin.

use serde_json::{Value, json};

use crate::harness::*;

const USER_FIELDS: [&str; 11] = [
    "id",
    "name",
    "email",
    "fullName",
    "role",
    "isDisabled",
    "isExternal",
    "createdAt",
    "updatedAt",
    "lastSeenAt",
    "passwordChangedAt",
];

fn assert_user_shape(u: &Value) {
    let obj = u.as_object().expect("user object");
    for field in USER_FIELDS {
        assert!(obj.contains_key(field), "{field} missing from {u}");
    }
    assert_eq!(obj.len(), USER_FIELDS.len(), "unexpected fields in {u}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_api_user_returns_the_callers_own_account() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let me = admin.get("/api/user").send().await.expect(200).json();
    assert_user_shape(&me);
    assert_eq!(me["name"], ADMIN);
    assert_eq!(me["email"], "admin@localhost");
    assert_eq!(me["role"], "Admin");
    assert_eq!(me["isDisabled"], false);
    assert!(me["lastSeenAt"].is_string());
    create_user(&admin, "bob", "Agent", "bob-password-1").await;
    let bob = app.logged_in("bob", "bob-password-1").await;
    let me = bob.get("/api/user").send().await.expect(200).json();
    assert_eq!(me["name"], "bob");
    assert_eq!(me["role"], "Agent");
    // Updating oneself is allowed for any role, other users' records are not.
    let me = bob
        .request(hyper::Method::PATCH, "/api/user")
        .json(&json!({ "fullName": "Bob Builder", "email": "bob@example.com" }))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(me["fullName"], "Bob Builder");
    bob.get("/api/users").send().await.expect(403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_ones_password_needs_the_old_one_and_ends_other_sessions() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let other_session = app.admin().await;
    let r = admin
        .put("/api/user/password")
        .json(&json!({ "oldPassword": "not-it-at-all", "newPassword": "a-new-password-1" }))
        .send()
        .await
        .expect(400);
    assert_eq!(r.errors(), vec!["the current password is wrong"]);
    let r = admin
        .put("/api/user/password")
        .json(&json!({ "oldPassword": ADMIN_PASSWORD, "newPassword": "short" }))
        .send()
        .await
        .expect(400);
    assert_eq!(
        r.errors(),
        vec!["user password must be at least 8 characters"]
    );
    admin
        .put("/api/user/password")
        .json(&json!({ "oldPassword": ADMIN_PASSWORD }))
        .send()
        .await
        .expect(400);
    // Nothing changed so far.
    other_session.get("/api/user").send().await.expect(200);

    admin
        .put("/api/user/password")
        .json(&json!({ "oldPassword": ADMIN_PASSWORD, "newPassword": "a-new-password-1" }))
        .send()
        .await
        .expect(204);
    // The session that made the change lives on; every other one ends.
    admin.get("/api/user").send().await.expect(200);
    other_session.get("/api/user").send().await.expect(401);
    app.client().login(ADMIN, ADMIN_PASSWORD).await.expect(401);
    app.logged_in(ADMIN, "a-new-password-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_cannot_change_a_password() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let key = admin.create_key("bot", "Admin", 0).await;
    app.client()
        .put("/api/user/password")
        .bearer(s(&key, "key"))
        .json(&json!({ "oldPassword": ADMIN_PASSWORD, "newPassword": "a-new-password-1" }))
        .send()
        .await
        .expect(403);
    app.logged_in(ADMIN, ADMIN_PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_list_update_reset_and_delete_users() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let created = admin
        .post("/api/users")
        .json(&json!({
            "name": "bob",
            "email": "bob@example.com",
            "fullName": "Bob",
            "password": "bob-password-1",
            "role": "readonly",
        }))
        .send()
        .await
        .expect(201)
        .json();
    assert_user_shape(&created);
    assert_eq!(created["role"], "ReadOnly");
    assert_eq!(created["lastSeenAt"], Value::Null);
    let id = created["id"].as_i64().expect("id");

    let list = admin.get("/api/users").send().await.expect(200).json();
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|u| s(u, "name"))
        .collect();
    assert_eq!(names, vec![ADMIN, "bob"]);
    let one = admin
        .get(&format!("/api/users/{id}"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(one["email"], "bob@example.com");

    let updated = admin
        .request(hyper::Method::PATCH, &format!("/api/users/{id}"))
        .json(&json!({ "name": "robert" }))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(updated["name"], "robert");
    app.logged_in("robert", "bob-password-1").await;
    let r = admin
        .request(hyper::Method::PATCH, &format!("/api/users/{id}"))
        .json(&json!({ "name": "ADMIN" }))
        .send()
        .await
        .expect(409);
    assert_eq!(r.errors(), vec!["user with this name already exists"]);

    admin
        .put(&format!("/api/users/{id}/password"))
        .json(&json!({ "password": "reset-password-2" }))
        .send()
        .await
        .expect(204);
    app.client()
        .login("robert", "bob-password-1")
        .await
        .expect(401);
    let robert = app.logged_in("robert", "reset-password-2").await;

    admin
        .delete(&format!("/api/users/{id}"))
        .send()
        .await
        .expect(204);
    let r = admin
        .get(&format!("/api/users/{id}"))
        .send()
        .await
        .expect(404);
    assert_eq!(r.errors(), vec!["user not found"]);
    // A deleted user's session and password are gone with them.
    robert.get("/api/user").send().await.expect(401);
    app.client()
        .login("robert", "reset-password-2")
        .await
        .expect(401);
    for path in ["/api/users/abc", "/api/users/999", "/api/users/-1"] {
        let r = admin.get(path).send().await.expect(404);
        assert_eq!(r.errors(), vec!["user not found"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_user_requests_get_pyroscopes_messages_and_change_nothing() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    create_user(&admin, "bob", "ReadOnly", "bob-password-1").await;
    let before = admin.get("/api/users").send().await.expect(200).json();
    let ok = |name: &str| json!({ "name": name, "password": "good-password-1", "role": "Agent" });
    let mut long_name = ok("");
    long_name["name"] = json!("u".repeat(256));
    let mut bad_role = ok("carol");
    bad_role["role"] = json!("Superuser");
    let mut no_role = ok("carol");
    no_role.as_object_mut().expect("object").remove("role");
    let mut short_password = ok("carol");
    short_password["password"] = json!("short");
    let mut bad_email = ok("carol");
    bad_email["email"] = json!("not an email");
    let mut extra = ok("carol");
    extra["isAdmin"] = json!(true);
    let cases: Vec<(Value, u16, &str)> = vec![
        (ok(""), 400, "user name can't be empty"),
        (ok("  "), 400, "user name can't be empty"),
        (long_name, 400, "user name can't be longer than 255 symbols"),
        (ok("a\tb"), 400, "control characters"),
        (ok("bob"), 409, "user with this name already exists"),
        (ok("BOB"), 409, "user with this name already exists"),
        (bad_role, 400, "unknown role"),
        (no_role, 400, "unknown role"),
        (
            short_password,
            400,
            "user password must be at least 8 characters",
        ),
        (bad_email, 400, "user email is invalid"),
        (extra, 400, "unknown field"),
    ];
    for (body, status, wanted) in cases {
        let r = admin.post("/api/users").json(&body).send().await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text());
        let errors = r.errors();
        assert!(
            errors.iter().any(|e| e.contains(wanted)),
            "{body}: {errors:?} lacks {wanted:?}"
        );
        assert!(
            !r.text().contains("good-password-1"),
            "password echoed: {}",
            r.text()
        );
        let after = admin.get("/api/users").send().await.expect(200).json();
        assert_eq!(after, before, "{body} changed the users");
    }
    let r = admin
        .put("/api/users/2/role")
        .json(&json!({ "role": "Owner" }))
        .send()
        .await
        .expect(400);
    assert_eq!(r.errors(), vec!["unknown role"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_cannot_log_in_until_enabled() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let id = create_user(&admin, "bob", "ReadOnly", "bob-password-1").await;
    admin
        .put(&format!("/api/users/{id}/disable"))
        .send()
        .await
        .expect(200);
    let r = app
        .client()
        .login("bob", "bob-password-1")
        .await
        .expect(401);
    // The same answer as a wrong password: nothing tells an attacker the account exists.
    assert_eq!(r.errors(), vec!["invalid username or password"]);
    admin
        .put(&format!("/api/users/{id}/enable"))
        .send()
        .await
        .expect(200);
    app.logged_in("bob", "bob-password-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_enabled_admin_cannot_be_disabled_demoted_or_deleted() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let me = admin.get("/api/user").send().await.expect(200).json();
    let admin_id = me["id"].as_i64().expect("id");
    // An Admin API key is not a user, so only the rule itself stands in the way.
    let key = admin.create_key("automation", "Admin", 0).await;
    let bot = app.client();
    let token = s(&key, "key").to_owned();
    let last = "this is the last enabled admin; make another user an admin first";
    let attempts = [
        bot.put(&format!("/api/users/{admin_id}/disable"))
            .bearer(&token)
            .send()
            .await,
        bot.put(&format!("/api/users/{admin_id}/role"))
            .bearer(&token)
            .json(&json!({ "role": "ReadOnly" }))
            .send()
            .await,
        bot.delete(&format!("/api/users/{admin_id}"))
            .bearer(&token)
            .send()
            .await,
        // Demoting oneself is the same mistake.
        admin
            .put(&format!("/api/users/{admin_id}/role"))
            .json(&json!({ "role": "Agent" }))
            .send()
            .await,
    ];
    for r in attempts {
        assert_eq!(r.status, 409, "{}", r.text());
        assert_eq!(r.errors(), vec![last]);
    }
    admin.get("/api/keys").send().await.expect(200);

    // A disabled admin does not count as another admin.
    let carol = create_user(&admin, "carol", "Admin", "carol-password-1").await;
    admin
        .put(&format!("/api/users/{carol}/disable"))
        .send()
        .await
        .expect(200);
    bot.put(&format!("/api/users/{admin_id}/disable"))
        .bearer(&token)
        .send()
        .await
        .expect(409);
    // An enabled one does: then the first admin may go, and carol becomes the last.
    admin
        .put(&format!("/api/users/{carol}/enable"))
        .send()
        .await
        .expect(200);
    bot.put(&format!("/api/users/{admin_id}/role"))
        .bearer(&token)
        .json(&json!({ "role": "ReadOnly" }))
        .send()
        .await
        .expect(200);
    let r = bot
        .put(&format!("/api/users/{carol}/disable"))
        .bearer(&token)
        .send()
        .await
        .expect(409);
    assert_eq!(r.errors(), vec![last]);
    app.logged_in("carol", "carol-password-1")
        .await
        .keys()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cannot_disable_or_delete_themself() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    create_user(&admin, "carol", "Admin", "carol-password-1").await;
    let r = admin.put("/api/users/1/disable").send().await.expect(400);
    assert_eq!(r.errors(), vec!["you can't disable yourself"]);
    let r = admin.delete("/api/users/1").send().await.expect(400);
    assert_eq!(r.errors(), vec!["you can't delete yourself"]);
    admin.get("/api/user").send().await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admin_users_get_403_on_every_admin_user_endpoint() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    create_user(&admin, "viewer", "ReadOnly", "viewer-password").await;
    let viewer = app.logged_in("viewer", "viewer-password").await;
    let attempts = [
        viewer.get("/api/users").send().await,
        viewer.get("/api/users/1").send().await,
        viewer
            .post("/api/users")
            .json(&json!({ "name": "x", "password": "xxxxxxxxxx", "role": "Admin" }))
            .send()
            .await,
        viewer.put("/api/users/1/disable").send().await,
        viewer
            .put("/api/users/2/role")
            .json(&json!({ "role": "Admin" }))
            .send()
            .await,
        viewer
            .put("/api/users/1/password")
            .json(&json!({ "password": "takeover-password" }))
            .send()
            .await,
        viewer.delete("/api/users/1").send().await,
    ];
    for r in attempts {
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.errors()[0].contains("Admin"), "{:?}", r.errors());
    }
    let me = viewer.get("/api/user").send().await.expect(200).json();
    assert_eq!(me["role"], "ReadOnly");
    app.logged_in(ADMIN, ADMIN_PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_disabling_or_demoting_each_other_at_once_leave_one_enabled_admin() {
    for round in 0..10 {
        let app = Authority::start().await;
        let root = app.admin().await;
        let a = create_user(
            &root,
            &format!("a{round}"),
            "Admin",
            "correct-horse-battery-a",
        )
        .await;
        let b = create_user(
            &root,
            &format!("b{round}"),
            "Admin",
            "correct-horse-battery-b",
        )
        .await;
        let root_id = root.get("/api/user").send().await.expect(200).json()["id"]
            .as_i64()
            .unwrap();
        // Only a and b stay admins.
        let (ha, hb) = (
            app.logged_in(&format!("a{round}"), "correct-horse-battery-a")
                .await,
            app.logged_in(&format!("b{round}"), "correct-horse-battery-b")
                .await,
        );
        ha.put(&format!("/api/users/{root_id}/role"))
            .json(&json!({ "role": "ReadOnly" }))
            .send()
            .await
            .expect(200);
        let (ra, rb) = if round % 2 == 0 {
            tokio::join!(
                ha.put(&format!("/api/users/{b}/disable")).send(),
                hb.put(&format!("/api/users/{a}/disable")).send()
            )
        } else {
            tokio::join!(
                ha.put(&format!("/api/users/{b}/role"))
                    .json(&json!({ "role": "ReadOnly" }))
                    .send(),
                hb.put(&format!("/api/users/{a}/role"))
                    .json(&json!({ "role": "ReadOnly" }))
                    .send()
            )
        };
        let statuses = [ra.status.as_u16(), rb.status.as_u16()];
        let users = app.state.store.list_users().await.unwrap();
        let enabled_admins = users
            .iter()
            .filter(|u| u.role == pyrogate::core::token::Role::Admin && !u.is_disabled)
            .count();
        assert_eq!(
            enabled_admins, 1,
            "round {round}: {statuses:?} must leave exactly one enabled admin"
        );
        // One change wins; the other is refused: as the last admin (409), or because its
        // caller was demoted or disabled a moment earlier (403/401).
        assert!(
            statuses.iter().filter(|s| **s < 300).count() == 1,
            "round {round}: {statuses:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_or_deleting_a_user_revokes_the_keys_they_created_unless_told_to_keep_them() {
    let app = Authority::start().await;
    let root = app.admin().await;
    for (i, keep) in [(0, false), (1, true), (2, false)] {
        let name = format!("maker{i}");
        let id = create_user(&root, &name, "Admin", "correct-horse-battery-m").await;
        let maker = app.logged_in(&name, "correct-horse-battery-m").await;
        let key = maker
            .create_key(&format!("made-by-{name}"), "Admin", 0)
            .await;
        let key = s(&key, "key").to_owned();
        // The key works as an Admin key on the authority's own API.
        app.client()
            .get("/api/keys")
            .bearer(&key)
            .send()
            .await
            .expect(200);
        let query = if keep { "?keepKeys=true" } else { "" };
        let r = if i == 2 {
            root.delete(&format!("/api/users/{id}{query}"))
                .send()
                .await
                .expect(204)
        } else {
            root.put(&format!("/api/users/{id}/disable{query}"))
                .send()
                .await
                .expect(200)
        };
        let after = app.client().get("/api/keys").bearer(&key).send().await;
        if keep {
            assert_eq!(r.header("pyrogate-revoked-keys"), None);
            after.expect(200);
        } else {
            assert_eq!(r.header("pyrogate-revoked-keys"), Some("1"));
            let after = after.expect(401);
            assert!(
                after.errors()[0].contains("revoked"),
                "{:?}",
                after.errors()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_issued_key_is_revoked_by_its_jti() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let issued = pyrogate_async(
        &[
            "token",
            "issue",
            "--name",
            "offline",
            "--role",
            "Admin",
            "--ttl",
            "3600",
            "--keys-dir",
            app.keys_dir().to_str().unwrap(),
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(issued.code, Some(0), "{}", issued.stderr);
    let token = issued.stdout.trim().to_owned();
    app.client()
        .get("/api/keys")
        .bearer(&token)
        .send()
        .await
        .expect(200);
    let jti = s(&claims_of(&token), "jti").to_owned();
    // Garbage is refused with a reason and changes nothing.
    let bad = admin
        .post("/api/revocations/jti")
        .json(&json!({ "jti": "../../x" }))
        .send()
        .await
        .expect(400);
    assert!(bad.errors()[0].contains("jti"), "{:?}", bad.errors());
    let r = admin
        .post("/api/revocations/jti")
        .json(&json!({ "jti": jti }))
        .send()
        .await
        .expect(201)
        .json();
    assert!(r["revocationsVersion"].as_u64().unwrap() >= 1, "{r}");
    let after = app
        .client()
        .get("/api/keys")
        .bearer(&token)
        .send()
        .await
        .expect(401);
    assert!(
        after.errors()[0].contains("revoked"),
        "{:?}",
        after.errors()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_and_hidden_character_names_are_refused_for_users_and_keys() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let try_user = |name: &str| {
        let admin = admin.clone();
        let body = json!({ "name": name, "password": "correct-horse-battery", "role": "Admin" });
        async move { admin.post("/api/users").json(&body).send().await }
    };
    // `admіn` with a Cyrillic і looks like the real admin.
    let r = try_user("adm\u{0456}n").await.expect(409);
    assert!(r.errors()[0].contains("looks the same"), "{:?}", r.errors());
    for hidden in ["ad\u{200B}min2", "bob\u{202E}evil", "x\u{2066}y"] {
        let r = try_user(hidden).await.expect(400);
        assert!(
            r.errors()[0].contains("invisible"),
            "{hidden:?}: {:?}",
            r.errors()
        );
    }
    // NFC: a decomposed é is stored composed, and the composed spelling is the same user.
    let created = try_user("Rene\u{0301}").await.expect(201).json();
    assert_eq!(created["name"], json!("Ren\u{00E9}"));
    try_user("Ren\u{00E9}").await.expect(409);

    admin.create_key("checkout", "Agent", 0).await;
    for (name, status, says) in [
        ("CHECK0UT", 409, "looks the same"),
        ("check\u{200D}out", 400, "invisible"),
    ] {
        let r = admin
            .post("/api/keys")
            .json(&json!({ "name": name, "role": "Agent" }))
            .send()
            .await
            .expect(status);
        assert!(r.errors()[0].contains(says), "{name:?}: {:?}", r.errors());
    }
}
