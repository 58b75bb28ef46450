//! A fleet of simulated agents against the real aggregator binary: 1 000 agents (each its own
//! QUIC connection with its own certificate from the CA tool, the agent's real outbox and
//! uplink) report synthetic OVS compute hosts of ~500 objects to `calipso-aggregator serve`
//! (SQLite store, API on loopback), then churn. Measured:
//!
//! 1. sustained ingest: every host's snapshot stored (object changes per second);
//! 2. change → visible on the live stream: an agent publishes a change, a client following
//!    `/api/v1/events` receives it (p50 / p99 / max), under churn from all agents;
//! 3. the aggregator process's RSS and CPU, read from /proc (the agents run in this process),
//!    and its store commits during the churn (rate, mean time), from its metrics.
//!
//! `cargo bench -p calipso-tests --bench fleet` (`CALIPSO_BENCH_AGENTS`, default 1000;
//! `CALIPSO_BENCH_CHURN_PER_SECOND`, default 200; `CALIPSO_BENCH_CHURN_SECONDS`, default 30;
//! `CALIPSO_BENCH_SETTLE_SECONDS`, default 0: a pause between the snapshots and the churn;
//! `CALIPSO_BENCH_CHURN=status`: the churn is health checks' status changes of existing vNICs,
//! each a change of level, rather than ports coming and going: between `ok` and
//! `CALIPSO_BENCH_STATUS_LEVEL`, `error` by default, which takes the vNIC's links down and up;
//! `warning` leaves them be).

use std::collections::HashMap;
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calipso_agent::outbox::ChangeSet;
use calipso_aggregator::client::ApiClient;
use calipso_aggregator::synthetic::{Layout, host_name, host_objects};
use calipso_tests::{ENV, Pki, TestAgent, agent_config, vnic};
use futures::StreamExt;
use rand::Rng;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (RSS MiB, CPU seconds) of a process.
fn usage(pid: u32) -> (f64, f64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0);
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The aggregator's store commits so far, from its metrics: (count, seconds spent).
async fn commits(port: u16) -> Option<(f64, f64)> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some((
        value("calipso_commit_duration_seconds_count")?,
        value("calipso_commit_duration_seconds_sum")?,
    ))
}

struct Aggregator {
    child: std::process::Child,
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let agents = setting("CALIPSO_BENCH_AGENTS", 1000);
    let churn_rate = setting("CALIPSO_BENCH_CHURN_PER_SECOND", 200);
    let churn_seconds = setting("CALIPSO_BENCH_CHURN_SECONDS", 30);
    let settle = setting("CALIPSO_BENCH_SETTLE_SECONDS", 0);
    let status_churn = std::env::var("CALIPSO_BENCH_CHURN").is_ok_and(|kind| kind == "status");
    let failing_level = match std::env::var("CALIPSO_BENCH_STATUS_LEVEL").as_deref() {
        Ok("warning") => calipso_proto::StatusLevel::Warning,
        _ => calipso_proto::StatusLevel::Error,
    };
    let binary = calipso_tests::workspace_binary("calipso-aggregator", "calipso-aggregator", true)?;
    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let ingest_port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let api_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let metrics_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = pki.server_paths();
    let config = dir.path().join("aggregator.toml");
    std::fs::create_dir(dir.path().join("data"))?;
    std::fs::write(
        &config,
        format!(
            "[ingest]\nlisten = \"127.0.0.1:{ingest_port}\"\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ncrl = \"{}\"\n\
             [store]\nurl = \"sqlite://{}\"\nsecret_key_file = \"{}\"\n[api]\nlisten = \"127.0.0.1:{api_port}\"\nadmin_password = \"bench-password\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            server.ca_cert.display(),
            server.cert.display(),
            server.key.display(),
            server.crl.display(),
            dir.path().join("data").join("calipso.db").display(),
            dir.path().join("secret.key").display(),
        ),
    )?;
    let child = Command::new(&binary)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let aggregator = Aggregator { child };
    let pid = aggregator.child.id();
    let url = format!("http://127.0.0.1:{api_port}");
    let mut client = ApiClient::new(&url)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get("/healthz", &[]).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the aggregator did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.login("admin", "bench-password").await?;
    let (rss_idle, _) = usage(pid);

    // 1. Every agent connects and sends its host's snapshot.
    let layout = Layout {
        tunnel_peers: 16.min(agents.saturating_sub(1)),
        ..Layout::with_objects_per_host(agents, 500)
    };
    let mut fleet = Vec::with_capacity(agents);
    // Each agent's vNICs, whose statuses a status churn changes.
    let mut vnics: Vec<Vec<calipso_proto::ObjectId>> = Vec::with_capacity(agents);
    let mut objects = 0;
    let started = Instant::now();
    let (_, cpu_before_ingest) = usage(pid);
    let addr = ([127, 0, 0, 1], ingest_port).into();
    let uplink = calipso_agent::config::AggregatorConfig {
        keep_alive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        ..agent_config(addr)
    };
    for index in 0..agents {
        let host = host_name(index);
        let (tls, _) = pki.agent(&host)?;
        let agent = TestAgent::start(&host, &tls, &uplink)?;
        let model = host_objects(ENV, index, &layout);
        objects += model.len();
        vnics.push(
            model
                .iter()
                .filter(|o| o.object_type == calipso_proto::ObjectType::Vnic)
                .map(|o| o.id.clone())
                .collect(),
        );
        agent
            .outbox
            .publish(
                "synthetic",
                ChangeSet {
                    upserts: model,
                    removals: vec![],
                },
            )
            .map_err(|err| anyhow::anyhow!("publish: {err}"))?;
        fleet.push(agent);
    }
    for agent in &mut fleet {
        anyhow::ensure!(
            agent.wait_acked(Duration::from_secs(600)).await,
            "{} not acknowledged",
            agent.host
        );
    }
    let ingest = started.elapsed();
    let (rss_loaded, cpu_after_ingest) = usage(pid);
    println!(
        "{agents} agents, {objects} objects stored in {:.1} s: {:.0} object changes/s (aggregator CPU {:.0} %)",
        ingest.as_secs_f64(),
        objects as f64 / ingest.as_secs_f64(),
        100.0 * (cpu_after_ingest - cpu_before_ingest) / ingest.as_secs_f64()
    );

    // 2. Churn from all agents while a client follows the stream.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut events = Box::pin(
        client
            .events(&[("env_name", ENV), ("types", "vnic")], None)
            .await?,
    );
    let follower = {
        let (sent, latencies) = (sent.clone(), latencies.clone());
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if event.event != "change" {
                    continue;
                }
                let Ok(data) = serde_json::from_str::<serde_json::Value>(&event.data) else {
                    continue;
                };
                if data["kind"] != "object" || data["action"] != "upsert" {
                    continue;
                }
                let key = data["key"].as_str().unwrap_or_default();
                let published = sent.lock().map(|mut s| s.remove(key)).ok().flatten();
                if let Some(at) = published
                    && let Ok(mut l) = latencies.lock()
                {
                    l.push(at.elapsed());
                }
            }
        })
    };
    // `CALIPSO_BENCH_SETTLE_SECONDS` lets the aggregator finish what the snapshot burst left
    // (the store's checkpoint of its write-ahead log) before the churn is timed.
    tokio::time::sleep(Duration::from_millis(500) + Duration::from_secs(settle as u64)).await;
    let commits_before = commits(metrics_port).await;
    let (_, cpu_before_churn) = usage(pid);
    let churn_started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / churn_rate.max(1) as f64);
    let mut next = Instant::now();
    let mut published = 0usize;
    let mut rng = rand::rng();
    let mut previous: HashMap<usize, calipso_proto::ObjectId> = HashMap::new();
    let mut failing: std::collections::HashSet<calipso_proto::ObjectId> = Default::default();
    while churn_started.elapsed() < Duration::from_secs(churn_seconds as u64) {
        let which = rng.random_range(0..fleet.len());
        let agent = &fleet[which];
        if status_churn && !vnics[which].is_empty() {
            // A vNIC's check flips between ok and the failing level: every change is one of
            // level.
            let id = vnics[which][rng.random_range(0..vnics[which].len())].clone();
            let level = if failing.insert(id.clone()) {
                failing_level
            } else {
                failing.remove(&id);
                calipso_proto::StatusLevel::Ok
            };
            if let Ok(mut s) = sent.lock() {
                s.insert(id.to_string(), Instant::now());
            }
            let status = calipso_proto::Status {
                level,
                text: format!("churn {published}"),
                ..calipso_proto::Status::default()
            };
            agent
                .outbox
                .set_statuses([(id, status)])
                .map_err(|err| anyhow::anyhow!("set_statuses: {err}"))?;
        } else {
            let name = format!("churn{published}");
            let object = vnic(&agent.host, &name, 1500);
            // Each churn port replaces the agent's previous one, so the model stays its size.
            let removals = previous
                .insert(which, object.id.clone())
                .into_iter()
                .collect::<Vec<_>>();
            if let Ok(mut s) = sent.lock() {
                s.insert(object.id.to_string(), Instant::now());
            }
            agent
                .outbox
                .publish(
                    "churn",
                    ChangeSet {
                        upserts: vec![object],
                        removals,
                    },
                )
                .map_err(|err| anyhow::anyhow!("publish: {err}"))?;
        }
        published += 1;
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    let churn = churn_started.elapsed();
    let (rss_churn, cpu_after_churn) = usage(pid);
    let commits_after = commits(metrics_port).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    follower.abort();
    let mut seen = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    seen.sort();
    let missing = sent.lock().map(|s| s.len()).unwrap_or(0);
    println!(
        "churn ({}): {published} changes in {:.1} s ({:.0}/s), aggregator CPU {:.0} %",
        if status_churn {
            "status changes"
        } else {
            "ports"
        },
        churn.as_secs_f64(),
        published as f64 / churn.as_secs_f64(),
        100.0 * (cpu_after_churn - cpu_before_churn) / churn.as_secs_f64()
    );
    println!(
        "change -> live stream: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} seen, {missing} not seen)",
        percentile(&seen, 0.50).as_secs_f64() * 1000.0,
        percentile(&seen, 0.99).as_secs_f64() * 1000.0,
        seen.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        seen.len()
    );
    if let (Some((count_before, seconds_before)), Some((count_after, seconds_after))) =
        (commits_before, commits_after)
    {
        let count = count_after - count_before;
        println!(
            "store commits during the churn: {:.0}/s, {:.2} ms each on average",
            count / churn.as_secs_f64(),
            1000.0 * (seconds_after - seconds_before) / count.max(1.0)
        );
    }
    println!(
        "aggregator RSS: {rss_idle:.0} MiB idle, {rss_loaded:.0} MiB with the fleet's model, {rss_churn:.0} MiB after churn"
    );
    drop(aggregator);
    futures::future::join_all(fleet.into_iter().map(TestAgent::stop)).await;
    Ok(())
}
