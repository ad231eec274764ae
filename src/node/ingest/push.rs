//! [`Push`]: one push on its way upstream. In a module of its own so that nothing else in the
//! ingest plane can reach the agent's raw headers — only [`Push::forwarded`].

use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderValue, header};
use bytes::Bytes;

use super::{TENANT_HEADER, forwardable, header_value};

/// One push, as it will be sent on: path, the headers worth forwarding, tenant, body.
///
/// It keeps the agent's request headers as they came (no copy on the hot path) and hands out
/// only the forwardable ones ([`Push::forwarded`]): the agent's `Authorization`, cookies and
/// the rest never leave through it, and its `Debug` shows only those.
#[derive(Clone)]
pub struct Push {
    pub path_and_query: PathAndQuery,
    headers: HeaderMap,
    pub tenant: Option<String>,
    pub body: Bytes,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push")
            .field("path_and_query", &self.path_and_query)
            .field("headers", &self.forwarded().collect::<Vec<_>>())
            .field("tenant", &self.tenant)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The tenant header as a name, for requests written from a [`HeaderMap`].
pub static TENANT_HEADER_NAME: header::HeaderName = header::HeaderName::from_static(TENANT_HEADER);

impl Push {
    /// A push of `body` to `path_and_query` for `tenant`; of `headers`, only the forwardable
    /// ones will ever be read.
    pub fn new(
        path_and_query: PathAndQuery,
        headers: HeaderMap,
        tenant: Option<String>,
        body: Bytes,
    ) -> Self {
        Push {
            path_and_query,
            headers,
            tenant,
            body,
        }
    }

    /// The headers that travel upstream: [`forwardable`] names with visible-ASCII values.
    pub fn forwarded(&self) -> impl Iterator<Item = (&header::HeaderName, &HeaderValue)> {
        self.headers
            .iter()
            .filter(|(name, value)| forwardable(name.as_str()) && value.to_str().is_ok())
    }

    /// The forwarded headers as text pairs, the form the spool and the local store keep.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.forwarded()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect()
    }

    /// Text pairs back into forwarded headers, dropping any that are not valid headers.
    pub fn headers_from_pairs<'a>(
        pairs: impl IntoIterator<Item = &'a (String, String)>,
    ) -> HeaderMap {
        pairs
            .into_iter()
            .filter_map(|(name, value)| {
                Some((
                    header::HeaderName::from_bytes(name.as_bytes()).ok()?,
                    header_value(value)?,
                ))
            })
            .collect()
    }

    /// The agent's `Content-Type` (a forwarded header), or "".
    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forwardable_headers_come_out_and_debug_shows_no_credentials() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret-key"),
        );
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("session=secret-cookie"),
        );
        headers.insert(TENANT_HEADER, HeaderValue::from_static("someone-else"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_bytes(b"agent \xff").unwrap(),
        );
        let push = Push::new(
            PathAndQuery::from_static("/ingest?name=a"),
            headers,
            Some("team".into()),
            Bytes::from_static(b"a 1"),
        );
        let names: Vec<_> = push.forwarded().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type"]);
        assert_eq!(
            push.header_pairs(),
            [("content-type".to_owned(), "text/plain".to_owned())]
        );
        assert_eq!(push.content_type(), "text/plain");
        let debug = format!("{push:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(!debug.contains("someone-else"), "{debug}");
    }
}
