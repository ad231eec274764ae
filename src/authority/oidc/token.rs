//! The token endpoint's answer (RFC 6749 §5.1/§5.2) and UserInfo's.

use serde::Deserialize;

/// A successful token response: what pyrogate uses of it.
#[derive(Deserialize)]
pub struct TokenResponse {
    pub id_token: String,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenResponse([redacted])")
    }
}

/// An error response's `error` code, if the body is one (`invalid_grant` for a code used
/// twice). Only the code, a fixed vocabulary word, is ever shown or logged.
pub fn error_code(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Error {
        error: String,
    }
    let e: Error = serde_json::from_slice(body).ok()?;
    let ok = !e.error.is_empty()
        && e.error.len() <= 64
        && e.error
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then_some(e.error)
}

impl TokenResponse {
    /// `None` unless the body is a JSON object with a string `id_token` (and a `token_type`
    /// of `Bearer`, in any case, when there is one).
    pub fn parse(body: &[u8]) -> Option<TokenResponse> {
        let r: TokenResponse = serde_json::from_slice(body).ok()?;
        let bearer = r
            .token_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("bearer"));
        (bearer && !r.id_token.is_empty()).then_some(r)
    }
}

/// A UserInfo answer: a JSON object of claims (signed or encrypted UserInfo is not asked for).
pub fn parse_userinfo(body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_slice(body).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}
