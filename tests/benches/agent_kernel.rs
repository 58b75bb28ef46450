//! The agent on a busy network host: 100 namespaces with 5 veth ends each and 20 bridges, built
//! for real in a private host namespace (root needed).
//!
//! 1. the release `calipso-agent` binary, connected to an aggregator over QUIC, without its
//!    health checks and with them (every object checked every 15 s): its RSS once the host is
//!    synchronised (and, with checks, every object has its first verdict), and its CPU time over
//!    60 s with nothing changing (one periodic re-dump of every namespace falls into that
//!    window);
//! 2. kernel event → delta in the outbox: a veth pair created through rtnetlink, timed until
//!    the kernel collector's delta carrying it is in the outbox (in-process, 200 rounds).
//!
//! `cargo build --release -p calipso-agent && cargo bench -p calipso-tests --bench agent_kernel`
//! (`CALIPSO_BENCH_IDLE_SECS` shortens the idle window.)

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use calipso_agent::collect::kernel::Namespace;
use calipso_agent::collect::{Collector, Kernel, Scope};
use calipso_agent::outbox::Outbox;
use calipso_aggregator::ingest::MemorySink;
use calipso_tests::netlab::NetLab;
use calipso_tests::{Pki, SERVER_NAME, TestAggregator};
use tokio_util::sync::CancellationToken;

const NAMESPACES: usize = 100;
const BRIDGES: usize = 20;
const LATENCY_ROUNDS: usize = 200;
const HOST: &str = "bench-host";

fn build_topology(lab: &mut NetLab) -> anyhow::Result<()> {
    let mut host_script = String::new();
    for b in 0..BRIDGES {
        host_script.push_str(&format!(
            "ip link add br{b} type bridge\nip link set br{b} up\n"
        ));
    }
    for n in 0..NAMESPACES {
        let global = lab.add_netns(&format!("qdhcp-{n:04}"))?;
        // Two pairs inside the namespace, one pair whose other end is on a host bridge.
        lab.sh_in(
            &format!("qdhcp-{n:04}"),
            "ip link add a0 type veth peer name b0; ip link add a1 type veth peer name b1; ip link set a0 up",
        )?;
        host_script.push_str(&format!(
            "ip link add h{n} type veth peer name x{n}\nip link set x{n} netns {global}\nip link set h{n} master br{}\n",
            n % BRIDGES
        ));
    }
    lab.sh(&host_script)?;
    for n in 0..NAMESPACES {
        lab.sh_in(
            &format!("qdhcp-{n:04}"),
            &format!(
                "ip addr add 10.{}.{}.2/24 dev x{n}; ip link set x{n} up",
                n / 250,
                n % 250
            ),
        )?;
    }
    Ok(())
}

fn agent_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("target directory")?;
    let binary = release.join("calipso-agent");
    anyhow::ensure!(
        binary.exists(),
        "{} missing: cargo build --release -p calipso-agent",
        binary.display()
    );
    Ok(binary)
}

/// (RSS in KiB, user+system CPU ticks) of a process.
fn rss_and_ticks(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    Ok((rss, ticks))
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let idle_secs: u64 = std::env::var("CALIPSO_BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let binary = agent_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut lab = NetLab::new()?;
        let started = Instant::now();
        build_topology(&mut lab)?;
        println!("topology: {NAMESPACES} namespaces x 5 veth ends + {BRIDGES} bridges, built in {:.1} s", started.elapsed().as_secs_f64());

        // 1. The agent binary against an aggregator, without its health checks (discovery
        //    alone) and with them (every object checked every 15 s).
        let pki = Pki::new()?;
        let (tls, _) = pki.agent_in(HOST, "bench")?;
        for checks in [false, true] {
            let sink = Arc::new(MemorySink::new());
            let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
            let config_dir = tempfile::tempdir()?;
            let config = config_dir.path().join("agent.toml");
            std::fs::write(
                &config,
                format!(
                    "host = \"{HOST}\"\nenvironment = \"bench\"\nstate_file = \"\"\n[aggregator]\naddress = \"{}\"\nserver_name = \"{SERVER_NAME}\"\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n[netns]\ndir = \"{}\"\nhost = \"{}\"\n[libvirt]\ndir = \"{}\"\n[health]\nenabled = {checks}\ninterval = \"15s\"\n",
                    aggregator.addr,
                    tls.ca_cert.display(),
                    tls.cert.display(),
                    tls.key.display(),
                    lab.netns_dir().display(),
                    lab.host_netns_path().display(),
                    lab.libvirt_dir.path().display(),
                ),
            )?;
            let label = if checks { "with checks" } else { "without checks" };
            let child = KillOnDrop(Command::new(&binary).args(["run", "--config"]).arg(&config).env("RUST_LOG", "warn").spawn()?);
            let pid = child.0.id();
            let synced = Instant::now();
            let expected = NAMESPACES * 6 + NAMESPACES + BRIDGES + 1; // vnics, vservices, bridges, host
            loop {
                let held = sink.objects(HOST).len();
                if held >= expected {
                    break;
                }
                anyhow::ensure!(synced.elapsed() < Duration::from_secs(60), "aggregator holds {held} of {expected} objects");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!("{label}: agent synchronised {} objects to the aggregator in {:.0} ms (from process start)", sink.objects(HOST).len(), synced.elapsed().as_secs_f64() * 1e3);
            if checks {
                // Every object but the host (which only plugins check) gets a first verdict.
                let unchecked = || {
                    sink.objects(HOST)
                        .iter()
                        .filter(|o| o.object_type != calipso_proto::ObjectType::Host)
                        .filter(|o| o.status.level == calipso_proto::StatusLevel::Unknown)
                        .count()
                };
                while unchecked() > 0 {
                    anyhow::ensure!(synced.elapsed() < Duration::from_secs(60), "{} objects have no verdict", unchecked());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                println!("{label}: first verdicts of {} objects at the aggregator {:.1} s after process start", expected - 1, synced.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (rss_kib, ticks_before) = rss_and_ticks(pid)?;
            println!("{label}: agent RSS once synchronised: {:.1} MB", rss_kib as f64 / 1024.0);
            let idle_started = Instant::now();
            tokio::time::sleep(Duration::from_secs(idle_secs)).await;
            let (rss_after, ticks_after) = rss_and_ticks(pid)?;
            let ticks_per_sec = 100.0; // USER_HZ
            let cpu_secs = (ticks_after - ticks_before) as f64 / ticks_per_sec;
            println!(
                "{label}: agent CPU over {idle_secs} s with nothing changing: {:.2} s = {:.3} % of one core; RSS after: {:.1} MB",
                cpu_secs,
                cpu_secs / idle_started.elapsed().as_secs_f64() * 100.0,
                rss_after as f64 / 1024.0
            );
            drop(child);
            aggregator.stop().await;
        }

        // 2. Kernel event → delta in the outbox.
        let outbox = Outbox::new(HOST, "bench", 1, 1 << 28);
        let stop = CancellationToken::new();
        let kernel = Box::new(Kernel::new(Scope { host: HOST.into(), environment: "bench".into() }, lab.kernel_options()));
        tokio::spawn(kernel.follow(outbox.clone(), stop.clone()));
        let mut watch = outbox.watch();
        while tokio::time::timeout(Duration::from_millis(500), watch.changed()).await.is_ok() {}
        let host_ns = Namespace::host(Some(&lab.host_netns_path()))?;
        let (connection, handle, _) = host_ns.run_inside(tokio::runtime::Handle::current(), rtnetlink::new_connection)?;
        tokio::spawn(connection);
        let mut latencies = Vec::with_capacity(LATENCY_ROUNDS);
        for round in 0..LATENCY_ROUNDS {
            let name = format!("lat{round}");
            let before = *watch.borrow_and_update();
            let started = Instant::now();
            handle.link().add(rtnetlink::LinkVeth::new(&name, &format!("{name}p")).build()).execute().await?;
            let wanted = format!("vnic:{HOST}:{name}p");
            loop {
                watch.changed().await?;
                let arrived = outbox.pending_after(before).iter().any(|d| {
                    matches!(calipso_proto::codec::decode::<calipso_proto::wire::AgentMessage>(&d.frame),
                        Ok(calipso_proto::wire::AgentMessage::Delta(delta)) if delta.upserts.iter().any(|o| o.id.as_str() == wanted))
                });
                if arrived {
                    break;
                }
            }
            latencies.push(started.elapsed());
            outbox.ack(*watch.borrow());
        }
        stop.cancel();
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
        println!("kernel event -> delta in the outbox ({LATENCY_ROUNDS} veth pairs): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", at(0.5), at(0.99), at(1.0));
        Ok(())
    })
}
