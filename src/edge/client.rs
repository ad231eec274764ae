//! The one HTTP client constructor: the upstream forwarder, the read proxy and the node's sync
//! loop all get their client here, so connection settings and TLS are decided once. `http://`
//! and `https://` URLs both work; https verifies the peer with the TLS configuration built for
//! it in [`crate::edge::tls`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTP/1 client: TCP_NODELAY, `connect_timeout` per connection, up to 64 idle
/// connections per host kept for 90 s, TLS from `tls` for https URLs.
pub fn http_client(connect_timeout: Duration, tls: Arc<rustls::ClientConfig>) -> HttpClient {
    let connector = connector(connect_timeout, tls);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// How every client here connects — this one and the push path's
/// [`crate::edge::origin::OriginPool`]: TCP_NODELAY, `connect_timeout`, TLS from `tls` for
/// https.
pub(super) fn connector(
    connect_timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
) -> HttpsConnector<HttpConnector> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector)
}
