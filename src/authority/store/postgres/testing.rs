//! For tests only (the store suite and the integration harness): a fresh database per test on
//! the run's throwaway server, which `scripts/test.sh` starts with `scripts/test-postgres.sh`.

/// The variable `scripts/test-postgres.sh start` exports: the server's URL, ending in
/// `/DBNAME`, for a role that may create databases.
pub const POSTGRES_ENV: &str = "PYROGATE_TEST_POSTGRES_URL";

/// A fresh, empty database on the run's server, as a `postgres://` URL. Without the server
/// this panics saying how to start one: the PostgreSQL tests fail, they are never skipped.
pub async fn fresh_database() -> String {
    let admin = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_ENV} is not set: the PostgreSQL tests need a server. Run the tests with \
             `bash scripts/test.sh`, or start one with \
             `eval \"$(bash scripts/test-postgres.sh start)\"` and run them again"
        )
    });
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV}: cannot connect: {e}"));
    tokio::spawn(connection);
    // Unique on a server reused across runs: random, as a lower-case identifier.
    let tag = crate::core::b64::random(12)
        .to_ascii_lowercase()
        .replace(['-', '_'], "x");
    let name = format!("pyrogate_test_{tag}");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    let (base, _) = admin
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{POSTGRES_ENV} must end in /DBNAME"));
    format!("{base}/{name}")
}
