//! A check's verdict → the aggregator's live publication: how long after an agent's check
//! records a status change (`Outbox::set_statuses`) the change is applied and published by the
//! committer (what the live stream forwards, and what the API answers from then on), over QUIC
//! into the durable sink on SQLite, with 500 objects on the host. 200 changes, alternating a
//! vNIC between error and ok, one at a time.
//!
//! `cargo bench -p calipso-tests --bench health`

use std::time::{Duration, Instant};

use calipso_aggregator::ingest::Published;
use calipso_aggregator::synthetic::{Layout, host_name, host_objects};
use calipso_proto::{ObjectType, Status, StatusLevel};
use calipso_tests::{ENV, Pki, TestAgent, TestAggregator, agent_config};

const OBJECTS: usize = 500;
const ROUNDS: usize = 200;

fn main() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let sink = calipso_tests::sqlite_sink(dir.path()).await?;
        let pki = Pki::new()?;
        let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
        let host = host_name(0);
        let (tls, _) = pki.agent(&host)?;
        let mut agent = TestAgent::start(&host, &tls, &agent_config(aggregator.addr))?;
        let objects = host_objects(ENV, 0, &Layout::with_objects_per_host(1, OBJECTS));
        let ids: Vec<_> = objects
            .iter()
            .filter(|o| o.object_type == ObjectType::Vnic)
            .map(|o| o.id.clone())
            .collect();
        anyhow::ensure!(!ids.is_empty(), "the synthetic host has vNICs");
        println!("{} objects on the host, {} of them vNICs", objects.len(), ids.len());
        agent.outbox.replace_all("bench", objects)?;
        anyhow::ensure!(agent.wait_acked(Duration::from_secs(30)).await, "initial sync");

        let mut published = sink.subscribe();
        let mut latencies = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            let id = ids[round % ids.len()].clone();
            let level = if round % 2 == 0 { StatusLevel::Error } else { StatusLevel::Ok };
            let verdict = Status {
                level,
                text: format!("round {round}"),
                ..Status::default()
            };
            let started = Instant::now();
            agent.outbox.set_statuses([(id.clone(), verdict)])?;
            loop {
                let event = tokio::time::timeout(Duration::from_secs(10), published.recv()).await??;
                let Published::Changes(group) = event.as_ref() else {
                    continue;
                };
                let seen = group.changes.iter().flat_map(|(_, applied)| &applied.objects).any(|diff| {
                    diff.id == id && diff.after.as_ref().is_some_and(|n| n.object.status.level == level)
                });
                if seen {
                    break;
                }
            }
            latencies.push(started.elapsed());
        }
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
        println!(
            "status change -> published by the aggregator ({ROUNDS} changes): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target: within 1 s)",
            at(0.5),
            at(0.99),
            at(1.0)
        );
        agent.stop().await;
        aggregator.stop().await;
        Ok(())
    })
}
