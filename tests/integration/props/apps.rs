//! The push decoders a node runs for keys scoped to applications
//! (`pyrogate::node::ingest::apps`), on generated input: arbitrary bytes never panic and never
//! name an application out of nowhere; generated requests decode to exactly their `service_name`s;
//! inflating stops at the cap whatever the body.

use std::io::Write as _;

use proptest::prelude::*;
use prost::Message as _;
use pyrogate::node::ingest::apps::{self, Encoding, proto};

fn label() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        ("[a-z_]{1,12}", "[a-z0-9.-]{0,12}"),
        ("service_name", "[a-z0-9.-]{1,12}").prop_map(|(n, v)| (n.to_owned(), v)),
    ]
}

fn push_request() -> impl Strategy<Value = Vec<Vec<(String, String)>>> {
    proptest::collection::vec(proptest::collection::vec(label(), 0..5), 0..5)
}

fn encode(series: &[Vec<(String, String)>]) -> Vec<u8> {
    proto::PushRequest {
        series: series
            .iter()
            .map(|labels| proto::RawProfileSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| proto::LabelPair {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// What the decoder must answer for `series`, the slow way.
fn expected(series: &[Vec<(String, String)>]) -> Option<Vec<String>> {
    if series.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for labels in series {
        let names: Vec<String> = labels
            .iter()
            .filter(|(n, _)| n == "service_name")
            .map(|(_, v)| v.clone())
            .collect();
        if names.is_empty() || names.iter().any(String::is_empty) {
            return None;
        }
        out.extend(names);
    }
    Some(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        for encoding in [Encoding::Proto, Encoding::Json] {
            for apps in [apps::push_v1(&body, encoding), apps::otlp(&body, encoding)].into_iter().flatten() {
                // Whatever was read came from the input.
                for app in apps {
                    prop_assert!(app.len() <= body.len());
                }
            }
        }
        let _ = apps::inflate(&body, true, 4096);
        let query = String::from_utf8_lossy(&body);
        if let Ok(apps) = apps::legacy(Some(&query)) {
            prop_assert!(apps.iter().all(|a| a.len() <= query.len()));
        }
    }

    #[test]
    fn generated_pushes_decode_to_their_service_names(series in push_request(), cut in any::<prop::sample::Index>()) {
        let body = encode(&series);
        prop_assert_eq!(apps::push_v1(&body, Encoding::Proto).ok(), expected(&series));
        // A truncated body never reads past its end: refused or a subset, never a panic.
        let short = &body[..cut.index(body.len() + 1)];
        let _ = apps::push_v1(short, Encoding::Proto);
    }

    #[test]
    fn inflating_is_bounded_by_the_cap(len in 0usize..20_000, cap in 0usize..10_000) {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&vec![7u8; len]).unwrap();
        let gz = e.finish().unwrap();
        match apps::inflate(&gz, true, cap) {
            Ok(out) => prop_assert!(out.len() == len && len <= cap),
            Err(_) => prop_assert!(len > cap),
        }
    }
}
