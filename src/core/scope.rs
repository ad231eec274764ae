//! Least-privilege scopes carried inside a signed key: the applications it may push or read
//! (`apps`) and the networks it may be used from (`cidrs`). Both are claims, signed like every
//! other claim, so a node enforces them offline. The grammar is in docs/token-format.md.
//!
//! A scoped key is issued with its own `typ` ([`crate::core::token::SCOPED_API_KEY_TYP`]): a
//! verifier that does not know these claims pins the unscoped `typ` and so refuses the key,
//! where ignoring an unknown claim would have dropped the restriction silently.

use std::fmt;
use std::net::IpAddr;

/// Most application patterns in one key.
pub const MAX_APPS: usize = 32;
/// Longest application pattern, in bytes (all ASCII).
pub const MAX_APP_CHARS: usize = 128;
/// Most networks in one key.
pub const MAX_CIDRS: usize = 32;

/// Why a scope is not acceptable; names the claim (and the API field of the same name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("apps: {0}")]
    Apps(String),
    #[error("cidrs: {0}")]
    Cidrs(String),
}

/// One entry of `apps`: a name (`checkout`) matched exactly, or a prefix pattern
/// (`checkout-*`) matching every name that starts with the part before the `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPattern {
    text: Box<str>,
    prefix: bool,
}

impl AppPattern {
    /// 1–128 characters of `A–Z a–z 0–9 . _ - / :`, optionally ending in one `*` after at
    /// least one such character. No other wildcard: a bare `*` would be no scope at all.
    pub fn parse(text: &str) -> Result<AppPattern, String> {
        if text.is_empty() {
            return Err("an application pattern can't be empty".into());
        }
        if text.len() > MAX_APP_CHARS {
            return Err(format!(
                "an application pattern must be at most {MAX_APP_CHARS} characters"
            ));
        }
        let (stem, prefix) = match text.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        if stem.is_empty() {
            return Err("a bare \"*\" matches every application; leave apps out instead".into());
        }
        if !stem.bytes().all(app_byte) {
            return Err(format!(
                "{text:?}: only letters, digits, . _ - / : and one trailing * are allowed"
            ));
        }
        Ok(AppPattern {
            text: text.into(),
            prefix,
        })
    }

    pub fn matches(&self, app: &str) -> bool {
        if self.prefix {
            app.starts_with(&self.text[..self.text.len() - 1])
        } else {
            *app == *self.text
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The bytes an application name may hold (in a pattern and in a name a pattern matches).
pub fn app_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-/:".contains(&b)
}

/// One entry of `cidrs`: an IPv4 or IPv6 network, written canonically (`10.0.0.0/8`,
/// `2001:db8::/32`, or a bare address meaning `/32` or `/128`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Strict: the address as Rust's standard parser reads it (no leading zeros in IPv4, no
    /// zone), a prefix of plain decimal digits without leading zero, and no bits set past the
    /// prefix — `10.0.0.1/8` is refused, it most likely means something else than `10.0.0.0/8`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = |why: &str| format!("{text:?}: {why}");
        if text.len() > 64 {
            return Err(bad("too long to be a network"));
        }
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let canonical = !p.is_empty()
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && (p == "0" || !p.starts_with('0'));
                match p.parse::<u8>() {
                    Ok(n) if canonical && n <= max => n,
                    _ => return Err(bad(&format!("the prefix length must be 0–{max}"))),
                }
            }
        };
        let cidr = Cidr { addr, prefix };
        if bits(addr).0 & !mask(prefix, max) != 0 {
            return Err(bad("bits are set after the prefix length"));
        }
        Ok(cidr)
    }

    /// Whether `ip` is inside. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
    /// dual-stack socket reports) counts as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let (net, width) = bits(self.addr);
        let (ip, ip_width) = bits(ip);
        width == ip_width && (ip & mask(self.prefix, width)) == net
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

/// The network mask of `prefix` bits in an address `width` bits wide, as the low bits of a u128.
fn mask(prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    let host = if prefix >= width {
        0
    } else {
        (1u128 << (width - prefix)) - 1
    };
    all & !host
}

/// A key's scopes. An empty list means "no restriction" on that axis; a scope with both empty
/// is never built (an unscoped key has no [`Scope`] at all).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    pub apps: Vec<AppPattern>,
    pub cidrs: Vec<Cidr>,
}

impl Scope {
    /// Parses the two claims (either may be absent). `Ok(None)` when both are absent.
    pub fn parse(
        apps: Option<&[String]>,
        cidrs: Option<&[String]>,
    ) -> Result<Option<Scope>, ScopeError> {
        if apps.is_none() && cidrs.is_none() {
            return Ok(None);
        }
        Ok(Some(Scope {
            apps: parse_list(apps, MAX_APPS, AppPattern::parse).map_err(ScopeError::Apps)?,
            cidrs: parse_list(cidrs, MAX_CIDRS, Cidr::parse).map_err(ScopeError::Cidrs)?,
        }))
    }

    /// Whether a push or query for `app` is inside `apps` (always, when `apps` is empty).
    pub fn allows_app(&self, app: &str) -> bool {
        self.apps.is_empty() || self.apps.iter().any(|p| p.matches(app))
    }

    /// Whether a request from `ip` is inside `cidrs` (always, when `cidrs` is empty).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.cidrs.is_empty() || self.cidrs.iter().any(|c| c.contains(ip))
    }

    /// `apps` as written in the key.
    pub fn app_list(&self) -> Vec<String> {
        self.apps.iter().map(|p| p.as_str().to_owned()).collect()
    }

    /// `cidrs`, canonically written.
    pub fn cidr_list(&self) -> Vec<String> {
        self.cidrs.iter().map(ToString::to_string).collect()
    }

    /// `apps` for a message: `checkout, checkout-*`.
    pub fn apps_text(&self) -> String {
        self.app_list().join(", ")
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("Scope", 2)?;
        st.serialize_field("apps", &self.app_list())?;
        st.serialize_field("cidrs", &self.cidr_list())?;
        st.end()
    }
}

/// A present list must hold 1–`max` entries, each parsed by `parse`, none twice.
fn parse_list<T: PartialEq>(
    list: Option<&[String]>,
    max: usize,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    if list.is_empty() {
        return Err("an empty list allows nothing; leave it out instead".into());
    }
    if list.len() > max {
        return Err(format!("at most {max} entries"));
    }
    let mut out = Vec::with_capacity(list.len());
    for entry in list {
        let parsed = parse(entry)?;
        if out.contains(&parsed) {
            return Err(format!("{entry:?} is listed twice"));
        }
        out.push(parsed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_patterns_match_names_and_prefixes() {
        let exact = AppPattern::parse("checkout").unwrap();
        assert!(exact.matches("checkout"));
        assert!(!exact.matches("checkout-api"));
        assert!(!exact.matches("Checkout"));
        let prefix = AppPattern::parse("checkout-*").unwrap();
        assert!(prefix.matches("checkout-api"));
        assert!(prefix.matches("checkout-"));
        assert!(!prefix.matches("checkout"));
        assert!(!prefix.matches("billing"));
        for bad in [
            "",
            "*",
            "a*b",
            "a**",
            "a b",
            "é",
            "a{b}",
            "a,b",
            &"a".repeat(129),
        ] {
            assert!(AppPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AppPattern::parse(&"a".repeat(128)).is_ok());
        assert!(AppPattern::parse("ride.sharing/app:v1_2-x*").is_ok());
    }

    #[test]
    fn cidrs_parse_strictly_and_match_v4_and_v6() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::".parse().unwrap()));
        assert!(
            Cidr::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(!all.contains("::2".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/08",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "010.0.0.0/8",
            "10.0.0/8",
            "::1/129",
            "fe80::1%eth0",
            "2001:db8::1/32",
            " 10.0.0.0/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_name_the_claim_that_is_wrong() {
        assert_eq!(Scope::parse(None, None), Ok(None));
        let s = Scope::parse(Some(&["a".into(), "b-*".into()]), None)
            .unwrap()
            .unwrap();
        assert!(s.allows_app("b-1") && !s.allows_app("c"));
        assert!(s.allows_ip("192.0.2.1".parse().unwrap()));
        assert!(matches!(
            Scope::parse(Some(&[]), None),
            Err(ScopeError::Apps(_))
        ));
        assert!(matches!(
            Scope::parse(None, Some(&["x".into()])),
            Err(ScopeError::Cidrs(_))
        ));
        assert!(matches!(
            Scope::parse(Some(&["a".into(), "a".into()]), None),
            Err(ScopeError::Apps(_))
        ));
        let many: Vec<String> = (0..=MAX_APPS).map(|i| format!("a{i}")).collect();
        assert!(Scope::parse(Some(&many), None).is_err());
    }
}
