//! Link finders and the incremental link set.
//!
//! Every link is *produced* by one of its ends (its origin: a vNIC produces its
//! `vnic-vconnector` link from its `master`), by a [`LinkFinder`] that reads the partner objects
//! only through a [`Reader`]. The reader records what was read — an object by id, or a
//! [`Lookup`] such as "objects holding 10.0.0.2" — and the [`LinkSet`] keeps those records as
//! watches. When objects change, only the producers that are the changed objects themselves or
//! that watched them run again, so a delta costs what it touches, not the size of the
//! environment. A full build runs every producer once and gives the same set (tested).
//!
//! The families, one module each: [`interfaces`] (what a kernel interface is plugged into),
//! [`vswitch`] (Open vSwitch ports, bridges, uplinks, tunnels), [`overlay`] (tunnel endpoints
//! and what carries them), [`cloud`] (physical NICs to Neutron networks), [`fabric`] (physical
//! switches).

mod cloud;
mod fabric;
mod interfaces;
mod overlay;
mod vswitch;

use rustc_hash::{FxHashMap, FxHashSet};

use calipso_proto::{AttrMap, AttrValue, Link, LinkType, ObjectId, ObjectType};
use serde::{Deserialize, Serialize};

use crate::graph::{Graph, Lookup, Node, lookups_of};
use crate::idset::{IdSet, index_by_key};
use crate::parallel::{alongside, map_on_all_cores};
use smallvec::SmallVec;

/// What identifies a link: its type and its ends. Links of a type that is its own reverse
/// (`otep-otep`, `vnic-vnic`) are stored with the smaller id as source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LinkKey {
    pub link_type: LinkType,
    pub source: ObjectId,
    pub target: ObjectId,
}

impl LinkKey {
    pub fn of(link: &Link) -> Self {
        LinkKey {
            link_type: link.link_type,
            source: link.source.clone(),
            target: link.target.clone(),
        }
    }
}

impl std::fmt::Display for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}->{}", self.link_type, self.source, self.target)
    }
}

/// Something a producer read, and so something whose change makes it run again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Watch {
    /// Any change of the object.
    Object(ObjectId),
    /// Its appearance, disappearance, or a change of its name or state: all a finder reads of
    /// a partner it only links to (a vNIC of its vswitch), so that a change elsewhere in a
    /// 2 000-port vedge does not re-derive 2 000 vNICs.
    Presence(ObjectId),
    Lookup(Lookup),
}

/// What a [`Watch::Presence`] watches.
pub type Presence = (calipso_proto::LinkState, String);

/// The presence of a node: its state and name.
pub fn presence_of(node: &Node) -> Presence {
    (node.state(), node.object.name.clone())
}

/// The graph as a finder sees it: every read is recorded as a watch.
#[derive(Debug)]
pub struct Reader<'g> {
    graph: &'g Graph,
    watches: Vec<Watch>,
}

impl<'g> Reader<'g> {
    fn new(graph: &'g Graph) -> Self {
        Reader {
            graph,
            watches: Vec::new(),
        }
    }

    /// The object with this id, if it exists.
    pub fn object(&mut self, id: &ObjectId) -> Option<&'g Node> {
        self.watches.push(Watch::Object(id.clone()));
        self.graph.get(id)
    }

    /// The object with this id, for reading only its id, type, host, name and state (what a
    /// link to it needs); other attributes must be read with [`Reader::object`].
    pub fn endpoint(&mut self, id: &ObjectId) -> Option<&'g Node> {
        self.watches.push(Watch::Presence(id.clone()));
        self.graph.get(id)
    }

    /// Like [`Reader::referenced`], for a partner read as an [`Reader::endpoint`].
    pub fn referenced_endpoint(
        &mut self,
        node: &Node,
        key: &str,
        object_type: ObjectType,
    ) -> Option<&'g Node> {
        let id = node.reference(key)?;
        self.endpoint(&id)
            .filter(|n| n.object_type() == object_type)
    }

    /// The objects found by a lookup, read as endpoints.
    pub fn find_endpoints(&mut self, lookup: Lookup) -> Vec<&'g Node> {
        let found: Vec<&'g Node> = self.graph.find(&lookup).collect();
        self.watches.push(Watch::Lookup(lookup));
        self.watches
            .extend(found.iter().map(|n| Watch::Presence(n.id().clone())));
        found
    }

    /// The object a reference attribute of `node` names, if it exists and has the type.
    pub fn referenced(
        &mut self,
        node: &Node,
        key: &str,
        object_type: ObjectType,
    ) -> Option<&'g Node> {
        let id = node.reference(key)?;
        self.object(&id).filter(|n| n.object_type() == object_type)
    }

    /// The objects found by a lookup, each watched for its changes.
    pub fn find(&mut self, lookup: Lookup) -> Vec<&'g Node> {
        let found: Vec<&'g Node> = self.graph.find(&lookup).collect();
        self.watches.push(Watch::Lookup(lookup));
        self.watches
            .extend(found.iter().map(|n| Watch::Object(n.id().clone())));
        found
    }
}

/// One rule that derives links from an object of its origin type.
pub trait LinkFinder: Send + Sync + std::fmt::Debug {
    /// The type of the objects this finder produces links for.
    fn origin(&self) -> ObjectType;
    /// The link types it produces.
    fn produces(&self) -> Vec<LinkType>;
    /// Whether its links carry traffic only when both ends derive them (a tunnel is configured
    /// on both hosts); the link set then marks a link one end derives as one-sided and down.
    fn needs_both_ends(&self) -> bool {
        false
    }
    /// Appends the links `node` originates, reading other objects only through `reader`.
    fn find(&self, node: &Node, reader: &mut Reader<'_>, out: &mut Vec<Link>);
}

/// Every finder, by origin type.
#[derive(Debug)]
pub struct Finders {
    by_origin: FxHashMap<ObjectType, Vec<Box<dyn LinkFinder>>>,
    /// The link types that carry traffic only when both ends derive them.
    both_ends: Vec<LinkType>,
}

impl Default for Finders {
    fn default() -> Self {
        let all: Vec<Box<dyn LinkFinder>> = interfaces::finders()
            .into_iter()
            .chain(vswitch::finders())
            .chain(overlay::finders())
            .chain(cloud::finders())
            .chain(fabric::finders())
            .collect();
        let mut by_origin: FxHashMap<ObjectType, Vec<Box<dyn LinkFinder>>> = FxHashMap::default();
        let mut both_ends = Vec::new();
        for finder in all {
            if finder.needs_both_ends() {
                both_ends.extend(finder.produces());
            }
            by_origin.entry(finder.origin()).or_default().push(finder);
        }
        Finders {
            by_origin,
            both_ends,
        }
    }
}

impl Finders {
    /// The link types some finder produces.
    pub fn link_types(&self) -> Vec<LinkType> {
        let mut types: Vec<LinkType> = self
            .by_origin
            .values()
            .flatten()
            .flat_map(|f| f.produces())
            .collect();
        types.sort();
        types.dedup();
        types
    }

    /// The links `node` originates (each once) and what was read to find them.
    fn run(&self, node: &Node, graph: &Graph) -> (Vec<Link>, Vec<Watch>) {
        let Some(finders) = self.by_origin.get(&node.object_type()) else {
            return (Vec::new(), Vec::new());
        };
        let mut reader = Reader::new(graph);
        let mut links: Vec<Link> = Vec::new();
        for finder in finders {
            finder.find(node, &mut reader, &mut links);
        }
        dedup(&mut links, |l| {
            (l.link_type, l.source.clone(), l.target.clone())
        });
        let mut watches = reader.watches;
        watches.retain(|w| !matches!(w, Watch::Object(id) if id == node.id()));
        dedup(&mut watches, Watch::clone);
        let unique = watches;
        (links, unique)
    }
}

/// Drops later duplicates (by `key`), keeping the order; linear for the few items a producer
/// usually has, hashed for the many of a tunnel endpoint with dozens of peers.
fn dedup<T, K: std::hash::Hash + Eq>(items: &mut Vec<T>, key: impl Fn(&T) -> K) {
    if items.len() <= 16 {
        let mut index = 0;
        while index < items.len() {
            let current = key(&items[index]);
            if items[..index].iter().any(|earlier| key(earlier) == current) {
                items.remove(index);
            } else {
                index += 1;
            }
        }
    } else {
        let mut seen = FxHashSet::with_capacity_and_hasher(items.len(), Default::default());
        items.retain(|item| seen.insert(key(item)));
    }
}

/// What one producer derived, kept to undo it when the producer runs again.
#[derive(Debug, Default)]
struct Production {
    links: Vec<LinkKey>,
    watches: Vec<Watch>,
}

#[derive(Debug)]
struct Entry {
    link: Link,
    /// How many producers derive this link (two for a link both ends agree on, such as
    /// otep-otep); each computes it from both ends, so they agree on its content.
    producers: u32,
}

/// How one object changed, as the link set needs to know it.
#[derive(Debug, Clone)]
pub struct Touched {
    pub id: ObjectId,
    /// The lookups it was found by before the change (empty if it is new).
    pub lookups_before: Vec<Lookup>,
    /// Its presence before the change (`None` if it is new).
    pub presence_before: Option<Presence>,
}

impl Touched {
    /// Records `node` (its state before a change) as about to change.
    pub fn before(id: ObjectId, node: Option<&Node>) -> Self {
        Touched {
            id,
            lookups_before: node.map(lookups_of).unwrap_or_default(),
            presence_before: node.map(presence_of),
        }
    }
}

/// The links that changed in one update.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LinkChanges {
    /// New links and links whose state or attributes changed.
    pub upserted: Vec<Link>,
    pub removed: Vec<LinkKey>,
}

impl LinkChanges {
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty()
    }
}

/// The links changed so far in one update: their version before it (`None`: did not exist).
type Before = FxHashMap<LinkKey, Option<Link>>;

/// The links of one environment, kept up to date incrementally.
#[derive(Debug, Default)]
pub struct LinkSet {
    finders: Finders,
    links: FxHashMap<LinkKey, Entry>,
    /// An object's links by type: what a clique walk asks for. Most objects have one link of
    /// a type, kept inline.
    by_end: FxHashMap<(ObjectId, LinkType), SmallVec<[LinkKey; 1]>>,
    productions: FxHashMap<ObjectId, Production>,
    watchers: FxHashMap<Watch, IdSet>,
}

impl LinkSet {
    /// Every link of the graph, from scratch.
    ///
    /// The finders run on every core (they only read the graph). Their results are then
    /// recorded by two threads at once: one holds the links and their ends, the other indexes
    /// the watches — two sets of maps that share nothing. The content is what recording node
    /// after node would give.
    pub fn build(graph: &Graph) -> Self {
        let mut set = LinkSet::default();
        let nodes: Vec<&Node> = graph.nodes().collect();
        let finders = &set.finders;
        let derived = map_on_all_cores(&nodes, |node| finders.run(node, graph));
        // Sized once: growing these maps link by link cost a fifth of a full build in
        // rehashing and page faults.
        let (links, watches) = derived.iter().fold((0, 0), |(l, w), (links, watches)| {
            (l + links.len(), w + watches.len())
        });
        set.links.reserve(links);
        set.by_end.reserve(links);
        set.productions.reserve(nodes.len());
        let (link_lists, watch_lists): (Vec<Vec<Link>>, Vec<Vec<Watch>>) =
            derived.into_iter().unzip();
        let (keys, watchers) = alongside(
            || {
                link_lists
                    .into_iter()
                    .map(|links| links.into_iter().map(|l| set.hold(l, None)).collect())
                    .collect::<Vec<Vec<LinkKey>>>()
            },
            || index_by_key(nodes.iter().map(|n| n.id()), &watch_lists, watches),
        );
        set.watchers = watchers;
        for ((node, links), watches) in nodes.iter().zip(keys).zip(watch_lists) {
            if !links.is_empty() || !watches.is_empty() {
                set.productions
                    .insert(node.id().clone(), Production { links, watches });
            }
        }
        set
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn get(&self, key: &LinkKey) -> Option<&Link> {
        self.links.get(key).map(|e| &e.link)
    }

    /// Every link, in no particular order.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values().map(|e| &e.link)
    }

    /// The links of a type with `id` at either end.
    pub fn incident_of_type(
        &self,
        id: &ObjectId,
        link_type: LinkType,
    ) -> impl Iterator<Item = &Link> {
        self.by_end
            .get(&(id.clone(), link_type))
            .into_iter()
            .flatten()
            .filter_map(|k| self.links.get(k).map(|e| &e.link))
    }

    /// The links with `id` at either end.
    pub fn incident<'a>(&'a self, id: &'a ObjectId) -> impl Iterator<Item = &'a Link> + 'a {
        LinkType::declared().flat_map(move |link_type| self.incident_of_type(id, link_type))
    }

    /// Brings the links up to date with objects that changed in `graph` (already applied).
    pub fn update(&mut self, graph: &Graph, touched: &[Touched]) -> LinkChanges {
        let mut dirty: FxHashSet<ObjectId> = FxHashSet::default();
        for change in touched {
            dirty.insert(change.id.clone());
            let watch = Watch::Object(change.id.clone());
            dirty.extend(self.watchers.get(&watch).into_iter().flatten().cloned());
            if graph.get(&change.id).map(presence_of) != change.presence_before {
                let watch = Watch::Presence(change.id.clone());
                dirty.extend(self.watchers.get(&watch).into_iter().flatten().cloned());
            }
            let after = graph.get(&change.id).map(lookups_of).unwrap_or_default();
            let before: FxHashSet<&Lookup> = change.lookups_before.iter().collect();
            let after_set: FxHashSet<&Lookup> = after.iter().collect();
            for lookup in before.symmetric_difference(&after_set) {
                let watch = Watch::Lookup((*lookup).clone());
                dirty.extend(self.watchers.get(&watch).into_iter().flatten().cloned());
            }
        }
        let mut before = Before::default();
        let mut dirty: Vec<ObjectId> = dirty.into_iter().collect();
        dirty.sort();
        for id in &dirty {
            self.reproduce(id, graph, Some(&mut before));
        }
        let mut changes = LinkChanges::default();
        let mut keys: Vec<LinkKey> = before.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let old = before.get(&key).and_then(Option::as_ref);
            match (old, self.links.get(&key)) {
                (Some(_), None) => changes.removed.push(key),
                (old, Some(entry)) if old != Some(&entry.link) => {
                    changes.upserted.push(entry.link.clone());
                }
                _ => {}
            }
        }
        changes
    }

    /// Undoes what `producer` derived last time and derives it again from the graph,
    /// recording in `before` the prior version of every link it touches (a full build
    /// records nothing).
    fn reproduce(&mut self, producer: &ObjectId, graph: &Graph, mut before: Option<&mut Before>) {
        if let Some(old) = self.productions.remove(producer) {
            for watch in old.watches {
                if let Some(set) = self.watchers.get_mut(&watch) {
                    set.remove(producer);
                    if set.is_empty() {
                        self.watchers.remove(&watch);
                    }
                }
            }
            for key in old.links {
                self.release(key, before.as_deref_mut());
            }
        }
        let Some(node) = graph.get(producer) else {
            return;
        };
        let (links, watches) = self.finders.run(node, graph);
        self.record(producer, links, watches, before);
    }

    /// Records what `producer` derived: its links held, its reads watched.
    fn record(
        &mut self,
        producer: &ObjectId,
        links: Vec<Link>,
        watches: Vec<Watch>,
        mut before: Option<&mut Before>,
    ) {
        for watch in &watches {
            self.watchers
                .entry(watch.clone())
                .or_default()
                .insert(producer.clone());
        }
        let mut keys = Vec::with_capacity(links.len());
        for link in links {
            keys.push(self.hold(link, before.as_deref_mut()));
        }
        if !keys.is_empty() || !watches.is_empty() {
            self.productions.insert(
                producer.clone(),
                Production {
                    links: keys,
                    watches,
                },
            );
        }
    }

    fn release(&mut self, key: LinkKey, before: Option<&mut Before>) {
        let both_ends = self.finders.both_ends.contains(&key.link_type);
        let Some(entry) = self.links.get_mut(&key) else {
            return;
        };
        if let Some(before) = before {
            before
                .entry(key.clone())
                .or_insert_with(|| Some(entry.link.clone()));
        }
        entry.producers -= 1;
        if both_ends {
            confirm(&mut entry.link, entry.producers);
        }
        if entry.producers == 0 {
            self.links.remove(&key);
            for end in [&key.source, &key.target] {
                let slot = (end.clone(), key.link_type);
                if let Some(keys) = self.by_end.get_mut(&slot) {
                    keys.retain(|k| k != &key);
                    if keys.is_empty() {
                        self.by_end.remove(&slot);
                    }
                }
            }
        }
    }

    fn hold(&mut self, link: Link, before: Option<&mut Before>) -> LinkKey {
        let key = LinkKey::of(&link);
        let both_ends = self.finders.both_ends.contains(&key.link_type);
        match self.links.get_mut(&key) {
            Some(entry) => {
                if let Some(before) = before {
                    before
                        .entry(key.clone())
                        .or_insert_with(|| Some(entry.link.clone()));
                }
                entry.producers += 1;
                // The latest derivation wins; both producers read both ends, so they agree.
                entry.link = link;
                if both_ends {
                    confirm(&mut entry.link, entry.producers);
                }
            }
            None => {
                if let Some(before) = before {
                    before.entry(key.clone()).or_insert(None);
                }
                let ends: &[&ObjectId] = if key.source == key.target {
                    &[&key.source]
                } else {
                    &[&key.source, &key.target]
                };
                for end in ends {
                    self.by_end
                        .entry(((*end).clone(), key.link_type))
                        .or_default()
                        .push(key.clone());
                }
                let mut link = link;
                if both_ends {
                    confirm(&mut link, 1);
                }
                self.links.insert(key.clone(), Entry { link, producers: 1 });
            }
        }
        key
    }
}

/// For a link both ends must derive (a tunnel), records whether both did: one only one end
/// derives is marked one-sided and down.
fn confirm(link: &mut Link, producers: u32) {
    let both = producers >= 2;
    link.attributes
        .insert("bidirectional", AttrValue::Bool(both));
    if !both {
        link.state = calipso_proto::LinkState::Down;
    }
}

/// A link between two objects: its state from both ends, its host if both share one.
fn link_between(source: &Node, target: &Node) -> Link {
    let host = match (&source.object.host, &target.object.host) {
        (Some(a), Some(b)) if a == b => Some(a.clone()),
        _ => None,
    };
    Link {
        source: source.id().clone(),
        target: target.id().clone(),
        link_type: LinkType::new(source.object_type(), target.object_type()),
        state: source.state().and(target.state()),
        host,
        implicit: false,
        attributes: AttrMap::new(),
    }
}

/// A link of a type that is its own reverse, with the smaller id as source so that both ends
/// derive the same link.
fn symmetric_link(a: &Node, b: &Node) -> Link {
    if a.id() <= b.id() {
        link_between(a, b)
    } else {
        link_between(b, a)
    }
}

/// Sets the link's display name and end labels, as the original's links carry them.
fn named(mut link: Link, name: String, labels: Option<(String, String)>) -> Link {
    link.attributes.insert("link_name", AttrValue::Str(name));
    if let Some((source, target)) = labels {
        link.attributes
            .insert("source_label", AttrValue::Str(source));
        link.attributes
            .insert("target_label", AttrValue::Str(target));
    }
    link
}

/// Marks a link with the network it carries: the constraint key of `network` cliques.
fn on_network(mut link: Link, network: Option<String>) -> Link {
    if let Some(network) = network {
        link.attributes.insert("network", AttrValue::Str(network));
    }
    link
}

#[cfg(test)]
pub(crate) mod tests;
