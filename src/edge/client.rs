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
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}
