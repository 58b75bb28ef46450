//! Physical switches: their ports, the host NICs cabled to them, and switch-to-switch cabling.

use calipso_proto::{CompactString, Link, LinkType, ObjectType, ToCompactString, format_compact};

use super::{Description, LinkFinder, Reader, described, link_between, symmetric_link};
use crate::graph::{Lookup, Node};

pub(super) fn finders() -> Vec<Box<dyn LinkFinder>> {
    vec![
        Box::new(HostPnicSwitchPnic),
        Box::new(SwitchSwitchPnic),
        Box::new(SwitchPnicSwitchPnic),
    ]
}

/// A switch port facing a host NIC, matched by the MAC the switch learned on it.
#[derive(Debug)]
struct HostPnicSwitchPnic;

impl LinkFinder for HostPnicSwitchPnic {
    fn origin(&self) -> ObjectType {
        ObjectType::SwitchPnic
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::HostPnic, ObjectType::SwitchPnic)]
    }

    fn find(&self, port: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        let Some(mac) = port.object.attributes.mac_address else {
            return;
        };
        let switch = port
            .object
            .parent
            .as_ref()
            .map_or_else(CompactString::default, |p| p.id.to_compact_string());
        for pnic in reader.find_endpoints(Lookup::Mac(mac)) {
            if pnic.object_type() == ObjectType::HostPnic {
                let host = pnic.object.host.clone().unwrap_or_default();
                out.push(described(
                    link_between(pnic, port),
                    Description::named(format_compact!("{host}-{switch}")),
                ));
            }
        }
    }
}

/// A switch and its ports.
#[derive(Debug)]
struct SwitchSwitchPnic;

impl LinkFinder for SwitchSwitchPnic {
    fn origin(&self) -> ObjectType {
        ObjectType::SwitchPnic
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::Switch, ObjectType::SwitchPnic)]
    }

    fn find(&self, port: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        let Some(parent) = &port.object.parent else {
            return;
        };
        if let Some(switch) = reader
            .endpoint(&parent.id)
            .filter(|n| n.object_type() == ObjectType::Switch)
        {
            let name = format_compact!("{}={}", switch.object.name, port.object.name);
            out.push(described(
                link_between(switch, port),
                Description::named(name),
            ));
        }
    }
}

/// Cabling between two switches' ports (an uplink and the downlink it is connected to, from
/// LLDP adjacency).
#[derive(Debug)]
struct SwitchPnicSwitchPnic;

impl LinkFinder for SwitchPnicSwitchPnic {
    fn origin(&self) -> ObjectType {
        ObjectType::SwitchPnic
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(
            ObjectType::SwitchPnic,
            ObjectType::SwitchPnic,
        )]
    }

    fn find(&self, port: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        if let Some(peer) = reader.referenced_endpoint(port, "connected_to", ObjectType::SwitchPnic)
            && peer.id() != port.id()
        {
            let link = symmetric_link(port, peer);
            let name = link.target.to_compact_string();
            out.push(described(link, Description::named(name)));
        }
    }
}
