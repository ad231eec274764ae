//! The one-spelling property (docs/token-format.md): strict base64url plus a signature over the
//! exact text means that changing, deleting or inserting any single byte of a valid token must
//! make it invalid. Checked at every position, through the cache, which already holds the
//! original token.

use pyrogate::core::token::Role;
use pyrogate::core::verifier::Verifier;

use crate::support::*;

/// Byte values tried at each position (all ASCII, so the token stays a `str`), minus the
/// original byte and duplicates.
fn replacements(b: u8) -> Vec<u8> {
    let letter = if b == b'A' { b'B' } else { b'A' };
    let mut out = Vec::new();
    for r in [b ^ 0x01, b ^ 0x20, letter, b'.', b'=', b'-', b'_', 0x7f] {
        if r != b && !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Tried {
    replaced: usize,
    deleted: usize,
    inserted: usize,
}

/// Tries every single-byte mutation of `token` and returns how many were tried. Panics on the
/// first one that verifies.
fn assert_no_single_byte_mutation_verifies(verifier: &Verifier, token: &str) -> Tried {
    verifier.verify(token).expect("the original token verifies");
    let bytes = token.as_bytes();
    let mut tried = Tried::default();
    let check = |mutated: Vec<u8>, what: String| {
        let mutated = String::from_utf8(mutated).expect("ASCII mutations stay UTF-8");
        assert_ne!(mutated, token);
        if let Ok(p) = verifier.verify(&mutated) {
            panic!("{what} was accepted as {p:?}: {mutated}");
        }
    };
    for i in 0..bytes.len() {
        for r in replacements(bytes[i]) {
            let mut m = bytes.to_vec();
            m[i] = r;
            check(m, format!("replacing byte {i} with {r:#04x}"));
            tried.replaced += 1;
        }
        let mut m = bytes.to_vec();
        m.remove(i);
        check(m, format!("deleting byte {i}"));
        tried.deleted += 1;
    }
    for i in 0..=bytes.len() {
        let mut m = bytes.to_vec();
        m.insert(i, b'A');
        check(m, format!("inserting 'A' at {i}"));
        tried.inserted += 1;
    }
    // The mutations neither evicted nor poisoned the original's cache entry.
    verifier.verify(token).expect("the original still verifies");
    tried
}

#[test]
fn no_single_byte_change_of_a_crafted_token_verifies() {
    let key = fixed_key(1);
    let (verifier, _) = verifier(&[&key]);
    // Fixed key, fixed claims and deterministic Ed25519: the same token every run.
    let token = craft_claims(&key, &claims_json());
    assert_eq!(token.len(), 349);
    let tried = assert_no_single_byte_mutation_verifies(&verifier, &token);
    // 349 × 8 values, less 14 that coincide with the byte itself (each '.', '-' and '_' in the
    // token) or with another value (for each 'a', 'A' is already a ^ 0x20), plus 349 deletions
    // and 350 insertions: 3 477 forged tokens.
    assert_eq!(
        tried,
        Tried {
            replaced: 2778,
            deleted: 349,
            inserted: 350,
        }
    );
}

#[test]
fn no_single_byte_change_of_an_issued_token_verifies() {
    let key = random_key();
    let (verifier, _) = verifier(&[&key]);
    let token = issue(&key, "ingest-eu-1", Role::Admin, 86_400, Some("team-a"));
    let tried = assert_no_single_byte_mutation_verifies(&verifier, &token);
    let len = token.len();
    assert!(len > 300, "an issued token is {len} bytes");
    // At least 6 of the 8 values differ from any byte; usually 7 or 8.
    assert!(tried.replaced >= 6 * len, "{tried:?}");
    assert_eq!(tried.deleted, len);
    assert_eq!(tried.inserted, len + 1);
}

#[test]
fn every_replacement_set_is_ascii_and_excludes_the_original() {
    for b in 0u8..0x80 {
        let set = replacements(b);
        assert!(set.len() >= 6, "{b:#04x}: {set:?}");
        assert!(set.iter().all(|r| r.is_ascii() && *r != b));
    }
}
