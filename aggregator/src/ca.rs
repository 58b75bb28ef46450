//! The deployment CA: creates the CA, issues server and agent certificates, revokes them.
//!
//! Layout of a CA directory:
//!
//! | file | content |
//! |---|---|
//! | `ca.pem`, `ca.key` | the CA certificate and its private key (0600) |
//! | `crl.pem` | the revocation list, signed by the CA, re-issued on every revocation |
//! | `index.json` | every certificate issued: serial, kind, subject, expiry, revocation time |
//! | `server-<name>.pem`, `.key` | an aggregator's certificate (EKU serverAuth) |
//! | `agent-<host>.pem`, `.key` | an agent's certificate (EKU clientAuth, CN = host id, OU = environment) |
//!
//! An agent certificate binds its host to one environment (the subject's organizational
//! unit): the aggregator refuses the agent's session for any other, so a host's key cannot
//! write into, or create, an environment it was not issued for.
//!
//! Private keys are written with mode 0600 and no file is overwritten without `force`.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const CRL: &str = "crl.pem";
const INDEX: &str = "index.json";

/// How long issued certificates are valid.
const CA_VALIDITY: Duration = Duration::days(3650);
const LEAF_VALIDITY: Duration = Duration::days(825);
/// Peers do not enforce the CRL's next-update date (see docs/architecture.md), but a CRL must
/// carry one; a year keeps standard tools that do enforce it content.
const CRL_VALIDITY: Duration = Duration::days(365);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    #[error("{0} is not a CA directory (no ca.pem / ca.key): run `ca init` first")]
    NotInitialised(PathBuf),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: malformed index: {source}")]
    Index {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("`{0}` is not a valid {1}")]
    InvalidName(String, &'static str),
    #[error("no certificate with serial {0} was issued by this CA")]
    UnknownSerial(String),
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertKind {
    Server,
    Agent,
}

/// One line of `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// Upper-case hex, no separators.
    pub serial: String,
    pub kind: CertKind,
    /// The host id (agents) or server name.
    pub subject: String,
    /// The environment an agent certificate is bound to (absent in certificates issued before
    /// binding, and in server certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Paths of a certificate and key just written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: String,
}

/// A CA directory on disk.
#[derive(Debug, Clone)]
pub struct CaDir {
    dir: PathBuf,
}

impl CaDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CaDir { dir: dir.into() }
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    pub fn crl_path(&self) -> PathBuf {
        self.dir.join(CRL)
    }

    /// Creates the CA key pair, its self-signed certificate and an empty CRL.
    pub fn init(&self, common_name: &str, force: bool) -> Result<PathBuf, CaError> {
        create_dir(&self.dir)?;
        let cert_path = self.ca_cert_path();
        for path in [&cert_path, &self.dir.join(CA_KEY)] {
            refuse_overwrite(path, force)?;
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key)?;
        write_file(
            &self.dir.join(CA_KEY),
            key.serialize_pem().as_bytes(),
            true,
            force,
        )?;
        write_file(&cert_path, cert.pem().as_bytes(), false, force)?;
        self.save_index(&[], true)?;
        self.write_crl(&[], true)?;
        Ok(cert_path)
    }

    /// Issues a server certificate for the aggregator: `sans` are DNS names or IP addresses
    /// agents use to reach it (the name itself is always included).
    pub fn issue_server(
        &self,
        name: &str,
        sans: &[String],
        force: bool,
    ) -> Result<Issued, CaError> {
        validate_name(name, "server name")?;
        let mut alt_names = vec![name.to_owned()];
        alt_names.extend(sans.iter().filter(|s| s.as_str() != name).cloned());
        let sans = alt_names
            .iter()
            .map(|s| san(s))
            .collect::<Result<Vec<_>, _>>()?;
        self.issue(
            CertKind::Server,
            name,
            None,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            force,
        )
    }

    /// Issues an agent certificate whose identity is the host id (subject CN), bound to one
    /// environment (subject OU).
    pub fn issue_agent(
        &self,
        host: &str,
        environment: &str,
        force: bool,
    ) -> Result<Issued, CaError> {
        validate_name(host, "host id")?;
        validate_name(environment, "environment name")?;
        // A DNS SAN only where the host id is a valid DNS name; the CN is the identity.
        let sans = san(host).ok().into_iter().collect();
        self.issue(
            CertKind::Agent,
            host,
            Some(environment),
            sans,
            ExtendedKeyUsagePurpose::ClientAuth,
            force,
        )
    }

    /// Marks a certificate revoked and re-issues the CRL. Peers pick it up on their next handshake.
    pub fn revoke(&self, serial: &str) -> Result<IssuedCert, CaError> {
        let wanted = normalise_serial(serial);
        let mut index = self.load_index()?;
        let entry = index
            .iter_mut()
            .find(|e| e.serial == wanted)
            .ok_or_else(|| CaError::UnknownSerial(serial.to_owned()))?;
        entry.revoked_at.get_or_insert_with(OffsetDateTime::now_utc);
        let revoked = entry.clone();
        self.write_crl(&index, true)?;
        self.save_index(&index, true)?;
        Ok(revoked)
    }

    /// Revokes every valid agent certificate issued to `host` and re-issues the CRL once;
    /// answers what it revoked (nothing when the host has no valid certificate left).
    pub fn revoke_agent_host(&self, host: &str) -> Result<Vec<IssuedCert>, CaError> {
        let mut index = self.load_index()?;
        let now = OffsetDateTime::now_utc();
        let mut revoked = Vec::new();
        for entry in index.iter_mut().filter(|entry| {
            matches!(entry.kind, CertKind::Agent)
                && entry.subject == host
                && entry.revoked_at.is_none()
        }) {
            entry.revoked_at = Some(now);
            revoked.push(entry.clone());
        }
        if !revoked.is_empty() {
            self.write_crl(&index, true)?;
            self.save_index(&index, true)?;
        }
        Ok(revoked)
    }

    /// Every certificate this CA issued.
    pub fn list(&self) -> Result<Vec<IssuedCert>, CaError> {
        self.load_index()
    }

    fn issue(
        &self,
        kind: CertKind,
        subject: &str,
        environment: Option<&str>,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        force: bool,
    ) -> Result<Issued, CaError> {
        let prefix = match kind {
            CertKind::Server => "server",
            CertKind::Agent => "agent",
        };
        let cert_path = self.dir.join(format!("{prefix}-{subject}.pem"));
        let key_path = self.dir.join(format!("{prefix}-{subject}.key"));
        refuse_overwrite(&cert_path, force)?;
        refuse_overwrite(&key_path, force)?;
        let issuer = self.issuer()?;
        let key = KeyPair::generate()?;
        let serial = random_serial();
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(subject);
        if let Some(environment) = environment {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, environment);
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + LEAF_VALIDITY;
        let cert = params.signed_by(&key, &issuer)?;
        let serial_hex = hex(&serial.to_bytes());
        let mut index = self.load_index()?;
        index.push(IssuedCert {
            serial: serial_hex.clone(),
            kind,
            subject: subject.to_owned(),
            environment: environment.map(str::to_owned),
            not_after: params.not_after,
            revoked_at: None,
        });
        write_file(&key_path, key.serialize_pem().as_bytes(), true, force)?;
        write_file(&cert_path, cert.pem().as_bytes(), false, force)?;
        self.save_index(&index, true)?;
        Ok(Issued {
            cert: cert_path,
            key: key_path,
            serial: serial_hex,
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CaError> {
        let (cert_path, key_path) = (self.ca_cert_path(), self.dir.join(CA_KEY));
        if !cert_path.exists() || !key_path.exists() {
            return Err(CaError::NotInitialised(self.dir.clone()));
        }
        let key = KeyPair::from_pem(&read_string(&key_path)?)?;
        Ok(Issuer::from_ca_cert_pem(&read_string(&cert_path)?, key)?)
    }

    fn write_crl(&self, index: &[IssuedCert], force: bool) -> Result<(), CaError> {
        let issuer = self.issuer()?;
        let now = OffsetDateTime::now_utc();
        let revoked_certs = index
            .iter()
            .filter_map(|e| {
                let revocation_time = e.revoked_at?;
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&unhex(&e.serial)?),
                    revocation_time,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from_slice(&now.unix_timestamp().to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer)?;
        write_file(&self.crl_path(), crl.pem()?.as_bytes(), false, force)
    }

    fn load_index(&self) -> Result<Vec<IssuedCert>, CaError> {
        let path = self.dir.join(INDEX);
        if !self.ca_cert_path().exists() {
            return Err(CaError::NotInitialised(self.dir.clone()));
        }
        let text = read_string(&path)?;
        serde_json::from_str(&text).map_err(|source| CaError::Index { path, source })
    }

    fn save_index(&self, index: &[IssuedCert], force: bool) -> Result<(), CaError> {
        let path = self.dir.join(INDEX);
        let text = serde_json::to_string_pretty(index).map_err(|source| CaError::Index {
            path: path.clone(),
            source,
        })?;
        write_file(&path, text.as_bytes(), false, force)
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Calipso");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn san(name: &str) -> Result<SanType, CaError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns = name
        .to_owned()
        .try_into()
        .map_err(|_| CaError::InvalidName(name.to_owned(), "DNS name or IP address"))?;
    Ok(SanType::DnsName(dns))
}

/// Host ids and server names end up in file names and certificate subjects.
fn validate_name(name: &str, what: &'static str) -> Result<(), CaError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(CaError::InvalidName(name.to_owned(), what))
    }
}

/// A positive 128-bit serial (RFC 5280 allows up to 20 octets; the top bit clear keeps it positive).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Accepts `0a:1b:…`, `0A1B…` and `0x0a1b…`.
pub fn normalise_serial(serial: &str) -> String {
    let trimmed = serial
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X");
    trimmed
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_uppercase()
}

fn create_dir(dir: &Path) -> Result<(), CaError> {
    fs::create_dir_all(dir).map_err(|source| CaError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn refuse_overwrite(path: &Path, force: bool) -> Result<(), CaError> {
    if path.exists() && !force {
        Err(CaError::Exists(path.to_owned()))
    } else {
        Ok(())
    }
}

fn read_string(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes through a temporary file and a rename, so a crash never leaves half a key or index.
fn write_file(path: &Path, contents: &[u8], private: bool, force: bool) -> Result<(), CaError> {
    refuse_overwrite(path, force)?;
    let io = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_issue_revoke() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CaDir::new(dir.path().join("ca"));
        assert!(matches!(
            ca.issue_agent("h1", "lab", false),
            Err(CaError::NotInitialised(_))
        ));
        ca.init("test CA", false).expect("init");
        assert!(matches!(ca.init("again", false), Err(CaError::Exists(_))));
        let mode = fs::metadata(dir.path().join("ca/ca.key"))
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(mode, Some(0o600));

        let agent = ca
            .issue_agent("compute-1", "lab", false)
            .expect("issue agent");
        let mode = fs::metadata(&agent.key)
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(mode, Some(0o600));
        assert!(matches!(
            ca.issue_agent("compute-1", "lab", false),
            Err(CaError::Exists(_))
        ));
        let again = ca
            .issue_agent("compute-1", "lab", true)
            .expect("force reissue");
        assert_ne!(again.serial, agent.serial);
        ca.issue_server(
            "aggregator",
            &["127.0.0.1".into(), "calipso.example".into()],
            false,
        )
        .expect("issue server");
        assert!(matches!(
            ca.issue_agent("../etc", "lab", false),
            Err(CaError::InvalidName(..))
        ));

        let lowered = agent.serial.to_ascii_lowercase();
        let revoked = ca.revoke(&lowered).expect("revoke");
        assert!(revoked.revoked_at.is_some());
        assert!(matches!(ca.revoke("00"), Err(CaError::UnknownSerial(_))));
        assert!(matches!(
            ca.issue_agent("compute-2", "lab/../x", false),
            Err(CaError::InvalidName(..))
        ));
        let list = ca.list().expect("list");
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].environment.as_deref(), Some("lab"));
        assert_eq!(
            list[2].environment, None,
            "a server serves every environment"
        );
        assert_eq!(list.iter().filter(|e| e.revoked_at.is_some()).count(), 1);
        let crl = fs::read_to_string(ca.crl_path()).unwrap_or_default();
        assert!(crl.starts_with("-----BEGIN X509 CRL-----"));
    }

    /// compute-1 issued twice (its first certificate already revoked by serial), compute-2
    /// once, a server named compute-1: retiring compute-1 revokes its one valid agent
    /// certificate, not the server's nor compute-2's; retiring it again revokes nothing.
    #[test]
    fn a_retired_host_loses_its_valid_agent_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CaDir::new(dir.path().join("ca"));
        ca.init("test CA", false).expect("init");
        let first = ca.issue_agent("compute-1", "lab", false).expect("issue");
        ca.revoke(&first.serial).expect("revoke by serial");
        let second = ca.issue_agent("compute-1", "lab", true).expect("reissue");
        ca.issue_agent("compute-2", "lab", false).expect("issue");
        ca.issue_server("compute-1", &[], false).expect("server");

        let revoked = ca.revoke_agent_host("compute-1").expect("retire");
        let serials: Vec<&str> = revoked.iter().map(|c| c.serial.as_str()).collect();
        assert_eq!(serials, vec![second.serial.as_str()]);
        let valid: Vec<(String, String)> = ca
            .list()
            .expect("list")
            .into_iter()
            .filter(|c| c.revoked_at.is_none())
            .map(|c| (format!("{:?}", c.kind), c.subject))
            .collect();
        assert_eq!(
            valid,
            vec![
                ("Agent".to_owned(), "compute-2".to_owned()),
                ("Server".to_owned(), "compute-1".to_owned())
            ]
        );
        assert!(ca.revoke_agent_host("compute-1").expect("again").is_empty());
    }

    #[test]
    fn serial_forms() {
        assert_eq!(normalise_serial("0a:1B:ff"), "0A1BFF");
        assert_eq!(normalise_serial("0x0a1b"), "0A1B");
        assert_eq!(unhex("0A1BFF"), Some(vec![0x0a, 0x1b, 0xff]));
        assert_eq!(unhex("0A1"), None);
    }
}
