//! End to end on `calipso-lab`: three-host OVS and Linux bridge clouds in namespaces, a real
//! agent per host inside its namespace, a real aggregator reading the lab's Keystone/Neutron
//! double through its OpenStack adapter; the API must return exactly the declared topology's
//! objects, links and cliques ([`Expected`]: instance, vservice and network cliques), follow
//! VM churn (agents and the control plane alike), mark a host
//! whose agent was killed stale and take it back when the agent returns, and lose nothing
//! over an aggregator restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use calipso_aggregator::client::ApiClient;
use calipso_aggregator::cliques::default_clique_types;
use calipso_tests::lab::expect::{Expected, LinkTriple};
use calipso_tests::lab::topology::{Plug, Vm};
use calipso_tests::lab::{Lab, LabOptions, Topology};
use serde_json::Value;

/// Discovery of a whole lab, and each change, must show within this.
const CONVERGE: Duration = Duration::from_secs(30);

/// A lab that is taken down when the test ends, whatever happened.
struct RunningLab {
    lab: Lab,
    /// Holds the state directory for the lab's life.
    _state: tempfile::TempDir,
}

impl Drop for RunningLab {
    fn drop(&mut self) {
        if let Err(error) = Lab::down(self.lab.state_dir()) {
            eprintln!("lab down: {error:#}");
        }
    }
}

impl RunningLab {
    /// The lab of a checked-in topology file, under its own name, fabric and environment so
    /// that it runs beside a lab an operator brought up from the same file.
    fn up(topology: &str, name: &str, fabric: &str) -> anyhow::Result<Self> {
        let mut topology: Topology = toml::from_str(topology)?;
        topology.name = name.into();
        topology.environment = format!("{}-e2e", topology.environment);
        topology.fabric = fabric.parse().map_err(anyhow::Error::msg)?;
        // What a crashed run of this test left behind.
        Lab::sweep(&topology.name)?;
        let state = tempfile::tempdir()?;
        let options = LabOptions {
            state_dir: state.path().join("lab"),
            agent_bin: calipso_tests::workspace_binary("calipso-agent", "calipso-agent", false)?,
            aggregator_bin: calipso_tests::workspace_binary(
                "calipso-aggregator",
                "calipso-aggregator",
                false,
            )?,
            lab_bin: calipso_tests::workspace_binary("calipso-tests", "calipso-lab", false)?,
            api_listen: "127.0.0.1:0".parse()?,
        };
        let lab = Lab::up(topology, &options)?;
        Ok(RunningLab { lab, _state: state })
    }

    async fn client(&self) -> anyhow::Result<ApiClient> {
        let mut client = ApiClient::new(&self.lab.api_url())?;
        client.login("admin", self.lab.admin_password()).await?;
        Ok(client)
    }

    fn env(&self) -> String {
        self.lab.topology().environment.clone()
    }
}

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

/// Waits until the API shows exactly the lab's declared topology.
async fn converge(
    running: &RunningLab,
    client: &ApiClient,
    step: &str,
) -> anyhow::Result<Duration> {
    let expected = Expected::of(running.lab.topology());
    let cliques = expected.cliques(&default_clique_types());
    let start = Instant::now();
    loop {
        let seen = observe(client, &running.env()).await?;
        if seen.objects == expected.objects
            && seen.links == expected.links
            && seen.cliques == cliques
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
                    &clique_keys(&cliques),
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
        let (state, epoch) = agent_state(client, env, host).await?;
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

async fn agent_state(
    client: &ApiClient,
    env: &str,
    host: &str,
) -> anyhow::Result<(String, Option<u64>)> {
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
        agent["epoch"].as_u64(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ovs_lab_is_shown_exactly_through_churn_agent_loss_and_aggregator_restart()
-> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let mut running = RunningLab::up(OVS_LAB, "e2eovs", "10.251.1.0/24")?;
    let client = running.client().await?;
    let env = running.env();
    let first = converge(&running, &client, "initial discovery").await?;
    tracing::info!(?first, "OVS lab discovered");
    // What the adapter read from the control plane joined what the agents saw: net-a's clique
    // holds the tunnel NICs of the two hosts with ports on it.
    let topology = running.lab.topology();
    let net_a = format!("network:{}", topology.network_id("net-a"));
    let cliques = Expected::of(topology).cliques(&default_clique_types());
    assert_eq!(
        cliques.get(&net_a),
        Some(&BTreeSet::from([
            net_a.clone(),
            "host_pnic:network-1:eth0".to_owned(),
            "host_pnic:compute-1:eth0".to_owned(),
        ]))
    );

    running.lab.add_vm(
        "compute-2",
        Vm {
            name: "churn-1".into(),
            networks: vec!["net-a".into()],
            plug: Plug::Ovs,
        },
    )?;
    converge(&running, &client, "a VM added").await?;
    running.lab.remove_vm("vm-2")?;
    converge(&running, &client, "a hybrid-plugged VM removed").await?;

    // A host cut off the network: stale; back, its agent resumes its epoch (no snapshot).
    let (_, epoch_before) = agent_state(&client, &env, "compute-2").await?;
    running.lab.set_fabric_link("compute-2", false)?;
    wait_for_host(&client, &env, "compute-2", false).await?;
    running.lab.set_fabric_link("compute-2", true)?;
    let resumed_epoch = wait_for_host(&client, &env, "compute-2", true).await?;
    assert_eq!(resumed_epoch, epoch_before, "the agent resumed its epoch");
    assert!(epoch_before.is_some());
    converge(&running, &client, "host reconnected").await?;

    // An agent killed: its host goes stale, nothing is deleted. A VM goes while it is down;
    // restarted, the agent resumes its saved epoch and sends only that change.
    let (_, killed_epoch) = agent_state(&client, &env, "compute-1").await?;
    running.lab.kill_agent("compute-1")?;
    wait_for_host(&client, &env, "compute-1", false).await?;
    converge(&running, &client, "stale objects are kept").await?;
    running.lab.remove_vm("vm-1")?;
    running.lab.start_agent("compute-1")?;
    let restarted_epoch = wait_for_host(&client, &env, "compute-1", true).await?;
    converge(&running, &client, "agent back, a VM gone meanwhile").await?;
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
    converge(&running, &client, "aggregator restarted").await?;
    Ok(())
}

const LXB_LAB: &str = include_str!("../labs/lxb-3.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linux_bridge_lab_is_shown_exactly_as_networks_come_and_go() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let mut running = RunningLab::up(LXB_LAB, "e2elxb", "10.251.2.0/24")?;
    let client = running.client().await?;
    converge(&running, &client, "initial discovery").await?;

    // A network new to two hosts: bridges, VXLAN devices and forwarding entries appear.
    for (host, vm) in [("compute-2", "churn-1"), ("compute-1", "churn-2")] {
        running.lab.add_vm(
            host,
            Vm {
                name: vm.into(),
                networks: vec!["net-c".into()],
                plug: Plug::default(),
            },
        )?;
        converge(&running, &client, &format!("{vm} on a new network")).await?;
    }
    // The last VM of a network on a host leaves: its bridge and tunnels go.
    running.lab.remove_vm("churn-1")?;
    converge(&running, &client, "a network left a host").await?;
    running.lab.remove_vm("vm-3")?;
    converge(&running, &client, "compute-2 without VMs").await?;
    Ok(())
}
