//! The structural pre-screen (`jws::split`) and the verifier behind it, on generated input.
//!
//! - Any string is screened without panicking, and the screen accepts exactly the strings of
//!   the documented shape: at most the cap, base64url alphabet and dots only, exactly two dots
//!   (an oracle written out here decides the same for every input, both ways).
//! - Every token `token::issue` writes passes the screen and verifies as what was asked for.
//! - Flipping, removing or adding bytes of a valid token never yields a token that verifies
//!   (the screen may pass the result; the verifier must refuse it).

use proptest::prelude::*;
use pyrogate::core::error::VerifyError;
use pyrogate::core::jws;
use pyrogate::core::token::{MAX_TIMESTAMP, Role};
use pyrogate::core::verifier::MAX_TOKEN_BYTES;

use crate::support::*;

/// What the screen is documented to accept, written the slow and obvious way.
fn has_the_shape(text: &str, max_len: usize) -> bool {
    text.len() <= max_len
        && text.split('.').count() == 3
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Strings worth screening: anything at all, the screen's own alphabet (so that many pass),
/// its alphabet plus a few near misses, and arbitrary bytes made text.
fn screen_input() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_.-]{0,120}",
        "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,90}",
        "[A-Za-z0-9_.=+/ \\-\u{e9}\u{0}]{0,80}",
        proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// A name `token::issue` takes: printable text, validated by the issuing rules themselves.
fn key_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9][a-zA-Z0-9 ._:/@-]{0,40}",
        "\\PC{1,60}",
        "[\u{e9}\u{4e2d}\u{1F600}a ]{1,255}",
    ]
    .prop_filter("a valid key name", |n| {
        pyrogate::core::token::validate_name(n).is_ok()
    })
}

fn tenant() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(
        "[A-Za-z0-9!_.*'()-]{1,150}".prop_filter("a valid tenant", |t| {
            pyrogate::core::token::validate_tenant(t).is_ok()
        }),
    )
}

fn role() -> impl Strategy<Value = Role> {
    proptest::sample::select(Role::ALL.to_vec())
}

/// 0 (never expires), short, long, or up to the last representable second.
fn ttl() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        1u64..=86_400,
        1u64..=(MAX_TIMESTAMP - NOW),
        Just(MAX_TIMESTAMP - NOW),
    ]
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    /// XOR the byte at (index mod len) with a non-zero mask.
    Flip(usize, u8),
    Remove(usize),
    Insert(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, m)| Edit::Flip(i, m)),
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    match *edit {
        Edit::Flip(i, mask) if !bytes.is_empty() => {
            let i = i % bytes.len();
            bytes[i] ^= mask;
        }
        Edit::Remove(i) if !bytes.is_empty() => {
            bytes.remove(i % bytes.len());
        }
        Edit::Insert(i, b) => {
            let i = i % (bytes.len() + 1);
            bytes.insert(i, b);
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_screen_accepts_exactly_the_documented_shape(
        text in screen_input(),
        cap in prop_oneof![Just(MAX_TOKEN_BYTES), 0usize..=150],
    ) {
        let wanted = has_the_shape(&text, cap);
        match jws::split(&text, cap) {
            Ok(parts) => {
                prop_assert!(wanted, "the screen passed {text:?} (cap {cap})");
                prop_assert_eq!(parts.token, text.as_str());
                prop_assert_eq!(
                    format!("{}.{}.{}", parts.header, parts.payload, parts.signature),
                    text.clone()
                );
                prop_assert_eq!(
                    parts.signing_input.to_owned(),
                    format!("{}.{}", parts.header, parts.payload)
                );
                for segment in [parts.header, parts.payload, parts.signature] {
                    prop_assert!(pyrogate::core::b64::is_alphabet(segment.as_bytes()));
                }
            }
            Err(e) => {
                prop_assert!(!wanted, "the screen refused {text:?} (cap {cap}): {e:?}");
                let expected = if text.len() > cap {
                    VerifyError::TooLarge
                } else {
                    VerifyError::Malformed
                };
                prop_assert_eq!(e, expected);
            }
        }
    }

    #[test]
    fn nothing_generated_verifies_and_nothing_panics(text in screen_input()) {
        let (verifier, _) = verifier(&[&fixed_key(1)]);
        prop_assert!(verifier.verify(&text).is_err());
        prop_assert!(verifier.verify_uncached(&text).is_err());
    }

    #[test]
    fn past_the_cap_is_too_large_whatever_the_bytes(
        extra in 1usize..64,
        fill in "[A-Za-z0-9_.-]",
    ) {
        let text = fill.repeat(MAX_TOKEN_BYTES + extra);
        let (verifier, _) = verifier(&[&fixed_key(1)]);
        prop_assert_eq!(verifier.verify(&text).unwrap_err(), VerifyError::TooLarge);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_issued_token_passes_the_screen_and_verifies_as_issued(
        name in key_name(),
        role in role(),
        ttl in ttl(),
        tenant in tenant(),
    ) {
        let key = fixed_key(7);
        let token = issue(&key, &name, role, ttl, tenant.as_deref());
        let parts = jws::split(&token, MAX_TOKEN_BYTES);
        prop_assert!(parts.is_ok(), "{:?}", parts.err());
        prop_assert!(has_the_shape(&token, MAX_TOKEN_BYTES));
        let (verifier, _) = verifier(&[&key]);
        let p = verifier.verify(&token);
        prop_assert!(p.is_ok(), "{:?}", p.err());
        let p = p.unwrap();
        prop_assert_eq!(&p.name, &name);
        prop_assert_eq!(p.role, role);
        prop_assert_eq!(p.tenant.as_deref(), tenant.as_deref());
        prop_assert_eq!(p.issued_at, NOW);
        prop_assert_eq!(p.expires_at, (ttl > 0).then(|| NOW + ttl));
        prop_assert_eq!(&p.kid, &kid_of(&key));
    }

    #[test]
    fn an_edited_token_never_verifies(
        name in key_name(),
        role in role(),
        tenant in tenant(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let key = fixed_key(9);
        let token = issue(&key, &name, role, 3600, tenant.as_deref());
        let (verifier, _) = verifier(&[&key]);
        // The original is in the cache: an edit must not be served from it either.
        verifier.verify(&token).expect("the original verifies");
        let mut bytes = token.clone().into_bytes();
        for e in &edits {
            apply(&mut bytes, e);
        }
        // Edits that leave a non-UTF-8 string never reach the verifier (a header value that
        // is not text is refused before it); make them text the way a lossy reader would.
        let edited = String::from_utf8_lossy(&bytes).into_owned();
        prop_assume!(edited != token);
        let verdict = verifier.verify(&edited);
        prop_assert!(verdict.is_err(), "{edits:?} verified as {verdict:?}: {edited}");
        prop_assert!(verifier.verify_uncached(&edited).is_err());
        // And the original still does.
        prop_assert!(verifier.verify(&token).is_ok());
    }
}
