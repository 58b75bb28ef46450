//! One conformance suite, run against both store backends: SQLite in a temporary file and
//! PostgreSQL (the server `DATABASE_URL` names, or an ephemeral one the harness starts).

use std::collections::BTreeMap;

use calipso_aggregator::alerts::{AlertRule, Silence, Webhook};
use calipso_aggregator::cliques::{
    Clique, EnvironmentConfig, default_clique_constraints, default_clique_types,
};
use calipso_aggregator::graph::Node;
use calipso_aggregator::links::LinkKey;
use calipso_aggregator::store::{
    AgentRecord, AgentState, AuthMethod, Batch, Compacted, Grants, HistoryStart, Message,
    MessageLevel, MessageQuery, PostgresStore, ScanKind, ScanRecord, ScanStatus, ScheduleRecord,
    SnapshotRecord, SqliteStore, Store, TokenRecord, UserRecord, Write,
};
use calipso_proto::{
    Link, LinkState, LinkType, Object, ObjectId, ObjectType, StatusLevel, Timestamp,
};
use calipso_tests::pg::TestDatabase;

fn at(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_700_000_000_000_000 + micros)
}

fn vnic(name: &str, mtu: u32, seen: Timestamp) -> Node {
    let mut object = Object::new(
        ObjectId::host_local(ObjectType::Vnic, "h1", name),
        ObjectType::Vnic,
        name,
        "lab",
    )
    .with_host("h1")
    .with_extra("nested", vec!["a", "b"]);
    object.attributes.mtu = Some(mtu);
    Node::new(object, seen)
}

fn link(a: &str, b: &str) -> Link {
    Link {
        source: ObjectId::host_local(ObjectType::Vnic, "h1", a),
        target: ObjectId::host_local(ObjectType::Vnic, "h1", b),
        link_type: LinkType::new(ObjectType::Vnic, ObjectType::Vnic),
        state: LinkState::Up,
        host: Some("h1".into()),
        implicit: false,
        attributes: calipso_proto::AttrMap::new(),
    }
}

fn clique(focal: &str, links: &[&Link]) -> Clique {
    Clique {
        focal_point: ObjectId::host_local(ObjectType::Vnic, "h1", focal),
        focal_point_type: ObjectType::Vnic,
        clique_type: "test".into(),
        constraints: BTreeMap::new(),
        nodes: links
            .iter()
            .flat_map(|l| [l.source.clone(), l.target.clone()])
            .collect(),
        links: links.iter().map(|l| LinkKey::of(l)).collect(),
        implicit_links: Vec::new(),
    }
}

fn agent(seq: u64, state: AgentState, seen: Timestamp) -> AgentRecord {
    AgentRecord {
        host: "h1".into(),
        environment: "lab".into(),
        agent_version: "0.1.0".into(),
        epoch: Some(u64::MAX - 7),
        seq,
        state,
        last_seen: seen,
    }
}

fn names(nodes: &[Node]) -> Vec<(String, Option<u32>)> {
    nodes
        .iter()
        .map(|n| (n.object.name.to_string(), n.object.attributes.mtu))
        .collect()
}

async fn conformance<S: Store>(store: S) -> anyhow::Result<()> {
    // Empty store.
    let loaded = store.load().await?;
    assert!(loaded.environments.is_empty() && loaded.objects.is_empty());
    assert!(loaded.clique_rules.is_none(), "not seeded yet");

    // Clique rules round-trip, and an empty set stays empty (seeded once).
    let set_rules = |types, constraints| Batch {
        at: at(10),
        clique_rules: Some((types, constraints)),
        ..Batch::default()
    };
    store
        .commit(&set_rules(
            default_clique_types(),
            default_clique_constraints(),
        ))
        .await?;
    let rules = store.load().await?.clique_rules.expect("seeded");
    let mut expected = default_clique_types();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(rules.0, expected);
    assert_eq!(rules.1.len(), default_clique_constraints().len());
    store.commit(&set_rules(vec![], vec![])).await?;
    assert_eq!(store.load().await?.clique_rules, Some((vec![], vec![])));

    // T1: three objects, a link, a clique, an agent, a message.
    let t1 = at(1_000);
    let ab = link("a", "b");
    let first = Batch {
        at: t1,
        environments: vec![EnvironmentConfig::named("lab")],
        objects: ["a", "b", "c"]
            .iter()
            .map(|n| Write::first("lab", vnic(n, 1500, t1).object.id, vnic(n, 1500, t1)))
            .collect(),
        links: vec![Write::first("lab", LinkKey::of(&ab), ab.clone())],
        cliques: vec![Write::first(
            "lab",
            ObjectId::host_local(ObjectType::Vnic, "h1", "a"),
            clique("a", &[&ab]),
        )],
        agents: vec![agent(5, AgentState::Connected, t1)],
        messages: vec![Message {
            environment: Some("lab".into()),
            level: MessageLevel::Warning,
            source: "test".into(),
            related_object: Some(ObjectId::host("h1")),
            text: "first".into(),
            at: t1,
        }],
        clique_rules: None,
    };
    store.commit(&first).await?;

    // T2: a changes (twice in the batch: the last wins), b goes away with its link; c stays.
    let t2 = at(2_000);
    let mut stale_a = vnic("a", 9000, t2);
    stale_a.stale = true;
    stale_a.first_seen = t1;
    let second = Batch {
        at: t2,
        objects: vec![
            Write::replacing("lab", stale_a.object.id.clone(), Some(vnic("a", 1400, t2))),
            Write::replacing("lab", stale_a.object.id.clone(), Some(stale_a.clone())),
            Write::replacing(
                "lab",
                ObjectId::host_local(ObjectType::Vnic, "h1", "b"),
                None,
            ),
        ],
        links: vec![Write::replacing("lab", LinkKey::of(&ab), None)],
        cliques: vec![Write::replacing(
            "lab",
            ObjectId::host_local(ObjectType::Vnic, "h1", "a"),
            None,
        )],
        agents: vec![agent(9, AgentState::Disconnected, t2)],
        ..Batch::default()
    };
    store.commit(&second).await?;

    // Current state.
    let loaded = store.load().await?;
    assert_eq!(loaded.environments, vec![EnvironmentConfig::named("lab")]);
    let mut current: Vec<Node> = loaded.objects.into_iter().map(|(_, n)| n).collect();
    current.sort_by(|a, b| a.object.id.cmp(&b.object.id));
    assert_eq!(current, vec![stale_a.clone(), vnic("c", 1500, t1)]);
    assert!(loaded.links.is_empty() && loaded.cliques.is_empty());
    assert_eq!(loaded.agents, vec![agent(9, AgentState::Disconnected, t2)]);
    assert_eq!(loaded.last_commit, t2);

    // Time travel.
    assert!(store.objects_at("lab", at(999)).await?.is_empty());
    assert_eq!(
        names(&store.objects_at("lab", t1).await?),
        vec![
            ("a".into(), Some(1500)),
            ("b".into(), Some(1500)),
            ("c".into(), Some(1500))
        ]
    );
    assert_eq!(
        names(&store.objects_at("lab", at(1_999)).await?),
        names(&store.objects_at("lab", t1).await?)
    );
    assert_eq!(
        names(&store.objects_at("lab", t2).await?),
        vec![("a".into(), Some(9000)), ("c".into(), Some(1500))]
    );
    assert_eq!(store.links_at("lab", t1).await?, vec![ab.clone()]);
    assert!(store.links_at("lab", t2).await?.is_empty());
    assert_eq!(
        store.cliques_at("lab", at(1_500)).await?,
        vec![clique("a", &[&ab])]
    );
    assert!(store.cliques_at("lab", t2).await?.is_empty());
    assert!(store.objects_at("other", t2).await?.is_empty());

    // What changed in (T1, T2]: a's old version ended, its new one began, b ended.
    let changes = store.object_changes("lab", t1, t2).await?;
    let summary: Vec<(String, i64, Option<i64>)> = changes
        .iter()
        .map(|v| {
            (
                v.value.object.name.to_string(),
                v.valid_from.unix_micros() - at(0).unix_micros(),
                v.valid_to.map(|t| t.unix_micros() - at(0).unix_micros()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("a".into(), 1_000, Some(2_000)),
            ("a".into(), 2_000, None),
            ("b".into(), 1_000, Some(2_000)),
        ]
    );
    // And in (0, T1]: everything began.
    assert_eq!(store.object_changes("lab", at(0), t1).await?.len(), 3);

    // Messages, by every filter.
    let query = |edit: &dyn Fn(&mut MessageQuery)| {
        let mut query = MessageQuery {
            limit: 10,
            ..MessageQuery::default()
        };
        edit(&mut query);
        query
    };
    let messages = store.query_messages(&query(&|_| {})).await?;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].message.text, "first");
    assert_eq!(
        messages[0].message.related_object,
        Some(ObjectId::host("h1"))
    );
    let none: [&dyn Fn(&mut MessageQuery); 7] = [
        &|q| q.from = Some(t2),
        &|q| q.to = Some(t1),
        &|q| q.level = Some(MessageLevel::Error),
        &|q| q.environments = Some(vec!["other".into()]),
        &|q| q.environments = Some(vec![]),
        &|q| q.after = Some(messages[0].id),
        &|q| {
            q.newest_first = true;
            q.after = Some(messages[0].id);
        },
    ];
    for edit in none {
        assert!(store.query_messages(&query(edit)).await?.is_empty());
    }
    let all: [&dyn Fn(&mut MessageQuery); 4] = [
        &|q| q.newest_first = true,
        &|q| q.environments = Some(vec!["lab".into(), "other".into()]),
        &|q| q.related_object = Some(ObjectId::host("h1")),
        &|q| q.source = Some("test".into()),
    ];
    for edit in all {
        assert_eq!(store.query_messages(&query(edit)).await?.len(), 1);
    }
    assert_eq!(store.agents().await?[0].epoch, Some(u64::MAX - 7));

    // T3, one batch touching keys twice: c ends and comes back (the engine sees no current c
    // the second time, yet the stored one must close); the link comes back and changes; a
    // clique begins and ends within the batch (nothing stored).
    let t3 = at(3_000);
    let c_id = vnic("c", 1600, t3).object.id;
    let mut ab_down = ab.clone();
    ab_down.state = LinkState::Down;
    let a_focal = ObjectId::host_local(ObjectType::Vnic, "h1", "a");
    store
        .commit(&Batch {
            at: t3,
            objects: vec![
                Write::replacing("lab", c_id.clone(), None),
                Write::first("lab", c_id.clone(), vnic("c", 1600, t3)),
            ],
            links: vec![
                Write::first("lab", LinkKey::of(&ab), ab.clone()),
                Write::replacing("lab", LinkKey::of(&ab), Some(ab_down.clone())),
            ],
            cliques: vec![
                Write::first("lab", a_focal.clone(), clique("a", &[&ab])),
                Write::replacing("lab", a_focal, None),
            ],
            ..Batch::default()
        })
        .await?;
    assert_eq!(
        names(&store.objects_at("lab", t3).await?),
        vec![("a".into(), Some(9000)), ("c".into(), Some(1600))]
    );
    let c_versions: Vec<(Option<u32>, i64, Option<i64>)> = store
        .object_changes("lab", t2, t3)
        .await?
        .iter()
        .map(|v| {
            (
                v.value.object.attributes.mtu,
                v.valid_from.unix_micros() - at(0).unix_micros(),
                v.valid_to.map(|t| t.unix_micros() - at(0).unix_micros()),
            )
        })
        .collect();
    assert_eq!(
        c_versions,
        vec![(Some(1500), 1_000, Some(3_000)), (Some(1600), 3_000, None)]
    );
    assert_eq!(store.links_at("lab", t3).await?, vec![ab_down.clone()]);
    assert!(store.cliques_at("lab", t3).await?.is_empty());
    let loaded = store.load().await?;
    assert_eq!(loaded.objects.len(), 2);
    assert_eq!(loaded.links, vec![("lab".to_owned(), ab_down.clone())]);
    assert!(loaded.cliques.is_empty());

    history(&store, &ab, &ab_down).await?;
    records(&store).await?;
    bulk_round_trip(&store).await?;
    batches_in_one_transaction(&store).await?;
    many_messages_and_agents_in_one_batch(&store).await?;

    // An empty batch writes nothing and fails nothing.
    store.commit(&Batch::default()).await?;
    Ok(())
}

/// Link and clique changes, snapshots, and compaction keeping what a snapshot pins, on the
/// history written above: a, b, c and the link a–b from T1; at T2 a changed, b and the link
/// went, the clique of a ended; at T3 c changed and the link came back down.
async fn history<S: Store>(store: &S, ab: &Link, ab_down: &Link) -> anyhow::Result<()> {
    let (t1, t2, t3) = (at(1_000), at(2_000), at(3_000));
    let spans = |versions: Vec<(Timestamp, Option<Timestamp>)>| -> Vec<(i64, Option<i64>)> {
        let since = |t: Timestamp| t.unix_micros() - at(0).unix_micros();
        versions
            .into_iter()
            .map(|(from, to)| (since(from), to.map(since)))
            .collect()
    };
    let links = store.link_changes("lab", at(0), t3).await?;
    assert_eq!(
        links.iter().map(|v| v.value.clone()).collect::<Vec<_>>(),
        vec![ab.clone(), ab_down.clone()]
    );
    assert_eq!(
        spans(links.iter().map(|v| (v.valid_from, v.valid_to)).collect()),
        vec![(1_000, Some(2_000)), (3_000, None)]
    );
    assert!(store.link_changes("lab", t2, at(2_999)).await?.is_empty());
    let cliques = store.clique_changes("lab", at(0), t3).await?;
    assert_eq!(
        spans(cliques.iter().map(|v| (v.valid_from, v.valid_to)).collect()),
        vec![(1_000, Some(2_000))],
        "the clique begun and ended within T3's batch was never stored"
    );
    assert_eq!(
        store.history_start().await?,
        Some(HistoryStart {
            at: t1,
            compacted: false
        })
    );

    let pinned = SnapshotRecord {
        environment: "lab".into(),
        name: "before-t2".into(),
        at: at(1_500),
        note: "b is still here".into(),
        created_by: "admin".into(),
        created_at: at(1_600),
    };
    store.put_snapshot(&pinned).await?;
    assert_eq!(store.snapshots(Some("lab")).await?, vec![pinned.clone()]);
    assert_eq!(store.snapshots(None).await?, vec![pinned.clone()]);
    assert!(store.snapshots(Some("other")).await?.is_empty());
    assert!(!store.delete_snapshot("lab", "nope").await?);

    // Compacting before T3 removes nothing the snapshot's time still shows; the message of T1
    // goes.
    let removed = store.compact_history(t3).await?;
    assert_eq!(
        removed,
        Compacted {
            messages: 1,
            ..Compacted::default()
        }
    );
    assert_eq!(
        store.history_start().await?,
        Some(HistoryStart {
            at: t3,
            compacted: true
        })
    );
    assert_eq!(
        names(&store.objects_at("lab", at(1_500)).await?),
        vec![
            ("a".into(), Some(1500)),
            ("b".into(), Some(1500)),
            ("c".into(), Some(1500))
        ],
        "a pinned snapshot stays answerable"
    );
    assert_eq!(store.links_at("lab", at(1_500)).await?, vec![ab.clone()]);
    assert_eq!(store.cliques_at("lab", at(1_500)).await?.len(), 1);

    // Without the snapshot, what ended before T3 goes: a's and b's first versions, the first
    // link, the clique; c's first version ended at T3 and stays. The present is untouched.
    assert!(store.delete_snapshot("lab", "before-t2").await?);
    let removed = store.compact_history(t3).await?;
    assert_eq!(
        removed,
        Compacted {
            objects: 2,
            links: 1,
            cliques: 1,
            messages: 0,
        }
    );
    assert_eq!(
        names(&store.objects_at("lab", at(1_500)).await?),
        vec![("c".into(), Some(1500))]
    );
    assert_eq!(
        names(&store.objects_at("lab", t3).await?),
        vec![("a".into(), Some(9000)), ("c".into(), Some(1600))]
    );
    Ok(())
}

/// Several batches committed together keep each batch's time, in order, and fail together:
/// m is written at 20 000 µs with MTU 1500 and replaced at 20 001 with 1600 in one commit; a
/// commit whose second batch writes a second current version of m stores neither batch.
async fn batches_in_one_transaction<S: Store>(store: &S) -> anyhow::Result<()> {
    let m = |mtu, t| vnic("m", mtu, t);
    let id = m(0, at(0)).object.id;
    let first = Batch {
        at: at(20_000),
        environments: vec![EnvironmentConfig::named("many")],
        objects: vec![Write::first("many", id.clone(), m(1500, at(20_000)))],
        ..Batch::default()
    };
    let second = Batch {
        at: at(20_001),
        objects: vec![Write::replacing(
            "many",
            id.clone(),
            Some(m(1600, at(20_001))),
        )],
        ..Batch::default()
    };
    store
        .commit_all(&[&first, &Batch::default(), &second])
        .await?;
    let versions: Vec<(Option<u32>, i64, Option<i64>)> = store
        .object_changes("many", at(0), at(30_000))
        .await?
        .iter()
        .map(|v| {
            (
                v.value.object.attributes.mtu,
                v.valid_from.unix_micros() - at(0).unix_micros(),
                v.valid_to.map(|t| t.unix_micros() - at(0).unix_micros()),
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![
            (Some(1500), 20_000, Some(20_001)),
            (Some(1600), 20_001, None)
        ]
    );

    let valid = Batch {
        at: at(20_002),
        objects: vec![Write::replacing(
            "many",
            id.clone(),
            Some(m(1700, at(20_002))),
        )],
        ..Batch::default()
    };
    let duplicate = Batch {
        at: at(20_003),
        objects: vec![Write::first("many", id.clone(), m(1800, at(20_003)))],
        ..Batch::default()
    };
    assert!(store.commit_all(&[&valid, &duplicate]).await.is_err());
    assert_eq!(
        names(&store.objects_at("many", at(30_000)).await?),
        vec![("m".into(), Some(1600))],
        "the valid batch went with the failed one"
    );
    Ok(())
}

/// A batch with more messages than one statement takes (1 201), every one stored once and in
/// order, and one host's agent row twice (its last wins), beside another host's.
async fn many_messages_and_agents_in_one_batch<S: Store>(store: &S) -> anyhow::Result<()> {
    let t = at(40_000);
    let message = |i: usize| Message {
        environment: Some("chatty".into()),
        level: MessageLevel::Info,
        source: "test".into(),
        related_object: None,
        text: format!("m{i:04}"),
        at: t,
    };
    let host = |name: &str, seq: u64| AgentRecord {
        host: name.into(),
        seq,
        ..agent(seq, AgentState::Connected, t)
    };
    store
        .commit(&Batch {
            at: t,
            environments: vec![EnvironmentConfig::named("chatty")],
            messages: (0..1_201).map(message).collect(),
            agents: vec![host("h2", 1), host("h3", 5), host("h2", 2)],
            ..Batch::default()
        })
        .await?;
    let mut texts = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .query_messages(&MessageQuery {
                environments: Some(vec!["chatty".into()]),
                after,
                limit: 500,
                ..MessageQuery::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        texts.extend(page.into_iter().map(|m| m.message.text));
    }
    assert_eq!(texts.len(), 1_201);
    assert_eq!(texts.first().map(String::as_str), Some("m0000"));
    assert_eq!(texts.last().map(String::as_str), Some("m1200"));
    assert!(texts.windows(2).all(|pair| pair[0] < pair[1]), "in order");
    let seqs: Vec<(String, u64)> = store
        .agents()
        .await?
        .into_iter()
        .filter(|a| a.host != "h1")
        .map(|a| (a.host, a.seq))
        .collect();
    assert_eq!(seqs, vec![("h2".into(), 2), ("h3".into(), 5)]);
    Ok(())
}

/// Names with every character the bulk encodings escape (COPY's tab, newline, carriage
/// return and backslash; JSON's quote), in a batch small enough for PostgreSQL's one-statement
/// insert and in one large enough for its COPY, read back as written.
async fn bulk_round_trip<S: Store>(store: &S) -> anyhow::Result<()> {
    let t = at(10_000);
    for (round, count) in [(0, 10), (1, 5_000)] {
        let env = format!("bulk{round}");
        let nodes: Vec<Node> = (0..count)
            .map(|i| {
                let mut node = vnic(&format!("n{i}\t\\ \n\r\"é"), 1500, t);
                node.object.environment = env.as_str().into();
                node
            })
            .collect();
        let links: Vec<Link> = nodes
            .windows(2)
            .map(|pair| {
                let mut link = link("x", "y");
                link.source = pair[0].object.id.clone();
                link.target = pair[1].object.id.clone();
                link
            })
            .collect();
        let focal = nodes[0].object.id.clone();
        let mut star = clique("x", &[&links[0]]);
        star.focal_point = focal.clone();
        store
            .commit(&Batch {
                at: t,
                environments: vec![EnvironmentConfig::named(&env)],
                objects: nodes
                    .iter()
                    .map(|n| Write::first(env.as_str(), n.object.id.clone(), n.clone()))
                    .collect(),
                links: links
                    .iter()
                    .map(|l| Write::first(env.as_str(), LinkKey::of(l), l.clone()))
                    .collect(),
                cliques: vec![Write::first(env.as_str(), focal, star.clone())],
                ..Batch::default()
            })
            .await?;
        let mut stored = store.objects_at(&env, t).await?;
        stored.sort_by(|a, b| a.object.id.cmp(&b.object.id));
        let mut expected = nodes;
        expected.sort_by(|a, b| a.object.id.cmp(&b.object.id));
        assert!(stored == expected, "{count} objects read back as written");
        let mut stored = store.links_at(&env, t).await?;
        stored.sort_by_key(LinkKey::of);
        let mut expected = links;
        expected.sort_by_key(LinkKey::of);
        assert!(
            stored == expected,
            "{} links read back as written",
            count - 1
        );
        assert_eq!(store.cliques_at(&env, t).await?, vec![star]);
    }
    Ok(())
}

/// Users, tokens, scans, schedules, alert rules, silences and environment removal.
async fn records<S: Store>(store: &S) -> anyhow::Result<()> {
    let mut grants = Grants::default();
    grants.view_env.insert("lab".into());
    let user = UserRecord {
        username: "ops".into(),
        password_hash: Some("$argon2id$…".into()),
        grants,
        created_at: at(1),
    };
    store.put_user(&user).await?;
    assert_eq!(store.user("ops").await?, Some(user.clone()));
    assert_eq!(store.users().await?.len(), 1);
    let token = TokenRecord {
        token_hash: "abc".into(),
        username: "ops".into(),
        method: AuthMethod::Password,
        grants: user.grants.clone(),
        issued_at: at(5),
        expires_at: at(100),
        revoked: false,
    };
    store.put_token(&token).await?;
    assert_eq!(store.token("abc").await?, Some(token.clone()));
    // Issuing a token later sweeps expired ones.
    let later = TokenRecord {
        token_hash: "def".into(),
        issued_at: at(200),
        expires_at: at(300),
        ..token.clone()
    };
    store.put_token(&later).await?;
    assert_eq!(store.token("abc").await?, None);
    // Deleting the user takes their tokens.
    assert!(store.delete_user("ops").await?);
    assert!(!store.delete_user("ops").await?);
    assert_eq!(store.token("def").await?, None);

    let scan = |id: &str, environment: &str, status| ScanRecord {
        id: id.into(),
        environment: environment.into(),
        host: None,
        kind: ScanKind::LinksOnly,
        status,
        requested_by: "ops".into(),
        requested_at: at(7),
        started_at: None,
        finished_at: None,
        detail: String::new(),
        schedule: None,
    };
    store
        .put_scan(&scan("s1", "lab", ScanStatus::Pending))
        .await?;
    store
        .put_scan(&scan("s2", "other", ScanStatus::Pending))
        .await?;
    store
        .put_scan(&scan("s1", "lab", ScanStatus::Completed))
        .await?;
    assert_eq!(store.scans(None, None).await?.len(), 2);
    assert_eq!(
        store.scan("s1").await?.map(|s| s.status),
        Some(ScanStatus::Completed)
    );
    assert_eq!(store.scan("s3").await?, None);
    let pending = store.scans(None, Some(ScanStatus::Pending)).await?;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, "s2");
    assert_eq!(
        store.scans(Some("lab"), None).await?[0].status,
        ScanStatus::Completed
    );

    let schedule = ScheduleRecord {
        id: "every-minute".into(),
        environment: "lab".into(),
        host: None,
        kind: ScanKind::CliquesOnly,
        interval_seconds: 60,
        next_run: at(9),
        last_run: None,
        last_scan: None,
        created_by: "ops".into(),
    };
    store.put_schedule(&schedule).await?;
    assert_eq!(store.schedules().await?, vec![schedule]);
    assert!(store.delete_schedule("every-minute").await?);
    assert!(store.schedules().await?.is_empty());

    let rule = AlertRule {
        id: "alert-1".into(),
        environment: "lab".into(),
        name: "nics".into(),
        min_level: StatusLevel::Error,
        object_types: vec![ObjectType::HostPnic],
        focal_points: vec![ObjectId::from_raw("vm-1")],
        send_resolved: true,
        webhook: Some(Webhook {
            url: "https://hooks.example.org/calipso".into(),
            secret: "sealed:v1:abcd:AAAA".into(),
        }),
        alertmanager: None,
        created_by: "ops".into(),
        created_at: at(10),
    };
    store.put_alert_rule(&rule).await?;
    let renamed = AlertRule {
        name: "uplinks".into(),
        ..rule.clone()
    };
    store.put_alert_rule(&renamed).await?;
    assert_eq!(store.alert_rules().await?, vec![renamed]);
    assert!(store.delete_alert_rule("alert-1").await?);
    assert!(!store.delete_alert_rule("alert-1").await?);
    store.put_alert_rule(&rule).await?;

    let silence = |id: &str, starts: i64, ends: i64| Silence {
        id: id.into(),
        environment: "lab".into(),
        object: None,
        object_type: None,
        host: Some("compute-1".into()),
        focal_point: None,
        starts_at: at(starts),
        ends_at: at(ends),
        comment: "recabling".into(),
        created_by: "ops".into(),
        created_at: at(starts),
    };
    let day = 86_400_000_000;
    store.put_silence(&silence("old", 0, day)).await?;
    store.put_silence(&silence("next", day, 20 * day)).await?;
    assert_eq!(store.silences().await?.len(), 2);
    // A silence made 40 days after the first ended forgets it (kept 30 days after its end).
    store
        .put_silence(&silence("later", 41 * day, 42 * day))
        .await?;
    let kept: Vec<String> = store.silences().await?.into_iter().map(|s| s.id).collect();
    assert_eq!(kept, vec!["next".to_owned(), "later".to_owned()]);
    assert!(store.delete_silence("next").await?);
    assert!(!store.delete_silence("next").await?);

    assert!(store.delete_environment("lab").await?);
    assert!(
        store.alert_rules().await?.is_empty(),
        "rules go with their environment"
    );
    assert!(store.silences().await?.is_empty(), "and silences");
    assert!(!store.delete_environment("lab").await?);
    assert!(store.load().await?.environments.is_empty());
    Ok(())
}

/// How many current objects environment `lab` has.
async fn lab_objects(store: &impl Store) -> anyhow::Result<usize> {
    let loaded = store.load().await?;
    Ok(loaded
        .objects
        .iter()
        .filter(|(env, _)| env == "lab")
        .count())
}

#[tokio::test]
async fn sqlite_store_conforms() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("calipso.db");
    conformance(SqliteStore::open(&path).await?).await?;
    // Reopening applies no migration twice and keeps everything.
    let reopened = SqliteStore::open(&path).await?;
    assert_eq!(lab_objects(&reopened).await?, 2);
    // Issue 24, item 6: the database and its log hold password hashes and secrets: 0600, as
    // they are after an open whatever the umask made them.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    let _again = SqliteStore::open(&path).await?;
    for file in ["calipso.db", "calipso.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(file))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    Ok(())
}

#[tokio::test]
async fn postgres_store_conforms() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    conformance(PostgresStore::connect(&db.url).await?).await?;
    let reopened = PostgresStore::connect(&db.url).await?;
    assert_eq!(lab_objects(&reopened).await?, 2);
    reopened.pool().close().await;
    db.drop_database().await
}
