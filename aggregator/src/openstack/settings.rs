//! An environment's `OpenStack` and `AMQP` configuration, as the original's
//! `environments_config.configuration` entries hold it, checked before anything connects.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cliques::EnvironmentConfig;

/// How long between full reads when notifications keep the model current.
const DEFAULT_RESYNC: Duration = Duration::from_secs(300);

/// A configuration the adapter cannot use; the text names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment `{environment}`: {target}.{key}: {problem}")]
pub struct SettingsError {
    pub environment: String,
    pub target: &'static str,
    pub key: &'static str,
    pub problem: String,
}

/// Where and how to read one cloud. Its `Debug` leaves the secrets out.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenStackSettings {
    /// Keystone's base URL, without `/v3`.
    pub auth_url: String,
    pub user: String,
    pub password: String,
    /// The project the token is scoped to; it must see every project's networks and ports.
    pub project: String,
    pub domain: String,
    /// Which catalog endpoints to use: `public`, `internal` or `admin`.
    pub interface: String,
    /// Endpoints of this region only, when the catalog has several.
    pub region: Option<String>,
    pub resync_interval: Duration,
    pub amqp: Option<AmqpSettings>,
}

/// The notification bus. Its `Debug` leaves the URL (which holds the password) out.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpSettings {
    pub url: String,
    /// The exchanges the services publish on (oslo's `control_exchange`).
    pub exchanges: Vec<String>,
    /// Whether those exchanges are durable (oslo's `amqp_durable_queues`), to declare them
    /// the way the services do when the adapter comes first.
    pub durable: bool,
}

impl std::fmt::Debug for OpenStackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStackSettings")
            .field("auth_url", &self.auth_url)
            .field("user", &self.user)
            .field("project", &self.project)
            .field("domain", &self.domain)
            .field("interface", &self.interface)
            .field("region", &self.region)
            .field("resync_interval", &self.resync_interval)
            .field("amqp", &self.amqp)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("exchanges", &self.exchanges)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

struct Target<'a> {
    environment: &'a str,
    name: &'static str,
    values: &'a BTreeMap<String, String>,
}

impl Target<'_> {
    fn error(&self, key: &'static str, problem: impl Into<String>) -> SettingsError {
        SettingsError {
            environment: self.environment.to_owned(),
            target: self.name,
            key,
            problem: problem.into(),
        }
    }

    fn optional(&self, key: &'static str) -> Option<&str> {
        self.values
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, key: &'static str) -> Result<&str, SettingsError> {
        self.optional(key)
            .ok_or_else(|| self.error(key, "is required"))
    }

    fn parsed<T: std::str::FromStr>(
        &self,
        key: &'static str,
        default: T,
    ) -> Result<T, SettingsError> {
        match self.optional(key) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| self.error(key, format!("`{text}` is not valid here"))),
        }
    }
}

/// Percent-encodes a URL part (user, password, virtual host).
fn encoded(part: &str) -> String {
    part.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl OpenStackSettings {
    /// The adapter's settings for an environment: `None` when it has no `OpenStack` entry.
    pub fn of(config: &EnvironmentConfig) -> Result<Option<Self>, SettingsError> {
        let Some(values) = config.configuration.get("OpenStack") else {
            return Ok(None);
        };
        let os = Target {
            environment: &config.name,
            name: "OpenStack",
            values,
        };
        let auth_url = match os.optional("url") {
            Some(url) => url.trim_end_matches('/').trim_end_matches("/v3").to_owned(),
            None => {
                let host = os.required("host")?;
                let port: u16 = os.parsed("port", 5000)?;
                let protocol = os.optional("protocol").unwrap_or("http");
                if protocol != "http" && protocol != "https" {
                    return Err(os.error("protocol", "must be `http` or `https`"));
                }
                format!("{protocol}://{host}:{port}")
            }
        };
        let interface = os.optional("interface").unwrap_or("public").to_owned();
        if !["public", "internal", "admin"].contains(&interface.as_str()) {
            return Err(os.error("interface", "must be `public`, `internal` or `admin`"));
        }
        let resync_seconds: u64 = os.parsed("resync_interval", DEFAULT_RESYNC.as_secs())?;
        if resync_seconds == 0 {
            return Err(os.error("resync_interval", "must be at least 1 (seconds)"));
        }
        let amqp = match config.configuration.get("AMQP") {
            None => None,
            Some(values) => Some(AmqpSettings::of(&Target {
                environment: &config.name,
                name: "AMQP",
                values,
            })?),
        };
        Ok(Some(OpenStackSettings {
            auth_url,
            user: os.required("user")?.to_owned(),
            password: os.required("pwd")?.to_owned(),
            project: os.optional("admin_project").unwrap_or("admin").to_owned(),
            domain: os.optional("domain").unwrap_or("Default").to_owned(),
            interface,
            region: os.optional("region").map(str::to_owned),
            resync_interval: Duration::from_secs(resync_seconds),
            amqp,
        }))
    }
}

impl AmqpSettings {
    fn of(amqp: &Target<'_>) -> Result<Self, SettingsError> {
        let host = amqp.required("host")?;
        let port: u16 = amqp.parsed("port", 5672)?;
        let user = amqp.required("user")?;
        let password = amqp.required("pwd")?;
        let vhost = amqp.optional("vhost").unwrap_or("/");
        let exchanges: Vec<String> = amqp
            .optional("exchanges")
            .unwrap_or("neutron")
            .split(',')
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if exchanges.is_empty() {
            return Err(amqp.error("exchanges", "names no exchange"));
        }
        Ok(AmqpSettings {
            url: format!(
                "amqp://{}:{}@{host}:{port}/{}",
                encoded(user),
                encoded(password),
                encoded(vhost)
            ),
            exchanges,
            durable: amqp.parsed("durable", false)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entries: &[(&str, &[(&str, &str)])]) -> EnvironmentConfig {
        let mut config = EnvironmentConfig::named("lab");
        for (target, values) in entries {
            config.configuration.insert(
                (*target).to_owned(),
                values
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            );
        }
        config
    }

    #[test]
    fn the_originals_entries_give_keystone_and_the_bus() {
        let settings = OpenStackSettings::of(&config(&[
            (
                "OpenStack",
                &[("host", "10.0.0.5"), ("user", "admin"), ("pwd", "s3cret/!")],
            ),
            (
                "AMQP",
                &[("host", "10.0.0.6"), ("user", "nova"), ("pwd", "p@ss")],
            ),
        ]))
        .expect("valid")
        .expect("configured");
        assert_eq!(settings.auth_url, "http://10.0.0.5:5000");
        assert_eq!(settings.project, "admin");
        assert_eq!(settings.resync_interval, DEFAULT_RESYNC);
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("p@ss") && !debug.contains("p%40ss"),
            "{debug}"
        );
        let amqp = settings.amqp.expect("amqp");
        assert_eq!(amqp.url, "amqp://nova:p%40ss@10.0.0.6:5672/%2F");
        assert_eq!(amqp.exchanges, vec!["neutron".to_owned()]);
    }

    #[test]
    fn a_url_replaces_host_and_port_and_no_entry_means_no_adapter() {
        let settings = OpenStackSettings::of(&config(&[(
            "OpenStack",
            &[
                ("url", "https://keystone.example:5000/v3/"),
                ("user", "u"),
                ("pwd", "p"),
            ],
        )]))
        .expect("valid")
        .expect("configured");
        assert_eq!(settings.auth_url, "https://keystone.example:5000");
        assert!(settings.amqp.is_none());
        assert_eq!(OpenStackSettings::of(&config(&[])), Ok(None));
    }

    #[test]
    fn errors_name_the_target_and_key() {
        let error = |entries: &[(&str, &[(&str, &str)])]| {
            OpenStackSettings::of(&config(entries))
                .expect_err("invalid")
                .to_string()
        };
        assert_eq!(
            error(&[("OpenStack", &[("host", "h"), ("user", "u")])]),
            "environment `lab`: OpenStack.pwd: is required"
        );
        assert_eq!(
            error(&[(
                "OpenStack",
                &[("host", "h"), ("port", "http"), ("user", "u"), ("pwd", "p")]
            )]),
            "environment `lab`: OpenStack.port: `http` is not valid here"
        );
        assert_eq!(
            error(&[
                ("OpenStack", &[("host", "h"), ("user", "u"), ("pwd", "p")]),
                (
                    "AMQP",
                    &[
                        ("host", "h"),
                        ("user", "u"),
                        ("pwd", "p"),
                        ("exchanges", " , ")
                    ]
                ),
            ]),
            "environment `lab`: AMQP.exchanges: names no exchange"
        );
    }
}
