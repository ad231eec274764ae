//! Single sign-on: a small OpenID Connect relying party of pyrogate's own, on jsonwebtoken
//! (through the ring provider, [`crate::core::crypto`]) and the project's one HTTP client
//! ([`crate::edge::client`]). The OIDC crates for Rust verify RSA with the RustCrypto `rsa`
//! crate or bring a second TLS and crypto stack; the part of the protocol a relying party
//! needs is small, and every check it makes is here to read and test.
//!
//! | file | what it holds |
//! |---|---|
//! | [`discovery`] | the provider's metadata, checked: exact issuer, https (or loopback) endpoints, PKCE S256 |
//! | [`jwks`] | the provider's keys, each bound to one algorithm: RS256, ES256, EdDSA |
//! | [`id_token`] | the ID token: header, key choice, signature, claims (iss, aud, azp, exp, iat, nbf, nonce, sub) |
//! | [`token`] | the token endpoint's and UserInfo's answers |
//! | [`claims`] | groups, role mapping, e-mail domain, user name |
//! | [`next`] | the return-to path: same-site relative paths only |
//!
//! [`Provider`] ties them together: it reads the discovery document when first needed (and
//! again after an hour), keeps the JWK Set and fetches it again when a token names an unknown
//! `kid` (at most once per [`JWKS_REFETCH_COOLDOWN`], so forged tokens can't make pyrogate
//! hammer the provider), exchanges codes and reads UserInfo. The routes that use it are in
//! [`crate::authority::routes::sso`]. Codes, tokens and the client secret are never logged.

pub mod claims;
pub mod discovery;
pub mod id_token;
pub mod jwks;
pub mod next;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};

use crate::config::OidcSettings;
use crate::core::clock::Clock;
use crate::edge::client::{HttpClient, http_client};
use discovery::Discovery;
use id_token::{Expected, IdTokenError};
use jwks::ProviderKey;

/// Shortest time between two JWKS fetches caused by an unknown `kid`.
pub const JWKS_REFETCH_COOLDOWN: u64 = 30;
/// How long a discovery document is used before it is read again.
const DISCOVERY_MAX_AGE: u64 = 3600;
/// Bound on every request to the provider, and on the answers' size.
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER: usize = 512 * 1024;

/// Why talking to the provider failed (not a refusal of the user: the provider or the
/// network).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Unreachable, timed out, or not an answer of the expected shape; logged, not shown.
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
    /// The token endpoint refused the code (`invalid_grant` for a code used twice).
    #[error("the provider refused the authorization code ({0})")]
    CodeRefused(String),
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<ProviderKey>,
    fetched_at: Option<u64>,
}

/// The configured OpenID provider.
pub struct Provider {
    pub settings: OidcSettings,
    client: HttpClient,
    clock: Arc<dyn Clock>,
    metadata: tokio::sync::Mutex<Option<(Arc<Discovery>, u64)>>,
    keys: tokio::sync::Mutex<KeyCache>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.settings.issuer)
            .finish()
    }
}

/// A random URL-safe string of `bytes` random bytes (state, nonce, PKCE verifier).
pub fn random(bytes: usize) -> String {
    crate::core::b64::random(bytes)
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn challenge(verifier: &str) -> String {
    crate::core::b64::encode(crate::core::crypto::sha256(verifier.as_bytes()))
}

impl Provider {
    pub fn new(settings: OidcSettings, clock: Arc<dyn Clock>) -> anyhow::Result<Provider> {
        let tls = crate::edge::tls::client_config(&settings.tls)?;
        Ok(Provider {
            settings,
            client: http_client(Duration::from_secs(5), tls),
            clock,
            metadata: tokio::sync::Mutex::new(None),
            keys: tokio::sync::Mutex::new(KeyCache::default()),
        })
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)> {
        let uri = req.uri().clone();
        // The path only: a query could hold something secret.
        let what = format!(
            "{} {}://{}{}",
            req.method(),
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map(|a| a.as_str()).unwrap_or(""),
            uri.path()
        );
        let response = tokio::time::timeout(TIMEOUT, self.client.request(req))
            .await
            .with_context(|| format!("{what}: timed out"))?
            .with_context(|| what.clone())?;
        let status = response.status();
        let body = tokio::time::timeout(
            TIMEOUT,
            Limited::new(response.into_body(), MAX_ANSWER).collect(),
        )
        .await
        .with_context(|| format!("{what}: timed out reading the answer"))?
        .map_err(|e| anyhow::anyhow!("{what}: reading the answer: {e}"))?
        .to_bytes();
        Ok((status, body))
    }

    async fn get(&self, url: &str, bearer: Option<&str>) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut req = Request::get(url).header(header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(
            req.body(Full::new(Bytes::new()))
                .context("building a request")?,
        )
        .await
    }

    /// The discovery document: cached, read again once an hour (the old one is kept if the
    /// provider can't be reached then).
    pub async fn metadata(&self) -> Result<Arc<Discovery>, ProviderError> {
        let now = self.clock.now();
        let mut cached = self.metadata.lock().await;
        if let Some((doc, at)) = cached.as_ref()
            && now.saturating_sub(*at) < DISCOVERY_MAX_AGE
        {
            return Ok(doc.clone());
        }
        let url = discovery::discovery_url(&self.settings.issuer);
        let fetched = async {
            let (status, body) = self.get(&url, None).await?;
            anyhow::ensure!(status == StatusCode::OK, "GET {url}: {status}");
            Ok(Discovery::parse(&body, &self.settings.issuer)?)
        }
        .await;
        match (fetched, cached.as_ref()) {
            (Ok(doc), _) => {
                let doc = Arc::new(doc);
                *cached = Some((doc.clone(), now));
                Ok(doc)
            }
            (Err(err), Some((old, _))) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "re-reading the OpenID provider's discovery document failed; using the one read before"
                );
                Ok(old.clone())
            }
            (Err(err), None) => Err(ProviderError::Unavailable(err)),
        }
    }

    /// The URL the browser is sent to (authorization code flow, PKCE S256).
    pub fn authorization_url(
        &self,
        meta: &Discovery,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.settings.redirect_url)
            .append_pair("scope", &self.settings.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge(verifier))
            .append_pair("code_challenge_method", "S256")
            .finish();
        let endpoint = &meta.authorization_endpoint;
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        format!("{endpoint}{sep}{query}")
    }

    /// Exchanges the code (client secret by HTTP Basic, RFC 6749 §2.3.1).
    pub async fn exchange(
        &self,
        meta: &Discovery,
        code: &str,
        verifier: &str,
    ) -> Result<token::TokenResponse, ProviderError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.settings.redirect_url)
            .append_pair("code_verifier", verifier)
            .finish();
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&self.settings.client_id),
            enc(self.settings.client_secret.expose())
        ));
        let req = Request::post(&meta.token_endpoint)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ProviderError::Unavailable(e.into()))?;
        let (status, body) = self.send(req).await.map_err(ProviderError::Unavailable)?;
        if !status.is_success() {
            return Err(match token::error_code(&body) {
                Some(code) => ProviderError::CodeRefused(code),
                None => ProviderError::Unavailable(anyhow::anyhow!(
                    "the token endpoint answered {status}"
                )),
            });
        }
        token::TokenResponse::parse(&body).ok_or_else(|| {
            ProviderError::Unavailable(anyhow::anyhow!(
                "the token endpoint's answer has no ID token"
            ))
        })
    }

    async fn fetch_keys(&self, meta: &Discovery, cache: &mut KeyCache) -> anyhow::Result<()> {
        let now = self.clock.now();
        cache.fetched_at = Some(now);
        let (status, body) = self.get(&meta.jwks_uri, None).await?;
        anyhow::ensure!(status == StatusCode::OK, "GET {}: {status}", meta.jwks_uri);
        cache.keys =
            jwks::parse(&body).with_context(|| format!("{} is not a JWK Set", meta.jwks_uri))?;
        Ok(())
    }

    /// Verifies an ID token against the provider's keys, fetching them again (at most once
    /// per cooldown) when the token names a key not among them.
    pub async fn verify_id_token(
        &self,
        meta: &Discovery,
        raw: &str,
        nonce: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ProviderError> {
        let (alg, kid) = id_token::header(raw)?;
        let now = self.clock.now();
        let expected = Expected {
            issuer: &self.settings.issuer,
            client_id: &self.settings.client_id,
            nonce,
            now,
            skew: self.settings.clock_skew.as_secs(),
        };
        let mut cache = self.keys.lock().await;
        if cache.fetched_at.is_none() {
            self.fetch_keys(meta, &mut cache)
                .await
                .map_err(ProviderError::Unavailable)?;
        }
        if id_token::select(&cache.keys, alg, kid.as_deref()).is_none() {
            let cooled = cache
                .fetched_at
                .is_none_or(|at| now.saturating_sub(at) >= JWKS_REFETCH_COOLDOWN);
            if cooled && let Err(err) = self.fetch_keys(meta, &mut cache).await {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "fetching the OpenID provider's keys failed"
                );
            }
        }
        let key =
            id_token::select(&cache.keys, alg, kid.as_deref()).ok_or(IdTokenError::UnknownKey)?;
        Ok(id_token::verify(raw, key, &expected)?)
    }

    /// UserInfo's claims, with the access token.
    pub async fn userinfo(
        &self,
        meta: &Discovery,
        access_token: &str,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ProviderError> {
        let Some(url) = &meta.userinfo_endpoint else {
            return Ok(None);
        };
        let (status, body) = self
            .get(url, Some(access_token))
            .await
            .map_err(ProviderError::Unavailable)?;
        if status != StatusCode::OK {
            return Err(ProviderError::Unavailable(anyhow::anyhow!(
                "the UserInfo endpoint answered {status}"
            )));
        }
        token::parse_userinfo(&body).map(Some).ok_or_else(|| {
            ProviderError::Unavailable(anyhow::anyhow!("UserInfo's answer is not a JSON object"))
        })
    }
}
