use std::collections::BTreeMap;

use calipso_proto::{IpPrefix, LinkState, Object, ObjectType, Timestamp};
use proptest::prelude::*;

use super::*;
use crate::synthetic::{Layout, host_name, host_objects, vm_objects, vm_uuid};

fn graph_of(objects: impl IntoIterator<Item = Object>) -> Graph {
    let mut graph = Graph::new();
    for object in objects {
        graph.upsert(Node::new(object, Timestamp::default()));
    }
    graph
}

fn layout() -> Layout {
    Layout {
        hosts: 3,
        vms_per_host: 2,
        tunnel_peers: 2,
    }
}

fn lab() -> Vec<Object> {
    (0..3)
        .flat_map(|h| host_objects("lab", h, &layout()))
        .collect()
}

fn keys(set: &LinkSet) -> Vec<String> {
    let mut keys: Vec<String> = set.links().map(|l| LinkKey::of(l).to_string()).collect();
    keys.sort();
    keys
}

fn sorted_links(set: &LinkSet) -> Vec<Link> {
    let mut links: Vec<Link> = set.links().cloned().collect();
    links.sort_by_key(LinkKey::of);
    links
}

#[test]
fn a_hybrid_plugged_vm_is_linked_down_to_the_uplink_and_across_hosts() {
    let set = LinkSet::build(&graph_of(lab()));
    let all = keys(&set);
    let host = host_name(0);
    let port = format!("{:011x}", 0);
    let instance = format!("instance:{}", vm_uuid(0, 0));
    let expect = [
        format!("instance-vnic:{instance}->vnic:{host}:tap{port}"),
        format!("vnic-vconnector:vnic:{host}:tap{port}->vconnector:{host}:qbr{port}"),
        format!("vnic-vconnector:vnic:{host}:qvb{port}->vconnector:{host}:qbr{port}"),
        format!("vnic-vnic:vnic:{host}:qvb{port}->vnic:{host}:qvo{port}"),
        format!("vnic-vedge:vnic:{host}:qvo{port}->vedge:{host}:ovs"),
        format!("vconnector-vedge:vconnector:{host}:qbr{port}->vedge:{host}:ovs"),
        format!("vedge-host_pnic:vedge:{host}:ovs->host_pnic:{host}:eth2"),
        format!("vedge-otep:vedge:{host}:ovs->otep:{host}:10.16.0.1"),
        format!("otep-host_pnic:otep:{host}:10.16.0.1->host_pnic:{host}:eth1"),
        format!(
            "otep-otep:otep:{host}:10.16.0.1->otep:{}:10.16.0.2",
            host_name(1)
        ),
        format!(
            "vservice-vnic:vservice:{host}:qdhcp-{}->vnic:{host}:qdhcp-{}/tap{}",
            crate::synthetic::network_uuid(0),
            crate::synthetic::network_uuid(0),
            &crate::synthetic::network_uuid(0)[..11]
        ),
    ];
    for key in &expect {
        assert!(all.contains(key), "missing {key} in {all:#?}");
    }
    assert!(
        !all.contains(&format!("instance-vnic:{instance}->vnic:{host}:qvo{port}")),
        "the qvo port names the VM, but the VM's vNIC is its tap"
    );
    // Per host: 2 VMs x 6 links (instance to tap, tap and qvb to qbr, the veth
    // pair, qvo to OVS, qbr to OVS) + dhcp (vservice-vnic, vnic-vedge) + vedge-pnic +
    // vedge-otep + otep-pnic; 3 hosts in a ring of 2 peers: 3 tunnels.
    assert_eq!(all.len(), 3 * (2 * 6 + 2 + 3) + 3, "{all:#?}");
    let bridge_link = set
        .get(&LinkKey {
            link_type: "vconnector-vedge".parse().expect("type"),
            source: ObjectId::host_local(ObjectType::Vconnector, &host, &format!("qbr{port}")),
            target: ObjectId::host_local(ObjectType::Vedge, &host, "ovs"),
        })
        .expect("qbr-vedge link");
    assert_eq!(bridge_link.state, LinkState::Up);
    assert_eq!(bridge_link.host.as_deref(), Some(host.as_str()));
    assert_eq!(
        bridge_link
            .attributes
            .get("link_name")
            .and_then(AttrValue::as_str),
        Some("port-10-1")
    );
}

#[test]
fn a_vnic_without_a_port_reference_finds_its_network_by_mac_incrementally() {
    let mut graph = graph_of(lab());
    let mut set = LinkSet::build(&graph);
    let host = host_name(0);
    let tap = ObjectId::host_local(ObjectType::Vnic, &host, &format!("tap{:011x}", 0));
    let mac: calipso_proto::MacAddress = "fa:16:3e:00:00:99".parse().expect("mac");
    let mut node = graph.get(&tap).cloned().expect("tap");
    let touched = Touched::before(tap.clone(), Some(&node));
    node.object.attributes.mac_address = Some(mac);
    graph.upsert(node);
    set.update(&graph, &[touched]);
    let network_of_tap = |set: &LinkSet| {
        set.links()
            .find(|l| l.link_type.to_string() == "vnic-vconnector" && l.source == tap)
            .and_then(|l| {
                l.attributes
                    .get("network")
                    .and_then(AttrValue::as_str)
                    .map(str::to_owned)
            })
    };
    assert_eq!(network_of_tap(&set), None, "no port has the MAC yet");

    let mut port = Object::new(
        ObjectId::global(ObjectType::Port, "p-mac"),
        ObjectType::Port,
        "p-mac",
        "lab",
    )
    .with_extra("network_id", "N-MAC");
    port.attributes.mac_address = Some(mac);
    let id = port.id.clone();
    graph.upsert(Node::new(port, Timestamp::default()));
    set.update(&graph, &[Touched::before(id, None)]);
    assert_eq!(network_of_tap(&set).as_deref(), Some("network:n-mac"));
    assert_eq!(sorted_links(&set), sorted_links(&LinkSet::build(&graph)));
}

#[test]
fn link_state_follows_the_endpoints() {
    let mut graph = graph_of(lab());
    let mut set = LinkSet::build(&graph);
    let host = host_name(0);
    let port = format!("{:011x}", 0);
    let qvo = ObjectId::host_local(ObjectType::Vnic, &host, &format!("qvo{port}"));
    let mut down = graph.get(&qvo).cloned().expect("qvo");
    let touched = Touched::before(qvo.clone(), Some(&down));
    down.object.attributes.link_state = Some(LinkState::Down);
    graph.upsert(down);
    let changes = set.update(&graph, &[touched]);
    assert!(changes.created.is_empty(), "a state change creates no link");
    let mut changed: Vec<String> = changes
        .changed
        .iter()
        .map(|l| format!("{} {}", LinkKey::of(l), l.state.as_str()))
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        vec![
            format!("vconnector-vedge:vconnector:{host}:qbr{port}->vedge:{host}:ovs down"),
            format!("vnic-vedge:vnic:{host}:qvo{port}->vedge:{host}:ovs down"),
            format!("vnic-vnic:vnic:{host}:qvb{port}->vnic:{host}:qvo{port} down"),
        ]
    );
    assert!(changes.removed.is_empty());
}

#[test]
fn a_half_configured_tunnel_is_down_and_networks_reach_their_carriers() {
    let mut objects = lab();
    // Host 2 forgets host 0.
    for object in &mut objects {
        if object.id.as_str() == format!("otep:{}:10.16.0.3", host_name(2)) {
            object.attributes.extra.insert(
                "remote_endpoints",
                AttrValue::List(vec!["10.16.0.2".into()]),
            );
        }
    }
    let network = crate::synthetic::network_uuid(0);
    objects.push(
        Object::new(
            ObjectId::global(ObjectType::Network, &network),
            ObjectType::Network,
            "net0",
            "lab",
        )
        .with_extra("provider:network_type", "vxlan")
        .with_extra("provider:segmentation_id", AttrValue::Int(1001)),
    );
    objects.push(
        Object::new(
            ObjectId::global(ObjectType::Port, "p1"),
            ObjectType::Port,
            "p1",
            "lab",
        )
        .with_extra("network_id", network.as_str())
        .with_extra("binding:host_id", host_name(0)),
    );
    let set = LinkSet::build(&graph_of(objects));
    let tunnel = set
        .links()
        .find(|l| {
            l.link_type.to_string() == "otep-otep"
                && l.source.as_str().ends_with("10.16.0.1")
                && l.target.as_str().ends_with("10.16.0.3")
        })
        .expect("tunnel 0-2");
    assert_eq!(tunnel.state, LinkState::Down);
    assert_eq!(
        tunnel.attributes.get("bidirectional"),
        Some(&AttrValue::Bool(false))
    );
    let carried: Vec<String> = set
        .links()
        .filter(|l| l.link_type.to_string() == "host_pnic-network")
        .map(|l| l.source.to_string())
        .collect();
    // eth1 holds the tunnel address; eth2 (the OVS uplink) carries VLAN networks only.
    assert_eq!(carried, vec![format!("host_pnic:{}:eth1", host_name(0))]);
}

#[test]
fn lxb_vxlan_devices_link_to_their_bridge_underlay_and_peers_on_the_same_vni() {
    let otep = |host: &str, name: &str, vni: i64, local: &str, remote: &str| {
        Object::new(
            ObjectId::host_local(ObjectType::Otep, host, name),
            ObjectType::Otep,
            name,
            "lab",
        )
        .with_host(host)
        .with_extra("vni", AttrValue::Int(vni))
        .with_extra("ip_address", local)
        .with_extra("remote_endpoints", vec![remote])
        .with_extra(
            "master",
            ObjectId::host_local(ObjectType::Vconnector, host, &format!("brq{vni}")).as_str(),
        )
        .with_extra(
            "underlay",
            ObjectId::host_local(ObjectType::HostPnic, host, "eth1").as_str(),
        )
    };
    let bridge = |host: &str, vni: i64| {
        Object::new(
            ObjectId::host_local(ObjectType::Vconnector, host, &format!("brq{vni}")),
            ObjectType::Vconnector,
            format!("brq{vni}"),
            "lab",
        )
        .with_host(host)
    };
    let pnic = |host: &str, ip: &str| {
        let mut o = Object::new(
            ObjectId::host_local(ObjectType::HostPnic, host, "eth1"),
            ObjectType::HostPnic,
            "eth1",
            "lab",
        )
        .with_host(host);
        o.attributes.addresses = vec![ip.parse::<IpPrefix>().expect("prefix")];
        o
    };
    let objects = vec![
        otep("a", "vxlan-100", 100, "10.0.0.1", "10.0.0.2"),
        otep("a", "vxlan-200", 200, "10.0.0.1", "10.0.0.2"),
        otep("b", "vxlan-100", 100, "10.0.0.2", "10.0.0.1"),
        otep("b", "vxlan-200", 200, "10.0.0.2", "10.0.0.1"),
        bridge("a", 100),
        bridge("a", 200),
        bridge("b", 100),
        bridge("b", 200),
        pnic("a", "10.0.0.1/24"),
        pnic("b", "10.0.0.2/24"),
    ];
    let all = keys(&LinkSet::build(&graph_of(objects)));
    let tunnels: Vec<&String> = all.iter().filter(|k| k.starts_with("otep-otep")).collect();
    assert_eq!(
        tunnels,
        vec![
            "otep-otep:otep:a:vxlan-100->otep:b:vxlan-100",
            "otep-otep:otep:a:vxlan-200->otep:b:vxlan-200",
        ]
    );
    assert!(all.contains(&"otep-vconnector:otep:a:vxlan-100->vconnector:a:brq100".to_owned()));
    assert!(all.contains(&"otep-host_pnic:otep:a:vxlan-100->host_pnic:a:eth1".to_owned()));
    assert_eq!(all.len(), 2 + 4 * 2, "{all:#?}");
}

/// A random edit of the synthetic lab: the shapes of change agents send.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    AddVm {
        host: usize,
        vm: usize,
    },
    RemoveVm {
        host: usize,
        vm: usize,
    },
    SetState {
        host: usize,
        vm: usize,
        part: usize,
        up: bool,
    },
    Retunnel {
        host: usize,
        peers: Vec<usize>,
    },
    Stale {
        host: usize,
        stale: bool,
    },
    MoveTap {
        host: usize,
        vm: usize,
        to_vm: usize,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let h = 0..4usize;
    let v = 0..4usize;
    prop_oneof![
        (h.clone(), v.clone()).prop_map(|(host, vm)| Edit::AddVm { host, vm }),
        (h.clone(), v.clone()).prop_map(|(host, vm)| Edit::RemoveVm { host, vm }),
        (h.clone(), v.clone(), 0..5usize, any::<bool>())
            .prop_map(|(host, vm, part, up)| Edit::SetState { host, vm, part, up }),
        (h.clone(), proptest::collection::vec(0..4usize, 0..3))
            .prop_map(|(host, peers)| Edit::Retunnel { host, peers }),
        (h.clone(), any::<bool>()).prop_map(|(host, stale)| Edit::Stale { host, stale }),
        (h, v.clone(), v).prop_map(|(host, vm, to_vm)| Edit::MoveTap { host, vm, to_vm }),
    ]
}

/// The changes an edit makes to the current graph.
pub(crate) fn changes_for(graph: &Graph, edit: &Edit) -> Vec<crate::engine::Change> {
    use crate::engine::Change;
    let at = Timestamp::from_unix_micros(1);
    let node = |object: Object| Change::Upsert(Box::new(Node::new(object, at)));
    match edit {
        Edit::AddVm { host, vm } => vm_objects("lab", *host, *vm)
            .into_iter()
            .map(node)
            .collect(),
        Edit::RemoveVm { host, vm } => vm_objects("lab", *host, *vm)
            .into_iter()
            .filter(|o| graph.contains(&o.id))
            .map(|o| Change::Remove(o.id))
            .collect(),
        Edit::SetState { host, vm, part, up } => vm_objects("lab", *host, *vm)
            .into_iter()
            .skip(*part)
            .take(1)
            .filter_map(|o| graph.get(&o.id).cloned())
            .map(|mut n| {
                n.object.attributes.link_state =
                    Some(if *up { LinkState::Up } else { LinkState::Down });
                Change::Upsert(Box::new(n))
            })
            .collect(),
        Edit::Retunnel { host, peers } => graph
            .of_type(ObjectType::Otep)
            .filter(|n| n.object.host.as_deref() == Some(host_name(*host).as_str()))
            .cloned()
            .map(|mut n| {
                let remotes: Vec<String> =
                    peers.iter().map(|p| format!("10.16.0.{}", p + 1)).collect();
                n.object
                    .attributes
                    .extra
                    .insert("remote_endpoints", remotes.into());
                Change::Upsert(Box::new(n))
            })
            .collect(),
        Edit::Stale { host, stale } => graph
            .ids_on_host(&host_name(*host))
            .filter_map(|id| graph.get(id).cloned())
            .map(|mut n| {
                n.stale = *stale;
                Change::Upsert(Box::new(n))
            })
            .collect(),
        Edit::MoveTap { host, vm, to_vm } => {
            let tap = vm_objects("lab", *host, *vm).into_iter().nth(1);
            let bridge = vm_objects("lab", *host, *to_vm).into_iter().nth(2);
            match (tap.and_then(|t| graph.get(&t.id).cloned()), bridge) {
                (Some(mut tap), Some(bridge)) => {
                    tap.object
                        .attributes
                        .extra
                        .insert("master", bridge.id.as_str().into());
                    vec![Change::Upsert(Box::new(tap))]
                }
                _ => Vec::new(),
            }
        }
    }
}

pub(crate) fn small_lab() -> Vec<Object> {
    let layout = Layout {
        hosts: 4,
        vms_per_host: 2,
        tunnel_peers: 1,
    };
    (0..4)
        .flat_map(|h| host_objects("lab", h, &layout))
        .collect()
}

pub(crate) fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(edit(), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn incremental_links_equal_a_full_build(edits in edits()) {
        let mut env = crate::engine::Environment::build(
            crate::cliques::EnvironmentConfig::named("lab"),
            graph_of(small_lab()),
            crate::cliques::Plan::default(),
        );
        for edit in &edits {
            let changes = changes_for(&env.graph, edit);
            let before = sorted_links(&env.links);
            let applied = env.apply(changes);
            let full = LinkSet::build(&env.graph);
            prop_assert_eq!(sorted_links(&env.links), sorted_links(&full), "after {:?}", edit);
            // Nothing is left numbered or watched that a fresh build would not hold.
            prop_assert_eq!(env.links.bookkeeping(), full.bookkeeping(), "after {:?}", edit);
            // The reported changes are exactly the difference.
            let mut replayed: BTreeMap<LinkKey, Link> = before.into_iter().map(|l| (LinkKey::of(&l), l)).collect();
            for key in &applied.links.removed {
                prop_assert!(replayed.remove(key).is_some(), "removed {} was absent", key);
            }
            for link in &applied.links.created {
                let old = replayed.insert(LinkKey::of(link), link.clone());
                prop_assert!(old.is_none(), "created {} existed", LinkKey::of(link));
            }
            for link in &applied.links.changed {
                let old = replayed.insert(LinkKey::of(link), link.clone());
                prop_assert!(old.is_some_and(|old| &old != link), "changed {} was absent or unchanged", LinkKey::of(link));
            }
            prop_assert_eq!(replayed.into_values().collect::<Vec<_>>(), sorted_links(&full));
        }
    }
}

#[test]
fn every_declared_link_type_has_a_finder() {
    let mut declared: Vec<LinkType> = LinkType::declared().collect();
    declared.sort();
    assert_eq!(Finders::default().link_types(), declared);
}

#[test]
fn switches_their_ports_host_nics_and_bridge_uplinks_are_linked() {
    let switch = Object::new(
        ObjectId::global(ObjectType::Switch, "leaf-1"),
        ObjectType::Switch,
        "leaf-1",
        "lab",
    );
    let port = |name: &str, mac: Option<&str>, peer: Option<&str>| {
        let mut object = Object::new(
            ObjectId::global(ObjectType::SwitchPnic, &format!("leaf-1-{name}")),
            ObjectType::SwitchPnic,
            name,
            "lab",
        )
        .with_parent(switch.id.clone(), ObjectType::Switch);
        object.attributes.mac_address = mac.and_then(|m| m.parse().ok());
        if let Some(peer) = peer {
            object = object.with_extra("connected_to", peer);
        }
        object
    };
    let mut nic = Object::new(
        ObjectId::host_local(ObjectType::HostPnic, "h1", "eth1.100"),
        ObjectType::HostPnic,
        "eth1.100",
        "lab",
    )
    .with_host("h1")
    .with_extra("master", "vconnector:h1:brq100");
    nic.attributes.mac_address = "52:54:00:aa:bb:cc".parse().ok();
    let bridge = Object::new(
        ObjectId::host_local(ObjectType::Vconnector, "h1", "brq100"),
        ObjectType::Vconnector,
        "brq100",
        "lab",
    )
    .with_host("h1");
    let objects = vec![
        switch.clone(),
        port("eth1/5", Some("52:54:00:aa:bb:cc"), None),
        port("eth1/49", None, Some("switch_pnic:leaf-1-eth1/50")),
        port("eth1/50", None, Some("switch_pnic:leaf-1-eth1/49")),
        nic,
        bridge,
    ];
    let set = LinkSet::build(&graph_of(objects));
    let mut all = keys(&set);
    all.retain(|k| !k.starts_with("switch-switch_pnic"));
    assert_eq!(
        all,
        vec![
            "host_pnic-switch_pnic:host_pnic:h1:eth1.100->switch_pnic:leaf-1-eth1/5",
            "switch_pnic-switch_pnic:switch_pnic:leaf-1-eth1/49->switch_pnic:leaf-1-eth1/50",
            "vconnector-host_pnic:vconnector:h1:brq100->host_pnic:h1:eth1.100",
        ]
    );
    assert_eq!(
        set.links()
            .filter(|l| l.link_type.to_string() == "switch-switch_pnic")
            .count(),
        3
    );
    let cabled = set
        .links()
        .find(|l| l.link_type.to_string() == "switch_pnic-switch_pnic")
        .expect("cabling");
    assert_eq!(cabled.state, LinkState::Up);
}

proptest! {
    /// Both ways of dropping repeats (in place for a few items, through a table for many)
    /// keep the first of each, in order.
    #[test]
    fn dedup_keeps_first_occurrences_in_order(items in prop::collection::vec(0u8..24, 0..64)) {
        let mut kept = items.clone();
        dedup(&mut kept, |a, b| a == b, |item| FxBuildHasher.hash_one(item));
        let mut expected = Vec::new();
        for item in items {
            if !expected.contains(&item) {
                expected.push(item);
            }
        }
        prop_assert_eq!(kept, expected);
    }
}
