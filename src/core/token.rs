//! API-key tokens: roles, claims, and the rules for issuing them. The format is specified in
//! docs/token-format.md; verification lives in [`crate::core::verifier`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::b64;
use crate::core::jws::Signer;

/// `typ` of an API key. Pinned by the verifier: no other kind of token can pass as one.
pub const API_KEY_TYP: &str = "apikey+jwt";
/// `typ` of an API key that carries scopes (`apps`, `cidrs`). Distinct so that a verifier
/// which does not know the scope claims — an older node, a generic JWT library pinning
/// [`API_KEY_TYP`] — refuses the key instead of ignoring its restrictions.
pub const SCOPED_API_KEY_TYP: &str = "scoped-apikey+jwt";
/// `typ` of a UI session token (a different token kind; never accepted as an API key).
pub const SESSION_TYP: &str = "session+jwt";
/// `typ` of the signed revocation list.
pub const REVOCATIONS_TYP: &str = "revocations+jwt";

/// Random bytes in a `jti` (the revocation handle): 128 bits.
pub const JTI_BYTES: usize = 16;
/// Longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Latest `exp` accepted: 9999-12-31T23:59:59Z. Larger values are nonsense, not "forever".
pub const MAX_TIMESTAMP: u64 = 253_402_300_799;

/// What a key may do (the roles table in docs/api.md). Parsed case-insensitively, written as below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Admin,
    ReadOnly,
    Agent,
    /// An ingest node's own credential: good only for reporting to the authority
    /// (`POST /api/nodes/report`), never for pushing, reading or administering.
    Node,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::ReadOnly, Role::Agent, Role::Node];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "Admin",
            Role::ReadOnly => "ReadOnly",
            Role::Agent => "Agent",
            Role::Node => "Node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role")]
pub struct UnknownRole;

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or(UnknownRole)
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The claims of an API key, as issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub role: Role,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Applications the key may push or read (names or `prefix*` patterns); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<String>>,
    /// Networks the key may be used from; absent: anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidrs: Option<Vec<String>>,
}

impl Claims {
    /// The `typ` these claims are signed under: scoped keys get their own (see
    /// [`SCOPED_API_KEY_TYP`]).
    pub fn typ(&self) -> &'static str {
        if self.apps.is_some() || self.cidrs.is_some() {
            SCOPED_API_KEY_TYP
        } else {
            API_KEY_TYP
        }
    }
}

/// A bearer secret. Debug and Display never show it; call [`Secret::expose`] on purpose.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What an admin asks for when creating a key.
#[derive(Debug, Clone)]
pub struct KeyRequest<'a> {
    pub name: &'a str,
    pub role: Role,
    /// Seconds of validity; 0 means the key never expires.
    pub ttl_seconds: u64,
    pub tenant: Option<&'a str>,
    /// `apps` scope; `None` for a key that may push or read any application.
    pub apps: Option<&'a [String]>,
    /// `cidrs` scope; `None` for a key usable from anywhere.
    pub cidrs: Option<&'a [String]>,
}

/// A freshly signed key: the token (shown once) and its claims (stored).
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub token: Secret,
    pub claims: Claims,
    pub kid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    #[error("api key name can't be empty")]
    EmptyName,
    #[error("api key name must be at most {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("api key name must not contain control characters")]
    NameControlChars,
    #[error("api key name must not contain invisible or direction-changing characters")]
    NameHiddenChars,
    #[error("invalid tenant id: {0}")]
    InvalidTenant(&'static str),
    #[error("{0}")]
    Scope(#[from] crate::core::scope::ScopeError),
    #[error("apps: an Admin key can't be limited to applications (it can create any key)")]
    AdminApps,
    #[error("ttlSeconds is too large")]
    TtlTooLarge,
    #[error("{0}")]
    Signing(#[from] crate::core::jws::SignError),
}

pub fn validate_name(name: &str) -> Result<(), IssueError> {
    if name.trim().is_empty() {
        return Err(IssueError::EmptyName);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(IssueError::NameTooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(IssueError::NameControlChars);
    }
    if crate::core::names::has_hidden(name) {
        return Err(IssueError::NameHiddenChars);
    }
    Ok(())
}

/// Grafana Mimir/Pyroscope tenant-id rules: 1–150 characters from `[A-Za-z0-9!-_.*'()]`, not
/// `.` or `..`, and not the reserved `__mimir_cluster`.
pub fn validate_tenant(tenant: &str) -> Result<(), IssueError> {
    if tenant.is_empty() {
        return Err(IssueError::InvalidTenant("empty"));
    }
    if tenant.len() > 150 {
        return Err(IssueError::InvalidTenant("longer than 150 characters"));
    }
    if tenant == "." || tenant == ".." {
        return Err(IssueError::InvalidTenant("\".\" and \"..\" are reserved"));
    }
    if tenant == "__mimir_cluster" {
        return Err(IssueError::InvalidTenant("\"__mimir_cluster\" is reserved"));
    }
    let ok = tenant
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b));
    if !ok {
        return Err(IssueError::InvalidTenant(
            "only letters, digits and !-_.*'() are allowed",
        ));
    }
    Ok(())
}

/// The scope rules of docs/token-format.md: each list well-formed, and no `apps` on an Admin
/// key (an Admin can create any key, so an app scope on one would restrict nothing).
pub fn validate_scope(
    role: Role,
    apps: Option<&[String]>,
    cidrs: Option<&[String]>,
) -> Result<Option<crate::core::scope::Scope>, IssueError> {
    if role == Role::Admin && apps.is_some() {
        return Err(IssueError::AdminApps);
    }
    Ok(crate::core::scope::Scope::parse(apps, cidrs)?)
}

/// Signs a new API key. `now` is the issue time in Unix seconds.
pub fn issue(
    signer: &Signer,
    issuer: &str,
    now: u64,
    req: &KeyRequest<'_>,
) -> Result<IssuedKey, IssueError> {
    validate_name(req.name)?;
    if let Some(tenant) = req.tenant {
        validate_tenant(tenant)?;
    }
    validate_scope(req.role, req.apps, req.cidrs)?;
    let exp = match req.ttl_seconds {
        0 => None,
        ttl => Some(
            now.checked_add(ttl)
                .filter(|exp| *exp <= MAX_TIMESTAMP)
                .ok_or(IssueError::TtlTooLarge)?,
        ),
    };
    let claims = Claims {
        iss: issuer.to_owned(),
        sub: req.name.to_owned(),
        role: req.role,
        iat: now,
        exp,
        jti: b64::random(JTI_BYTES),
        tenant: req.tenant.map(str::to_owned),
        apps: req.apps.map(<[String]>::to_vec),
        cidrs: req.cidrs.map(<[String]>::to_vec),
    };
    let token = signer.encode(claims.typ(), &claims)?;
    Ok(IssuedKey {
        token: Secret(token),
        claims,
        kid: signer.kid().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_case_insensitively_and_print_canonically() {
        assert_eq!("readonly".parse::<Role>().unwrap(), Role::ReadOnly);
        assert_eq!("AGENT".parse::<Role>().unwrap(), Role::Agent);
        assert_eq!(Role::ReadOnly.to_string(), "ReadOnly");
        assert!("root".parse::<Role>().is_err());
        assert!("read-only".parse::<Role>().is_err());
    }

    #[test]
    fn tenant_rules_follow_grafana() {
        assert!(validate_tenant("team-a_1.prod").is_ok());
        assert!(validate_tenant("").is_err());
        assert!(validate_tenant("..").is_err());
        assert!(validate_tenant("a/b").is_err());
        assert!(validate_tenant(&"a".repeat(151)).is_err());
        assert!(validate_tenant("__mimir_cluster").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(validate_name(""), Err(IssueError::EmptyName));
        assert_eq!(validate_name("  "), Err(IssueError::EmptyName));
        assert_eq!(validate_name("a\nb"), Err(IssueError::NameControlChars));
        assert_eq!(
            validate_name(&"é".repeat(256)),
            Err(IssueError::NameTooLong)
        );
        assert!(validate_name(&"é".repeat(255)).is_ok());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "[redacted]");
    }
}
