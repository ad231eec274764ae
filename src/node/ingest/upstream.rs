//! The upstream Grafana Pyroscope as the node reaches it: its base URL, one pooled client (TLS
//! from `upstream.tls-*`), the request timeout, and the node's own credentials
//! (`upstream.basic-auth-*` or `upstream.bearer-token`), which replace the agent's key on every
//! forwarded request — the agent's key never leaves the node. Shared by the forwarder and the
//! read proxy. Each serving thread of the node ([`crate::edge::server::current_worker`]) has
//! its own pool of push connections ([`OriginPool`]), so a push and the upstream connection
//! carrying it are driven by the same event loop; background work (the spool replay) has one
//! more. The read proxy uses the general pooled client.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Uri, header, request};
use base64::Engine as _;

use crate::config::{IngestSettings, UpstreamAuth};
use crate::edge::client::{HttpClient, http_client};
use crate::edge::origin::OriginPool;
use crate::edge::server::{current_worker, worker_count};
use crate::edge::tls;

#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    /// `base`'s path, without a trailing `/`: prefixed to every forwarded push.
    base_path: String,
    /// The read proxy's pooled client.
    client: HttpClient,
    /// Connections for forwarded pushes: one pool per serving thread, then one for every
    /// other thread (the spool replay).
    pools: Box<[OriginPool]>,
    timeout: Duration,
    /// The `Authorization` value sent upstream, marked sensitive (never logged).
    credentials: Option<HeaderValue>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.inner.base)
            .field(
                "credentials",
                &self.inner.credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The configured upstream, or none (profiles are kept locally).
    pub fn from_settings(settings: &IngestSettings) -> anyhow::Result<Option<Self>> {
        let Some(url) = &settings.upstream else {
            return Ok(None);
        };
        let parsed: Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("upstream.url {url} is not a valid URL: {e}"))?;
        let credentials = match &settings.upstream_auth {
            None => None,
            Some(UpstreamAuth::Basic { username, password }) => {
                let pair = format!("{username}:{}", password.expose());
                Some(credential(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))?)
            }
            Some(UpstreamAuth::Bearer(token)) => {
                Some(credential(&format!("Bearer {}", token.expose()))?)
            }
        };
        let tls = tls::client_config(&settings.upstream_tls)?;
        let connect_timeout = settings.upstream_timeout.min(Duration::from_secs(5));
        let pools = worker_count(settings.worker_threads) + 1;
        Ok(Some(Upstream {
            inner: Arc::new(Inner {
                base: url.trim_end_matches('/').to_owned(),
                base_path: parsed.path().trim_end_matches('/').to_owned(),
                client: http_client(connect_timeout, tls.clone()),
                pools: (0..pools)
                    .map(|_| OriginPool::new(&parsed, connect_timeout, tls.clone()))
                    .collect::<anyhow::Result<_>>()
                    .map_err(|e| anyhow::anyhow!("upstream.url {url}: {e}"))?,
                timeout: settings.upstream_timeout,
                credentials,
            }),
        }))
    }

    /// `base` + `path_and_query`.
    pub fn uri(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.inner.base)
    }

    /// The read proxy's client.
    pub fn client(&self) -> &HttpClient {
        &self.inner.client
    }

    /// The origin-form target of a forwarded push: `base`'s path + `path_and_query`.
    pub fn target<'a>(&self, path_and_query: &'a str) -> std::borrow::Cow<'a, str> {
        match self.inner.base_path.as_str() {
            "" => path_and_query.into(),
            base => format!("{base}{path_and_query}").into(),
        }
    }

    /// The push connections of the thread this runs on.
    pub fn pool(&self) -> &OriginPool {
        let pools = &self.inner.pools;
        let shared = pools.len() - 1;
        let index = current_worker().filter(|&i| i < shared).unwrap_or(shared);
        &pools[index]
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The node's own `Authorization` value, if configured (marked sensitive).
    pub fn credentials(&self) -> Option<&HeaderValue> {
        self.inner.credentials.as_ref()
    }

    /// Adds the node's own credentials, if configured.
    pub fn authorize(&self, builder: request::Builder) -> request::Builder {
        match &self.inner.credentials {
            Some(value) => builder.header(header::AUTHORIZATION, value.clone()),
            None => builder,
        }
    }
}

fn credential(text: &str) -> anyhow::Result<HeaderValue> {
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        anyhow::anyhow!("upstream credentials contain characters not allowed in an HTTP header")
    })?;
    value.set_sensitive(true);
    Ok(value)
}
