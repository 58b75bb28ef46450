use calipso_proto::{Object, Timestamp};
use proptest::prelude::*;

use super::*;
use crate::engine::Environment;
use crate::links::tests::{changes_for, edits, small_lab};
use crate::synthetic::{host_name, network_uuid, vm_uuid};

/// An environment of `objects` with the default clique types, as a fresh aggregator has them.
pub(crate) fn environment(objects: Vec<Object>) -> Environment {
    let mut graph = Graph::new();
    for object in objects {
        graph.upsert(Node::new(object, Timestamp::default()));
    }
    let config = EnvironmentConfig::named("lab");
    let plan = Plan::choose(
        &config,
        &default_clique_types(),
        &default_clique_constraints(),
    );
    Environment::build(config, graph, plan)
}

fn sorted(set: &CliqueSet) -> Vec<Clique> {
    let mut all: Vec<Clique> = set.cliques().cloned().collect();
    all.sort_by(|a, b| a.focal_point.cmp(&b.focal_point));
    all
}

#[test]
fn an_instance_clique_reaches_the_wire_through_its_hybrid_plug() {
    let env = environment(small_lab());
    let instance = ObjectId::global(ObjectType::Instance, &vm_uuid(0, 0));
    let clique = env.cliques.get(&instance).expect("instance clique");
    assert_eq!(clique.clique_type, "instance");
    let host = host_name(0);
    let port = format!("{:011x}", 0);
    let nodes: Vec<&str> = clique.nodes.iter().map(ObjectId::as_str).collect();
    // The VM's tap on its qbr bridge, the qvb/qvo veth into OVS, the vswitch, its tunnel
    // endpoint and the NIC holding the tunnel address (eth1), and the OVS uplink (eth2): with
    // no cloud adapter no network says which NIC carries the VM's traffic, so both do. Not the
    // management NIC (eth0), nor the host's other VM or its DHCP port on the same vswitch.
    assert_eq!(
        nodes,
        vec![
            &format!("host_pnic:{host}:eth1"),
            &format!("host_pnic:{host}:eth2"),
            instance.as_str(),
            &format!("otep:{host}:10.16.0.1"),
            &format!("vconnector:{host}:qbr{port}"),
            &format!("vedge:{host}:ovs"),
            &format!("vnic:{host}:qvb{port}"),
            &format!("vnic:{host}:qvo{port}"),
            &format!("vnic:{host}:tap{port}"),
        ]
    );
    let mut links: Vec<String> = clique
        .links
        .iter()
        .map(|k| format!("{} {} {}", k.link_type, k.source, k.target))
        .collect();
    links.sort();
    assert_eq!(
        links,
        vec![
            format!("instance-vnic {instance} vnic:{host}:tap{port}"),
            format!("otep-host_pnic otep:{host}:10.16.0.1 host_pnic:{host}:eth1"),
            format!("vconnector-vedge vconnector:{host}:qbr{port} vedge:{host}:ovs"),
            format!("vedge-host_pnic vedge:{host}:ovs host_pnic:{host}:eth2"),
            format!("vedge-otep vedge:{host}:ovs otep:{host}:10.16.0.1"),
            format!("vnic-vconnector vnic:{host}:qvb{port} vconnector:{host}:qbr{port}"),
            format!("vnic-vconnector vnic:{host}:tap{port} vconnector:{host}:qbr{port}"),
            format!("vnic-vedge vnic:{host}:qvo{port} vedge:{host}:ovs"),
            format!("vnic-vnic vnic:{host}:qvb{port} vnic:{host}:qvo{port}"),
        ]
    );
}

#[test]
fn an_instance_clique_reaches_the_switch_port_facing_its_carrying_nic_only() {
    let mut objects = small_lab();
    let switch = ObjectId::global(ObjectType::Switch, "chassis-1");
    objects.push(Object::new(
        switch.clone(),
        ObjectType::Switch,
        "tor-1",
        "lab",
    ));
    // Port 1 faces compute-0000's tunnel NIC (eth1), port 2 its management NIC (eth0).
    for (port, mac) in [("p1", "fa:16:00:00:00:01"), ("p2", "fa:16:00:00:00:00")] {
        let mut object = Object::new(
            ObjectId::global(ObjectType::SwitchPnic, &format!("chassis-1/{port}")),
            ObjectType::SwitchPnic,
            port,
            "lab",
        )
        .with_parent(switch.clone(), ObjectType::Switch);
        object.attributes.mac_address = mac.parse().ok();
        objects.push(object);
    }
    let env = environment(objects);
    let clique = env
        .cliques
        .get(&ObjectId::global(ObjectType::Instance, &vm_uuid(0, 0)))
        .expect("instance clique");
    let fabric: Vec<&str> = clique
        .nodes
        .iter()
        .map(ObjectId::as_str)
        .filter(|id| id.starts_with("switch"))
        .collect();
    assert_eq!(fabric, vec!["switch:chassis-1", "switch_pnic:chassis-1/p1"]);
}

#[test]
fn the_original_walk_stays_available_and_ends_at_the_first_empty_step() {
    let mut types = default_clique_types();
    let instance_type = types
        .iter_mut()
        .find(|t| t.name == "instance")
        .expect("default instance type");
    *instance_type = CliqueType {
        walk: WalkKind::Ordered,
        link_types: types::parse_link_types(&types::ORIGINAL_INSTANCE_WALK),
        ..instance_type.clone()
    };
    let mut graph = Graph::new();
    for object in small_lab() {
        graph.upsert(Node::new(object, Timestamp::default()));
    }
    let config = EnvironmentConfig::named("lab");
    let plan = Plan::choose(&config, &types, &default_clique_constraints());
    let env = Environment::build(config, graph, plan);
    let instance = ObjectId::global(ObjectType::Instance, &vm_uuid(0, 0));
    let host = host_name(0);
    let port = format!("{:011x}", 0);
    let nodes: Vec<&str> = env
        .cliques
        .get(&instance)
        .expect("instance clique")
        .nodes
        .iter()
        .map(ObjectId::as_str)
        .collect();
    // instance-vnic, vnic-vconnector, vconnector-vedge, vedge-otep; then otep-vconnector finds
    // nothing (no br-mesh) and the walk ends, as in the original.
    assert_eq!(
        nodes,
        vec![
            instance.as_str(),
            &format!("otep:{host}:10.16.0.1"),
            &format!("vconnector:{host}:qbr{port}"),
            &format!("vedge:{host}:ovs"),
            &format!("vnic:{host}:tap{port}"),
        ]
    );
}

#[test]
fn an_earlier_versions_seeded_defaults_are_upgraded_and_edited_ones_kept() {
    let current = default_clique_types();
    let mut stored = current.clone();
    let original_instance = types::parse_link_types(&types::ORIGINAL_INSTANCE_WALK);
    stored[0].walk = WalkKind::Ordered;
    stored[0].link_types = original_instance.clone();
    stored[1].walk = WalkKind::Ordered;
    stored[1].link_types = vec!["vservice-vnic".parse().expect("link type")];
    assert!(upgrade_seeded_defaults(&mut stored));
    assert_eq!(
        stored[0], current[0],
        "the untouched seeded instance type is upgraded"
    );
    assert_eq!(
        stored[1].link_types,
        vec!["vservice-vnic".parse().expect("link type")],
        "an edited type is the operator's"
    );
    assert!(!upgrade_seeded_defaults(&mut stored));
}

#[test]
fn network_constraints_keep_a_vservice_clique_to_its_network() {
    let mut objects = small_lab();
    let network = network_uuid(0);
    objects.push(
        Object::new(
            ObjectId::global(ObjectType::Network, &network),
            ObjectType::Network,
            "net0",
            "lab",
        )
        .with_extra("provider:network_type", "vxlan"),
    );
    let env = environment(objects);
    let host = host_name(0);
    let service = ObjectId::host_local(ObjectType::Vservice, &host, &format!("qdhcp-{network}"));
    let clique = env.cliques.get(&service).expect("vservice clique");
    assert_eq!(
        clique.constraints.get("network"),
        Some(&vec![format!("network:{network}")]),
        "the network its port's link carries"
    );
    let net_clique = env
        .cliques
        .get(&ObjectId::global(ObjectType::Network, &network));
    assert!(
        net_clique.is_none(),
        "no port is bound, so no NIC carries the network"
    );
    assert!(
        clique
            .links
            .iter()
            .any(|k| k.link_type.to_string() == "vnic-vedge")
    );
}

#[test]
fn implicit_links_reach_the_network_when_the_type_asks_for_them() {
    let mut objects = small_lab();
    let network = network_uuid(0);
    objects.push(
        Object::new(
            ObjectId::global(ObjectType::Network, &network),
            ObjectType::Network,
            "net0",
            "lab",
        )
        .with_extra("provider:network_type", "vxlan"),
    );
    objects.push(
        Object::new(
            ObjectId::global(ObjectType::Port, "p0"),
            ObjectType::Port,
            "p0",
            "lab",
        )
        .with_extra("network_id", network.as_str())
        .with_extra("binding:host_id", host_name(0)),
    );
    let mut graph = Graph::new();
    for object in objects {
        graph.upsert(Node::new(object, Timestamp::default()));
    }
    let config = EnvironmentConfig::named("implicit-links-ex");
    let plan = Plan::choose(
        &config,
        &default_clique_types(),
        &default_clique_constraints(),
    );
    let env = Environment::build(config, graph, plan);
    let clique = env
        .cliques
        .get(&ObjectId::global(ObjectType::Instance, &vm_uuid(0, 0)))
        .expect("implicit clique");
    let implicit: Vec<String> = clique
        .implicit_links
        .iter()
        .map(|l| format!("{} {}", l.link_type, l.target))
        .collect();
    assert_eq!(
        implicit,
        vec![format!("instance-network network:{network}")]
    );
    assert!(clique.implicit_links.iter().all(|l| l.implicit));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn incremental_cliques_equal_a_full_build(edits in edits()) {
        let mut env = environment(small_lab());
        for edit in &edits {
            let changes = changes_for(&env.graph, edit);
            let before = sorted(&env.cliques);
            let applied = env.apply(changes);
            let full = CliqueSet::build(env.cliques.plan().clone(), &env.graph, &env.links);
            prop_assert_eq!(sorted(&env.cliques), sorted(&full), "after {:?}", edit);
            // Nothing is left numbered or indexed that a fresh build would not hold.
            prop_assert_eq!(env.cliques.bookkeeping(), full.bookkeeping(), "after {:?}", edit);
            let mut replayed: BTreeMap<ObjectId, Clique> =
                before.into_iter().map(|c| (c.focal_point.clone(), c)).collect();
            for focal in &applied.cliques.removed {
                prop_assert!(replayed.remove(focal).is_some());
            }
            for clique in &applied.cliques.created {
                let old = replayed.insert(clique.focal_point.clone(), clique.clone());
                prop_assert!(old.is_none(), "created {} existed", clique.focal_point);
            }
            for clique in &applied.cliques.changed {
                let old = replayed.insert(clique.focal_point.clone(), clique.clone());
                prop_assert!(old.is_some_and(|old| &old != clique), "changed {} was absent or unchanged", clique.focal_point);
            }
            prop_assert_eq!(replayed.into_values().collect::<Vec<_>>(), sorted(&full));
        }
        // The "rebuild from scratch" operations find nothing to correct.
        prop_assert!(env.rebuild_links().links.is_empty());
        prop_assert!(env.rebuild_cliques().is_empty());
    }
}
