//! The aggregator's configuration file (TOML).
//!
//! ```toml
//! [ingest]
//! listen = "0.0.0.0:7443"
//! ca_cert = "/etc/calipso/ca/ca.pem"
//! cert = "/etc/calipso/ca/server-aggregator.pem"
//! key = "/etc/calipso/ca/server-aggregator.key"
//! crl = "/etc/calipso/ca/crl.pem"      # re-read on change; revocations apply on the next handshake
//! max_frame_bytes = 16777216
//! idle_timeout = "30s"
//! hello_timeout = "10s"
//! # allow_unbound_agents = false  # accept agent certificates that name no environment
//! #                               # (issued by an earlier version) while they are re-issued
//!
//! [store]
//! # sqlite:PATH (the default, created if missing) or postgres://user@host/database
//! url = "sqlite:///var/lib/calipso/calipso.db"
//! # history_retention = "90d"     # compact older versions, except what snapshots pin
//! #                               # (default: keep history forever)
//! # The key that seals the passwords in environment configurations, kept apart from the
//! # database: created (0600) on first start; $CALIPSO_SECRET_KEY (base64) overrides it.
//! secret_key_file = "/etc/calipso/secret.key"
//!
//! [api]
//! listen = "127.0.0.1:8080"
//! # tls_cert = "/etc/calipso/api.pem"   # HTTPS when both are set
//! # tls_key = "/etc/calipso/api.key"
//! token_lifetime = "24h"
//! event_buffer = 100000             # events kept for clients that reconnect
//! # admin_password = "…"            # first start only; else $CALIPSO_ADMIN_PASSWORD, else
//! #                                 # generated and printed once
//!
//! [metrics]                         # Prometheus, GET /metrics (OpenMetrics text), no token:
//! enabled = true                    # keep it where only the monitoring system reaches
//! listen = "127.0.0.1:9464"
//!
//! [api.ldap]                        # optional: passwords checked by a directory
//! url = "ldap://ldap.example.org"
//! starttls = true
//! user_dn = "uid={username},ou=people,dc=example,dc=org"
//! group_base = "ou=groups,dc=example,dc=org"
//! groups = { calipso-admins = { admin = true }, lab-ops = { edit-env = ["lab"] } }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use calipso_proto::wire::DEFAULT_MAX_FRAME_BYTES;
use serde::Deserialize;

pub use calipso_agent::config::ConfigError;
use calipso_agent::config::{parse_toml, read_text};

use crate::ingest::IngestConfig;
use crate::service::LdapSettings;
use crate::tls::ServerTlsPaths;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    pub ingest: IngestSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// Prometheus metrics ([`crate::metrics`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    pub enabled: bool,
    /// Answers without a token: keep it where only the monitoring system reaches.
    pub listen: SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            listen: ([127, 0, 0, 1], 9464).into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_token_lifetime", with = "humantime_serde")]
    pub token_lifetime: Duration,
    #[serde(default = "default_event_buffer")]
    pub event_buffer: usize,
    /// The first admin's password, used only when the store has no user yet.
    #[serde(default)]
    pub admin_password: Option<String>,
    #[serde(default)]
    pub ldap: Option<LdapSettings>,
    /// Serve HTTPS with this certificate chain and key (PEM); plain HTTP without them.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Connections served at once; one more is answered 503 and closed. Keep it under the
    /// process's file limit, which the store, the agents' sessions and the log files share.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client has to send a request's headers (also a quiet connection's life
    /// between requests): a client that sends nothing, or a byte now and then, is closed.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Live streams (`/events`) one token may hold open at once; one more is a 429.
    #[serde(default = "default_max_streams_per_token")]
    pub max_streams_per_token: usize,
    /// How alerts are delivered (`[api.alerts]`).
    #[serde(default)]
    pub alerts: crate::alerts::AlertSettings,
}

fn default_max_connections() -> usize {
    512
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_streams_per_token() -> usize {
    16
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: default_api_listen(),
            token_lifetime: default_token_lifetime(),
            event_buffer: default_event_buffer(),
            admin_password: None,
            ldap: None,
            tls_cert: None,
            tls_key: None,
            max_connections: default_max_connections(),
            header_timeout: default_header_timeout(),
            max_streams_per_token: default_max_streams_per_token(),
            alerts: crate::alerts::AlertSettings::default(),
        }
    }
}

fn default_api_listen() -> SocketAddr {
    ([127, 0, 0, 1], 8080).into()
}

fn default_token_lifetime() -> Duration {
    Duration::from_secs(86_400)
}

fn default_event_buffer() -> usize {
    100_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    #[serde(default = "default_store_url")]
    pub url: String,
    /// Versions (and messages) older than this are compacted away, except those in force at a
    /// snapshot; absent: history is kept forever.
    #[serde(default, with = "humantime_serde")]
    pub history_retention: Option<Duration>,
    /// The key that seals environment secrets (see [`crate::secrets`]).
    #[serde(default = "default_secret_key_file")]
    pub secret_key_file: PathBuf,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: default_store_url(),
            history_retention: None,
            secret_key_file: default_secret_key_file(),
        }
    }
}

fn default_secret_key_file() -> PathBuf {
    "/etc/calipso/secret.key".into()
}

fn default_store_url() -> String {
    "sqlite:///var/lib/calipso/calipso.db".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: PathBuf,
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default = "default_hello", with = "humantime_serde")]
    pub hello_timeout: Duration,
    /// Accept agent certificates issued before environments were bound (see
    /// [`IngestConfig::allow_unbound_agents`]); for an upgrade, until every agent is re-issued.
    #[serde(default)]
    pub allow_unbound_agents: bool,
}

fn default_listen() -> SocketAddr {
    ([0, 0, 0, 0], 7443).into()
}

fn default_max_frame() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}

fn default_idle() -> Duration {
    Duration::from_secs(30)
}

fn default_hello() -> Duration {
    Duration::from_secs(10)
}

impl AggregatorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_text(path)?, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: AggregatorConfig = parse_toml(text, path)?;
        let invalid = |key, problem: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            problem: problem.to_owned(),
        };
        let ingest = &config.ingest;
        if ingest.max_frame_bytes < 1024 || ingest.max_frame_bytes > u32::MAX as usize {
            return Err(invalid(
                "ingest.max_frame_bytes",
                "must be between 1024 and 4294967295",
            ));
        }
        if ingest.idle_timeout < Duration::from_secs(1) {
            return Err(invalid("ingest.idle_timeout", "must be at least 1s"));
        }
        if ingest.hello_timeout.is_zero() {
            return Err(invalid("ingest.hello_timeout", "must be non-zero"));
        }
        let url = &config.store.url;
        let known = ["sqlite:", "postgres://", "postgresql://"];
        if !known.iter().any(|scheme| url.starts_with(scheme)) {
            return Err(invalid(
                "store.url",
                "must start with sqlite: or postgres://",
            ));
        }
        let hour = Duration::from_secs(3600);
        if config
            .store
            .history_retention
            .is_some_and(|r| r < hour || r > hour * 24 * 365 * 100)
        {
            return Err(invalid(
                "store.history_retention",
                "must be between 1h and 100 years (e.g. \"90d\")",
            ));
        }
        let database_dir = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|file| Path::new(file.split('?').next().unwrap_or(file)))
            .and_then(Path::parent)
            .filter(|dir| !dir.as_os_str().is_empty());
        if database_dir.is_some_and(|dir| config.store.secret_key_file.starts_with(dir)) {
            return Err(invalid(
                "store.secret_key_file",
                "must not be in the database's directory: a copy of it would hold both the sealed secrets and their key",
            ));
        }
        let api = &config.api;
        if api.token_lifetime < Duration::from_secs(60) {
            return Err(invalid("api.token_lifetime", "must be at least 1m"));
        }
        if api.event_buffer == 0 {
            return Err(invalid("api.event_buffer", "must be at least 1"));
        }
        if api.admin_password.as_ref().is_some_and(|p| p.len() < 8) {
            return Err(invalid(
                "api.admin_password",
                "must be at least 8 characters",
            ));
        }
        if api.tls_cert.is_some() != api.tls_key.is_some() {
            return Err(invalid("api.tls_cert", "tls_cert and tls_key go together"));
        }
        if let Some(ldap) = &api.ldap {
            let scheme_ok = ldap.url.starts_with("ldap://") || ldap.url.starts_with("ldaps://");
            if !scheme_ok {
                return Err(invalid(
                    "api.ldap.url",
                    "must start with ldap:// or ldaps://",
                ));
            }
            if !ldap.user_dn.contains("{username}") {
                return Err(invalid("api.ldap.user_dn", "must contain {username}"));
            }
        }
        Ok(config)
    }

    pub fn ingest(&self) -> IngestConfig {
        let section = &self.ingest;
        IngestConfig {
            listen: section.listen,
            tls: ServerTlsPaths {
                ca_cert: section.ca_cert.clone(),
                cert: section.cert.clone(),
                key: section.key.clone(),
                crl: section.crl.clone(),
            },
            max_frame_bytes: section.max_frame_bytes,
            idle_timeout: section.idle_timeout,
            hello_timeout: section.hello_timeout,
            allow_unbound_agents: section.allow_unbound_agents,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: &str =
        "ca_cert = \"ca.pem\"\ncert = \"s.pem\"\nkey = \"s.key\"\ncrl = \"crl.pem\"\n";

    #[test]
    fn parses_with_defaults() {
        let config = AggregatorConfig::parse(&format!("[ingest]\n{PATHS}"), Path::new("agg.toml"))
            .expect("valid");
        assert_eq!(config.ingest().listen, default_listen());
        assert_eq!(config.ingest().idle_timeout, Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                format!("[ingest]\n{PATHS}max_frame_bytes = 5\n"),
                "ingest.max_frame_bytes",
            ),
            (format!("[ingest]\n{PATHS}listen = \"nowhere\"\n"), "listen"),
            (format!("[ingest]\n{PATHS}colour = 1\n"), "colour"),
            ("[ingest]\nca_cert = \"x\"\n".to_owned(), "cert"),
            (
                format!("[ingest]\n{PATHS}[store]\nurl = \"mysql://x\"\n"),
                "store.url",
            ),
            (
                format!("[ingest]\n{PATHS}[store]\nhistory_retention = \"5m\"\n"),
                "store.history_retention",
            ),
            (
                format!(
                    "[ingest]\n{PATHS}[store]\nurl = \"sqlite:///var/lib/calipso/calipso.db\"\nsecret_key_file = \"/var/lib/calipso/keys/secret.key\"\n"
                ),
                "store.secret_key_file",
            ),
            (
                format!("[ingest]\n{PATHS}[store]\nhistory_retention = \"soon\"\n"),
                "history_retention",
            ),
            (
                format!("[ingest]\n{PATHS}[api]\ntoken_lifetime = \"1s\"\n"),
                "api.token_lifetime",
            ),
            (
                format!("[ingest]\n{PATHS}[api]\ntls_cert = \"api.pem\"\n"),
                "api.tls_cert",
            ),
            (
                format!(
                    "[ingest]\n{PATHS}[api.ldap]\nurl = \"ldap://x\"\nuser_dn = \"cn=fixed\"\n"
                ),
                "api.ldap.user_dn",
            ),
        ];
        for (text, key) in cases {
            let err = AggregatorConfig::parse(&text, Path::new("agg.toml"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.starts_with("agg.toml") && err.contains(key),
                "{key}: {err}"
            );
        }
    }
}
