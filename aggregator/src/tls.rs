//! Server-side TLS for agent sessions: mandatory client certificates signed by the deployment
//! CA, checked against the CA's revocation list on every handshake, and the agent identity
//! (the certificate's subject CN, and the environment it is bound to, the subject OU) read back
//! after the handshake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use calipso_proto::tls::{PemError, load_certs, load_crls, load_key};
use calipso_proto::wire::ALPN;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the server's TLS material lives.
#[derive(Debug, Clone)]
pub struct ServerTlsPaths {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA's revocation list; re-read whenever the file changes.
    pub crl: PathBuf,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls server configuration for agent sessions (TLS 1.3 only, ALPN `calipso/1`).
pub fn server_config(paths: &ServerTlsPaths) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        RevocationCheckingVerifier::new(&paths.ca_cert, paths.crl.clone(), provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // No session resumption: a resumed TLS 1.3 session skips client certificate verification,
    // so a revoked agent could come back on an old ticket. Every session is a full handshake.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// What an agent's certificate proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    /// The host id: the subject's common name.
    pub host: String,
    /// The one environment the host may report into: the subject's organizational unit
    /// (absent in certificates issued before environments were bound).
    pub environment: Option<String>,
}

/// The identity of the agent at the other end of a connection; `None` when its certificate
/// has no subject common name.
pub fn peer_identity(connection: &quinn::Connection) -> Option<AgentIdentity> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    agent_identity(chain.first()?)
}

fn agent_identity(cert: &CertificateDer<'_>) -> Option<AgentIdentity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let host = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let environment = subject
        .iter_organizational_unit()
        .next()
        .and_then(|ou| ou.as_str().ok())
        .map(str::to_owned);
    Some(AgentIdentity { host, environment })
}

/// A file's identity for change detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

struct Current {
    stamp: Option<FileStamp>,
    /// `Err` holds why the CRL could not be loaded: handshakes are refused until it is fixed,
    /// because a revocation that silently stopped applying is worse than an outage.
    verifier: Result<Arc<dyn ClientCertVerifier>, String>,
}

/// WebPKI client verification against the CA, with the CA's CRL re-read when the file changes,
/// so that `ca revoke` takes effect on the next handshake without restarting the aggregator.
pub struct RevocationCheckingVerifier {
    roots: Arc<RootCertStore>,
    root_hints: Vec<DistinguishedName>,
    crl_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

impl fmt::Debug for RevocationCheckingVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationCheckingVerifier")
            .field("crl_path", &self.crl_path)
            .finish_non_exhaustive()
    }
}

impl RevocationCheckingVerifier {
    pub fn new(
        ca_cert: &Path,
        crl_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in load_certs(ca_cert)? {
            roots.add(cert).map_err(|e| TlsError::Config {
                path: ca_cert.to_owned(),
                message: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let stamp = FileStamp::of(&crl_path);
        let verifier =
            build_verifier(&roots, &crl_path, &provider).map_err(|message| TlsError::Config {
                path: crl_path.clone(),
                message,
            })?;
        Ok(RevocationCheckingVerifier {
            root_hints: roots.subjects(),
            roots,
            crl_path,
            provider,
            current: Mutex::new(Current {
                stamp,
                verifier: Ok(verifier),
            }),
        })
    }

    fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stamp = FileStamp::of(&self.crl_path);
        if stamp != current.stamp {
            current.stamp = stamp;
            current.verifier = build_verifier(&self.roots, &self.crl_path, &self.provider);
            match &current.verifier {
                Ok(_) => tracing::info!(crl = %self.crl_path.display(), "revocation list reloaded"),
                Err(err) => {
                    tracing::error!(crl = %self.crl_path.display(), %err, "revocation list unusable: refusing agent handshakes until it is fixed")
                }
            }
        }
        current.verifier.clone().map_err(rustls::Error::General)
    }
}

fn build_verifier(
    roots: &Arc<RootCertStore>,
    crl_path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let crls = load_crls(crl_path).map_err(|e| e.to_string())?;
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| format!("{}: {e}", crl_path.display()))
}

impl ClientCertVerifier for RevocationCheckingVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()?
            .verify_client_cert(end_entity, intermediates, now)
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
