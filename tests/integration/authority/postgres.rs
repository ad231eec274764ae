//! The authority on PostgreSQL (preview) through the real binary: the CLI and a running server
//! on one database, and the database password never shown.

use crate::harness::*;

/// The password in a `postgres://user:password@…` URL.
fn password_of(url: &str) -> String {
    let (userinfo, _) = url
        .trim_start_matches("postgres://")
        .split_once('@')
        .expect("credentials in the test server's URL");
    let (_, password) = userinfo.split_once(':').expect("a password");
    password.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_a_running_server_share_a_postgres_database_and_never_print_its_password() {
    let url = postgres_database().await;
    let password = password_of(&url);
    let app = Authority::start_with(&database_yaml(&url)).await;
    let keys_dir = app.keys_dir();
    let keys = keys_dir.to_str().expect("path");
    let kek = kek_file(&url);
    let env = [
        ("PYROSCOPE_DATABASE_URL", url.as_str()),
        (
            "PYROSCOPE_AUTHORITY_KEY_ENCRYPTION_KEY_FILE",
            kek.to_str().expect("path"),
        ),
    ];
    let shown = |out: &Output| {
        assert!(
            !out.stdout.contains(&password) && !out.stderr.contains(&password),
            "the database password was printed: {out:?}"
        );
    };

    let created = pyrogate_async(
        &[
            "api-key",
            "create",
            "--name",
            "ci",
            "--role",
            "Agent",
            "--keys-dir",
            keys,
        ],
        &env,
        "",
    )
    .await
    .ok();
    shown(&created);
    let admin = app.admin().await;
    let listed = admin.keys().await;
    assert_eq!(listed[0]["name"], "ci", "the server lists the CLI's key");

    let before = app.revocations_version().await;
    let deleted = pyrogate_async(&["api-key", "delete", "ci", "--keys-dir", keys], &env, "")
        .await
        .ok();
    shown(&deleted);
    // The running server publishes the CLI's delete (its ticker reads the shared version).
    let deadline = Deadline::secs(10, "the CLI's delete to be published");
    while app.revocations_version().await <= before {
        deadline.tick(|| format!("version {before}")).await;
    }

    // A wrong password: the error names the database without any password.
    let wrong = url.replacen(&format!(":{password}@"), ":not-the-password-xyz@", 1);
    let failed = pyrogate_async(
        &["api-key", "list", "--keys-dir", keys],
        &[("PYROSCOPE_DATABASE_URL", wrong.as_str())],
        "",
    )
    .await
    .fails();
    shown(&failed);
    assert!(
        !failed.stderr.contains("not-the-password-xyz"),
        "{failed:?}"
    );
    assert!(
        failed.stderr.contains("postgres://postgres@127.0.0.1:"),
        "the error names the database: {failed:?}"
    );
}
