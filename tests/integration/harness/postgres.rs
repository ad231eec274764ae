//! The run's PostgreSQL server (started by `scripts/test.sh`, see `scripts/test-postgres.sh`):
//! each test gets a fresh database of its own on it.

use std::path::PathBuf;

/// A fresh, empty database on the run's server, as a `postgres://` URL; without the server the
/// test fails saying how to start one (never skipped).
pub async fn postgres_database() -> String {
    pyrogate::authority::store::postgres::testing::fresh_database().await
}

/// The config layer that puts an authority on `url`, with the database's key-encryption key
/// ([`kek_file`]): every replica started with it shares the keyring.
pub fn database_yaml(url: &str) -> String {
    format!(
        "database:\n  url: {url:?}\nauthority:\n  key-encryption-key-file: {:?}\n",
        kek_file(url)
    )
}

/// The key-encryption key of the test database `url`: a file of 32 random bytes in base64
/// (as `openssl rand -base64 32` writes it), mode 0600, made on first use and the same for
/// every replica and command on that database.
pub fn kek_file(url: &str) -> PathBuf {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let db = url.rsplit('/').next().unwrap_or("db");
    let dir = std::env::temp_dir().join("pyrogate-kek-files");
    std::fs::create_dir_all(&dir).expect("kek dir");
    let path = dir.join(format!("{db}.kek"));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            let line = format!("{}\n", random_kek());
            f.write_all(line.as_bytes()).expect("write kek");
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("{}: {e}", path.display()),
    }
    path
}

/// 32 random bytes in standard base64.
pub fn random_kek() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    pyrogate::core::crypto::fill_random(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
