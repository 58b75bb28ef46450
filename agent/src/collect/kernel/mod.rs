//! The kernel collector: interfaces, addresses, bridges, vxlan endpoints and their FDB remotes
//! in the host namespace and in every namespace of the netns directory, read through rtnetlink;
//! physical NIC facts from sysfs and ethtool; bonds from `/proc/net/bonding`.
//!
//! Event-driven: one rtnetlink socket per namespace ([`rtnl::follow`]), inotify on the netns
//! directory ([`netns::watch_dir`]). Changes are coalesced — a batch is published once no new
//! event came for `coalesce_quiet`, or at the latest `coalesce_max` after its first event — and
//! the objects are rebuilt from the views ([`model::build`]) and handed to the outbox, which
//! sends only what really changed. On `refresh` ticks every namespace is dumped again and NIC
//! facts re-read, as a safety net and for facts that have no events.

mod bonding;
mod facts;
mod model;
mod netns;
mod nic;
mod rtnl;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use calipso_proto::Object;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use facts::{LinkFacts, OperState};
pub use model::HostExtras;
pub use netns::{Namespace, NsName};
pub use nic::SysPaths;

use super::{Collector, CollectorError, Scope};
use crate::outbox::Outbox;
use model::NsModel;
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
}

impl Kernel {
    pub fn new(scope: Scope, options: KernelOptions) -> Self {
        Kernel { scope, options }
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

/// Everything the collector knows; the objects are a function of it.
#[derive(Debug, Default)]
struct State {
    namespaces: BTreeMap<NsName, NsEntry>,
    extras: HostExtras,
}

impl State {
    fn objects(&self, scope: &Scope) -> Vec<Object> {
        let models: BTreeMap<NsName, NsModel<'_>> = self
            .namespaces
            .iter()
            .map(|(name, entry)| {
                (
                    name.clone(),
                    NsModel {
                        view: entry.view.as_ref(),
                        nsids: entry.nsids.clone(),
                    },
                )
            })
            .collect();
        model::build(scope, &models, &self.extras)
    }

    /// Resolves every `IFLA_LINK_NETNSID` in use that is not resolved yet, by asking each
    /// namespace's socket what it calls each other namespace (the host's first: most veths
    /// lead there).
    async fn resolve_nsids(&mut self) {
        let candidates: Vec<Namespace> = self
            .namespaces
            .values()
            .filter_map(|e| e.namespace.clone())
            .collect();
        for entry in self.namespaces.values_mut() {
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
                        break;
                    }
                }
            }
        }
    }

    /// Re-reads veths whose peer cannot be found. The kernel sends no notification for the end
    /// that stays when its peer moves to another namespace, so that end still names the peer's
    /// old index until it is read again.
    async fn refetch_unpaired_veths(&mut self) {
        let mut stale = Vec::new();
        for (name, entry) in &self.namespaces {
            let Some(view) = &entry.view else { continue };
            for link in view
                .links
                .values()
                .filter(|l| l.kind.as_deref() == Some("veth"))
            {
                let Some(peer) = link.link else { continue };
                let peer_ns = match link.link_netnsid {
                    None => Some(name),
                    Some(nsid) => entry.nsids.get(&nsid),
                };
                let found = peer_ns
                    .and_then(|ns| self.namespaces.get(ns))
                    .and_then(|e| e.view.as_ref())
                    .is_some_and(|v| v.links.contains_key(&peer));
                if !found {
                    stale.push((name.clone(), link.ifindex));
                }
            }
        }
        for (name, ifindex) in stale {
            let Some(entry) = self.namespaces.get_mut(&name) else {
                continue;
            };
            let (Some(handle), Some(view)) = (&entry.handle, entry.view.as_mut()) else {
                continue;
            };
            match rtnl::get_link(handle, ifindex).await {
                Some(facts) => view.links.insert(ifindex, facts),
                None => view.links.remove(&ifindex),
            };
        }
    }

    /// Namespace ids are only meaningful while the set of namespaces stays the same.
    fn forget_nsids(&mut self) {
        for entry in self.namespaces.values_mut() {
            entry.nsids.clear();
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
            if link.kind.is_none() && !link.loopback && sys.is_physical(&link.name) {
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
        self.extras = extras;
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
                rtnl::follow(namespace, generation, updates, stop).await;
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
            for namespace in namespaces {
                let opened = namespace
                    .run_inside(runtime.clone(), rtnetlink::new_connection)
                    .map_err(failed)?;
                let (connection, handle, _) = opened;
                let connection = tokio::spawn(connection);
                let view = rtnl::dump(&handle).await.map_err(failed)?;
                let entry = NsEntry {
                    namespace: Some(namespace.clone()),
                    view: Some(view),
                    handle: Some(handle),
                    nsids: BTreeMap::new(),
                };
                state.namespaces.insert(namespace.name.clone(), entry);
                drop(connection);
            }
            state.resolve_nsids().await;
            state
                .refresh_extras(self.options.own_sys(), &mut ethtool_handle())
                .await;
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
        let mut extras_stale = true;
        let mut veth_churn = false;

        loop {
            // Wait for the first event of a batch.
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                Some((generation, update)) = updates.recv() => {
                    veth_churn |= touches_veth(&state, &update);
                        extras_stale |= apply(&mut state, &following, generation, update);
                }
                Some(event) = dir_events.recv() => apply_dir(&mut state, &mut following, event),
                _ = refresh.tick() => {
                    redump(&mut state).await;
                    extras_stale = true;
                }
            }
            // Gather the rest of the batch.
            let deadline = Instant::now() + self.options.coalesce_max;
            loop {
                let quiet_until = (Instant::now() + self.options.coalesce_quiet).min(deadline);
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    Some((generation, update)) = updates.recv() => {
                        veth_churn |= touches_veth(&state, &update);
                        extras_stale |= apply(&mut state, &following, generation, update);
                    }
                    Some(event) = dir_events.recv() => apply_dir(&mut state, &mut following, event),
                    () = tokio::time::sleep_until(quiet_until) => break,
                }
            }
            state.resolve_nsids().await;
            if veth_churn {
                state.refetch_unpaired_veths().await;
                state.resolve_nsids().await;
                veth_churn = false;
            }
            if extras_stale {
                state
                    .refresh_extras(self.options.own_sys(), &mut ethtool)
                    .await;
                extras_stale = false;
            }
            outbox
                .replace_all(NAME, state.objects(&self.scope))
                .map_err(failed)?;
        }
    }
}

/// Whether an update adds, changes or removes a veth (whose peer may then need re-reading).
fn touches_veth(state: &State, update: &NsUpdate) -> bool {
    match update {
        NsUpdate::Link(_, facts) => facts.kind.as_deref() == Some("veth"),
        NsUpdate::LinkRemoved(name, ifindex) => state
            .namespaces
            .get(name)
            .and_then(|e| e.view.as_ref())
            .and_then(|v| v.links.get(ifindex))
            .is_some_and(|l| l.kind.as_deref() == Some("veth")),
        NsUpdate::Full { .. } | NsUpdate::Ended(_) => true,
        _ => false,
    }
}

/// Applies a follower's update; returns whether host NIC facts may need re-reading.
fn apply(state: &mut State, following: &Following, generation: u64, update: NsUpdate) -> bool {
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
            state.namespaces.insert(name, entry);
            state.forget_nsids();
            false
        }
        NsUpdate::Ended(_) => {
            state.namespaces.remove(&name);
            state.forget_nsids();
            false
        }
        NsUpdate::Full { view, handle, .. } => {
            if let Some(entry) = state.namespaces.get_mut(&name) {
                entry.view = Some(view);
                entry.handle = Some(handle);
                entry.nsids.clear();
            }
            host_ns
        }
        link_or_address => {
            let is_link = matches!(
                link_or_address,
                NsUpdate::Link(..) | NsUpdate::LinkRemoved(..)
            );
            let view = state
                .namespaces
                .get_mut(&name)
                .and_then(|e| e.view.as_mut());
            let changed = view.is_some_and(|view| view.apply(link_or_address));
            host_ns && is_link && changed
        }
    }
}

fn apply_dir(state: &mut State, following: &mut Following, event: DirEvent) {
    match event {
        DirEvent::Listing(names) => {
            let listed: BTreeSet<NsName> = names.into_iter().map(Some).collect();
            let gone: Vec<NsName> = following
                .followers
                .keys()
                .filter(|n| n.is_some() && !listed.contains(*n))
                .cloned()
                .collect();
            for name in gone {
                following.stop(&name);
                state.namespaces.remove(&name);
            }
            for name in listed {
                following.start(name);
            }
        }
        DirEvent::Added(name) => following.start(Some(name)),
        DirEvent::Removed(name) => {
            let name = Some(name);
            following.stop(&name);
            state.namespaces.remove(&name);
        }
    }
    state.forget_nsids();
}

/// Dumps every followed namespace again through its socket.
async fn redump(state: &mut State) {
    for (name, entry) in &mut state.namespaces {
        let Some(handle) = &entry.handle else {
            continue;
        };
        match rtnl::dump(handle).await {
            Ok(view) => entry.view = Some(view),
            Err(err) => tracing::warn!(netns = netns::ns_label(name), %err, "periodic dump failed"),
        }
    }
}
