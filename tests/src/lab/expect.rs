//! The ground truth of a lab: the objects and links its topology file declares, derived from
//! the file alone (not from what the agents report), so that the end-to-end tests compare the
//! product with what was built; and [`Ids`], the names of a lab's objects, with which the
//! tests state by hand which objects each clique holds.
//!
//! What each host contributes:
//! - every host: `host`, its fabric NIC `eth0` (`host_pnic`), its management veth `mgmt0`
//!   (`vnic`);
//! - OVS host: the provider NIC `eth1`, the `vedge`, one `otep` for its tunnel address when
//!   another OVS host exists, and the kernel's view of the userspace datapath's own devices
//!   (`ovs-netdev` and one tap per bridge: `vnic`s of kind `tun` with no links, which is what
//!   these devices are);
//! - Linux bridge host: per network it carries, a bridge (`vconnector`) and a VXLAN device
//!   (`otep`);
//! - VMs: the `instance`, its taps; hybrid plugging adds the qbr bridge and the qvb/qvo veths;
//! - DHCP and routers: the `vservice` and its ports inside the namespace; on Linux bridge
//!   hosts also the veth end on the bridge.
//!
//! - the control plane (the lab's Keystone/Neutron double, read by the OpenStack adapter):
//!   the `region` and `availability_zone`, the `project`, every `network` and every Neutron
//!   `port` (VMs', DHCP's, routers');
//! - a host's tunnel NIC carries (`host_pnic-network`) each network it has a port on, when
//!   it terminates tunnels: an OVS host with another OVS host to reach, a Linux bridge host
//!   with a VXLAN device. The lab's networks are all VXLAN, so no uplink carries one.

use std::collections::BTreeSet;

use super::cloud;
use super::hosts::{dhcp_device_prefix, dhcp_owner, lxb_bridge, lxb_networks, router_owner};
use super::topology::{Plug, Switch, Topology};

/// A link as the API names it: type, source id, target id.
pub type LinkTriple = (String, String, String);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Expected {
    pub objects: BTreeSet<String>,
    pub links: BTreeSet<LinkTriple>,
}

fn local(object_type: &str, host: &str, key: &str) -> String {
    format!("{object_type}:{host}:{key}")
}

impl Expected {
    fn link(&mut self, link_type: &str, source: &str, target: &str) {
        let (source, target) = if link_type == "vnic-vnic" || link_type == "otep-otep" {
            if source <= target {
                (source, target)
            } else {
                (target, source)
            }
        } else {
            (source, target)
        };
        self.links
            .insert((link_type.to_owned(), source.to_owned(), target.to_owned()));
    }

    fn object(&mut self, id: String) -> String {
        self.objects.insert(id.clone());
        id
    }

    /// The whole lab's objects and links.
    pub fn of(topology: &Topology) -> Expected {
        let mut expected = Expected::default();
        let ovs_hosts: Vec<usize> = (0..topology.hosts.len())
            .filter(|&i| topology.hosts[i].switch == Switch::Ovs)
            .collect();
        for (index, host) in topology.hosts.iter().enumerate() {
            let h = host.name.as_str();
            expected.object(format!("host:{h}"));
            let eth0 = expected.object(local("host_pnic", h, "eth0"));
            // The management veth the agent reaches the aggregator over: its peer is in the
            // root namespace, which no agent reports.
            expected.object(local("vnic", h, "mgmt0"));
            match host.switch {
                Switch::Ovs => {
                    let eth1 = expected.object(local("host_pnic", h, "eth1"));
                    let vedge = expected.object(local("vedge", h, "ovs"));
                    for device in ["ovs-netdev", "br-int", "br-tun", "br-ex"] {
                        expected.object(local("vnic", h, device));
                    }
                    expected.link("vedge-host_pnic", &vedge, &eth1);
                    if ovs_hosts.len() > 1 {
                        let ip = topology.fabric.host_ip(index).to_string();
                        let otep = expected.object(local("otep", h, &ip));
                        expected.link("vedge-otep", &vedge, &otep);
                        expected.link("otep-host_pnic", &otep, &eth0);
                        for &other in ovs_hosts.iter().filter(|&&o| o != index) {
                            let peer = local(
                                "otep",
                                &topology.hosts[other].name,
                                &topology.fabric.host_ip(other).to_string(),
                            );
                            expected.link("otep-otep", &otep, &peer);
                        }
                    }
                }
                Switch::Lxb => {
                    for network in lxb_networks(topology, index) {
                        let vni = topology.network(&network).map_or(0, |n| n.vni);
                        let bridge = expected.object(local(
                            "vconnector",
                            h,
                            &lxb_bridge(topology, &network),
                        ));
                        let otep = expected.object(local("otep", h, &format!("vxlan-{vni}")));
                        expected.link("otep-vconnector", &otep, &bridge);
                        expected.link("otep-host_pnic", &otep, &eth0);
                        for (other, peer) in topology.hosts.iter().enumerate() {
                            if other != index && lxb_networks(topology, other).contains(&network) {
                                expected.link(
                                    "otep-otep",
                                    &otep,
                                    &local("otep", &peer.name, &format!("vxlan-{vni}")),
                                );
                            }
                        }
                    }
                }
            }
            expected.services(topology, index);
            expected.vms(topology, index);
        }
        expected.control_plane(topology, &ovs_hosts);
        expected
    }

    fn control_plane(&mut self, topology: &Topology, ovs_hosts: &[usize]) {
        self.object("region:regionone".to_owned());
        self.object(format!("availability_zone:{}", cloud::ZONE));
        self.object(format!("project:{}", cloud::project_id(topology)));
        for network in &topology.networks {
            self.object(format!("network:{}", topology.network_id(&network.name)));
        }
        for (host, owner, network, _, _) in cloud::ports(topology) {
            self.object(format!("port:{}", topology.port(&owner, &network).id));
            let Some(index) = topology.host_index(&host) else {
                continue;
            };
            let tunnels = match topology.hosts[index].switch {
                Switch::Ovs => ovs_hosts.len() > 1,
                Switch::Lxb => true,
            };
            if tunnels {
                self.link(
                    "host_pnic-network",
                    &local("host_pnic", &host, "eth0"),
                    &format!("network:{}", topology.network_id(&network)),
                );
            }
        }
    }

    fn services(&mut self, topology: &Topology, index: usize) {
        let host = &topology.hosts[index];
        let h = host.name.as_str();
        let dhcp = host.dhcp.iter().map(|network| {
            (
                topology.dhcp_netns(network),
                dhcp_owner(h),
                network,
                dhcp_device_prefix(host.switch),
            )
        });
        let routers = host.routers.iter().flat_map(|router| {
            router.networks.iter().map(|network| {
                (
                    topology.router_netns(h, &router.name),
                    router_owner(h, &router.name),
                    network,
                    "qr-",
                )
            })
        });
        let ports: Vec<_> = dhcp.chain(routers).collect();
        for (namespace, owner, network, prefix) in ports {
            let port = topology.port(&owner, network);
            let service = self.object(local("vservice", h, &namespace));
            let inside = self.object(local(
                "vnic",
                h,
                &format!("{namespace}/{}", port.device(prefix)),
            ));
            self.link("vservice-vnic", &service, &inside);
            match host.switch {
                Switch::Ovs => self.link("vnic-vedge", &inside, &local("vedge", h, "ovs")),
                Switch::Lxb => {
                    let outside = self.object(local("vnic", h, &port.device("tap")));
                    self.link("vnic-vnic", &inside, &outside);
                    self.link(
                        "vnic-vconnector",
                        &outside,
                        &local("vconnector", h, &lxb_bridge(topology, network)),
                    );
                }
            }
        }
    }

    fn vms(&mut self, topology: &Topology, index: usize) {
        let host = &topology.hosts[index];
        let h = host.name.as_str();
        let vedge = local("vedge", h, "ovs");
        for vm in &host.vms {
            let instance = self.object(format!("instance:{}", topology.instance_uuid(&vm.name)));
            for network in &vm.networks {
                let port = topology.port(&vm.name, network);
                let tap = self.object(local("vnic", h, &port.device("tap")));
                self.link("instance-vnic", &instance, &tap);
                match (host.switch, vm.plug) {
                    (Switch::Lxb, _) => self.link(
                        "vnic-vconnector",
                        &tap,
                        &local("vconnector", h, &lxb_bridge(topology, network)),
                    ),
                    (Switch::Ovs, Plug::Ovs) => self.link("vnic-vedge", &tap, &vedge),
                    (Switch::Ovs, Plug::Hybrid) => {
                        let qbr = self.object(local("vconnector", h, &port.device("qbr")));
                        let qvb = self.object(local("vnic", h, &port.device("qvb")));
                        let qvo = self.object(local("vnic", h, &port.device("qvo")));
                        self.link("vnic-vconnector", &tap, &qbr);
                        self.link("vnic-vconnector", &qvb, &qbr);
                        self.link("vnic-vnic", &qvb, &qvo);
                        self.link("vnic-vedge", &qvo, &vedge);
                        self.link("vconnector-vedge", &qbr, &vedge);
                    }
                }
            }
        }
    }
}

/// The ids of a lab's objects, by what an operator calls them ("vm-1's tap on net-a",
/// "compute-1's tunnel endpoint"): names only, so that tests state the cliques they expect
/// (which objects depend on which) rather than compute them.
#[derive(Debug, Clone, Copy)]
pub struct Ids<'t>(pub &'t Topology);

impl Ids<'_> {
    pub fn host(&self, host: &str) -> String {
        format!("host:{host}")
    }

    pub fn instance(&self, vm: &str) -> String {
        format!("instance:{}", self.0.instance_uuid(vm))
    }

    pub fn network(&self, network: &str) -> String {
        format!("network:{}", self.0.network_id(network))
    }

    pub fn nic(&self, host: &str, device: &str) -> String {
        local("host_pnic", host, device)
    }

    pub fn vedge(&self, host: &str) -> String {
        local("vedge", host, "ovs")
    }

    /// An OVS host's tunnel endpoint, named by its fabric address.
    pub fn otep(&self, host: &str) -> String {
        let index = self.0.host_index(host).unwrap_or_default();
        local("otep", host, &self.0.fabric.host_ip(index).to_string())
    }

    /// A Linux bridge host's VXLAN device for a network.
    pub fn vxlan(&self, host: &str, network: &str) -> String {
        let vni = self.0.network(network).map_or(0, |n| n.vni);
        local("otep", host, &format!("vxlan-{vni}"))
    }

    /// A Linux bridge host's bridge for a network.
    pub fn brq(&self, host: &str, network: &str) -> String {
        local("vconnector", host, &lxb_bridge(self.0, network))
    }

    /// A device of `vm`'s port on `network`, on the host it runs on: `tap`, `qvb`, `qvo`.
    pub fn vm_device(&self, host: &str, vm: &str, network: &str, prefix: &str) -> String {
        local("vnic", host, &self.0.port(vm, network).device(prefix))
    }

    /// The qbr bridge of `vm`'s hybrid-plugged port on `network`.
    pub fn qbr(&self, host: &str, vm: &str, network: &str) -> String {
        local("vconnector", host, &self.0.port(vm, network).device("qbr"))
    }

    pub fn dhcp(&self, host: &str, network: &str) -> String {
        local("vservice", host, &self.0.dhcp_netns(network))
    }

    /// The DHCP server's interface inside its namespace.
    pub fn dhcp_port(&self, host: &str, network: &str, switch: Switch) -> String {
        let port = self.0.port(&dhcp_owner(host), network);
        local(
            "vnic",
            host,
            &format!(
                "{}/{}",
                self.0.dhcp_netns(network),
                port.device(dhcp_device_prefix(switch))
            ),
        )
    }

    /// The host's end of the veth of the DHCP port (Linux bridge hosts).
    pub fn dhcp_veth(&self, host: &str, network: &str) -> String {
        local(
            "vnic",
            host,
            &self.0.port(&dhcp_owner(host), network).device("tap"),
        )
    }

    pub fn router(&self, host: &str, router: &str) -> String {
        local("vservice", host, &self.0.router_netns(host, router))
    }

    /// The router's `qr-` interface on a network, inside its namespace.
    pub fn router_port(&self, host: &str, router: &str, network: &str) -> String {
        let port = self.0.port(&router_owner(host, router), network);
        local(
            "vnic",
            host,
            &format!(
                "{}/{}",
                self.0.router_netns(host, router),
                port.device("qr-")
            ),
        )
    }

    /// The host's end of the veth of the router's port (Linux bridge hosts).
    pub fn router_veth(&self, host: &str, router: &str, network: &str) -> String {
        local(
            "vnic",
            host,
            &self
                .0
                .port(&router_owner(host, router), network)
                .device("tap"),
        )
    }
}
