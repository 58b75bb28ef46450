//! The kernel collector: interfaces, addresses, bridges, vxlan endpoints and their FDB remotes
//! in the host namespace and in every namespace of the netns directory, read through rtnetlink;
//! physical NIC facts from sysfs and ethtool; bonds from `/proc/net/bonding`.
//!
//! Event-driven: one rtnetlink socket per namespace ([`rtnl::follow`]), inotify on the netns
//! directory ([`netns::watch_dir`]). Changes are coalesced — a batch is published once no new
//! event came for `coalesce_quiet`, or at the latest `coalesce_max` after its first event.
//!
//! Rebuilding is incremental: an update marks the interfaces it touched, and at the end of a
//! batch only those, the objects that embed them (bridge members, veth peers across
//! namespaces, VLAN lowers, vxlan underlays) and their masters are rebuilt
//! ([`model::Builder::interface_at`]); the outbox then drops whatever did not really change.
//! On `refresh` ticks every namespace is dumped again and NIC facts re-read, as a safety net
//! and for facts that have no events. `discover` builds everything at once ([`model::build`]);
//! the tests check that both give the same objects.

mod bonding;
mod facts;
mod model;
mod netns;
mod nic;
mod rtnl;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use calipso_proto::{Object, ObjectId};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use facts::{LinkFacts, OperState};
pub use model::HostExtras;
pub use netns::{Namespace, NsName};
pub use nic::SysPaths;

use super::{Collector, CollectorError, InterfaceDirectory, Scope};
use crate::outbox::{ChangeSet, Outbox};
use model::{Builder, LinkKey, NsModel};
use netns::DirEvent;
use rtnl::{NsUpdate, NsView, Tagged};

const NAME: &str = "kernel";

/// How the kernel collector reads and batches.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    /// The namespace to treat as the host's, when it is not the agent's own (a bind-mounted
    /// namespace file, as `ip netns` makes them).
    pub host_netns: Option<PathBuf>,
    /// Where `ip netns` keeps named namespaces.
    pub netns_dir: PathBuf,
    pub sys: SysPaths,
    /// A batch is published once no event came for this long …
    pub coalesce_quiet: Duration,
    /// … or this long after its first event at the latest.
    pub coalesce_max: Duration,
    /// Full re-dump and NIC facts refresh interval.
    pub refresh: Duration,
    /// Receive buffer of each namespace's netlink socket (kernel default when `None`). A larger
    /// one makes overruns (and the re-dumps they cause) rarer on hosts with bursts of changes.
    pub netlink_rcvbuf: Option<u32>,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions {
            host_netns: None,
            netns_dir: "/run/netns".into(),
            sys: SysPaths::default(),
            coalesce_quiet: Duration::from_millis(1),
            coalesce_max: Duration::from_millis(10),
            refresh: Duration::from_secs(60),
            netlink_rcvbuf: None,
        }
    }
}

impl KernelOptions {
    /// sysfs and procfs, when they describe the host namespace.
    fn own_sys(&self) -> Option<&SysPaths> {
        self.host_netns.is_none().then_some(&self.sys)
    }
}

/// Reads the host's networking from the kernel.
#[derive(Debug)]
pub struct Kernel {
    scope: Scope,
    options: KernelOptions,
    directory: Option<InterfaceDirectory>,
}

impl Kernel {
    pub fn new(scope: Scope, options: KernelOptions) -> Self {
        Kernel {
            scope,
            options,
            directory: None,
        }
    }

    /// Keeps `directory` current with the vNICs found in named namespaces.
    pub fn with_directory(mut self, directory: InterfaceDirectory) -> Self {
        self.directory = Some(directory);
        self
    }
}

fn failed(message: impl std::fmt::Display) -> CollectorError {
    CollectorError {
        collector: NAME,
        message: message.to_string(),
    }
}

/// One followed namespace.
#[derive(Debug)]
struct NsEntry {
    namespace: Option<Namespace>,
    view: Option<NsView>,
    handle: Option<rtnetlink::Handle>,
    nsids: BTreeMap<i32, NsName>,
}

/// Everything the collector knows, what it published, and what changed since.
#[derive(Debug, Default)]
struct State {
    namespaces: BTreeMap<NsName, NsEntry>,
    extras: HostExtras,
    /// The id published for each interface (an interface can change type, or be renamed).
    published: HashMap<LinkKey, ObjectId>,
    /// The vservices published, by namespace name.
    published_vservices: BTreeSet<String>,
    /// Interfaces touched since the last publication.
    dirty: BTreeSet<LinkKey>,
    /// Namespaces whose every interface (and whose vservice) must be rebuilt.
    dirty_namespaces: BTreeSet<NsName>,
}

fn models(namespaces: &BTreeMap<NsName, NsEntry>) -> BTreeMap<NsName, NsModel<'_>> {
    namespaces
        .iter()
        .map(|(name, entry)| {
            (
                name.clone(),
                NsModel {
                    view: entry.view.as_ref(),
                    nsids: Some(&entry.nsids),
                },
            )
        })
        .collect()
}

fn link_in<'a>(namespaces: &'a BTreeMap<NsName, NsEntry>, key: &LinkKey) -> Option<&'a LinkFacts> {
    namespaces.get(&key.0)?.view.as_ref()?.links.get(&key.1)
}

impl State {
    /// Every object, built from scratch.
    fn objects(&self, scope: &Scope) -> Vec<Object> {
        model::build(scope, &models(&self.namespaces), &self.extras)
    }

    fn link(&self, key: &LinkKey) -> Option<&LinkFacts> {
        link_in(&self.namespaces, key)
    }

    /// Notes that an interface changed, and that its master's member list may have: the
    /// master it had (`before`) and the one it has now.
    fn touch(&mut self, key: LinkKey, before: Option<&LinkFacts>) {
        if let Some(master) = before.and_then(|f| f.master) {
            self.dirty.insert((key.0.clone(), master));
        }
        self.dirty.insert(key);
    }

    /// What changed since the last call, rebuilding only the objects that can have.
    fn changes(&mut self, scope: &Scope) -> ChangeSet {
        let mut keys = std::mem::take(&mut self.dirty);
        for ns in std::mem::take(&mut self.dirty_namespaces) {
            keys.extend(self.published.keys().filter(|(n, _)| *n == ns).cloned());
            if let Some(view) = self.namespaces.get(&ns).and_then(|e| e.view.as_ref()) {
                keys.extend(view.links.keys().map(|&ifindex| (ns.clone(), ifindex)));
            }
        }
        let models = models(&self.namespaces);
        let builder = Builder::new(scope, &models, &self.extras);
        // Objects that embed a touched interface's identity, and touched interfaces' masters.
        let mut dependents: HashMap<LinkKey, Vec<LinkKey>> = HashMap::new();
        if !keys.is_empty() {
            for (ns, entry) in &self.namespaces {
                let Some(view) = &entry.view else { continue };
                for facts in view.links.values() {
                    for referenced in builder.references(ns, facts) {
                        dependents
                            .entry(referenced)
                            .or_default()
                            .push((ns.clone(), facts.ifindex));
                    }
                }
            }
        }
        let mut rebuild = keys.clone();
        for key in &keys {
            rebuild.extend(dependents.get(key).into_iter().flatten().cloned());
            if let Some(master) = link_in(&self.namespaces, key).and_then(|f| f.master) {
                rebuild.insert((key.0.clone(), master));
            }
        }

        let mut changes = ChangeSet::default();
        for key in rebuild {
            let object = builder.interface_at(&key.0, key.1);
            let previous = match &object {
                Some(object) => self.published.insert(key, object.id.clone()),
                None => self.published.remove(&key),
            };
            if let Some(previous) = previous.filter(|p| Some(p) != object.as_ref().map(|o| &o.id)) {
                changes.removals.push(previous);
            }
            changes.upserts.extend(object);
        }
        let present: BTreeSet<String> = self.namespaces.keys().flatten().cloned().collect();
        for gone in self.published_vservices.difference(&present) {
            changes.removals.push(ObjectId::host_local(
                calipso_proto::ObjectType::Vservice,
                &scope.host,
                gone,
            ));
        }
        for added in present.difference(&self.published_vservices) {
            changes.upserts.push(builder.vservice(added));
        }
        self.published_vservices = present;
        // An id published for one interface can be taken over by another (a rename swap):
        // never remove what is upserted in the same change.
        let upserted: BTreeSet<&ObjectId> = changes.upserts.iter().map(|o| &o.id).collect();
        changes.removals.retain(|id| !upserted.contains(id));
        changes
    }

    /// Resolves every `IFLA_LINK_NETNSID` in use that is not resolved yet, by asking each
    /// namespace's socket what it calls each other namespace (the host's first: most veths
    /// lead there). Namespaces where something new was resolved are rebuilt.
    async fn resolve_nsids(&mut self) {
        let candidates: Vec<Namespace> = self
            .namespaces
            .values()
            .filter_map(|e| e.namespace.clone())
            .collect();
        for (name, entry) in &mut self.namespaces {
            let (Some(view), Some(handle)) = (&entry.view, &entry.handle) else {
                continue;
            };
            let wanted: BTreeSet<i32> = view
                .links
                .values()
                .filter_map(|l| l.link_netnsid)
                .filter(|nsid| !entry.nsids.contains_key(nsid))
                .collect();
            for nsid in wanted {
                for other in &candidates {
                    if rtnl::nsid_of(handle, other).await == Some(nsid) {
                        entry.nsids.insert(nsid, other.name.clone());
                        self.dirty_namespaces.insert(name.clone());
                        break;
                    }
                }
            }
        }
    }

    /// A namespace went away: the ids others had for it are free for reuse.
    fn forget_namespace(&mut self, name: &NsName) {
        self.namespaces.remove(name);
        for (other, entry) in &mut self.namespaces {
            let before = entry.nsids.len();
            entry.nsids.retain(|_, target| target != name);
            if entry.nsids.len() != before {
                self.dirty_namespaces.insert(other.clone());
            }
        }
        self.dirty_namespaces.insert(name.clone());
    }

    /// Re-reads veths whose peer cannot be found. The kernel announces the first end of a new
    /// pair before its peer exists (no `IFLA_LINK`), and sends nothing for the end that stays
    /// when its peer moves to another namespace; either way the end is stale until read again.
    async fn refetch_unpaired_veths(&mut self) {
        let mut stale = Vec::new();
        for (name, entry) in &self.namespaces {
            let Some(view) = &entry.view else { continue };
            for link in view
                .links
                .values()
                .filter(|l| l.kind.as_deref() == Some("veth"))
            {
                let peer_ns = match link.link_netnsid {
                    None => Some(name),
                    Some(nsid) => entry.nsids.get(&nsid),
                };
                let found = link
                    .link
                    .zip(peer_ns)
                    .is_some_and(|(peer, ns)| self.link(&(ns.clone(), peer)).is_some());
                if !found {
                    stale.push((name.clone(), link.ifindex));
                }
            }
        }
        for key in stale {
            let Some(entry) = self.namespaces.get_mut(&key.0) else {
                continue;
            };
            let (Some(handle), Some(view)) = (&entry.handle, entry.view.as_mut()) else {
                continue;
            };
            match rtnl::get_link(handle, key.1).await {
                Some(facts) => view.links.insert(key.1, facts),
                None => view.links.remove(&key.1),
            };
            self.dirty.insert(key);
        }
    }

    /// Re-reads sysfs, ethtool and `/proc/net/bonding` for the host namespace's devices. These
    /// describe the agent's own namespace only, so a host namespace given by path (a lab host)
    /// has no physical NICs.
    async fn refresh_extras(
        &mut self,
        sys: Option<&SysPaths>,
        ethtool: &mut Option<ethtool::EthtoolHandle>,
    ) {
        let Some(sys) = sys else { return };
        let Some(host) = self.namespaces.get(&None).and_then(|e| e.view.as_ref()) else {
            return;
        };
        let mut extras = HostExtras::default();
        for link in host.links.values() {
            if !link.loopback && sys.is_physical(&link.name, link.kind.as_deref()) {
                let mut facts = sys.nic_facts(&link.name);
                if let Some(handle) = ethtool.as_mut() {
                    nic::add_link_modes(handle, &link.name, &mut facts).await;
                }
                extras.nics.insert(link.name.clone(), facts);
            }
            if link.kind.as_deref() == Some("bond")
                && let Some(text) = sys.bonding_text(&link.name)
            {
                extras
                    .bonding
                    .insert(link.name.clone(), bonding::parse(&text));
            }
        }
        if extras != self.extras {
            self.extras = extras;
            self.dirty_namespaces.insert(None);
        }
    }

    /// Applies a follower's update. Returns whether the host namespace's devices changed, so
    /// that NIC facts may need re-reading.
    fn apply(&mut self, following: &Following, generation: u64, update: NsUpdate) -> bool {
        let name = match &update {
            NsUpdate::Attach(namespace) => namespace.name.clone(),
            NsUpdate::Full { name, .. }
            | NsUpdate::Link(name, _)
            | NsUpdate::LinkRemoved(name, _)
            | NsUpdate::Ended(name) => name.clone(),
            NsUpdate::Address { name, .. } | NsUpdate::Fdb { name, .. } => name.clone(),
        };
        if !following.is_current(&name, generation) {
            return false;
        }
        let host_ns = name.is_none();
        match update {
            NsUpdate::Attach(namespace) => {
                let entry = NsEntry {
                    namespace: Some(namespace),
                    view: None,
                    handle: None,
                    nsids: BTreeMap::new(),
                };
                self.namespaces.insert(name.clone(), entry);
                self.dirty_namespaces.insert(name);
                false
            }
            NsUpdate::Ended(_) => {
                self.forget_namespace(&name);
                false
            }
            NsUpdate::Full { view, handle, .. } => {
                if let Some(entry) = self.namespaces.get_mut(&name) {
                    entry.view = Some(view);
                    entry.handle = Some(handle);
                    self.dirty_namespaces.insert(name);
                }
                host_ns
            }
            link @ (NsUpdate::Link(..) | NsUpdate::LinkRemoved(..)) => {
                let ifindex = match &link {
                    NsUpdate::Link(_, facts) => facts.ifindex,
                    NsUpdate::LinkRemoved(_, ifindex) => *ifindex,
                    _ => return false,
                };
                let key = (name, ifindex);
                let before = self.link(&key).cloned();
                let Some(view) = self
                    .namespaces
                    .get_mut(&key.0)
                    .and_then(|e| e.view.as_mut())
                else {
                    return false;
                };
                let changed = view.apply(link);
                if changed {
                    self.touch(key, before.as_ref());
                }
                host_ns && changed
            }
            address_or_fdb => {
                let ifindex = match &address_or_fdb {
                    NsUpdate::Address { ifindex, .. } | NsUpdate::Fdb { ifindex, .. } => *ifindex,
                    _ => return false,
                };
                let view = self.namespaces.get_mut(&name).and_then(|e| e.view.as_mut());
                if view.is_some_and(|view| view.apply(address_or_fdb)) {
                    self.dirty.insert((name, ifindex));
                }
                false
            }
        }
    }

    /// Dumps every followed namespace again through its socket.
    async fn redump(&mut self) {
        for (name, entry) in &mut self.namespaces {
            let Some(handle) = &entry.handle else {
                continue;
            };
            match rtnl::dump(handle).await {
                Ok(view) if entry.view.as_ref() != Some(&view) => {
                    entry.view = Some(view);
                    self.dirty_namespaces.insert(name.clone());
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(netns = netns::ns_label(name), %err, "periodic dump failed")
                }
            }
        }
    }
}

/// An ethtool netlink handle in the host namespace, if the kernel offers one.
fn ethtool_handle() -> Option<ethtool::EthtoolHandle> {
    match ethtool::new_connection() {
        Ok((connection, handle, _)) => {
            tokio::spawn(connection);
            Some(handle)
        }
        Err(err) => {
            tracing::info!(%err, "no ethtool netlink: NIC facts come from sysfs only");
            None
        }
    }
}

/// Opens a named namespace, waiting out `ip netns add`'s window between creating the file and
/// mounting the namespace on it.
async fn open_named(dir: &std::path::Path, name: &str) -> Option<Namespace> {
    for attempt in 0..20u64 {
        match Namespace::open_named(dir, name) {
            Ok(namespace) => return Some(namespace),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(5 * (attempt + 1))).await,
        }
    }
    tracing::warn!(netns = name, "not a network namespace: ignored");
    None
}

struct Follower {
    generation: u64,
    stop: CancellationToken,
}

struct Following {
    host_netns: Option<PathBuf>,
    rcvbuf: Option<u32>,
    dir: PathBuf,
    updates: mpsc::Sender<Tagged>,
    followers: BTreeMap<NsName, Follower>,
    next_generation: u64,
    shutdown: CancellationToken,
}

impl Following {
    fn start(&mut self, name: NsName) {
        if self.followers.contains_key(&name) {
            return;
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        let stop = self.shutdown.child_token();
        self.followers.insert(
            name.clone(),
            Follower {
                generation,
                stop: stop.clone(),
            },
        );
        let rcvbuf = self.rcvbuf;
        let (dir, updates, host_netns) = (
            self.dir.clone(),
            self.updates.clone(),
            self.host_netns.clone(),
        );
        tokio::spawn(async move {
            let namespace = match &name {
                None => Namespace::host(host_netns.as_deref())
                    .inspect_err(|err| tracing::error!(%err, "cannot open the host namespace"))
                    .ok(),
                Some(named) => open_named(&dir, named).await,
            };
            let Some(namespace) = namespace else {
                let _ = updates.send((generation, NsUpdate::Ended(name))).await;
                return;
            };
            if updates
                .send((generation, NsUpdate::Attach(namespace.clone())))
                .await
                .is_ok()
            {
                rtnl::follow(namespace, generation, rcvbuf, updates, stop).await;
            }
        });
    }

    fn stop(&mut self, name: &NsName) {
        if let Some(follower) = self.followers.remove(name) {
            follower.stop.cancel();
        }
    }

    fn is_current(&self, name: &NsName, generation: u64) -> bool {
        self.followers
            .get(name)
            .is_some_and(|f| f.generation == generation)
    }
}

impl Collector for Kernel {
    fn name(&self) -> &'static str {
        NAME
    }

    fn scan(&mut self) -> BoxFuture<'_, Result<Vec<Object>, CollectorError>> {
        async move {
            let mut state = State::default();
            let mut namespaces =
                vec![Namespace::host(self.options.host_netns.as_deref()).map_err(failed)?];
            for name in netns::list(&self.options.netns_dir) {
                match Namespace::open_named(&self.options.netns_dir, &name) {
                    Ok(namespace) => namespaces.push(namespace),
                    Err(err) => tracing::warn!(netns = name, %err, "namespace skipped"),
                }
            }
            let runtime = tokio::runtime::Handle::current();
            let mut connections = Vec::new();
            for namespace in namespaces {
                let (connection, handle, _) = namespace
                    .run_inside(runtime.clone(), rtnetlink::new_connection)
                    .map_err(failed)?;
                connections.push(tokio::spawn(connection));
                let view = rtnl::dump(&handle).await.map_err(failed)?;
                let entry = NsEntry {
                    namespace: Some(namespace.clone()),
                    view: Some(view),
                    handle: Some(handle),
                    nsids: BTreeMap::new(),
                };
                state.namespaces.insert(namespace.name.clone(), entry);
            }
            state.resolve_nsids().await;
            state
                .refresh_extras(self.options.own_sys(), &mut ethtool_handle())
                .await;
            for connection in connections {
                connection.abort();
            }
            Ok(state.objects(&self.scope))
        }
        .boxed()
    }

    fn follow(
        self: Box<Self>,
        outbox: Outbox,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), CollectorError>> {
        async move { self.run(outbox, shutdown).await }.boxed()
    }
}

impl Kernel {
    async fn run(self, outbox: Outbox, shutdown: CancellationToken) -> Result<(), CollectorError> {
        let (updates_tx, mut updates) = mpsc::channel::<Tagged>(4096);
        let (dir_tx, mut dir_events) = mpsc::channel::<DirEvent>(256);
        tokio::spawn(netns::watch_dir(self.options.netns_dir.clone(), dir_tx));
        let mut following = Following {
            host_netns: self.options.host_netns.clone(),
            rcvbuf: self.options.netlink_rcvbuf,
            dir: self.options.netns_dir.clone(),
            updates: updates_tx,
            followers: BTreeMap::new(),
            next_generation: 0,
            shutdown: shutdown.clone(),
        };
        following.start(None);
        let mut state = State::default();
        let mut ethtool = ethtool_handle();
        let mut refresh =
            tokio::time::interval_at(Instant::now() + self.options.refresh, self.options.refresh);
        let mut batch = Batch::default();

        loop {
            // Wait for the first event of a batch.
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                Some((generation, update)) = updates.recv() => batch.apply(&mut state, &following, generation, update),
                Some(event) = dir_events.recv() => apply_dir(&mut state, &mut following, event),
                _ = refresh.tick() => {
                    state.redump().await;
                    batch.host_devices_changed = true;
                }
            }
            // Gather the rest of the batch.
            let deadline = Instant::now() + self.options.coalesce_max;
            loop {
                let quiet_until = (Instant::now() + self.options.coalesce_quiet).min(deadline);
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    Some((generation, update)) = updates.recv() => batch.apply(&mut state, &following, generation, update),
                    Some(event) = dir_events.recv() => apply_dir(&mut state, &mut following, event),
                    () = tokio::time::sleep_until(quiet_until) => break,
                }
            }
            state.resolve_nsids().await;
            if std::mem::take(&mut batch.veth_churn) {
                state.refetch_unpaired_veths().await;
                state.resolve_nsids().await;
            }
            if std::mem::take(&mut batch.host_devices_changed) {
                state
                    .refresh_extras(self.options.own_sys(), &mut ethtool)
                    .await;
            }
            let changes = state.changes(&self.scope);
            if let Some(directory) = &self.directory {
                let namespaced = changes
                    .upserts
                    .iter()
                    .filter(|o| {
                        o.object_type == calipso_proto::ObjectType::Vnic
                            && o.attributes.extra.contains_key("netns")
                    })
                    .map(|o| (o.name.to_string(), o.id.clone()));
                directory.update(namespaced, &changes.removals);
            }
            outbox.publish(NAME, changes).map_err(failed)?;
        }
    }
}

/// What a batch needs done before it is published.
#[derive(Debug, Default)]
struct Batch {
    /// A veth came, went or changed: peers may need re-reading.
    veth_churn: bool,
    /// A host-namespace device changed: NIC facts may need re-reading.
    host_devices_changed: bool,
}

impl Batch {
    fn apply(
        &mut self,
        state: &mut State,
        following: &Following,
        generation: u64,
        update: NsUpdate,
    ) {
        self.veth_churn |= touches_veth(state, &update);
        self.host_devices_changed |= state.apply(following, generation, update);
    }
}

/// Whether an update adds, changes or removes a veth (whose peer may then need re-reading).
fn touches_veth(state: &State, update: &NsUpdate) -> bool {
    match update {
        NsUpdate::Link(_, facts) => facts.kind.as_deref() == Some("veth"),
        NsUpdate::LinkRemoved(name, ifindex) => state
            .link(&(name.clone(), *ifindex))
            .is_some_and(|l| l.kind.as_deref() == Some("veth")),
        NsUpdate::Full { .. } | NsUpdate::Ended(_) => true,
        _ => false,
    }
}

fn apply_dir(state: &mut State, following: &mut Following, event: DirEvent) {
    let gone: Vec<NsName> = match event {
        DirEvent::Listing(names) => {
            let listed: BTreeSet<NsName> = names.into_iter().map(Some).collect();
            let gone = following
                .followers
                .keys()
                .filter(|n| n.is_some() && !listed.contains(*n))
                .cloned()
                .collect();
            for name in listed {
                following.start(name);
            }
            gone
        }
        DirEvent::Added(name) => {
            following.start(Some(name));
            Vec::new()
        }
        DirEvent::Removed(name) => vec![Some(name)],
    };
    for name in gone {
        following.stop(&name);
        state.forget_namespace(&name);
    }
}
