//! The lab's topology file (TOML): hosts, the networks they carry, their VMs and Neutron
//! services. It is both what `calipso-lab up` builds and the ground truth the end-to-end tests
//! compare the API with ([`super::expect`]).
//!
//! ```toml
//! name = "ovs3"                # prefix of every namespace, device and process (1–6 of a-z0-9)
//! environment = "lab"
//! fabric = "10.251.0.0/24"     # host N gets .N, the root namespace's bridge .254
//!
//! [[networks]]
//! name = "net-a"
//! vni = 101                    # the VXLAN segment
//! cidr = "192.168.10.0/24"
//!
//! [[hosts]]
//! name = "compute-1"
//! switch = "ovs"               # or "lxb" (Linux bridges and VXLAN devices)
//! dhcp = ["net-a"]             # a qdhcp namespace with a port on each
//! routers = [{ name = "r1", networks = ["net-a"] }]
//! vms = [{ name = "vm-1", networks = ["net-a"], plug = "hybrid" }]   # plug: ovs (default) or hybrid
//! ```
//!
//! Neutron and Nova ids (network, port, instance UUIDs) and MAC addresses are derived from
//! the names, so the same file always builds the same cloud.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub name: String,
    #[serde(default = "default_environment")]
    pub environment: String,
    pub fabric: Fabric,
    #[serde(default)]
    pub networks: Vec<Network>,
    pub hosts: Vec<Host>,
}

fn default_environment() -> String {
    "lab".into()
}

/// An IPv4 /24 (the lab numbers hosts 1–253 in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fabric {
    pub base: Ipv4Addr,
}

impl Fabric {
    /// The address of the `index`-th host (0-based).
    pub fn host_ip(&self, index: usize) -> Ipv4Addr {
        let [a, b, c, _] = self.base.octets();
        Ipv4Addr::new(a, b, c, u8::try_from(index + 1).unwrap_or(u8::MAX))
    }

    /// The root namespace's end of the data network.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.base.octets();
        Ipv4Addr::new(a, b, c, 254)
    }

    /// The management network beside the data network (the fabric's third octet plus 128),
    /// over which the agents reach the aggregator, as an OpenStack deployment keeps its control
    /// traffic off the tenant network: a data NIC taken down does not cut the agent off.
    fn management_octets(&self) -> [u8; 3] {
        let [a, b, c, _] = self.base.octets();
        [a, b, c.wrapping_add(128)]
    }

    /// The management address of the `index`-th host.
    pub fn management_ip(&self, index: usize) -> Ipv4Addr {
        let [a, b, c] = self.management_octets();
        Ipv4Addr::new(a, b, c, u8::try_from(index + 1).unwrap_or(u8::MAX))
    }

    /// Where the aggregator listens for the lab's agents, on the management network.
    pub fn management_gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.management_octets();
        Ipv4Addr::new(a, b, c, 254)
    }
}

impl std::str::FromStr for Fabric {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (base, len) = text
            .split_once('/')
            .ok_or_else(|| format!("fabric `{text}`: expected a /24 such as 10.251.0.0/24"))?;
        let base: Ipv4Addr = base.parse().map_err(|e| format!("fabric `{text}`: {e}"))?;
        if len != "24" || base.octets()[3] != 0 {
            return Err(format!("fabric `{text}`: must be an IPv4 /24 ending in .0"));
        }
        Ok(Fabric { base })
    }
}

impl Serialize for Fabric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}/24", self.base))
    }
}

impl<'de> Deserialize<'de> for Fabric {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub name: String,
    pub vni: u32,
    pub cidr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// Open vSwitch as the Neutron OVS agent builds it: br-int, br-tun, br-ex.
    Ovs,
    /// Linux bridges per network with a VXLAN device each, as the Linux bridge agent builds them.
    Lxb,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    pub switch: Switch,
    #[serde(default)]
    pub dhcp: Vec<String>,
    #[serde(default)]
    pub routers: Vec<Router>,
    #[serde(default)]
    pub vms: Vec<Vm>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    pub name: String,
    pub networks: Vec<String>,
}

/// How Nova plugs a VM port on an OVS host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plug {
    /// The tap device is a port of br-int.
    #[default]
    Ovs,
    /// The tap sits on a Linux bridge (qbr) joined to br-int by a veth pair (qvb/qvo), for
    /// iptables security groups.
    Hybrid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    pub name: String,
    pub networks: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default_plug")]
    pub plug: Plug,
}

fn is_default_plug(plug: &Plug) -> bool {
    *plug == Plug::Ovs
}

/// A port's derived identity: Neutron port id, MAC and the device names built from the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortIds {
    pub id: String,
    pub mac: String,
}

impl PortIds {
    /// Neutron names devices by a prefix and the port id's first 11 characters.
    pub fn device(&self, prefix: &str) -> String {
        format!("{prefix}{}", &self.id[..11])
    }
}

/// A name-derived UUID (SHA-256 of the parts; version and variant bits set as for v8).
pub fn derived_uuid(parts: &[&str]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, parts.join("\u{1f}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl Topology {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let topology: Topology =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        topology
            .validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(topology)
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// Checks names, references and limits; every error names the item.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=6).contains(&self.name.len())
                && self
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "lab name `{}`: 1 to 6 characters of a-z and 0-9 (it prefixes interface names)",
            self.name
        );
        ensure!(
            !self.hosts.is_empty() && self.hosts.len() <= 99,
            "a lab has 1 to 99 hosts, not {}",
            self.hosts.len()
        );
        let mut networks = BTreeSet::new();
        for network in &self.networks {
            ensure!(
                networks.insert(network.name.as_str()),
                "network `{}` declared twice",
                network.name
            );
            ensure!(
                (1..1 << 24).contains(&network.vni),
                "network `{}`: vni {} is not a 24-bit segment id",
                network.name,
                network.vni
            );
            cidr_host(&network.cidr, 1).with_context(|| format!("network `{}`", network.name))?;
        }
        let mut hosts = BTreeSet::new();
        let mut vms = BTreeSet::new();
        for host in &self.hosts {
            ensure!(
                !host.name.is_empty()
                    && host
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                "host `{}`: letters, digits and '-' only",
                host.name
            );
            ensure!(
                hosts.insert(&host.name),
                "host `{}` declared twice",
                host.name
            );
            let known = |name: &String, what: &str| -> anyhow::Result<()> {
                ensure!(
                    networks.contains(name.as_str()),
                    "host `{}`: {what} names unknown network `{name}`",
                    host.name
                );
                Ok(())
            };
            for network in &host.dhcp {
                known(network, "dhcp")?;
            }
            for router in &host.routers {
                router
                    .networks
                    .iter()
                    .try_for_each(|n| known(n, "a router"))?;
            }
            for vm in &host.vms {
                ensure!(vms.insert(&vm.name), "vm `{}` declared twice", vm.name);
                ensure!(!vm.networks.is_empty(), "vm `{}`: no network", vm.name);
                vm.networks
                    .iter()
                    .try_for_each(|n| known(n, &format!("vm `{}`", vm.name)))?;
                if vm.plug == Plug::Hybrid && host.switch != Switch::Ovs {
                    bail!("vm `{}`: hybrid plugging is for OVS hosts", vm.name);
                }
            }
        }
        Ok(())
    }

    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn host_mut(&mut self, name: &str) -> Option<&mut Host> {
        self.hosts.iter_mut().find(|h| h.name == name)
    }

    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }

    pub fn network_id(&self, network: &str) -> String {
        derived_uuid(&[&self.name, "network", network])
    }

    pub fn instance_uuid(&self, vm: &str) -> String {
        derived_uuid(&[&self.name, "vm", vm])
    }

    pub fn router_id(&self, host: &str, router: &str) -> String {
        derived_uuid(&[&self.name, "router", host, router])
    }

    /// The port of `owner` (a VM, `dhcp` or a router) on `network`.
    pub fn port(&self, owner: &str, network: &str) -> PortIds {
        let id = derived_uuid(&[&self.name, "port", owner, network]);
        let mac = format!("fa:16:3e:{}:{}:{}", &id[24..26], &id[26..28], &id[28..30]);
        PortIds { id, mac }
    }

    /// The namespace (global name) that plays `host`.
    pub fn host_netns(&self, host: &str) -> String {
        format!("cl-{}-{host}", self.name)
    }

    /// The Neutron name of a host's DHCP namespace for a network.
    pub fn dhcp_netns(&self, network: &str) -> String {
        format!("qdhcp-{}", self.network_id(network))
    }

    /// The Neutron name of a host's router namespace.
    pub fn router_netns(&self, host: &str, router: &str) -> String {
        format!("qrouter-{}", self.router_id(host, router))
    }

    /// The global name of a host's service namespace (`local` is its Neutron name, as the
    /// host's agent sees it in its netns directory).
    pub fn service_netns(&self, host: &str, local: &str) -> String {
        format!("{}-{local}", self.host_netns(host))
    }

    /// The Neutron names of a host's service namespaces.
    pub fn service_namespaces(&self, host: &Host) -> Vec<String> {
        host.dhcp
            .iter()
            .map(|network| self.dhcp_netns(network))
            .chain(
                host.routers
                    .iter()
                    .map(|router| self.router_netns(&host.name, &router.name)),
            )
            .collect()
    }
}

/// The `n`-th address of an IPv4 CIDR, with its prefix length.
pub fn cidr_host(cidr: &str, n: u32) -> anyhow::Result<String> {
    let (base, len) = cidr
        .split_once('/')
        .with_context(|| format!("cidr `{cidr}`: expected ADDRESS/LENGTH"))?;
    let base: Ipv4Addr = base.parse().with_context(|| format!("cidr `{cidr}`"))?;
    let len: u32 = len.parse().with_context(|| format!("cidr `{cidr}`"))?;
    ensure!((8..=29).contains(&len), "cidr `{cidr}`: length 8 to 29");
    ensure!(n < (1 << (32 - len)) - 1, "cidr `{cidr}`: no address {n}");
    Ok(format!("{}/{len}", Ipv4Addr::from(u32::from(base) + n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
name = "t1"
fabric = "10.251.0.0/24"
networks = [{ name = "net-a", vni = 101, cidr = "192.168.10.0/24" }]
[[hosts]]
name = "compute-1"
switch = "ovs"
dhcp = ["net-a"]
vms = [{ name = "vm-1", networks = ["net-a"], plug = "hybrid" }]
"#;

    #[test]
    fn a_topology_round_trips_and_derives_stable_ids() {
        let topology: Topology = toml::from_str(SAMPLE).expect("parses");
        topology.validate().expect("valid");
        let again: Topology = toml::from_str(&topology.to_toml().expect("toml")).expect("again");
        assert_eq!(again, topology);
        let port = topology.port("vm-1", "net-a");
        assert_eq!(port, topology.port("vm-1", "net-a"));
        assert_eq!(port.id.len(), 36);
        assert_eq!(port.device("tap").len(), 14, "IFNAMSIZ");
        assert_eq!(topology.fabric.host_ip(0), Ipv4Addr::new(10, 251, 0, 1));
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |edit: &dyn Fn(&mut Topology), expected: &str| {
            let mut topology: Topology = toml::from_str(SAMPLE).expect("parses");
            edit(&mut topology);
            let error = format!("{:#}", topology.validate().expect_err("invalid"));
            assert!(error.contains(expected), "{error}");
        };
        bad(&|t| t.name = "Too-Long".into(), "lab name `Too-Long`");
        bad(
            &|t| t.hosts[0].dhcp = vec!["net-z".into()],
            "unknown network `net-z`",
        );
        bad(
            &|t| t.hosts[0].switch = Switch::Lxb,
            "vm `vm-1`: hybrid plugging is for OVS hosts",
        );
        bad(
            &|t| t.networks[0].cidr = "192.168.10.0".into(),
            "network `net-a`",
        );
        assert!("10.0.0.0/16".parse::<Fabric>().is_err());
    }
}
