//! Tunnel endpoints: what carries them on their host (the NIC or bridge holding the tunnel
//! address, the bridge a VXLAN device is enslaved to) and the tunnels between hosts.

use std::net::IpAddr;

use calipso_proto::{AttrValue, Link, LinkType, ObjectType, format_compact};

use super::{Description, LinkFinder, Reader, described, link_between, symmetric_link};
use crate::graph::{Lookup, Node};

pub(super) fn finders() -> Vec<Box<dyn LinkFinder>> {
    vec![Box::new(OtepCarrier), Box::new(OtepOtep)]
}

fn local_ip(otep: &Node) -> Option<IpAddr> {
    otep.text("ip_address").and_then(|ip| ip.parse().ok())
}

/// The NIC or bridge an endpoint's traffic leaves by: the VXLAN device's underlay device or
/// bridge, or the interface on the same host holding the tunnel address.
#[derive(Debug)]
struct OtepCarrier;

impl OtepCarrier {
    fn link(otep: &Node, carrier: &Node) -> Option<Link> {
        let host = otep.object.host.as_deref().unwrap_or_default();
        let name = match carrier.object_type() {
            ObjectType::Vconnector => {
                format_compact!("{}-{}", otep.object.name, carrier.object.name)
            }
            ObjectType::HostPnic => format_compact!("{host}pnic{}", carrier.object.name),
            _ => return None,
        };
        Some(described(
            link_between(otep, carrier),
            Description::named(name),
        ))
    }
}

impl LinkFinder for OtepCarrier {
    fn origin(&self) -> ObjectType {
        ObjectType::Otep
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![
            LinkType::new(ObjectType::Otep, ObjectType::Vconnector),
            LinkType::new(ObjectType::Otep, ObjectType::HostPnic),
        ]
    }

    fn find(&self, otep: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        let mut carriers = Vec::new();
        for key in ["master", "underlay"] {
            if let Some(id) = otep.text(key) {
                carriers.extend(reader.endpoint(id));
            }
        }
        if let Some(ip) = local_ip(otep) {
            carriers.extend(
                reader
                    .find_endpoints(Lookup::Address(ip))
                    .into_iter()
                    .filter(|n| n.object.host == otep.object.host),
            );
        }
        out.extend(carriers.into_iter().filter_map(|c| Self::link(otep, c)));
    }
}

/// The tunnel between two hosts' endpoints: each end derives it for every remote endpoint it
/// lists, so a tunnel both ends configure has two producers, and one only one end configures
/// is marked one-sided and down. A partner is read only as an endpoint (its state; its VNI is
/// fixed for the life of a VXLAN device), so a change of one endpoint's remote list re-derives
/// that endpoint alone, not its dozens of peers.
#[derive(Debug)]
struct OtepOtep;

impl OtepOtep {
    /// Two endpoints tunnel to each other only on the same VXLAN network, when both say.
    fn same_segment(a: &Node, b: &Node) -> bool {
        let vni = |n: &Node| {
            n.object
                .attributes
                .extra
                .get("vni")
                .and_then(AttrValue::as_i64)
        };
        match (vni(a), vni(b)) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
    }
}

impl LinkFinder for OtepOtep {
    fn origin(&self) -> ObjectType {
        ObjectType::Otep
    }

    fn produces(&self) -> Vec<LinkType> {
        vec![LinkType::new(ObjectType::Otep, ObjectType::Otep)]
    }

    fn needs_both_ends(&self) -> bool {
        true
    }

    fn find(&self, otep: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        for remote in otep.texts("remote_endpoints") {
            let Ok(ip) = remote.parse::<IpAddr>() else {
                continue;
            };
            for partner in reader.find_endpoints(Lookup::Address(ip)) {
                if partner.object_type() != ObjectType::Otep
                    || partner.id() == otep.id()
                    || partner.object.host == otep.object.host
                    || !Self::same_segment(otep, partner)
                {
                    continue;
                }
                let link = symmetric_link(otep, partner);
                let hosts =
                    |id: &calipso_proto::ObjectId| id.owning_host().unwrap_or_default().to_owned();
                let name = format_compact!("{}-{}", hosts(&link.source), hosts(&link.target));
                out.push(described(link, Description::named(name)));
            }
        }
    }
}
