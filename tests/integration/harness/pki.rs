//! A throwaway certificate authority per test (rcgen, ring): a CA, server certificates for
//! `localhost` and 127.0.0.1, client certificates, all written as PEM files into a temp dir.
//! Nothing is committed; every test makes its own.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A CA and the directory its files go to.
pub struct Pki {
    dir: tempfile::TempDir,
    name: String,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA called `name` (files are prefixed with it).
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        let pki = Pki {
            dir: tempfile::tempdir().expect("temp dir"),
            name: name.to_owned(),
            ca,
        };
        std::fs::write(pki.ca_path(), pki.ca.pem()).expect("write the CA");
        pki
    }

    /// The CA certificate (PEM), to trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}-ca.pem", self.name))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `localhost` and 127.0.0.1, saved as `<file>.pem` and
    /// `<file>-key.pem`.
    pub fn server(&self, file: &str) -> CertFiles {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{file} ({})", self.name));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, file)
    }

    /// A client certificate (mTLS) for `name`.
    pub fn client(&self, file: &str) -> CertFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, file)
    }

    fn issue(&self, params: CertificateParams, file: &str) -> CertFiles {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }
}

/// A rustls client configuration trusting `ca` (PEM file), optionally presenting `client`.
pub fn client_tls(ca: &Path, client: Option<&CertFiles>) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read the CA") {
        roots.add(cert.expect("CA PEM")).expect("add the CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(pyrogate::edge::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots);
    match client {
        Some(files) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&files.cert)
                    .expect("read the client certificate")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client PEM"),
                PrivateKeyDer::from_pem_file(&files.key).expect("client key"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    }
}
