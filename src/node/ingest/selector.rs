//! Label selectors (`{service_name="checkout", env!="dev"}`) as the read proxy sees them, for
//! keys limited to applications. A selector leaves the node confined to the key's applications:
//! unchanged when it already holds a `service_name="X"` matcher (`=`, not a regex) whose `X` the
//! key may read, else with `service_name=~"<the key's applications>"` added ([`confine`]).
//! Matchers are ANDed, so either way it can only ever select series of allowed applications,
//! whatever else it says; a query for another application selects nothing. Anything that does
//! not parse is refused, never guessed at.

use std::borrow::Cow;

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

/// An RE2 pattern matching exactly the application names `scope` allows (`checkout|pay-.*`).
/// Pyroscope anchors matcher regexes at both ends, as Prometheus does, so `checkout` does not
/// match `checkout-api`. Application names hold only `A–Z a–z 0–9 . _ - / :`, of which `.` is
/// the one regex metacharacter; everything special is escaped anyway.
pub fn apps_regex(scope: &Scope) -> String {
    let escape = |s: &str| {
        let mut out = String::with_capacity(s.len() + 4);
        for c in s.chars() {
            if "\\.+*?()|[]{}^$".contains(c) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    scope
        .app_list()
        .iter()
        .map(|p| match p.strip_suffix('*') {
            Some(stem) => format!("{}.*", escape(stem)),
            None => escape(p),
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// The matcher [`confine`] adds: `service_name=~"<apps_regex>"`, quoted as selectors quote.
pub fn apps_matcher(scope: &Scope) -> String {
    let regex = apps_regex(scope).replace('\\', "\\\\").replace('"', "\\\"");
    format!("service_name=~\"{regex}\"")
}

/// `selector` as it may leave the node for a key limited to `scope`'s applications: itself
/// when it already names an allowed application ([`confined`]) or holds [`apps_matcher`], else
/// with [`apps_matcher`] added to its matchers. `Err` when it does not parse, or would not parse with the matcher
/// added (too long, too many matchers).
pub fn confine<'a>(selector: &'a str, scope: &Scope) -> Result<Cow<'a, str>, String> {
    if confined(selector, scope).is_ok() {
        return Ok(Cow::Borrowed(selector));
    }
    let matchers =
        parse(selector).ok_or_else(|| format!("the selector {selector:?} does not parse"))?;
    let regex = apps_regex(scope);
    let is_added = |m: &Matcher| m.name == "service_name" && m.op == Op::Re && m.value == regex;
    if matchers.iter().any(is_added) {
        // Confined already, by this very matcher (a query rewritten before, or written so).
        return Ok(Cow::Borrowed(selector));
    }
    // It parsed, so once trimmed it ends with its closing brace.
    let trimmed = selector.trim();
    let inner = trimmed[..trimmed.len() - 1].trim_end();
    let comma = if inner.ends_with('{') || inner.ends_with(',') {
        ""
    } else {
        ","
    };
    let added = apps_matcher(scope);
    let out = format!("{inner}{comma}{added}}}");
    let ends_confined = parse(&out).is_some_and(|m| m.last().is_some_and(is_added));
    if !ends_confined {
        return Err(format!(
            "the selector {selector:?} can't be limited to the key's applications (too long or too many matchers)"
        ));
    }
    Ok(Cow::Owned(out))
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

    #[test]
    fn a_selector_not_confined_gets_the_apps_matcher_added() {
        let s = scope(&["checkout", "pay.v2-*"]);
        assert_eq!(apps_regex(&s), r"checkout|pay\.v2-.*");
        let added = r#"service_name=~"checkout|pay\\.v2-.*""#;
        for (input, want) in [
            (
                r#"{service_name="checkout"}"#.to_owned(),
                r#"{service_name="checkout"}"#.to_owned(),
            ),
            ("{}".to_owned(), format!("{{{added}}}")),
            (" cpu{ } ".to_owned(), format!("cpu{{{added}}}")),
            (
                r#"{env="prod"}"#.to_owned(),
                format!(r#"{{env="prod",{added}}}"#),
            ),
            (
                r#"{env="prod",}"#.to_owned(),
                format!(r#"{{env="prod",{added}}}"#),
            ),
            (
                r#"{service_name="billing"}"#.to_owned(),
                format!(r#"{{service_name="billing",{added}}}"#),
            ),
        ] {
            assert_eq!(confine(&input, &s).unwrap(), want, "{input}");
        }
        for bad in ["", "checkout.cpu", "{a=b}", "{a=\"b\"} x"] {
            assert!(confine(bad, &s).is_err(), "{bad}");
        }
        let full = format!(
            "{{{}}}",
            (0..MAX_MATCHERS)
                .map(|i| format!("l{i}=\"v\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(confine(&full, &s).is_err(), "no room for one more matcher");
    }
}
