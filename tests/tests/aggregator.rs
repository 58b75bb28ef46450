//! The aggregator core end to end: agents over real QUIC into the durable sink (SQLite or
//! PostgreSQL), links and cliques derived as hosts report, hosts going and coming, restarts,
//! and bad input refused whole.

use std::sync::Arc;
use std::time::Duration;

use calipso_agent::outbox::{ChangeSet, Outbox};
use calipso_aggregator::ingest::{AgentSession, DurableSink, IngestSink, Outcome, Published};
use calipso_aggregator::store::{MessageQuery, SqliteStore, Store};
use calipso_aggregator::synthetic::{Layout, host_name, host_objects, vm_objects};
use calipso_proto::codec;
use calipso_proto::framing::{FrameReader, FrameWriter};
use calipso_proto::wire::{
    AgentMessage, AggregatorMessage, Command, Delta, ErrorCode, HealthOverrides, Hello,
    PROTOCOL_VERSION, Resume, Snapshot,
};
use calipso_proto::{LinkState, Object, ObjectId, ObjectType, Timestamp};
use calipso_tests::{ENV, Pki, TestAgent, TestAggregator, agent_config, raw_session, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn layout() -> Layout {
    Layout {
        hosts: 3,
        vms_per_host: 2,
        tunnel_peers: 2,
    }
}

async fn sqlite_sink(dir: &tempfile::TempDir) -> anyhow::Result<Arc<DurableSink>> {
    calipso_tests::sqlite_sink(dir.path()).await
}

/// Starts an agent for synthetic host `index` reporting its whole model.
fn start_host(pki: &Pki, addr: std::net::SocketAddr, index: usize) -> anyhow::Result<TestAgent> {
    let (tls, _) = pki.agent(&host_name(index))?;
    let agent = TestAgent::start(&host_name(index), &tls, &agent_config(addr))?;
    agent
        .outbox
        .replace_all("synthetic", host_objects(ENV, index, &layout()))?;
    Ok(agent)
}

/// Starts agents for synthetic hosts `0..count` and waits until each has its model stored.
async fn start_hosts(
    pki: &Pki,
    addr: std::net::SocketAddr,
    count: usize,
) -> anyhow::Result<Vec<TestAgent>> {
    let mut agents = Vec::with_capacity(count);
    for index in 0..count {
        let mut agent = start_host(pki, addr, index)?;
        assert!(agent.wait_acked(WAIT).await, "{} stored", host_name(index));
        agents.push(agent);
    }
    Ok(agents)
}

fn sorted(mut links: Vec<calipso_proto::Link>) -> Vec<calipso_proto::Link> {
    links.sort_by_key(calipso_aggregator::links::LinkKey::of);
    links
}

fn link_count(sink: &DurableSink) -> usize {
    sink.engine().environment(ENV).map_or(0, |e| e.links.len())
}

fn stale_count(sink: &DurableSink, host: &str) -> usize {
    let engine = sink.engine();
    let Some(env) = engine.environment(ENV) else {
        return 0;
    };
    env.graph
        .ids_on_host(host)
        .filter(|id| env.graph.get(id).is_some_and(|n| n.stale))
        .count()
}

#[tokio::test]
async fn hosts_build_links_and_cliques_that_history_records() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let dir = tempfile::tempdir()?;
    let pki = Pki::new()?;
    let sink = sqlite_sink(&dir).await?;
    let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
    let mut agents = start_hosts(&pki, aggregator.addr, 3).await?;
    // 3 hosts x (2 VMs x 6 + 5 infrastructure links) + 3 tunnels: the unit tests' count.
    assert_eq!(link_count(&sink), 3 * (2 * 6 + 5) + 3);
    let engine_links = {
        let engine = sink.engine();
        let env = engine.environment(ENV).expect("environment");
        assert_eq!(
            env.cliques.len(),
            3 * 2 + 3,
            "an instance clique per VM, a vservice clique per host"
        );
        let tunnels = env
            .links
            .links()
            .filter(|l| l.link_type.to_string() == "otep-otep")
            .count();
        assert_eq!(tunnels, 3);
        let mut links: Vec<_> = env.links.links().cloned().collect();
        links.sort_by_key(calipso_aggregator::links::LinkKey::of);
        links
    };
    // The store holds exactly what the engine derived.
    let store = SqliteStore::open(&dir.path().join("calipso.db")).await?;
    assert_eq!(
        sorted(store.links_at(ENV, Timestamp::now()).await?),
        engine_links
    );
    assert_eq!(store.cliques_at(ENV, Timestamp::now()).await?.len(), 9);

    // A VM started on host 1: its links and clique appear; a delta touching one host.
    let before_vm = Timestamp::now();
    agents[1].outbox.publish(
        "synthetic",
        ChangeSet {
            upserts: vm_objects(ENV, 1, 7),
            removals: vec![],
        },
    )?;
    assert!(agents[1].wait_acked(WAIT).await);
    assert_eq!(link_count(&sink), 3 * (2 * 6 + 5) + 3 + 6);
    let now = Timestamp::now();
    assert_eq!(
        store.objects_at(ENV, now).await?.len(),
        store.objects_at(ENV, before_vm).await?.len() + 5
    );
    assert_eq!(sorted(store.links_at(ENV, before_vm).await?), engine_links);
    for agent in agents {
        agent.stop().await;
    }
    aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_disconnected_host_goes_stale_and_resumes_without_a_snapshot() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let dir = tempfile::tempdir()?;
    let pki = Pki::new()?;
    let sink = sqlite_sink(&dir).await?;
    let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
    let mut agents = start_hosts(&pki, aggregator.addr, 2).await?;
    let host = host_name(0);
    let objects = sink
        .engine()
        .environment(ENV)
        .map_or(0, |e| e.graph.ids_on_host(&host).count());
    let agent = agents.remove(0);
    let outbox: Outbox = agent.outbox.clone();
    agent.stop().await;
    assert!(
        wait_until(WAIT, || stale_count(&sink, &host) == objects).await,
        "every object of the host is stale"
    );
    {
        let engine = sink.engine();
        let env = engine.environment(ENV).expect("environment");
        // Its links are down; the other host's own links are not.
        let down = |host: &str| {
            env.links
                .links()
                .filter(|l| l.host.as_deref() == Some(host) && l.state == LinkState::Down)
                .count()
        };
        assert!(down(&host) > 0);
        assert_eq!(down(&host_name(1)), 0);
        // The tunnel to the stale host is down too.
        assert!(
            env.links
                .links()
                .any(|l| l.link_type.to_string() == "otep-otep" && l.state == LinkState::Down)
        );
        // Objects are kept with their last state.
        assert_eq!(env.graph.ids_on_host(&host).count(), objects);
    }
    let agent_record = sink
        .agents()
        .into_iter()
        .find(|a| a.host == host)
        .expect("agent");
    assert_eq!(
        agent_record.state,
        calipso_aggregator::store::AgentState::Disconnected
    );

    // The same agent (same epoch) reconnects: it resumes, no snapshot, nothing stale.
    let (tls, _) = pki.agent(&host)?;
    let mut back = TestAgent::with_outbox(outbox, &tls, &agent_config(aggregator.addr))?;
    let resumed = back
        .wait_event(WAIT, |e| {
            matches!(e, calipso_agent::UplinkEvent::Connected { .. })
        })
        .await;
    assert!(
        matches!(
            resumed,
            Some(calipso_agent::UplinkEvent::Connected {
                resume: Resume::After { .. }
            })
        ),
        "{resumed:?}"
    );
    assert!(wait_until(WAIT, || stale_count(&sink, &host) == 0).await);
    assert!(
        sink.engine()
            .environment(ENV)
            .is_some_and(|e| e.links.links().all(|l| l.state == LinkState::Up))
    );
    back.stop().await;
    for agent in agents {
        agent.stop().await;
    }
    aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_restarted_agents_snapshot_replaces_its_partition_and_closes_history()
-> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let dir = tempfile::tempdir()?;
    let pki = Pki::new()?;
    let sink = sqlite_sink(&dir).await?;
    let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
    let mut agent = start_host(&pki, aggregator.addr, 0)?;
    assert!(agent.wait_acked(WAIT).await);
    agent.stop().await;
    let before = Timestamp::now();
    // The host lost VM 1 while its agent was down; the new agent (new epoch) sends a snapshot.
    let gone: Vec<ObjectId> = vm_objects(ENV, 0, 1).into_iter().map(|o| o.id).collect();
    let kept: Vec<Object> = host_objects(ENV, 0, &layout())
        .into_iter()
        .filter(|o| !gone.contains(&o.id))
        .collect();
    let (tls, _) = pki.agent(&host_name(0))?;
    let mut restarted = TestAgent::start(&host_name(0), &tls, &agent_config(aggregator.addr))?;
    restarted.outbox.replace_all("synthetic", kept.clone())?;
    assert!(restarted.wait_acked(WAIT).await);
    {
        let engine = sink.engine();
        let env = engine.environment(ENV).expect("environment");
        let mut now: Vec<&ObjectId> = env.graph.ids_on_host(&host_name(0)).collect();
        now.sort();
        let mut expected: Vec<&ObjectId> = kept.iter().map(|o| &o.id).collect();
        expected.sort();
        assert_eq!(now, expected, "exactly the snapshot, nothing left behind");
        assert!(env.graph.nodes().all(|n| !n.stale));
    }
    let store = SqliteStore::open(&dir.path().join("calipso.db")).await?;
    let changes = store.object_changes(ENV, before, Timestamp::now()).await?;
    let mut closed: Vec<ObjectId> = changes
        .iter()
        .filter(|v| v.valid_to.is_some() && gone.contains(&v.value.object.id))
        .map(|v| v.value.object.id.clone())
        .collect();
    closed.sort();
    let mut expected = gone.clone();
    expected.sort();
    assert_eq!(
        closed, expected,
        "the lost VM's objects are closed in history"
    );
    let then = store.objects_at(ENV, before).await?;
    assert!(
        gone.iter()
            .all(|id| then.iter().any(|n| &n.object.id == id)),
        "and still there in the past"
    );
    restarted.stop().await;
    aggregator.stop().await;
    Ok(())
}

/// A VM deleted and started again under the same ids, in deltas the sink takes in one group:
/// the store closes the versions current before the group, whatever happened in between.
#[tokio::test]
async fn a_vm_removed_and_recreated_in_one_group_is_stored_as_the_engine_has_it()
-> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let dir = tempfile::tempdir()?;
    let sink = sqlite_sink(&dir).await?;
    let mut stream = sink.subscribe();
    let session = AgentSession {
        host: host_name(0),
        environment: ENV.into(),
        agent_version: "test".into(),
        epoch: 1,
        last_acked_seq: 0,
    };
    sink.host_connected(&session).await?;
    let snapshot = Snapshot {
        epoch: 1,
        seq: 1,
        objects: host_objects(ENV, 0, &layout()),
        observed_at: Timestamp::now(),
    };
    assert_eq!(
        sink.apply_snapshot(&session, snapshot).await?,
        Outcome::Applied
    );
    let before = Timestamp::now();
    let vm = vm_objects(ENV, 0, 1);
    let delta = |seq, upserts, removals| Delta {
        epoch: 1,
        seq,
        upserts,
        removals,
        observed_at: Timestamp::now(),
    };
    let instance = vm
        .iter()
        .position(|o| o.object_type == ObjectType::Instance)
        .expect("a VM has an instance");
    let mut rebooted = vm.clone();
    rebooted[instance].name = "vm-1-again".into();
    let deltas = vec![
        delta(2, Vec::new(), vm.iter().map(|o| o.id.clone()).collect()),
        delta(3, rebooted, Vec::new()),
    ];
    let outcomes = sink.apply_deltas(&session, deltas).await?;
    assert_eq!(outcomes, vec![Outcome::Applied, Outcome::Applied]);
    // Nothing was rolled back: the stream saw the groups, never a reset.
    while let Ok(published) = stream.try_recv() {
        assert!(
            !matches!(*published, Published::RolledBack),
            "the group's commit failed"
        );
    }
    let store = SqliteStore::open(&dir.path().join("calipso.db")).await?;
    let loaded = store.load().await?;
    let (objects, links, cliques) = {
        let engine = sink.engine();
        let env = engine.environment(ENV).expect("environment");
        let mut objects: Vec<_> = env.graph.nodes().cloned().collect();
        objects.sort_by(|a, b| a.object.id.cmp(&b.object.id));
        let links = sorted(env.links.links().cloned().collect());
        let mut cliques: Vec<_> = env.cliques.cliques().cloned().collect();
        cliques.sort_by(|a, b| a.focal_point.cmp(&b.focal_point));
        (objects, links, cliques)
    };
    let mut stored: Vec<_> = loaded.objects.into_iter().map(|(_, n)| n).collect();
    stored.sort_by(|a, b| a.object.id.cmp(&b.object.id));
    assert_eq!(
        stored, objects,
        "the store's current objects are the engine's"
    );
    let stored_links = sorted(loaded.links.into_iter().map(|(_, l)| l).collect());
    assert_eq!(stored_links, links);
    let mut stored_cliques: Vec<_> = loaded.cliques.into_iter().map(|(_, c)| c).collect();
    stored_cliques.sort_by(|a, b| a.focal_point.cmp(&b.focal_point));
    assert_eq!(stored_cliques, cliques);
    // The instance's history: the first version closed, the rebooted one current.
    let names: Vec<(String, bool)> = store
        .object_changes(ENV, before, Timestamp::now())
        .await?
        .iter()
        .filter(|v| v.value.object.id == vm[instance].id)
        .map(|v| (v.value.object.name.to_string(), v.valid_to.is_some()))
        .collect();
    assert_eq!(
        names,
        vec![("vm-1".into(), true), ("vm-1-again".into(), false)]
    );
    Ok(())
}

async fn restart_keeps_everything(url_or_dir: Option<String>) -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let dir = tempfile::tempdir()?;
    let url = url_or_dir
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("calipso.db").display()));
    let pki = Pki::new()?;
    let sink = Arc::new(DurableSink::connect(&url, calipso_tests::secret_key()).await?);
    let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
    let addr = aggregator.addr;
    let mut agents = start_hosts(&pki, addr, 2).await?;
    let summary = |sink: &DurableSink| {
        let engine = sink.engine();
        let env = engine.environment(ENV).expect("environment");
        let mut links: Vec<String> = env
            .links
            .links()
            .map(|l| {
                format!(
                    "{} {}",
                    calipso_aggregator::links::LinkKey::of(l),
                    l.state.as_str()
                )
            })
            .collect();
        links.sort();
        let mut cliques: Vec<_> = env.cliques.cliques().cloned().collect();
        cliques.sort_by(|a, b| a.focal_point.cmp(&b.focal_point));
        (env.graph.len(), links, cliques)
    };
    let before = summary(&sink);
    for agent in &mut agents {
        // Forget the first session's events: the next `Connected` is the reconnection.
        while agent.events.try_recv().is_ok() {}
    }
    aggregator.stop().await;
    drop(sink);

    let sink = Arc::new(DurableSink::connect(&url, calipso_tests::secret_key()).await?);
    let aggregator = TestAggregator::start(&pki, sink.clone(), addr)?;
    // The agents reconnect and resume where the store left off: no snapshot.
    for agent in &mut agents {
        let event = agent
            .wait_event(WAIT, |e| {
                matches!(e, calipso_agent::UplinkEvent::Connected { .. })
            })
            .await;
        assert!(
            matches!(
                event,
                Some(calipso_agent::UplinkEvent::Connected {
                    resume: Resume::After { .. }
                })
            ),
            "{event:?}"
        );
    }
    assert!(
        wait_until(WAIT, || {
            let engine = sink.engine();
            engine
                .environment(ENV)
                .is_some_and(|e| e.graph.nodes().all(|n| !n.stale))
        })
        .await
    );
    assert_eq!(
        summary(&sink),
        before,
        "objects, links and cliques all came back"
    );
    for agent in agents {
        agent.stop().await;
    }
    aggregator.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_aggregator_restart_on_sqlite_loses_nothing() -> anyhow::Result<()> {
    restart_keeps_everything(None).await
}

#[tokio::test]
async fn an_aggregator_restart_on_postgres_loses_nothing() -> anyhow::Result<()> {
    let db = calipso_tests::pg::TestDatabase::create().await?;
    restart_keeps_everything(Some(db.url.clone())).await?;
    db.drop_database().await
}

fn session(host: &str, epoch: u64) -> AgentSession {
    AgentSession {
        host: host.into(),
        environment: ENV.into(),
        agent_version: "test".into(),
        epoch,
        last_acked_seq: 0,
    }
}

fn delta(seq: u64, upserts: Vec<Object>, removals: Vec<ObjectId>) -> Delta {
    Delta {
        epoch: 1,
        seq,
        upserts,
        removals,
        observed_at: Timestamp::now(),
    }
}

#[tokio::test]
async fn bad_deltas_are_refused_whole_naming_the_item() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sink = sqlite_sink(&dir).await?;
    let (a, b) = (session(&host_name(0), 1), session(&host_name(1), 1));
    for s in [&a, &b] {
        sink.host_connected(s).await?;
    }
    let snapshot = |host: usize| Snapshot {
        epoch: 1,
        seq: 1,
        objects: host_objects(
            ENV,
            host,
            &Layout {
                hosts: 2,
                vms_per_host: 1,
                tunnel_peers: 1,
            },
        ),
        observed_at: Timestamp::now(),
    };
    assert_eq!(
        sink.apply_snapshot(&a, snapshot(0)).await?,
        Outcome::Applied
    );
    assert_eq!(
        sink.apply_snapshot(&b, snapshot(1)).await?,
        Outcome::Applied
    );
    let size = |sink: &DurableSink| sink.engine().environment(ENV).map_or(0, |e| e.graph.len());
    let links = link_count(&sink);
    let total = size(&sink);

    let fresh = |name: &str| calipso_tests::vnic(&host_name(0), name, 1500);
    let dangling = fresh("tapX").with_parent(
        ObjectId::host_local(ObjectType::Vservice, &host_name(0), "qdhcp-nope"),
        ObjectType::Vservice,
    );
    let foreign = calipso_tests::vnic(&host_name(1), "tapY", 1500);
    let cases = vec![
        (
            delta(2, vec![fresh("tap-ok-1"), dangling], vec![]),
            "parent vservice:compute-0000:qdhcp-nope does not exist",
        ),
        (
            delta(
                3,
                vec![fresh("tap-ok-2")],
                vec![ObjectId::host_local(
                    ObjectType::Vnic,
                    &host_name(0),
                    "never",
                )],
            ),
            "removal of vnic:compute-0000:never: no such object",
        ),
        (
            delta(4, vec![fresh("tap-ok-3"), foreign], vec![]),
            "object vnic:compute-0001:tapY",
        ),
    ];
    let (deltas, expected): (Vec<Delta>, Vec<&str>) = cases.into_iter().unzip();
    // Host B's valid delta is committed in the same groups as A's refused ones.
    let (outcomes_a, outcomes_b) = tokio::join!(
        sink.apply_deltas(&a, deltas),
        sink.apply_deltas(
            &b,
            vec![delta(
                2,
                vec![calipso_tests::vnic(&host_name(1), "tap-b", 1500)],
                vec![]
            )]
        )
    );
    for (outcome, expected) in outcomes_a?.into_iter().zip(expected) {
        match outcome {
            Outcome::Rejected(reason) => {
                assert!(reason.contains(expected), "{reason} should name {expected}")
            }
            Outcome::Applied => panic!("applied, expected refusal naming {expected}"),
        }
    }
    assert_eq!(outcomes_b?, vec![Outcome::Applied]);
    assert_eq!(size(&sink), total + 1, "only host B's vNIC was added");
    assert_eq!(link_count(&sink), links);
    // The refused deltas consumed their sequence numbers: the next one applies.
    assert_eq!(
        sink.apply_deltas(&a, vec![delta(5, vec![fresh("tap-ok-4")], vec![])])
            .await?,
        vec![Outcome::Applied]
    );
    assert_eq!(sink.resume_point(&a.host).await?.map(|p| p.seq), Some(5));
    let store = SqliteStore::open(&dir.path().join("calipso.db")).await?;
    let messages = store
        .query_messages(&MessageQuery {
            limit: 100,
            ..MessageQuery::default()
        })
        .await?;
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.message.text.contains("refused"))
            .count(),
        3,
        "{messages:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_object_of_an_unknown_type_is_refused_and_the_session_goes_on() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let dir = tempfile::tempdir()?;
    let pki = Pki::new()?;
    let sink = sqlite_sink(&dir).await?;
    let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
    let host = host_name(0);
    let (tls, _) = pki.agent(&host)?;
    let (_endpoint, _connection, send, recv) = raw_session(aggregator.addr, &tls).await?;
    let mut writer = FrameWriter::new(send, 1 << 20);
    let mut reader = FrameReader::new(recv, 1 << 20);
    writer
        .send(&AgentMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "test".into(),
            host: host.clone(),
            environment: ENV.into(),
            epoch: 9,
            last_acked_seq: 0,
        }))
        .await?;
    let welcome = reader.recv::<AggregatorMessage>().await?;
    assert!(
        matches!(welcome, Some(AggregatorMessage::Welcome(_))),
        "{welcome:?}"
    );
    // The environment sets no health settings: the agent is told so, and keeps its own.
    assert_eq!(
        reader.recv::<AggregatorMessage>().await?,
        Some(AggregatorMessage::Command(Command::Configure(
            HealthOverrides::default()
        )))
    );
    let snapshot = Snapshot {
        epoch: 9,
        seq: 1,
        objects: vec![
            Object::new(ObjectId::host(&host), ObjectType::Host, &host, ENV).with_host(&host),
        ],
        observed_at: Timestamp::now(),
    };
    writer.send(&AgentMessage::Snapshot(snapshot)).await?;
    assert!(matches!(
        reader.recv::<AggregatorMessage>().await?,
        Some(AggregatorMessage::Ack(_))
    ));
    // A `pod` object whose type name is rewritten to one this aggregator does not know.
    let pod =
        Object::new(ObjectId::from_raw("pod:zz"), ObjectType::Pod, "zz", ENV).with_host(&host);
    let bytes = codec::encode(&AgentMessage::Delta(delta_with_epoch(9, 2, vec![pod])))?;
    let patched = replace_all(&bytes, b"pod", b"pot");
    writer.feed_frame(bytes::Bytes::from(patched)).await?;
    writer.flush().await?;
    match reader.recv::<AggregatorMessage>().await? {
        Some(AggregatorMessage::Error(error)) => {
            assert_eq!(error.code, ErrorCode::MalformedMessage);
            assert!(error.message.contains("pot"), "{}", error.message);
        }
        other => panic!("expected an Error, got {other:?}"),
    }
    // The session goes on: the next delta finds seq 2 missing and asks for a snapshot.
    writer
        .send(&AgentMessage::Delta(delta_with_epoch(9, 3, vec![])))
        .await?;
    let mut asked = false;
    for _ in 0..2 {
        match reader.recv::<AggregatorMessage>().await? {
            Some(AggregatorMessage::Command(Command::Resync)) => asked = true,
            Some(AggregatorMessage::Ack(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
        if asked {
            break;
        }
    }
    assert!(asked, "a resync is asked for");
    assert_eq!(
        sink.engine().environment(ENV).map(|e| e.graph.len()),
        Some(1)
    );
    aggregator.stop().await;
    Ok(())
}

fn delta_with_epoch(epoch: u64, seq: u64, upserts: Vec<Object>) -> Delta {
    Delta {
        epoch,
        ..delta(seq, upserts, vec![])
    }
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[tokio::test]
async fn a_failed_commit_rolls_the_engine_back_and_the_stream_resets() -> anyhow::Result<()> {
    use calipso_aggregator::ingest::Published;
    use sqlx::Connection;

    calipso_tests::init_test_logging();
    let db = calipso_tests::pg::TestDatabase::create().await?;
    let sink = DurableSink::connect(&db.url, calipso_tests::secret_key()).await?;
    let mut stream = sink.subscribe();
    let host = host_name(0);
    let a = session(&host, 1);
    sink.host_connected(&a).await?;
    let has = |sink: &DurableSink, name: &str| {
        sink.engine().environment(ENV).is_some_and(|e| {
            e.graph
                .get(&ObjectId::host_local(ObjectType::Vnic, &host, name))
                .is_some()
        })
    };
    let vnic = |name: &str| calipso_tests::vnic(&host, name, 1500);
    assert_eq!(
        sink.apply_deltas(&a, vec![delta(1, vec![vnic("kept")], vec![])])
            .await?,
        vec![Outcome::Applied]
    );

    // The store breaks: the commit fails, the agent is not acknowledged, and while the store
    // cannot be read back nothing more is accepted.
    let mut admin = sqlx::PgConnection::connect(&db.url).await?;
    sqlx::query("ALTER TABLE objects RENAME TO objects_away")
        .execute(&mut admin)
        .await?;
    let failed = sink
        .apply_deltas(&a, vec![delta(2, vec![vnic("lost")], vec![])])
        .await
        .expect_err("the commit fails");
    assert!(
        failed.to_string().contains("refused the commit"),
        "{failed}"
    );
    let refused = sink
        .apply_deltas(&a, vec![delta(2, vec![vnic("lost")], vec![])])
        .await
        .expect_err("nothing is applied on top of a failure");
    assert!(
        refused.to_string().contains("cannot be read back"),
        "{refused}"
    );

    // Repaired: the next request finds the engine reloaded (without the lost change).
    sqlx::query("ALTER TABLE objects_away RENAME TO objects")
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    assert_eq!(
        sink.apply_deltas(&a, vec![delta(2, vec![vnic("after")], vec![])])
            .await?,
        vec![Outcome::Applied]
    );
    assert!(has(&sink, "kept") && has(&sink, "after"));
    assert!(!has(&sink, "lost"), "the failed group was rolled back");

    // The stream: the kept change, the lost one (published when applied), the rollback, the
    // change after it.
    let mut seen = Vec::new();
    while let Ok(item) = stream.try_recv() {
        seen.push(match item.as_ref() {
            Published::Changes(group) => format!("changes x{}", group.changes.len()),
            Published::RolledBack => "rolled back".to_owned(),
        });
    }
    assert_eq!(
        seen,
        vec!["changes x1", "changes x1", "rolled back", "changes x1"],
        "{seen:?}"
    );
    drop(sink);
    db.drop_database().await
}

/// Issue 24, item 6: a copy of the database holds no cloud password; the key that opens them
/// is needed (and named when it is the wrong one); secrets an earlier version stored in clear
/// are sealed on the next start.
#[tokio::test]
async fn environment_secrets_are_sealed_at_rest_with_a_key_apart() -> anyhow::Result<()> {
    use calipso_aggregator::cliques::EnvironmentConfig;
    use calipso_aggregator::ingest::{AdminChange, OpenError};
    use calipso_aggregator::secrets::SecretKey;

    const PASSWORD: &str = "keystone-admin-pw-7Qx";
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("calipso.db");
    let mut config = EnvironmentConfig::named("cloud-1");
    config.configuration.insert(
        "OpenStack".into(),
        [("host", "10.0.0.5"), ("user", "admin"), ("pwd", PASSWORD)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    );
    let sink = sqlite_sink(&dir).await?;
    sink.admin(AdminChange::Environment(config))
        .await?
        .map_err(anyhow::Error::msg)?;
    drop(sink);

    let read_stored = || async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await?;
        let (stored,): (String,) =
            sqlx::query_as("SELECT config FROM environments WHERE name = 'cloud-1'")
                .fetch_one(&pool)
                .await?;
        pool.close().await;
        anyhow::Ok(stored)
    };
    let stored = read_stored().await?;
    assert!(!stored.contains(PASSWORD), "{stored}");
    assert!(stored.contains("\"pwd\":\"sealed:v1:"), "{stored}");
    assert!(stored.contains("\"host\":\"10.0.0.5\""), "{stored}");
    for entry in std::fs::read_dir(dir.path())? {
        let bytes = std::fs::read(entry?.path())?;
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "the password is in a file of the data directory"
        );
    }

    // The same key opens it again: the adapter gets the password.
    let sink = sqlite_sink(&dir).await?;
    let pwd = |sink: &DurableSink| {
        sink.engine()
            .environment("cloud-1")
            .map(|env| env.config.configuration["OpenStack"]["pwd"].clone())
    };
    assert_eq!(pwd(&sink).as_deref(), Some(PASSWORD));
    drop(sink);

    // Another key is refused at start, naming both keys, and nothing is lost.
    let other = SecretKey::generate();
    let other_id = other.id().to_owned();
    let err = DurableSink::open(SqliteStore::open(&db).await?, other)
        .await
        .expect_err("a wrong key must not start");
    assert!(matches!(err, OpenError::Secret(_)));
    let text = err.to_string();
    let test_key = calipso_tests::secret_key();
    assert!(
        text.contains(&format!(
            "environment `cloud-1`: OpenStack.pwd was sealed with key {}, but the configured key is {other_id}",
            test_key.id()
        )),
        "{text}"
    );
    assert_eq!(read_stored().await?, stored);

    // A store written before sealing holds the password in clear: the next start seals it.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await?;
    let clear = format!(
        r#"{{"name":"cloud-1","configuration":{{"OpenStack":{{"host":"10.0.0.5","pwd":"{PASSWORD}","user":"admin"}}}}}}"#
    );
    sqlx::query("UPDATE environments SET config = $1 WHERE name = 'cloud-1'")
        .bind(&clear)
        .execute(&pool)
        .await?;
    pool.close().await;
    let sink = sqlite_sink(&dir).await?;
    assert_eq!(pwd(&sink).as_deref(), Some(PASSWORD));
    let resealed = read_stored().await?;
    assert!(!resealed.contains(PASSWORD), "{resealed}");
    assert!(resealed.contains("\"pwd\":\"sealed:v1:"), "{resealed}");
    Ok(())
}

/// Issue 25: `/metrics` in the OpenMetrics text format, read by Prometheus's own Python parser:
/// the agents connected, the objects held by status (all of them), commits timed, snapshots
/// applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_openmetrics_and_count_what_is_held() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let dir = tempfile::tempdir()?;
    let sink = sqlite_sink(&dir).await?;
    let pki = Pki::new()?;
    let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
    let agents = start_hosts(&pki, aggregator.addr, 2).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listen = calipso_aggregator::metrics::serve(
        ([127, 0, 0, 1], 0).into(),
        sink.clone(),
        shutdown.clone(),
    )
    .await?;
    calipso_tests::install_crypto_provider();
    let answer = reqwest::get(format!("http://{listen}/metrics")).await?;
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = answer.text().await?;

    // Prometheus's parser refuses anything malformed; it prints every sample as JSON.
    const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = [[s.name, s.labels, s.value]
           for family in text_string_to_metric_families(sys.stdin.read())
           for s in family.samples]
print(json.dumps(samples))
"#;
    let mut parser = std::process::Command::new("python3")
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    parser
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(text.as_bytes())?;
    let parsed = parser.wait_with_output()?;
    anyhow::ensure!(
        parsed.status.success(),
        "the OpenMetrics parser refused /metrics (python3 with prometheus-client: bash tests/run \
         installs it): {}\n{text}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let samples: Vec<(String, std::collections::BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&parsed.stdout)?;
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    };
    assert_eq!(
        value("calipso_agents", &[("state", "connected")]),
        Some(2.0),
        "{text}"
    );
    let held = sink
        .engine()
        .environment(ENV)
        .map(|env| env.graph.len())
        .unwrap_or(0) as f64;
    let counted: f64 = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "calipso_objects" && l.get("environment").map(String::as_str) == Some(ENV)
        })
        .map(|(_, _, v)| v)
        .sum();
    assert_eq!(
        counted, held,
        "every object is counted once, by status\n{text}"
    );
    assert!(
        value(
            "calipso_objects",
            &[("environment", ENV), ("status", "unknown")]
        )
        .is_some(),
        "synthetic objects carry no check results\n{text}"
    );
    assert!(value("calipso_ingest_applied_total", &[("kind", "snapshot")]).unwrap_or(0.0) >= 2.0);
    assert!(value("calipso_commit_duration_seconds_count", &[]).unwrap_or(0.0) >= 1.0);
    assert!(value("calipso_versions_stored_total", &[]).unwrap_or(0.0) > 0.0);
    assert!(value("calipso_commit_queue_depth", &[]).is_some());
    shutdown.cancel();
    for agent in agents {
        agent.stop().await;
    }
    aggregator.stop().await;
    Ok(())
}
