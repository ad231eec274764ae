//! What survives a restart: users, keys, revocations, the signing key, sessions, and the first
//! admin's password (created once, never regenerated or overwritten).

use serde_json::json;

use crate::harness::*;

async fn admin_hash(app: &Authority) -> String {
    let (user, hash) = app
        .state
        .store
        .find_user_for_login(ADMIN)
        .await
        .expect("store")
        .expect("admin exists");
    assert_eq!(user.name, ADMIN);
    hash
}

fn active_kid(app: &Authority) -> String {
    app.state
        .keyring
        .lock()
        .expect("keyring")
        .active()
        .kid()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_keys_revocations_signing_key_and_sessions_survive_a_restart() {
    everything_survives_a_restart_on(Authority::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_users_keys_revocations_signing_key_and_sessions_survive_a_restart() {
    let app = Authority::start_with(&database_yaml(&postgres_database().await)).await;
    assert!(
        app.state.store.sqlite().is_none(),
        "the store is PostgreSQL"
    );
    let data = app.data_dir();
    everything_survives_a_restart_on(app).await;
    assert!(
        !data.join("pyrogate.db").exists(),
        "no SQLite file next to a PostgreSQL store"
    );
}

/// What a restart keeps, whichever database `app` is on.
async fn everything_survives_a_restart_on(app: Authority) {
    assert!(app.first_start.created_signing_key.is_some());
    assert_eq!(
        app.first_start.created_admin,
        Some((ADMIN.to_owned(), None)),
        "the configured password is used, not a generated one"
    );
    let admin = app.admin().await;
    create_user(&admin, "bob", "ReadOnly", "bob-password-1").await;
    let agent = admin.create_key("agent", "Agent", 0).await;
    let automation = admin.create_key("automation", "Admin", 3600).await;
    let revoked = admin.create_key("revoked", "Admin", 0).await;
    admin
        .delete(&format!("/api/keys/{}", revoked["id"]))
        .send()
        .await
        .expect(204);
    let keys_before = admin.keys().await;
    let list_before = admin.get("/api/revocations").send().await.expect(200);
    let kid = active_kid(&app);
    let hash = admin_hash(&app).await;
    let cookie = admin.cookie().expect("session");

    let app = app.restart().await;
    assert!(app.first_start.created_signing_key.is_none());
    assert!(app.first_start.created_admin.is_none());
    assert_eq!(active_kid(&app), kid);
    assert_eq!(
        admin_hash(&app).await,
        hash,
        "the admin password was re-hashed"
    );

    let admin = app.client();
    admin.set_cookie(Some(cookie));
    assert_eq!(
        admin.get("/api/user").send().await.expect(200).json()["name"],
        ADMIN,
        "a session from before the restart still works"
    );
    app.logged_in(ADMIN, ADMIN_PASSWORD).await;
    app.logged_in("bob", "bob-password-1").await;
    assert_eq!(admin.keys().await, keys_before);

    let list = admin.get("/api/revocations").send().await.expect(200);
    assert_eq!(list.header("etag"), list_before.header("etag"));
    let entries = claims_of(&list.text())["entries"].clone();
    let revoked_jti = s(&claims_of(s(&revoked, "key")), "jti").to_owned();
    assert_eq!(entries.as_array().expect("entries").len(), 1);
    assert_eq!(entries[0]["jti"], revoked_jti.as_str());

    let jwks = admin
        .get("/.well-known/jwks.json")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    assert_eq!(jwks["keys"].as_array().expect("keys").len(), 1);

    // Keys issued before the restart verify on the new process; the revoked one does not.
    let bot = app.client();
    bot.get("/api/keys")
        .bearer(s(&automation, "key"))
        .send()
        .await
        .expect(200);
    let r = bot
        .get("/api/keys")
        .bearer(s(&revoked, "key"))
        .send()
        .await
        .expect(401);
    assert_eq!(r.errors(), vec!["invalid credentials: revoked"]);
    bot.get("/api/keys")
        .bearer(s(&agent, "key"))
        .send()
        .await
        .expect(403);
    // The revocation version keeps counting up from where it was.
    admin
        .delete(&format!("/api/keys/{}", agent["id"]))
        .send()
        .await
        .expect(204);
    let r = admin.get("/api/revocations").send().await.expect(200);
    assert_eq!(r.header("etag"), Some("\"2\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_admin_password_is_shown_once_and_never_regenerated() {
    let no_password = "auth:\n  internal:\n    admin:\n      password: \"\"\n";
    let app = Authority::start_with(no_password).await;
    let (name, generated) = app
        .first_start
        .created_admin
        .clone()
        .expect("admin created");
    assert_eq!(name, ADMIN);
    let password = generated.expect("a generated password");
    assert!(password.len() >= 24, "{password}");
    app.logged_in(ADMIN, &password).await;
    let hash = admin_hash(&app).await;

    let app = app.restart().await;
    assert!(app.first_start.created_admin.is_none());
    assert_eq!(admin_hash(&app).await, hash);
    app.logged_in(ADMIN, &password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_admin_password_in_the_config_does_not_overwrite_the_stored_one() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    admin
        .put("/api/user/password")
        .json(&json!({ "oldPassword": ADMIN_PASSWORD, "newPassword": "changed-in-the-ui" }))
        .send()
        .await
        .expect(204);
    let app = app
        .restart_with("auth:\n  internal:\n    admin:\n      password: another-password-9\n")
        .await;
    assert!(app.first_start.created_admin.is_none());
    app.logged_in(ADMIN, "changed-in-the-ui").await;
    for stale in [ADMIN_PASSWORD, "another-password-9"] {
        app.client().login(ADMIN, stale).await.expect(401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_internal_auth_disabled_built_in_users_can_neither_log_in_nor_use_old_sessions() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    create_user(&admin, "bob", "ReadOnly", "bob-password-1").await;
    let automation = admin.create_key("automation", "Admin", 0).await;
    let cookie = admin.cookie();
    let app = app
        .restart_with("auth:\n  internal:\n    enabled: false\n")
        .await;
    let anon = app.client();
    for (user, password) in [(ADMIN, ADMIN_PASSWORD), ("bob", "bob-password-1")] {
        let r = anon.login(user, password).await.expect(404);
        assert!(r.header("set-cookie").is_none());
    }
    let old = app.client();
    old.set_cookie(cookie);
    old.get("/api/keys").send().await.expect(401);
    old.get("/api/user").send().await.expect(404);
    old.get("/api/users").send().await.expect(404);
    // Automation with an Admin API key, and distribution, keep working.
    app.client()
        .get("/api/keys")
        .bearer(s(&automation, "key"))
        .send()
        .await
        .expect(200);
    app.client()
        .get("/.well-known/jwks.json")
        .send()
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_internal_auth_disabled_no_admin_user_is_created() {
    let app = Authority::start_with("auth:\n  internal:\n    enabled: false\n").await;
    assert!(app.first_start.created_admin.is_none());
    let users = app.state.store.count_users().await.expect("store");
    assert_eq!(users, 0);
}
