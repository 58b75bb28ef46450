//! The agent's own health checks on real kernel objects (a veth, a tap, a bridge, a DHCP
//! namespace and its process), their results over QUIC into the durable sink, and what the
//! aggregator makes of them: statuses, `Monitoring` messages, clique roll-ups. Needs root.

use std::sync::Arc;
use std::time::Duration;

use calipso_agent::collect::{Collector, HostFacts, Kernel, Scope};
use calipso_agent::config::HealthConfig;
use calipso_agent::health::interfaces::RateLimits;
use calipso_agent::health::{BridgeCheck, Check, InterfaceCheck, Monitor, ServiceCheck};
use calipso_agent::outbox::Outbox;
use calipso_aggregator::client::ApiClient;
use calipso_aggregator::ingest::DurableSink;
use calipso_aggregator::store::{MessageQuery, Store};
use calipso_proto::{ObjectId, ObjectType, StatusLevel};
use calipso_tests::netlab::NetLab;
use calipso_tests::{ENV, Pki, TestAgent, TestAggregator, agent_config, wait_until};
use tokio_util::sync::CancellationToken;

const HOST: &str = "compute-7";
const WAIT: Duration = Duration::from_secs(15);
/// What the check says of a DHCP namespace with no live process.
const NO_DHCP_SERVER: &str = "no DHCP server: no process in qdhcp-net-a";

/// The status the aggregator holds for an object, as (level, text).
fn status_of(sink: &DurableSink, id: &ObjectId) -> Option<(StatusLevel, String)> {
    let engine = sink.engine();
    let node = engine.environment(ENV)?.graph.get(id)?;
    Some((node.object.status.level, node.object.status.text.clone()))
}

/// A host's agent (host facts, the kernel collector over a lab namespace, `more` collectors,
/// and `checks` every second) over QUIC into a durable sink.
struct Rig {
    sink: Arc<DurableSink>,
    aggregator: TestAggregator<DurableSink>,
    agent: TestAgent,
    stop: CancellationToken,
    _pki: Pki,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(
        lab: &NetLab,
        more: Vec<Box<dyn Collector>>,
        checks: Vec<Arc<dyn Check>>,
    ) -> anyhow::Result<Self> {
        let health = HealthConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            ..HealthConfig::default()
        };
        Self::start_with(lab, more, checks, health).await
    }

    async fn start_with(
        lab: &NetLab,
        more: Vec<Box<dyn Collector>>,
        checks: Vec<Arc<dyn Check>>,
        health: HealthConfig,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let sink = calipso_tests::sqlite_sink(dir.path()).await?;
        let pki = Pki::new()?;
        let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
        let (tls, _) = pki.agent(HOST)?;
        let config = agent_config(aggregator.addr);
        let outbox = Outbox::new(HOST, ENV, 1, config.outbox_max_bytes);
        let stop = CancellationToken::new();
        let scope = Scope {
            host: HOST.into(),
            environment: ENV.into(),
        };
        // The host object first: the aggregator takes no object whose parent it does not know.
        let host_facts = Box::new(HostFacts::new(scope.clone(), Duration::from_secs(60)));
        tokio::spawn(host_facts.follow(outbox.clone(), stop.clone()));
        let kernel: Box<dyn Collector> = Box::new(Kernel::new(scope, lab.kernel_options()));
        for collector in std::iter::once(kernel).chain(more) {
            tokio::spawn(collector.follow(outbox.clone(), stop.clone()));
        }
        let agent = TestAgent::with_outbox(outbox.clone(), &tls, &config)?;
        tokio::spawn(Monitor::new(checks, health).run(
            outbox,
            agent.uplink.health_overrides(),
            stop.clone(),
        ));
        Ok(Rig {
            sink,
            aggregator,
            agent,
            stop,
            _pki: pki,
            _dir: dir,
        })
    }

    async fn stop(self) {
        self.stop.cancel();
        self.agent.stop().await;
        self.aggregator.stop().await;
    }

    /// The API on this rig's aggregator, and an admin's client of it.
    async fn api(
        &self,
        alerts: calipso_aggregator::alerts::AlertSettings,
    ) -> anyhow::Result<(calipso_aggregator::api::RunningApi, ApiClient)> {
        calipso_tests::install_crypto_provider();
        let section = calipso_aggregator::config::ApiSection {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_password: Some(ADMIN_PASSWORD.into()),
            alerts,
            ..Default::default()
        };
        let api = calipso_aggregator::api::start(
            &section,
            self.sink.clone(),
            Some(self.aggregator.handle.clone()),
            self.stop.clone(),
        )
        .await?;
        let mut client = ApiClient::new(&format!("http://{}", api.local_addr))?;
        client.login("admin", ADMIN_PASSWORD).await?;
        Ok((api, client))
    }
}

const ADMIN_PASSWORD: &str = "admin-password-1";

/// A veth pair, qvb1 and qvo1, both up.
const VETH_PAIR: &str =
    "ip link add qvb1 type veth peer name qvo1\nip link set qvb1 up\nip link set qvo1 up";

fn interface_check() -> Arc<dyn Check> {
    Arc::new(InterfaceCheck::new(
        "/sys/class/net".into(),
        RateLimits {
            errors_per_second: 1.0,
            drops_per_second: 100.0,
        },
    ))
}

/// Waits until the aggregator holds this status for `id`, and fails saying what it holds
/// instead if it does not come.
async fn expect_status(sink: &DurableSink, id: &ObjectId, level: StatusLevel, text: &str) {
    let wanted = (level, text.to_owned());
    wait_until(WAIT, || status_of(sink, id).as_ref() == Some(&wanted)).await;
    assert_eq!(status_of(sink, id), Some(wanted), "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_see_vnics_taps_bridges_and_dhcp_servers_come_and_go() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let mut lab = NetLab::new()?;
    // qvb1 / qvo1 are a hybrid plug's veth pair: qvo1 going down takes qvb1's carrier. tap1 is
    // a VM's tap with no VM holding it; qbr-empty a bridge that lost its ports; qdhcp-net-a a
    // DHCP namespace whose dnsmasq is not running.
    lab.sh("ip link add qvb1 type veth peer name qvo1\n\
         ip link set qvb1 up\nip link set qvo1 up\n\
         ip tuntap add tap1 mode tap\nip link set tap1 up\n\
         ip link add qbr-empty type bridge\nip link set qbr-empty up")?;
    let dhcp_ns = lab.add_netns("qdhcp-net-a")?;

    let rig = Rig::start(
        &lab,
        Vec::new(),
        vec![
            Arc::new(InterfaceCheck::new(
                "/sys/class/net".into(),
                RateLimits {
                    errors_per_second: 1.0,
                    drops_per_second: 100.0,
                },
            )),
            Arc::new(BridgeCheck),
            Arc::new(ServiceCheck::new(
                lab.netns_dir().to_owned(),
                "/proc".into(),
            )),
        ],
    )
    .await?;
    let sink = rig.sink.clone();

    let (qvb1, tap1, bridge) = (
        ObjectId::host_local(ObjectType::Vnic, HOST, "qvb1"),
        ObjectId::host_local(ObjectType::Vnic, HOST, "tap1"),
        ObjectId::host_local(ObjectType::Vconnector, HOST, "qbr-empty"),
    );
    let dhcp = ObjectId::host_local(ObjectType::Vservice, HOST, "qdhcp-net-a");
    wait_until(WAIT, || status_of(&sink, &qvb1).is_some()).await;
    let ids = [&qvb1, &tap1, &bridge, &dhcp];
    assert!(
        ids.iter().all(|id| status_of(&sink, id).is_some()),
        "every object reached the aggregator: {:?}",
        ids.iter()
            .map(|id| status_of(&sink, id))
            .collect::<Vec<_>>()
    );

    expect_status(
        &sink,
        &tap1,
        StatusLevel::Error,
        "down: no carrier (no VM holds the tap)",
    )
    .await;
    expect_status(
        &sink,
        &bridge,
        StatusLevel::Warning,
        "no ports: nothing is bridged",
    )
    .await;
    expect_status(&sink, &dhcp, StatusLevel::Error, NO_DHCP_SERVER).await;
    // Both ends of the veth pair are up, each checked ok before one of them goes down (a
    // check's first run is spread over its interval: qvo1's may come after qvb1's).
    let qvo1 = ObjectId::host_local(ObjectType::Vnic, HOST, "qvo1");
    for end in [&qvb1, &qvo1] {
        wait_until(WAIT, || {
            status_of(&sink, end).is_some_and(|(level, _)| level == StatusLevel::Ok)
        })
        .await;
        let (level, text) = status_of(&sink, end).unwrap_or((StatusLevel::Unknown, String::new()));
        assert_eq!(level, StatusLevel::Ok, "{end}: {text}");
        assert!(text.starts_with("up"), "{end}: {text}");
    }

    // The other end goes down: qvb1 loses its carrier.
    lab.sh("ip link set qvo1 down")?;
    expect_status(&sink, &qvb1, StatusLevel::Error, "down: no carrier").await;

    // dnsmasq starts in the DHCP namespace (a stand-in process: what the check looks for is a
    // live process in that namespace), then dies.
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &dhcp_ns, "sleep", "300"])
        .spawn()?;
    let serving = format!("sleep (pid {})", server.id());
    expect_status(&sink, &dhcp, StatusLevel::Ok, &serving).await;
    server.kill()?;
    server.wait()?;
    expect_status(&sink, &dhcp, StatusLevel::Error, NO_DHCP_SERVER).await;

    // Every change of level is a message from `Monitoring`, naming the object, stored (a
    // first verdict of ok is not news).
    let expected: Vec<String> = vec![
        "vnic tap1 on compute-7 is error: down: no carrier (no VM holds the tap) (was unknown)".into(),
        "vconnector qbr-empty on compute-7 is warning: no ports: nothing is bridged (was unknown)".into(),
        "vservice qdhcp-net-a on compute-7 is error: no DHCP server: no process in qdhcp-net-a (was unknown)".into(),
        "vnic qvo1 on compute-7 is error: administratively down (was ok)".into(),
        "vnic qvb1 on compute-7 is error: down: no carrier (was ok)".into(),
        "link vnic-vnic from vnic qvb1 on compute-7 to vnic qvo1 on compute-7 is down".into(),
        format!("vservice qdhcp-net-a on compute-7 is ok: {serving} (was error)"),
        "vservice qdhcp-net-a on compute-7 is error: no DHCP server: no process in qdhcp-net-a (was ok)".into(),
    ];
    let stored = || async {
        let query = MessageQuery {
            source: Some("Monitoring".into()),
            limit: 1000,
            ..MessageQuery::default()
        };
        let mut texts: Vec<String> = sink
            .store()
            .query_messages(&query)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.message.text)
            .collect();
        texts.sort();
        texts
    };
    let mut wanted = expected.clone();
    wanted.sort();
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored().await != wanted && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored().await, wanted);

    // The agent goes away: what it reported is no longer vouched for.
    let Rig {
        agent,
        aggregator,
        stop,
        ..
    } = rig;
    agent.stop().await;
    wait_until(WAIT, || {
        sink.engine()
            .environment(ENV)
            .and_then(|env| env.graph.get(&dhcp).map(|node| node.stale))
            .unwrap_or(false)
    })
    .await;
    {
        let engine = sink.engine();
        let node = engine
            .environment(ENV)
            .and_then(|env| env.graph.get(&dhcp))
            .expect("the namespace is still known");
        let shown = calipso_aggregator::monitoring::effective_status(node);
        assert_eq!(shown.level, StatusLevel::Unknown);
        assert_eq!(
            shown.text,
            "the agent of compute-7 is disconnected; last reported error: no DHCP server: no process in qdhcp-net-a"
        );
    }
    stop.cancel();
    aggregator.stop().await;
    Ok(())
}

/// The otep's tunnels probed from its local address: one remote answers and one never can
/// (a warning naming it), then the underlay's far end goes down (an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_endpoint_is_as_good_as_the_remotes_it_reaches() -> anyhow::Result<()> {
    use calipso_agent::health::TunnelCheck;
    use calipso_agent::health::tunnels::PingSettings;

    calipso_tests::init_test_logging();
    let mut lab = NetLab::new()?;
    // The underlay: this host's NIC side 10.99.0.1, the other compute host 10.99.0.2 (a
    // namespace of its own); 10.99.0.3 is a remote nobody has.
    let peer = lab.add_netns("compute-8")?;
    lab.sh(&format!(
        "ip link add under0 type veth peer name under0-far\n\
         ip link set under0-far netns {peer}\n\
         ip addr add 10.99.0.1/24 dev under0\nip link set under0 up\n\
         ip link add vx42 type vxlan id 42 local 10.99.0.1 dstport 4789 dev under0\n\
         ip link set vx42 up\n\
         bridge fdb append 00:00:00:00:00:00 dev vx42 dst 10.99.0.2\n\
         bridge fdb append 00:00:00:00:00:00 dev vx42 dst 10.99.0.3"
    ))?;
    lab.sh_in(
        "compute-8",
        "ip addr add 10.99.0.2/24 dev under0-far\nip link set under0-far up",
    )?;
    let ping = PingSettings {
        count: 5,
        interval: Duration::from_millis(50),
        reply_timeout: Duration::from_millis(500),
        loss_warning: 1.0,
        loss_error: 20.0,
        rtt_warning: Duration::from_millis(300),
        rtt_error: Duration::from_secs(1),
    };
    let rig = Rig::start(
        &lab,
        Vec::new(),
        vec![Arc::new(TunnelCheck::new(
            ping,
            Some(lab.host_netns_path()),
        ))],
    )
    .await?;
    let otep = ObjectId::host_local(ObjectType::Otep, HOST, "vx42");
    let status = || status_of(&rig.sink, &otep).unwrap_or((StatusLevel::Unknown, String::new()));
    wait_until(WAIT, || status().0 == StatusLevel::Warning).await;
    let (level, text) = status();
    assert_eq!(level, StatusLevel::Warning, "{text}");
    assert!(
        text == "1 of 2 tunnels ok: 10.99.0.3: 100% loss; 10.99.0.2: ok",
        "{text}"
    );

    // A check under way when the link went down may still count a reply or two: the first
    // check that starts after it finds both tunnels dead.
    lab.sh_in("compute-8", "ip link set under0-far down")?;
    let dead = (
        StatusLevel::Error,
        "0 of 2 tunnels ok: 10.99.0.2: 100% loss; 10.99.0.3: 100% loss".to_owned(),
    );
    wait_until(WAIT, || status() == dead).await;
    assert_eq!(status(), dead);
    rig.stop().await;
    Ok(())
}

/// Open vSwitch as its operator knows it: both daemons answer and every interface works; a
/// port on a device that does not exist is a warning naming it; ovs-vswitchd crashing, and
/// then ovsdb-server, are errors naming the daemon; both back is ok again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_vswitch_is_checked_through_both_daemons() -> anyhow::Result<()> {
    use calipso_agent::collect::{InterfaceDirectory, Ovs, OvsOptions};
    use calipso_agent::health::VswitchCheck;
    use calipso_agent::ovsdb::Endpoint;
    use calipso_tests::ovslab::OvsServer;

    calipso_tests::init_test_logging();
    let lab = NetLab::new()?;
    let mut server = OvsServer::start()?;
    server.start_vswitchd(&lab.host_ns)?;
    server.add_netdev_bridge("br-int")?;
    let endpoint = Endpoint::Unix(server.socket());
    let ovs = Ovs::new(
        Scope {
            host: HOST.into(),
            environment: ENV.into(),
        },
        OvsOptions {
            endpoint: endpoint.clone(),
            ..OvsOptions::default()
        },
        InterfaceDirectory::default(),
    );
    let rig = Rig::start(
        &lab,
        vec![Box::new(ovs)],
        vec![Arc::new(VswitchCheck::new(
            endpoint.clone(),
            None,
            Duration::from_secs(2),
        ))],
    )
    .await?;
    let vedge = ObjectId::host_local(ObjectType::Vedge, HOST, "ovs");
    let status = || status_of(&rig.sink, &vedge).unwrap_or((StatusLevel::Unknown, String::new()));
    let reach = |level: StatusLevel| async move {
        wait_until(WAIT, || status().0 == level).await;
        let (now, text) = status();
        assert_eq!(now, level, "{text}");
        text
    };
    let text = reach(StatusLevel::Ok).await;
    let version = calipso_tests::netlab::run("ovs-vswitchd", &["--version"])?;
    let version = version.lines().next().unwrap_or_default().to_owned();
    assert!(
        text.starts_with(&format!(
            "ovsdb-server and {version} answer; configuration "
        )),
        "{text}"
    );
    assert!(text.ends_with(" interfaces, none in error"), "{text}");

    server.vsctl(&["add-port", "br-int", "nosuchdev"])?;
    let text = reach(StatusLevel::Warning).await;
    assert!(
        text.starts_with("1 of ")
            && text.contains(
                " interfaces in error: nosuchdev: could not open network device nosuchdev"
            ),
        "{text}"
    );

    server.kill_vswitchd()?;
    let text = reach(StatusLevel::Error).await;
    assert!(
        text.starts_with("ovs-vswitchd does not answer on "),
        "{text}"
    );

    server.kill_server()?;
    wait_until(WAIT, || status().1.starts_with("ovsdb-server")).await;
    let (level, text) = status();
    assert_eq!(level, StatusLevel::Error);
    assert!(
        text.starts_with(&format!("ovsdb-server does not answer on {endpoint}: ")),
        "{text}"
    );

    server.start_server()?;
    server.start_vswitchd(&lab.host_ns)?;
    server.vsctl(&["del-port", "br-int", "nosuchdev"])?;
    reach(StatusLevel::Ok).await;
    rig.stop().await;
    Ok(())
}

/// A VM as libvirt knows it: running (ok), paused (a warning), shut down but still defined
/// (it stays an instance, in error), undefined (gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_stops_is_an_instance_in_error_not_a_missing_one() -> anyhow::Result<()> {
    use calipso_agent::collect::Libvirt;
    use calipso_agent::health::InstanceCheck;

    calipso_tests::init_test_logging();
    let lab = NetLab::new()?;
    let running = lab.libvirt_dir.path().to_owned();
    let defined = tempfile::tempdir()?;
    let domain = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/libvirt/instance-00000026.xml"
    ))?;
    let status_file = |state: &str| {
        format!("<domstatus state='{state}' reason='booted' pid='4242'>\n{domain}</domstatus>\n")
    };
    // libvirt writes a running domain's state and its definition.
    std::fs::write(
        running.join("instance-00000026.xml"),
        status_file("running"),
    )?;
    std::fs::write(defined.path().join("instance-00000026.xml"), &domain)?;
    let libvirt = Libvirt::new(
        Scope {
            host: HOST.into(),
            environment: ENV.into(),
        },
        running.clone(),
        defined.path().to_owned(),
    );
    let rig = Rig::start(&lab, vec![Box::new(libvirt)], vec![Arc::new(InstanceCheck)]).await?;
    let vm = ObjectId::global(ObjectType::Instance, "bf0cb914-b316-486c-a4ce-f22deb453c52");
    expect_status(&rig.sink, &vm, StatusLevel::Ok, "running").await;

    std::fs::write(running.join("instance-00000026.xml"), status_file("paused"))?;
    expect_status(
        &rig.sink,
        &vm,
        StatusLevel::Warning,
        "paused: the VM does not run",
    )
    .await;

    // Shut down: the run-state file goes, the definition stays.
    std::fs::remove_file(running.join("instance-00000026.xml"))?;
    expect_status(&rig.sink, &vm, StatusLevel::Error, "not running (shut off)").await;

    // Undefined: the instance is gone.
    std::fs::remove_file(defined.path().join("instance-00000026.xml"))?;
    wait_until(WAIT, || status_of(&rig.sink, &vm).is_none()).await;
    assert_eq!(status_of(&rig.sink, &vm), None);
    rig.stop().await;
    Ok(())
}

/// Debian's monitoring-plugins `check_procs` mapped to the host object: critical while the
/// service's process is missing, ok once it runs; beside it a plugin that hangs is `unknown`
/// once the time limit kills it, and the host's status names both, the worst first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nagios_plugins_check_the_host_and_a_hung_one_is_unknown() -> anyhow::Result<()> {
    use calipso_agent::health::PluginCheck;
    use calipso_agent::health::plugins::PluginConfig;

    const CHECK_PROCS: &str = "/usr/lib/nagios/plugins/check_procs";
    anyhow::ensure!(
        std::path::Path::new(CHECK_PROCS).exists(),
        "{CHECK_PROCS} missing: install monitoring-plugins-basic (bash tests/run does)"
    );
    calipso_tests::init_test_logging();
    let lab = NetLab::new()?;
    // The "service": a copy of sleep under a name of its own, so no other process matches.
    let bin = tempfile::tempdir()?;
    let service = format!("calsvc{:05}", rand::random::<u16>());
    let program = bin.path().join(&service);
    std::fs::copy("/bin/sleep", &program)?;
    let plugin = |name: &str, command: &str, args: &[&str]| {
        PluginCheck::new(PluginConfig {
            name: name.into(),
            command: command.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            types: vec!["host".into()],
            select: Default::default(),
            interval: None,
        })
    };
    let rig = Rig::start(
        &lab,
        Vec::new(),
        vec![
            Arc::new(plugin("procs", CHECK_PROCS, &["-C", &service, "-c", "1:"])?),
            Arc::new(plugin("stuck", "/bin/sleep", &["600"])?),
        ],
    )
    .await?;
    let host = ObjectId::host(HOST);
    let missing = format!(
        "procs: PROCS CRITICAL: 0 processes with command name '{service}'; stuck: stuck check timed out after 5s"
    );
    expect_status(&rig.sink, &host, StatusLevel::Error, &missing).await;

    let mut running = std::process::Command::new(&program).arg("300").spawn()?;
    let serving = format!(
        "stuck: stuck check timed out after 5s; procs: PROCS OK: 1 process with command name '{service}'"
    );
    expect_status(&rig.sink, &host, StatusLevel::Unknown, &serving).await;
    let perfdata = {
        let engine = rig.sink.engine();
        engine
            .environment(ENV)
            .and_then(|env| env.graph.get(&host))
            .map(|node| node.object.status.perfdata.clone())
    };
    assert_eq!(perfdata.as_deref(), Some("procs=1;;1:;0;"));
    running.kill()?;
    running.wait()?;
    rig.stop().await;
    Ok(())
}

/// A webhook receiver on loopback: records every request, answers the first `fail_first`
/// with a 500 and the rest with a 200.
struct WebhookReceiver {
    url: String,
    received: Arc<std::sync::Mutex<Vec<Delivery>>>,
}

#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    signature: String,
    body: serde_json::Value,
    raw: Vec<u8>,
    accepted: bool,
}

impl WebhookReceiver {
    async fn start(fail_first: usize) -> anyhow::Result<Self> {
        use axum::http::{HeaderMap, StatusCode};
        let received: Arc<std::sync::Mutex<Vec<Delivery>>> = Arc::default();
        let log = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let log = log.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    let accepted = log.len() >= fail_first;
                    log.push(Delivery {
                        id: header("x-calipso-delivery"),
                        signature: header("x-calipso-signature"),
                        body: serde_json::from_slice(&body).unwrap_or_default(),
                        raw: body.to_vec(),
                        accepted,
                    });
                    if accepted {
                        StatusCode::OK
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(WebhookReceiver { url, received })
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The accepted alerts' (status, message), sorted.
    fn accepted(&self) -> Vec<(String, String)> {
        let mut accepted: Vec<(String, String)> = self
            .deliveries()
            .iter()
            .filter(|d| d.accepted)
            .map(|d| {
                (
                    d.body["status"].as_str().unwrap_or_default().to_owned(),
                    d.body["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        accepted.sort();
        accepted
    }
}

/// Checks `t=<unix>,v1=<hex>` against HMAC-SHA256(secret, "<t>.<body>"), as a receiver would.
fn signed_by(delivery: &Delivery, secret: &str) -> bool {
    let Some((time, mac)) = delivery
        .signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let Some(mac) = (0..mac.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(mac.get(i..i + 2).unwrap_or("zz"), 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut signed = format!("{time}.").into_bytes();
    signed.extend_from_slice(&delivery.raw);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, &signed, &mac).is_ok()
}

/// Issue 25, alerts: a rule for vNIC errors, sent to a webhook and to a real Alertmanager.
/// A veth's far end going down is three changes (qvo1 down, qvb1 without carrier, the link
/// between them down): three signed alerts, the first retried after the receiver's 500, and
/// three alerts firing in Alertmanager; back up, three resolved and none firing. Under a
/// silence of the host, the same changes send nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_status_change_is_one_signed_alert_and_a_silence_holds_them_back() -> anyhow::Result<()>
{
    use calipso_aggregator::alerts::AlertSettings;
    use calipso_tests::alertmanager::Alertmanager;
    use reqwest::Method;

    const SECRET: &str = "webhook-secret-of-the-test";
    calipso_tests::init_test_logging();
    let lab = NetLab::new()?;
    lab.sh(VETH_PAIR)?;
    let rig = Rig::start(&lab, Vec::new(), vec![interface_check()]).await?;
    let (qvb1, qvo1) = (
        ObjectId::host_local(ObjectType::Vnic, HOST, "qvb1"),
        ObjectId::host_local(ObjectType::Vnic, HOST, "qvo1"),
    );
    let level_of = |id: &ObjectId| status_of(&rig.sink, id).map(|(level, _)| level);
    wait_until(WAIT, || level_of(&qvb1) == Some(StatusLevel::Ok)).await;

    let alertmanager = Alertmanager::start().await?;
    let receiver = WebhookReceiver::start(1).await?;
    let (api, client) = rig
        .api(AlertSettings {
            retry_initial: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
            ..AlertSettings::default()
        })
        .await?;

    // Rules that cannot work are refused, naming the problem.
    let rule = |webhook: serde_json::Value| {
        serde_json::json!({
            "environment": ENV, "name": "vnics", "min_level": "error",
            "object_types": ["vnic"], "webhook": webhook, "alertmanager": alertmanager.url,
        })
    };
    let refused = [
        (
            rule(serde_json::json!({"url": receiver.url})),
            "webhook.secret is required",
        ),
        (
            rule(serde_json::json!({"url": receiver.url, "secret": "short"})),
            "webhook.secret must be 16 to 1024 bytes",
        ),
        (
            rule(serde_json::json!({"url": "ftp://example.org/", "secret": SECRET})),
            "must be an http:// or https:// URL",
        ),
        (
            serde_json::json!({"environment": ENV, "name": "nowhere"}),
            "a rule needs somewhere to send",
        ),
    ];
    for (body, says) in refused {
        let (status, answer) = client
            .send(Method::POST, "/api/v1/alert_rules", &[], Some(&body))
            .await?;
        assert_eq!(status.as_u16(), 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message}");
    }
    let created = client
        .json(
            Method::POST,
            "/api/v1/alert_rules",
            &[],
            Some(&rule(
                serde_json::json!({"url": receiver.url, "secret": SECRET}),
            )),
        )
        .await?;
    assert_eq!(created["webhook"]["secret_set"], true);
    assert!(
        !created.to_string().contains(SECRET),
        "the secret is write-only"
    );
    let rule_id = created["id"].as_str().unwrap_or_default().to_owned();
    // Another rule's receiver takes connections and never answers: it holds up only itself.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dead_url = format!("http://{}/hook", black_hole.local_addr()?);
    let dead = client
        .json(
            Method::POST,
            "/api/v1/alert_rules",
            &[],
            Some(&serde_json::json!({
                "environment": ENV, "name": "dead", "min_level": "warning",
                "webhook": {"url": dead_url, "secret": SECRET},
            })),
        )
        .await?;
    let dead_id = dead["id"].as_str().unwrap_or_default().to_owned();

    lab.sh("ip link set qvo1 down")?;
    let down = vec![
        (
            "firing".to_owned(),
            "link vnic-vnic from vnic qvb1 on compute-7 to vnic qvo1 on compute-7 is down"
                .to_owned(),
        ),
        (
            "firing".to_owned(),
            "vnic qvb1 on compute-7 is error: down: no carrier (was ok)".to_owned(),
        ),
        (
            "firing".to_owned(),
            "vnic qvo1 on compute-7 is error: administratively down (was ok)".to_owned(),
        ),
    ];
    wait_until(WAIT, || receiver.accepted().len() >= 3).await;
    assert_eq!(receiver.accepted(), down);
    let deliveries = receiver.deliveries();
    assert_eq!(
        deliveries.len(),
        4,
        "the first was answered 500 and sent again"
    );
    assert_eq!(
        deliveries[0].id, deliveries[1].id,
        "a retry is the same alert"
    );
    assert!(deliveries.iter().all(|d| signed_by(d, SECRET)));
    assert!(!signed_by(&deliveries[0], "another-secret-entirely"));

    let firing_objects = || async {
        let mut objects: Vec<(String, String)> = alertmanager
            .alerts()
            .await
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    a["labels"]["object"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    a["labels"]["severity"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        objects.sort();
        objects
    };
    // The link's alert is about its source end, qvb1 (labelled with the link too).
    let mut firing = vec![
        (qvb1.to_string(), "error".to_owned()),
        (qvb1.to_string(), "error".to_owned()),
        (qvo1.to_string(), "error".to_owned()),
    ];
    firing.sort();
    let deadline = tokio::time::Instant::now() + WAIT;
    while firing_objects().await != firing && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(firing_objects().await, firing);

    // The link between them shows what is wrong with it.
    let links = client
        .get(
            "/api/v1/links",
            &[("env_name", ENV), ("source_id", qvb1.as_str())],
        )
        .await?;
    let link = &links["links"][0];
    assert_eq!(link["state"], "down", "{links}");
    assert_eq!(
        (&link["status"]["level"], &link["status"]["text"]),
        (
            &serde_json::json!("error"),
            &serde_json::json!("the link is down")
        )
    );

    let report = client
        .get(&format!("/api/v1/alert_rules/{rule_id}"), &[])
        .await?;
    let webhook = report["delivery"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["destination"] == "webhook"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&webhook["sent"], &webhook["retried"], &webhook["failed"]),
        (
            &serde_json::json!(3),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "{report}"
    );

    let dead_report = || async {
        client
            .get(&format!("/api/v1/alert_rules/{dead_id}"), &[])
            .await
            .unwrap_or_default()["delivery"][0]
            .clone()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while dead_report().await["retried"] == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dead_webhook = dead_report().await;
    assert_eq!(dead_webhook["sent"], 0, "{dead_webhook}");
    let error = dead_webhook["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!("webhook {dead_url}: ")),
        "{error}"
    );
    drop(black_hole);

    // Back up: each alert resolved, once; Alertmanager holds nothing firing.
    lab.sh("ip link set qvo1 up")?;
    wait_until(WAIT, || receiver.accepted().len() >= 6).await;
    let mut expected = down.clone();
    expected.extend([
        (
            "resolved".to_owned(),
            "link vnic-vnic from vnic qvb1 on compute-7 to vnic qvo1 on compute-7 is up again"
                .to_owned(),
        ),
        (
            "resolved".to_owned(),
            format!(
                "vnic qvb1 on compute-7 is ok: {} (was error)",
                status_of(&rig.sink, &qvb1).map(|s| s.1).unwrap_or_default()
            ),
        ),
        (
            "resolved".to_owned(),
            format!(
                "vnic qvo1 on compute-7 is ok: {} (was error)",
                status_of(&rig.sink, &qvo1).map(|s| s.1).unwrap_or_default()
            ),
        ),
    ]);
    expected.sort();
    assert_eq!(receiver.accepted(), expected);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !firing_objects().await.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(firing_objects().await, Vec::new());

    // A maintenance window on the host: the same changes send nothing.
    let silence = client
        .json(
            Method::POST,
            "/api/v1/silences",
            &[],
            Some(&serde_json::json!({
                "environment": ENV, "host": HOST, "duration_seconds": 600,
                "comment": "recabling compute-7",
            })),
        )
        .await?;
    assert_eq!(silence["active"], true);
    lab.sh("ip link set qvo1 down")?;
    // Three changes, each an alert of both rules, held back.
    wait_until(WAIT, || api.service.alerting().silenced() >= 6).await;
    assert_eq!(api.service.alerting().silenced(), 6);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.deliveries().len(),
        7,
        "nothing sent under the silence"
    );
    let silence_id = silence["id"].as_str().unwrap_or_default();
    let (status, _) = client
        .send(
            Method::DELETE,
            &format!("/api/v1/silences/{silence_id}"),
            &[],
            None,
        )
        .await?;
    assert_eq!(status.as_u16(), 204);

    rig.stop().await;
    Ok(())
}

/// Issue 25: thresholds and intervals set per environment reach its agents over their
/// sessions. The agent checks vNICs once an hour; the environment's `Monitoring` settings say
/// every second, and a vNIC going down is seen within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environments_check_settings_reach_its_agents() -> anyhow::Result<()> {
    use reqwest::Method;

    calipso_tests::init_test_logging();
    let lab = NetLab::new()?;
    lab.sh(VETH_PAIR)?;
    let hourly = HealthConfig {
        interval: Duration::from_secs(3600),
        ..HealthConfig::default()
    };
    let rig = Rig::start_with(&lab, Vec::new(), vec![interface_check()], hourly).await?;
    let qvb1 = ObjectId::host_local(ObjectType::Vnic, HOST, "qvb1");
    let level = || status_of(&rig.sink, &qvb1).map(|(level, _)| level);
    // The first verdict comes within 5 s whatever the interval.
    wait_until(WAIT, || level() == Some(StatusLevel::Ok)).await;
    let (_api, client) = rig.api(Default::default()).await?;

    let settings =
        |key: &str, value: &str| serde_json::json!({"configuration": {"Monitoring": {key: value}}});
    let path = format!("/api/v1/environment_configs/{ENV}");
    let (status, answer) = client
        .send(
            Method::PATCH,
            &path,
            &[],
            Some(&settings("interval.vnic", "100ms")),
        )
        .await?;
    assert_eq!(status.as_u16(), 400, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "Monitoring.interval.vnic: `100ms` must be from 1s to 1day"
    );
    client
        .json(
            Method::PATCH,
            &path,
            &[],
            Some(&settings("interval.vnic", "1s")),
        )
        .await?;

    lab.sh("ip link set qvo1 down")?;
    wait_until(WAIT, || level() == Some(StatusLevel::Error)).await;
    assert_eq!(
        status_of(&rig.sink, &qvb1),
        Some((StatusLevel::Error, "down: no carrier".to_owned()))
    );
    rig.stop().await;
    Ok(())
}
