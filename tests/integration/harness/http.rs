//! One small HTTP/1 client on top of hyper-util for every suite: bound to one server, with an
//! optional one-cookie jar (the session cookie) and an optional local address to connect from.
//! Every request and every body read is bounded by [`REQUEST_TIMEOUT`].

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The authority's session cookie.
pub const COOKIE: &str = "pyrogate_session";
/// The bound on one request, and on reading its body: a hung server fails the test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {}", self.status, self.text()))
    }

    /// The `errors` of a Pyroscope-shaped error body; panics on any other shape.
    pub fn errors(&self) -> Vec<String> {
        let body = self.json();
        let obj = body.as_object().expect("error body is an object");
        assert_eq!(obj.len(), 1, "error body has only `errors`: {body}");
        obj["errors"]
            .as_array()
            .expect("`errors` is an array")
            .iter()
            .map(|e| e.as_str().expect("each error is a string").to_owned())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }
}

/// A client for one server (`http://host:port`). Clones share the connection pool and the jar.
#[derive(Clone)]
pub struct Http {
    base: String,
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    jar: Option<Arc<Mutex<Option<String>>>>,
}

impl Http {
    /// A client for the server at `base`, without a cookie jar.
    pub fn new(base: impl Into<String>) -> Self {
        Http {
            base: base.into(),
            inner: client(None, None),
            jar: None,
        }
    }

    /// A client for an `https://` server whose certificate chains to the CA in `ca`,
    /// presenting `client` when given (mTLS).
    pub fn trusting(
        base: impl Into<String>,
        ca: &std::path::Path,
        client_cert: Option<&super::pki::CertFiles>,
    ) -> Self {
        Http {
            base: base.into(),
            inner: client(None, Some(super::pki::client_tls(ca, client_cert))),
            jar: None,
        }
    }

    /// This client, keeping the session cookie the server sets (and dropping it when the
    /// server clears it), and sending it with every request.
    pub fn with_jar(mut self) -> Self {
        self.jar = Some(Arc::new(Mutex::new(None)));
        self
    }

    /// This client, connecting from another loopback address (a different "client address").
    pub fn connecting_from(mut self, ip: [u8; 4]) -> Self {
        self.inner = client(Some(IpAddr::from(ip)), None);
        self
    }

    /// The session cookie currently in the jar.
    pub fn cookie(&self) -> Option<String> {
        self.jar.as_ref()?.lock().expect("jar").clone()
    }

    pub fn set_cookie(&self, value: Option<String>) {
        let jar = self.jar.as_ref().expect("a client with a cookie jar");
        *jar.lock().expect("jar") = value;
    }

    pub fn request(&self, method: Method, path: &str) -> Req<'_> {
        Req {
            http: self,
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn get(&self, path: &str) -> Req<'_> {
        self.request(Method::GET, path)
    }
    pub fn post(&self, path: &str) -> Req<'_> {
        self.request(Method::POST, path)
    }
    pub fn put(&self, path: &str) -> Req<'_> {
        self.request(Method::PUT, path)
    }
    pub fn delete(&self, path: &str) -> Req<'_> {
        self.request(Method::DELETE, path)
    }

    fn store_cookies(&self, headers: &HeaderMap) {
        if self.jar.is_none() {
            return;
        }
        for value in headers.get_all(header::SET_COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            let Some(rest) = value.strip_prefix(&format!("{COOKIE}=")) else {
                continue;
            };
            let token = rest.split(';').next().unwrap_or_default();
            let cleared = token.is_empty() || value.contains("Max-Age=0");
            self.set_cookie((!cleared).then(|| token.to_owned()));
        }
    }
}

fn client(
    local: Option<IpAddr>,
    tls: Option<rustls::ClientConfig>,
) -> Client<HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(local);
    connector.enforce_http(false);
    // Plain-HTTP tests never reach the TLS settings; https ones bring their CA.
    let tls = tls.unwrap_or_else(|| {
        rustls::ClientConfig::builder_with_provider(pyrogate::edge::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// One request being built; [`Req::send`] sends it.
pub struct Req<'a> {
    http: &'a Http,
    method: Method,
    path: String,
    headers: Vec<(HeaderName, String)>,
    body: Bytes,
}

impl Req<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        self.headers.push((name, value.to_owned()));
        self
    }

    /// Every `(name, value)` of `headers`, in order.
    pub fn headers(self, headers: &[(&str, &str)]) -> Self {
        headers
            .iter()
            .fold(self, |req, (name, value)| req.header(name, value))
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &bearer(token))
    }

    pub fn json(self, body: &Value) -> Self {
        self.raw("application/json", body.to_string())
    }

    /// `body` with a `Content-Type`.
    pub fn raw(self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.body(body).header("content-type", content_type)
    }

    /// `body` as it is, with no `Content-Type` added.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub async fn send(self) -> Resp {
        self.try_send().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Req::send`] that returns a failed exchange (a refused or broken connection, a
    /// timeout) as an error instead of failing the test: for requests to a server being killed.
    pub async fn try_send(self) -> Result<Resp, String> {
        let uri = format!("{}{}", self.http.base, self.path);
        let what = format!("{} {uri}", self.method);
        let mut req = Request::builder().method(self.method).uri(&uri);
        for (name, value) in &self.headers {
            req = req.header(name, HeaderValue::from_str(value).expect("header value"));
        }
        if let Some(cookie) = self.http.cookie() {
            req = req.header(header::COOKIE, format!("{COOKIE}={cookie}"));
        }
        let req = req.body(Full::new(self.body)).expect("request");
        let res = tokio::time::timeout(REQUEST_TIMEOUT, self.http.inner.request(req))
            .await
            .map_err(|_| format!("{what} timed out"))?
            .map_err(|e| format!("{what}: {e}"))?;
        let (parts, body) = res.into_parts();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
            .await
            .map_err(|_| format!("{what}: reading the body timed out"))?
            .map_err(|e| format!("{what}: reading the body: {e}"))?
            .to_bytes();
        self.http.store_cookies(&parts.headers);
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// `Authorization: Bearer <key>`.
pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// `Authorization: Basic base64(user:key)`, the key as the password.
pub fn basic(user: &str, key: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{key}"));
    format!("Basic {encoded}")
}

/// The string field `name` of a JSON object.
pub fn s<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is not a string in {v}"))
}
