//! Open vSwitch: ports plugged into it, Linux bridges joined to it by a veth pair (hybrid
//! plugging), its uplinks and its tunnel endpoints.

use calipso_proto::{
    AttrValue, CompactString, Link, LinkType, ObjectType, ToCompactString, format_compact,
};

use super::interfaces::vnic_network;
use super::{Description, LinkFinder, Reader, described, link_between};
use crate::graph::{Lookup, Node};

pub(super) fn finders() -> Vec<Box<dyn LinkFinder>> {
    vec![
        Box::new(VnicVedge),
        Box::new(VconnectorVedge),
        Box::new(VedgeHostPnic),
        Box::new(VedgeOtep),
    ]
}

fn int_text(node: &Node, key: &str) -> Option<CompactString> {
    node.object
        .attributes
        .extra
        .get(key)
        .and_then(AttrValue::as_i64)
        .map(|v| v.to_compact_string())
}

/// `-<tag>` for a port with a local VLAN tag, as the original suffixed link names.
fn tag_suffix(port: &Node) -> CompactString {
    int_text(port, "tag").map_or_else(CompactString::default, |tag| format_compact!("-{tag}"))
}

/// An interface that is a port of the vswitch (a tap, a `qvo…` end, a `qr-…` port).
#[derive(Debug)]
struct VnicVedge;

impl LinkFinder for VnicVedge {
    fn origin(&self) -> ObjectType {
        ObjectType::Vnic
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::Vnic, ObjectType::Vedge)]
    }

    fn find(&self, vnic: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        let Some(vedge) = reader.referenced_endpoint(vnic, "vedge", ObjectType::Vedge) else {
            return;
        };
        let name = format_compact!(
            "{}-{}{}",
            vnic.object.name,
            vedge.object.name,
            tag_suffix(vnic)
        );
        let source_label = vnic
            .object
            .attributes
            .mac_address
            .map_or_else(CompactString::default, |mac| mac.to_compact_string());
        let target_label = int_text(vnic, "ofport").unwrap_or_default();
        let network = vnic_network(vnic, reader);
        let description = Description::named(name)
            .labelled(source_label, target_label)
            .on_network(network);
        out.push(described(link_between(vnic, vedge), description));
    }
}

/// A Linux bridge joined to the vswitch by a veth pair: `qbr…` holds `qvb…`, whose peer `qvo…`
/// is a vswitch port. Produced by the bridge-side end of the pair.
#[derive(Debug)]
struct VconnectorVedge;

impl LinkFinder for VconnectorVedge {
    fn origin(&self) -> ObjectType {
        ObjectType::Vnic
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::Vconnector, ObjectType::Vedge)]
    }

    fn find(&self, bridge_end: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        let Some(bridge) = reader.referenced_endpoint(bridge_end, "master", ObjectType::Vconnector)
        else {
            return;
        };
        let Some(switch_end) = reader.referenced(bridge_end, "peer", ObjectType::Vnic) else {
            return;
        };
        let Some(vedge) = reader.referenced_endpoint(switch_end, "vedge", ObjectType::Vedge) else {
            return;
        };
        let port = int_text(switch_end, "ofport").unwrap_or_else(|| "unknown".into());
        let name = format_compact!("port-{port}{}", tag_suffix(switch_end));
        let mut description = Description::named(name).labelled(
            bridge_end.object.name.clone(),
            switch_end.object.name.clone(),
        );
        if let Some(mac) = bridge_end.object.attributes.mac_address {
            description = description.with_fact("mac_address", mac.to_compact_string());
        }
        let description = description.on_network(vnic_network(switch_end, reader));
        let mut link = described(link_between(bridge, vedge), description);
        // The state of the path runs through both veth ends.
        link.state = link.state.and(bridge_end.state()).and(switch_end.state());
        out.push(link);
    }
}

/// The physical NICs the vswitch uses as uplinks (system ports of the provider bridges).
#[derive(Debug)]
struct VedgeHostPnic;

impl LinkFinder for VedgeHostPnic {
    fn origin(&self) -> ObjectType {
        ObjectType::Vedge
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::Vedge, ObjectType::HostPnic)]
    }

    fn find(&self, vedge: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        let Some(host) = vedge.object.host.clone() else {
            return;
        };
        for uplink in vedge.texts("uplinks") {
            let lookup = Lookup::Name {
                host: host.clone(),
                name: uplink.into(),
            };
            for pnic in reader.find_endpoints(lookup) {
                if pnic.object_type() == ObjectType::HostPnic {
                    let name = format_compact!("Port-{uplink}");
                    out.push(described(
                        link_between(vedge, pnic),
                        Description::named(name),
                    ));
                }
            }
        }
    }
}

/// A tunnel endpoint of the vswitch.
#[derive(Debug)]
struct VedgeOtep;

impl LinkFinder for VedgeOtep {
    fn origin(&self) -> ObjectType {
        ObjectType::Otep
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::Vedge, ObjectType::Otep)]
    }

    fn find(&self, otep: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        if let Some(vedge) = reader.referenced_endpoint(otep, "vedge", ObjectType::Vedge) {
            let name = format_compact!("{}-otep", vedge.object.name);
            out.push(described(
                link_between(vedge, otep),
                Description::named(name),
            ));
        }
    }
}
