//! SSL to ovsdb-server (`ssl:HOST:PORT`), as Open vSwitch does it: mutual TLS with the
//! deployment's certificates, the server's chain verified against the configured CA. Like OVS's
//! own clients, it does not match the server's name: certificates from `ovs-pki` carry none.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use calipso_proto::tls::{load_certs, load_key};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The files an SSL connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Verifies the chain as WebPKI does, and accepts a certificate that is valid but for another
/// name: the name is not what identifies an OVS peer, the CA is.
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl fmt::Debug for ChainOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainOnly")
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The rustls client configuration for an SSL endpoint; errors name the file at fault.
pub fn client_config(files: &SslFiles) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&files.ca_cert).map_err(|e| e.to_string())? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", files.ca_cert.display()))?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("{}: {e}", files.ca_cert.display()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
        .with_client_auth_cert(
            load_certs(&files.cert).map_err(|e| e.to_string())?,
            load_key(&files.key).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    Ok(Arc::new(config))
}
