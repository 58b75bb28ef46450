//! Analyses on the synthetic lab (four hybrid-plugged OVS hosts on a tunnel ring, two VMs and a
//! DHCP namespace each), with what an operator of it knows written out.

use calipso_proto::{LinkState, ObjectId, StatusLevel};

use super::*;
use crate::engine::{Change, Environment};
use crate::graph::Node;
use crate::links::tests::small_lab;
use crate::synthetic::{host_name, network_uuid, vm_uuid};

fn lab() -> Environment {
    crate::cliques::tests::environment(small_lab())
}

fn id(text: &str) -> ObjectId {
    ObjectId::from_raw(text)
}

fn vm(host: usize, vm: usize) -> String {
    format!("instance:{}", vm_uuid(host, vm))
}

/// A device of a synthetic VM's hybrid plug: `tap`, `qbr` (a vconnector), `qvb`, `qvo`.
fn plug(host: usize, vm: usize, prefix: &str) -> String {
    let kind = if prefix == "qbr" {
        "vconnector"
    } else {
        "vnic"
    };
    format!(
        "{kind}:{}:{prefix}{:011x}",
        host_name(host),
        host * 100_000 + vm
    )
}

fn on(host: usize, kind: &str, key: &str) -> String {
    format!("{kind}:{}:{key}", host_name(host))
}

fn change(env: &mut Environment, target: &str, edit: impl FnOnce(&mut Node)) {
    let mut node = env.graph.get(&id(target)).expect("object").clone();
    edit(&mut node);
    env.apply(vec![Change::Upsert(Box::new(node))]);
}

fn ids(hops: &[Hop]) -> Vec<&str> {
    hops.iter().map(|h| h.id.as_str()).collect()
}

#[test]
fn the_impact_of_a_tunnel_nic_is_its_hosts_vms_and_dhcp() {
    let env = lab();
    let eth1 = on(0, "host_pnic", "eth1");
    let impact = impact(&env, &[id(&eth1)]).expect("impact");
    let listed = |kind: &str| -> Vec<&str> {
        impact
            .dependents
            .get(kind)
            .into_iter()
            .flatten()
            .map(|d| d.id.as_str())
            .collect()
    };
    let dhcp = on(0, "vservice", &format!("qdhcp-{}", network_uuid(0)));
    let mut vms = vec![vm(0, 0), vm(0, 1)];
    vms.sort();
    assert_eq!(listed("instance"), vms);
    assert_eq!(listed("vservice"), vec![dhcp.as_str()]);
    assert_eq!(listed("host"), vec!["host:compute-0000"]);
    assert_eq!(
        impact.total, 4,
        "no other host's VM depends on compute-0000's eth1"
    );
    let first = &impact.dependents["instance"][0];
    assert_eq!(first.id, vm(0, 0));
    // From the NIC up through the tunnel endpoint, the vswitch, the VM's qbr and tap.
    assert_eq!(
        ids(&first.path),
        vec![
            eth1.as_str(),
            &on(0, "otep", "10.16.0.1"),
            &on(0, "vedge", "ovs"),
            &plug(0, 0, "qbr"),
            &plug(0, 0, "tap"),
            &vm(0, 0),
        ]
    );
    let host = &impact.dependents["host"][0];
    assert_eq!(host.through.len(), 3, "{:?}", host.through);
}

#[test]
fn the_impact_of_a_host_is_everything_on_it_and_nothing_else() {
    let env = lab();
    let impact = impact(&env, &[id("host:compute-0001")]).expect("impact");
    let instances: Vec<&str> = impact.dependents["instance"]
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    let mut vms = vec![vm(1, 0), vm(1, 1)];
    vms.sort();
    assert_eq!(instances, vms);
    assert_eq!(impact.dependents["vservice"].len(), 1);
    assert_eq!(impact.dependents["host"][0].id, "host:compute-0001");
    assert_eq!(impact.total, 4);
}

#[test]
fn a_diagnosis_names_the_nic_first_and_a_healthy_clique_says_so() {
    let mut env = lab();
    let healthy = diagnose(&env, &id(&vm(0, 0))).expect("diagnosis");
    assert!(healthy.findings.is_empty());
    assert!(
        healthy.summary.starts_with("nothing is wrong"),
        "{}",
        healthy.summary
    );

    let eth1 = on(0, "host_pnic", "eth1");
    change(&mut env, &plug(0, 0, "tap"), |n| {
        n.object.status.level = StatusLevel::Warning;
        n.object.status.text = "errors 12/s".into();
    });
    change(&mut env, &eth1, |n| {
        n.object.attributes.link_state = Some(LinkState::Down)
    });
    let sick = diagnose(&env, &id(&vm(0, 0))).expect("diagnosis");
    let found: Vec<(&str, Vec<String>)> = sick
        .findings
        .iter()
        .map(|f| (f.id.as_str(), f.problems.clone()))
        .collect();
    let tap = plug(0, 0, "tap");
    assert_eq!(
        found,
        vec![
            (eth1.as_str(), vec!["down".to_owned()]),
            (tap.as_str(), vec!["status warning: errors 12/s".to_owned()]),
        ]
    );
    assert_eq!(
        sick.findings[0].path.last().map(|h| h.id.clone()),
        Some(vm(0, 0))
    );
    assert!(sick.summary.contains(&eth1), "{}", sick.summary);
    // compute-0001's VMs do not depend on compute-0000's NIC.
    assert!(
        diagnose(&env, &id(&vm(1, 0)))
            .expect("diagnosis")
            .findings
            .is_empty()
    );
}

#[test]
fn the_path_between_vms_on_two_hosts_crosses_both_plugs_and_the_tunnel() {
    let mut env = lab();
    let report = path(&env, &id(&vm(0, 0)), &id(&vm(1, 0))).expect("path");
    let expected = vec![
        vm(0, 0),
        plug(0, 0, "tap"),
        plug(0, 0, "qbr"),
        plug(0, 0, "qvb"),
        plug(0, 0, "qvo"),
        on(0, "vedge", "ovs"),
        on(0, "otep", "10.16.0.1"),
        on(0, "host_pnic", "eth1"),
        on(1, "host_pnic", "eth1"),
        on(1, "otep", "10.16.0.2"),
        on(1, "vedge", "ovs"),
        plug(1, 0, "qvo"),
        plug(1, 0, "qvb"),
        plug(1, 0, "qbr"),
        plug(1, 0, "tap"),
        vm(1, 0),
    ];
    assert_eq!(
        ids(&report.hops),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(report.state, "up");
    assert_eq!(report.hops[8].link_type.as_deref(), Some("otep-otep"));

    change(&mut env, &on(1, "host_pnic", "eth1"), |n| {
        n.object.attributes.link_state = Some(LinkState::Down)
    });
    let cut = path(&env, &id(&vm(0, 0)), &id(&vm(1, 0))).expect("path");
    assert_eq!(cut.state, "down");
    assert_eq!(
        cut.broken_at.map(|h| h.id),
        Some(on(1, "host_pnic", "eth1")),
        "{}",
        cut.summary
    );
}

#[test]
fn without_a_tunnel_between_them_the_path_names_where_each_side_ends() {
    let mut env = lab();
    // compute-0000's tunnels go: neither it nor its ring neighbours (compute-0001 and
    // compute-0003) list a remote endpoint any more.
    let otep_0 = on(0, "otep", "10.16.0.1");
    change(&mut env, &otep_0, |n| {
        n.object.attributes.extra.insert(
            "remote_endpoints",
            calipso_proto::AttrValue::List(Vec::new()),
        );
    });
    for host in [1, 3] {
        change(
            &mut env,
            &on(host, "otep", &format!("10.16.0.{}", host + 1)),
            |n| {
                n.object.attributes.extra.insert(
                    "remote_endpoints",
                    calipso_proto::AttrValue::List(Vec::new()),
                );
            },
        );
    }
    let report = path(&env, &id(&vm(0, 0)), &id(&vm(1, 0))).expect("path");
    assert_eq!(report.state, "none");
    assert!(report.hops.is_empty());
    assert_eq!(
        report.summary,
        format!(
            "no path: `{}` reaches `{}`, `{}`, `{otep_0}` and `{}` reaches `{}`, `{}`, `{}`, and no tunnel, shared vswitch, bridge or network joins them",
            vm(0, 0),
            on(0, "host_pnic", "eth1"),
            on(0, "host_pnic", "eth2"),
            vm(1, 0),
            on(1, "host_pnic", "eth1"),
            on(1, "host_pnic", "eth2"),
            on(1, "otep", "10.16.0.2"),
        )
    );
}

#[test]
fn bad_questions_are_refused_by_name() {
    let env = lab();
    let unknown = id("instance:nope");
    assert_eq!(
        impact(&env, std::slice::from_ref(&unknown)).map(|i| i.total),
        Err(AnalysisError::UnknownObject(unknown.clone()))
    );
    assert_eq!(
        diagnose(&env, &id("host:compute-0000")).map(|d| d.findings.len()),
        Err(AnalysisError::NoClique(id("host:compute-0000")))
    );
    let refused = path(&env, &id(&vm(0, 0)), &id("host:compute-0000"))
        .map(|p| p.state)
        .map_err(|e| e.to_string());
    assert_eq!(
        refused,
        Err(
            "`host:compute-0000` is a host: a path runs between instances, vservices or vNICs"
                .into()
        )
    );
}
