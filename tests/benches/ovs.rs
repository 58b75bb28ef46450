//! The OVS collector against a real ovsdb-server holding 2 000 VM interfaces on br-int (with
//! Neutron and Nova ids) and vxlan tunnels on br-tun:
//!
//! 1. initial sync: connect, subscribe, build and publish every object (10 rounds);
//! 2. OVSDB update → delta in the outbox: a port's tag changed by a `transact` over our own
//!    client, timed until the delta carrying the new tag is in the outbox (200 rounds);
//! 3. the RSS the OVS collector adds: the release agent binary on an empty host namespace,
//!    with and without the database to follow (root needed for the namespace).
//!
//! `cargo build --release -p calipso-agent && cargo bench -p calipso-tests --bench ovs`

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use calipso_agent::collect::{Collector, InterfaceDirectory, Ovs, OvsOptions, Scope};
use calipso_agent::outbox::Outbox;
use calipso_agent::ovsdb::{Client, Endpoint};
use calipso_aggregator::ingest::MemorySink;
use calipso_proto::{AttrValue, codec, wire::AgentMessage};
use calipso_tests::netlab::NetLab;
use calipso_tests::ovslab::OvsServer;
use calipso_tests::{Pki, SERVER_NAME, TestAggregator};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const INTERFACES: usize = 2000;
const TUNNELS: usize = 20;
const ROUNDS: usize = 200;
const HOST: &str = "bench-ovs";

fn populate(server: &OvsServer) -> anyhow::Result<()> {
    server.add_netdev_bridge("br-int")?;
    server.add_netdev_bridge("br-tun")?;
    for chunk in (0..INTERFACES).collect::<Vec<_>>().chunks(250) {
        let mut args: Vec<String> = Vec::new();
        for &i in chunk {
            let name = format!("tap{i:05}");
            args.extend([
                "--".into(),
                "add-port".into(),
                "br-int".into(),
                name.clone(),
                format!("tag={}", 1 + i % 4000),
                "--".into(),
                "set".into(),
                "interface".into(),
                name,
                format!("external_ids:iface-id=port-{i:05}"),
                format!(
                    "external_ids:attached-mac=fa:16:3e:00:{:02x}:{:02x}",
                    i / 256,
                    i % 256
                ),
                format!("external_ids:vm-uuid=00000000-0000-0000-0000-{i:012}"),
            ]);
        }
        let refs: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
        server.vsctl(&refs)?;
    }
    for t in 0..TUNNELS {
        let name = format!("vxlan-{t:02}");
        server.vsctl(&[
            "add-port",
            "br-tun",
            &name,
            "--",
            "set",
            "interface",
            &name,
            "type=vxlan",
            &format!("options:remote_ip=192.0.2.{}", t + 10),
            "options:local_ip=192.0.2.1",
        ])?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = OvsServer::start()?;
        let built = Instant::now();
        populate(&server)?;
        println!("ovsdb-server with {INTERFACES} VM interfaces and {TUNNELS} tunnels, built in {:.1} s", built.elapsed().as_secs_f64());
        let scope = Scope { host: HOST.into(), environment: "bench".into() };
        let options = OvsOptions { endpoint: Endpoint::Unix(server.socket()), ..OvsOptions::default() };
        let expected = INTERFACES + 2; // VM vNICs, the vedge, one otep

        // 1. Initial sync.
        let mut syncs = Vec::new();
        for _ in 0..10 {
            let outbox = Outbox::new(HOST, "bench", 1, 1 << 30);
            let stop = CancellationToken::new();
            let started = Instant::now();
            tokio::spawn(Box::new(Ovs::new(scope.clone(), options.clone(), InterfaceDirectory::default())).follow(outbox.clone(), stop.clone()));
            let mut watch = outbox.watch();
            while outbox.objects().len() < expected {
                watch.changed().await?;
            }
            syncs.push(started.elapsed());
            stop.cancel();
        }
        syncs.sort_unstable();
        println!("initial sync of {expected} objects: p50 {:.1} ms, max {:.1} ms", percentile(&syncs, 0.5), percentile(&syncs, 1.0));

        // 2. Update → delta.
        let outbox = Outbox::new(HOST, "bench", 1, 1 << 30);
        let stop = CancellationToken::new();
        tokio::spawn(Box::new(Ovs::new(scope.clone(), options.clone(), InterfaceDirectory::default())).follow(outbox.clone(), stop.clone()));
        let mut watch = outbox.watch();
        while outbox.objects().len() < expected {
            watch.changed().await?;
        }
        let (client, _events) = Client::connect(&Endpoint::Unix(server.socket()), 1 << 26, Duration::from_secs(10)).await?;
        let mut latencies = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            let name = format!("tap{:05}", (round * 7) % INTERFACES);
            let tag = 1000 + round as i64;
            outbox.ack(*watch.borrow_and_update());
            let started = Instant::now();
            let result = client
                .call("transact", json!(["Open_vSwitch", {"op": "update", "table": "Port", "where": [["name", "==", name]], "row": {"tag": tag}}]))
                .await?;
            anyhow::ensure!(result[0]["count"] == 1, "transact updated {result}");
            let wanted = format!("vnic:{HOST}:{name}");
            'wait: loop {
                watch.changed().await?;
                for pending in outbox.pending_after(0) {
                    if let Ok(AgentMessage::Delta(delta)) = codec::decode::<AgentMessage>(&pending.frame)
                        && delta.upserts.iter().any(|o| o.id.as_str() == wanted && o.attributes.extra.get("tag") == Some(&AttrValue::Int(tag)))
                    {
                        break 'wait;
                    }
                }
            }
            latencies.push(started.elapsed());
        }
        stop.cancel();
        latencies.sort_unstable();
        println!(
            "OVSDB update -> delta in the outbox ({ROUNDS} tag changes, {INTERFACES} interfaces): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&latencies, 0.5), percentile(&latencies, 0.99), percentile(&latencies, 1.0)
        );

        // 3. RSS the OVS collector adds, in the agent binary.
        let binary = std::env::current_exe()?.parent().and_then(|d| d.parent()).context("target dir")?.join("calipso-agent");
        anyhow::ensure!(binary.exists(), "{} missing: cargo build --release -p calipso-agent", binary.display());
        let lab = NetLab::new()?;
        let pki = Pki::new()?;
        let sink = Arc::new(MemorySink::new());
        let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
        let (tls, _) = pki.agent_in(HOST, "bench")?;
        let mut rss = Vec::new();
        for socket in [server.socket().display().to_string(), "/nonexistent/db.sock".to_owned()] {
            let dir = tempfile::tempdir()?;
            let config = dir.path().join("agent.toml");
            std::fs::write(&config, format!(
                "host = \"{HOST}\"\nenvironment = \"bench\"\n[aggregator]\naddress = \"{}\"\nserver_name = \"{SERVER_NAME}\"\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n[netns]\ndir = \"{}\"\nhost = \"{}\"\n[libvirt]\ndir = \"{}\"\n[ovs]\nsocket = \"{socket}\"\n",
                aggregator.addr, tls.ca_cert.display(), tls.cert.display(), tls.key.display(),
                lab.netns_dir().display(), lab.host_netns_path().display(), lab.libvirt_dir.path().display(),
            ))?;
            let mut child = Command::new(&binary).args(["run", "--config"]).arg(&config).env("RUST_LOG", "error").spawn()?;
            let want = if socket.starts_with('/') && socket.contains("nonexistent") { 1 } else { expected + 1 };
            let deadline = Instant::now() + Duration::from_secs(60);
            while sink.objects(HOST).len() < want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            rss.push((sink.objects(HOST).len(), rss_kib(child.id())?));
            let _ = child.kill();
            let _ = child.wait();
        }
        let (with_ovs, without_ovs) = (rss[0], rss[1]);
        println!(
            "agent RSS with OVS ({} objects): {:.1} MB; without ({} objects): {:.1} MB; the OVS collector adds {:.1} MB",
            with_ovs.0, with_ovs.1 as f64 / 1024.0, without_ovs.0, without_ovs.1 as f64 / 1024.0,
            (with_ovs.1 as f64 - without_ovs.1 as f64) / 1024.0
        );
        aggregator.stop().await;
        Ok(())
    })
}
