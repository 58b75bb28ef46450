//! The OpenStack adapter against the Keystone/Neutron double and a real RabbitMQ: a full read,
//! notifications applied as they arrive, bad notifications refused without stopping it,
//! periodic re-reads, revoked tokens, configuration changes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calipso_aggregator::cliques::EnvironmentConfig;
use calipso_aggregator::ingest::{AdminChange, DurableSink};
use calipso_aggregator::store::{MessageQuery, Store};
use calipso_proto::AttrValue;
use calipso_tests::openstack::{self, CloudDocuments, FakeCloud};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const ENVIRONMENT: &str = "os-lab";
const PROJECT: &str = "75c0eb79ff4a42b0ae4973c8375ddf40";
const NET_A: &str = "8673c48a-f137-4497-b25d-08b7b218fd17";
const NET_B: &str = "b6fd5175-4b22-4256-9b1a-9fc4b9dce1fe";

fn documents() -> CloudDocuments {
    CloudDocuments {
        zones: vec![openstack::zone("nova", &["compute-1", "compute-2"])],
        projects: vec![
            json!({"id": PROJECT, "name": "admin", "domain_id": "default", "enabled": true}),
        ],
        networks: vec![
            openstack::network(NET_A, "net-a", PROJECT, "vxlan", 101),
            openstack::network(NET_B, "net-b", PROJECT, "vlan", 202),
        ],
        subnets: vec![openstack::subnet(
            "cae3c81d-9a27-48c4-b8f6-32867ca03134",
            NET_A,
            PROJECT,
            "172.16.12.0/24",
        )],
        ports: vec![
            openstack::port(
                "p-1",
                NET_A,
                PROJECT,
                "fa:16:3e:00:00:01",
                "compute-1",
                "compute:nova",
                "vm-1",
            ),
            openstack::port(
                "p-2",
                NET_A,
                PROJECT,
                "fa:16:3e:00:00:02",
                "compute-2",
                "compute:nova",
                "vm-2",
            ),
            openstack::port(
                "p-3",
                NET_B,
                PROJECT,
                "fa:16:3e:00:00:03",
                "network-1",
                "network:dhcp",
                "dhcp-b",
            ),
        ],
    }
}

fn ids(sink: &DurableSink) -> BTreeSet<String> {
    sink.engine()
        .environment(ENVIRONMENT)
        .map(|env| env.graph.nodes().map(|n| n.id().to_string()).collect())
        .unwrap_or_default()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn config(
    cloud: &FakeCloud,
    broker: &openstack::Broker,
    exchange: &str,
    resync: &str,
) -> EnvironmentConfig {
    let mut config = EnvironmentConfig::named(ENVIRONMENT);
    let entries = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    config.configuration.insert(
        "OpenStack".into(),
        entries(&[
            ("url", &cloud.url),
            ("user", "admin"),
            ("pwd", "s3cret"),
            ("resync_interval", resync),
        ]),
    );
    config.configuration.insert(
        "AMQP".into(),
        entries(&[
            ("host", &broker.host),
            ("port", &broker.port.to_string()),
            ("user", &broker.user),
            ("pwd", &broker.password),
            ("exchanges", exchange),
        ]),
    );
    config
}

/// The messages the adapter recorded, oldest first.
async fn adapter_messages(
    sink: &DurableSink,
) -> anyhow::Result<Vec<calipso_aggregator::store::StoredMessage>> {
    Ok(sink
        .store()
        .query_messages(&MessageQuery {
            source: Some("OpenStack".into()),
            limit: 100,
            ..MessageQuery::default()
        })
        .await?)
}

/// Waits until the store holds an adapter message containing `needle` (the engine shows a
/// change before its commit, and messages are read from the store); returns them all.
async fn wait_for_message(
    sink: &DurableSink,
    needle: &str,
) -> anyhow::Result<Vec<calipso_aggregator::store::StoredMessage>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let messages = adapter_messages(sink).await?;
        if messages.iter().any(|m| m.message.text.contains(needle)) {
            return Ok(messages);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no message with `{needle}`: {messages:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn network_cidrs(sink: &DurableSink, network: &str) -> Vec<String> {
    let engine = sink.engine();
    let Some(node) = engine.environment(ENVIRONMENT).and_then(|env| {
        env.graph
            .get(&calipso_proto::ObjectId::from_raw(format!(
                "network:{network}"
            )))
            .cloned()
    }) else {
        return Vec::new();
    };
    node.texts("cidrs").into_iter().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_reads_the_cloud_and_follows_its_notifications() -> anyhow::Result<()> {
    let broker = openstack::broker()?;
    let exchange = format!("neutron-test-{:08x}", rand::random::<u32>());
    let cloud = FakeCloud::start(documents(), "admin", "s3cret", 2).await?;
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite:{}", dir.path().join("store.db").display());
    let sink = Arc::new(DurableSink::connect(&store, calipso_tests::secret_key()).await?);
    sink.admin(AdminChange::Environment(config(
        &cloud, &broker, &exchange, "3600",
    )))
    .await?
    .map_err(anyhow::Error::msg)?;
    let shutdown = CancellationToken::new();
    calipso_aggregator::openstack::supervise(sink.clone(), shutdown.clone());

    // The full read, across Neutron's pages of two.
    let read: BTreeSet<String> = [
        "region:regionone".to_owned(),
        "availability_zone:nova".to_owned(),
        format!("project:{PROJECT}"),
        format!("network:{NET_A}"),
        format!("network:{NET_B}"),
        "port:p-1".into(),
        "port:p-2".into(),
        "port:p-3".into(),
    ]
    .into();
    wait_for("the full read", || ids(&sink) == read).await?;
    assert_eq!(network_cidrs(&sink, NET_A), vec!["172.16.12.0/24"]);

    // Notifications, as Neutron sends them after its database changed.
    let recorded: serde_json::Value = serde_json::from_str(include_str!(
        "../../../shared/fixtures/openstack/notifications/port.create.end.json"
    ))?;
    let mut created = recorded.clone();
    created["payload"]["port"]["network_id"] = json!(NET_B);
    let created_port = created["payload"]["port"].clone();
    cloud.update(|d| d.ports.push(created_port));
    openstack::publish(&broker.url, &exchange, b"{this is not a notification").await?;
    openstack::publish(&broker.url, &exchange, created.to_string().as_bytes()).await?;
    let port_id = "port:1233445-75b6-4c05-9480-4bc648845c6f";
    wait_for("the created port", || ids(&sink).contains(port_id)).await?;
    {
        let engine = sink.engine();
        let port = engine
            .environment(ENVIRONMENT)
            .and_then(|env| {
                env.graph
                    .get(&calipso_proto::ObjectId::from_raw(port_id))
                    .cloned()
            })
            .ok_or_else(|| anyhow::anyhow!("no port"))?;
        assert_eq!(port.text("binding:host_id"), Some("node-223.cisco.com"));
        assert_eq!(port.object.host, None);
    }
    let messages = wait_for_message(&sink, "notification rejected: not JSON").await?;
    assert!(
        messages[0].message.text.starts_with("read 1 regions, 1 availability zones, 1 projects, 2 networks, 1 subnets, 3 ports from http://"),
        "the first read is reported: {messages:?}"
    );

    let subnet = openstack::subnet("s-b", NET_B, PROJECT, "10.20.0.0/24");
    cloud.update(|d| d.subnets.push(subnet.clone()));
    let event = openstack::notification("subnet.create.end", json!({"subnet": subnet}));
    openstack::publish(&broker.url, &exchange, event.to_string().as_bytes()).await?;
    wait_for("the subnet's CIDR on its network", || {
        network_cidrs(&sink, NET_B) == vec!["10.20.0.0/24"]
    })
    .await?;

    cloud.update(|d| d.ports.retain(|p| p["id"] != "p-1"));
    let event = openstack::notification("port.delete.end", json!({"port_id": "p-1"}));
    openstack::publish(&broker.url, &exchange, event.to_string().as_bytes()).await?;
    wait_for("the deleted port gone", || !ids(&sink).contains("port:p-1")).await?;

    // A change the bus never told is found by the next full read; a revoked token is renewed.
    cloud.update(|d| d.ports.retain(|p| p["id"] != "p-2"));
    cloud.revoke_tokens();
    let issued = cloud.tokens_issued();
    sink.admin(AdminChange::Environment(config(
        &cloud, &broker, &exchange, "1",
    )))
    .await?
    .map_err(anyhow::Error::msg)?;
    wait_for("the re-read without p-2", || {
        !ids(&sink).contains("port:p-2")
    })
    .await?;
    assert!(cloud.tokens_issued() > issued);
    let network = sink
        .engine()
        .environment(ENVIRONMENT)
        .and_then(|env| {
            env.graph
                .get(&calipso_proto::ObjectId::from_raw(format!(
                    "network:{NET_B}"
                )))
                .cloned()
        })
        .ok_or_else(|| anyhow::anyhow!("no network"))?;
    assert_eq!(
        network
            .object
            .attributes
            .extra
            .get("provider:segmentation_id"),
        Some(&AttrValue::Int(202))
    );

    // The entry removed: the adapter stops, what it wrote is closed, and the environment (which
    // no agent reports into) can be removed.
    sink.admin(AdminChange::Environment(EnvironmentConfig::named(
        ENVIRONMENT,
    )))
    .await?
    .map_err(anyhow::Error::msg)?;
    wait_for("the control plane's objects closed", || {
        ids(&sink).is_empty()
    })
    .await?;
    wait_for_message(&sink, "the control plane's objects are closed").await?;
    sink.admin(AdminChange::RemoveEnvironment(ENVIRONMENT.into()))
        .await?
        .map_err(anyhow::Error::msg)?;
    shutdown.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cloud_is_reported_once_and_retried() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite:{}", dir.path().join("store.db").display());
    let sink = Arc::new(DurableSink::connect(&store, calipso_tests::secret_key()).await?);
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    drop(listener);
    let mut config = EnvironmentConfig::named(ENVIRONMENT);
    config.configuration.insert(
        "OpenStack".into(),
        [("url", url.as_str()), ("user", "admin"), ("pwd", "x")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    sink.admin(AdminChange::Environment(config))
        .await?
        .map_err(anyhow::Error::msg)?;
    let shutdown = CancellationToken::new();
    calipso_aggregator::openstack::supervise(sink.clone(), shutdown.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if !adapter_messages(&sink).await?.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no message about the unreachable cloud"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two more retries (1 s, then 2 s) happen without another message.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let messages = adapter_messages(&sink).await?;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].message.text.contains("cannot read the cloud")
            && messages[0].message.text.contains(&url),
        "{messages:?}"
    );
    shutdown.cancel();
    Ok(())
}
