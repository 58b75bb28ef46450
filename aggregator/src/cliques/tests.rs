use calipso_proto::{Object, Timestamp};
use proptest::prelude::*;

use super::*;
use crate::engine::Environment;
use crate::links::tests::{changes_for, edits, small_lab};
use crate::synthetic::{host_name, network_uuid, vm_uuid};

fn environment(objects: Vec<Object>) -> Environment {
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
fn an_instance_clique_walks_down_to_the_tunnel_endpoint() {
    let env = environment(small_lab());
    let instance = ObjectId::global(ObjectType::Instance, &vm_uuid(0, 0));
    let clique = env.cliques.get(&instance).expect("instance clique");
    assert_eq!(clique.clique_type, "instance");
    let host = host_name(0);
    let port = format!("{:011x}", 0);
    let nodes: Vec<&str> = clique.nodes.iter().map(ObjectId::as_str).collect();
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
    // instance to tap, tap to qbr, qbr to OVS, OVS to its endpoint.
    assert_eq!(clique.links.len(), 4);
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
        None,
        "a vservice has no `network` attribute"
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
