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
//!
//! [store]
//! # sqlite:PATH (the default, created if missing) or postgres://user@host/database
//! url = "sqlite:///var/lib/calipso/calipso.db"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use calipso_proto::wire::DEFAULT_MAX_FRAME_BYTES;
use serde::Deserialize;

pub use calipso_agent::config::ConfigError;
use calipso_agent::config::{parse_toml, read_text};

use crate::ingest::IngestConfig;
use crate::tls::ServerTlsPaths;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    pub ingest: IngestSection,
    #[serde(default)]
    pub store: StoreSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    #[serde(default = "default_store_url")]
    pub url: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: default_store_url(),
        }
    }
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
