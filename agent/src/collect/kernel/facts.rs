//! What the kernel says about an interface, an address or a bridge FDB entry, read out of
//! rtnetlink messages. Pure functions of the message, so that every mapping (including bonds
//! and VLANs, which not every test kernel can create) is unit-tested from built messages.

use std::net::IpAddr;

use calipso_proto::{IpPrefix, LinkState, MacAddress};
use netlink_packet_core::Nla;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    BondMode, BridgeStpState, InfoBond, InfoBondPort, InfoBridge, InfoData, InfoKind, InfoPortData,
    InfoVlan, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State, VlanProtocol,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};

/// One network interface as rtnetlink reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkFacts {
    pub ifindex: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, `vxlan`, `tun`, `bond`, `vlan` …); `None` for devices
    /// without link info (physical NICs, loopback).
    pub kind: Option<String>,
    pub mac: Option<MacAddress>,
    pub mtu: Option<u32>,
    pub admin_up: bool,
    pub loopback: bool,
    pub carrier: Option<bool>,
    pub oper_state: OperState,
    /// The bridge or bond this interface is enslaved to (`IFLA_MASTER`).
    pub master: Option<u32>,
    /// The peer (veth) or lower device (vlan, macvlan) (`IFLA_LINK`).
    pub link: Option<u32>,
    /// The namespace `link` lives in, as this namespace numbers it (`IFLA_LINK_NETNSID`).
    pub link_netnsid: Option<i32>,
    pub vxlan: Option<VxlanFacts>,
    pub bridge: Option<BridgeFacts>,
    pub bond: Option<BondFacts>,
    pub bond_port: Option<BondPortFacts>,
    pub vlan: Option<VlanFacts>,
    /// `tap` or `tun` for tun devices.
    pub tun_mode: Option<&'static str>,
}

/// RFC 2863 operational state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OperState {
    Up,
    Down,
    LowerLayerDown,
    Dormant,
    Testing,
    NotPresent,
    #[default]
    Unknown,
}

impl OperState {
    pub fn as_str(self) -> &'static str {
        match self {
            OperState::Up => "up",
            OperState::Down => "down",
            OperState::LowerLayerDown => "lowerlayerdown",
            OperState::Dormant => "dormant",
            OperState::Testing => "testing",
            OperState::NotPresent => "notpresent",
            OperState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VxlanFacts {
    pub vni: Option<u32>,
    pub local: Option<IpAddr>,
    /// The unicast remote or multicast group configured on the device.
    pub remote: Option<IpAddr>,
    pub dst_port: Option<u16>,
    /// The underlying device's ifindex (`dev` in `ip link add … type vxlan`).
    pub underlay: Option<u32>,
    pub learning: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BridgeFacts {
    /// As `brctl show` prints it: `8000.aabbccddeeff`.
    pub bridge_id: Option<String>,
    pub stp_enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BondFacts {
    /// As `/proc/net/bonding` and `ip -d link` name it (`802.3ad`, `active-backup` …).
    pub mode: Option<String>,
    pub miimon_ms: Option<u32>,
    pub active_port: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BondPortFacts {
    pub mii_up: Option<bool>,
    pub active: Option<bool>,
    pub perm_mac: Option<MacAddress>,
    pub link_failures: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VlanFacts {
    pub id: Option<u16>,
    pub protocol: Option<&'static str>,
}

impl LinkFacts {
    /// The state the model reports: down when the device is administratively down or its
    /// operational state says so; up when it is up, or when the driver reports no state
    /// (`unknown`, usual for tun and loopback) but the device is up with a carrier.
    pub fn link_state(&self) -> LinkState {
        if !self.admin_up {
            return LinkState::Down;
        }
        match self.oper_state {
            OperState::Up => LinkState::Up,
            OperState::Down | OperState::LowerLayerDown | OperState::NotPresent => LinkState::Down,
            OperState::Unknown | OperState::Dormant | OperState::Testing => match self.carrier {
                Some(true) => LinkState::Up,
                Some(false) => LinkState::Down,
                None => LinkState::Unknown,
            },
        }
    }
}

fn mac(bytes: &[u8]) -> Option<MacAddress> {
    <[u8; 6]>::try_from(bytes).ok().map(MacAddress)
}

fn bond_mode_name(mode: &BondMode) -> String {
    match mode {
        BondMode::BalanceRr => "balance-rr".into(),
        BondMode::ActiveBackup => "active-backup".into(),
        BondMode::BalanceXor => "balance-xor".into(),
        BondMode::Broadcast => "broadcast".into(),
        BondMode::Ieee8023Ad => "802.3ad".into(),
        BondMode::BalanceTlb => "balance-tlb".into(),
        BondMode::BalanceAlb => "balance-alb".into(),
        BondMode::Other(n) => format!("mode-{n}"),
        _ => format!("{mode:?}").to_ascii_lowercase(),
    }
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Other(name) => name.clone(),
        known => known.to_string(),
    }
}

/// `IFLA_TUN_TYPE` inside a tun device's info data: 1 = tun, 2 = tap.
const IFLA_TUN_TYPE: u16 = 3;

fn tun_mode(nlas: &[netlink_packet_route::link::InfoTun]) -> Option<&'static str> {
    nlas.iter().find_map(|nla| {
        if nla.kind() != IFLA_TUN_TYPE || nla.value_len() == 0 {
            return None;
        }
        let mut value = vec![0u8; nla.value_len()];
        nla.emit_value(&mut value);
        match value.first() {
            Some(1) => Some("tun"),
            Some(2) => Some("tap"),
            _ => None,
        }
    })
}

fn apply_info(facts: &mut LinkFacts, infos: &[LinkInfo]) {
    for info in infos {
        match info {
            LinkInfo::Kind(kind) => facts.kind = Some(kind_name(kind)),
            LinkInfo::Data(InfoData::Vxlan(nlas)) => {
                let mut vxlan = VxlanFacts::default();
                for nla in nlas {
                    match nla {
                        InfoVxlan::Id(vni) => vxlan.vni = Some(*vni),
                        InfoVxlan::Local(ip) => vxlan.local = Some((*ip).into()),
                        InfoVxlan::Local6(ip) => vxlan.local = Some((*ip).into()),
                        InfoVxlan::Group(ip) => vxlan.remote = Some((*ip).into()),
                        InfoVxlan::Group6(ip) => vxlan.remote = Some((*ip).into()),
                        InfoVxlan::Port(port) => vxlan.dst_port = Some(*port),
                        InfoVxlan::Link(ifindex) => {
                            vxlan.underlay = Some(*ifindex).filter(|i| *i != 0)
                        }
                        InfoVxlan::Learning(on) => vxlan.learning = Some(*on),
                        _ => {}
                    }
                }
                facts.vxlan = Some(vxlan);
            }
            LinkInfo::Data(InfoData::Bridge(nlas)) => {
                let mut bridge = BridgeFacts::default();
                for nla in nlas {
                    match nla {
                        InfoBridge::BridgeId(id) => {
                            let hex: String =
                                id.address.iter().map(|b| format!("{b:02x}")).collect();
                            bridge.bridge_id = Some(format!("{:04x}.{hex}", id.priority));
                        }
                        InfoBridge::StpState(state) => {
                            bridge.stp_enabled = Some(!matches!(state, BridgeStpState::Disabled));
                        }
                        _ => {}
                    }
                }
                facts.bridge = Some(bridge);
            }
            LinkInfo::Data(InfoData::Bond(nlas)) => {
                let mut bond = BondFacts::default();
                for nla in nlas {
                    match nla {
                        InfoBond::Mode(mode) => bond.mode = Some(bond_mode_name(mode)),
                        InfoBond::MiiMon(ms) => bond.miimon_ms = Some(*ms),
                        InfoBond::ActivePort(ifindex) => bond.active_port = Some(*ifindex),
                        _ => {}
                    }
                }
                facts.bond = Some(bond);
            }
            LinkInfo::Data(InfoData::Vlan(nlas)) => {
                let mut vlan = VlanFacts::default();
                for nla in nlas {
                    match nla {
                        InfoVlan::Id(id) => vlan.id = Some(*id),
                        InfoVlan::Protocol(VlanProtocol::Ieee8021Q) => {
                            vlan.protocol = Some("802.1Q")
                        }
                        InfoVlan::Protocol(VlanProtocol::Ieee8021Ad) => {
                            vlan.protocol = Some("802.1ad")
                        }
                        _ => {}
                    }
                }
                facts.vlan = Some(vlan);
            }
            LinkInfo::Data(InfoData::Tun(nlas)) => facts.tun_mode = tun_mode(nlas),
            LinkInfo::PortData(InfoPortData::BondPort(nlas)) => {
                let mut port = BondPortFacts::default();
                for nla in nlas {
                    match nla {
                        InfoBondPort::MiiStatus(status) => {
                            port.mii_up =
                                Some(matches!(status, netlink_packet_route::link::MiiStatus::Up));
                        }
                        InfoBondPort::BondPortState(state) => {
                            port.active = Some(matches!(
                                state,
                                netlink_packet_route::link::BondPortState::Active
                            ));
                        }
                        InfoBondPort::PermHwaddr(bytes) => port.perm_mac = mac(bytes),
                        InfoBondPort::LinkFailureCount(n) => port.link_failures = Some(*n),
                        _ => {}
                    }
                }
                facts.bond_port = Some(port);
            }
            _ => {}
        }
    }
}

/// Reads a link message. Messages of the bridge family describe bridge-port state, not the
/// device itself, and yield `None` (a bridge-family "delete" means the port left its bridge).
pub fn link_facts(message: &LinkMessage) -> Option<LinkFacts> {
    if message.header.interface_family == AddressFamily::Bridge {
        return None;
    }
    let flags = message.header.flags;
    let mut facts = LinkFacts {
        ifindex: message.header.index,
        admin_up: flags.contains(LinkFlags::Up),
        loopback: flags.contains(LinkFlags::Loopback),
        ..LinkFacts::default()
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => facts.name = name.clone(),
            LinkAttribute::Address(bytes) => facts.mac = mac(bytes),
            LinkAttribute::Mtu(mtu) => facts.mtu = Some(*mtu),
            LinkAttribute::Carrier(c) => facts.carrier = Some(*c != 0),
            LinkAttribute::Controller(master) => facts.master = Some(*master),
            LinkAttribute::Link(link) => facts.link = Some(*link).filter(|l| *l != 0),
            LinkAttribute::LinkNetNsId(id) => facts.link_netnsid = Some(*id),
            LinkAttribute::OperState(state) => {
                facts.oper_state = match state {
                    State::Up => OperState::Up,
                    State::Down => OperState::Down,
                    State::LowerLayerDown => OperState::LowerLayerDown,
                    State::Dormant => OperState::Dormant,
                    State::Testing => OperState::Testing,
                    State::NotPresent => OperState::NotPresent,
                    _ => OperState::Unknown,
                }
            }
            LinkAttribute::LinkInfo(infos) => apply_info(&mut facts, infos),
            _ => {}
        }
    }
    (!facts.name.is_empty()).then_some(facts)
}

/// An interface address, with the interface's index. IPv6 addresses other than global ones
/// (link-local, derived from the MAC) are left out, as the original did.
pub fn address_facts(message: &AddressMessage) -> Option<(u32, IpPrefix)> {
    if message.header.family == AddressFamily::Inet6
        && message.header.scope != AddressScope::Universe
    {
        return None;
    }
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise.
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    let ip = local.or(address)?;
    Some((
        message.header.index,
        IpPrefix::new(ip, message.header.prefix_len)?,
    ))
}

/// A bridge FDB entry with a remote destination (vxlan remote endpoints, `bridge fdb … dst`).
pub fn fdb_facts(message: &NeighbourMessage) -> Option<(u32, IpAddr)> {
    if message.header.family != AddressFamily::Bridge {
        return None;
    }
    // In bridge-family messages the parser cannot know the address family of NDA_DST and hands
    // over raw bytes: four for IPv4, sixteen for IPv6.
    let dst = message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes.as_slice())
                .ok()
                .map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })?;
    Some((message.header.ifindex, dst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::{BondPortState, InfoVeth, MiiStatus};

    fn message(index: u32, name: &str, extra: Vec<LinkAttribute>) -> LinkMessage {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        message.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Address(vec![0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            LinkAttribute::Mtu(1500),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Carrier(1),
        ];
        message.attributes.extend(extra);
        message
    }

    #[test]
    fn bond_with_its_mode_and_a_port() {
        let bond = message(
            7,
            "bond0",
            vec![LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Bond),
                LinkInfo::Data(InfoData::Bond(vec![
                    InfoBond::Mode(BondMode::Ieee8023Ad),
                    InfoBond::MiiMon(100),
                    InfoBond::ActivePort(3),
                ])),
            ])],
        );
        let facts = link_facts(&bond).expect("a link");
        assert_eq!(facts.kind.as_deref(), Some("bond"));
        assert_eq!(
            facts.bond,
            Some(BondFacts {
                mode: Some("802.3ad".into()),
                miimon_ms: Some(100),
                active_port: Some(3)
            })
        );

        let port = message(
            3,
            "eth1",
            vec![
                LinkAttribute::Controller(7),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::PortKind(netlink_packet_route::link::InfoPortKind::Bond),
                    LinkInfo::PortData(InfoPortData::BondPort(vec![
                        InfoBondPort::MiiStatus(MiiStatus::Up),
                        InfoBondPort::BondPortState(BondPortState::Active),
                        InfoBondPort::PermHwaddr(vec![0xfa, 0x16, 0x3e, 0, 0, 9]),
                        InfoBondPort::LinkFailureCount(2),
                    ])),
                ]),
            ],
        );
        let facts = link_facts(&port).expect("a link");
        assert_eq!(facts.kind, None, "a bond port is still a physical NIC");
        assert_eq!(facts.master, Some(7));
        let port = facts.bond_port.expect("bond port facts");
        assert_eq!(port.mii_up, Some(true));
        assert_eq!(port.active, Some(true));
        assert_eq!(
            port.perm_mac.map(|m| m.to_string()).as_deref(),
            Some("fa:16:3e:00:00:09")
        );
        assert_eq!(port.link_failures, Some(2));
    }

    #[test]
    fn vlan_on_a_nic() {
        let vlan = message(
            9,
            "eth0.100",
            vec![
                LinkAttribute::Link(2),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Vlan),
                    LinkInfo::Data(InfoData::Vlan(vec![
                        InfoVlan::Id(100),
                        InfoVlan::Protocol(VlanProtocol::Ieee8021Q),
                    ])),
                ]),
            ],
        );
        let facts = link_facts(&vlan).expect("a link");
        assert_eq!(facts.kind.as_deref(), Some("vlan"));
        assert_eq!(facts.link, Some(2));
        assert_eq!(
            facts.vlan,
            Some(VlanFacts {
                id: Some(100),
                protocol: Some("802.1Q")
            })
        );
    }

    #[test]
    fn vxlan_bridge_and_veth() {
        let vxlan = message(
            5,
            "vxlan-42",
            vec![LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(42),
                    InfoVxlan::Local("192.0.2.1".parse().expect("ip")),
                    InfoVxlan::Group("192.0.2.2".parse().expect("ip")),
                    InfoVxlan::Port(4789),
                    InfoVxlan::Link(2),
                    InfoVxlan::Learning(true),
                ])),
            ])],
        );
        let facts = link_facts(&vxlan).expect("a link");
        let v = facts.vxlan.expect("vxlan facts");
        assert_eq!(
            (v.vni, v.dst_port, v.underlay),
            (Some(42), Some(4789), Some(2))
        );
        assert_eq!(v.remote, Some("192.0.2.2".parse().expect("ip")));

        let bridge = message(
            6,
            "br0",
            vec![LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Bridge),
                LinkInfo::Data(InfoData::Bridge(vec![
                    InfoBridge::BridgeId(netlink_packet_route::link::BridgeId {
                        priority: 0x8000,
                        address: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
                    }),
                    InfoBridge::StpState(BridgeStpState::Disabled),
                ])),
            ])],
        );
        let b = link_facts(&bridge)
            .expect("a link")
            .bridge
            .expect("bridge facts");
        assert_eq!(b.bridge_id.as_deref(), Some("8000.525400123456"));
        assert_eq!(b.stp_enabled, Some(false));

        let veth = message(
            8,
            "veth0",
            vec![
                LinkAttribute::Link(4),
                LinkAttribute::LinkNetNsId(0),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Veth),
                    LinkInfo::Data(InfoData::Veth(InfoVeth::Other(
                        netlink_packet_core::DefaultNla::new(0, vec![]),
                    ))),
                ]),
            ],
        );
        let facts = link_facts(&veth).expect("a link");
        assert_eq!((facts.link, facts.link_netnsid), (Some(4), Some(0)));
    }

    #[test]
    fn tap_mode_and_states() {
        let tap = message(
            10,
            "tap0",
            vec![LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Tun),
                LinkInfo::Data(InfoData::Tun(vec![
                    netlink_packet_route::link::InfoTun::Other(
                        netlink_packet_core::DefaultNla::new(3, vec![2]), // IFLA_TUN_TYPE = IFF_TAP, as the kernel sends it
                    ),
                ])),
            ])],
        );
        let mut facts = link_facts(&tap).expect("a link");
        assert_eq!(facts.tun_mode, Some("tap"));
        assert_eq!(facts.link_state(), LinkState::Up);
        facts.oper_state = OperState::Unknown;
        facts.carrier = Some(false);
        assert_eq!(facts.link_state(), LinkState::Down);
        facts.admin_up = false;
        facts.carrier = Some(true);
        assert_eq!(facts.link_state(), LinkState::Down);
    }

    #[test]
    fn bridge_family_messages_are_port_state_not_devices() {
        let mut port = message(3, "eth1", vec![]);
        port.header.interface_family = AddressFamily::Bridge;
        assert_eq!(link_facts(&port), None);
    }

    #[test]
    fn addresses_and_fdb() {
        let mut v4 = AddressMessage::default();
        v4.header.family = AddressFamily::Inet;
        v4.header.index = 4;
        v4.header.prefix_len = 24;
        v4.attributes = vec![AddressAttribute::Address("10.99.0.2".parse().expect("ip"))];
        assert_eq!(
            address_facts(&v4),
            Some((4, "10.99.0.2/24".parse().expect("prefix")))
        );
        let mut link_local = AddressMessage::default();
        link_local.header.family = AddressFamily::Inet6;
        link_local.header.scope = AddressScope::Link;
        link_local.attributes = vec![AddressAttribute::Address("fe80::1".parse().expect("ip"))];
        assert_eq!(address_facts(&link_local), None);

        let mut fdb = NeighbourMessage::default();
        fdb.header.family = AddressFamily::Bridge;
        fdb.header.ifindex = 5;
        fdb.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(vec![0; 6]),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(
                "192.0.2.7".parse().expect("ip"),
            )),
        ];
        assert_eq!(fdb_facts(&fdb), Some((5, "192.0.2.7".parse().expect("ip"))));
        // As the kernel sends them: the bridge family leaves NDA_DST as raw bytes.
        fdb.attributes[1] =
            NeighbourAttribute::Destination(NeighbourAddress::Other(vec![192, 0, 2, 8]));
        assert_eq!(fdb_facts(&fdb), Some((5, "192.0.2.8".parse().expect("ip"))));
        fdb.header.family = AddressFamily::Inet;
        assert_eq!(fdb_facts(&fdb), None, "ARP entries are not FDB entries");
    }
}
