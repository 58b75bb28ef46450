//! What a kernel interface is plugged into: its VM, its bridge, its veth peer, its namespace,
//! and a physical NIC's bridge.

use calipso_proto::{
    AttrValue, CompactString, Link, LinkType, ObjectId, ObjectType, ToCompactString, format_compact,
};

use super::{Description, LinkFinder, Reader, described, link_between, symmetric_link};
use crate::graph::{Lookup, Node};

pub(super) fn finders() -> Vec<Box<dyn LinkFinder>> {
    vec![
        Box::new(InstanceVnic),
        Box::new(VnicVconnector),
        Box::new(VnicVnic),
        Box::new(VserviceVnic),
        Box::new(VconnectorHostPnic),
    ]
}

/// The Neutron network a vNIC is on: its port's network — the port it names (Open vSwitch's
/// `iface-id`), else the port with its MAC (a router's `qr-` interface), else the port of the
/// guest interface a VM plugs into it (a Linux bridge tap: libvirt gives the host's end the
/// guest's MAC with its first byte `fe`, so only the domain's interface list has the port's
/// MAC) — or its DHCP namespace's network.
pub(super) fn vnic_network(vnic: &Node, reader: &mut Reader<'_>) -> Option<CompactString> {
    let named = reader.referenced(vnic, "port", ObjectType::Port);
    let port = named
        .or_else(|| {
            let mac = vnic.object.attributes.mac_address?;
            reader.find(Lookup::PortMac(mac)).into_iter().next()
        })
        .or_else(|| guest_port(vnic, reader));
    if let Some(network) = port.and_then(|p| p.text("network_id")) {
        return Some(ObjectId::global(ObjectType::Network, network).to_compact_string());
    }
    let parent = vnic.object.parent.as_ref()?;
    if parent.object_type != ObjectType::Vservice {
        return None;
    }
    let service = reader.object(&parent.id)?;
    let network = service.text("network_id")?;
    Some(ObjectId::global(ObjectType::Network, network).to_compact_string())
}

/// The port of the guest interface that a VM's domain plugs into `vnic`: by its interface id,
/// else by its MAC.
fn guest_port<'g>(vnic: &Node, reader: &mut Reader<'g>) -> Option<&'g Node> {
    let instance = reader
        .find(Lookup::ReferenceTo {
            key: "interfaces.vnic",
            target: vnic.id().clone(),
        })
        .into_iter()
        .find(|n| n.object_type() == ObjectType::Instance)?;
    let Some(AttrValue::List(interfaces)) = instance.object.attributes.extra.get("interfaces")
    else {
        return None;
    };
    let fields = interfaces.iter().find_map(|interface| match interface {
        AttrValue::Map(fields)
            if fields.get("vnic").and_then(AttrValue::as_str) == Some(vnic.id().as_str()) =>
        {
            Some(fields)
        }
        _ => None,
    })?;
    let text = |key: &str| fields.get(key).and_then(AttrValue::as_str);
    if let Some(port) = text("iface_id")
        .and_then(|id| reader.object(&ObjectId::global(ObjectType::Port, id).to_compact_string()))
    {
        return Some(port);
    }
    let mac = text("mac_address")?.parse().ok()?;
    reader.find(Lookup::PortMac(mac)).into_iter().next()
}

/// A VM's interface: named by the VM (Open vSwitch `vm-uuid`) or listed in the VM's libvirt
/// domain.
#[derive(Debug)]
struct InstanceVnic;

impl LinkFinder for InstanceVnic {
    fn origin(&self) -> ObjectType {
        ObjectType::Vnic
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::Instance, ObjectType::Vnic)]
    }

    fn find(&self, vnic: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        // A port naming the VM is one of its vNICs unless the VM's own interface list (libvirt's
        // view) says otherwise: with hybrid plugging the qvo port carries the VM's id too, but
        // the VM's vNIC is the tap on the qbr bridge.
        let claimed = reader
            .referenced(vnic, "instance", ObjectType::Instance)
            .filter(|instance| lists_or_is_silent(instance, vnic));
        let instance = match claimed {
            Some(instance) => Some(instance),
            None => reader
                .find(Lookup::ReferenceTo {
                    key: "interfaces.vnic",
                    target: vnic.id().clone(),
                })
                .into_iter()
                .find(|n| n.object_type() == ObjectType::Instance),
        };
        let Some(instance) = instance else { return };
        let network = vnic_network(vnic, reader);
        let name = network
            .clone()
            .unwrap_or_else(|| format_compact!("{}-{}", instance.object.name, vnic.object.name));
        out.push(described(
            link_between(instance, vnic),
            Description::named(name).on_network(network),
        ));
    }
}

/// An interface enslaved to a Linux bridge (a tap on `qbr…` or `brq…`).
/// Whether an instance lists `vnic` among its interfaces, or lists no interfaces at all.
fn lists_or_is_silent(instance: &Node, vnic: &Node) -> bool {
    let Some(AttrValue::List(interfaces)) = instance.object.attributes.extra.get("interfaces")
    else {
        return true;
    };
    interfaces.is_empty()
        || interfaces.iter().any(|interface| {
            matches!(interface, AttrValue::Map(fields)
                if fields.get("vnic").and_then(AttrValue::as_str) == Some(vnic.id().as_str()))
        })
}

#[derive(Debug)]
struct VnicVconnector;

impl LinkFinder for VnicVconnector {
    fn origin(&self) -> ObjectType {
        ObjectType::Vnic
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::Vnic, ObjectType::Vconnector)]
    }

    fn find(&self, vnic: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        let Some(bridge) = reader.referenced_endpoint(vnic, "master", ObjectType::Vconnector)
        else {
            return;
        };
        let name = vnic
            .object
            .attributes
            .mac_address
            .map_or_else(|| vnic.object.name.clone(), |mac| mac.to_compact_string());
        let network = vnic_network(vnic, reader);
        out.push(described(
            link_between(vnic, bridge),
            Description::named(name).on_network(network),
        ));
    }
}

/// The two ends of a veth pair (also across namespaces).
#[derive(Debug)]
struct VnicVnic;

impl LinkFinder for VnicVnic {
    fn origin(&self) -> ObjectType {
        ObjectType::Vnic
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::Vnic, ObjectType::Vnic)]
    }

    fn find(&self, vnic: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        let Some(peer) = reader.referenced_endpoint(vnic, "peer", ObjectType::Vnic) else {
            return;
        };
        let link = symmetric_link(vnic, peer);
        let name = format_compact!("{}-{}", link.source, link.target);
        out.push(described(link, Description::named(name)));
    }
}

/// An interface inside a DHCP or router namespace.
#[derive(Debug)]
struct VserviceVnic;

impl LinkFinder for VserviceVnic {
    fn origin(&self) -> ObjectType {
        ObjectType::Vnic
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::Vservice, ObjectType::Vnic)]
    }

    fn find(&self, vnic: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        let Some(parent) = vnic.object.parent.as_ref() else {
            return;
        };
        if parent.object_type != ObjectType::Vservice {
            return;
        }
        let Some(service) = reader.object(&parent.id) else {
            return;
        };
        let network = vnic_network(vnic, reader);
        let name = network
            .clone()
            .unwrap_or_else(|| format_compact!("{}-{}", service.object.name, vnic.object.name));
        out.push(described(
            link_between(service, vnic),
            Description::named(name).on_network(network),
        ));
    }
}

/// A physical NIC (or its VLAN sub-interface) enslaved to a Linux bridge.
#[derive(Debug)]
struct VconnectorHostPnic;

impl LinkFinder for VconnectorHostPnic {
    fn origin(&self) -> ObjectType {
        ObjectType::HostPnic
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::Vconnector, ObjectType::HostPnic)]
    }

    fn find(&self, pnic: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        if let Some(bridge) = reader.referenced_endpoint(pnic, "master", ObjectType::Vconnector) {
            let name = pnic.object.name.clone();
            out.push(described(
                link_between(bridge, pnic),
                Description::named(name),
            ));
        }
    }
}
