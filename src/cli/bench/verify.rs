//! `pyrogate bench verify`: what verifying a key costs on this machine, with the raw Ed25519
//! verify measured in the same run so the ratio means something on a shared, noisy machine.
//!
//! Rounds interleave the four measurements and the report keeps each one's median round, so
//! a burst of load from a neighbour skews one round, not the result. The uncached/raw ratio is
//! reported twice: from the fastest 50-operation chunks (the intrinsic cost: noise only ever
//! adds time, so the minimum is the robust estimate on a shared machine) and as the median of
//! per-round ratios (what a busy machine typically sees).

use std::fmt;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use pyrogate::core::b64;
use pyrogate::core::clock::{Clock as _, SystemClock};
use pyrogate::core::crypto::SigningKey;
use pyrogate::core::jwk::KeySet;
use pyrogate::core::jws::Signer;
use pyrogate::core::token::{self, KeyRequest, Role};
use pyrogate::core::verifier::{Verifier, VerifierConfig};

const ROUNDS: usize = 15;

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub backend: &'static str,
    pub iterations: u32,
    pub rounds: usize,
    pub token_bytes: usize,
    /// Fastest 50-operation chunk, per operation: the intrinsic cost, free of neighbours' noise.
    pub raw_verify_ns: f64,
    pub uncached_verify_ns: f64,
    /// Median round, per operation: what a busy machine typically sees.
    pub raw_verify_median_ns: f64,
    pub uncached_verify_median_ns: f64,
    pub cached_verify_ns: f64,
    pub rejected_garbage_ns: f64,
    /// `uncached_verify_ns / raw_verify_ns` (fastest chunks).
    pub uncached_over_raw: f64,
    /// Median over rounds of the ratio of adjacent raw and uncached work.
    pub uncached_over_raw_median: f64,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "verify benchmark: {} rounds × {} ops, {}-byte token, backend {}",
            self.rounds, self.iterations, self.token_bytes, self.backend
        )?;
        writeln!(f, "{:<36} {:>12}", "operation", "ns/op")?;
        for (name, ns) in [
            ("raw Ed25519 verify (fastest chunk)", self.raw_verify_ns),
            ("full verify, uncached (fastest)", self.uncached_verify_ns),
            ("raw Ed25519 verify (median)", self.raw_verify_median_ns),
            (
                "full verify, uncached (median)",
                self.uncached_verify_median_ns,
            ),
            ("full verify, cached", self.cached_verify_ns),
            ("garbage token rejected", self.rejected_garbage_ns),
        ] {
            writeln!(f, "{name:<36} {ns:>12.0}")?;
        }
        writeln!(
            f,
            "uncached / raw = {:.3} (fastest chunks), {:.3} (median of per-round ratios)",
            self.uncached_over_raw, self.uncached_over_raw_median
        )
    }
}

pub(super) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn per_op(start: Instant, ops: u32) -> f64 {
    start.elapsed().as_nanos() as f64 / f64::from(ops)
}

/// Runs the benchmark. `iterations` is the batch size of each round.
pub fn verify(iterations: u32) -> VerifyReport {
    let signer = Signer::new(SigningKey::generate());
    let keys = KeySet::new([signer.verifying_key()]);
    // The real clock, as in production: jsonwebtoken's own exp/nbf checks (which read the
    // system time) are on and part of the measured path.
    let now = SystemClock.now();
    let issue = |i: u32| {
        token::issue(
            &signer,
            "pyrogate",
            now,
            &KeyRequest {
                name: &format!("bench-agent-{i}"),
                role: Role::Agent,
                ttl_seconds: 86_400,
                tenant: Some("team-a"),
                apps: None,
                cidrs: None,
            },
        )
        .map(|k| k.token.expose().to_owned())
        .unwrap_or_default()
    };
    let token = issue(0);
    // Fresh tokens for every uncached verification: each one is a true cache miss, paying
    // for hashing and insertion as a first request does.
    let fresh: Vec<Vec<String>> = (0..ROUNDS)
        .map(|r| {
            (0..iterations)
                .map(|i| issue(1 + r as u32 * iterations + i))
                .collect()
        })
        .collect();
    // Garbage of the same length and shape: fails at the header, before any signature math.
    let garbage = {
        let dot = token.find('.').unwrap_or(0);
        let mut g = b64::random(token.len());
        g.truncate(token.len());
        g.replace_range(dot..dot + 1, ".");
        let second = token.rfind('.').unwrap_or(0);
        g.replace_range(second..second + 1, ".");
        g
    };

    let public = signer.verifying_key();

    let clock = Arc::new(SystemClock);
    let config = VerifierConfig::default();
    let cached = Verifier::new(config.clone(), keys.clone(), clock.clone());
    let _ = cached.verify(&token);

    let (mut raw, mut uncached, mut hit, mut junk) = (vec![], vec![], vec![], vec![]);
    let mut ratios = vec![];
    let (mut raw_best, mut uncached_best) = (f64::MAX, f64::MAX);
    // The raw baseline verifies the very same tokens' signatures, pre-decoded: same messages,
    // same memory traffic, nothing but the Ed25519 math.
    let decoded: Vec<Vec<(&str, [u8; 64])>> = fresh
        .iter()
        .map(|batch| batch.iter().map(|t| split_signature(t)).collect())
        .collect();
    for (batch, pairs) in fresh.iter().zip(&decoded) {
        // Raw and uncached alternate in chunks of 50, so a burst of load from a neighbour
        // lands on both alike.
        let verifier = Verifier::new(config.clone(), keys.clone(), clock.clone());
        let (mut raw_ns, mut uncached_ns) = (0u128, 0u128);
        for (tokens, pairs) in batch.chunks(50).zip(pairs.chunks(50)) {
            let start = Instant::now();
            for (input, sig) in pairs {
                let _ = black_box(public.verify(black_box(input.as_bytes()), sig));
            }
            let chunk = start.elapsed().as_nanos();
            raw_ns += chunk;
            // Like for like: the raw floor is measured on exactly the tokens the uncached path
            // verifies next (ring's verify time depends on the signature, so one repeated hot
            // signature would be a floor no real request sees).
            raw_best = raw_best.min(chunk as f64 / pairs.len().max(1) as f64);
            let start = Instant::now();
            for t in tokens {
                let _ = black_box(verifier.verify(black_box(t)));
            }
            let chunk = start.elapsed().as_nanos();
            uncached_ns += chunk;
            uncached_best = uncached_best.min(chunk as f64 / tokens.len().max(1) as f64);
        }
        let ops = batch.len().max(1) as f64;
        raw.push(raw_ns as f64 / ops);
        uncached.push(uncached_ns as f64 / ops);
        ratios.push(uncached_ns as f64 / raw_ns.max(1) as f64);

        let n = iterations * 20;
        let start = Instant::now();
        for _ in 0..n {
            let _ = black_box(cached.verify(black_box(&token)));
        }
        hit.push(per_op(start, n));

        let start = Instant::now();
        for _ in 0..n {
            let _ = black_box(cached.verify(black_box(&garbage)));
        }
        junk.push(per_op(start, n));
    }
    let raw_verify_median_ns = median(raw);
    let uncached_verify_median_ns = median(uncached);
    VerifyReport {
        backend: "ring Ed25519 (UnparsedPublicKey::verify)",
        iterations,
        rounds: ROUNDS,
        token_bytes: token.len(),
        raw_verify_ns: raw_best,
        uncached_verify_ns: uncached_best,
        raw_verify_median_ns,
        uncached_verify_median_ns,
        cached_verify_ns: median(hit),
        rejected_garbage_ns: median(junk),
        uncached_over_raw: uncached_best / raw_best,
        uncached_over_raw_median: median(ratios),
    }
}

/// `(signing input, signature)` of a compact JWS.
fn split_signature(token: &str) -> (&str, [u8; 64]) {
    let (input, sig) = token.rsplit_once('.').unwrap_or_default();
    let bytes: [u8; 64] = b64::decode(sig)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; 64]);
    (input, bytes)
}
