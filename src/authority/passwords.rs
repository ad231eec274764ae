//! User passwords: argon2id hashes (RFC 9106 parameters of the `argon2` crate's default:
//! 19 MiB, 2 passes), and strong generated passwords for the first admin.
//!
//! Every hash runs on one of a few threads of its own ([`HASH_THREADS`]), each of which keeps
//! argon2's working memory (19 MiB at these parameters) from one hash to the next. Letting the
//! crate allocate it per hash, on whichever blocking thread ran the request, made the
//! authority's RSS grow by ≈ 6 MB per login — ≈ 0.9 GB after 80 on a 2-core VM — as glibc's
//! per-thread arenas kept and fragmented those blocks; with the memory kept per thread it stays
//! at a fixed ≈ 19 MiB per hashing thread (docs/benchmarks.md). A stored hash with a larger
//! memory cost than the defaults is checked on memory allocated for it and freed after.

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::core::b64;

/// Shortest password accepted for a user.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted (argon2 would take more, but a 1 MB "password" is an attack).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Most threads that hash passwords, and so most hashes at a time: one per CPU up to this.
pub const HASH_THREADS: usize = 4;

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

/// Hashes a password into a PHC string (`$argon2id$v=19$m=…`) on a hashing thread, and waits
/// for it, blocking: for the CLI and tests ([`hash_async`] in the servers).
pub fn hash(password: &str) -> anyhow::Result<String> {
    let (password, salt) = (password.to_owned(), new_salt());
    on_hasher(move |memory| hash_in(memory, &password, &salt))
}

/// [`hash`] for async code: the caller's task waits, not one of its runtime's threads.
pub async fn hash_async(password: String) -> anyhow::Result<String> {
    let salt = new_salt();
    on_hasher_async(move |memory| hash_in(memory, &password, &salt))
        .await
        .ok_or_else(|| anyhow::anyhow!("hashing password: the hash was lost"))?
}

/// 128-bit salt (the PHC recommendation) from ring's SystemRandom.
fn new_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    crate::core::crypto::fill_random(&mut salt);
    salt
}

/// True when `password` matches `phc`, computed on a hashing thread; the caller waits,
/// blocking (for tests; [`verify_async`] and [`verify_bounded`] in the servers). A malformed
/// stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    let (password, phc) = (password.to_owned(), phc.to_owned());
    on_hasher(move |memory| verify_in(memory, &password, &phc))
}

/// [`verify`] for async code; `None` if the check was lost (its hashing thread ended).
pub async fn verify_async(password: String, phc: String) -> Option<bool> {
    on_hasher_async(move |memory| verify_in(memory, &password, &phc)).await
}

/// How long a login waits for a free hashing thread before it is answered 503.
pub const HASH_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// [`verify`] without holding a thread of the caller's runtime, one hash per hashing thread at
/// a time; `None` when none was free within [`HASH_QUEUE_TIMEOUT`] (a flood of logins queues
/// here instead of in the hashing threads' queue), or when the check could not run at all.
/// The place is held until the hash is done, even if the caller stops waiting.
pub async fn verify_bounded(password: String, phc: std::sync::Arc<String>) -> Option<bool> {
    let permit = tokio::time::timeout(HASH_QUEUE_TIMEOUT, hash_slots().clone().acquire_owned())
        .await
        .ok()?
        .ok()?;
    on_hasher_async(move |memory| {
        let ok = verify_in(memory, &password, &phc);
        drop(permit);
        ok
    })
    .await
}

fn hash_slots() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    SLOTS.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(hash_thread_count())))
}

fn hash_thread_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(HASH_THREADS)
}

/// argon2's working memory for one hashing thread: the blocks of the default parameters,
/// allocated at its first hash and reused for every hash after. A stored hash with a larger
/// memory cost gets blocks of its own for that one hash, freed after it, so an odd stored
/// parameter never pins its memory on the thread. Blocks are wiped after each hash: nothing
/// derived from a password stays in memory between requests.
#[derive(Default)]
struct Memory(Vec<Block>);

impl Memory {
    /// Runs `f` on blocks for `params`, then wipes them; `None` when blocks larger than the
    /// defaults could not be allocated.
    fn with_blocks<R>(&mut self, params: &Params, f: impl FnOnce(&mut [Block]) -> R) -> Option<R> {
        let n = params.block_count();
        let own = Params::default().block_count();
        let mut larger = Vec::new();
        let blocks = if n <= own {
            if self.0.len() < own {
                self.0.resize(own, Block::default());
            }
            &mut self.0[..n]
        } else {
            larger.try_reserve_exact(n).ok()?;
            larger.resize(n, Block::default());
            &mut larger[..]
        };
        let result = f(blocks);
        for block in blocks.iter_mut() {
            zeroize::Zeroize::zeroize(block);
        }
        Some(result)
    }
}

fn hash_in(memory: &mut Memory, password: &str, salt: &[u8]) -> anyhow::Result<String> {
    let argon2 = Argon2::default();
    let params = argon2.params();
    let salt = Salt::new(salt).map_err(|e| anyhow::anyhow!("hashing password: {e}"))?;
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let out = buffer
        .get_mut(..params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN))
        .ok_or_else(|| anyhow::anyhow!("hashing password: output too long"))?;
    memory
        .with_blocks(params, |blocks| {
            argon2.hash_password_into_with_memory(password.as_bytes(), &salt, out, blocks)
        })
        .ok_or_else(|| anyhow::anyhow!("hashing password: out of memory"))?
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::default().ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(params)
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))?,
        salt: Some(salt),
        hash: Some(Output::new(out).map_err(|e| anyhow::anyhow!("hashing password: {e}"))?),
    };
    Ok(phc.to_string())
}

/// What the crate's `PasswordVerifier` does — the stored string's algorithm, version and
/// parameters, a constant-time comparison of the outputs — with this thread's memory.
fn verify_in(memory: &mut Memory, password: &str, phc: &str) -> bool {
    let Ok(stored) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(stored.algorithm.as_str()) else {
        return false;
    };
    let Ok(version) = stored
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let Ok(params) = Params::try_from(&stored) else {
        return false;
    };
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let Some(out) = buffer.get_mut(..expected.len()) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let done = memory.with_blocks(&params, |blocks| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt, out, blocks)
    });
    // `Output`'s equality is constant-time.
    matches!(done, Some(Ok(()))) && Output::new(out).is_ok_and(|computed| &computed == expected)
}

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// The hashing threads: started at the first hash, fed through one queue.
struct Hashers(std::sync::mpsc::Sender<Job>);

impl Hashers {
    /// Queues `job`, or gives it back when no hashing thread is left to take it (none could be
    /// started, or all ended on a panic).
    fn queue(&self, job: Job) -> Result<(), Job> {
        self.0
            .send(job)
            .map_err(|std::sync::mpsc::SendError(job)| job)
    }
}

fn hashers() -> &'static Hashers {
    static HASHERS: std::sync::OnceLock<Hashers> = std::sync::OnceLock::new();
    HASHERS.get_or_init(|| {
        let (queue, jobs) = std::sync::mpsc::channel::<Job>();
        let jobs = std::sync::Arc::new(std::sync::Mutex::new(jobs));
        for index in 0..hash_thread_count() {
            let jobs = jobs.clone();
            let started = std::thread::Builder::new()
                .name(format!("pyrogate-pw{index}"))
                .spawn(move || {
                    let mut memory = Memory::default();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match next {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(err) = started {
                tracing::warn!(error = %err, "could not start a password-hashing thread");
            }
        }
        Hashers(queue)
    })
}

/// Runs `f` on a hashing thread; the caller's task waits for the result (`None` if the job
/// was lost with its hashing thread).
async fn on_hasher_async<T: Send + 'static>(
    f: impl FnOnce(&mut Memory) -> T + Send + 'static,
) -> Option<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |memory| {
        let _ = done.send(f(memory));
    });
    if let Err(job) = hashers().queue(job) {
        // No hashing thread left: the blocking pool, never the caller's event loop.
        tokio::task::spawn_blocking(move || job(&mut Memory::default()));
    }
    let done = result.await.ok();
    if done.is_none() {
        tracing::warn!("a password hash was lost (its hashing thread ended)");
    }
    done
}

/// Runs `f` on a hashing thread and waits for its result, blocking.
fn on_hasher<T: Send + 'static>(f: impl FnOnce(&mut Memory) -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::sync_channel(1);
    let f = std::sync::Arc::new(std::sync::Mutex::new(Some(f)));
    let job = f.clone();
    let queued = hashers().queue(Box::new(move |memory| {
        if let Some(f) = job.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = done.send(f(memory));
        }
    }));
    if let Err(job) = queued {
        // No hashing thread left: the caller is a blocking thread, so it runs here.
        job(&mut Memory::default());
    }
    match result.recv() {
        Ok(value) => value,
        // A job dropped before it ran (the last hashing thread ended with it queued) still
        // holds `f`: run it here. One whose `f` panicked does not: that panic goes on.
        Err(_) => match f.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(f) => f(&mut Memory::default()),
            None => panic!("a password hash panicked"),
        },
    }
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

    /// The crate's own hashing and verifying, which ours must agree with both ways.
    fn crate_hash(password: &str, params: Params) -> String {
        use argon2::PasswordHasher as _;
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(password.as_bytes(), b"sixteen byte salt")
            .unwrap()
            .to_string()
    }

    #[test]
    fn our_hashes_and_the_crates_verify_each_other() {
        use argon2::PasswordVerifier as _;
        let ours = hash("correct horse").unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", ours.as_str())
                .is_ok(),
            "the crate accepts {ours}"
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong horse", ours.as_str())
                .is_err()
        );
        let theirs = crate_hash("correct horse", Params::default());
        assert!(verify("correct horse", &theirs));
        assert!(!verify("wrong horse", &theirs));
        // Other parameters than the defaults (a smaller and a larger memory cost, 2 lanes):
        // the thread's memory grows to fit, and the parameters are the stored ones.
        for params in [
            Params::new(8 * 1024, 1, 1, None).unwrap(),
            Params::new(32 * 1024, 1, 2, Some(48)).unwrap(),
        ] {
            let theirs = crate_hash("correct horse", params);
            assert!(verify("correct horse", &theirs), "{theirs}");
            assert!(!verify("correct horsf", &theirs), "{theirs}");
        }
    }

    #[test]
    fn damaged_or_foreign_hashes_never_match() {
        let good = hash("correct horse").unwrap();
        let (head, tail) = good.rsplit_once('$').unwrap();
        let mut tail = tail.to_owned().into_bytes();
        tail[3] = if tail[3] == b'A' { b'B' } else { b'A' };
        let flipped = format!("{head}${}", String::from_utf8(tail).unwrap());
        for bad in [
            flipped.as_str(),
            head,
            "",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$bcrypt$v=19$m=19456,t=2,p=1$c2l4dGVlbiBieXRlIHNhbHQ$aGFzaA",
            "$argon2id$v=99$m=19456,t=2,p=1$c2l4dGVlbiBieXRlIHNhbHQ$aGFzaGhhc2hoYXNo",
        ] {
            assert!(!verify("correct horse", bad), "{bad}");
        }
    }

    #[test]
    fn a_hashing_thread_keeps_its_memory_and_wipes_it() {
        let mut memory = Memory::default();
        let first = hash_in(&mut memory, "correct horse", b"sixteen byte salt").unwrap();
        let (at, blocks) = (memory.0.as_ptr(), memory.0.len());
        assert_eq!(blocks, Params::default().block_count());
        assert!(verify_in(&mut memory, "correct horse", &first));
        let _ = hash_in(&mut memory, "battery staple", b"other byte salt!").unwrap();
        assert_eq!(
            memory.0.as_ptr(),
            at,
            "the same memory, not a new allocation"
        );
        assert_eq!(memory.0.len(), blocks);
        assert!(
            memory.0.iter().all(|b| b.as_ref().iter().all(|&x| x == 0)),
            "nothing derived from a password is left in it"
        );
        // A stored hash with a larger memory cost is checked on memory of its own, which is
        // not kept.
        let larger = crate_hash("correct horse", Params::new(32 * 1024, 1, 1, None).unwrap());
        assert!(verify_in(&mut memory, "correct horse", &larger));
        assert_eq!((memory.0.as_ptr(), memory.0.len()), (at, blocks));
    }

    #[tokio::test]
    async fn logins_verify_off_the_callers_runtime() {
        let phc = hash_async("correct horse".into()).await.unwrap();
        assert_eq!(
            verify_async("correct horse".into(), phc.clone()).await,
            Some(true)
        );
        assert_eq!(
            verify_async("wrong horse".into(), phc.clone()).await,
            Some(false)
        );
        let phc = std::sync::Arc::new(phc);
        // More at once than there are hashing threads: they queue, and each gets its answer.
        let mut checks = tokio::task::JoinSet::new();
        for i in 0..6 {
            let password = if i % 2 == 0 {
                "correct horse"
            } else {
                "wrong horse"
            };
            let phc = phc.clone();
            checks.spawn(async move { (i, verify_bounded(password.to_owned(), phc).await) });
        }
        let mut got = checks.join_all().await;
        got.sort();
        assert_eq!(
            got,
            [
                (0, Some(true)),
                (1, Some(false)),
                (2, Some(true)),
                (3, Some(false)),
                (4, Some(true)),
                (5, Some(false))
            ]
        );
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
