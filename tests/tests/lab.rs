//! End to end on `calipso-lab`: three-host OVS and Linux bridge clouds in namespaces, a real
//! agent per host inside its namespace, a real aggregator reading the lab's Keystone/Neutron
//! double through its OpenStack adapter; the API must return exactly the declared topology's
//! objects and links ([`Expected`]) and the cliques written here by hand (what each VM, DHCP
//! and router namespace and network depends on, down to the wire), follow
//! VM churn (agents and the control plane alike), mark a host
//! whose agent was killed stale and take it back when the agent returns, and lose nothing
//! over an aggregator restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use calipso_aggregator::client::ApiClient;
use calipso_tests::lab::RunningLab;
use calipso_tests::lab::expect::{Expected, Ids, LinkTriple};
use calipso_tests::lab::topology::Switch;
use calipso_tests::lab::topology::{Plug, Vm};
use serde_json::Value;

/// Discovery of a whole lab, and each change, must show within this.
const CONVERGE: Duration = Duration::from_secs(30);

/// What the API shows of an environment.
#[derive(Debug, PartialEq)]
struct Observed {
    objects: BTreeSet<String>,
    links: BTreeSet<LinkTriple>,
    cliques: BTreeMap<String, BTreeSet<String>>,
}

async fn observe(client: &ApiClient, env: &str) -> anyhow::Result<Observed> {
    let query = [("env_name", env)];
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    let objects = client
        .get_all("/api/v1/inventory", "objects", &query)
        .await?
        .iter()
        .map(|o| text(o, "id"))
        .collect();
    let links = client
        .get_all("/api/v1/links", "links", &query)
        .await?
        .iter()
        .map(|l| (text(l, "link_type"), text(l, "source"), text(l, "target")))
        .collect();
    let cliques = client
        .get_all("/api/v1/cliques", "cliques", &query)
        .await?
        .iter()
        .map(|c| {
            let nodes = c["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            (text(c, "focal_point"), nodes)
        })
        .collect();
    Ok(Observed {
        objects,
        links,
        cliques,
    })
}

fn difference<T: Ord + std::fmt::Debug>(
    what: &str,
    expected: &BTreeSet<T>,
    seen: &BTreeSet<T>,
) -> String {
    let missing: Vec<_> = expected.difference(seen).collect();
    let extra: Vec<_> = seen.difference(expected).collect();
    format!("{what}: missing {missing:#?}\nextra {extra:#?}\n")
}

/// Cliques by focal point: the ids of their members.
type Cliques = BTreeMap<String, BTreeSet<String>>;

fn members<const N: usize>(ids: [String; N]) -> BTreeSet<String> {
    ids.into_iter().collect()
}

/// Waits until the API shows exactly the lab's declared objects and links and the cliques
/// stated by the test.
async fn converge(
    running: &RunningLab,
    client: &ApiClient,
    cliques: &Cliques,
    step: &str,
) -> anyhow::Result<Duration> {
    let expected = Expected::of(running.lab.topology());
    let start = Instant::now();
    loop {
        let seen = observe(client, &running.env()).await?;
        if seen.objects == expected.objects
            && seen.links == expected.links
            && seen.cliques == *cliques
        {
            let took = start.elapsed();
            eprintln!("{step}: converged in {took:?}");
            return Ok(took);
        }
        if start.elapsed() > CONVERGE {
            let clique_keys = |m: &BTreeMap<String, BTreeSet<String>>| {
                m.iter()
                    .map(|(k, v)| format!("{k} {v:?}"))
                    .collect::<BTreeSet<_>>()
            };
            anyhow::bail!(
                "{step}: the API does not show the declared topology after {CONVERGE:?}\n{}{}{}",
                difference("objects", &expected.objects, &seen.objects),
                difference("links", &expected.links, &seen.links),
                difference(
                    "cliques",
                    &clique_keys(cliques),
                    &clique_keys(&seen.cliques)
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until a host's agent is `connected` with every object fresh, or `disconnected` with
/// every object kept and stale; returns the agent's epoch.
async fn wait_for_host(
    client: &ApiClient,
    env: &str,
    host: &str,
    connected: bool,
) -> anyhow::Result<Option<u64>> {
    let start = Instant::now();
    loop {
        let (state, epoch, _) = agent_state(client, env, host).await?;
        let (stale, all) = stale_objects(client, env, host).await?;
        let reached = if connected {
            state == "connected" && stale == 0
        } else {
            state == "disconnected" && stale == all && all > 0
        };
        if reached {
            return Ok(epoch);
        }
        anyhow::ensure!(
            start.elapsed() < CONVERGE,
            "{host}: agent {state}, {stale} of {all} objects stale after {CONVERGE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A host's agent as the aggregator knows it: its session state, epoch and the last sequence
/// number it acknowledged.
async fn agent_state(
    client: &ApiClient,
    env: &str,
    host: &str,
) -> anyhow::Result<(String, Option<u64>, Option<u64>)> {
    let agents = client.get("/api/v1/agents", &[("env_name", env)]).await?;
    let agent = agents
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["host"] == host)
        .cloned()
        .unwrap_or_default();
    Ok((
        agent["state"].as_str().unwrap_or_default().to_owned(),
        agent["epoch"].as_str().and_then(|e| e.parse().ok()),
        agent["seq"].as_u64(),
    ))
}

async fn stale_objects(
    client: &ApiClient,
    env: &str,
    host: &str,
) -> anyhow::Result<(usize, usize)> {
    let on_host = client
        .get_all(
            "/api/v1/inventory",
            "objects",
            &[("env_name", env), ("host", host)],
        )
        .await?;
    let stale = on_host.iter().filter(|o| o["stale"] == true).count();
    Ok((stale, on_host.len()))
}

const OVS_LAB: &str = include_str!("../labs/ovs-3.toml");

/// What each VM, DHCP and router namespace and network of `ovs-3.toml` depends on, as its
/// operator would say it. An OVS host reaches the wire through its vswitch, the tunnel
/// endpoint on its fabric address and the fabric NIC `eth0`, which carries the networks the
/// host has ports on; the provider NIC `eth1` carries none of them (all networks are VXLAN).
fn ovs_lab_cliques(ids: Ids<'_>) -> Cliques {
    let wire = |host: &str| [ids.vedge(host), ids.otep(host), ids.nic(host, "eth0")];
    let hybrid = |host: &str, vm: &str, net: &str| {
        [
            ids.vm_device(host, vm, net, "tap"),
            ids.qbr(host, vm, net),
            ids.vm_device(host, vm, net, "qvb"),
            ids.vm_device(host, vm, net, "qvo"),
        ]
    };
    let mut cliques = Cliques::new();
    // vm-1, plugged straight into br-int: its tap, the vswitch, the otep on compute-1's
    // fabric address, eth0, net-a.
    let mut vm_1 = members([
        ids.instance("vm-1"),
        ids.vm_device("compute-1", "vm-1", "net-a", "tap"),
        ids.network("net-a"),
    ]);
    vm_1.extend(wire("compute-1"));
    cliques.insert(ids.instance("vm-1"), vm_1);
    // vm-2, hybrid on both networks: per network its tap, qbr bridge and qvb/qvo veth.
    let mut vm_2 = members([
        ids.instance("vm-2"),
        ids.network("net-a"),
        ids.network("net-b"),
    ]);
    vm_2.extend(hybrid("compute-1", "vm-2", "net-a"));
    vm_2.extend(hybrid("compute-1", "vm-2", "net-b"));
    vm_2.extend(wire("compute-1"));
    cliques.insert(ids.instance("vm-2"), vm_2);
    let mut vm_3 = members([ids.instance("vm-3"), ids.network("net-b")]);
    vm_3.extend(hybrid("compute-2", "vm-3", "net-b"));
    vm_3.extend(wire("compute-2"));
    cliques.insert(ids.instance("vm-3"), vm_3);
    for net in ["net-a", "net-b"] {
        let mut dhcp = members([
            ids.dhcp("network-1", net),
            ids.dhcp_port("network-1", net, Switch::Ovs),
            ids.network(net),
        ]);
        dhcp.extend(wire("network-1"));
        cliques.insert(ids.dhcp("network-1", net), dhcp);
    }
    let mut router = members([
        ids.router("network-1", "r1"),
        ids.router_port("network-1", "r1", "net-a"),
        ids.router_port("network-1", "r1", "net-b"),
        ids.network("net-a"),
        ids.network("net-b"),
    ]);
    router.extend(wire("network-1"));
    cliques.insert(ids.router("network-1", "r1"), router);
    // net-a: network-1 (DHCP, router) and compute-1 (vm-1, vm-2); compute-2 has no port on it.
    let mut net_a = members([
        ids.network("net-a"),
        ids.dhcp("network-1", "net-a"),
        ids.dhcp_port("network-1", "net-a", Switch::Ovs),
        ids.router("network-1", "r1"),
        ids.router_port("network-1", "r1", "net-a"),
        ids.instance("vm-1"),
        ids.vm_device("compute-1", "vm-1", "net-a", "tap"),
        ids.instance("vm-2"),
    ]);
    net_a.extend(hybrid("compute-1", "vm-2", "net-a"));
    net_a.extend(wire("network-1"));
    net_a.extend(wire("compute-1"));
    cliques.insert(ids.network("net-a"), net_a);
    let mut net_b = members([
        ids.network("net-b"),
        ids.dhcp("network-1", "net-b"),
        ids.dhcp_port("network-1", "net-b", Switch::Ovs),
        ids.router("network-1", "r1"),
        ids.router_port("network-1", "r1", "net-b"),
        ids.instance("vm-2"),
        ids.instance("vm-3"),
    ]);
    net_b.extend(hybrid("compute-1", "vm-2", "net-b"));
    net_b.extend(hybrid("compute-2", "vm-3", "net-b"));
    for host in ["network-1", "compute-1", "compute-2"] {
        net_b.extend(wire(host));
    }
    cliques.insert(ids.network("net-b"), net_b);
    cliques
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ovs_lab_is_shown_exactly_through_churn_agent_loss_and_aggregator_restart()
-> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let mut running = RunningLab::up(OVS_LAB, "e2eovs", "10.251.1.0/24")?;
    let client = running.client().await?;
    let env = running.env();
    let topology = running.lab.topology().clone();
    let ids = Ids(&topology);
    let mut cliques = ovs_lab_cliques(ids);
    let first = converge(&running, &client, &cliques, "initial discovery").await?;
    tracing::info!(?first, "OVS lab discovered");
    analysis_follows_a_tunnel_nic_going_down(&running, &client, ids).await?;
    converge(&running, &client, &cliques, "compute-1's eth0 back up").await?;
    checks_follow_the_daemons(&running, &client, ids).await?;

    // A maintenance window under review: snapshot, churn, snapshot; the diff is the churn.
    let before_churn = (Expected::of(running.lab.topology()), cliques.clone());
    snapshot(&client, &env, "before-churn").await?;
    running.lab.add_vm(
        "compute-2",
        Vm {
            name: "churn-1".into(),
            networks: vec!["net-a".into()],
            plug: Plug::Ovs,
        },
    )?;
    // churn-1 brings compute-2 into net-a.
    let churn_tap = ids.vm_device("compute-2", "churn-1", "net-a", "tap");
    let compute_2_wire = [
        ids.vedge("compute-2"),
        ids.otep("compute-2"),
        ids.nic("compute-2", "eth0"),
    ];
    let mut churn_1 = members([
        ids.instance("churn-1"),
        churn_tap.clone(),
        ids.network("net-a"),
    ]);
    churn_1.extend(compute_2_wire.clone());
    cliques.insert(ids.instance("churn-1"), churn_1);
    let net_a = cliques.entry(ids.network("net-a")).or_default();
    net_a.extend([ids.instance("churn-1"), churn_tap.clone()]);
    net_a.extend(compute_2_wire);
    converge(&running, &client, &cliques, "a VM added").await?;

    running.lab.remove_vm("vm-2")?;
    // vm-2 was compute-1's only port on net-b.
    cliques.remove(&ids.instance("vm-2"));
    for net in ["net-a", "net-b"] {
        let clique = cliques.entry(ids.network(net)).or_default();
        clique.remove(&ids.instance("vm-2"));
        for device in [
            ids.vm_device("compute-1", "vm-2", net, "tap"),
            ids.qbr("compute-1", "vm-2", net),
            ids.vm_device("compute-1", "vm-2", net, "qvb"),
            ids.vm_device("compute-1", "vm-2", net, "qvo"),
        ] {
            clique.remove(&device);
        }
    }
    let net_b = cliques.entry(ids.network("net-b")).or_default();
    for compute_1 in [
        ids.vedge("compute-1"),
        ids.otep("compute-1"),
        ids.nic("compute-1", "eth0"),
    ] {
        net_b.remove(&compute_1);
    }
    converge(&running, &client, &cliques, "a hybrid-plugged VM removed").await?;
    snapshot(&client, &env, "after-churn").await?;
    let diff = client
        .get(
            "/api/v1/diff",
            &[
                ("env_name", env.as_str()),
                ("from", "before-churn"),
                ("to", "after-churn"),
            ],
        )
        .await?;
    assert_diff_is(
        &diff,
        &before_churn,
        &(Expected::of(running.lab.topology()), cliques.clone()),
    );

    // A host cut off the network: stale; back, its agent resumes its epoch (no snapshot).
    let (_, epoch_before, _) = agent_state(&client, &env, "compute-2").await?;
    running.lab.set_fabric_link("compute-2", false)?;
    wait_for_host(&client, &env, "compute-2", false).await?;
    running.lab.set_fabric_link("compute-2", true)?;
    let resumed_epoch = wait_for_host(&client, &env, "compute-2", true).await?;
    assert_eq!(resumed_epoch, epoch_before, "the agent resumed its epoch");
    assert!(epoch_before.is_some());
    converge(&running, &client, &cliques, "host reconnected").await?;

    // An agent killed: its host goes stale, nothing is deleted. A VM goes while it is down;
    // restarted, the agent resumes its saved epoch and sends only that change.
    // Quiet first: the tunnels to compute-2 failed while it was cut off. And the agent saves
    // its state once a second: a kill before it saved the last change the aggregator
    // acknowledged loses that change and rightly costs a snapshot, so the kill waits until
    // the saved state holds it.
    every_tunnel_ok(&client, &env).await?;
    let state_file =
        calipso_agent::state::StateFile::new(running.lab.agent_state_file("compute-1")?);
    let start = Instant::now();
    loop {
        let (_, _, acknowledged) = agent_state(&client, &env, "compute-1").await?;
        let saved = state_file.load()?.map(|state| state.seq);
        if saved.is_some() && saved == acknowledged {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < CONVERGE,
            "compute-1's agent saved seq {saved:?}, the aggregator acknowledged {acknowledged:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, killed_epoch, _) = agent_state(&client, &env, "compute-1").await?;
    running.lab.kill_agent("compute-1")?;
    wait_for_host(&client, &env, "compute-1", false).await?;
    converge(&running, &client, &cliques, "stale objects are kept").await?;
    running.lab.remove_vm("vm-1")?;
    // vm-1 was compute-1's last port: compute-1 leaves net-a.
    cliques.remove(&ids.instance("vm-1"));
    let net_a = cliques.entry(ids.network("net-a")).or_default();
    for gone in [
        ids.instance("vm-1"),
        ids.vm_device("compute-1", "vm-1", "net-a", "tap"),
        ids.vedge("compute-1"),
        ids.otep("compute-1"),
        ids.nic("compute-1", "eth0"),
    ] {
        net_a.remove(&gone);
    }
    running.lab.start_agent("compute-1")?;
    let restarted_epoch = wait_for_host(&client, &env, "compute-1", true).await?;
    converge(
        &running,
        &client,
        &cliques,
        "agent back, a VM gone meanwhile",
    )
    .await?;
    assert_eq!(
        restarted_epoch, killed_epoch,
        "the restarted agent resumed its epoch"
    );
    let log = std::fs::read_to_string(running.lab.state_dir().join("agent-compute-1.log"))?;
    assert!(log.contains("resuming the saved epoch"), "{log}");
    assert!(!log.contains("sent a snapshot"), "{log}");

    // The aggregator restarted: everything is there again from its store.
    running.lab.stop_aggregator()?;
    running.lab.start_aggregator()?;
    let client = running.client().await?;
    converge(&running, &client, &cliques, "aggregator restarted").await?;
    Ok(())
}

/// Waits until every tunnel endpoint of the environment reports ok.
async fn every_tunnel_ok(client: &ApiClient, env: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let oteps = client
            .get_all(
                "/api/v1/inventory",
                "objects",
                &[("env_name", env), ("type", "otep")],
            )
            .await?;
        let failing: Vec<&Value> = oteps
            .iter()
            .filter(|otep| otep["status"]["level"] != "ok")
            .collect();
        if !oteps.is_empty() && failing.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < CONVERGE,
            "tunnels still failing after {CONVERGE:?}: {failing:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the object's status has `level`; returns the object.
/// A host's ovsdb-server crashing is its vswitch in error, naming the daemon, and ok again once
/// it is back; a DHCP server dying is its namespace in error, until it runs again.
async fn checks_follow_the_daemons(
    running: &RunningLab,
    client: &ApiClient,
    ids: Ids<'_>,
) -> anyhow::Result<()> {
    let env = running.env();
    let vedge = ids.vedge("compute-2");
    running.lab.set_ovsdb_server("compute-2", false)?;
    let failing = wait_for_status(client, &env, &vedge, "error").await?;
    let text = failing["status"]["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("ovsdb-server does not answer on "),
        "{failing:#}"
    );
    running.lab.set_ovsdb_server("compute-2", true)?;
    wait_for_status(client, &env, &vedge, "ok").await?;

    let dhcp = ids.dhcp("network-1", "net-a");
    running.lab.set_dhcp_server("network-1", "net-a", false)?;
    let failing = wait_for_status(client, &env, &dhcp, "error").await?;
    let namespace = running.lab.topology().dhcp_netns("net-a");
    assert_eq!(
        failing["status"]["text"],
        format!("no DHCP server: no process in {namespace}"),
        "{failing:#}"
    );
    running.lab.set_dhcp_server("network-1", "net-a", true)?;
    let serving = wait_for_status(client, &env, &dhcp, "ok").await?;
    let text = serving["status"]["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("dnsmasq (pid "), "{serving:#}");
    Ok(())
}

async fn wait_for_status(
    client: &ApiClient,
    env: &str,
    id: &str,
    level: &str,
) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        let object = client
            .get(&format!("/api/v1/inventory/{id}"), &[("env_name", env)])
            .await?;
        if object["status"]["level"] == level {
            return Ok(object);
        }
        anyhow::ensure!(
            start.elapsed() < CONVERGE,
            "{id} is not {level} after {CONVERGE:?}: {object:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Marks now under `name`, once what the API shows is also stored.
async fn snapshot(client: &ApiClient, env: &str, name: &str) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = serde_json::json!({"env_name": env, "name": name});
    client
        .json(reqwest::Method::POST, "/api/v1/snapshots", &[], Some(&body))
        .await?;
    Ok(())
}

/// A diff must hold exactly what differs between two states of the lab: its objects and
/// links as the topology declares them, its cliques as the test states them.
fn assert_diff_is(diff: &Value, before: &(Expected, Cliques), after: &(Expected, Cliques)) {
    let ids = |list: &Value| -> BTreeSet<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|v| text(v.get("id").unwrap_or(v)))
            .collect()
    };
    let minus = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> BTreeSet<String> {
        a.difference(b).cloned().collect()
    };
    let (old, new) = (&before.0, &after.0);
    assert_eq!(
        ids(&diff["objects"]["added"]),
        minus(&new.objects, &old.objects),
        "{diff:#}"
    );
    assert_eq!(
        ids(&diff["objects"]["removed"]),
        minus(&old.objects, &new.objects),
        "{diff:#}"
    );
    assert_eq!(
        ids(&diff["objects"]["changed"]),
        BTreeSet::new(),
        "{diff:#}"
    );
    let links = |list: &Value| -> BTreeSet<LinkTriple> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                (
                    text(&l["link_type"]),
                    text(&l["source"]),
                    text(&l["target"]),
                )
            })
            .collect()
    };
    let added: BTreeSet<LinkTriple> = new.links.difference(&old.links).cloned().collect();
    let removed: BTreeSet<LinkTriple> = old.links.difference(&new.links).cloned().collect();
    assert_eq!(links(&diff["links"]["added"]), added, "{diff:#}");
    assert_eq!(links(&diff["links"]["removed"]), removed, "{diff:#}");
    let (old, new) = (&before.1, &after.1);
    let keys = |c: &Cliques| c.keys().cloned().collect::<BTreeSet<String>>();
    assert_eq!(
        ids(&diff["cliques"]["added"]),
        minus(&keys(new), &keys(old))
    );
    assert_eq!(
        ids(&diff["cliques"]["removed"]),
        minus(&keys(old), &keys(new))
    );
    let changed: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> =
        diff["cliques"]["changed"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let set = |key: &str| ids(&c[key]);
                (
                    text(&c["focal_point"]),
                    (set("added_nodes"), set("removed_nodes")),
                )
            })
            .collect();
    let expected: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = old
        .iter()
        .filter_map(|(focal, members)| {
            let now = new.get(focal)?;
            (now != members).then(|| (focal.clone(), (minus(now, members), minus(members, now))))
        })
        .collect();
    assert_eq!(changed, expected, "{diff:#}");
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn listed(value: &Value, key: &str) -> Vec<String> {
    value[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| text(&v["id"]))
        .collect()
}

fn sorted<const N: usize>(ids: [String; N]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

/// Diagnosis, impact and path on the OVS lab while compute-1's tunnel NIC is down (its agent
/// stays connected over the management network), and bad questions.
async fn analysis_follows_a_tunnel_nic_going_down(
    running: &RunningLab,
    client: &ApiClient,
    ids: Ids<'_>,
) -> anyhow::Result<()> {
    let env = running.env();
    let (vm_2, vm_3) = (ids.instance("vm-2"), ids.instance("vm-3"));
    // vm-2 (compute-1) to vm-3 (compute-2) on net-b: out of vm-2's hybrid plug into br-int,
    // through compute-1's tunnel endpoint and eth0, across the tunnel to compute-2's eth0 and
    // endpoint, into vm-3's hybrid plug.
    let vm_2_to_vm_3 = vec![
        vm_2.clone(),
        ids.vm_device("compute-1", "vm-2", "net-b", "tap"),
        ids.qbr("compute-1", "vm-2", "net-b"),
        ids.vm_device("compute-1", "vm-2", "net-b", "qvb"),
        ids.vm_device("compute-1", "vm-2", "net-b", "qvo"),
        ids.vedge("compute-1"),
        ids.otep("compute-1"),
        ids.nic("compute-1", "eth0"),
        ids.nic("compute-2", "eth0"),
        ids.otep("compute-2"),
        ids.vedge("compute-2"),
        ids.vm_device("compute-2", "vm-3", "net-b", "qvo"),
        ids.vm_device("compute-2", "vm-3", "net-b", "qvb"),
        ids.qbr("compute-2", "vm-3", "net-b"),
        ids.vm_device("compute-2", "vm-3", "net-b", "tap"),
        vm_3.clone(),
    ];
    let path_query = [
        ("env_name", env.as_str()),
        ("from", vm_2.as_str()),
        ("to", vm_3.as_str()),
    ];
    let path = client.get("/api/v1/path", &path_query).await?;
    let hops: Vec<String> = path["hops"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| text(&h["id"]))
        .collect();
    assert_eq!(hops, vm_2_to_vm_3, "{path:#}");
    assert_eq!(path["state"], "up", "{path:#}");
    assert_eq!(path["networks"], serde_json::json!([ids.network("net-b")]));

    let vm_1 = ids.instance("vm-1");
    let eth0 = ids.nic("compute-1", "eth0");
    let diagnosis_of_vm_1 = format!("/api/v1/cliques/{vm_1}/diagnosis");
    let healthy = client
        .get(&diagnosis_of_vm_1, &[("env_name", &env)])
        .await?;
    assert_eq!(healthy["findings"], serde_json::json!([]), "{healthy:#}");

    running.lab.set_device("compute-1", "eth0", false)?;
    // The kernel reports eth0 down at once; the agent's NIC check says why a moment later.
    let checked = serde_json::json!(["down", "status error: administratively down"]);
    let start = Instant::now();
    let diagnosis = loop {
        let diagnosis = client
            .get(&diagnosis_of_vm_1, &[("env_name", &env)])
            .await?;
        if diagnosis["findings"][0]["id"] == eth0.as_str()
            && diagnosis["findings"][0]["problems"] == checked
        {
            break diagnosis;
        }
        anyhow::ensure!(
            start.elapsed() < CONVERGE,
            "eth0 down (and its check in error) is not the first cause of vm-1's trouble: {diagnosis:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The VM's clique is in error, and names the NIC.
    let clique = client
        .get(&format!("/api/v1/cliques/{vm_1}"), &[("env_name", &env)])
        .await?;
    assert_eq!(
        clique["status"],
        serde_json::json!({
            "level": "error",
            "text": "host_pnic eth0 on compute-1: administratively down",
            "member": eth0,
        }),
        "{clique:#}"
    );
    assert!(
        diagnosis["findings"][0]["since"].is_string(),
        "{diagnosis:#}"
    );
    let to_vm_1: Vec<String> = diagnosis["findings"][0]["path"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| text(&h["id"]))
        .collect();
    assert_eq!(
        to_vm_1,
        vec![
            eth0.clone(),
            ids.otep("compute-1"),
            ids.vedge("compute-1"),
            ids.vm_device("compute-1", "vm-1", "net-a", "tap"),
            vm_1.clone(),
        ]
    );

    let impact = client
        .get("/api/v1/impact", &[("env_name", &env), ("object", &eth0)])
        .await?;
    let dependents = &impact["dependents"];
    assert_eq!(
        listed(dependents, "instance"),
        sorted([vm_1.clone(), vm_2.clone()])
    );
    assert_eq!(
        listed(dependents, "host"),
        vec!["host:compute-1".to_owned()]
    );
    assert_eq!(
        listed(dependents, "network"),
        sorted([ids.network("net-a"), ids.network("net-b")])
    );
    assert_eq!(
        listed(dependents, "project"),
        vec![format!(
            "project:{}",
            calipso_tests::lab::cloud::project_id(ids.0)
        )]
    );
    assert!(dependents.get("vservice").is_none(), "{impact:#}");

    // Its tunnels dead, compute-1's tunnel endpoint is in error too (its own check): the path
    // from vm-2 breaks there first, above eth0.
    let otep = ids.otep("compute-1");
    let failing = wait_for_status(client, &env, &otep, "error").await?;
    assert!(
        failing["status"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("0 of ")),
        "{failing:#}"
    );
    let cut = client.get("/api/v1/path", &path_query).await?;
    assert_eq!(cut["state"], "down", "{cut:#}");
    assert_eq!(cut["broken_at"]["id"], otep.as_str(), "{cut:#}");
    let down: Vec<String> = cut["hops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["state"] == "down")
        .map(|h| text(&h["id"]))
        .collect();
    assert!(down.contains(&eth0) && down.contains(&otep), "{cut:#}");
    running.lab.set_device("compute-1", "eth0", true)?;
    // Back up: every host's tunnels (those to compute-1 lost pings meanwhile) work again
    // before anything else is compared.
    every_tunnel_ok(client, &env).await?;

    // Bad questions get a 4xx that names the problem.
    let (status, message) = calipso_tests::refusal(
        client
            .get(
                "/api/v1/impact",
                &[("env_name", &env), ("object", "vnic:nowhere:x")],
            )
            .await,
    );
    assert_eq!(status, 404);
    assert!(message.contains("vnic:nowhere:x"), "{message}");
    let (status, message) = calipso_tests::refusal(
        client
            .get(
                "/api/v1/cliques/host:compute-1/diagnosis",
                &[("env_name", &env)],
            )
            .await,
    );
    assert_eq!(
        (status, message.as_str()),
        (404, "`host:compute-1` has no clique")
    );
    let (status, message) = calipso_tests::refusal(
        client
            .get(
                "/api/v1/path",
                &[
                    ("env_name", env.as_str()),
                    ("from", vm_2.as_str()),
                    ("to", "host:compute-1"),
                ],
            )
            .await,
    );
    assert_eq!(status, 400);
    assert!(
        message.contains("a path runs between instances, vservices or vNICs"),
        "{message}"
    );
    let (status, _) =
        calipso_tests::refusal(client.get("/api/v1/impact", &[("env_name", &env)]).await);
    assert_eq!(status, 400, "an impact names at least one object");
    Ok(())
}

const LXB_LAB: &str = include_str!("../labs/lxb-3.toml");

/// What each VM, namespace and network of `lxb-3.toml` depends on: on a Linux bridge host a
/// port's bridge (`brq…`, one per network), the network's VXLAN device on that bridge, and the
/// fabric NIC under it. DHCP and router ports reach their bridge through a veth.
fn lxb_lab_cliques(ids: Ids<'_>) -> Cliques {
    let wire = |host: &str, net: &str| {
        [
            ids.brq(host, net),
            ids.vxlan(host, net),
            ids.nic(host, "eth0"),
            ids.network(net),
        ]
    };
    let tap = |host: &str, vm: &str, net: &str| ids.vm_device(host, vm, net, "tap");
    let mut cliques = Cliques::new();
    let mut vm_1 = members([ids.instance("vm-1"), tap("compute-1", "vm-1", "net-a")]);
    vm_1.extend(wire("compute-1", "net-a"));
    cliques.insert(ids.instance("vm-1"), vm_1);
    let mut vm_2 = members([
        ids.instance("vm-2"),
        tap("compute-1", "vm-2", "net-a"),
        tap("compute-1", "vm-2", "net-b"),
    ]);
    vm_2.extend(wire("compute-1", "net-a"));
    vm_2.extend(wire("compute-1", "net-b"));
    cliques.insert(ids.instance("vm-2"), vm_2);
    let mut vm_3 = members([ids.instance("vm-3"), tap("compute-2", "vm-3", "net-b")]);
    vm_3.extend(wire("compute-2", "net-b"));
    cliques.insert(ids.instance("vm-3"), vm_3);
    let dhcp_members = |net: &str| {
        [
            ids.dhcp("network-1", net),
            ids.dhcp_port("network-1", net, Switch::Lxb),
            ids.dhcp_veth("network-1", net),
        ]
    };
    let router_members = |net: &str| {
        [
            ids.router_port("network-1", "r1", net),
            ids.router_veth("network-1", "r1", net),
        ]
    };
    let mut router = members([ids.router("network-1", "r1")]);
    for net in ["net-a", "net-b"] {
        let mut dhcp = members(dhcp_members(net));
        dhcp.extend(wire("network-1", net));
        cliques.insert(ids.dhcp("network-1", net), dhcp);
        router.extend(router_members(net));
        router.extend(wire("network-1", net));
    }
    cliques.insert(ids.router("network-1", "r1"), router);
    let mut net_a = members([
        ids.router("network-1", "r1"),
        ids.instance("vm-1"),
        tap("compute-1", "vm-1", "net-a"),
        ids.instance("vm-2"),
        tap("compute-1", "vm-2", "net-a"),
    ]);
    net_a.extend(dhcp_members("net-a"));
    net_a.extend(router_members("net-a"));
    net_a.extend(wire("network-1", "net-a"));
    net_a.extend(wire("compute-1", "net-a"));
    cliques.insert(ids.network("net-a"), net_a);
    let mut net_b = members([
        ids.router("network-1", "r1"),
        ids.instance("vm-2"),
        tap("compute-1", "vm-2", "net-b"),
        ids.instance("vm-3"),
        tap("compute-2", "vm-3", "net-b"),
    ]);
    net_b.extend(dhcp_members("net-b"));
    net_b.extend(router_members("net-b"));
    for host in ["network-1", "compute-1", "compute-2"] {
        net_b.extend(wire(host, "net-b"));
    }
    cliques.insert(ids.network("net-b"), net_b);
    cliques
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linux_bridge_lab_is_shown_exactly_as_networks_come_and_go() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let mut running = RunningLab::up(LXB_LAB, "e2elxb", "10.251.2.0/24")?;
    let client = running.client().await?;
    let topology = running.lab.topology().clone();
    let ids = Ids(&topology);
    let mut cliques = lxb_lab_cliques(ids);
    converge(&running, &client, &cliques, "initial discovery").await?;

    // A network new to two hosts: bridges, VXLAN devices and forwarding entries appear.
    let on_net_c = |host: &str, vm: &str| {
        [
            ids.instance(vm),
            ids.vm_device(host, vm, "net-c", "tap"),
            ids.brq(host, "net-c"),
            ids.vxlan(host, "net-c"),
            ids.nic(host, "eth0"),
        ]
    };
    for (host, vm) in [("compute-2", "churn-1"), ("compute-1", "churn-2")] {
        running.lab.add_vm(
            host,
            Vm {
                name: vm.into(),
                networks: vec!["net-c".into()],
                plug: Plug::default(),
            },
        )?;
        let mut clique = members(on_net_c(host, vm));
        clique.insert(ids.network("net-c"));
        cliques.insert(ids.instance(vm), clique.clone());
        cliques
            .entry(ids.network("net-c"))
            .or_default()
            .extend(clique);
        converge(
            &running,
            &client,
            &cliques,
            &format!("{vm} on a new network"),
        )
        .await?;
    }
    // The last VM of a network on a host leaves: its bridge and tunnels go.
    running.lab.remove_vm("churn-1")?;
    cliques.remove(&ids.instance("churn-1"));
    let net_c = cliques.entry(ids.network("net-c")).or_default();
    for gone in on_net_c("compute-2", "churn-1") {
        net_c.remove(&gone);
    }
    converge(&running, &client, &cliques, "a network left a host").await?;
    running.lab.remove_vm("vm-3")?;
    cliques.remove(&ids.instance("vm-3"));
    let net_b = cliques.entry(ids.network("net-b")).or_default();
    for gone in [
        ids.instance("vm-3"),
        ids.vm_device("compute-2", "vm-3", "net-b", "tap"),
        ids.brq("compute-2", "net-b"),
        ids.vxlan("compute-2", "net-b"),
        ids.nic("compute-2", "eth0"),
    ] {
        net_b.remove(&gone);
    }
    converge(&running, &client, &cliques, "compute-2 without VMs").await?;
    Ok(())
}
