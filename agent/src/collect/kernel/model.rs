//! Kernel facts → Calipso objects, in the original's vocabulary:
//!
//! | kernel | object |
//! |---|---|
//! | device with a sysfs `device` link, in the host namespace | `host_pnic` |
//! | bond; VLAN on a `host_pnic` | `host_pnic` (bonds carry `EtherChannel`, their members and `/proc/net/bonding`) |
//! | Linux bridge (including the hybrid firewall's `qbr*`) | `vconnector` |
//! | vxlan device | `otep` (the LXB tunnel endpoint: VNI, local IP, UDP port, remote endpoints from the FDB) |
//! | every other interface but loopback: tap, tun, veth, macvlan, … | `vnic` |
//! | named network namespace (`qdhcp-*`, `qrouter-*`, …) | `vservice`, parent of the vNICs inside it |
//!
//! Relations the link finders use are attributes holding object ids: `master` (the bridge or
//! bond an interface is enslaved to), `peer` (the other end of a veth, across namespaces),
//! `lower` (a VLAN's or macvlan's device), `underlay` (a vxlan's device).
//!
//! Pure: the same views always give the same objects.

use std::collections::{BTreeMap, BTreeSet};

use calipso_proto::{AttrValue, Object, ObjectId, ObjectType};

use super::facts::LinkFacts;
use super::netns::NsName;
use super::nic::NicFacts;
use super::rtnl::NsView;
use crate::collect::Scope;

/// One namespace as the model needs it.
#[derive(Debug, Default)]
pub struct NsModel<'a> {
    pub view: Option<&'a NsView>,
    /// `IFLA_LINK_NETNSID` values this namespace uses, resolved to namespaces.
    pub nsids: Option<&'a BTreeMap<i32, NsName>>,
}

/// Facts read outside netlink, for the host namespace's physical NICs and bonds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HostExtras {
    /// Physical NICs by name, with their ethtool facts.
    pub nics: BTreeMap<String, NicFacts>,
    /// `/proc/net/bonding/<bond>`, parsed, by bond name.
    pub bonding: BTreeMap<String, BTreeMap<String, AttrValue>>,
}

/// The kind of vservice a namespace name says it is, as Neutron names them.
fn service_type(name: &str) -> (&'static str, Option<(&'static str, &str)>) {
    for (prefix, kind, key) in [
        ("qdhcp-", "dhcp", "network_id"),
        ("qrouter-", "router", "router_id"),
        ("snat-", "snat", "router_id"),
        ("fip-", "floating_ip", "network_id"),
        ("qlbaas-", "load_balancer", "load_balancer_id"),
    ] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return (kind, Some((key, rest)));
        }
    }
    ("other", None)
}

/// Builds objects from the views, one at a time or all at once.
pub struct Builder<'a> {
    scope: &'a Scope,
    namespaces: &'a BTreeMap<NsName, NsModel<'a>>,
    extras: &'a HostExtras,
}

/// An interface, by namespace and index.
pub type LinkKey = (NsName, u32);

impl<'a> Builder<'a> {
    pub fn new(
        scope: &'a Scope,
        namespaces: &'a BTreeMap<NsName, NsModel<'a>>,
        extras: &'a HostExtras,
    ) -> Self {
        Builder {
            scope,
            namespaces,
            extras,
        }
    }

    /// The object of one interface, if it exists and is reported (loopback is not).
    pub fn interface_at(&self, ns: &NsName, ifindex: u32) -> Option<Object> {
        let view = self.namespaces.get(ns)?.view?;
        self.interface(ns, view, view.links.get(&ifindex)?)
    }

    /// The other interfaces whose identity an interface's object embeds (its master, peer,
    /// lower and underlay devices): when one of those changes, this object must be rebuilt.
    pub fn references(&self, ns: &NsName, facts: &LinkFacts) -> Vec<LinkKey> {
        let mut keys = Vec::new();
        if let Some(master) = facts.master {
            keys.push((ns.clone(), master));
        }
        if let Some(link) = facts.link {
            match facts.link_netnsid {
                None => keys.push((ns.clone(), link)),
                Some(nsid) => {
                    if let Some(peer_ns) = self.namespaces.get(ns).and_then(|m| m.nsids?.get(&nsid))
                    {
                        keys.push((peer_ns.clone(), link));
                    }
                }
            }
        }
        if let Some(underlay) = facts.vxlan.as_ref().and_then(|v| v.underlay) {
            keys.push((ns.clone(), underlay));
        }
        if let Some(active) = facts.bond.as_ref().and_then(|b| b.active_port) {
            keys.push((ns.clone(), active));
        }
        keys
    }

    fn facts(&self, ns: &NsName, ifindex: u32) -> Option<&LinkFacts> {
        self.namespaces.get(ns)?.view?.links.get(&ifindex)
    }

    fn object_type(&self, ns: &NsName, facts: &LinkFacts) -> Option<ObjectType> {
        if facts.loopback {
            return None;
        }
        if ns.is_none() && self.extras.nics.contains_key(&facts.name) {
            return Some(ObjectType::HostPnic);
        }
        Some(match facts.kind.as_deref() {
            Some("bond") => ObjectType::HostPnic,
            Some("vlan")
                if facts
                    .link
                    .and_then(|lower| self.facts(ns, lower))
                    .is_some_and(|lower| {
                        self.object_type(ns, lower) == Some(ObjectType::HostPnic)
                    }) =>
            {
                ObjectType::HostPnic
            }
            Some("bridge") => ObjectType::Vconnector,
            Some("vxlan") => ObjectType::Otep,
            _ => ObjectType::Vnic,
        })
    }

    fn id(&self, ns: &NsName, ifindex: u32) -> Option<ObjectId> {
        let facts = self.facts(ns, ifindex)?;
        let object_type = self.object_type(ns, facts)?;
        Some(ObjectId::host_local(
            object_type,
            &self.scope.host,
            &ObjectId::interface_key(ns.as_deref(), &facts.name),
        ))
    }

    fn parent(&self, ns: &NsName) -> (ObjectId, ObjectType) {
        match ns {
            None => (ObjectId::host(&self.scope.host), ObjectType::Host),
            Some(name) => (
                ObjectId::host_local(ObjectType::Vservice, &self.scope.host, name),
                ObjectType::Vservice,
            ),
        }
    }

    pub fn vservice(&self, name: &str) -> Object {
        let (kind, key) = service_type(name);
        let mut object = Object::new(
            ObjectId::host_local(ObjectType::Vservice, &self.scope.host, name),
            ObjectType::Vservice,
            name,
            &self.scope.environment,
        )
        .with_host(&self.scope.host)
        .with_parent(ObjectId::host(&self.scope.host), ObjectType::Host)
        .with_extra("local_service_id", name)
        .with_extra("service_type", kind);
        if let Some((key, value)) = key {
            object = object.with_extra(key, value);
        }
        object
    }

    fn interface(&self, ns: &NsName, view: &NsView, facts: &LinkFacts) -> Option<Object> {
        let object_type = self.object_type(ns, facts)?;
        let id = self.id(ns, facts.ifindex)?;
        let (parent, parent_type) = self.parent(ns);
        let mut object = Object::new(
            id,
            object_type,
            facts.name.as_str(),
            self.scope.environment.as_str(),
        )
        .with_host(self.scope.host.as_str())
        .with_parent(parent, parent_type)
        .with_extra("ifindex", facts.ifindex)
        .with_extra("admin_up", facts.admin_up)
        .with_extra("operstate", facts.oper_state.as_str());
        let attrs = &mut object.attributes;
        attrs.mac_address = facts.mac;
        attrs.mtu = facts.mtu;
        attrs.link_state = Some(facts.link_state());
        attrs.addresses = view
            .addrs
            .get(&facts.ifindex)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        let extra = &mut attrs.extra;
        let mut set = |key: &str, value: AttrValue| {
            extra.insert(key, value);
        };
        let kind = match (facts.kind.as_deref(), object_type) {
            (Some(kind), _) => kind,
            (None, ObjectType::HostPnic) => "physical",
            (None, _) => "device",
        };
        set("kind", kind.into());
        if let Some(carrier) = facts.carrier {
            set("carrier", carrier.into());
        }
        if let Some(name) = ns {
            set("netns", name.as_str().into());
            if object_type == ObjectType::Vnic {
                set("vnic_type", "vservice_vnic".into());
            }
        }
        if let Some(mode) = facts.tun_mode {
            set("tun_mode", mode.into());
        }
        let mut relate = |key: &str, target: Option<ObjectId>| {
            if let Some(target) = target {
                set(key, target.as_str().into());
            }
        };
        relate("master", facts.master.and_then(|m| self.id(ns, m)));
        match facts.kind.as_deref() {
            Some("veth") => {
                let peer_ns = match facts.link_netnsid {
                    Some(nsid) => self
                        .namespaces
                        .get(ns)
                        .and_then(|m| m.nsids?.get(&nsid))
                        .cloned(),
                    None => Some(ns.clone()),
                };
                relate(
                    "peer",
                    peer_ns
                        .zip(facts.link)
                        .and_then(|(peer_ns, peer)| self.id(&peer_ns, peer)),
                );
            }
            Some("vlan" | "macvlan" | "macvtap" | "ipvlan") if facts.link_netnsid.is_none() => {
                relate("lower", facts.link.and_then(|lower| self.id(ns, lower)));
            }
            _ => {}
        }
        if let Some(vxlan) = &facts.vxlan {
            relate("underlay", vxlan.underlay.and_then(|u| self.id(ns, u)));
        }
        self.add_kind_facts(ns, view, facts, &mut object);
        Some(object)
    }

    fn add_kind_facts(&self, ns: &NsName, view: &NsView, facts: &LinkFacts, object: &mut Object) {
        let extra = &mut object.attributes.extra;
        let mut set = |key: &str, value: AttrValue| {
            extra.insert(key, value);
        };
        let members = || -> Vec<String> {
            let mut names: Vec<String> = view
                .links
                .values()
                .filter(|l| l.master == Some(facts.ifindex))
                .map(|l| l.name.clone())
                .collect();
            names.sort();
            names
        };
        if let Some(vxlan) = &facts.vxlan {
            set("overlay_type", "vxlan".into());
            if let Some(vni) = vxlan.vni {
                set("vni", vni.into());
            }
            if let Some(local) = vxlan.local {
                set("ip_address", local.to_string().into());
            }
            if let Some(port) = vxlan.dst_port {
                set("udp_port", u32::from(port).into());
            }
            if let Some(learning) = vxlan.learning {
                set("learning", learning.into());
            }
            let mut remotes: BTreeSet<String> = view
                .fdb
                .get(&facts.ifindex)
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect();
            if let Some(remote) = vxlan.remote {
                if remote.is_multicast() {
                    set("group", remote.to_string().into());
                } else {
                    remotes.insert(remote.to_string());
                }
            }
            set(
                "remote_endpoints",
                remotes.into_iter().collect::<Vec<_>>().into(),
            );
        }
        if let Some(bridge) = &facts.bridge {
            set("connector_type", "bridge".into());
            if let Some(id) = &bridge.bridge_id {
                set("bridge_id", id.as_str().into());
            }
            if let Some(stp) = bridge.stp_enabled {
                set("stp_enabled", stp.into());
            }
            set("interfaces_names", members().into());
        }
        if let Some(bond) = &facts.bond {
            set("EtherChannel", true.into());
            if let Some(mode) = &bond.mode {
                set("bond_mode", mode.as_str().into());
            }
            if let Some(ms) = bond.miimon_ms {
                set("miimon_ms", ms.into());
            }
            if let Some(active) = bond.active_port.and_then(|a| view.links.get(&a)) {
                set("active_slave", active.name.as_str().into());
            }
            set("members", members().into());
            if let Some(report) = self
                .extras
                .bonding
                .get(&facts.name)
                .filter(|_| ns.is_none())
            {
                set("bonding", AttrValue::Map(report.clone().into()));
            }
        }
        if let Some(port) = &facts.bond_port {
            if let Some(master) = facts.master.and_then(|m| view.links.get(&m)) {
                set("EtherChannel Master", master.name.as_str().into());
            }
            if let Some(up) = port.mii_up {
                set("bond_mii_status", if up { "up" } else { "down" }.into());
            }
            if let Some(active) = port.active {
                set("bond_port_active", active.into());
            }
            if let Some(mac) = port.perm_mac {
                set("perm_mac_address", mac.to_string().into());
            }
            if let Some(n) = port.link_failures {
                set("link_failure_count", n.into());
            }
        }
        if let Some(vlan) = &facts.vlan {
            if let Some(id) = vlan.id {
                set("vlan_id", u32::from(id).into());
            }
            if let Some(protocol) = vlan.protocol {
                set("vlan_protocol", protocol.into());
            }
        }
        let nic = if ns.is_none() {
            self.extras.nics.get(&facts.name)
        } else {
            None
        };
        if let Some(nic) = nic {
            if let Some(carrier) = facts.carrier {
                set("Link detected", carrier.into());
            }
            let texts = [
                ("driver", &nic.driver),
                ("bus_info", &nic.bus_info),
                ("duplex", &nic.duplex),
            ];
            for (key, value) in texts {
                if let Some(value) = value {
                    set(key, value.as_str().into());
                }
            }
            if let Some(speed) = nic.speed_mbps {
                set("speed_mbps", speed.into());
            }
            if let Some(autoneg) = nic.autoneg {
                set("autoneg", autoneg.into());
            }
            if !nic.link_modes.is_empty() {
                set("link_modes", nic.link_modes.clone().into());
            }
        }
    }
}

/// Every object the namespaces' views describe, sorted by id.
pub fn build(
    scope: &Scope,
    namespaces: &BTreeMap<NsName, NsModel<'_>>,
    extras: &HostExtras,
) -> Vec<Object> {
    let builder = Builder {
        scope,
        namespaces,
        extras,
    };
    let mut objects = Vec::new();
    for (ns, model) in namespaces {
        if let Some(name) = ns {
            objects.push(builder.vservice(name));
        }
        let Some(view) = model.view else { continue };
        objects.extend(
            view.links
                .values()
                .filter_map(|facts| builder.interface(ns, view, facts)),
        );
    }
    objects.sort_by(|a, b| a.id.cmp(&b.id));
    objects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::kernel::facts::{BondFacts, BridgeFacts, OperState, VxlanFacts};
    use calipso_proto::LinkState;

    fn link(ifindex: u32, name: &str, kind: Option<&str>) -> LinkFacts {
        LinkFacts {
            ifindex,
            name: name.into(),
            kind: kind.map(str::to_owned),
            admin_up: true,
            oper_state: OperState::Up,
            mtu: Some(1500),
            ..LinkFacts::default()
        }
    }

    fn scope() -> Scope {
        Scope {
            host: "h1".into(),
            environment: "lab".into(),
        }
    }

    fn extra<'a>(objects: &'a [Object], id: &str, key: &str) -> Option<&'a AttrValue> {
        objects
            .iter()
            .find(|o| o.id.as_str() == id)?
            .attributes
            .extra
            .get(key)
    }

    #[test]
    fn host_namespace_types_and_relations() {
        let mut host = NsView::default();
        host.links.insert(
            1,
            LinkFacts {
                loopback: true,
                ..link(1, "lo", None)
            },
        );
        host.links.insert(2, link(2, "eth0", None));
        host.links.insert(
            3,
            LinkFacts {
                bridge: Some(BridgeFacts {
                    bridge_id: Some("8000.aa".into()),
                    stp_enabled: Some(false),
                }),
                ..link(3, "brq1", Some("bridge"))
            },
        );
        host.links.insert(
            4,
            LinkFacts {
                master: Some(3),
                vxlan: Some(VxlanFacts {
                    vni: Some(42),
                    local: Some("10.0.0.1".parse().expect("ip")),
                    dst_port: Some(4789),
                    underlay: Some(2),
                    ..VxlanFacts::default()
                }),
                ..link(4, "vxlan-42", Some("vxlan"))
            },
        );
        host.links.insert(
            5,
            LinkFacts {
                master: Some(3),
                tun_mode: Some("tap"),
                ..link(5, "tap1", Some("tun"))
            },
        );
        host.links.insert(
            6,
            LinkFacts {
                link: Some(2),
                ..link(6, "eth0.100", Some("vlan"))
            },
        );
        host.links.insert(
            7,
            LinkFacts {
                bond: Some(BondFacts {
                    mode: Some("active-backup".into()),
                    ..BondFacts::default()
                }),
                ..link(7, "bond0", Some("bond"))
            },
        );
        host.links.insert(
            8,
            LinkFacts {
                link: Some(2),
                link_netnsid: Some(0),
                ..link(8, "veth0", Some("veth"))
            },
        );
        host.fdb
            .insert(4, ["192.0.2.9".parse().expect("ip")].into());
        let mut ns = NsView::default();
        ns.links.insert(
            2,
            LinkFacts {
                link: Some(8),
                link_netnsid: Some(0),
                ..link(2, "tap-ns", Some("veth"))
            },
        );
        ns.addrs
            .insert(2, ["10.1.0.2/24".parse().expect("prefix")].into());

        let host_nsids: BTreeMap<i32, NsName> = [(0, Some("qdhcp-n1".to_owned()))].into();
        let ns_nsids: BTreeMap<i32, NsName> = [(0, None)].into();
        let mut namespaces = BTreeMap::new();
        namespaces.insert(
            None,
            NsModel {
                view: Some(&host),
                nsids: Some(&host_nsids),
            },
        );
        namespaces.insert(
            Some("qdhcp-n1".to_owned()),
            NsModel {
                view: Some(&ns),
                nsids: Some(&ns_nsids),
            },
        );
        let extras = HostExtras {
            nics: [(
                "eth0".to_owned(),
                NicFacts {
                    driver: Some("virtio_net".into()),
                    ..NicFacts::default()
                },
            )]
            .into(),
            ..HostExtras::default()
        };
        let objects = build(&scope(), &namespaces, &extras);

        let ids: Vec<&str> = objects.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "host_pnic:h1:bond0",
                "host_pnic:h1:eth0",
                "host_pnic:h1:eth0.100",
                "otep:h1:vxlan-42",
                "vconnector:h1:brq1",
                "vnic:h1:qdhcp-n1/tap-ns",
                "vnic:h1:tap1",
                "vnic:h1:veth0",
                "vservice:h1:qdhcp-n1",
            ]
        );
        assert_eq!(
            extra(&objects, "vnic:h1:tap1", "master"),
            Some(&"vconnector:h1:brq1".into())
        );
        assert_eq!(
            extra(&objects, "otep:h1:vxlan-42", "underlay"),
            Some(&"host_pnic:h1:eth0".into())
        );
        assert_eq!(
            extra(&objects, "otep:h1:vxlan-42", "remote_endpoints"),
            Some(&vec!["192.0.2.9"].into())
        );
        assert_eq!(
            extra(&objects, "vconnector:h1:brq1", "interfaces_names"),
            Some(&vec!["tap1", "vxlan-42"].into())
        );
        assert_eq!(
            extra(&objects, "vnic:h1:veth0", "peer"),
            Some(&"vnic:h1:qdhcp-n1/tap-ns".into())
        );
        assert_eq!(
            extra(&objects, "vnic:h1:qdhcp-n1/tap-ns", "peer"),
            Some(&"vnic:h1:veth0".into())
        );
        assert_eq!(
            extra(&objects, "vnic:h1:qdhcp-n1/tap-ns", "vnic_type"),
            Some(&"vservice_vnic".into())
        );
        assert_eq!(
            extra(&objects, "host_pnic:h1:eth0.100", "lower"),
            Some(&"host_pnic:h1:eth0".into())
        );
        assert_eq!(
            extra(&objects, "host_pnic:h1:eth0", "driver"),
            Some(&"virtio_net".into())
        );
        assert_eq!(
            extra(&objects, "vservice:h1:qdhcp-n1", "network_id"),
            Some(&"n1".into())
        );
        let tap_ns = objects
            .iter()
            .find(|o| o.id.as_str() == "vnic:h1:qdhcp-n1/tap-ns")
            .expect("present");
        assert_eq!(
            tap_ns.parent.as_ref().map(|p| p.id.as_str()),
            Some("vservice:h1:qdhcp-n1")
        );
        assert_eq!(tap_ns.attributes.addresses.len(), 1);
        assert_eq!(tap_ns.attributes.link_state, Some(LinkState::Up));
    }

    #[test]
    fn an_unresolved_peer_namespace_leaves_the_relation_out() {
        let mut host = NsView::default();
        host.links.insert(
            8,
            LinkFacts {
                link: Some(2),
                link_netnsid: Some(5),
                ..link(8, "veth0", Some("veth"))
            },
        );
        let namespaces = [(
            None,
            NsModel {
                view: Some(&host),
                nsids: None,
            },
        )]
        .into();
        let objects = build(&scope(), &namespaces, &HostExtras::default());
        assert_eq!(extra(&objects, "vnic:h1:veth0", "peer"), None);
    }
}
