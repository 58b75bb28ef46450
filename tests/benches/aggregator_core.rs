//! The aggregator core at the scale of the issue: 1 000 Open vSwitch compute hosts of ~500
//! objects each (VMs with hybrid plugging, a DHCP namespace, VXLAN tunnels to 32 neighbours).
//!
//! 1. full build: graph, links and cliques from scratch (3 runs);
//! 2. the process RSS with that environment built;
//! 3. incremental update: 20 000 deltas of the shapes agents send (VM boot, VM deletion,
//!    interface down/up, tunnel reconfiguration), each timed from changes to updated links
//!    and cliques: p50 / p99 / max;
//! 4. (`criterion`) criterion's statistics for three kinds of delta, each applied with its
//!    inverse on the built environment;
//! 5. durable ingest, the store alone: first versions of 99 600 objects committed in batches
//!    of 20, 8 and 1 host(s), on SQLite and on PostgreSQL;
//! 6. durable ingest through the sink (validation, engine, group commit) on SQLite and on
//!    PostgreSQL (`DATABASE_URL`, or an ephemeral server): 64 hosts snapshotting concurrently,
//!    then VM churn from all of them; object changes per second;
//! 7. (`analysis`) on the built environment: impact of one host's tunnel NIC and of a whole
//!    host, diagnosis of a VM with that NIC down, path between VMs on two tunnel peers:
//!    p50 / p99 / max over 1 000 random questions each;
//! 8. (`diff`) a SQLite store holding 100 hosts (49 800 objects) and an hour of history with
//!    10 500 object changes (MTU changes and VMs deleted, with their links and cliques):
//!    the diff over that hour, 20 runs.
//!
//! `cargo bench -p calipso-tests --bench aggregator_core`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calipso_aggregator::cliques::CliqueSet;
use calipso_aggregator::cliques::{
    EnvironmentConfig, Plan, default_clique_constraints, default_clique_types,
};
use calipso_aggregator::engine::{Change, Environment};
use calipso_aggregator::graph::{Graph, Node};
use calipso_aggregator::ingest::{AgentSession, DurableSink, IngestSink, Outcome};
use calipso_aggregator::links::LinkSet;
use calipso_aggregator::store::{PostgresStore, SqliteStore, Store};
use calipso_aggregator::synthetic::{Layout, host_name, host_objects, tunnel_ip, vm_objects};
use calipso_proto::wire::{Delta, Snapshot};
use calipso_proto::{AttrValue, LinkState, ObjectType, Timestamp};
use rand::{Rng, SeedableRng};

/// mimalloc, as the aggregator binary uses, counting the bytes held while [`COUNTING`] is set
/// so that each stage's share of the memory can be told apart (the RSS alone mixes them with
/// the allocator's slack). Counting makes two cores contend for one counter, so only the
/// first build counts and its time is not a timing figure.
struct Counted;

static HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn count(add: usize, sub: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    if COUNTING.load(Relaxed) {
        HELD.fetch_add(add, Relaxed);
        HELD.fetch_sub(sub, Relaxed);
    }
}

// A global allocator can only be written with `unsafe`: this one adds a counter and hands
// every call unchanged to mimalloc.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size(), 0);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        count(0, layout.size());
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        count(new_size, layout.size());
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counted = Counted;

/// The heap the program holds, in MiB.
fn held_mib() -> f64 {
    HELD.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

const ENV: &str = "bench";
const HOSTS: usize = 1000;
const OBJECTS_PER_HOST: usize = 500;
const DELTAS: usize = 20_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn layout() -> Layout {
    Layout {
        tunnel_peers: 16,
        ..Layout::with_objects_per_host(HOSTS, OBJECTS_PER_HOST)
    }
}

fn plan() -> Plan {
    Plan::choose(
        &EnvironmentConfig::named(ENV),
        &default_clique_types(),
        &default_clique_constraints(),
    )
}

fn build() -> (Environment, Duration) {
    let layout = layout();
    let at = Timestamp::now();
    let mut graph = Graph::new();
    for host in 0..HOSTS {
        for object in host_objects(ENV, host, &layout) {
            graph.upsert(Node::new(object, at));
        }
    }
    let counting = COUNTING.load(std::sync::atomic::Ordering::Relaxed);
    let graph_heap = held_mib();
    println!(
        "  RSS with the graph alone: {:.0} MiB",
        calipso_tests::rss_mib()
    );
    let start = Instant::now();
    let links = LinkSet::build(&graph);
    let links_time = start.elapsed();
    let links_heap = held_mib() - graph_heap;
    let cliques = CliqueSet::build(plan(), &graph, &links);
    println!(
        "  links {links_time:?}, cliques {:?}",
        start.elapsed() - links_time,
    );
    if counting {
        println!(
            "  heap held (census build): graph {graph_heap:.0} MiB, links {links_heap:.0} MiB, cliques {:.0} MiB",
            held_mib() - graph_heap - links_heap
        );
    }
    let env = Environment {
        config: EnvironmentConfig::named(ENV),
        graph,
        links,
        cliques,
    };
    (env, start.elapsed())
}

/// A random change of the kinds agents send, against the current state.
fn random_delta(
    rng: &mut rand::rngs::StdRng,
    env: &Environment,
    vms: &mut HashMap<usize, Vec<usize>>,
    next_vm: &mut usize,
) -> (&'static str, Vec<Change>) {
    let at = Timestamp::now();
    let host = rng.random_range(0..HOSTS);
    let host_vms = vms.entry(host).or_default();
    match rng.random_range(0..10) {
        0..=2 => {
            *next_vm += 1;
            host_vms.push(*next_vm);
            let changes = vm_objects(ENV, host, *next_vm)
                .into_iter()
                .map(|o| Change::Upsert(Box::new(Node::new(o, at))))
                .collect();
            ("VM boot", changes)
        }
        3..=5 if !host_vms.is_empty() => {
            let vm = host_vms.swap_remove(rng.random_range(0..host_vms.len()));
            let changes = vm_objects(ENV, host, vm)
                .into_iter()
                .map(|o| Change::Remove(o.id))
                .collect();
            ("VM deletion", changes)
        }
        6..=8 if !host_vms.is_empty() => {
            let vm = host_vms[rng.random_range(0..host_vms.len())];
            let tap = &vm_objects(ENV, host, vm)[1];
            let mut node = env.graph.get(&tap.id).cloned().expect("tap exists");
            let up = node.object.attributes.link_state != Some(LinkState::Up);
            node.object.attributes.link_state =
                Some(if up { LinkState::Up } else { LinkState::Down });
            ("interface down/up", vec![Change::Upsert(Box::new(node))])
        }
        _ => {
            let changes = tunnel_neighbour_toggled(env, host)
                .map(|otep| Change::Upsert(Box::new(otep)))
                .into_iter()
                .collect();
            ("tunnel reconfiguration", changes)
        }
    }
}

/// Host `host`'s VXLAN endpoint with its ring neighbour left (or back, if it had left), as l2
/// population reconfigures tunnels.
fn tunnel_neighbour_toggled(env: &Environment, host: usize) -> Option<Node> {
    let mut otep = env
        .graph
        .ids_on_host(&host_name(host))
        .find(|id| id.object_type() == Some(ObjectType::Otep))
        .and_then(|id| env.graph.get(id))
        .cloned()?;
    let neighbour = tunnel_ip((host + 1) % HOSTS);
    if let Some(AttrValue::List(remotes)) = otep.object.attributes.extra.get_mut("remote_endpoints")
    {
        let before = remotes.len();
        remotes.retain(|r| r.as_str() != Some(neighbour.as_str()));
        if remotes.len() == before {
            remotes.push(AttrValue::from(neighbour));
        }
    }
    Some(otep)
}

/// Criterion's statistics for the incremental update on the built environment. Each
/// iteration applies a change and then its inverse, so every sample meets the same state.
fn criterion_deltas(env: &mut Environment) {
    use criterion::{BatchSize, Criterion};
    let host = 17;
    let at = Timestamp::now();
    let vm = vm_objects(ENV, host, 2_000_000);
    let boot: Vec<Change> = vm
        .iter()
        .map(|o| Change::Upsert(Box::new(Node::new(o.clone(), at))))
        .collect();
    let delete: Vec<Change> = vm.iter().map(|o| Change::Remove(o.id.clone())).collect();
    let current = |id: &calipso_proto::ObjectId| -> Node {
        env.graph
            .get(id)
            .cloned()
            .expect("the synthetic host has it")
    };
    let tap = current(&vm_objects(ENV, host, 0)[1].id);
    let mut tap_down = tap.clone();
    tap_down.object.attributes.link_state = Some(LinkState::Down);
    let otep_toggled = tunnel_neighbour_toggled(env, host).expect("an endpoint");
    let otep = current(&otep_toggled.object.id);
    let upsert = |node: Node| vec![Change::Upsert(Box::new(node))];
    let cases = [
        ("VM boot, then its deletion", boot, delete),
        ("interface down, then up", upsert(tap_down), upsert(tap)),
        (
            "tunnel neighbour leaves, then returns",
            upsert(otep_toggled),
            upsert(otep),
        ),
    ];
    for (name, change, inverse) in &cases {
        let forward = env.apply(change.clone());
        let back = env.apply(inverse.clone());
        assert!(
            !forward.links.is_empty() && !back.links.is_empty(),
            "{name}: each way changes links"
        );
    }
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut group = criterion.benchmark_group("incremental update");
    for (name, change, inverse) in &cases {
        group.bench_function(*name, |bencher| {
            bencher.iter_batched(
                || (change.clone(), inverse.clone()),
                |(change, inverse)| (env.apply(change), env.apply(inverse)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    criterion.final_summary();
}

fn incremental(env: &mut Environment) {
    let layout = layout();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut vms: HashMap<usize, Vec<usize>> = (0..HOSTS)
        .map(|h| (h, (0..layout.vms_per_host).collect()))
        .collect();
    let mut next_vm = 1_000_000;
    let mut times = Vec::with_capacity(DELTAS);
    let mut by_kind: HashMap<&'static str, Vec<Duration>> = HashMap::new();
    let (mut link_changes, mut clique_changes) = (0usize, 0usize);
    for _ in 0..DELTAS {
        let (kind, changes) = random_delta(&mut rng, env, &mut vms, &mut next_vm);
        let start = Instant::now();
        let applied = env.apply(changes);
        let elapsed = start.elapsed();
        times.push(elapsed);
        by_kind.entry(kind).or_default().push(elapsed);
        link_changes += applied.links.len();
        clique_changes += applied.cliques.len();
    }
    times.sort();
    println!(
        "incremental: {DELTAS} deltas, p50 {:?}, p99 {:?}, max {:?} ({link_changes} link and {clique_changes} clique changes)",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort();
    for (kind, mut times) in kinds {
        times.sort();
        println!(
            "  {kind}: {} deltas, p50 {:?}, p99 {:?}",
            times.len(),
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
}

/// Times `question` on `rounds` random hosts; prints p50 / p99 / max.
fn timed(what: &str, rounds: usize, mut question: impl FnMut(usize) -> usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut times = Vec::with_capacity(rounds);
    let mut answers = 0;
    for _ in 0..rounds {
        let host = rng.random_range(0..HOSTS);
        let start = Instant::now();
        answers += question(host);
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "  {what}: p50 {:?}, p99 {:?}, max {:?} ({:.1} answers each)",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1],
        answers as f64 / rounds as f64
    );
}

fn analysis(env: &mut Environment) {
    use calipso_aggregator::analysis::{diagnose, impact, path};
    use calipso_aggregator::synthetic::vm_uuid;
    use calipso_proto::ObjectId;
    let nic = |host: usize| ObjectId::host_local(ObjectType::HostPnic, &host_name(host), "eth1");
    let vm = |host: usize| ObjectId::global(ObjectType::Instance, &vm_uuid(host, 0));
    println!("analysis, 1 000 random questions each:");
    timed("impact of a tunnel NIC", 1000, |host| {
        impact(env, &[nic(host)]).map_or(0, |i| i.total)
    });
    timed("impact of a whole host", 1000, |host| {
        impact(env, &[ObjectId::host(&host_name(host))]).map_or(0, |i| i.total)
    });
    timed("path between VMs on two tunnel peers", 1000, |host| {
        path(env, &vm(host), &vm((host + 1) % HOSTS)).map_or(0, |p| p.hops.len())
    });
    let down: Vec<Change> = (0..HOSTS)
        .filter_map(|host| {
            let mut node = env.graph.get(&nic(host))?.clone();
            node.object.attributes.link_state = Some(LinkState::Down);
            Some(Change::Upsert(Box::new(node)))
        })
        .collect();
    env.apply(down);
    timed("diagnosis of a VM whose tunnel NIC is down", 1000, |host| {
        diagnose(env, &vm(host)).map_or(0, |d| d.findings.len())
    });
}

/// A store with an hour of history: 100 hosts' first versions, then 100 commits 36 s apart,
/// each changing every host's eth0 MTU and deleting a VM (its objects, links and clique):
/// 10 500 object changes; the diff over the hour, timed.
async fn diff_over_an_hour(store: SqliteStore) -> anyhow::Result<()> {
    use calipso_aggregator::service::history::{DiffQuery, diff_between};
    use calipso_aggregator::store::{Batch, Write};
    const DIFF_HOSTS: usize = 100;
    let layout = Layout {
        hosts: DIFF_HOSTS,
        ..layout()
    };
    let mut graph = Graph::new();
    let start = Timestamp::from_unix_micros(Timestamp::now().unix_micros() - 3_700_000_000);
    for host in 0..DIFF_HOSTS {
        for object in host_objects(ENV, host, &layout) {
            graph.upsert(Node::new(object, start));
        }
    }
    let config = EnvironmentConfig::named(ENV);
    let mut env = Environment::build(config.clone(), graph, plan());
    let mut first = Batch {
        at: start,
        environments: vec![config],
        ..Batch::default()
    };
    for node in env.graph.nodes() {
        first
            .objects
            .push(Write::first(ENV, node.id().clone(), node.clone()));
    }
    for link in env.links.links() {
        first.links.push(Write::first(
            ENV,
            calipso_aggregator::links::LinkKey::of(link),
            link.clone(),
        ));
    }
    for clique in env.cliques.cliques() {
        first.cliques.push(Write::first(
            ENV,
            clique.focal_point.clone(),
            clique.clone(),
        ));
    }
    store.commit(&first).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut changes = 0;
    for minute in 0..100 {
        let at = Timestamp::from_unix_micros(start.unix_micros() + 36_000_000 * (minute + 1));
        let mut edits = Vec::new();
        for host in 0..DIFF_HOSTS {
            let id =
                calipso_proto::ObjectId::host_local(ObjectType::HostPnic, &host_name(host), "eth0");
            if let Some(node) = env.graph.get(&id) {
                let mut node = node.clone();
                let mtu = node.object.attributes.mtu.unwrap_or(1500);
                node.object.attributes.mtu = Some(if mtu == 1500 { 9000 } else { 1500 });
                node.last_seen = at;
                edits.push(Change::Upsert(Box::new(node)));
            }
        }
        let host = rng.random_range(0..DIFF_HOSTS);
        let vm = rng.random_range(0..layout.vms_per_host);
        for object in vm_objects(ENV, host, vm) {
            edits.push(Change::Remove(object.id));
        }
        let applied = env.apply(edits);
        changes += applied.objects.len();
        let mut batch = Batch {
            at,
            ..Batch::default()
        };
        for diff in applied.objects {
            batch
                .objects
                .push(Write::replacing(ENV, diff.id, diff.after));
        }
        for link in &applied.links.created {
            let key = calipso_aggregator::links::LinkKey::of(link);
            batch.links.push(Write::first(ENV, key, link.clone()));
        }
        for link in &applied.links.changed {
            let key = calipso_aggregator::links::LinkKey::of(link);
            batch
                .links
                .push(Write::replacing(ENV, key, Some(link.clone())));
        }
        for key in applied.links.removed {
            batch.links.push(Write::replacing(ENV, key, None));
        }
        for focal in applied.cliques.removed {
            batch.cliques.push(Write::replacing(ENV, focal, None));
        }
        store.commit(&batch).await?;
    }
    let (from, to) = (
        start,
        Timestamp::from_unix_micros(start.unix_micros() + 3_600_000_000),
    );
    let query = DiffQuery {
        environment: ENV.into(),
        ..DiffQuery::default()
    };
    let mut times = Vec::new();
    let mut listed = 0;
    for _ in 0..20 {
        let begun = Instant::now();
        let diff = diff_between(&store, ENV, from, to, &query)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(begun.elapsed());
        listed = diff.objects.changed.len() + diff.objects.removed.len();
    }
    times.sort();
    println!(
        "diff over an hour of {changes} object changes ({listed} objects in it, 20 runs): p50 {:?}, max {:?}",
        percentile(&times, 0.5),
        times[times.len() - 1]
    );
    Ok(())
}

fn session(host: usize) -> AgentSession {
    AgentSession {
        host: host_name(host),
        environment: ENV.into(),
        agent_version: "bench".into(),
        epoch: 1,
        last_acked_seq: 0,
    }
}

/// Snapshots from `hosts` hosts at once, then `rounds` VM boots per host, all concurrent.
async fn ingest(
    name: &str,
    sink: Arc<DurableSink>,
    hosts: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let layout = Layout { hosts, ..layout() };
    for host in 0..hosts {
        sink.host_connected(&session(host)).await?;
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for host in 0..hosts {
        let sink = sink.clone();
        let objects = host_objects(ENV, host, &layout);
        tasks.push(tokio::spawn(async move {
            let snapshot = Snapshot {
                epoch: 1,
                seq: 1,
                objects,
                observed_at: Timestamp::now(),
            };
            sink.apply_snapshot(&session(host), snapshot).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await??, Outcome::Applied);
    }
    let snapshot_time = start.elapsed();
    let snapshot_objects = hosts * (layout.vms_per_host * 5 + 8);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for host in 0..hosts {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            // A streaming agent's deltas arrive back to back; its session hands them to the
            // sink together, as here.
            let deltas: Vec<Delta> = (0..rounds)
                .map(|round| Delta {
                    epoch: 1,
                    seq: 2 + round as u64,
                    upserts: vm_objects(ENV, host, 10_000 + round),
                    removals: Vec::new(),
                    observed_at: Timestamp::now(),
                })
                .collect();
            let outcomes = sink.apply_deltas(&session(host), deltas).await?;
            assert!(outcomes.iter().all(|o| *o == Outcome::Applied));
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let churn_time = start.elapsed();
    let churn_objects = hosts * rounds * 5;
    println!(
        "{name}: snapshots of {hosts} hosts, {snapshot_objects} objects in {snapshot_time:?} = {:.0} object changes/s; \
         churn {churn_objects} objects in {} VM-boot deltas in {churn_time:?} = {:.0} object changes/s",
        snapshot_objects as f64 / snapshot_time.as_secs_f64(),
        hosts * rounds,
        churn_objects as f64 / churn_time.as_secs_f64(),
    );
    Ok(())
}

/// The store alone: 200 hosts' objects (99 600 first versions) committed in batches of
/// `hosts_per_batch` hosts, one after another, as the sink's writer does.
async fn store_commit(
    name: &str,
    store: &impl Store,
    hosts_per_batch: usize,
) -> anyhow::Result<()> {
    use calipso_aggregator::store::{Batch, Write};
    let layout = layout();
    // The batches are built before the clock starts: this measures the store, encoding
    // included, not the generator. Each run writes its own environment.
    let env = format!("{ENV}-{hosts_per_batch}");
    let batches: Vec<Batch> = (0..200)
        .collect::<Vec<_>>()
        .chunks(hosts_per_batch)
        .enumerate()
        .map(|(round, hosts)| {
            let at = Timestamp::from_unix_micros(1 + round as i64);
            let mut batch = Batch {
                at,
                ..Batch::default()
            };
            for &host in hosts {
                for object in host_objects(&env, host, &layout) {
                    let id = object.id.clone();
                    batch
                        .objects
                        .push(Write::first(env.as_str(), id, Node::new(object, at)));
                }
            }
            batch
        })
        .collect();
    let total: usize = batches.iter().map(|b| b.objects.len()).sum();
    let start = Instant::now();
    for batch in &batches {
        store.commit(batch).await?;
    }
    let elapsed = start.elapsed();
    println!(
        "{name} store alone: {total} object versions in {} batches of {} in {elapsed:?} = {:.0} object changes/s",
        batches.len(),
        total / batches.len(),
        total as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// The store alone at three batch sizes: a few VM boots, a few hosts' snapshots, 20 hosts'.
async fn store_commits(name: &str, store: impl Store) -> anyhow::Result<()> {
    for hosts_per_batch in [20, 8, 1] {
        store_commit(name, &store, hosts_per_batch).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    println!(
        "machine: {} cores; {HOSTS} hosts x ~{OBJECTS_PER_HOST} objects ({} VMs per host)",
        std::thread::available_parallelism().map_or(0, usize::from),
        layout().vms_per_host
    );
    if run("engine") {
        let (mut env, time) = build();
        println!(
            "full build 0 (census, counting allocations): {} objects, {} links, {} cliques in {time:?}",
            env.graph.len(),
            env.links.len(),
            env.cliques.len()
        );
        println!(
            "RSS with the environment built: {:.0} MiB",
            calipso_tests::rss_mib()
        );
        COUNTING.store(false, std::sync::atomic::Ordering::Relaxed);
        incremental(&mut env);
        println!(
            "RSS after the deltas (the allocator has returned the build's temporaries): {:.0} MiB",
            calipso_tests::rss_mib()
        );
        drop(env);
        for round in 1..3 {
            let (env, time) = build();
            println!(
                "full build {round}: {} links, {} cliques in {time:?}",
                env.links.len(),
                env.cliques.len()
            );
        }
    }
    if run("analysis") {
        let (mut env, _) = build();
        COUNTING.store(false, std::sync::atomic::Ordering::Relaxed);
        analysis(&mut env);
    }
    if run("diff") {
        let dir = tempfile::tempdir()?;
        diff_over_an_hour(SqliteStore::open(&dir.path().join("diff.db")).await?).await?;
    }
    if run("criterion") {
        let (mut env, _) = build();
        criterion_deltas(&mut env);
    }
    if run("ingest") {
        let dir = tempfile::tempdir()?;
        store_commits(
            "sqlite",
            SqliteStore::open(&dir.path().join("commit.db")).await?,
        )
        .await?;
        let db = calipso_tests::pg::TestDatabase::create().await?;
        store_commits("postgres", PostgresStore::connect(&db.url).await?).await?;
        db.drop_database().await?;

        let sqlite = SqliteStore::open(&dir.path().join("ingest.db")).await?;
        ingest(
            "sqlite sink",
            Arc::new(DurableSink::open(sqlite, calipso_tests::secret_key()).await?),
            64,
            20,
        )
        .await?;
        let db = calipso_tests::pg::TestDatabase::create().await?;
        let postgres = PostgresStore::connect(&db.url).await?;
        ingest(
            "postgres sink",
            Arc::new(DurableSink::open(postgres, calipso_tests::secret_key()).await?),
            64,
            20,
        )
        .await?;
        db.drop_database().await?;
    }
    Ok(())
}
