//! The lab's OpenStack control plane, as its APIs would describe the topology: one region and
//! one availability zone holding every host, one Keystone project, and Neutron's networks (VXLAN, segment = the declared VNI), subnets and ports —
//! every VM's, DHCP server's and router interface's port, bound to its host. Served by the
//! [`FakeCloud`](crate::openstack::FakeCloud) double (`calipso-lab serve-cloud`), which the
//! aggregator's OpenStack adapter reads like a real cloud.

use serde_json::{Value, json};

use super::hosts::{dhcp_owner, router_owner};
use super::topology::{Switch, Topology, derived_uuid};
use crate::openstack::{self, CloudDocuments};

/// The lab cloud's Keystone user.
pub const USER: &str = "admin";

/// The one availability zone, holding every host (the region is the double's `RegionOne`).
pub const ZONE: &str = "nova";

/// The lab's Keystone project id (Keystone ids are 32 hex digits).
pub fn project_id(topology: &Topology) -> String {
    derived_uuid(&[&topology.name, "project", "admin"]).replace('-', "")
}

/// Every port of the topology: `(host, owner, network, device_owner, device_id)`.
pub fn ports(topology: &Topology) -> Vec<(String, String, String, String, String)> {
    let mut ports = Vec::new();
    for host in &topology.hosts {
        let h = host.name.as_str();
        for network in &host.dhcp {
            let device = format!("dhcp-{}", topology.network_id(network));
            ports.push((
                h.into(),
                dhcp_owner(h),
                network.clone(),
                "network:dhcp".into(),
                device,
            ));
        }
        for router in &host.routers {
            for network in &router.networks {
                ports.push((
                    h.into(),
                    router_owner(h, &router.name),
                    network.clone(),
                    "network:router_interface".into(),
                    topology.router_id(h, &router.name),
                ));
            }
        }
        for vm in &host.vms {
            for network in &vm.networks {
                ports.push((
                    h.into(),
                    vm.name.clone(),
                    network.clone(),
                    "compute:nova".into(),
                    topology.instance_uuid(&vm.name),
                ));
            }
        }
    }
    ports
}

/// What Keystone and Neutron return for the topology.
pub fn documents(topology: &Topology) -> CloudDocuments {
    let project = project_id(topology);
    let networks = topology
        .networks
        .iter()
        .map(|n| {
            let mut network = openstack::network(
                &topology.network_id(&n.name),
                &n.name,
                &project,
                "vxlan",
                i64::from(n.vni),
            );
            network["subnets"] = json!([subnet_id(topology, &n.name)]);
            network
        })
        .collect();
    let subnets = topology
        .networks
        .iter()
        .map(|n| {
            openstack::subnet(
                &subnet_id(topology, &n.name),
                &topology.network_id(&n.name),
                &project,
                &n.cidr,
            )
        })
        .collect();
    let ports = ports(topology)
        .into_iter()
        .map(|(host, owner, network, device_owner, device_id)| {
            let ids = topology.port(&owner, &network);
            let mut port = openstack::port(
                &ids.id,
                &topology.network_id(&network),
                &project,
                &ids.mac,
                &host,
                &device_owner,
                &device_id,
            );
            let lxb = topology
                .host(&host)
                .is_some_and(|h| h.switch == Switch::Lxb);
            port["binding:vif_type"] = Value::from(if lxb { "bridge" } else { "ovs" });
            port
        })
        .collect();
    let hosts: Vec<&str> = topology.hosts.iter().map(|h| h.name.as_str()).collect();
    CloudDocuments {
        zones: vec![openstack::zone(ZONE, &hosts)],
        projects: vec![
            json!({"id": project, "name": "admin", "domain_id": "default",
            "enabled": true, "description": format!("lab {}", topology.name)}),
        ],
        networks,
        subnets,
        ports,
    }
}

fn subnet_id(topology: &Topology, network: &str) -> String {
    derived_uuid(&[&topology.name, "subnet", network])
}
