//! The agent's configuration file (TOML). Every key has a default except the aggregator's
//! certificate paths, which the `run` command needs; `discover` needs none.
//!
//! ```toml
//! host = "compute-1"          # default: this machine's hostname
//! environment = "default"
//! state_file = "/var/lib/calipso-agent/state"   # epoch and model kept across restarts ("" = none)
//!
//! [aggregator]
//! address = "aggregator.example:7443"   # host:port of the aggregator's QUIC endpoint
//! server_name = "aggregator"            # the name in the aggregator's certificate
//! ca_cert = "/etc/calipso/ca.pem"
//! cert = "/etc/calipso/agent.pem"
//! key = "/etc/calipso/agent.key"
//! keep_alive = "5s"
//! idle_timeout = "30s"
//! max_frame_bytes = 16777216
//! outbox_max_bytes = 67108864
//! reconnect_max = "30s"
//!
//! [host_facts]
//! refresh = "60s"
//!
//! [netns]
//! dir = "/run/netns"                    # named network namespaces (ip netns)
//! # host = "/run/netns/compute-1"       # treat this namespace as the host's (labs, tests)
//!
//! [libvirt]
//! dir = "/run/libvirt/qemu"             # running domains' XML
//! config_dir = "/etc/libvirt/qemu"      # defined domains: those not running are `shut off`
//!
//! [kernel]
//! coalesce_quiet = "1ms"                # publish a batch once events pause this long …
//! coalesce_max = "10ms"                 # … or this long after its first event at the latest
//! refresh = "60s"                       # full re-dump and NIC (ethtool) facts
//! sysfs_net = "/sys/class/net"
//! # physical_interfaces = ["eth1"]     # report these as NICs though sysfs links no device
//! proc_bonding = "/proc/net/bonding"
//! # netlink_rcvbuf = 4194304           # per-namespace socket buffer (capped by net.core.rmem_max)
//!
//! [ovs]
//! socket = "/run/openvswitch/db.sock"   # or unix:PATH, tcp:HOST:PORT, ssl:HOST:PORT
//! # ca_cert = "/etc/openvswitch/cacert.pem"   # for ssl: the CA of ovsdb-server's certificate
//! # cert = "/etc/calipso/ovs-client.pem"      # and this agent's certificate and key
//! # key = "/etc/calipso/ovs-client.key"
//! statistics = false
//! max_message_bytes = 268435456
//! # vswitchd_ctl = "/run/openvswitch/ovs-vswitchd.1234.ctl"   # default: found beside the socket
//!
//! [health]                              # checks the agent runs on what it sees
//! enabled = true
//! interval = "15s"                      # how often each object is checked …
//! # intervals = { vservice = "60s" }    # … or per object type
//! timeout = "10s"                       # a check still running then is `unknown`
//! max_concurrent = 16                   # checks running at once
//! error_rate_warning = 1.0              # NIC / vNIC errors per second that make a warning
//! drop_rate_warning = 100.0             # and drops per second
//! ping_count = 10                       # echo requests per tunnel and check
//! ping_interval = "100ms"
//! ping_timeout = "1s"                   # a reply later than this is lost
//! ping_loss_warning = 1.0               # percent lost above which a tunnel is a warning
//! ping_loss_error = 20.0                # … and an error
//! ping_rtt_warning = "300ms"            # average round trip above which a tunnel is a warning
//! ping_rtt_error = "1s"                 # … and an error
//! # sensu_checks = ["/etc/sensu/conf.d/checks.json"]   # Sensu 1.x checks, run on the host
//!
//! # [[health.plugins]]                  # any Nagios-compatible plugin
//! # name = "ntp"
//! # command = "/usr/lib/nagios/plugins/check_procs"
//! # args = ["-C", "ntpd", "-c", "1:"]   # `{attribute}` is the object's attribute
//! # types = ["host"]                    # the object types it checks …
//! # select = { name = "eth0" }          # … with these attribute values
//! # interval = "60s"                    # default: the object type's interval
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use calipso_proto::ObjectType;
use calipso_proto::wire::{DEFAULT_MAX_FRAME_BYTES, HealthOverrides};

use crate::collect::kernel::SysPaths;
use crate::collect::{KernelOptions, OvsOptions};
use crate::health::interfaces::RateLimits;
use crate::health::plugins::PluginConfig;
use crate::health::tunnels::PingSettings;
use crate::ovsdb::{Endpoint, SslFiles};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        problem: String,
    },
    #[error("cannot determine the host id: set `host` in the configuration ({0})")]
    NoHostname(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The host id: the identity in this agent's certificate and the prefix of its object ids.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_environment")]
    pub environment: String,
    /// Where the agent keeps its epoch and model, so that a restart resumes instead of sending
    /// a snapshot; empty: nowhere.
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    #[serde(default)]
    pub aggregator: AggregatorConfig,
    #[serde(default)]
    pub host_facts: HostFactsConfig,
    #[serde(default)]
    pub netns: NetnsConfig,
    #[serde(default)]
    pub libvirt: LibvirtConfig,
    #[serde(default)]
    pub kernel: KernelConfig,
    #[serde(default)]
    pub ovs: OvsConfig,
    #[serde(default)]
    pub health: HealthConfig,
}

/// The agent's own health checks ([`crate::health`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// By object type name (`vservice`, `host_pnic` …), overriding `interval`.
    pub intervals: BTreeMap<String, humantime_serde::Serde<Duration>>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub error_rate_warning: f64,
    pub drop_rate_warning: f64,
    pub ping_count: u16,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    pub ping_loss_warning: f64,
    pub ping_loss_error: f64,
    #[serde(with = "humantime_serde")]
    pub ping_rtt_warning: Duration,
    #[serde(with = "humantime_serde")]
    pub ping_rtt_error: Duration,
    /// Nagios-compatible plugins (`[[health.plugins]]`).
    pub plugins: Vec<PluginConfig>,
    /// Sensu 1.x client check files whose checks run as plugins on the host object.
    pub sensu_checks: Vec<PathBuf>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            interval: Duration::from_secs(15),
            intervals: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            max_concurrent: 16,
            error_rate_warning: 1.0,
            drop_rate_warning: 100.0,
            ping_count: 10,
            ping_interval: Duration::from_millis(100),
            ping_timeout: Duration::from_secs(1),
            ping_loss_warning: 1.0,
            ping_loss_error: 20.0,
            ping_rtt_warning: Duration::from_millis(300),
            ping_rtt_error: Duration::from_secs(1),
            plugins: Vec::new(),
            sensu_checks: Vec::new(),
        }
    }
}

impl HealthConfig {
    /// How tunnels are probed and judged.
    pub fn ping(&self) -> PingSettings {
        PingSettings {
            count: self.ping_count,
            interval: self.ping_interval,
            reply_timeout: self.ping_timeout,
            loss_warning: self.ping_loss_warning,
            loss_error: self.ping_loss_error,
            rtt_warning: self.ping_rtt_warning,
            rtt_error: self.ping_rtt_error,
        }
    }

    /// Interface error and drop rates that make a warning.
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits {
            errors_per_second: self.error_rate_warning,
            drops_per_second: self.drop_rate_warning,
        }
    }

    /// How often objects of `object_type` are checked.
    pub fn interval_for(&self, object_type: ObjectType) -> Duration {
        self.intervals
            .get(object_type.as_str())
            .map_or(self.interval, |interval| **interval)
    }

    /// These settings with what the environment sets over them. A per-type interval the
    /// environment sets wins over the agent's for that type; the environment's `interval`
    /// replaces the agent's default only.
    pub fn with_overrides(&self, overrides: &HealthOverrides) -> HealthConfig {
        let millis = Duration::from_millis;
        let mut config = self.clone();
        if let Some(interval) = overrides.interval_ms {
            config.interval = millis(interval);
        }
        for (object_type, interval) in &overrides.intervals_ms {
            config.intervals.insert(
                object_type.as_str().to_owned(),
                humantime_serde::Serde::from(millis(*interval)),
            );
        }
        let set = |value: Option<f64>, field: &mut f64| *field = value.unwrap_or(*field);
        set(overrides.error_rate_warning, &mut config.error_rate_warning);
        set(overrides.drop_rate_warning, &mut config.drop_rate_warning);
        set(overrides.ping_loss_warning, &mut config.ping_loss_warning);
        set(overrides.ping_loss_error, &mut config.ping_loss_error);
        if let Some(timeout) = overrides.timeout_ms {
            config.timeout = millis(timeout);
        }
        if let Some(rtt) = overrides.ping_rtt_warning_ms {
            config.ping_rtt_warning = millis(rtt);
        }
        if let Some(rtt) = overrides.ping_rtt_error_ms {
            config.ping_rtt_error = millis(rtt);
        }
        config
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OvsConfig {
    /// `unix:PATH`, a bare path, `tcp:HOST:PORT` or `ssl:HOST:PORT`.
    pub socket: String,
    /// Also monitor interface statistics (rewritten by vswitchd every few seconds).
    pub statistics: bool,
    pub max_message_bytes: usize,
    /// For `ssl:` sockets: the CA that signed ovsdb-server's certificate, and this agent's.
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// ovs-vswitchd's control socket, for its health check; by default found beside a `unix:`
    /// database socket (`ovs-vswitchd.ctl`, or `ovs-vswitchd.<pid>.ctl` from its pid file).
    pub vswitchd_ctl: Option<PathBuf>,
}

impl Default for OvsConfig {
    fn default() -> Self {
        OvsConfig {
            socket: "/run/openvswitch/db.sock".into(),
            statistics: false,
            max_message_bytes: 256 * 1024 * 1024,
            ca_cert: None,
            cert: None,
            key: None,
            vswitchd_ctl: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetnsConfig {
    pub dir: PathBuf,
    /// A namespace file to treat as this host's namespace instead of the agent's own.
    pub host: Option<PathBuf>,
}

impl Default for NetnsConfig {
    fn default() -> Self {
        NetnsConfig {
            dir: "/run/netns".into(),
            host: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtConfig {
    /// Running domains' run-state documents.
    pub dir: PathBuf,
    /// Persistent domain definitions: defined domains that are not running are instances too.
    pub config_dir: PathBuf,
}

impl Default for LibvirtConfig {
    fn default() -> Self {
        LibvirtConfig {
            dir: "/run/libvirt/qemu".into(),
            config_dir: "/etc/libvirt/qemu".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    #[serde(with = "humantime_serde")]
    pub coalesce_quiet: Duration,
    #[serde(with = "humantime_serde")]
    pub coalesce_max: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    pub sysfs_net: PathBuf,
    pub proc_bonding: PathBuf,
    /// Interfaces to report as physical NICs though sysfs links them to no device (a lab's
    /// fabric veths; NICs of drivers that register none).
    pub physical_interfaces: Vec<String>,
    /// Bytes; the kernel's default (`net.core.rmem_default`) when absent.
    pub netlink_rcvbuf: Option<u32>,
}

impl Default for KernelConfig {
    fn default() -> Self {
        let defaults = KernelOptions::default();
        KernelConfig {
            coalesce_quiet: defaults.coalesce_quiet,
            coalesce_max: defaults.coalesce_max,
            refresh: defaults.refresh,
            sysfs_net: defaults.sys.class_net,
            proc_bonding: defaults.sys.bonding,
            physical_interfaces: defaults.sys.declared_physical.into_iter().collect(),
            netlink_rcvbuf: defaults.netlink_rcvbuf,
        }
    }
}

impl KernelConfig {
    /// The collector's options, with the netns directory from `[netns]`.
    pub fn options(&self, netns: &NetnsConfig) -> KernelOptions {
        KernelOptions {
            host_netns: netns.host.clone(),
            netns_dir: netns.dir.clone(),
            sys: SysPaths {
                class_net: self.sysfs_net.clone(),
                bonding: self.proc_bonding.clone(),
                declared_physical: self.physical_interfaces.iter().cloned().collect(),
            },
            coalesce_quiet: self.coalesce_quiet,
            coalesce_max: self.coalesce_max,
            refresh: self.refresh,
            netlink_rcvbuf: self.netlink_rcvbuf,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorConfig {
    pub address: String,
    pub server_name: String,
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub max_frame_bytes: usize,
    pub outbox_max_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            address: "127.0.0.1:7443".into(),
            server_name: "aggregator".into(),
            ca_cert: None,
            cert: None,
            key: None,
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            outbox_max_bytes: 64 * 1024 * 1024,
            reconnect_max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostFactsConfig {
    /// How often memory, kernel and OS facts are re-read (they have no change events).
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

impl Default for HostFactsConfig {
    fn default() -> Self {
        HostFactsConfig {
            refresh: Duration::from_secs(60),
        }
    }
}

fn default_environment() -> String {
    "default".into()
}

fn default_state_file() -> PathBuf {
    "/var/lib/calipso-agent/state".into()
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            host: None,
            environment: default_environment(),
            state_file: default_state_file(),
            aggregator: AggregatorConfig::default(),
            host_facts: HostFactsConfig::default(),
            netns: NetnsConfig::default(),
            libvirt: LibvirtConfig::default(),
            kernel: KernelConfig::default(),
            ovs: OvsConfig::default(),
            health: HealthConfig::default(),
        }
    }
}

impl OvsConfig {
    /// The collector's options; the socket was validated with the configuration.
    fn ssl_files(&self) -> Option<SslFiles> {
        Some(SslFiles {
            ca_cert: self.ca_cert.clone()?,
            cert: self.cert.clone()?,
            key: self.key.clone()?,
        })
    }

    pub fn options(&self, kernel: &KernelConfig) -> OvsOptions {
        let defaults = OvsOptions::default();
        let endpoint = match self.socket.parse() {
            Ok(Endpoint::Ssl { address, .. }) => Endpoint::Ssl {
                address,
                files: self.ssl_files(),
            },
            Ok(endpoint) => endpoint,
            Err(_) => defaults.endpoint.clone(),
        };
        OvsOptions {
            endpoint,
            statistics: self.statistics,
            max_message_bytes: self.max_message_bytes,
            coalesce_quiet: kernel.coalesce_quiet,
            coalesce_max: kernel.coalesce_max,
            ..defaults
        }
    }
}

/// The certificate paths of a configuration that can connect.
#[derive(Debug, Clone)]
pub struct UplinkTls {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl AgentConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_text(path)?, path)
    }

    /// Parses and validates configuration text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: AgentConfig = parse_toml(text, path)?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            problem,
        };
        if let Some(host) = &self.host {
            validate_host_id(host).map_err(|p| invalid("host", p))?;
        }
        if self.environment.is_empty() || self.environment.contains(['/', ':']) {
            return Err(invalid(
                "environment",
                "must be non-empty and contain neither '/' nor ':'".into(),
            ));
        }
        let agg = &self.aggregator;
        if !agg.address.contains(':') {
            return Err(invalid(
                "aggregator.address",
                format!("`{}` is not HOST:PORT", agg.address),
            ));
        }
        if agg.max_frame_bytes < 1024 || agg.max_frame_bytes > u32::MAX as usize {
            return Err(invalid(
                "aggregator.max_frame_bytes",
                "must be between 1024 and 4294967295".into(),
            ));
        }
        if agg.outbox_max_bytes < agg.max_frame_bytes {
            return Err(invalid(
                "aggregator.outbox_max_bytes",
                "must be at least aggregator.max_frame_bytes".into(),
            ));
        }
        if agg.keep_alive.is_zero() || agg.keep_alive >= agg.idle_timeout {
            return Err(invalid(
                "aggregator.keep_alive",
                "must be non-zero and shorter than aggregator.idle_timeout".into(),
            ));
        }
        if agg.reconnect_max.is_zero() {
            return Err(invalid(
                "aggregator.reconnect_max",
                "must be non-zero".into(),
            ));
        }
        if self.host_facts.refresh < Duration::from_secs(1) {
            return Err(invalid("host_facts.refresh", "must be at least 1s".into()));
        }
        let kernel = &self.kernel;
        if kernel.coalesce_quiet > kernel.coalesce_max {
            return Err(invalid(
                "kernel.coalesce_quiet",
                "must not be longer than kernel.coalesce_max".into(),
            ));
        }
        if kernel.coalesce_max > Duration::from_secs(1) {
            return Err(invalid("kernel.coalesce_max", "must be at most 1s".into()));
        }
        if kernel.refresh < Duration::from_secs(1) {
            return Err(invalid("kernel.refresh", "must be at least 1s".into()));
        }
        let endpoint = self
            .ovs
            .socket
            .parse::<Endpoint>()
            .map_err(|problem| invalid("ovs.socket", problem))?;
        if matches!(endpoint, Endpoint::Ssl { .. }) && self.ovs.ssl_files().is_none() {
            return Err(invalid(
                "ovs.socket",
                "ssl: needs ovs.ca_cert, ovs.cert and ovs.key".into(),
            ));
        }
        if self.ovs.max_message_bytes < 64 * 1024 {
            return Err(invalid(
                "ovs.max_message_bytes",
                "must be at least 65536".into(),
            ));
        }
        self.validate_health(path)
    }

    fn validate_health(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            problem,
        };
        let health = &self.health;
        let second = Duration::from_secs(1);
        let day = Duration::from_secs(86_400);
        if health.interval < second || health.interval > day {
            return Err(invalid(
                "health.interval",
                "must be between 1s and 1 day".into(),
            ));
        }
        for (name, interval) in &health.intervals {
            if name.parse::<ObjectType>().is_err() {
                return Err(invalid(
                    "health.intervals",
                    format!("`{name}` is not an object type"),
                ));
            }
            if **interval < second || **interval > day {
                return Err(invalid(
                    "health.intervals",
                    format!("`{name}` must be between 1s and 1 day"),
                ));
            }
        }
        if health.timeout.is_zero() || health.timeout > Duration::from_secs(300) {
            return Err(invalid(
                "health.timeout",
                "must be between 1ms and 5m".into(),
            ));
        }
        if !(1..=1024).contains(&health.max_concurrent) {
            return Err(invalid(
                "health.max_concurrent",
                "must be between 1 and 1024".into(),
            ));
        }
        for (key, rate) in [
            ("health.error_rate_warning", health.error_rate_warning),
            ("health.drop_rate_warning", health.drop_rate_warning),
        ] {
            if !rate.is_finite() || rate < 0.0 {
                return Err(invalid(key, "must be a number of at least 0".into()));
            }
        }
        if !(1..=100).contains(&health.ping_count) {
            return Err(invalid(
                "health.ping_count",
                "must be between 1 and 100".into(),
            ));
        }
        for (key, percent) in [
            ("health.ping_loss_warning", health.ping_loss_warning),
            ("health.ping_loss_error", health.ping_loss_error),
        ] {
            if !(0.0..=100.0).contains(&percent) {
                return Err(invalid(key, "must be a percentage (0 to 100)".into()));
            }
        }
        if health.ping_timeout.is_zero() || health.ping_rtt_warning > health.ping_rtt_error {
            return Err(invalid(
                "health.ping_rtt_warning",
                "ping_timeout must be non-zero and ping_rtt_warning at most ping_rtt_error".into(),
            ));
        }
        for plugin in &health.plugins {
            if let Err(err) = crate::health::PluginCheck::new(plugin.clone()) {
                return Err(invalid("health.plugins", err.to_string()));
            }
            if plugin.interval.is_some_and(|i| i < second || i > day) {
                return Err(invalid(
                    "health.plugins",
                    format!(
                        "plugin `{}`: interval must be between 1s and 1 day",
                        plugin.name
                    ),
                ));
            }
        }
        // The probes of one tunnel must fit in the check's time limit.
        let probing = health.ping_interval * u32::from(health.ping_count) + health.ping_timeout;
        if probing >= health.timeout {
            return Err(invalid(
                "health.timeout",
                format!(
                    "must be longer than ping_count × ping_interval + ping_timeout ({probing:?})"
                ),
            ));
        }
        Ok(())
    }

    /// The state file, unless disabled.
    pub fn state_file(&self) -> Option<&Path> {
        Some(self.state_file.as_path()).filter(|p| !p.as_os_str().is_empty())
    }

    /// The host id: configured, or this machine's hostname.
    pub fn host_id(&self) -> Result<String, ConfigError> {
        match &self.host {
            Some(host) => Ok(host.clone()),
            None => {
                let name = sysinfo::System::host_name()
                    .map_err(|e| ConfigError::NoHostname(e.to_string()))?;
                validate_host_id(&name).map_err(ConfigError::NoHostname)?;
                Ok(name)
            }
        }
    }

    /// The certificate paths `run` needs, or an error naming the first one missing.
    pub fn uplink_tls(&self, path: &Path) -> Result<UplinkTls, ConfigError> {
        let require = |key, value: &Option<PathBuf>| {
            value.clone().ok_or_else(|| ConfigError::Invalid {
                path: path.to_owned(),
                key,
                problem: "is required to connect".into(),
            })
        };
        Ok(UplinkTls {
            ca_cert: require("aggregator.ca_cert", &self.aggregator.ca_cert)?,
            cert: require("aggregator.cert", &self.aggregator.cert)?,
            key: require("aggregator.key", &self.aggregator.key)?,
        })
    }
}

/// Reads a configuration file's text, naming the file in the error.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses TOML configuration text (the agent's and the aggregator's alike); errors name the
/// file, and toml's message names the line and the key.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Host ids end up in object ids, file names and certificate subjects.
pub fn validate_host_id(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{host}` is not a valid host id (letters, digits, '-', '_' and '.' only)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        AgentConfig::parse(text, Path::new("agent.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_overrides() {
        let config = parse("host = \"c1\"\n[aggregator]\nkeep_alive = \"2s\"\n").expect("valid");
        assert_eq!(config.host.as_deref(), Some("c1"));
        assert_eq!(config.environment, "default");
        assert_eq!(config.aggregator.keep_alive, Duration::from_secs(2));
        assert_eq!(config.aggregator.idle_timeout, Duration::from_secs(30));
        assert!(config.uplink_tls(Path::new("agent.toml")).is_err());
    }

    #[test]
    fn the_environments_health_settings_win_over_the_agents() {
        let own = parse(
            "[health]\ninterval = \"20s\"\nping_loss_error = 30.0\n\
             [health.intervals]\nvnic = \"10s\"\notep = \"1m\"\n",
        )
        .expect("valid")
        .health;
        let overrides = HealthOverrides {
            interval_ms: Some(60_000),
            intervals_ms: vec![(ObjectType::Vnic, 5_000)],
            ping_loss_error: Some(50.0),
            ping_rtt_warning_ms: Some(150),
            ..HealthOverrides::default()
        };
        let merged = own.with_overrides(&overrides);
        assert_eq!(
            merged.interval_for(ObjectType::Vnic),
            Duration::from_secs(5)
        );
        assert_eq!(
            merged.interval_for(ObjectType::Otep),
            Duration::from_secs(60),
            "the agent's own"
        );
        assert_eq!(
            merged.interval_for(ObjectType::HostPnic),
            Duration::from_secs(60)
        );
        assert_eq!(merged.ping_loss_error, 50.0);
        assert_eq!(merged.ping_rtt_warning, Duration::from_millis(150));
        assert_eq!(merged.ping_loss_warning, 1.0, "unset: the agent's own");
        // Settings that go away leave the agent's own.
        let back = own.with_overrides(&HealthOverrides::default());
        assert_eq!(back.interval_for(ObjectType::Vnic), Duration::from_secs(10));
        assert_eq!(back.ping_loss_error, 30.0);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("host = \"a:b\"", "`host`"),
            ("bogus = 1", "bogus"),
            ("[aggregator]\naddress = \"nowhere\"", "aggregator.address"),
            (
                "[aggregator]\nkeep_alive = \"60s\"",
                "aggregator.keep_alive",
            ),
            ("[aggregator]\nkeep_alive = \"soon\"", "keep_alive"),
            (
                "[aggregator]\nmax_frame_bytes = 10",
                "aggregator.max_frame_bytes",
            ),
            ("[host_facts]\nrefresh = \"1ms\"", "host_facts.refresh"),
            (
                "[kernel]\ncoalesce_quiet = \"20ms\"",
                "kernel.coalesce_quiet",
            ),
            ("[netns]\ndirectory = \"/x\"", "directory"),
            ("[ovs]\nsocket = \"ssl:1.2.3.4:6640\"", "ovs.socket"),
            ("[ovs]\nsocket = \"udp:1.2.3.4:6640\"", "ovs.socket"),
        ];
        for (text, key) in cases {
            let err = parse(text).err().unwrap_or_default();
            assert!(err.starts_with("agent.toml"), "{err}");
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = AgentConfig::default()
            .uplink_tls(Path::new("a.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(err, "a.toml: `aggregator.ca_cert`: is required to connect");
    }
}
