//! From the provider's claims to a pyrogate user: groups, role, e-mail domain, user name.

use serde_json::{Map, Value};

use crate::core::token::Role;

/// Most groups kept per user, and the longest group name kept.
const MAX_GROUPS: usize = 256;
const MAX_GROUP_LEN: usize = 255;

/// The ID token's claims with UserInfo's added where the ID token has none of that name
/// (providers such as Entra ID and Okta put groups or e-mail in only one of them). UserInfo
/// for another `sub` is refused (OpenID Connect Core §5.3.4).
pub fn merge(
    mut id_token: Map<String, Value>,
    userinfo: Option<Map<String, Value>>,
) -> Option<Map<String, Value>> {
    if let Some(info) = userinfo {
        if info.get("sub") != id_token.get("sub") {
            return None;
        }
        for (name, value) in info {
            id_token.entry(name).or_insert(value);
        }
    }
    Some(id_token)
}

/// The groups in claim `name`: a list of strings (others skipped) or one string.
pub fn groups(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    let keep = |s: &str| !s.is_empty() && s.len() <= MAX_GROUP_LEN;
    let mut out: Vec<String> = match claims.get(name) {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| keep(s))
            .take(MAX_GROUPS)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(one)) if keep(one) => vec![one.clone()],
        _ => Vec::new(),
    };
    out.dedup();
    out
}

/// The role of a member of `groups`: the first of Admin, ReadOnly, Agent with a mapped group
/// the user is in; otherwise `default`, or `None` when `strict`.
pub fn role_for(
    groups: &[String],
    mapping: &[(Role, Vec<String>)],
    strict: bool,
    default: Role,
) -> Option<Role> {
    mapping
        .iter()
        .find(|(_, mapped)| mapped.iter().any(|g| groups.contains(g)))
        .map(|(role, _)| *role)
        .or((!strict).then_some(default))
}

/// `email_verified` as providers send it: `true`, or the string `"true"` (older Cognito).
pub fn email_verified(claims: &Map<String, Value>) -> bool {
    match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The e-mail claim, if it is a plausible address.
pub fn email(claims: &Map<String, Value>) -> Option<String> {
    let email = claims.get("email")?.as_str()?;
    let ok = email.len() <= 255
        && email
            .split_once('@')
            .is_some_and(|(a, d)| !a.is_empty() && !d.is_empty() && !d.contains('@'))
        && !email.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then(|| email.to_owned())
}

/// With `allowed` domains configured, only a verified e-mail in one of them passes: an
/// unverified address proves nothing about the domain. Without, everyone passes.
pub fn domain_allowed(claims: &Map<String, Value>, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(email) = email(claims) else {
        return false;
    };
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    email_verified(claims) && allowed.contains(&domain)
}

/// A short printable string claim.
fn text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    let s = claims.get(name)?.as_str()?.trim();
    let ok = !s.is_empty()
        && s.chars().count() <= 64
        && !s.chars().any(char::is_control)
        && !crate::core::names::has_hidden(s);
    ok.then(|| s.to_owned())
}

/// The user name of a user created at their first sign-in: `preferred_username`, else the
/// e-mail, else `sso-` and the start of the subject's hash.
pub fn user_name(claims: &Map<String, Value>) -> String {
    text(claims, "preferred_username")
        .or_else(|| email(claims).filter(|e| e.chars().count() <= 64))
        .map(|n| crate::core::names::normalize(&n))
        .unwrap_or_else(|| {
            let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
            let digest = crate::core::crypto::sha256(sub.as_bytes());
            let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
            format!("sso-{hex}")
        })
}

/// The full name, if the provider gives one.
pub fn full_name(claims: &Map<String, Value>) -> Option<String> {
    text(claims, "name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_first_mapped_role_wins_and_strict_refuses_the_unmapped() {
        let mapping = vec![
            (Role::Admin, vec!["admins".to_owned()]),
            (Role::ReadOnly, vec!["devs".to_owned(), "sre".to_owned()]),
            (Role::Agent, vec!["ci".to_owned()]),
        ];
        let g = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            role_for(&g(&["ci", "admins"]), &mapping, false, Role::ReadOnly),
            Some(Role::Admin)
        );
        assert_eq!(
            role_for(&g(&["sre"]), &mapping, true, Role::Admin),
            Some(Role::ReadOnly)
        );
        assert_eq!(
            role_for(&g(&["other"]), &mapping, false, Role::Agent),
            Some(Role::Agent)
        );
        assert_eq!(role_for(&g(&["other"]), &mapping, true, Role::Agent), None);
    }

    #[test]
    fn groups_are_a_list_or_one_string_and_userinfo_fills_gaps_for_the_same_subject() {
        let id = map(json!({"sub": "s", "groups": ["a", 1, "b", ""], "email": "x@y.z"}));
        assert_eq!(groups(&id, "groups"), vec!["a", "b"]);
        assert_eq!(groups(&map(json!({"g": "one"})), "g"), vec!["one"]);
        assert!(groups(&map(json!({"g": {"a": 1}})), "g").is_empty());
        let merged = merge(
            id.clone(),
            Some(map(
                json!({"sub": "s", "email": "other@y.z", "roles": ["r"]}),
            )),
        )
        .unwrap();
        assert_eq!(merged["email"], "x@y.z");
        assert_eq!(merged["roles"], json!(["r"]));
        assert!(merge(id, Some(map(json!({"sub": "t"})))).is_none());
    }

    #[test]
    fn allowed_domains_need_a_verified_address_in_one_of_them() {
        let allowed = vec!["example.com".to_owned()];
        let c = |v: Value| map(v);
        assert!(domain_allowed(
            &c(json!({"email": "a@Example.com", "email_verified": true})),
            &allowed
        ));
        assert!(!domain_allowed(
            &c(json!({"email": "a@example.com", "email_verified": false})),
            &allowed
        ));
        assert!(!domain_allowed(
            &c(json!({"email": "a@evil.example", "email_verified": true})),
            &allowed
        ));
        assert!(!domain_allowed(&c(json!({})), &allowed));
        assert!(domain_allowed(&c(json!({})), &[]));
    }
}
