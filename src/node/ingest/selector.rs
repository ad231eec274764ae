//! Label selectors (`{service_name="checkout", env!="dev"}`) as the read proxy sees them, for
//! keys limited to applications: a query is let through only when its selector is confined to
//! the key's applications — it holds a `service_name="X"` matcher (`=`, not a regex) whose `X`
//! the key may read. Matchers are ANDed, so such a selector can only ever select series of
//! `X`, whatever else it says. Anything that does not parse is not confined.

use crate::core::scope::Scope;

/// Longest selector looked at; longer ones are refused.
pub const MAX_SELECTOR: usize = 16 * 1024;
/// Most matchers in one selector.
pub const MAX_MATCHERS: usize = 64;

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Re,
    NotRe,
}

/// One `name op "value"` of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
}

/// Parses `prefix{matchers}`: an optional prefix (a profile type such as
/// `process_cpu:cpu:nanoseconds:cpu:nanoseconds`, or a legacy `app.cpu`) of name characters,
/// then the braces. Values are double-quoted, with `\` escapes; names are
/// `[A-Za-z_][A-Za-z0-9_.]*`. `None` when it does not parse.
pub fn parse(selector: &str) -> Option<Vec<Matcher>> {
    if selector.len() > MAX_SELECTOR {
        return None;
    }
    let s = selector.trim();
    let open = s.find('{')?;
    let prefix = &s[..open];
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    {
        return None;
    }
    let mut rest = s[open + 1..].trim_start();
    let mut out = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return after.trim().is_empty().then_some(out);
        }
        if out.len() == MAX_MATCHERS {
            return None;
        }
        let (matcher, after) = matcher(rest)?;
        out.push(matcher);
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.starts_with('}') {
            return None;
        }
    }
}

/// One matcher at the start of `s`, and what follows it.
fn matcher(s: &str) -> Option<(Matcher, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(s.len());
    let name = &s[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let rest = s[end..].trim_start();
    let (op, rest) = [
        ("=~", Op::Re),
        ("!~", Op::NotRe),
        ("!=", Op::Ne),
        ("=", Op::Eq),
    ]
    .into_iter()
    .find_map(|(text, op)| rest.strip_prefix(text).map(|r| (op, r)))?;
    let (value, rest) = quoted(rest.trim_start())?;
    Some((
        Matcher {
            name: name.to_owned(),
            op,
            value,
        },
        rest,
    ))
}

/// A double-quoted string with `\"`, `\\`, `\n`, `\t` escapes (others refused).
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices();
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 2..])),
            '\\' => value.push(match chars.next()?.1 {
                '"' => '"',
                '\\' => '\\',
                'n' => '\n',
                't' => '\t',
                _ => return None,
            }),
            c => value.push(c),
        }
    }
    None
}

/// Whether `selector` can only select series of applications `scope` allows: `Ok` naming the
/// confining application, or why not.
pub fn confined(selector: &str, scope: &Scope) -> Result<String, String> {
    let matchers =
        parse(selector).ok_or_else(|| format!("the selector {selector:?} does not parse"))?;
    matchers
        .into_iter()
        .find(|m| m.name == "service_name" && m.op == Op::Eq && scope.allows_app(&m.value))
        .map(|m| m.value)
        .ok_or_else(|| {
            format!(
                "the selector {selector:?} is not limited to an allowed application: add service_name=\"<app>\" with one of {}",
                scope.apps_text()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(apps: &[&str]) -> Scope {
        let apps: Vec<String> = apps.iter().map(|a| a.to_string()).collect();
        Scope::parse(Some(&apps), None)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    #[test]
    fn selectors_parse_with_quotes_and_escapes() {
        let m = parse(
            r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="a", env!~"d.*",x="q\"}"}"#,
        )
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].value, "a");
        assert_eq!(m[1].op, Op::NotRe);
        assert_eq!(m[2].value, "q\"}");
        assert_eq!(parse("{}").unwrap(), vec![]);
        for bad in [
            "",
            "a",
            "{a=b}",
            "{a=\"b\"",
            "{a=\"b\"}x",
            "{a=\"b\" c=\"d\"}",
            "x y{}",
            "{=\"a\"}",
            "{a==\"b\"}",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_an_equality_on_an_allowed_service_name_confines() {
        let s = scope(&["checkout", "pay-*"]);
        assert!(confined(r#"{service_name="checkout"}"#, &s).is_ok());
        assert!(confined(r#"cpu{env="x",service_name="pay-api"}"#, &s).is_ok());
        assert!(confined(r#"{service_name="billing",service_name="checkout"}"#, &s).is_ok());
        for bad in [
            r#"{service_name="billing"}"#,
            r#"{service_name=~"checkout"}"#,
            r#"{service_name!="billing"}"#,
            r#"{env="checkout"}"#,
            r#"{x="service_name=\"checkout\""}"#,
            "{}",
            "checkout.cpu",
        ] {
            assert!(confined(bad, &s).is_err(), "{bad}");
        }
    }
}
