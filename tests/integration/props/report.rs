//! The authority's parser of node reports (`Report::parse`) on generated input: it never
//! panics, and whatever it accepts is within the bounds the store relies on — a valid node
//! name, at most `MAX_USAGE + 1` usage rows and `MAX_REASONS` reasons, short strings, counts
//! below `MAX_COUNT`. Accepted reports survive a round trip.

use proptest::prelude::*;
use pyrogate::node::report::{
    MAX_APP_BYTES, MAX_COUNT, MAX_REASONS, MAX_REPORT_BYTES, MAX_USAGE, Report, SpoolState, Usage,
};
use serde_json::json;

fn within_bounds(r: &Report) -> bool {
    pyrogate::config::valid_node_name(&r.node)
        && r.version.len() <= 64
        && r.seq >= 1
        && r.usage.len() <= MAX_USAGE + 1
        && r.refusals.len() <= MAX_REASONS
        && r.refusals.keys().all(|k| k.len() <= 32)
        && r.refusals.values().all(|n| *n <= MAX_COUNT)
        && r.usage.iter().all(|u| {
            u.jti.len() <= 128
                && u.key.len() <= 1020
                && u.app.len() <= MAX_APP_BYTES
                && [u.pushes, u.bytes, u.refused, u.last_push_at]
                    .iter()
                    .all(|n| *n <= MAX_COUNT)
        })
        && [r.spool.entries, r.started_at, r.seq]
            .iter()
            .all(|n| *n <= MAX_COUNT)
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..1000u64,
        any::<u64>(),
        Just(MAX_COUNT),
        Just(MAX_COUNT + 1)
    ]
}

fn usage() -> impl Strategy<Value = Usage> {
    (
        "[a-zA-Z0-9_-]{0,130}",
        any::<String>(),
        prop_oneof!["[a-z.]{0,20}", any::<String>(), "x{250,260}"],
        count(),
        count(),
        count(),
        count(),
        count(),
    )
        .prop_map(
            |(jti, key, app, pushes, bytes, refused, limited, last_push_at)| Usage {
                jti,
                key,
                app,
                pushes,
                bytes,
                refused,
                limited,
                last_push_at,
            },
        )
}

fn report() -> impl Strategy<Value = Report> {
    (
        prop_oneof!["[a-z0-9._-]{1,64}", any::<String>(), "n{60,70}"],
        "[0-9.a-z]{0,70}",
        (count(), count(), count()),
        prop::collection::btree_map("[a-z_]{0,34}", count(), 0..40),
        prop::collection::vec(usage(), 0..8),
        any::<bool>(),
    )
        .prop_map(
            |(node, version, (started_at, seq, entries), refusals, usage, stale)| Report {
                node,
                version,
                started_at,
                seq,
                interval_seconds: 15,
                key_set_version: 1,
                revocations_version: 1,
                revocations_age_seconds: None,
                stale,
                spool: SpoolState {
                    entries,
                    ..SpoolState::default()
                },
                report_failures: 0,
                refusals,
                usage,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(r) = Report::parse(&body) {
            prop_assert!(within_bounds(&r));
        }
    }

    #[test]
    fn generated_reports_are_accepted_exactly_when_within_bounds(r in report()) {
        let body = serde_json::to_vec(&r).unwrap();
        match Report::parse(&body) {
            Ok(parsed) => {
                prop_assert!(within_bounds(&parsed));
                prop_assert_eq!(parsed, r);
            }
            Err(_) => prop_assert!(!within_bounds(&r)),
        }
    }

    #[test]
    fn json_of_the_wrong_shape_is_refused_not_panicked_on(
        value in prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            any::<String>().prop_map(|s| json!({"node": s, "seq": 1})),
            (any::<i64>(), any::<f64>()).prop_map(|(a, b)| json!({"node": "n", "version": "v",
                "startedAt": a, "seq": b, "intervalSeconds": 1, "keySetVersion": 1,
                "revocationsVersion": 1, "stale": false, "spool": {"entries": 0, "bytes": 0,
                "oldestSeconds": 0, "deadLetters": 0}, "reportFailures": 0})),
        ]
    ) {
        let _ = Report::parse(value.to_string().as_bytes());
    }
}

#[test]
fn too_many_rows_or_too_many_bytes_are_refused() {
    let row = Usage {
        jti: "j".into(),
        ..Usage::default()
    };
    let mut r = Report {
        node: "n".into(),
        version: "v".into(),
        started_at: 1,
        seq: 1,
        interval_seconds: 1,
        key_set_version: 0,
        revocations_version: 0,
        revocations_age_seconds: None,
        stale: false,
        spool: SpoolState::default(),
        report_failures: 0,
        refusals: Default::default(),
        usage: vec![row; MAX_USAGE + 1],
    };
    assert!(Report::parse(&serde_json::to_vec(&r).unwrap()).is_ok());
    r.usage.push(r.usage[0].clone());
    assert!(Report::parse(&serde_json::to_vec(&r).unwrap()).is_err());
    let mut huge = serde_json::to_vec(&r).unwrap();
    huge.resize(MAX_REPORT_BYTES + 1, b' ');
    assert!(Report::parse(&huge).is_err());
}
