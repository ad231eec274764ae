//! The scope parsers (`apps` patterns, `cidrs` networks) on generated input: they never
//! panic, accept exactly the documented grammar, and a parsed network contains exactly the
//! addresses a slow oracle says it does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use pyrogate::core::scope::{AppPattern, Cidr, MAX_APP_CHARS};

/// The pattern grammar written out the slow way.
fn is_pattern(text: &str) -> bool {
    let stem = text.strip_suffix('*').unwrap_or(text);
    !stem.is_empty()
        && text.len() <= MAX_APP_CHARS
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c))
}

fn pattern_input() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9._/:*-]{0,140}",
        "[a-z*]{0,3}\\*?",
        "[a-zA-Z0-9 {}=,*\u{e9}]{0,20}",
    ]
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn bits(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

/// Whether the first `prefix` bits of two equally wide addresses agree, bit by bit.
fn same_prefix(a: IpAddr, b: IpAddr, prefix: u32) -> bool {
    let ((a, wa), (b, wb)) = (bits(a), bits(b));
    wa == wb && (0..prefix).all(|i| (a >> (wa - 1 - i)) & 1 == (b >> (wb - 1 - i)) & 1)
}

/// `ip` with every bit after `prefix` cleared.
fn network(ip: IpAddr, prefix: u32) -> IpAddr {
    let (v, w) = bits(ip);
    let kept = (0..prefix).fold(0u128, |m, i| m | (1u128 << (w - 1 - i)));
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((v & kept) as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v & kept)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn app_patterns_follow_the_grammar(text in pattern_input(), app in "[a-z0-9.-]{0,12}") {
        let parsed = AppPattern::parse(&text);
        prop_assert_eq!(parsed.is_ok(), is_pattern(&text), "{:?}", text);
        if let Ok(p) = parsed {
            prop_assert!(p.as_str().len() <= MAX_APP_CHARS);
            let expected = match text.strip_suffix('*') {
                Some(stem) => app.starts_with(stem),
                None => app == text,
            };
            prop_assert_eq!(p.matches(&app), expected);
            prop_assert!(p.matches(text.trim_end_matches('*')));
        }
    }

    #[test]
    fn cidr_parsing_never_panics_and_round_trips(text in prop_oneof![
        any::<String>(),
        "[0-9a-f:./]{0,50}",
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,3}",
    ]) {
        if let Ok(cidr) = Cidr::parse(&text) {
            prop_assert!(text.len() <= 64);
            let again = Cidr::parse(&cidr.to_string());
            prop_assert_eq!(again.as_ref().ok(), Some(&cidr));
        }
    }

    #[test]
    fn a_network_contains_exactly_the_addresses_that_share_its_prefix(
        base in addr(),
        prefix in 0u32..=128,
        probe in addr(),
    ) {
        let width = bits(base).1;
        let prefix = prefix.min(width);
        let net = network(base, prefix);
        let cidr = Cidr::parse(&format!("{net}/{prefix}")).expect("a canonical network parses");
        prop_assert!(cidr.contains(base));
        // A dual-stack socket's IPv4-mapped address counts as the IPv4 address.
        let canonical = probe.to_canonical();
        prop_assert_eq!(cidr.contains(probe), same_prefix(net, canonical, prefix));
        if prefix < width && net != base {
            // Host bits set: refused, whatever it might have meant.
            let sloppy = format!("{base}/{prefix}");
            prop_assert!(Cidr::parse(&sloppy).is_err());
        }
    }
}
