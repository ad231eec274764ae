//! User passwords: argon2id hashes (RFC 9106 parameters of the `argon2` crate's default:
//! 19 MiB, 2 passes), and strong generated passwords for the first admin.

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};

use crate::core::b64;

/// Shortest password accepted for a user.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted (argon2 would take more, but a 1 MB "password" is an attack).
pub const MAX_PASSWORD_CHARS: usize = 1024;

pub fn validate(password: &str) -> Result<(), &'static str> {
    let n = password.chars().count();
    if n == 0 {
        return Err("user password can't be empty");
    }
    if n < MIN_PASSWORD_CHARS {
        return Err("user password must be at least 8 characters");
    }
    if n > MAX_PASSWORD_CHARS {
        return Err("user password must be at most 1024 characters");
    }
    Ok(())
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=…`). CPU-heavy: call from a blocking
/// thread.
pub fn hash(password: &str) -> anyhow::Result<String> {
    // 128-bit salt (the PHC recommendation) from ring's SystemRandom.
    let mut salt = [0u8; 16];
    crate::core::crypto::fill_random(&mut salt);
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// How long a login waits for a free hashing slot before it is answered 503.
pub const HASH_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// At most one argon2 hash per CPU at a time (each takes ~19 MiB): a flood of logins queues
/// here instead of filling the blocking pool and the memory.
fn hash_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cpus)
    })
}

/// [`verify`] on the blocking pool, one hash per CPU at a time; `None` when no slot freed
/// within [`HASH_QUEUE_TIMEOUT`].
pub async fn verify_bounded(password: String, phc: std::sync::Arc<String>) -> Option<bool> {
    let permit = tokio::time::timeout(HASH_QUEUE_TIMEOUT, hash_slots().acquire())
        .await
        .ok()?
        .ok()?;
    let ok = tokio::task::spawn_blocking(move || verify(&password, &phc))
        .await
        .unwrap_or(false);
    drop(permit);
    Some(ok)
}

/// True when `password` matches `phc`. A malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// 24 random bytes, base64url: 192 bits, typeable, no ambiguous punctuation.
pub fn generate() -> String {
    b64::random(24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_per_salt() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(verify("correct horse", &a));
        assert!(!verify("wrong horse", &a));
        assert!(!verify("correct horse", "not a hash"));
    }

    #[test]
    fn generated_passwords_are_long_and_valid() {
        let p = generate();
        assert_eq!(p.len(), 32);
        assert!(validate(&p).is_ok());
        assert!(validate("short").is_err());
        assert!(validate("").is_err());
    }
}
