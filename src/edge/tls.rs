//! TLS for every hop, from one crypto provider (`ring`, through rustls): the client side of
//! each peer (upstream, authority) and the server side of both roles.
//!
//! - **Clients** trust the system roots, or only the CA bundle configured for that peer
//!   (`upstream.tls-ca-path`, `authority.tls-ca-path`), and may present a client certificate.
//!   Verification is never skipped unless `upstream.tls-insecure-skip-verify` says so, and
//!   then every start logs a warning.
//! - **Servers** serve the certificate chain in `server.http-tls-cert-path` and re-read it when
//!   the certificate or key file changes (cert-manager rotates them in place): new handshakes
//!   get the new certificate, open connections keep theirs. With
//!   `server.http-tls-client-auth: RequireAndVerifyClientCert`, clients must present a
//!   certificate chaining to `server.http-tls-ca-path`, which is re-read the same way: new
//!   handshakes are checked against the new CA bundle (to rotate a client CA, serve old and new
//!   together first). The server sends no list of acceptable CA names in its certificate
//!   request — that list could not follow a reload — so clients offer whatever certificate
//!   they have (an empty list means exactly that in TLS); the chain is checked all the same.
//!   A file that no longer loads is logged and the previous certificate or CA is kept.
//!
//! Every file error names the configuration key, and never prints key material.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use arc_swap::ArcSwap;
use rustls::DistinguishedName;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientTls, ServerTls};
use crate::edge::lifecycle::Lifecycle;

/// The one crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow!("{key}: cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow!(
                "{key}: {} is not a PEM certificate file: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        bail!("{key}: {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path, key: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    // The error never quotes the file: it may be a private key.
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::Io(io) => {
            anyhow!("{key}: cannot read {}: {io}", path.display())
        }
        _ => anyhow!(
            "{key}: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        ),
    })
}

fn roots(path: &Path, key: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, key)? {
        roots.add(cert).map_err(|e| {
            anyhow!(
                "{key}: {} is not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!(error = %err, "skipping part of the system's CA store");
    }
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "no system CA certificates found; https peers need a configured CA (…tls-ca-path)"
        );
    }
    roots
}

/// The rustls client configuration for one peer.
pub fn client_config(tls: &ClientTls) -> anyhow::Result<Arc<ClientConfig>> {
    let peer = tls.peer;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if tls.insecure_skip_verify {
        tracing::warn!(
            "{peer}.tls-insecure-skip-verify is set: the {peer}'s certificate is NOT verified; anyone on the network path can impersonate it"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let roots = match &tls.ca_path {
            Some(path) => roots(path, &format!("{peer}.tls-ca-path"))?,
            None => system_roots(),
        };
        builder.with_root_certificates(roots)
    };
    // No ALPN: the connector speaks HTTP/1.1 only, which needs none.
    let config = match &tls.client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                read_certs(cert, &format!("{peer}.tls-cert-path"))?,
                read_key(key, &format!("{peer}.tls-key-path"))?,
            )
            .map_err(|e| anyhow!("{peer}.tls-key-path does not match {peer}.tls-cert-path: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts any certificate: only behind `upstream.tls-insecure-skip-verify`. Signatures are
/// still checked, so the session is at least bound to the certificate presented.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The served certificate, swapped whole when its files change.
#[derive(Debug)]
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl ReloadingCert {
    fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
        let certs = read_certs(cert_path, "server.http-tls-cert-path")?;
        let key = read_key(key_path, "server.http-tls-key-path")?;
        CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
            anyhow!("server.http-tls-key-path does not match server.http-tls-cert-path: {e}")
        })
    }

    fn reload(&self) -> anyhow::Result<()> {
        self.current
            .store(Arc::new(Self::load(&self.cert_path, &self.key_path)?));
        tracing::info!(cert = %self.cert_path.display(), "reloaded the TLS certificate");
        Ok(())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The client-certificate check (mTLS), rebuilt when the CA file changes.
#[derive(Debug)]
struct ReloadingClientCa {
    path: PathBuf,
    current: ArcSwap<Verifier>,
}

#[derive(Debug)]
struct Verifier(Arc<dyn ClientCertVerifier>);

impl ReloadingClientCa {
    fn load(path: &Path) -> anyhow::Result<Verifier> {
        let roots = roots(path, "server.http-tls-ca-path")?;
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map(Verifier)
            .map_err(|e| anyhow!("server.http-tls-ca-path: {e}"))
    }

    fn reload(&self) -> anyhow::Result<()> {
        self.current.store(Arc::new(Self::load(&self.path)?));
        tracing::info!(ca = %self.path.display(), "reloaded the client CA");
        Ok(())
    }
}

impl ClientCertVerifier for ReloadingClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// None: the list would have to outlive a reload (see the module docs).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .0
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .0
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .0
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().0.supported_verify_schemes()
    }
}

/// Calls `reload` whenever the modification time of one of `paths` changes, checking every
/// `every` until `life` stops; a failed reload is logged (`what` names it) and the previous
/// state kept.
async fn watch_files(
    paths: Vec<PathBuf>,
    every: Duration,
    life: Lifecycle,
    what: &'static str,
    reload: impl Fn() -> anyhow::Result<()>,
) {
    let stamp = || -> Vec<Option<SystemTime>> {
        paths
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    };
    let mut seen = stamp();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = life.stopping() => return,
        }
        let now = stamp();
        if now == seen {
            continue;
        }
        seen = now;
        if let Err(err) = reload() {
            tracing::error!(error = format!("{err:#}"), "keeping the previous {what}");
        }
    }
}

/// How often served certificate files are checked for changes.
pub const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Longest a TLS handshake may take; a client that stalls it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The served TLS configuration: checked at start-up, certificate and client CA watched once
/// serving.
#[derive(Debug, Clone)]
pub struct ServerTlsConfig {
    config: Arc<ServerConfig>,
    cert: Arc<ReloadingCert>,
    client_ca: Option<Arc<ReloadingClientCa>>,
}

impl ServerTlsConfig {
    /// Reads and checks every file now, so a bad one is a start-up error naming its key.
    pub fn load(tls: &ServerTls) -> anyhow::Result<Self> {
        let cert = Arc::new(ReloadingCert {
            current: ArcSwap::from_pointee(ReloadingCert::load(&tls.cert_path, &tls.key_path)?),
            cert_path: tls.cert_path.clone(),
            key_path: tls.key_path.clone(),
        });
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let client_ca = match &tls.client_ca_path {
            Some(path) => Some(Arc::new(ReloadingClientCa {
                current: ArcSwap::from_pointee(ReloadingClientCa::load(path)?),
                path: path.clone(),
            })),
            None => None,
        };
        let builder = match &client_ca {
            Some(ca) => builder.with_client_cert_verifier(ca.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTlsConfig {
            config: Arc::new(config),
            cert,
            client_ca,
        })
    }

    /// The acceptor handshakes are run with (the server shell bounds them in time and number).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// Watches the certificate files, and the client CA file, for changes until `life` stops.
    pub fn watch(&self, life: &Lifecycle) {
        let cert = self.cert.clone();
        life.spawn(watch_files(
            vec![cert.cert_path.clone(), cert.key_path.clone()],
            CERT_RELOAD_INTERVAL,
            life.clone(),
            "TLS certificate",
            move || cert.reload(),
        ));
        if let Some(ca) = self.client_ca.clone() {
            life.spawn(watch_files(
                vec![ca.path.clone()],
                CERT_RELOAD_INTERVAL,
                life.clone(),
                "client CA",
                move || ca.reload(),
            ));
        }
    }
}
