//! The production sink: agents' snapshots and deltas become object changes in the [`Engine`]
//! (which derives the link and clique changes) and one [`Batch`] in the [`Store`].
//!
//! Two tasks own every write, in a pipeline. The committer takes whatever requests from all
//! sessions have queued (up to [`MAX_GROUP`]), applies each to the engine in order, publishes
//! the group's changes to the live stream and hands the group's [`Batch`] to the writer; the
//! writer commits the batches in order — every batch queued while it was busy in one
//! transaction — and only then answers the sessions, which only then acknowledge to their
//! agents. So the next group is applied while the previous one commits, and a slow commit (an
//! fsync queued behind a checkpoint) delays acknowledgements, not what the API and the stream
//! show. If a transaction fails, the writer refuses every batch in it and queued after it, the
//! engine is reloaded from the store and the stream is told (`RolledBack`): memory runs ahead
//! of the store only by the groups in flight, and never past a failure.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use calipso_proto::wire::{Delta, Snapshot};
use calipso_proto::{Object, ObjectId, Timestamp};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

use super::validate::{CONTROL_PLANE_TYPES, check_cloud_object, check_delta, check_snapshot};
use super::{AgentSession, IngestSink, Outcome, ResumePoint, SinkError};
use crate::cliques::{
    CliqueChanges, default_clique_constraints, default_clique_types, upgrade_seeded_defaults,
};
use crate::cliques::{CliqueConstraint, CliqueType, EnvironmentConfig};
use crate::engine::{Applied, Change, Engine};
use crate::graph::Node;
use crate::links::LinkKey;
use crate::monitoring;
use crate::secrets::{SecretError, SecretKey};
use crate::store::{
    AgentRecord, AgentState, AnyStore, Batch, Loaded, Message, MessageLevel, ScanKind, Store,
    StoreError, Write,
};

/// The most queued requests one transaction takes.
const MAX_GROUP: usize = 256;
/// Groups applied but not yet committed, at most (then the committer waits for the writer).
const MAX_IN_FLIGHT: usize = 64;
/// The writer stops taking queued groups into one transaction past this many versions, so
/// that a burst's first acknowledgements do not wait for all of it.
const MAX_CHANGES_PER_TRANSACTION: usize = 50_000;

/// One group's changes, stamped with its commit time: the live stream's unit.
#[derive(Debug, Clone)]
pub struct GroupChanges {
    pub at: Timestamp,
    pub changes: Vec<(String, Applied)>,
    /// The messages the group wrote (hosts going away, refused deltas, …).
    pub messages: Vec<crate::store::Message>,
    /// The health changes among them, for alerts.
    pub status_changes: Vec<monitoring::StatusChange>,
}

/// What the committer tells the live stream.
#[derive(Debug, Clone)]
pub enum Published {
    /// A group applied to the engine (its commit follows).
    Changes(GroupChanges),
    /// A commit failed and the engine was reloaded from the store: changes published since
    /// the last durable group may not have happened.
    RolledBack,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot load the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot open the stored secrets: {0}")]
    Secret(#[from] SecretError),
}

enum Request {
    Connected(AgentSession),
    Snapshot(AgentSession, Snapshot),
    Deltas(AgentSession, Vec<Delta>),
    Disconnected(String),
    Admin(AdminChange),
    Cloud(CloudUpdate),
}

impl Request {
    /// The metrics' name of what it asks, for requests with outcomes.
    fn kind(&self) -> &'static str {
        match self {
            Request::Snapshot(..) => "snapshot",
            Request::Deltas(..) => "delta",
            Request::Admin(_) => "admin",
            Request::Cloud(_) => "cloud",
            Request::Connected(_) | Request::Disconnected(_) => "session",
        }
    }
}

/// Counts each outcome as applied or refused, by the request's kind.
fn count_outcomes(kind: &'static str, outcomes: &[Outcome]) {
    let metrics = crate::metrics::metrics();
    let label = crate::metrics::KindLabel { kind };
    for outcome in outcomes {
        let family = match outcome {
            Outcome::Applied => &metrics.applied,
            Outcome::Rejected(_) => &metrics.refused,
        };
        family.get_or_create(&label).inc();
    }
}

/// What a cloud source (the OpenStack adapter) writes: control-plane objects, which belong to
/// no host.
#[derive(Debug, Clone)]
pub enum CloudWrite {
    /// The source's whole view: control-plane objects it no longer lists are removed.
    Replace(Vec<Object>),
    /// Changes since its last write. Removing an object that is not there is no error: the
    /// source may see a deletion of something created and deleted between two reads.
    Apply {
        upserts: Vec<Object>,
        removals: Vec<ObjectId>,
    },
}

/// One write of a cloud source, atomic, with what it tells operators.
#[derive(Debug, Clone)]
pub struct CloudUpdate {
    pub environment: String,
    /// Who writes (`openstack`), for messages.
    pub source: String,
    pub write: CloudWrite,
    pub notes: Vec<(MessageLevel, String)>,
}

/// A change an operator makes through the API; it goes through the committer like agents'
/// data, so the cliques it changes are stored and streamed the same way.
#[derive(Debug, Clone)]
pub enum AdminChange {
    /// Replaces every clique type and constraint.
    CliqueRules(Vec<CliqueType>, Vec<CliqueConstraint>),
    /// Creates or replaces an environment's configuration.
    Environment(EnvironmentConfig),
    /// Removes an environment that holds no objects.
    RemoveEnvironment(String),
    /// Rebuilds an environment's links and cliques (`LinksOnly`) or cliques (`CliquesOnly`)
    /// from scratch.
    Rebuild(String, ScanKind),
}

/// What the committer answers a request.
#[derive(Debug, Default)]
struct Answer {
    outcomes: Vec<Outcome>,
    /// Object, link and clique versions the request produced.
    changes: usize,
}

struct Job {
    request: Request,
    reply: oneshot::Sender<Result<Answer, SinkError>>,
}

/// State shared between the committer and readers.
#[derive(Debug)]
struct Shared {
    engine: RwLock<Engine>,
    agents: RwLock<HashMap<String, AgentRecord>>,
    /// When each host's last snapshot was stored (since this process started): how a scan
    /// knows the snapshot it asked for arrived.
    snapshots: RwLock<HashMap<String, Timestamp>>,
    /// Seals environment secrets on their way to the store, opens them on the way back.
    secrets: SecretKey,
}

/// An [`IngestSink`] over a [`Store`], with the engine that derives links and cliques.
#[derive(Debug)]
pub struct DurableSink {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    published: broadcast::Sender<Arc<Published>>,
    store: Arc<AnyStore>,
}

impl DurableSink {
    /// Loads everything from the store (seeding the default clique types on first start),
    /// builds links and cliques, records any difference from the stored ones (a new version may
    /// derive links differently), and starts the committer. `secrets` opens the environment
    /// secrets the store holds (secrets an earlier version stored in clear are sealed now).
    pub async fn open(store: impl Into<AnyStore>, secrets: SecretKey) -> Result<Self, OpenError> {
        let store = Arc::new(store.into());
        let (engine, agents, last_commit) = load_engine(store.as_ref(), &secrets).await?;
        let shared = Arc::new(Shared {
            engine: RwLock::new(engine),
            agents: RwLock::new(agents),
            snapshots: RwLock::new(HashMap::new()),
            secrets,
        });
        let (jobs, queue) = mpsc::channel(4 * MAX_GROUP);
        let (published, _) = broadcast::channel(1024);
        let (writes, pending) = mpsc::channel(MAX_IN_FLIGHT);
        let failed = Arc::new(Notify::new());
        let writer = Writer {
            store: store.clone(),
            shared: shared.clone(),
            pending,
            failed: failed.clone(),
            refusing: false,
        };
        let committer = Committer {
            store: store.clone(),
            shared: shared.clone(),
            queue,
            published: published.clone(),
            writes,
            failed,
            last_at: last_commit,
            ahead_of_store: false,
        };
        tokio::spawn(writer.run());
        tokio::spawn(committer.run());
        Ok(DurableSink {
            jobs,
            shared,
            published,
            store,
        })
    }

    /// Opens the store a URL names — `sqlite:PATH` (created if missing) or
    /// `postgres://…` — and the sink over it.
    pub async fn connect(url: &str, secrets: SecretKey) -> Result<Self, OpenError> {
        Self::open(AnyStore::connect(url).await?, secrets).await
    }

    /// Requests waiting for the committer.
    pub fn queue_depth(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// The key that seals secrets at rest, for the API's records that hold one.
    pub fn secrets(&self) -> &SecretKey {
        &self.shared.secrets
    }

    /// The store, for history and the API's own records.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// Applies an operator's change; returns how many object, link and clique versions it
    /// produced, or why it was refused.
    pub async fn admin(&self, change: AdminChange) -> Result<Result<usize, String>, SinkError> {
        let answer = self.submit(Request::Admin(change)).await?;
        Ok(match answer.outcomes.into_iter().next() {
            Some(Outcome::Rejected(reason)) => Err(reason),
            _ => Ok(answer.changes),
        })
    }

    /// Applies a cloud source's write atomically (all or nothing, refused with the reason
    /// when an object is not the source's to write) and records its notes.
    pub async fn cloud(&self, update: CloudUpdate) -> Result<Outcome, SinkError> {
        let answer = self.submit(Request::Cloud(update)).await?;
        Ok(answer
            .outcomes
            .into_iter()
            .next()
            .unwrap_or(Outcome::Applied))
    }

    /// The engine, for reading (the API, tests).
    pub fn engine(&self) -> RwLockReadGuard<'_, Engine> {
        self.shared
            .engine
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What the store holds of every agent.
    pub fn agents(&self) -> Vec<AgentRecord> {
        let mut agents: Vec<AgentRecord> = self
            .shared
            .agents
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        agents.sort_by(|a, b| a.host.cmp(&b.host));
        agents
    }

    /// When the host's last snapshot was stored, if one was since this process started.
    pub fn last_snapshot(&self, host: &str) -> Option<Timestamp> {
        self.shared
            .snapshots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .copied()
    }

    /// Every group's changes from now on, as they are applied (see [`Published`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.published.subscribe()
    }

    async fn submit(&self, request: Request) -> Result<Answer, SinkError> {
        let (reply, answer) = oneshot::channel();
        let unavailable = || SinkError("the committer has stopped".into());
        self.jobs
            .send(Job { request, reply })
            .await
            .map_err(|_| unavailable())?;
        answer.await.map_err(|_| unavailable())?
    }
}

async fn load_engine(
    store: &AnyStore,
    secrets: &SecretKey,
) -> Result<(Engine, HashMap<String, AgentRecord>, Timestamp), OpenError> {
    let Loaded {
        environments,
        objects,
        links,
        cliques,
        agents,
        clique_rules,
        last_commit,
    } = store.load().await?;
    let (types, constraints) = match clique_rules {
        Some((mut types, constraints)) => {
            if upgrade_seeded_defaults(&mut types) {
                tracing::info!("clique types seeded by an earlier version now walk to the wire");
                let upgrade = Batch {
                    at: next_time(last_commit),
                    clique_rules: Some((types.clone(), constraints.clone())),
                    ..Batch::default()
                };
                store.commit(&upgrade).await?;
            }
            (types, constraints)
        }
        None => {
            let rules = (default_clique_types(), default_clique_constraints());
            let seed = Batch {
                at: next_time(last_commit),
                clique_rules: Some(rules.clone()),
                ..Batch::default()
            };
            store.commit(&seed).await?;
            rules
        }
    };
    let mut engine = Engine::new(types, constraints);
    let mut by_env: HashMap<String, Vec<Node>> = HashMap::new();
    for (env, node) in objects {
        by_env.entry(env).or_default().push(node);
    }
    let mut batch = Batch {
        at: next_time(last_commit),
        ..Batch::default()
    };
    for stored in environments {
        let (config, clear_found) = secrets.open_config(stored)?;
        if clear_found {
            tracing::info!(environment = %config.name, "sealing secrets an earlier version stored in clear");
            batch.environments.push(secrets.seal_config(&config));
        }
        let nodes = by_env.remove(&config.name).unwrap_or_default();
        engine.load(config, nodes);
    }
    for (name, nodes) in by_env {
        engine.load(crate::cliques::EnvironmentConfig::named(&name), nodes);
        if let Some(env) = engine.environment(&name) {
            batch.environments.push(secrets.seal_config(&env.config));
        }
    }
    reconcile(&engine, links, cliques, &mut batch);
    if !batch.is_empty() {
        tracing::info!(
            changes = batch.change_count(),
            "links and cliques differ from the stored ones; recording the difference"
        );
        store.commit(&batch).await?;
    }
    let agents = agents.into_iter().map(|a| (a.host.clone(), a)).collect();
    Ok((engine, agents, batch.at))
}

/// Adds to `batch` the differences between the stored links and cliques and the built ones.
fn reconcile(
    engine: &Engine,
    links: Vec<(String, calipso_proto::Link)>,
    cliques: Vec<(String, crate::cliques::Clique)>,
    batch: &mut Batch,
) {
    let mut stored_links: HashMap<(String, LinkKey), calipso_proto::Link> = links
        .into_iter()
        .map(|(env, link)| ((env, LinkKey::of(&link)), link))
        .collect();
    let mut stored_cliques: HashMap<(String, ObjectId), crate::cliques::Clique> = cliques
        .into_iter()
        .map(|(env, clique)| ((env, clique.focal_point.clone()), clique))
        .collect();
    for env in engine.environments() {
        let name = &env.config.name;
        for link in env.links.links() {
            let key = LinkKey::of(link);
            match stored_links.remove(&(name.clone(), key.clone())) {
                Some(stored) if &stored == link => {}
                Some(_) => batch
                    .links
                    .push(Write::replacing(name, key, Some(link.clone()))),
                None => batch.links.push(Write::first(name, key, link.clone())),
            }
        }
        for clique in env.cliques.cliques() {
            let focal = clique.focal_point.clone();
            match stored_cliques.remove(&(name.clone(), focal.clone())) {
                Some(stored) if &stored == clique => {}
                Some(_) => batch
                    .cliques
                    .push(Write::replacing(name, focal, Some(clique.clone()))),
                None => batch
                    .cliques
                    .push(Write::first(name, focal, clique.clone())),
            }
        }
    }
    batch.links.extend(
        stored_links
            .into_keys()
            .map(|(env, key)| Write::replacing(env, key, None)),
    );
    batch.cliques.extend(
        stored_cliques
            .into_keys()
            .map(|(env, focal)| Write::replacing(env, focal, None)),
    );
}

/// A commit time strictly after `last`, so versions of one key never share a start.
fn next_time(last: Timestamp) -> Timestamp {
    Timestamp::from_unix_micros(Timestamp::now().unix_micros().max(last.unix_micros() + 1))
}

struct Committer {
    store: Arc<AnyStore>,
    shared: Arc<Shared>,
    queue: mpsc::Receiver<Job>,
    published: broadcast::Sender<Arc<Published>>,
    writes: mpsc::Sender<ToWriter>,
    /// Woken by the writer when a commit failed.
    failed: Arc<Notify>,
    last_at: Timestamp,
    /// A commit failed and the engine has not been reloaded yet: it holds changes the store
    /// does not.
    ahead_of_store: bool,
}

/// What the committer hands the writer.
enum ToWriter {
    Group(Box<GroupWrite>),
    /// Answered once every earlier write has been committed or refused.
    Barrier(oneshot::Sender<()>),
}

struct GroupWrite {
    batch: Batch,
    replies: Vec<(oneshot::Sender<Result<Answer, SinkError>>, Answer)>,
    snapshot_hosts: Vec<String>,
}

/// Commits the groups in order and answers their sessions.
struct Writer {
    store: Arc<AnyStore>,
    shared: Arc<Shared>,
    pending: mpsc::Receiver<ToWriter>,
    failed: Arc<Notify>,
    /// Set by a failed commit until the committer's barrier: the groups behind a failure were
    /// applied on top of it and must not be stored.
    refusing: bool,
}

impl Writer {
    async fn run(mut self) {
        let mut next = None;
        loop {
            let write = match next.take() {
                Some(write) => write,
                None => match self.pending.recv().await {
                    Some(write) => write,
                    None => return,
                },
            };
            match write {
                ToWriter::Barrier(done) => {
                    self.refusing = false;
                    let _ = done.send(());
                }
                ToWriter::Group(first) => {
                    // What queued while the last transaction ran goes into this one: a writer
                    // behind a burst pays one fsync for the lot, not one per group.
                    let mut groups = vec![*first];
                    let mut changes = groups[0].batch.change_count();
                    while changes < MAX_CHANGES_PER_TRANSACTION {
                        match self.pending.try_recv() {
                            Ok(ToWriter::Group(group)) => {
                                changes += group.batch.change_count();
                                groups.push(*group);
                            }
                            Ok(barrier) => {
                                next = Some(barrier);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(groups).await;
                }
            }
        }
    }

    async fn commit(&mut self, groups: Vec<GroupWrite>) {
        let refuse = |groups: Vec<GroupWrite>, reason: SinkError| {
            for (reply, _) in groups.into_iter().flat_map(|group| group.replies) {
                let _ = reply.send(Err(reason.clone()));
            }
        };
        if self.refusing {
            refuse(
                groups,
                SinkError("an earlier commit failed; the engine is being reloaded".into()),
            );
            return;
        }
        let started = std::time::Instant::now();
        let batches: Vec<&Batch> = groups.iter().map(|group| &group.batch).collect();
        let stored = self.store.commit_all(&batches).await;
        let metrics = crate::metrics::metrics();
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match stored {
            Ok(()) => {
                let versions: usize = batches.iter().map(|batch| batch.change_count()).sum();
                metrics.versions.inc_by(versions as u64);
                {
                    let mut snapshots = self
                        .shared
                        .snapshots
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    for group in &groups {
                        for host in &group.snapshot_hosts {
                            snapshots.insert(host.clone(), group.batch.at);
                        }
                    }
                }
                for (reply, answer) in groups.into_iter().flat_map(|group| group.replies) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(err) => {
                metrics.commit_failures.inc();
                tracing::error!(%err, "commit failed; reloading the engine from the store");
                self.refusing = true;
                refuse(
                    groups,
                    SinkError(format!("the store refused the commit: {err}")),
                );
                self.failed.notify_one();
            }
        }
    }
}

impl Committer {
    async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                () = self.failed.notified() => {
                    self.ahead_of_store = true;
                    self.resync().await;
                }
                first = self.queue.recv() => {
                    let Some(first) = first else { return };
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_GROUP {
                        match self.queue.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    self.commit_group(jobs).await;
                }
            }
        }
    }

    async fn commit_group(&mut self, jobs: Vec<Job>) {
        if self.ahead_of_store && !self.resync().await {
            let reason = SinkError("the store cannot be read back after a failed commit".into());
            for job in jobs {
                let _ = job.reply.send(Err(reason.clone()));
            }
            return;
        }
        let at = next_time(self.last_at);
        self.last_at = at;
        let mut batch = Batch {
            at,
            ..Batch::default()
        };
        let mut changes: Vec<(String, Applied)> = Vec::new();
        let mut replies = Vec::with_capacity(jobs.len());
        let mut snapshot_hosts = Vec::new();
        let mut status_changes = Vec::new();
        {
            let mut engine = self
                .shared
                .engine
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let mut agents = self
                .shared
                .agents
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let mut work = Work {
                engine: &mut engine,
                agents: &mut agents,
                secrets: &self.shared.secrets,
                batch: &mut batch,
                changes: &mut changes,
                at,
            };
            for job in jobs {
                if let Request::Snapshot(session, _) = &job.request {
                    snapshot_hosts.push(session.host.clone());
                }
                let kind = job.request.kind();
                let before = work.changes.len();
                let outcomes = work.handle(job.request);
                count_outcomes(kind, &outcomes);
                let changes = work.changes[before..]
                    .iter()
                    .map(|(_, applied)| applied.change_count())
                    .sum();
                replies.push((job.reply, Answer { outcomes, changes }));
            }
            for (environment, applied) in work.changes.iter() {
                if let Some(env) = work.engine.environment(environment) {
                    status_changes.extend(monitoring::status_changes(
                        environment,
                        applied,
                        &env.graph,
                        at,
                    ));
                }
            }
            work.batch
                .messages
                .extend(status_changes.iter().map(monitoring::StatusChange::message));
        }
        for (env, applied) in &changes {
            add_to_batch(&mut batch, env, applied);
        }
        // Published as the API shows it (queries read the engine), not after the commit: a slow
        // commit must not hold the live stream. A failed commit rolls the engine back and the
        // stream says so (`RolledBack`).
        if !changes.is_empty() || !batch.messages.is_empty() {
            let messages = batch.messages.clone();
            let _ = self
                .published
                .send(Arc::new(Published::Changes(GroupChanges {
                    at,
                    changes,
                    messages,
                    status_changes,
                })));
        }
        let write = ToWriter::Group(Box::new(GroupWrite {
            batch,
            replies,
            snapshot_hosts,
        }));
        if let Err(mpsc::error::SendError(ToWriter::Group(group))) = self.writes.send(write).await {
            let reason = SinkError("the store writer has stopped".into());
            for (reply, _) in group.replies {
                let _ = reply.send(Err(reason.clone()));
            }
        }
    }

    /// After a failed commit: waits until the writer has answered every write queued behind
    /// it, then reloads the engine from the store and tells the stream.
    async fn resync(&mut self) -> bool {
        let (done, finished) = oneshot::channel();
        if self.writes.send(ToWriter::Barrier(done)).await.is_err() || finished.await.is_err() {
            return false;
        }
        if !self.reload().await {
            return false;
        }
        let _ = self.published.send(Arc::new(Published::RolledBack));
        true
    }

    /// Replaces the engine and the resume points with what the store holds; false if the store
    /// cannot be read (memory then stays marked as ahead of it, and nothing is applied until a
    /// reload succeeds).
    async fn reload(&mut self) -> bool {
        match load_engine(self.store.as_ref(), &self.shared.secrets).await {
            Ok((engine, agents, last)) => {
                self.last_at = self.last_at.max(last);
                *self
                    .shared
                    .engine
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = engine;
                *self
                    .shared
                    .agents
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = agents;
                self.ahead_of_store = false;
                true
            }
            Err(err) => {
                tracing::error!(%err, "cannot reload from the store; retrying before the next commit");
                false
            }
        }
    }
}

fn add_to_batch(batch: &mut Batch, env: &str, applied: &Applied) {
    for diff in &applied.objects {
        batch.objects.push(Write {
            environment: env.to_owned(),
            key: diff.id.clone(),
            version: diff.after.clone(),
            replaces: diff.before.is_some(),
        });
    }
    let links = &applied.links;
    for link in &links.created {
        batch
            .links
            .push(Write::first(env, LinkKey::of(link), link.clone()));
    }
    for link in &links.changed {
        let version = Some(link.clone());
        batch
            .links
            .push(Write::replacing(env, LinkKey::of(link), version));
    }
    for key in &links.removed {
        batch.links.push(Write::replacing(env, key.clone(), None));
    }
    push_cliques(batch, env, &applied.cliques);
}

fn push_cliques(batch: &mut Batch, env: &str, cliques: &CliqueChanges) {
    for clique in &cliques.created {
        let focal = clique.focal_point.clone();
        batch.cliques.push(Write::first(env, focal, clique.clone()));
    }
    for clique in &cliques.changed {
        let focal = clique.focal_point.clone();
        batch
            .cliques
            .push(Write::replacing(env, focal, Some(clique.clone())));
    }
    for focal in &cliques.removed {
        batch
            .cliques
            .push(Write::replacing(env, focal.clone(), None));
    }
}

/// One group's work on the engine, under its lock.
struct Work<'a> {
    engine: &'a mut Engine,
    agents: &'a mut HashMap<String, AgentRecord>,
    secrets: &'a SecretKey,
    batch: &'a mut Batch,
    changes: &'a mut Vec<(String, Applied)>,
    at: Timestamp,
}

impl Work<'_> {
    fn handle(&mut self, request: Request) -> Vec<Outcome> {
        match request {
            Request::Admin(change) => vec![self.admin(change)],
            Request::Connected(session) => {
                self.connected(&session);
                Vec::new()
            }
            Request::Snapshot(session, snapshot) => vec![self.snapshot(&session, snapshot)],
            Request::Deltas(session, deltas) => deltas
                .into_iter()
                .map(|delta| self.delta(&session, delta))
                .collect(),
            Request::Disconnected(host) => {
                self.disconnected(&host);
                Vec::new()
            }
            Request::Cloud(update) => vec![self.cloud(update)],
        }
    }

    fn cloud(&mut self, update: CloudUpdate) -> Outcome {
        let CloudUpdate {
            environment,
            source,
            write,
            notes,
        } = update;
        let (upserts, removals, replace) = match write {
            CloudWrite::Replace(objects) => (objects, Vec::new(), true),
            CloudWrite::Apply { upserts, removals } => (upserts, removals, false),
        };
        let mut seen = BTreeSet::new();
        let checked = upserts.iter().try_for_each(|object| {
            check_cloud_object(&environment, object)?;
            if seen.insert(&object.id) {
                Ok(())
            } else {
                Err(format!("object {}: written twice in one update", object.id))
            }
        });
        let outcome = match checked {
            Err(reason) => {
                self.message_from(
                    &source,
                    &environment,
                    MessageLevel::Error,
                    None,
                    format!("update refused: {reason}"),
                );
                Outcome::Rejected(reason)
            }
            Ok(()) => {
                let graph = self.engine.environment(&environment).map(|env| &env.graph);
                let existing = |id: &ObjectId| {
                    graph
                        .and_then(|g| g.get(id))
                        .is_some_and(|n| n.object.host.is_none())
                };
                let mut changes: Vec<Change> = removals
                    .into_iter()
                    .filter(|id| existing(id) && !seen.contains(id))
                    .map(Change::Remove)
                    .collect();
                if replace && let Some(graph) = graph {
                    changes.extend(
                        CONTROL_PLANE_TYPES
                            .iter()
                            .flat_map(|t| graph.of_type(*t))
                            .filter(|n| n.object.host.is_none() && !seen.contains(n.id()))
                            .map(|n| Change::Remove(n.id().clone())),
                    );
                }
                drop(seen);
                changes.extend(upserts.into_iter().map(|o| self.upsert(&environment, o)));
                self.apply(&environment, changes);
                Outcome::Applied
            }
        };
        for (level, text) in notes {
            self.message_from(&source, &environment, level, None, text);
        }
        outcome
    }

    fn admin(&mut self, change: AdminChange) -> Outcome {
        match change {
            AdminChange::CliqueRules(types, constraints) => {
                for (environment, cliques) in self
                    .engine
                    .set_clique_rules(types.clone(), constraints.clone())
                {
                    self.record(&environment, Applied::cliques_only(cliques));
                }
                self.batch.clique_rules = Some((types, constraints));
            }
            AdminChange::Environment(config) => {
                let environment = config.name.clone();
                let cliques = self.engine.set_config(config.clone());
                self.record(&environment, Applied::cliques_only(cliques));
                self.batch
                    .environments
                    .push(self.secrets.seal_config(&config));
            }
            AdminChange::RemoveEnvironment(name) => {
                if let Err(reason) = self.engine.remove_environment(&name) {
                    return Outcome::Rejected(reason);
                }
            }
            AdminChange::Rebuild(environment, kind) => {
                let Some(env) = self.engine.environment_mut(&environment) else {
                    return Outcome::Rejected(format!("no environment `{environment}`"));
                };
                let applied = match kind {
                    ScanKind::LinksOnly => env.rebuild_links(),
                    ScanKind::CliquesOnly => Applied::cliques_only(env.rebuild_cliques()),
                    ScanKind::Full | ScanKind::InventoryOnly => {
                        return Outcome::Rejected(format!(
                            "a {} scan is done by the agents, not rebuilt",
                            kind.as_str()
                        ));
                    }
                };
                self.record(&environment, applied);
            }
        }
        Outcome::Applied
    }

    fn record(&mut self, environment: &str, applied: Applied) {
        if !applied.is_empty() {
            self.changes.push((environment.to_owned(), applied));
        }
    }

    fn apply(&mut self, environment: &str, changes: Vec<Change>) {
        if self.engine.ensure_environment(environment)
            && let Some(env) = self.engine.environment(environment)
        {
            self.batch
                .environments
                .push(self.secrets.seal_config(&env.config));
        }
        let applied = self.engine.apply(environment, changes);
        self.record(environment, applied);
    }

    fn record_agent(&mut self, session: &AgentSession, epoch: Option<u64>, seq: u64) {
        let record = AgentRecord {
            host: session.host.clone(),
            environment: session.environment.clone(),
            agent_version: session.agent_version.clone(),
            epoch,
            seq,
            state: AgentState::Connected,
            last_seen: self.at,
        };
        self.agents.insert(record.host.clone(), record.clone());
        self.batch.agents.push(record);
    }

    fn message(
        &mut self,
        environment: &str,
        level: MessageLevel,
        object: Option<ObjectId>,
        text: String,
    ) {
        self.message_from("ingest", environment, level, object, text);
    }

    fn message_from(
        &mut self,
        source: &str,
        environment: &str,
        level: MessageLevel,
        object: Option<ObjectId>,
        text: String,
    ) {
        self.batch.messages.push(Message {
            environment: Some(environment.to_owned()),
            level,
            source: source.to_owned(),
            related_object: object,
            text,
            at: self.at,
        });
    }

    /// The host's current nodes, by id.
    fn host_nodes(&self, environment: &str, host: &str) -> Vec<Node> {
        self.engine
            .environment(environment)
            .map(|env| {
                env.graph
                    .ids_on_host(host)
                    .filter_map(|id| env.graph.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_stale(&mut self, environment: &str, host: &str, stale: bool) {
        let changes: Vec<Change> = self
            .host_nodes(environment, host)
            .into_iter()
            .filter(|n| n.stale != stale)
            .map(|mut n| {
                n.stale = stale;
                Change::Upsert(Box::new(n))
            })
            .collect();
        if !changes.is_empty() {
            self.apply(environment, changes);
        }
    }

    fn connected(&mut self, session: &AgentSession) {
        let previous = self.agents.get(&session.host).cloned();
        let moved = previous
            .as_ref()
            .filter(|p| p.environment != session.environment);
        if let Some(previous) = moved {
            // The host now reports into another environment: what it had in the old one is
            // stale there, and the new one needs a snapshot.
            let environment = previous.environment.clone();
            self.set_stale(&environment, &session.host, true);
        }
        let data = previous
            .filter(|p| p.environment == session.environment)
            .and_then(|p| Some((p.epoch?, p.seq)));
        let resumes = data
            .is_some_and(|(epoch, seq)| epoch == session.epoch && session.last_acked_seq <= seq);
        if resumes {
            self.set_stale(&session.environment, &session.host, false);
        }
        // The resume point describes the data held, so it stays as it was until a snapshot
        // or delta of the new session is applied.
        let (epoch, seq) = data.map_or((None, 0), |(epoch, seq)| (Some(epoch), seq));
        self.record_agent(session, epoch, seq);
    }

    fn disconnected(&mut self, host: &str) {
        let Some(mut record) = self.agents.get(host).cloned() else {
            return;
        };
        self.set_stale(&record.environment, host, true);
        record.state = AgentState::Disconnected;
        record.last_seen = self.at;
        self.agents.insert(host.to_owned(), record.clone());
        self.message(
            &record.environment,
            MessageLevel::Warning,
            Some(ObjectId::host(host)),
            format!("host `{host}` disconnected; its objects are stale until it reconnects"),
        );
        self.batch.agents.push(record);
    }

    fn snapshot(&mut self, session: &AgentSession, snapshot: Snapshot) -> Outcome {
        let environment = session.environment.clone();
        let outcome = match check_snapshot(session, &snapshot) {
            Ok(()) => {
                let reported: BTreeSet<&ObjectId> =
                    snapshot.objects.iter().map(|o| &o.id).collect();
                let mut changes: Vec<Change> = self
                    .host_nodes(&environment, &session.host)
                    .into_iter()
                    .filter(|n| !reported.contains(n.id()))
                    .map(|n| Change::Remove(n.id().clone()))
                    .collect();
                changes.extend(
                    snapshot
                        .objects
                        .into_iter()
                        .map(|o| self.upsert(&environment, o)),
                );
                self.apply(&environment, changes);
                Outcome::Applied
            }
            Err(reason) => self.refuse(session, &format!("snapshot {}", snapshot.seq), reason),
        };
        self.record_agent(session, Some(session.epoch), snapshot.seq);
        outcome
    }

    /// Records why `what` was refused, for operators, and tells the session.
    fn refuse(&mut self, session: &AgentSession, what: &str, reason: String) -> Outcome {
        self.message(
            &session.environment,
            MessageLevel::Error,
            None,
            format!("{what} from `{}` refused: {reason}", session.host),
        );
        Outcome::Rejected(reason)
    }

    fn upsert(&self, environment: &str, object: Object) -> Change {
        let first_seen = self
            .engine
            .environment(environment)
            .and_then(|env| env.graph.get(&object.id))
            .map_or(self.at, |n| n.first_seen);
        let mut node = Node::new(object, self.at);
        node.first_seen = first_seen;
        Change::Upsert(Box::new(node))
    }

    fn delta(&mut self, session: &AgentSession, delta: Delta) -> Outcome {
        let environment = session.environment.clone();
        let graph = self.engine.environment(&environment).map(|env| &env.graph);
        let exists = |id: &ObjectId| graph.is_some_and(|g| g.contains(id));
        let outcome = match check_delta(session, &delta, exists) {
            Ok(()) => {
                let owned_elsewhere = |id: &ObjectId| {
                    graph
                        .and_then(|g| g.get(id))
                        .is_some_and(|n| n.object.host.as_deref() != Some(session.host.as_str()))
                };
                // A cloud-level object (an instance) that another host now reports — a VM that
                // migrated — is no longer this host's to remove.
                let removals: Vec<Change> = delta
                    .removals
                    .into_iter()
                    .filter(|id| !owned_elsewhere(id))
                    .map(Change::Remove)
                    .collect();
                let mut changes = removals;
                changes.extend(
                    delta
                        .upserts
                        .into_iter()
                        .map(|o| self.upsert(&environment, o)),
                );
                self.apply(&environment, changes);
                Outcome::Applied
            }
            Err(reason) => self.refuse(session, &format!("delta {}", delta.seq), reason),
        };
        self.record_agent(session, Some(session.epoch), delta.seq);
        outcome
    }
}

impl IngestSink for DurableSink {
    fn health_overrides(&self, environment: &str) -> calipso_proto::wire::HealthOverrides {
        let engine = self.engine();
        let Some(env) = engine.environment(environment) else {
            return Default::default();
        };
        // The API refuses settings that do not parse; one stored by an older version that
        // does not is logged, and the agents keep their own.
        monitoring::health_overrides(&env.config).unwrap_or_else(|error| {
            tracing::warn!(environment, %error, "health settings left out");
            Default::default()
        })
    }

    async fn resume_point(&self, host: &str) -> Result<Option<ResumePoint>, SinkError> {
        Ok(self
            .shared
            .agents
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .and_then(|a| {
                Some(ResumePoint {
                    epoch: a.epoch?,
                    seq: a.seq,
                })
            }))
    }

    async fn host_connected(&self, session: &AgentSession) -> Result<(), SinkError> {
        self.submit(Request::Connected(session.clone()))
            .await
            .map(drop)
    }

    async fn apply_snapshot(
        &self,
        session: &AgentSession,
        snapshot: Snapshot,
    ) -> Result<Outcome, SinkError> {
        let answer = self
            .submit(Request::Snapshot(session.clone(), snapshot))
            .await?;
        answer
            .outcomes
            .into_iter()
            .next()
            .ok_or_else(|| SinkError("the committer gave no outcome".into()))
    }

    async fn apply_deltas(
        &self,
        session: &AgentSession,
        deltas: Vec<Delta>,
    ) -> Result<Vec<Outcome>, SinkError> {
        self.submit(Request::Deltas(session.clone(), deltas))
            .await
            .map(|answer| answer.outcomes)
    }

    async fn host_disconnected(&self, host: &str) {
        if let Err(err) = self.submit(Request::Disconnected(host.to_owned())).await {
            tracing::warn!(host, %err, "could not record the disconnection");
        }
    }
}
