//! The limits section of the signed revocation list — outside input on every node — on
//! generated input: `LimitsSection::parse` never panics and accepts only sections within its
//! rules (1 to `MAX_NODES` nodes, each `jti` once, rates in range, bursts present); valid
//! sections survive a round trip; a signed list carrying any section verifies exactly when
//! the section is valid, and the limiter takes whatever verified without a panic.

use proptest::prelude::*;
use pyrogate::core::crypto::SigningKey;
use pyrogate::core::jwk::KeySet;
use pyrogate::core::jws::Signer;
use pyrogate::core::limits::{
    KeyLimits, LimitEntry, Limiter, LimitsSection, MAX_BURST_PUSHES, MAX_BYTES, MAX_NODES,
    MAX_PUSHES_PER_SECOND,
};
use pyrogate::core::revocation::RevocationList;
use pyrogate::core::token::REVOCATIONS_TYP;
use serde_json::{Value, json};

fn within_rules(s: &LimitsSection) -> bool {
    let mut jtis = std::collections::HashSet::new();
    (1..=MAX_NODES).contains(&s.nodes)
        && s.keys.iter().all(|e| {
            let pushes_ok = match (e.pushes_per_second, e.burst_pushes) {
                (None, None) => true,
                (Some(r), Some(b)) => {
                    r > 0.0 && r <= MAX_PUSHES_PER_SECOND && (1..=MAX_BURST_PUSHES).contains(&b)
                }
                _ => false,
            };
            let bytes_ok = match (e.bytes_per_second, e.burst_bytes) {
                (None, None) => true,
                (Some(r), Some(b)) => (1..=MAX_BYTES).contains(&r) && (1..=MAX_BYTES).contains(&b),
                _ => false,
            };
            jtis.insert(e.jti.clone())
                && (1..=128).contains(&e.jti.len())
                && !e.name.is_empty()
                && pushes_ok
                && bytes_ok
                && (e.pushes_per_second.is_some() || e.bytes_per_second.is_some())
        })
}

fn rate() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        Just(None),
        (0.001f64..2_000_000.0).prop_map(Some),
        Just(Some(0.0)),
        Just(Some(-1.0)),
        Just(Some(MAX_PUSHES_PER_SECOND)),
    ]
}

fn amount() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        Just(None),
        (1u64..100_000).prop_map(Some),
        Just(Some(0)),
        any::<u64>().prop_map(Some),
        Just(Some(MAX_BYTES)),
    ]
}

fn entry() -> impl Strategy<Value = LimitEntry> {
    (
        prop_oneof!["[A-Za-z0-9_-]{22,24}", "[a-z]{0,3}", "x{127,130}"],
        prop_oneof!["[a-z-]{1,20}", Just(String::new())],
        rate(),
        amount(),
        amount(),
        amount(),
    )
        .prop_map(|(jti, name, pps, bp, bps, bb)| LimitEntry {
            jti,
            name,
            pushes_per_second: pps,
            burst_pushes: bp,
            bytes_per_second: bps,
            burst_bytes: bb,
        })
}

fn section() -> impl Strategy<Value = LimitsSection> {
    (
        prop_oneof![1u64..5, Just(0u64), any::<u64>()],
        prop::collection::vec(entry(), 0..6),
    )
        .prop_map(|(nodes, keys)| LimitsSection { nodes, keys })
}

/// Sections that keep the rules, built through `KeyLimits::normalize` as the authority does.
fn valid_section() -> impl Strategy<Value = LimitsSection> {
    (
        1u64..50,
        prop::collection::btree_map(
            "[A-Za-z0-9_-]{22}",
            (
                prop::option::of(0.01f64..10_000.0),
                prop::option::of(1u64..1000),
                prop::option::of(1u64..1_000_000_000),
            ),
            0..8,
        ),
    )
        .prop_map(|(nodes, keys)| LimitsSection {
            nodes,
            keys: keys
                .into_iter()
                .filter_map(|(jti, (pps, bp, bps))| {
                    let limits = KeyLimits {
                        pushes_per_second: pps,
                        burst_pushes: pps.and(bp),
                        bytes_per_second: bps,
                        burst_bytes: None,
                    }
                    .normalize()
                    .ok()??;
                    Some(LimitEntry::new(&jti, "key", &limits))
                })
                .collect(),
        })
}

fn wrongly_shaped() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(null)),
        Just(json!([])),
        Just(json!({"nodes": 1})),
        Just(json!({"nodes": "1", "keys": []})),
        Just(json!({"nodes": 1, "keys": [{"jti": "a"}]})),
        Just(json!({"nodes": 1, "keys": [], "extra": true})),
        Just(json!({"nodes": 1.5, "keys": []})),
        Just(json!({"nodes": -1, "keys": []})),
        Just(json!({"nodes": 1, "keys": [{"jti": "a", "name": "b", "pushesPerSecond": "10"}]})),
        Just(json!({"nodes": 1, "keys": [{"jti": "a", "name": "b", "burstPushes": 1}]})),
        any::<i64>().prop_map(|n| json!({"nodes": n, "keys": []})),
    ]
}

fn signer() -> Signer {
    Signer::new(SigningKey::from_bytes(&[7; 32]))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = LimitsSection::parse(&bytes);
    }

    #[test]
    fn wrongly_shaped_json_is_refused(v in wrongly_shaped()) {
        prop_assert!(LimitsSection::parse(v.to_string().as_bytes()).is_err());
    }

    #[test]
    fn a_section_is_accepted_exactly_within_the_rules(s in section()) {
        let text = serde_json::to_vec(&s).unwrap();
        match LimitsSection::parse(&text) {
            Ok(parsed) => {
                prop_assert!(within_rules(&parsed), "accepted {parsed:?}");
                prop_assert_eq!(parsed, s);
            }
            Err(_) => prop_assert!(!within_rules(&s), "refused {s:?}"),
        }
    }

    #[test]
    fn valid_sections_round_trip_and_install(s in valid_section()) {
        prop_assert!(s.validate().is_ok(), "{s:?}");
        let parsed = LimitsSection::parse(&serde_json::to_vec(&s).unwrap()).unwrap();
        prop_assert_eq!(&parsed, &s);
        let limiter = Limiter::default();
        limiter.install(Some(&parsed));
        for e in &parsed.keys {
            // The first push of any limited key passes (a full burst); others are unlimited.
            let admitted = limiter.admit(&e.jti, Some(1)).unwrap_or(None);
            let fits = e.burst_bytes.is_none_or(|b| b >= 1);
            prop_assert!(admitted.is_some() || !fits);
        }
        prop_assert!(limiter.admit("not-limited", None).unwrap().is_none());
    }

    #[test]
    fn a_signed_list_verifies_exactly_when_its_section_is_valid(s in section()) {
        let signer = signer();
        let keys = KeySet::new([signer.verifying_key()]);
        let payload = json!({
            "iss": "pyrogate", "ver": 3, "iat": 1_700_000_000u64, "entries": [],
            "limits": serde_json::to_value(&s).unwrap(),
        });
        let jws = signer.sign(REVOCATIONS_TYP, payload.to_string().as_bytes());
        match RevocationList::verify(&jws, &keys, "pyrogate") {
            Ok(list) => {
                prop_assert!(within_rules(&s), "accepted {s:?}");
                prop_assert_eq!(list.limits.as_ref(), Some(&s));
                Limiter::default().install(list.limits.as_ref());
            }
            Err(_) => prop_assert!(!within_rules(&s), "refused {s:?}"),
        }
    }
}
