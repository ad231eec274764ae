//! The read proxy's selector check and rewrite on generated selectors: they never panic, and
//! whenever a selector is called confined to a key's applications, or is rewritten to be, no
//! series of another application matches it. Checked with a small matcher written here: a
//! regex matcher is evaluated anchored, as Pyroscope does, when it compiles, and otherwise
//! lets everything through — the most a regex could let through.

use std::collections::BTreeMap;

use proptest::prelude::*;
use pyrogate::core::scope::Scope;
use pyrogate::node::ingest::selector::{self, Op};

const APPS: [&str; 4] = ["checkout", "checkout-api", "billing", ""];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(APPS.to_vec()).prop_map(str::to_owned),
        "[a-z\"\\\\,}{= ]{0,6}",
    ]
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A selector text: matchers on a few names with every operator, sometimes mangled.
fn selector_text() -> impl Strategy<Value = String> {
    let matcher = (
        proptest::sample::select(vec!["service_name", "env", "service_namex"]),
        proptest::sample::select(vec!["=", "!=", "=~", "!~"]),
        value(),
    )
        .prop_map(|(n, op, v)| format!("{n}{op}\"{}\"", escape(&v)));
    prop_oneof![
        4 => (
            proptest::sample::select(vec!["", "process_cpu:cpu:nanoseconds:cpu:nanoseconds", "checkout.cpu"]),
            proptest::collection::vec(matcher, 0..4),
        )
            .prop_map(|(prefix, ms)| format!("{prefix}{{{}}}", ms.join(","))),
        1 => any::<String>(),
        1 => "[{}a-z_=!~\",\\\\ ]{0,40}",
    ]
}

fn series() -> impl Strategy<Value = BTreeMap<String, String>> {
    (proptest::sample::select(APPS.to_vec()), value()).prop_map(|(app, env)| {
        BTreeMap::from([
            ("service_name".to_owned(), app.to_owned()),
            ("env".to_owned(), env),
        ])
    })
}

/// Whether `series` matches every matcher (a missing label reads as ""); a regex that does not
/// compile matches all.
fn matches(matchers: &[selector::Matcher], series: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| {
        let v = series.get(&m.name).map(String::as_str).unwrap_or("");
        let re = || regex_automata::meta::Regex::new(&format!("^(?:{})$", m.value)).ok();
        match m.op {
            Op::Eq => v == m.value,
            Op::Ne => v != m.value,
            Op::Re => re().is_none_or(|re| re.is_match(v)),
            Op::NotRe => re().is_none_or(|re| !re.is_match(v)),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_confined_selector_never_matches_another_application(
        text in selector_text(),
        allowed in proptest::sample::subsequence(vec!["checkout", "checkout-*", "billing-*"], 1..=2),
        all_series in proptest::collection::vec(series(), 1..12),
    ) {
        let apps: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        let scope = Scope::parse(Some(&apps), None).expect("a scope").expect("apps");
        if selector::confined(&text, &scope).is_ok() {
            let matchers = selector::parse(&text).expect("a confined selector parses");
            for s in &all_series {
                if matches(&matchers, s) {
                    prop_assert!(scope.allows_app(&s["service_name"]), "{} matched {:?}", text, s);
                }
            }
        }
    }

    #[test]
    fn a_rewritten_selector_parses_and_never_matches_another_application(
        text in selector_text(),
        allowed in proptest::sample::subsequence(vec!["checkout", "checkout-*", "billing-*", "a.b"], 1..=3),
        all_series in proptest::collection::vec(series(), 1..12),
    ) {
        let apps: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        let scope = Scope::parse(Some(&apps), None).expect("a scope").expect("apps");
        match selector::confine(&text, &scope) {
            Ok(out) => {
                let matchers = selector::parse(&out).expect("a confined selector parses");
                for s in &all_series {
                    if matches(&matchers, s) {
                        prop_assert!(scope.allows_app(&s["service_name"]), "{} matched {:?}", out, s);
                    }
                }
            }
            Err(_) => prop_assert!(selector::parse(&text).is_none_or(|m| m.len() == selector::MAX_MATCHERS)),
        }
    }

    #[test]
    fn the_apps_regex_matches_exactly_the_allowed_names(
        allowed in proptest::sample::subsequence(vec!["checkout", "checkout-*", "a.b", "a/b:c_d-*"], 1..=4),
        name in prop_oneof![
            proptest::sample::select(vec!["checkout", "checkout-", "checkout-api", "checkoutx", "a.b", "axb", "a/b:c_d-1", "a/b:c_d", ""]).prop_map(str::to_owned),
            "[a-z./:_-]{0,10}",
        ],
    ) {
        let apps: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        let scope = Scope::parse(Some(&apps), None).expect("a scope").expect("apps");
        let re = regex_automata::meta::Regex::new(&format!("^(?:{})$", selector::apps_regex(&scope)))
            .expect("the apps regex compiles");
        prop_assert_eq!(re.is_match(name.as_str()), scope.allows_app(&name), "{}", name);
    }

    #[test]
    fn parsing_never_panics(text in any::<String>()) {
        if let Some(matchers) = selector::parse(&text) {
            prop_assert!(matchers.len() <= selector::MAX_MATCHERS);
        }
    }
}
