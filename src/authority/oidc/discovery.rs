//! The provider's metadata (`/.well-known/openid-configuration`, OpenID Connect Discovery 1.0).

use serde::Deserialize;

use crate::config::secure_or_loopback;

/// The fields of the discovery document pyrogate uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    /// RFC 9207: when true, an authorization response without `iss` is refused.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// Why a discovery document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the discovery document is not valid JSON with the required fields")]
    Malformed,
    #[error("the discovery document names issuer {found:?}, not the configured {expected:?}")]
    Issuer { expected: String, found: String },
    #[error("the provider's {0} is neither https nor a loopback http URL")]
    Insecure(&'static str),
    #[error("the provider does not support PKCE with S256")]
    NoPkce,
}

impl Discovery {
    /// Parses a discovery document and checks it: the issuer exactly as configured, every
    /// endpoint https (or http to a loopback address), S256 among the PKCE methods when the
    /// provider lists them.
    pub fn parse(body: &[u8], expected_issuer: &str) -> Result<Discovery, DiscoveryError> {
        let doc: Discovery = serde_json::from_slice(body).map_err(|_| DiscoveryError::Malformed)?;
        if doc.issuer != expected_issuer {
            return Err(DiscoveryError::Issuer {
                expected: expected_issuer.to_owned(),
                found: doc.issuer.chars().take(200).collect(),
            });
        }
        let endpoints = [
            ("authorization_endpoint", Some(&doc.authorization_endpoint)),
            ("token_endpoint", Some(&doc.token_endpoint)),
            ("jwks_uri", Some(&doc.jwks_uri)),
            ("userinfo_endpoint", doc.userinfo_endpoint.as_ref()),
        ];
        for (name, url) in endpoints {
            if let Some(url) = url
                && !secure_or_loopback(url)
            {
                return Err(DiscoveryError::Insecure(name));
            }
        }
        if let Some(methods) = &doc.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(DiscoveryError::NoPkce);
        }
        Ok(doc)
    }
}

/// `…/.well-known/openid-configuration` of an issuer (a trailing `/` is not doubled).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}
