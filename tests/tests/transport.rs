//! The agent ↔ aggregator session over real QUIC on loopback, with certificates from the CA tool.

use std::sync::Arc;
use std::time::Duration;

use calipso_agent::UplinkEvent;
use calipso_agent::outbox::Outbox;
use calipso_aggregator::ingest::{IngestConfig, JournalEntry, MemorySink};
use calipso_proto::codec;
use calipso_proto::framing::{FrameReader, FrameWriter};
use calipso_proto::wire::{AgentMessage, AggregatorMessage, ErrorCode, Hello, Resume};
use calipso_tests::{
    Pki, Setup, TestAgent, TestAggregator, agent_config, init_test_logging, raw_session, wait_until,
};

const LOOPBACK: ([u8; 4], u16) = ([127, 0, 0, 1], 0);
const WAIT: Duration = Duration::from_secs(10);

/// The snapshots and deltas the sink received for `host`, as (kind, seq).
fn applied(sink: &MemorySink, host: &str) -> Vec<(&'static str, u64)> {
    sink.journal()
        .into_iter()
        .filter_map(|entry| match entry {
            JournalEntry::Snapshot { host: h, seq, .. } if h == host => Some(("snapshot", seq)),
            JournalEntry::Delta { host: h, seq, .. } if h == host => Some(("delta", seq)),
            _ => None,
        })
        .collect()
}

fn connections(sink: &MemorySink, host: &str) -> usize {
    sink.journal()
        .iter()
        .filter(|e| matches!(e, JournalEntry::Connected { host: h, .. } if h == host))
        .count()
}

#[tokio::test]
async fn snapshot_then_deltas_in_order() -> anyhow::Result<()> {
    let setup = Setup::new("compute-1")?;
    let mut agent = setup.agent()?;
    agent.change("tap0", 1500);
    agent.change("tap1", 1500);
    let connected = agent
        .wait_event(WAIT, |e| matches!(e, UplinkEvent::Connected { .. }))
        .await;
    assert_eq!(
        connected,
        Some(UplinkEvent::Connected {
            resume: Resume::SnapshotRequired
        })
    );
    for mtu in 1..=50 {
        agent.change("tap0", 1500 + mtu);
    }
    assert!(agent.wait_acked(WAIT).await, "all deltas acknowledged");

    let got = applied(setup.sink(), "compute-1");
    let (kind, snapshot_seq) = got[0];
    assert_eq!(kind, "snapshot");
    let expected: Vec<_> = std::iter::once(("snapshot", snapshot_seq))
        .chain((snapshot_seq + 1..=52).map(|s| ("delta", s)))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(setup.sink().objects("compute-1"), agent.outbox.objects());
    agent.stop().await;
    setup.aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn killed_connection_resumes_without_gap_or_resend() -> anyhow::Result<()> {
    let setup = Setup::new("compute-1")?;
    let mut agent = setup.agent()?;
    agent
        .wait_event(WAIT, |e| matches!(e, UplinkEvent::Connected { .. }))
        .await;

    // Changes keep coming while the connection is killed.
    let producer_outbox = agent.outbox.clone();
    let producer = tokio::spawn(async move {
        for i in 1..=3000u32 {
            let object = calipso_tests::vnic("compute-1", &format!("tap{}", i % 50), i);
            let _ = producer_outbox.publish(
                "test",
                calipso_agent::outbox::ChangeSet {
                    upserts: vec![object],
                    removals: vec![],
                },
            );
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    assert!(wait_until(WAIT, || agent.outbox.acked_seq() >= 500).await);
    assert!(
        setup.aggregator.handle.disconnect("compute-1"),
        "the host was connected"
    );
    producer.await?;
    assert!(
        agent.wait_acked(WAIT).await,
        "everything acknowledged after the reconnect"
    );

    // The agent reconnected once and resumed, sending nothing the aggregator had acknowledged.
    let mut acked_before = 0;
    let mut resumed_after = None;
    let mut sent_after_resume = Vec::new();
    while let Ok(event) = agent.events.try_recv() {
        match event {
            UplinkEvent::Acked { seq } if resumed_after.is_none() => {
                acked_before = acked_before.max(seq)
            }
            UplinkEvent::Connected {
                resume: Resume::After { seq },
            } => resumed_after = Some(seq),
            UplinkEvent::Connected { resume } => panic!("expected a resume, got {resume:?}"),
            UplinkEvent::SentSnapshot { seq, .. } if resumed_after.is_some() => {
                panic!("snapshot {seq} sent on resume")
            }
            UplinkEvent::SentDelta { seq, .. } if resumed_after.is_some() => {
                sent_after_resume.push(seq)
            }
            _ => {}
        }
    }
    let resumed_after = resumed_after.expect("the agent reconnected");
    assert!(resumed_after >= acked_before);
    assert!(
        sent_after_resume.iter().all(|&seq| seq > acked_before),
        "an acknowledged delta was resent"
    );
    assert_eq!(sent_after_resume.first().copied(), Some(resumed_after + 1));

    // The sink saw one snapshot and then every delta exactly once, in order.
    let expected: Vec<_> = std::iter::once(("snapshot", 0))
        .chain((1..=3000).map(|s| ("delta", s)))
        .collect();
    assert_eq!(applied(setup.sink(), "compute-1"), expected);
    assert_eq!(connections(setup.sink(), "compute-1"), 2);
    assert_eq!(setup.sink().objects("compute-1"), agent.outbox.objects());
    agent.stop().await;
    setup.aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn aggregator_that_lost_its_state_gets_a_snapshot() -> anyhow::Result<()> {
    init_test_logging();
    let pki = Pki::new()?;
    let first = TestAggregator::start(&pki, Arc::new(MemorySink::new()), LOOPBACK.into())?;
    let addr = first.addr;
    let (tls, _) = pki.agent("compute-1")?;
    let mut agent = TestAgent::start("compute-1", &tls, &agent_config(addr))?;
    for mtu in 0..20 {
        agent.change(&format!("tap{mtu}"), 1500);
    }
    assert!(agent.wait_acked(WAIT).await);
    first.stop().await;

    // A new aggregator on the same address with an empty sink.
    let second = TestAggregator::start(&pki, Arc::new(MemorySink::new()), addr)?;
    agent.change("tap0", 9000);
    let snapshot = agent
        .wait_event(
            WAIT,
            |e| matches!(e, UplinkEvent::SentSnapshot { seq, .. } if *seq >= 20),
        )
        .await;
    assert!(
        snapshot.is_some(),
        "the agent sends a snapshot to the new aggregator"
    );
    assert!(agent.wait_acked(WAIT).await);
    // The snapshot holds everything up to its seq; the change made after it, if any, follows.
    let (kind, snapshot_seq) = applied(&second.sink, "compute-1")[0];
    assert_eq!((kind, snapshot_seq >= 20), ("snapshot", true));
    let expected: Vec<_> = std::iter::once(("snapshot", snapshot_seq))
        .chain((snapshot_seq + 1..=21).map(|s| ("delta", s)))
        .collect();
    assert_eq!(applied(&second.sink, "compute-1"), expected);
    assert_eq!(second.sink.objects("compute-1").len(), 20);
    assert_eq!(second.sink.objects("compute-1"), agent.outbox.objects());
    agent.stop().await;
    second.stop().await;
    Ok(())
}

#[tokio::test]
async fn restarted_agent_starts_a_new_epoch_with_a_snapshot() -> anyhow::Result<()> {
    let setup = Setup::new("compute-1")?;
    let mut first = setup.agent()?;
    first.change("tap0", 1500);
    first.change("tap1", 1500);
    assert!(first.wait_acked(WAIT).await);
    first.stop().await;

    // The restarted agent no longer has tap1: the snapshot must replace the host's objects.
    let mut second = setup.agent()?;
    second.change("tap0", 1500);
    let connected = second
        .wait_event(WAIT, |e| matches!(e, UplinkEvent::Connected { .. }))
        .await;
    assert_eq!(
        connected,
        Some(UplinkEvent::Connected {
            resume: Resume::SnapshotRequired
        })
    );
    assert!(second.wait_acked(WAIT).await);
    assert!(
        wait_until(WAIT, || setup.sink().objects("compute-1")
            == second.outbox.objects())
        .await
    );
    assert_eq!(setup.sink().objects("compute-1").len(), 1);
    second.stop().await;
    setup.aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() -> anyhow::Result<()> {
    init_test_logging();
    let pki = Pki::new()?;
    let aggregator = TestAggregator::start(&pki, Arc::new(MemorySink::new()), LOOPBACK.into())?;
    let other = Pki::new()?;
    let (mut tls, _) = other.agent("compute-1")?;
    tls.ca_cert = pki.ca.ca_cert_path(); // it trusts the right server, but its own cert is foreign
    let mut agent = TestAgent::start("compute-1", &tls, &agent_config(aggregator.addr))?;
    let refused = agent
        .wait_event(WAIT, |e| matches!(e, UplinkEvent::Disconnected { .. }))
        .await;
    assert!(refused.is_some(), "the handshake must fail");
    assert_eq!(connections(&aggregator.sink, "compute-1"), 0);
    agent.stop().await;
    aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn certificate_of_host_a_claiming_host_b_is_refused() -> anyhow::Result<()> {
    init_test_logging();
    let pki = Pki::new()?;
    let aggregator = TestAggregator::start(&pki, Arc::new(MemorySink::new()), LOOPBACK.into())?;
    let (tls_a, _) = pki.agent("compute-a")?;
    let mut agent = TestAgent::start("compute-b", &tls_a, &agent_config(aggregator.addr))?;
    let reason = refusal_reason(&mut agent).await;
    assert!(reason.contains("identity_mismatch"), "{reason}");
    assert!(
        reason.contains("`compute-a`") && reason.contains("`compute-b`"),
        "{reason}"
    );
    assert_eq!(connections(&aggregator.sink, "compute-b"), 0);
    assert_eq!(connections(&aggregator.sink, "compute-a"), 0);
    agent.stop().await;
    aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn revoked_certificate_is_refused_at_the_next_handshake() -> anyhow::Result<()> {
    let setup = Setup::new("compute-1")?;
    let mut agent = setup.agent()?;
    agent.change("tap0", 1500);
    assert!(agent.wait_acked(WAIT).await, "accepted before revocation");

    setup.pki.ca.revoke(&setup.serial)?;
    assert!(setup.aggregator.handle.disconnect("compute-1"));
    // The agent keeps trying; every handshake is refused now, without restarting the setup.aggregator.
    agent
        .wait_event(WAIT, |e| matches!(e, UplinkEvent::Disconnected { .. }))
        .await;
    let refused_again = agent
        .wait_event(WAIT, |e| matches!(e, UplinkEvent::Disconnected { .. }))
        .await;
    assert!(refused_again.is_some());
    assert_eq!(
        connections(setup.sink(), "compute-1"),
        1,
        "no session after the revocation"
    );
    agent.stop().await;
    setup.aggregator.stop().await;
    Ok(())
}

/// Reads the aggregator's answer on a raw session: the error it sent, if any.
async fn error_reply(recv: quinn::RecvStream) -> Option<(ErrorCode, String)> {
    let mut reader = FrameReader::new(recv, 1 << 20);
    match tokio::time::timeout(WAIT, reader.recv::<AggregatorMessage>()).await {
        Ok(Ok(Some(AggregatorMessage::Error(e)))) => Some((e.code, e.message)),
        _ => None,
    }
}

#[tokio::test]
async fn oversized_length_prefix_gets_an_error_and_a_close() -> anyhow::Result<()> {
    let setup = Setup::new("compute-1")?;
    let (_endpoint, connection, mut send, recv) =
        raw_session(setup.aggregator.addr, &setup.tls).await?;
    // Claim a 4 GiB frame and send no payload: the answer must come at once.
    send.write_all(&u32::MAX.to_be_bytes()).await?;
    let (code, message) = error_reply(recv).await.expect("an Error frame");
    assert_eq!(code, ErrorCode::FrameTooLarge);
    assert!(message.contains("16777216"), "{message}");
    let closed = tokio::time::timeout(WAIT, connection.closed()).await;
    assert!(closed.is_ok(), "the aggregator closes the connection");
    setup.aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn random_bytes_get_an_error_never_a_panic() -> anyhow::Result<()> {
    let setup = Setup::new("compute-1")?;
    for round in 0..20u32 {
        let (_endpoint, _connection, send, recv) =
            raw_session(setup.aggregator.addr, &setup.tls).await?;
        let len = 1 + (round as usize * 37) % 300;
        let garbage: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let mut writer = FrameWriter::new(send, 1 << 20);
        writer.feed_frame(bytes::Bytes::from(garbage)).await?;
        writer.flush().await?;
        let (code, _) = error_reply(recv).await.expect("an Error frame");
        assert!(
            matches!(
                code,
                ErrorCode::MalformedMessage
                    | ErrorCode::UnexpectedMessage
                    | ErrorCode::UnsupportedVersion
            ),
            "round {round}: {code}"
        );
    }
    // The aggregator still serves a well-behaved agent.
    let mut agent = setup.agent()?;
    agent.change("tap0", 1500);
    assert!(agent.wait_acked(WAIT).await);
    agent.stop().await;
    setup.aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn protocol_version_mismatch_is_named_on_the_aggregator_side() -> anyhow::Result<()> {
    let setup = Setup::new("compute-1")?;
    let (_endpoint, _connection, send, recv) =
        raw_session(setup.aggregator.addr, &setup.tls).await?;
    let hello = AgentMessage::Hello(Hello {
        protocol_version: 99,
        agent_version: "9.0.0".into(),
        host: "compute-1".into(),
        environment: calipso_tests::ENV.into(),
        epoch: 1,
        last_acked_seq: 0,
    });
    FrameWriter::new(send, 1 << 20).send(&hello).await?;
    let (code, message) = error_reply(recv).await.expect("an Error frame");
    assert_eq!(code, ErrorCode::UnsupportedVersion);
    assert_eq!(
        message,
        "aggregator speaks protocol version 3, agent sent version 99"
    );
    assert_eq!(connections(setup.sink(), "compute-1"), 0);
    setup.aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn protocol_version_mismatch_is_named_on_the_agent_side() -> anyhow::Result<()> {
    init_test_logging();
    let pki = Pki::new()?;
    // A server that answers every Hello with a Welcome of protocol version 4 (the agent
    // speaks 3).
    let server_config = calipso_aggregator::tls::server_config(&pki.server_paths())?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_config)?;
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        LOOPBACK.into(),
    )?;
    let addr = endpoint.local_addr()?;
    let server = tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(connection) = incoming.await else {
                continue;
            };
            let Ok((send, recv)) = connection.accept_bi().await else {
                continue;
            };
            let mut reader = FrameReader::new(recv, 1 << 20);
            let _ = reader.recv::<AgentMessage>().await;
            let welcome =
                codec::encode(&AggregatorMessage::Welcome(calipso_proto::wire::Welcome {
                    protocol_version: 4,
                    resume: Resume::SnapshotRequired,
                }))
                .unwrap_or_default();
            let mut writer = FrameWriter::new(send, 1 << 20);
            let _ = writer.feed_frame(welcome.into()).await;
            let _ = writer.flush().await;
            let _ = connection.closed().await;
        }
    });
    let (tls, _) = pki.agent("compute-1")?;
    let mut agent = TestAgent::start("compute-1", &tls, &agent_config(addr))?;
    let reason = refusal_reason(&mut agent).await;
    assert_eq!(
        reason,
        "aggregator broke the protocol: aggregator speaks protocol version 4, agent speaks 3"
    );
    agent.stop().await;
    server.abort();
    Ok(())
}

#[tokio::test]
async fn silent_host_is_reported_disconnected_after_the_idle_timeout() -> anyhow::Result<()> {
    init_test_logging();
    let pki = Pki::new()?;
    let mut config =
        calipso_aggregator::ingest::IngestConfig::new(LOOPBACK.into(), pki.server_paths());
    config.idle_timeout = Duration::from_millis(800);
    let aggregator = TestAggregator::start_with(config, Arc::new(MemorySink::new()))?;
    let (tls, _) = pki.agent("compute-1")?;
    // A client that says Hello and then goes silent: no keep-alives, no close.
    let mut silent = agent_config(aggregator.addr);
    silent.keep_alive = Duration::from_secs(3600);
    silent.idle_timeout = Duration::from_secs(7200);
    let client_config = calipso_agent::uplink::client_config(&silent, &tls)?;
    let endpoint = quinn::Endpoint::client(LOOPBACK.into())?;
    let connection = endpoint
        .connect_with(client_config, aggregator.addr, calipso_tests::SERVER_NAME)?
        .await?;
    let (send, _recv) = connection.open_bi().await?;
    let hello = AgentMessage::Hello(Hello {
        protocol_version: calipso_proto::wire::PROTOCOL_VERSION,
        agent_version: "test".into(),
        host: "compute-1".into(),
        environment: calipso_tests::ENV.into(),
        epoch: 9,
        last_acked_seq: 0,
    });
    FrameWriter::new(send, 1 << 20).send(&hello).await?;
    assert!(wait_until(WAIT, || connections(&aggregator.sink, "compute-1") == 1).await);
    let disconnected = |sink: &MemorySink| {
        sink.journal().contains(&JournalEntry::Disconnected {
            host: "compute-1".into(),
        })
    };
    assert!(wait_until(Duration::from_secs(5), || disconnected(&aggregator.sink)).await);
    assert!(aggregator.handle.connected_hosts().is_empty());
    drop(connection);
    aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_delta_touching_another_host_is_rejected_and_the_session_goes_on() -> anyhow::Result<()> {
    let setup = Setup::new("compute-1")?;
    let mut agent = setup.agent()?;
    agent.change("tap0", 1500);
    assert!(agent.wait_acked(WAIT).await);
    let intruder = calipso_tests::vnic("compute-2", "tap9", 1500);
    agent.outbox.publish(
        "test",
        calipso_agent::outbox::ChangeSet {
            upserts: vec![intruder],
            removals: vec![],
        },
    )?;
    agent.change("tap1", 1500);
    assert!(
        agent.wait_acked(WAIT).await,
        "the session goes on after the rejection"
    );
    let rejected: Vec<_> = setup
        .aggregator
        .sink
        .journal()
        .into_iter()
        .filter_map(|e| match e {
            JournalEntry::Rejected { seq, reason, .. } => Some((seq, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].1.contains("vnic:compute-2:tap9"),
        "{:?}",
        rejected[0]
    );
    let names: Vec<String> = setup
        .aggregator
        .sink
        .objects("compute-1")
        .into_iter()
        .map(|o| o.name.to_string())
        .collect();
    assert_eq!(
        names,
        vec!["tap0", "tap1"],
        "nothing of the rejected delta was applied"
    );
    assert_eq!(connections(setup.sink(), "compute-1"), 1);
    agent.stop().await;
    setup.aggregator.stop().await;
    Ok(())
}

/// Waits for the agent's first disconnection and returns its reason.
async fn refusal_reason(agent: &mut TestAgent) -> String {
    match agent
        .wait_event(WAIT, |e| matches!(e, UplinkEvent::Disconnected { .. }))
        .await
    {
        Some(UplinkEvent::Disconnected { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Issue 24, item 7: an agent's key writes only into the environment its certificate names; an
/// agent configured for another environment (`injected-env-1`) is refused and creates nothing.
#[tokio::test]
async fn an_agent_certificate_is_good_for_its_environment_only() -> anyhow::Result<()> {
    init_test_logging();
    let pki = Pki::new()?;
    let aggregator = TestAggregator::start(&pki, Arc::new(MemorySink::new()), LOOPBACK.into())?;
    let (tls, _) = pki.agent_in("compute-1", "lab")?;
    let config = agent_config(aggregator.addr);
    let injected = Outbox::new("compute-1", "injected-env-1", 1, config.outbox_max_bytes);
    let mut agent = TestAgent::with_outbox(injected, &tls, &config)?;
    let reason = refusal_reason(&mut agent).await;
    assert!(reason.contains("identity_mismatch"), "{reason}");
    assert!(
        reason.contains(
            "the certificate of host `compute-1` is for environment `lab`, not `injected-env-1`"
        ),
        "{reason}"
    );
    agent.stop().await;
    assert_eq!(connections(&aggregator.sink, "compute-1"), 0);

    // The same certificate in its own environment is welcome.
    let own = Outbox::new("compute-1", "lab", 2, config.outbox_max_bytes);
    let mut agent = TestAgent::with_outbox(own, &tls, &config)?;
    agent.change("tap0", 1500);
    assert!(agent.wait_acked(WAIT).await);
    assert_eq!(connections(&aggregator.sink, "compute-1"), 1);
    agent.stop().await;
    aggregator.stop().await;
    Ok(())
}

/// Issue 24, item 7: a certificate from before environments were bound is refused with how to
/// re-issue it, unless the operator allows such certificates for an upgrade.
#[tokio::test]
async fn an_unbound_certificate_needs_the_operators_leave() -> anyhow::Result<()> {
    init_test_logging();
    let pki = Pki::new()?;
    let tls = pki.unbound_agent("compute-old")?;
    let aggregator = TestAggregator::start(&pki, Arc::new(MemorySink::new()), LOOPBACK.into())?;
    let mut agent = TestAgent::start("compute-old", &tls, &agent_config(aggregator.addr))?;
    let reason = refusal_reason(&mut agent).await;
    assert!(
        reason.contains(
            "the certificate of host `compute-old` names no environment: issue it again with \
             `calipso-aggregator ca issue-agent --host compute-old --environment lab`"
        ),
        "{reason}"
    );
    agent.stop().await;
    assert_eq!(connections(&aggregator.sink, "compute-old"), 0);
    aggregator.stop().await;

    let lenient = TestAggregator::start_with(
        IngestConfig {
            allow_unbound_agents: true,
            ..IngestConfig::new(LOOPBACK.into(), pki.server_paths())
        },
        Arc::new(MemorySink::new()),
    )?;
    let mut agent = TestAgent::start("compute-old", &tls, &agent_config(lenient.addr))?;
    agent.change("tap0", 1500);
    assert!(agent.wait_acked(WAIT).await);
    assert_eq!(connections(&lenient.sink, "compute-old"), 1);
    agent.stop().await;
    lenient.stop().await;
    Ok(())
}
