//! The run's PostgreSQL server (started by `scripts/test.sh`, see `scripts/test-postgres.sh`):
//! each test gets a fresh database of its own on it.

/// A fresh, empty database on the run's server, as a `postgres://` URL; without the server the
/// test fails saying how to start one (never skipped).
pub async fn postgres_database() -> String {
    pyrogate::authority::store::postgres::testing::fresh_database().await
}

/// The config layer that puts an authority on `url`.
pub fn database_yaml(url: &str) -> String {
    format!("database:\n  url: {url:?}\n")
}
