//! The OVS collector against a real ovsdb-server: an OpenStack-like compute host (br-int with
//! tagged VM ports carrying Neutron and Nova ids, br-tun with vxlan tunnels and patch ports,
//! br-ex with a provider NIC), and the exact deltas for each change.

use std::collections::BTreeSet;
use std::time::Duration;

use calipso_agent::collect::{Collector, InterfaceDirectory, Ovs, OvsOptions, Scope};
use calipso_agent::outbox::Outbox;
use calipso_agent::ovsdb::Endpoint;
use calipso_proto::{AttrValue, Object};
use calipso_tests::ovslab::OvsServer;
use tokio_util::sync::CancellationToken;

const HOST: &str = "compute-1";
const VM: &str = "11111111-2222-3333-4444-555555555555";

fn scope() -> Scope {
    Scope {
        host: HOST.into(),
        environment: "lab".into(),
    }
}

fn options(server: &OvsServer) -> OvsOptions {
    OvsOptions {
        endpoint: Endpoint::Unix(server.socket()),
        reconnect_max: Duration::from_millis(200),
        ..OvsOptions::default()
    }
}

struct Followed {
    outbox: Outbox,
    stop: CancellationToken,
    /// When set, every `after` also checks the followed model against a fresh scan.
    oracle: Option<OvsOptions>,
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Followed {
    fn start(server: &OvsServer) -> Self {
        let outbox = Outbox::new(HOST, "lab", 1, 1 << 26);
        let stop = CancellationToken::new();
        let ovs = Box::new(Ovs::new(
            scope(),
            options(server),
            InterfaceDirectory::default(),
        ));
        tokio::spawn(ovs.follow(outbox.clone(), stop.clone()));
        Followed {
            outbox,
            stop,
            oracle: Some(options(server)),
        }
    }

    async fn settle(&self) -> u64 {
        calipso_tests::settle(&self.outbox).await
    }

    async fn after(
        &self,
        change: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
        let before = self.settle().await;
        change()?;
        self.settle().await;
        if let Some(options) = &self.oracle {
            let full = Ovs::new(scope(), options.clone(), InterfaceDirectory::default())
                .scan()
                .await?;
            assert_eq!(
                self.outbox.objects(),
                full,
                "the followed model differs from a full scan"
            );
        }
        Ok(calipso_tests::net_changes(&self.outbox, before))
    }

    fn object(&self, id: &str) -> Option<Object> {
        self.outbox
            .objects()
            .into_iter()
            .find(|o| o.id.as_str() == id)
    }
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn extra<'a>(object: &'a Object, key: &str) -> Option<&'a AttrValue> {
    object.attributes.extra.get(key)
}

/// br-int, br-tun and br-ex as the Neutron OVS agent builds them.
fn compute_host(server: &OvsServer) -> anyhow::Result<()> {
    server.vsctl(&[
        "set",
        "open_vswitch",
        ".",
        "external_ids:system-id=compute-1-sysid",
        "external_ids:hostname=compute-1",
    ])?;
    server.vsctl(&[
        "add-br",
        "br-int",
        "--",
        "set",
        "bridge",
        "br-int",
        "datapath_type=netdev",
        "fail_mode=secure",
    ])?;
    server.add_netdev_bridge("br-tun")?;
    server.add_netdev_bridge("br-ex")?;
    server.vsctl(&[
        "add-port",
        "br-int",
        "tap1f72bd15-8a",
        "tag=1",
        "--",
        "set",
        "interface",
        "tap1f72bd15-8a",
        "external_ids:iface-id=1f72bd15-8a8c-4f1b-b9a0-6c2f1b1b1b1b",
        "external_ids:attached-mac=fa:16:3e:e8:7f:04",
        &format!("external_ids:vm-uuid={VM}"),
        "external_ids:iface-status=active",
    ])?;
    server.vsctl(&[
        "add-port",
        "br-int",
        "qvo5a7c9b2e-1d",
        "tag=2",
        "--",
        "set",
        "interface",
        "qvo5a7c9b2e-1d",
        "external_ids:iface-id=5a7c9b2e-1d00-4000-8000-000000000001",
        "external_ids:attached-mac=fa:16:3e:00:00:02",
        &format!("external_ids:vm-uuid={VM}"),
    ])?;
    for (port, remote) in [
        ("vxlan-c0000202", "192.0.2.2"),
        ("vxlan-c0000203", "192.0.2.3"),
    ] {
        server.vsctl(&[
            "add-port",
            "br-tun",
            port,
            "--",
            "set",
            "interface",
            port,
            "type=vxlan",
            &format!("options:remote_ip={remote}"),
            "options:local_ip=192.0.2.1",
            "options:key=flow",
            "options:dst_port=4789",
        ])?;
    }
    server.vsctl(&[
        "add-port",
        "br-int",
        "patch-tun",
        "--",
        "set",
        "interface",
        "patch-tun",
        "type=patch",
        "options:peer=patch-int",
    ])?;
    server.vsctl(&[
        "add-port",
        "br-tun",
        "patch-int",
        "--",
        "set",
        "interface",
        "patch-int",
        "type=patch",
        "options:peer=patch-tun",
    ])?;
    server.vsctl(&["add-port", "br-ex", "ex-uplink"])?;
    Ok(())
}

#[tokio::test]
async fn a_compute_host_as_the_neutron_agent_builds_it() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let server = OvsServer::start()?;
    compute_host(&server)?;
    let followed = Followed::start(&server);
    followed.settle().await;

    let listed: Vec<String> = followed
        .outbox
        .objects()
        .iter()
        .map(|o| o.id.as_str().to_owned())
        .collect();
    assert_eq!(
        listed,
        vec![
            "otep:compute-1:192.0.2.1",
            "vedge:compute-1:ovs",
            "vnic:compute-1:qvo5a7c9b2e-1d",
            "vnic:compute-1:tap1f72bd15-8a",
        ]
    );
    let vedge = followed.object("vedge:compute-1:ovs").expect("vedge");
    assert_eq!(vedge.name, "compute-1-OVS");
    assert_eq!(extra(&vedge, "system_id"), Some(&"compute-1-sysid".into()));
    assert_eq!(extra(&vedge, "uplinks"), Some(&vec!["ex-uplink"].into()));
    let Some(AttrValue::List(patches)) = extra(&vedge, "patch_ports") else {
        panic!("patch ports")
    };
    assert_eq!(patches.len(), 2);
    let Some(AttrValue::Map(first)) = patches.first() else {
        panic!("a patch")
    };
    assert_eq!(first.get("peer_bridge"), Some(&"br-tun".into()));
    let Some(AttrValue::List(bridges)) = extra(&vedge, "bridges") else {
        panic!("bridges")
    };
    let names: Vec<_> = bridges
        .iter()
        .filter_map(|b| match b {
            AttrValue::Map(m) => m.get("name").and_then(AttrValue::as_str).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(names, vec!["br-ex", "br-int", "br-tun"]);

    let otep = followed.object("otep:compute-1:192.0.2.1").expect("otep");
    assert_eq!(extra(&otep, "overlay_type"), Some(&"vxlan".into()));
    assert_eq!(extra(&otep, "udp_port"), Some(&AttrValue::Int(4789)));
    assert_eq!(
        extra(&otep, "remote_endpoints"),
        Some(&vec!["192.0.2.2", "192.0.2.3"].into())
    );
    assert_eq!(
        otep.parent.as_ref().map(|p| p.id.as_str()),
        Some("vedge:compute-1:ovs")
    );

    let tap = followed
        .object("vnic:compute-1:tap1f72bd15-8a")
        .expect("vm port");
    assert_eq!(extra(&tap, "tag"), Some(&AttrValue::Int(1)));
    assert_eq!(extra(&tap, "ovs_bridge"), Some(&"br-int".into()));
    assert_eq!(
        extra(&tap, "iface_id"),
        Some(&"1f72bd15-8a8c-4f1b-b9a0-6c2f1b1b1b1b".into())
    );
    assert_eq!(
        extra(&tap, "attached_mac"),
        Some(&"fa:16:3e:e8:7f:04".into())
    );
    assert_eq!(
        extra(&tap, "instance"),
        Some(&format!("instance:{VM}").into())
    );
    assert_eq!(extra(&tap, "vnic_type"), Some(&"instance_vnic".into()));
    Ok(())
}

#[tokio::test]
async fn every_change_produces_exactly_its_delta() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let mut server = OvsServer::start()?;
    compute_host(&server)?;
    let followed = Followed::start(&server);
    followed.settle().await;

    let changed = followed
        .after(|| {
            server
                .vsctl(&[
                    "add-port",
                    "br-int",
                    "tapnew",
                    "tag=3",
                    "--",
                    "set",
                    "interface",
                    "tapnew",
                    "external_ids:iface-id=new-port",
                ])
                .map(drop)
        })
        .await?;
    assert_eq!(
        changed,
        (ids(&["vnic:compute-1:tapnew"]), ids(&[])),
        "port add: only the new vNIC (the vedge does not count VM ports)"
    );

    let changed = followed
        .after(|| server.vsctl(&["set", "port", "tapnew", "tag=7"]).map(drop))
        .await?;
    assert_eq!(
        changed,
        (ids(&["vnic:compute-1:tapnew"]), ids(&[])),
        "tag change"
    );
    assert_eq!(
        followed
            .object("vnic:compute-1:tapnew")
            .and_then(|o| extra(&o, "tag").cloned()),
        Some(AttrValue::Int(7))
    );

    let changed = followed
        .after(|| server.vsctl(&["clear", "port", "tapnew", "tag"]).map(drop))
        .await?;
    assert_eq!(
        changed,
        (ids(&["vnic:compute-1:tapnew"]), ids(&[])),
        "tag cleared"
    );
    assert_eq!(
        followed
            .object("vnic:compute-1:tapnew")
            .and_then(|o| extra(&o, "tag").cloned()),
        None
    );

    let changed = followed
        .after(|| server.vsctl(&["del-port", "br-int", "tapnew"]).map(drop))
        .await?;
    assert_eq!(
        changed,
        (ids(&[]), ids(&["vnic:compute-1:tapnew"])),
        "port removed"
    );

    let changed = followed
        .after(|| {
            server
                .vsctl(&[
                    "add-port",
                    "br-tun",
                    "vxlan-c0000204",
                    "--",
                    "set",
                    "interface",
                    "vxlan-c0000204",
                    "type=vxlan",
                    "options:remote_ip=192.0.2.4",
                    "options:local_ip=192.0.2.1",
                ])
                .map(drop)
        })
        .await?;
    assert_eq!(
        changed,
        (
            ids(&["otep:compute-1:192.0.2.1", "vedge:compute-1:ovs"]),
            ids(&[])
        ),
        "tunnel added"
    );
    assert_eq!(
        followed
            .object("otep:compute-1:192.0.2.1")
            .and_then(|o| extra(&o, "remote_endpoints").cloned()),
        Some(vec!["192.0.2.2", "192.0.2.3", "192.0.2.4"].into())
    );

    let changed = followed
        .after(|| {
            server
                .vsctl(&["del-port", "br-tun", "vxlan-c0000204"])
                .map(drop)
        })
        .await?;
    assert_eq!(
        changed,
        (
            ids(&["otep:compute-1:192.0.2.1", "vedge:compute-1:ovs"]),
            ids(&[])
        ),
        "tunnel removed"
    );

    let changed = followed
        .after(|| {
            server
                .vsctl(&["del-port", "br-int", "tap1f72bd15-8a"])
                .map(drop)
        })
        .await?;
    assert_eq!(
        changed,
        (ids(&[]), ids(&["vnic:compute-1:tap1f72bd15-8a"])),
        "VM interface deleted"
    );

    let changed = followed.after(|| server.restart()).await?;
    assert_eq!(
        changed,
        (ids(&[]), ids(&[])),
        "an ovsdb-server restart sends nothing"
    );
    // And the collector follows the restarted server.
    let changed = followed
        .after(|| {
            server
                .vsctl(&["set", "port", "qvo5a7c9b2e-1d", "tag=9"])
                .map(drop)
        })
        .await?;
    assert_eq!(
        changed,
        (ids(&["vnic:compute-1:qvo5a7c9b2e-1d"]), ids(&[])),
        "after the restart"
    );
    Ok(())
}

#[tokio::test]
async fn with_vswitchd_ports_get_datapath_numbers_and_link_state() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let lab = calipso_tests::netlab::NetLab::new()?;
    lab.sh("ip link add vm-eth type veth peer name vm-ethp; ip link set vm-eth up; ip link set vm-ethp up")?;
    let mut server = OvsServer::start()?;
    server.start_vswitchd(&lab.host_ns)?;
    server.add_netdev_bridge("br-int")?;
    server.vsctl(&[
        "add-port",
        "br-int",
        "vm-eth",
        "--",
        "set",
        "interface",
        "vm-eth",
        "external_ids:iface-id=p-real",
        &format!("external_ids:vm-uuid={VM}"),
    ])?;
    let followed = Followed::start(&server);
    let mut ofport = None;
    for _ in 0..100 {
        followed.settle().await;
        let port = followed.object("vnic:compute-1:vm-eth");
        ofport = port.as_ref().and_then(|p| extra(p, "ofport").cloned());
        if ofport.is_some()
            && port
                .as_ref()
                .and_then(|p| p.attributes.link_state)
                .is_some()
        {
            break;
        }
    }
    assert!(
        matches!(ofport, Some(AttrValue::Int(n)) if n > 0),
        "vswitchd assigns a datapath port: {ofport:?}"
    );
    let port = followed.object("vnic:compute-1:vm-eth").expect("port");
    assert_eq!(
        port.attributes.link_state,
        Some(calipso_proto::LinkState::Up)
    );
    assert!(
        port.attributes.mac_address.is_some(),
        "mac_in_use is reported"
    );
    Ok(())
}

#[tokio::test]
async fn no_socket_means_no_objects_and_no_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let options = OvsOptions {
        endpoint: Endpoint::Unix(dir.path().join("absent.sock")),
        ..OvsOptions::default()
    };
    let mut ovs = Ovs::new(scope(), options, InterfaceDirectory::default());
    assert!(ovs.scan().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_garbage_server_is_survived() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("garbage.sock");
    let listener = tokio::net::UnixListener::bind(&path)?;
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut served = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"{\"id\":1,\"result\":[\"Open_vSwitch\"]} this is not JSON")
                .await;
            served += 1;
            if served == 3 {
                return served;
            }
        }
        served
    });
    let options = OvsOptions {
        endpoint: Endpoint::Unix(path),
        reconnect_max: Duration::from_millis(50),
        ..OvsOptions::default()
    };
    let outbox = Outbox::new(HOST, "lab", 1, 1 << 20);
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        Box::new(Ovs::new(scope(), options, InterfaceDirectory::default()))
            .follow(outbox.clone(), stop.clone()),
    );
    let served = tokio::time::timeout(Duration::from_secs(10), server).await??;
    assert_eq!(
        served, 3,
        "the collector reconnects after each malformed stream"
    );
    stop.cancel();
    assert!(task.await?.is_ok(), "the collector stops cleanly");
    assert!(outbox.objects().is_empty());
    Ok(())
}

#[tokio::test]
async fn the_kernel_and_ovs_views_of_an_interface_are_one_object() -> anyhow::Result<()> {
    use calipso_agent::collect::Kernel;
    calipso_tests::init_test_logging();
    let mut lab = calipso_tests::netlab::NetLab::new()?;
    let dhcp = lab.add_netns("qdhcp-net1")?;
    // A VM tap in the host namespace, and a DHCP port that Neutron moved into its namespace.
    lab.sh(&format!(
        "ip tuntap add tapvm mode tap
         ip link add dhcp-port type veth peer name dhcp-peer
         ip link set dhcp-port netns {dhcp}"
    ))?;
    let server = OvsServer::start()?;
    server.add_netdev_bridge("br-int")?;
    server.vsctl(&[
        "add-port",
        "br-int",
        "tapvm",
        "tag=5",
        "--",
        "set",
        "interface",
        "tapvm",
        "external_ids:iface-id=vm-port",
        &format!("external_ids:vm-uuid={VM}"),
    ])?;
    server.vsctl(&[
        "add-port",
        "br-int",
        "dhcp-port",
        "tag=5",
        "--",
        "set",
        "interface",
        "dhcp-port",
        "type=internal",
        "external_ids:iface-id=dhcp-port-id",
    ])?;

    let outbox = Outbox::new(HOST, "lab", 1, 1 << 26);
    let stop = CancellationToken::new();
    let directory = InterfaceDirectory::default();
    let kernel = Kernel::new(scope(), lab.kernel_options()).with_directory(directory.clone());
    tokio::spawn(Box::new(kernel).follow(outbox.clone(), stop.clone()));
    tokio::spawn(
        Box::new(Ovs::new(scope(), options(&server), directory))
            .follow(outbox.clone(), stop.clone()),
    );
    let followed = Followed {
        outbox,
        stop,
        oracle: None,
    };
    followed.settle().await;

    let tap = followed
        .object("vnic:compute-1:tapvm")
        .expect("one object for the tap");
    assert_eq!(
        extra(&tap, "tun_mode"),
        Some(&"tap".into()),
        "the kernel's facts"
    );
    assert_eq!(extra(&tap, "tag"), Some(&AttrValue::Int(5)), "OVS's facts");
    assert_eq!(
        extra(&tap, "instance"),
        Some(&format!("instance:{VM}").into())
    );

    let dhcp_port = followed
        .object("vnic:compute-1:qdhcp-net1/dhcp-port")
        .expect("the namespaced port");
    assert_eq!(extra(&dhcp_port, "netns"), Some(&"qdhcp-net1".into()));
    assert_eq!(extra(&dhcp_port, "iface_id"), Some(&"dhcp-port-id".into()));
    assert!(
        followed.object("vnic:compute-1:dhcp-port").is_none(),
        "no second object under the bare name"
    );
    Ok(())
}

/// A test double for an ovsdb-server older than `monitor_cond_since` (OVS before 2.12): it
/// speaks RFC 7047 JSON-RPC with the installed vswitch schema, refuses `monitor_cond_since` as
/// such a server does ("unknown method"), answers `monitor` with the initial rows and then
/// sends one `update` notification.
#[tokio::test]
async fn servers_without_monitor_cond_since_are_followed_with_monitor() -> anyhow::Result<()> {
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    calipso_tests::init_test_logging();
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(
        "/usr/share/openvswitch/vswitch.ovsschema",
    )?)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("old.sock");
    let listener = tokio::net::UnixListener::bind(&path)?;
    let uuid = |s: &str| json!(["uuid", s]);
    let initial = json!({
        "Open_vSwitch": {"00000000-0000-0000-0000-00000000000a": {"new": {"ovs_version": "2.5.0", "db_version": "7.12.1", "external_ids": ["map", []], "other_config": ["map", []]}}},
        "Bridge": {"00000000-0000-0000-0000-00000000000b": {"new": {"name": "br-int", "datapath_type": "", "fail_mode": ["set", []], "ports": uuid("00000000-0000-0000-0000-00000000000c"), "external_ids": ["map", []], "other_config": ["map", []]}}},
        "Port": {"00000000-0000-0000-0000-00000000000c": {"new": {"name": "tapold", "tag": 4, "trunks": ["set", []], "vlan_mode": ["set", []], "bond_mode": ["set", []], "interfaces": uuid("00000000-0000-0000-0000-00000000000d"), "external_ids": ["map", []]}}},
        "Interface": {"00000000-0000-0000-0000-00000000000d": {"new": {"name": "tapold", "type": "", "ofport": 1, "external_ids": ["map", [["iface-id", "old-port"]]], "options": ["map", []]}}}
    });
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        let (mut read, mut write) = stream.into_split();
        let mut buffer = Vec::new();
        let mut chunk = vec![0u8; 65536];
        loop {
            let n = read.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, anyhow::Error>(());
            }
            buffer.extend_from_slice(&chunk[..n]);
            // Requests from our client arrive whole and one at a time in this exchange.
            let Ok(request) = serde_json::from_slice::<Value>(&buffer) else {
                continue;
            };
            buffer.clear();
            let id = request["id"].clone();
            let reply = match request["method"].as_str() {
                Some("list_dbs") => json!({"id": id, "result": ["Open_vSwitch"], "error": null}),
                Some("get_schema") => json!({"id": id, "result": schema, "error": null}),
                Some("monitor") => json!({"id": id, "result": initial, "error": null}),
                _ => json!({"id": id, "result": null, "error": "unknown method"}),
            };
            write.write_all(&serde_json::to_vec(&reply)?).await?;
            if request["method"] == "monitor" {
                let update = json!({"method": "update", "id": null, "params": [null, {"Port": {"00000000-0000-0000-0000-00000000000c": {
                    "old": {"tag": 4}, "new": {"name": "tapold", "tag": 8, "trunks": ["set", []], "vlan_mode": ["set", []], "bond_mode": ["set", []],
                    "interfaces": uuid("00000000-0000-0000-0000-00000000000d"), "external_ids": ["map", []]}}}}]});
                tokio::time::sleep(Duration::from_millis(200)).await;
                write.write_all(&serde_json::to_vec(&update)?).await?;
            }
        }
    });
    let options = OvsOptions {
        endpoint: Endpoint::Unix(path),
        ..OvsOptions::default()
    };
    let outbox = Outbox::new(HOST, "lab", 1, 1 << 20);
    let stop = CancellationToken::new();
    tokio::spawn(
        Box::new(Ovs::new(scope(), options, InterfaceDirectory::default()))
            .follow(outbox.clone(), stop.clone()),
    );
    let followed = Followed {
        outbox,
        stop,
        oracle: None,
    };
    let mut tag = None;
    for _ in 0..20 {
        followed.settle().await;
        tag = followed
            .object("vnic:compute-1:tapold")
            .and_then(|o| extra(&o, "tag").cloned());
        if tag == Some(AttrValue::Int(8)) {
            break;
        }
    }
    assert_eq!(
        tag,
        Some(AttrValue::Int(8)),
        "the initial rows and the update both arrived"
    );
    let vedge = followed.object("vedge:compute-1:ovs").expect("vedge");
    assert_eq!(extra(&vedge, "ovs_version"), Some(&"2.5.0".into()));
    drop(followed);
    server.abort();
    Ok(())
}

#[tokio::test]
async fn ssl_to_ovsdb_server_with_the_deployment_certificates() -> anyhow::Result<()> {
    use calipso_agent::ovsdb::SslFiles;
    use calipso_tests::ovslab::SslRemote;
    calipso_tests::init_test_logging();
    let pki = calipso_tests::Pki::new()?;
    let server_files = pki.server_paths();
    let (server, port) = OvsServer::start_ssl(&SslRemote {
        key: &server_files.key,
        cert: &server_files.cert,
        ca_cert: &server_files.ca_cert,
    })?;
    compute_host(&server)?;
    let (agent, _) = pki.agent(HOST)?;
    let endpoint = |files: SslFiles| Endpoint::Ssl {
        address: format!("127.0.0.1:{port}"),
        files: Some(files),
    };
    let files = SslFiles {
        ca_cert: agent.ca_cert.clone(),
        cert: agent.cert.clone(),
        key: agent.key.clone(),
    };
    let mut ovs = Ovs::new(
        scope(),
        OvsOptions {
            endpoint: endpoint(files),
            ..OvsOptions::default()
        },
        InterfaceDirectory::default(),
    );
    let objects = ovs.scan().await?;
    assert_eq!(objects.len(), 4, "vedge, otep and two VM ports over SSL");

    // A client certificate from another CA is refused by the server.
    let other = calipso_tests::Pki::new()?;
    let (stranger, _) = other.agent(HOST)?;
    let files = SslFiles {
        ca_cert: agent.ca_cert.clone(),
        cert: stranger.cert,
        key: stranger.key,
    };
    let mut ovs = Ovs::new(
        scope(),
        OvsOptions {
            endpoint: endpoint(files),
            ..OvsOptions::default()
        },
        InterfaceDirectory::default(),
    );
    assert!(
        ovs.scan().await.is_err(),
        "a foreign client certificate must not get in"
    );
    Ok(())
}
