//! Tunnel endpoints: what carries them on their host (the NIC or bridge holding the tunnel
//! address, the bridge a VXLAN device is enslaved to) and the tunnels between hosts.

use std::net::IpAddr;

use calipso_proto::{AttrValue, Link, LinkState, LinkType, ObjectType};

use super::{LinkFinder, Reader, link_between, named, symmetric_link};
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
            ObjectType::Vconnector => format!("{}-{}", otep.object.name, carrier.object.name),
            ObjectType::HostPnic => format!("{host}pnic{}", carrier.object.name),
            _ => return None,
        };
        Some(named(link_between(otep, carrier), name, None))
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
            if let Some(id) = otep.reference(key) {
                carriers.extend(reader.object(&id));
            }
        }
        if let Some(ip) = local_ip(otep) {
            carriers.extend(
                reader
                    .find(Lookup::Address(ip))
                    .into_iter()
                    .filter(|n| n.object.host == otep.object.host),
            );
        }
        out.extend(carriers.into_iter().filter_map(|c| Self::link(otep, c)));
    }
}

/// The tunnel between two hosts' endpoints: one lists the other's address as a remote
/// endpoint. Both ends derive it, so it exists as soon as either is configured; it is down
/// unless both are (a half-configured tunnel carries nothing back).
#[derive(Debug)]
struct OtepOtep;

impl OtepOtep {
    fn lists(otep: &Node, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| {
            otep.texts("remote_endpoints")
                .into_iter()
                .any(|r| r.parse::<IpAddr>().ok() == Some(ip))
        })
    }

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

    fn find(&self, otep: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>) {
        let mut partners: Vec<&Node> = Vec::new();
        for remote in otep.texts("remote_endpoints") {
            if let Ok(ip) = remote.parse::<IpAddr>() {
                partners.extend(reader.find(Lookup::Address(ip)));
            }
        }
        if let Some(ip) = local_ip(otep) {
            partners.extend(reader.find(Lookup::RemoteEndpoint(ip)));
        }
        partners.sort_by(|a, b| a.id().cmp(b.id()));
        partners.dedup_by(|a, b| a.id() == b.id());
        for partner in partners {
            if partner.object_type() != ObjectType::Otep
                || partner.id() == otep.id()
                || partner.object.host == otep.object.host
                || !Self::same_segment(otep, partner)
            {
                continue;
            }
            let mut link = symmetric_link(otep, partner);
            let (a, b) = if link.source == *otep.id() {
                (otep, partner)
            } else {
                (partner, otep)
            };
            let both = Self::lists(a, local_ip(b)) && Self::lists(b, local_ip(a));
            if !both {
                link.state = LinkState::Down;
            }
            link.attributes
                .insert("bidirectional".into(), AttrValue::Bool(both));
            if let Some(kind) = otep.text("overlay_type") {
                link.attributes
                    .insert("overlay_type".into(), AttrValue::Str(kind.to_owned()));
            }
            let hosts = |n: &Node| n.object.host.clone().unwrap_or_default();
            let name = format!("{}-{}", hosts(a), hosts(b));
            out.push(named(link, name, None));
        }
    }
}
