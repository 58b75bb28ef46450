//! Physical NICs to the Neutron networks whose traffic they carry.

use calipso_proto::{
    AttrValue, Link, LinkType, ObjectId, ObjectType, ToCompactString, format_compact,
};

use super::{Description, LinkFinder, Reader, described, link_between};
use crate::graph::{Lookup, Node};

pub(super) fn finders() -> Vec<Box<dyn LinkFinder>> {
    vec![Box::new(HostPnicNetwork)]
}

/// A NIC carries the networks with ports bound to its host when it carries tenant traffic:
/// it is a vswitch uplink (VLAN and flat networks), or it holds or underlies a tunnel
/// endpoint (overlay networks). The original linked every NIC of the host; VLAN networks only
/// to uplinks, as there.
#[derive(Debug)]
struct HostPnicNetwork;

impl LinkFinder for HostPnicNetwork {
    fn origin(&self) -> ObjectType {
        ObjectType::HostPnic
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::HostPnic, ObjectType::Network)]
    }

    fn find(&self, pnic: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        let Some(host) = pnic.object.host.clone() else {
            return;
        };
        let uplink = !reader
            .find(Lookup::Uplink {
                host: host.clone(),
                name: pnic.object.name.clone(),
            })
            .is_empty();
        let mut tunnel = !reader
            .find(Lookup::ReferenceTo {
                key: "underlay",
                target: pnic.id().clone(),
            })
            .is_empty();
        for ip in pnic.addresses() {
            tunnel |= reader.find(Lookup::Address(ip)).iter().any(|n| {
                n.object_type() == ObjectType::Otep && n.object.host.as_ref() == Some(&host)
            });
        }
        if !uplink && !tunnel {
            return;
        }
        let mut networks: Vec<ObjectId> = reader
            .find(Lookup::BoundTo(host))
            .into_iter()
            .filter_map(|port| port.text("network_id"))
            .map(|id| ObjectId::global(ObjectType::Network, id))
            .collect();
        networks.sort();
        networks.dedup();
        for id in networks {
            let Some(network) = reader.object(&id) else {
                continue;
            };
            let kind = network.text("provider:network_type").unwrap_or_default();
            let carried = match kind {
                "vxlan" | "gre" | "geneve" => tunnel,
                _ => uplink,
            };
            if !carried {
                continue;
            }
            let segment = match network
                .object
                .attributes
                .extra
                .get("provider:segmentation_id")
            {
                Some(AttrValue::Int(id)) => id.to_compact_string(),
                Some(AttrValue::Str(id)) => id.clone(),
                _ => "None".into(),
            };
            let description = Description::named(format_compact!("Segment-{segment}"))
                .with_fact("source_label", format_compact!("port-{}", pnic.object.name))
                .on_network(Some(id.to_compact_string()));
            out.push(described(link_between(pnic, network), description));
        }
    }
}
