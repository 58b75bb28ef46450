//! Transport benchmark over real QUIC on loopback with real certificates:
//!
//! 1. throughput: single-object deltas over one connection, published as fast as the agent's
//!    outbox takes them, until the aggregator has acknowledged them all;
//! 2. connect + resume: a new connection for an epoch the aggregator holds, until the change
//!    missed while disconnected is acknowledged;
//! 3. bytes on the wire for that resume, against a full snapshot of the same host.
//!
//! `cargo bench -p calipso-tests --bench transport` (CALIPSO_BENCH_DELTAS sets the delta count).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use calipso_agent::UplinkEvent;
use calipso_agent::outbox::ChangeSet;
use calipso_aggregator::ingest::MemorySink;
use calipso_proto::wire::Resume;
use calipso_tests::{Pki, TestAgent, TestAggregator, agent_config, vnic};

const WAIT: Duration = Duration::from_secs(120);
const HOST_OBJECTS: u32 = 500;
const RESUME_ROUNDS: usize = 30;

fn main() -> anyhow::Result<()> {
    let deltas: u64 = std::env::var("CALIPSO_BENCH_DELTAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let pki = Pki::new()?;
        let sink = Arc::new(MemorySink::new());
        let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
        let (tls, _) = pki.agent("bench-1")?;
        let config = agent_config(aggregator.addr);

        // 1. Throughput.
        let mut agent = TestAgent::start("bench-1", &tls, &config)?;
        agent.wait_event(WAIT, |e| matches!(e, UplinkEvent::Connected { .. })).await;
        let started = Instant::now();
        for i in 0..deltas {
            let object = vnic("bench-1", &format!("tap{}", i % u64::from(HOST_OBJECTS)), u32::try_from(i % 60_000).unwrap_or(0) + 1);
            agent.outbox.publish("bench", ChangeSet { upserts: vec![object], removals: vec![] })?;
            if i % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let published = started.elapsed();
        anyhow::ensure!(agent.wait_acked(WAIT).await, "not all deltas were acknowledged");
        let elapsed = started.elapsed();
        let outbox = agent.outbox.clone();
        let uplink = agent.uplink.clone();
        agent.stop().await;
        let frame_bytes = uplink.stats().frame_bytes_sent.load(Ordering::Relaxed);
        let udp_bytes = uplink.stats().udp_bytes_sent.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        println!("throughput: {deltas} single-object deltas in {secs:.3} s (publishing took {:.3} s)", published.as_secs_f64());
        println!("  {:.0} deltas/s acknowledged", deltas as f64 / secs);
        println!("  {:.1} MB/s of frames ({frame_bytes} bytes), {:.1} MB/s on UDP ({udp_bytes} bytes)", frame_bytes as f64 / secs / 1e6, udp_bytes as f64 / secs / 1e6);
        println!("  {:.0} bytes per delta frame", frame_bytes as f64 / deltas as f64);

        // 2 and 3. Resume after one missed change, on a host of HOST_OBJECTS objects.
        let mut connect_to_welcome = Vec::new();
        let mut connect_to_acked = Vec::new();
        let mut resume_frame_bytes = Vec::new();
        let mut resume_udp_bytes = Vec::new();
        for round in 0..RESUME_ROUNDS {
            outbox.publish("bench", ChangeSet { upserts: vec![vnic("bench-1", "tap0", 9000 + u32::try_from(round).unwrap_or(0))], removals: vec![] })?;
            let started = Instant::now();
            let mut agent = TestAgent::with_outbox(outbox.clone(), &tls, &config)?;
            let connected = agent.wait_event(WAIT, |e| matches!(e, UplinkEvent::Connected { .. })).await;
            anyhow::ensure!(matches!(connected, Some(UplinkEvent::Connected { resume: Resume::After { .. } })), "expected a resume, got {connected:?}");
            connect_to_welcome.push(started.elapsed());
            let target = *outbox.watch().borrow();
            let acked = agent.wait_event(WAIT, |e| matches!(e, UplinkEvent::Acked { seq } if *seq >= target)).await;
            anyhow::ensure!(acked.is_some(), "resume not acknowledged");
            connect_to_acked.push(started.elapsed());
            let uplink = agent.uplink.clone();
            agent.stop().await;
            resume_frame_bytes.push(uplink.stats().frame_bytes_sent.load(Ordering::Relaxed));
            resume_udp_bytes.push(uplink.stats().udp_bytes_sent.load(Ordering::Relaxed));
        }
        let (_, snapshot) = outbox.snapshot()?;
        println!("connect + resume ({RESUME_ROUNDS} rounds, new QUIC connection each):");
        println!("  to Welcome: {}", summary(&mut connect_to_welcome));
        println!("  to the missed change acknowledged: {}", summary(&mut connect_to_acked));
        println!("bytes to resume after one missed change, host of {} objects:", outbox.objects().len());
        println!("  protocol frames (Hello + Delta): median {} bytes", median(&mut resume_frame_bytes));
        println!("  UDP sent by the agent, QUIC + TLS 1.3 handshake with its certificate included: median {} bytes", median(&mut resume_udp_bytes));
        println!("  a full snapshot of the same host instead: {} bytes", snapshot.len() + 4);
        aggregator.stop().await;
        Ok(())
    })
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn summary(durations: &mut [Duration]) -> String {
    durations.sort_unstable();
    let at = |q: f64| {
        durations
            .get(((durations.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, min {:.2} ms",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(0.0))
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
