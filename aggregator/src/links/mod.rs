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

use std::hash::BuildHasher;

use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

use calipso_proto::{AttrMap, AttrValue, CompactString, Link, LinkType, ObjectId, ObjectType};
use serde::{Deserialize, Serialize};

use crate::graph::{Graph, Lookup, Node, lookups_of};
use crate::interner::{Interner, Ix};
use crate::parallel::{alongside, map_on_all_cores_keeping};
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
enum Read {
    /// Any change of the object.
    Object(ObjectId),
    /// Its appearance, disappearance, or a change of its name or state: all a finder reads of
    /// a partner it only links to (a vNIC of its vswitch), so that a change elsewhere in a
    /// 2 000-port vedge does not re-derive 2 000 vNICs.
    Presence(ObjectId),
    Lookup(Lookup),
}

/// What a [`Read::Presence`] watches.
pub type Presence = (calipso_proto::LinkState, CompactString);

/// The presence of a node: its state and name.
pub fn presence_of(node: &Node) -> Presence {
    (node.state(), node.object.name.clone())
}

/// The graph as a finder sees it: every read is recorded.
#[derive(Debug)]
pub struct Reader<'g> {
    graph: &'g Graph,
    reads: Vec<Read>,
}

impl<'g> Reader<'g> {
    /// The object with this id (or its text), and the id to record the read under: the
    /// graph's own copy when the object exists, so that the link set shares its string rather
    /// than keeping one made from an attribute.
    fn look_up<Id>(&self, id: &Id) -> (Option<&'g Node>, ObjectId)
    where
        Id: AsRef<str> + ?Sized,
    {
        let found = self.graph.get_by_text(id.as_ref());
        let recorded = found.map_or_else(|| ObjectId::from_raw(id.as_ref()), |n| n.id().clone());
        (found, recorded)
    }

    /// The object with this id, if it exists.
    pub fn object<Id: AsRef<str> + ?Sized>(&mut self, id: &Id) -> Option<&'g Node> {
        let (found, recorded) = self.look_up(id);
        self.reads.push(Read::Object(recorded));
        found
    }

    /// The object with this id, for reading only its id, type, host, name and state (what a
    /// link to it needs); other attributes must be read with [`Reader::object`].
    pub fn endpoint<Id: AsRef<str> + ?Sized>(&mut self, id: &Id) -> Option<&'g Node> {
        let (found, recorded) = self.look_up(id);
        self.reads.push(Read::Presence(recorded));
        found
    }

    /// Like [`Reader::referenced`], for a partner read as an [`Reader::endpoint`].
    pub fn referenced_endpoint(
        &mut self,
        node: &Node,
        key: &str,
        object_type: ObjectType,
    ) -> Option<&'g Node> {
        self.endpoint(node.text(key)?)
            .filter(|n| n.object_type() == object_type)
    }

    /// The objects found by a lookup, read as endpoints.
    pub fn find_endpoints(&mut self, lookup: Lookup) -> Vec<&'g Node> {
        let found: Vec<&'g Node> = self.graph.find(&lookup).collect();
        self.reads.push(Read::Lookup(lookup));
        self.reads
            .extend(found.iter().map(|n| Read::Presence(n.id().clone())));
        found
    }

    /// The object a reference attribute of `node` names, if it exists and has the type.
    pub fn referenced(
        &mut self,
        node: &Node,
        key: &str,
        object_type: ObjectType,
    ) -> Option<&'g Node> {
        self.object(node.text(key)?)
            .filter(|n| n.object_type() == object_type)
    }

    /// The objects found by a lookup, each watched for its changes.
    pub fn find(&mut self, lookup: Lookup) -> Vec<&'g Node> {
        let found: Vec<&'g Node> = self.graph.find(&lookup).collect();
        self.reads.push(Read::Lookup(lookup));
        self.reads
            .extend(found.iter().map(|n| Read::Object(n.id().clone())));
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

/// Every finder, by origin type (indexed by the type's place in [`ObjectType::ALL`]: a finder
/// set is asked once per object of a build).
#[derive(Debug)]
pub struct Finders {
    by_origin: Vec<Vec<Box<dyn LinkFinder>>>,
}

impl Default for Finders {
    fn default() -> Self {
        let mut by_origin: Vec<Vec<Box<dyn LinkFinder>>> =
            ObjectType::ALL.iter().map(|_| Vec::new()).collect();
        let all = interfaces::finders()
            .into_iter()
            .chain(vswitch::finders())
            .chain(overlay::finders())
            .chain(cloud::finders())
            .chain(fabric::finders());
        for finder in all {
            by_origin[finder.origin() as usize].push(finder);
        }
        Finders { by_origin }
    }
}

impl Finders {
    /// The link types some finder produces.
    pub fn link_types(&self) -> Vec<LinkType> {
        let mut types: Vec<LinkType> = self
            .by_origin
            .iter()
            .flatten()
            .flat_map(|f| f.produces())
            .collect();
        types.sort();
        types.dedup();
        types
    }

    /// The link types that carry traffic only when both ends derive them.
    fn needing_both_ends(&self) -> Vec<LinkType> {
        self.by_origin
            .iter()
            .flatten()
            .filter(|f| f.needs_both_ends())
            .flat_map(|f| f.produces())
            .collect()
    }

    /// The links `node` originates (each once) and what was read to find them.
    fn run<'s>(&self, node: &Node, graph: &Graph, scratch: &'s mut Scratch) -> Derived<'s> {
        scratch.reads.clear();
        scratch.links.clear();
        let mut reader = Reader {
            graph,
            reads: std::mem::take(&mut scratch.reads),
        };
        for finder in &self.by_origin[node.object_type() as usize] {
            finder.find(node, &mut reader, &mut scratch.links);
        }
        scratch.reads = reader.reads;
        dedup(
            &mut scratch.links,
            |a, b| a.link_type == b.link_type && a.source == b.source && a.target == b.target,
            |l| FxBuildHasher.hash_one((l.link_type, &l.source, &l.target)),
        );
        scratch
            .reads
            .retain(|r| !matches!(r, Read::Object(id) if id == node.id()));
        dedup(&mut scratch.reads, Read::eq, |r| FxBuildHasher.hash_one(r));
        Derived {
            links: &mut scratch.links,
            reads: &scratch.reads,
        }
    }
}

/// The buffers finders fill, kept from one producer to the next: a full build would otherwise
/// allocate (and fault in fresh pages for) two growing vectors per object. Links are moved on
/// into [`Resolutions`]; reads are only looked at, and kept only as the watches they become.
#[derive(Debug, Default)]
struct Scratch {
    links: Vec<Link>,
    reads: Vec<Read>,
}

/// What one producer derived, as its finders returned it, in the scratch buffers.
#[derive(Debug)]
struct Derived<'s> {
    links: &'s mut Vec<Link>,
    reads: &'s [Read],
}

impl Derived<'_> {
    fn is_empty(&self) -> bool {
        self.links.is_empty() && self.reads.is_empty()
    }
}

/// Drops later duplicates (by `same`, with `hash` agreeing), keeping the order: compared in
/// place for the handful a producer usually has, through a table of positions for the many of
/// a tunnel endpoint with hundreds of peers. Nothing is copied out as a key.
fn dedup<T>(items: &mut Vec<T>, same: impl Fn(&T, &T) -> bool, hash: impl Fn(&T) -> u64) {
    if items.len() <= 16 {
        let mut index = 0;
        while index < items.len() {
            if items[..index]
                .iter()
                .any(|earlier| same(earlier, &items[index]))
            {
                items.remove(index);
            } else {
                index += 1;
            }
        }
        return;
    }
    let mut seen: hashbrown::HashTable<usize> = hashbrown::HashTable::with_capacity(items.len());
    let first: Vec<bool> = (0..items.len())
        .map(|index| {
            let item = &items[index];
            let key = hash(item);
            let repeated = seen
                .find(key, |&earlier| same(&items[earlier], item))
                .is_some();
            if !repeated {
                seen.insert_unique(key, index, |&earlier| hash(&items[earlier]));
            }
            !repeated
        })
        .collect();
    let mut keep = first.into_iter();
    items.retain(|_| keep.next().unwrap_or(false));
}

/// A number found, or the id to number.
#[derive(Debug)]
enum End {
    Known(Ix),
    New(ObjectId),
}

/// What producers derived, with the numbers of what it names found where they exist (nothing
/// is held yet), in producer order: the links, their ends, the reads found numbered (as
/// watches) and the reads left to number (in a full build, the lookups: only objects are
/// numbered ahead), each in one vector for all producers of a thread. Per producer, a build
/// would allocate four small vectors on the finder threads, and leave their freed blocks
/// among the links' attributes, which live on.
#[derive(Debug, Default)]
struct Resolutions {
    links: Vec<Link>,
    ends: Vec<(End, End)>,
    watches: Vec<Watch>,
    unnumbered: Vec<Read>,
}

/// One producer's share of its [`Resolutions`]: how many of each it added.
#[derive(Debug)]
struct Resolved {
    producer: End,
    links: usize,
    watches: usize,
    unnumbered: usize,
}

/// [`Resolutions`] taken back in producer order, one [`Resolved`] share at a time.
struct Taking {
    links: std::vec::IntoIter<Link>,
    ends: std::vec::IntoIter<(End, End)>,
    watches: std::vec::IntoIter<Watch>,
    unnumbered: std::vec::IntoIter<Read>,
}

impl From<Resolutions> for Taking {
    fn from(resolutions: Resolutions) -> Self {
        Taking {
            links: resolutions.links.into_iter(),
            ends: resolutions.ends.into_iter(),
            watches: resolutions.watches.into_iter(),
            unnumbered: resolutions.unnumbered.into_iter(),
        }
    }
}

/// Numbered links to hold, in producer order, with their ends' numbers.
#[derive(Debug, Default)]
struct Holding {
    links: Vec<Link>,
    ends: Vec<(Ix, Ix)>,
}

/// A [`Read`] with its object or lookup numbered: what a producer watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Object(Ix),
    Presence(Ix),
    Lookup(Ix),
}

/// Producers (by number), in no particular order; most lists hold one.
type Producers = SmallVec<[Ix; 4]>;

fn remove_producer(list: &mut Producers, producer: Ix) {
    if let Some(at) = list.iter().position(|&p| p == producer) {
        list.swap_remove(at);
    }
}

/// The producers watching one object.
#[derive(Debug, Default)]
struct Watchers {
    /// Watching any change ([`Read::Object`]).
    changes: Producers,
    /// Watching its presence ([`Read::Presence`]).
    presence: Producers,
}

/// Who watches what: per object number and per lookup number.
#[derive(Debug, Default)]
struct WatchTable {
    objects: Vec<Watchers>,
    lookups: Vec<Producers>,
}

impl WatchTable {
    fn add(&mut self, watch: Watch, producer: Ix) {
        match watch {
            Watch::Object(ix) => self.objects[ix as usize].changes.push(producer),
            Watch::Presence(ix) => self.objects[ix as usize].presence.push(producer),
            Watch::Lookup(ix) => self.lookups[ix as usize].push(producer),
        }
    }

    fn remove(&mut self, watch: Watch, producer: Ix) {
        match watch {
            Watch::Object(ix) => remove_producer(&mut self.objects[ix as usize].changes, producer),
            Watch::Presence(ix) => {
                remove_producer(&mut self.objects[ix as usize].presence, producer)
            }
            Watch::Lookup(ix) => remove_producer(&mut self.lookups[ix as usize], producer),
        }
    }
}

/// What one producer derived, kept to undo it when the producer runs again: its links (by
/// number in the link table) and its watches.
#[derive(Debug, Default)]
struct Production {
    links: Box<[Ix]>,
    watches: Box<[Watch]>,
}

impl Production {
    fn is_empty(&self) -> bool {
        self.links.is_empty() && self.watches.is_empty()
    }
}

#[derive(Debug)]
struct Entry {
    link: Link,
    /// The numbers of its ends, held once per producer.
    source: Ix,
    target: Ix,
    /// How many producers derive this link (two for a link both ends agree on, such as
    /// otep-otep); each computes it from both ends, so they agree on its content.
    producers: u32,
}

/// The links, numbered: a slot per link, found by its numbered key and by its ends.
#[derive(Debug, Default)]
struct LinkTable {
    entries: Vec<Option<Entry>>,
    free: Vec<Ix>,
    by_key: FxHashMap<(Ix, Ix, LinkType), Ix>,
    /// Per object number, its links with their type, ordered by type: what a clique walk
    /// asks for. Most objects have one or two links.
    ends: Vec<SmallVec<[(LinkType, Ix); 2]>>,
    /// The link types that carry traffic only when both ends derive them.
    both_ends: Vec<LinkType>,
}

impl LinkTable {
    fn entry(&self, link: Ix) -> Option<&Entry> {
        self.entries.get(link as usize).and_then(Option::as_ref)
    }

    fn of_type(&self, end: Ix, link_type: LinkType) -> impl Iterator<Item = &Link> {
        let ends = &self.ends[end as usize];
        let first = ends.partition_point(|(t, _)| *t < link_type);
        ends[first..]
            .iter()
            .take_while(move |(t, _)| *t == link_type)
            .filter_map(|&(_, link)| self.entry(link).map(|e| &e.link))
    }

    fn add_end(&mut self, end: Ix, link_type: LinkType, link: Ix) {
        let ends = &mut self.ends[end as usize];
        let at = ends.partition_point(|(t, _)| *t <= link_type);
        ends.insert(at, (link_type, link));
    }

    fn remove_end(&mut self, end: Ix, link: Ix) {
        let ends = &mut self.ends[end as usize];
        if let Some(at) = ends.iter().position(|&(_, l)| l == link) {
            ends.remove(at);
        }
    }

    /// Adds one producer's derivation of `link` (its ends numbered `source` and `target`).
    fn hold(&mut self, link: Link, source: Ix, target: Ix, before: Option<&mut Before>) -> Ix {
        use std::collections::hash_map::Entry as Slot;
        let both_ends = self.both_ends.contains(&link.link_type);
        let link_type = link.link_type;
        let vacant = match self.by_key.entry((source, target, link_type)) {
            Slot::Occupied(keyed) => {
                let number = *keyed.get();
                let entry = self.entries[number as usize]
                    .as_mut()
                    .expect("a keyed link has its entry");
                remember(before, &entry.link);
                entry.producers += 1;
                // The latest derivation wins; both producers read both ends, so they agree.
                entry.link = link;
                if both_ends {
                    confirm(&mut entry.link, entry.producers);
                }
                return number;
            }
            Slot::Vacant(vacant) => vacant,
        };
        if let Some(before) = before {
            before.entry(LinkKey::of(&link)).or_insert(None);
        }
        let mut link = link;
        if both_ends {
            confirm(&mut link, 1);
        }
        let entry = Entry {
            link,
            source,
            target,
            producers: 1,
        };
        let number = match self.free.pop() {
            Some(number) => {
                self.entries[number as usize] = Some(entry);
                number
            }
            None => {
                self.entries.push(Some(entry));
                Ix::try_from(self.entries.len() - 1)
                    .expect("fewer than 2^32 links in one environment")
            }
        };
        vacant.insert(number);
        self.add_end(source, link_type, number);
        if target != source {
            self.add_end(target, link_type, number);
        }
        number
    }

    /// Removes one producer's derivation of link `number`; returns the numbers of its ends,
    /// which that derivation held.
    fn release(&mut self, number: Ix, before: Option<&mut Before>) -> Option<(Ix, Ix)> {
        let entry = self.entries.get_mut(number as usize)?.as_mut()?;
        remember(before, &entry.link);
        entry.producers -= 1;
        if self.both_ends.contains(&entry.link.link_type) {
            confirm(&mut entry.link, entry.producers);
        }
        let ends = (entry.source, entry.target);
        if entry.producers == 0 {
            let link_type = entry.link.link_type;
            self.entries[number as usize] = None;
            self.free.push(number);
            self.by_key.remove(&(ends.0, ends.1, link_type));
            self.remove_end(ends.0, number);
            if ends.1 != ends.0 {
                self.remove_end(ends.1, number);
            }
        }
        Some(ends)
    }
}

/// Records `link` as it was before the update, unless an earlier step of it already did.
fn remember(before: Option<&mut Before>, link: &Link) {
    if let Some(before) = before {
        before
            .entry(LinkKey::of(link))
            .or_insert_with(|| Some(link.clone()));
    }
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
    /// Links that did not exist.
    pub created: Vec<Link>,
    /// Links whose state or attributes changed.
    pub changed: Vec<Link>,
    pub removed: Vec<LinkKey>,
    /// Those of `changed` whose state went down or came back up.
    pub flipped: Vec<LinkKey>,
    /// Those of `flipped` that changed in nothing else: their cliques keep their members.
    pub state_only: Vec<LinkKey>,
}

impl LinkChanges {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// How many link versions the changes make.
    pub fn len(&self) -> usize {
        self.created.len() + self.changed.len() + self.removed.len()
    }

    /// The new versions: created and changed links.
    pub fn upserted(&self) -> impl Iterator<Item = &Link> {
        self.created.iter().chain(&self.changed)
    }

    /// Records `now` as created (no version `before`) or changed (one that differs).
    pub fn record(&mut self, before: Option<&Link>, now: &Link) {
        match before {
            None => self.created.push(now.clone()),
            Some(before) if before != now => {
                if before.state != now.state {
                    self.flipped.push(LinkKey::of(now));
                    let mut restated = before.clone();
                    restated.state = now.state;
                    if restated == *now {
                        self.state_only.push(LinkKey::of(now));
                    }
                }
                self.changed.push(now.clone());
            }
            Some(_) => {}
        }
    }

    /// Sorts each list by key.
    pub fn sort(&mut self) {
        self.created.sort_by_key(LinkKey::of);
        self.changed.sort_by_key(LinkKey::of);
        self.removed.sort();
        self.flipped.sort();
        self.state_only.sort();
    }
}

/// The links changed so far in one update: their version before it (`None`: did not exist).
type Before = FxHashMap<LinkKey, Option<Link>>;

/// The links of one environment, kept up to date incrementally.
///
/// Object ids and lookups are numbered ([`Interner`]) as long as something here refers to
/// them: a production (its producer), a watch (what it watches), a link (its ends, once per
/// producer deriving it). Every index is then a vector by number or a map of integers.
#[derive(Debug)]
pub struct LinkSet {
    finders: Finders,
    ids: Interner<ObjectId>,
    lookups: Interner<Lookup>,
    table: LinkTable,
    watchers: WatchTable,
    /// Per object number, what it produced.
    productions: Vec<Production>,
    scratch: Scratch,
}

impl Default for LinkSet {
    fn default() -> Self {
        let finders = Finders::default();
        let table = LinkTable {
            both_ends: finders.needing_both_ends(),
            ..LinkTable::default()
        };
        LinkSet {
            finders,
            ids: Interner::default(),
            lookups: Interner::default(),
            table,
            watchers: WatchTable::default(),
            productions: Vec::new(),
            scratch: Scratch::default(),
        }
    }
}

impl LinkSet {
    /// Every link of the graph, from scratch.
    ///
    /// The finders run on every core (they only read the graph). What they read and derived
    /// is then numbered on this thread, and recorded by two threads at once: one holds the
    /// links and their ends, the other the watches — tables that share nothing. The content
    /// is what recording node after node would give.
    pub fn build(graph: &Graph) -> Self {
        let mut set = LinkSet::default();
        let mut nodes: Vec<&Node> = graph.nodes().collect();
        Graph::in_memory_order(&mut nodes, |node| node);
        // Every object is numbered first, so that the finders' threads can number most of
        // what they read by looking it up; only holding (counting) is left to this thread.
        set.ids.reserve(nodes.len());
        for node in &nodes {
            set.ids.seed(node.id());
        }
        let parts = {
            let set = &set;
            map_on_all_cores_keeping(
                &nodes,
                || (Scratch::default(), Resolutions::default()),
                |(scratch, resolutions), node| {
                    let derived = set.finders.run(node, graph, scratch);
                    (!derived.is_empty()).then(|| set.resolve(node.id(), derived, resolutions))
                },
            )
        };
        let links = parts.iter().map(|((_, r), _)| r.links.len()).sum();
        let mut holding = Holding {
            links: Vec::with_capacity(links),
            ends: Vec::with_capacity(links),
        };
        let mut producers = Vec::new();
        let mut link_counts = Vec::new();
        let mut watch_lists = Vec::new();
        for ((_, resolutions), results) in parts {
            let mut taking = Taking::from(resolutions);
            for resolved in results.into_iter().flatten() {
                link_counts.push(resolved.links);
                let (producer, watches) = set.number(resolved, &mut taking, &mut holding);
                producers.push(producer);
                watch_lists.push(watches);
            }
        }
        set.ids.forget_unheld();
        set.fit_tables();
        // Sized once: growing these tables link by link cost a fifth of a build in rehashing.
        set.table.entries.reserve(links);
        set.table.by_key.reserve(links);
        let LinkSet {
            table, watchers, ..
        } = &mut set;
        let (link_numbers, ()) = alongside(
            || {
                let mut held = holding.links.into_iter().zip(holding.ends);
                link_counts
                    .iter()
                    .map(|&count| {
                        held.by_ref()
                            .take(count)
                            .map(|(link, (s, t))| table.hold(link, s, t, None))
                            .collect::<Box<[Ix]>>()
                    })
                    .collect::<Vec<_>>()
            },
            || {
                for (&producer, watches) in producers.iter().zip(&watch_lists) {
                    for &watch in watches.iter() {
                        watchers.add(watch, producer);
                    }
                }
            },
        );
        for ((producer, links), watches) in producers.into_iter().zip(link_numbers).zip(watch_lists)
        {
            set.productions[producer as usize] = Production { links, watches };
        }
        set
    }

    pub fn len(&self) -> usize {
        self.table.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.by_key.is_empty()
    }

    pub fn get(&self, key: &LinkKey) -> Option<&Link> {
        let source = self.ids.get(&key.source)?;
        let target = self.ids.get(&key.target)?;
        let number = self.table.by_key.get(&(source, target, key.link_type))?;
        self.table.entry(*number).map(|e| &e.link)
    }

    /// Every link, in no particular order.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.table.entries.iter().flatten().map(|e| &e.link)
    }

    /// The links of a type with `id` at either end.
    pub fn incident_of_type(
        &self,
        id: &ObjectId,
        link_type: LinkType,
    ) -> impl Iterator<Item = &Link> {
        self.ids
            .get(id)
            .into_iter()
            .flat_map(move |end| self.table.of_type(end, link_type))
    }

    /// The links with `id` at either end, by type.
    pub fn incident(&self, id: &ObjectId) -> impl Iterator<Item = &Link> {
        self.ids
            .get(id)
            .into_iter()
            .flat_map(move |end| self.table.ends[end as usize].iter())
            .filter_map(|&(_, link)| self.table.entry(link).map(|e| &e.link))
    }

    /// Brings the links up to date with objects that changed in `graph` (already applied).
    pub fn update(&mut self, graph: &Graph, touched: &[Touched]) -> LinkChanges {
        let mut dirty: FxHashSet<Ix> = FxHashSet::default();
        let mut unnumbered: Vec<ObjectId> = Vec::new();
        for change in touched {
            match self.ids.get(&change.id) {
                Some(number) => {
                    dirty.insert(number);
                    let watchers = &self.watchers.objects[number as usize];
                    dirty.extend(watchers.changes.iter().copied());
                    if graph.get(&change.id).map(presence_of) != change.presence_before {
                        dirty.extend(watchers.presence.iter().copied());
                    }
                }
                // Nothing refers to it: it can only be a producer that has not run yet.
                None => unnumbered.push(change.id.clone()),
            }
            let after = graph.get(&change.id).map(lookups_of).unwrap_or_default();
            let before: FxHashSet<&Lookup> = change.lookups_before.iter().collect();
            let after_set: FxHashSet<&Lookup> = after.iter().collect();
            for lookup in before.symmetric_difference(&after_set) {
                if let Some(number) = self.lookups.get(lookup) {
                    dirty.extend(self.watchers.lookups[number as usize].iter().copied());
                }
            }
        }
        // By id, not by number: reproducing frees and reuses numbers.
        let mut dirty: Vec<ObjectId> = dirty
            .into_iter()
            .map(|number| self.ids.key(number).clone())
            .chain(unnumbered)
            .collect();
        dirty.sort();
        dirty.dedup();
        let mut before = Before::default();
        for id in &dirty {
            self.reproduce(id, graph, &mut before);
        }
        let mut changes = LinkChanges::default();
        let mut keys: Vec<LinkKey> = before.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let old = before.get(&key).and_then(Option::as_ref);
            match (old, self.get(&key)) {
                (Some(_), None) => changes.removed.push(key),
                (old, Some(link)) => changes.record(old, link),
                (None, None) => {}
            }
        }
        changes
    }

    /// Undoes what `producer` derived last time and derives it again from the graph,
    /// recording in `before` the prior version of every link it touches.
    fn reproduce(&mut self, producer: &ObjectId, graph: &Graph, before: &mut Before) {
        if let Some(number) = self.ids.get(producer) {
            let old = std::mem::take(&mut self.productions[number as usize]);
            if !old.is_empty() {
                for &watch in old.watches.iter() {
                    self.watchers.remove(watch, number);
                    self.unwatch(watch);
                }
                for &link in old.links.iter() {
                    if let Some((source, target)) = self.table.release(link, Some(before)) {
                        self.ids.release(source);
                        self.ids.release(target);
                    }
                }
                self.ids.release(number);
            }
        }
        let Some(node) = graph.get(producer) else {
            return;
        };
        // Lent out: the derivation borrows it while the set is read to resolve it.
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut resolutions = Resolutions::default();
        let derived = self.finders.run(node, graph, &mut scratch);
        let resolved =
            (!derived.is_empty()).then(|| self.resolve(node.id(), derived, &mut resolutions));
        self.scratch = scratch;
        let Some(resolved) = resolved else {
            return;
        };
        let mut holding = Holding::default();
        let (producer, watches) =
            self.number(resolved, &mut Taking::from(resolutions), &mut holding);
        self.fit_tables();
        for &watch in watches.iter() {
            self.watchers.add(watch, producer);
        }
        let links = holding
            .links
            .into_iter()
            .zip(holding.ends)
            .map(|(link, (s, t))| self.table.hold(link, s, t, Some(before)))
            .collect();
        self.productions[producer as usize] = Production { links, watches };
    }

    /// Finds the numbers of what a derivation names, where they exist, adding it to
    /// `resolutions`. It only reads the set, so a full build resolves on every core.
    fn resolve(
        &self,
        producer: &ObjectId,
        derived: Derived<'_>,
        resolutions: &mut Resolutions,
    ) -> Resolved {
        let end = |id: &ObjectId| {
            self.ids
                .get(id)
                .map_or_else(|| End::New(id.clone()), End::Known)
        };
        let producer_end = end(producer);
        let (watches, unnumbered) = (resolutions.watches.len(), resolutions.unnumbered.len());
        // A link's ends are the producer and objects it read, all copies of the graph's ids:
        // they are matched to the numbers just found by identity, before any hashing.
        let mut known: SmallVec<[(&ObjectId, Ix); 8]> = SmallVec::new();
        if let End::Known(ix) = producer_end {
            known.push((producer, ix));
        }
        for read in derived.reads {
            let found = match read {
                Read::Object(id) => self.ids.get(id).map(Watch::Object),
                Read::Presence(id) => self.ids.get(id).map(Watch::Presence),
                Read::Lookup(lookup) => self.lookups.get(lookup).map(Watch::Lookup),
            };
            match (read, found) {
                (
                    Read::Object(id) | Read::Presence(id),
                    Some(watch @ (Watch::Object(ix) | Watch::Presence(ix))),
                ) => {
                    known.push((id, ix));
                    resolutions.watches.push(watch);
                }
                (_, Some(watch)) => resolutions.watches.push(watch),
                (_, None) => resolutions.unnumbered.push(read.clone()),
            }
        }
        let link_end = |id: &ObjectId| match known.iter().find(|(k, _)| k.is_same_copy(id)) {
            Some(&(_, ix)) => End::Known(ix),
            None => end(id),
        };
        resolutions.ends.extend(
            derived
                .links
                .iter()
                .map(|l| (link_end(&l.source), link_end(&l.target))),
        );
        let links = derived.links.len();
        resolutions.links.append(derived.links);
        Resolved {
            producer: producer_end,
            links,
            watches: resolutions.watches.len() - watches,
            unnumbered: resolutions.unnumbered.len() - unnumbered,
        }
    }

    /// Holds what one resolved derivation names — its producer (for its production), what it
    /// watches, its links' ends (for each link) — numbering what was not numbered yet; takes
    /// its share from `taking` and adds its links to `holding`. Returns the producer's number
    /// and its watches.
    fn number(
        &mut self,
        resolved: Resolved,
        taking: &mut Taking,
        holding: &mut Holding,
    ) -> (Ix, Box<[Watch]>) {
        let producer = self.hold_end(resolved.producer);
        let mut watches = Vec::with_capacity(resolved.watches + resolved.unnumbered);
        for watch in taking.watches.by_ref().take(resolved.watches) {
            match watch {
                Watch::Object(ix) | Watch::Presence(ix) => self.ids.hold_number(ix),
                Watch::Lookup(ix) => self.lookups.hold_number(ix),
            };
            watches.push(watch);
        }
        for read in taking.unnumbered.by_ref().take(resolved.unnumbered) {
            watches.push(self.watch(&read));
        }
        for (source, target) in taking.ends.by_ref().take(resolved.links) {
            let ends = (self.hold_end(source), self.hold_end(target));
            holding.ends.push(ends);
        }
        holding
            .links
            .extend(taking.links.by_ref().take(resolved.links));
        (producer, watches.into_boxed_slice())
    }

    fn hold_end(&mut self, end: End) -> Ix {
        match end {
            End::Known(ix) => self.ids.hold_number(ix),
            End::New(id) => self.ids.hold(&id),
        }
    }

    /// Numbers what a read names, holding it for the watch.
    fn watch(&mut self, read: &Read) -> Watch {
        match read {
            Read::Object(id) => Watch::Object(self.ids.hold(id)),
            Read::Presence(id) => Watch::Presence(self.ids.hold(id)),
            Read::Lookup(lookup) => Watch::Lookup(self.lookups.hold(lookup)),
        }
    }

    /// Lets go of what a watch named.
    fn unwatch(&mut self, watch: Watch) {
        match watch {
            Watch::Object(number) | Watch::Presence(number) => self.ids.release(number),
            Watch::Lookup(number) => self.lookups.release(number),
        }
    }

    /// What the set's bookkeeping holds: numbered ids and lookups, watch entries, link ends.
    /// An incremental set must hold exactly what a full build of the same graph holds.
    #[cfg(test)]
    fn bookkeeping(&self) -> [usize; 4] {
        let watches = self
            .watchers
            .objects
            .iter()
            .map(|w| w.changes.len() + w.presence.len())
            .chain(self.watchers.lookups.iter().map(|w| w.len()))
            .sum();
        let ends = self.table.ends.iter().map(|e| e.len()).sum();
        [self.ids.held(), self.lookups.held(), watches, ends]
    }

    /// Extends the per-number tables to every number given out.
    fn fit_tables(&mut self) {
        let ids = self.ids.span();
        if self.productions.len() < ids {
            self.productions.resize_with(ids, Production::default);
            self.watchers.objects.resize_with(ids, Watchers::default);
            self.table.ends.resize_with(ids, SmallVec::new);
        }
        let lookups = self.lookups.span();
        if self.watchers.lookups.len() < lookups {
            self.watchers.lookups.resize_with(lookups, SmallVec::new);
        }
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

/// What a link carries besides its ends, as the original's links do: a display name, labels
/// for its ends, the network it carries (the constraint key of `network` cliques) and a fact of
/// its own type.
#[derive(Debug, Default)]
struct Description {
    name: CompactString,
    labels: Option<(CompactString, CompactString)>,
    network: Option<CompactString>,
    fact: Option<(&'static str, CompactString)>,
}

impl Description {
    fn named(name: impl Into<CompactString>) -> Self {
        Description {
            name: name.into(),
            ..Description::default()
        }
    }

    fn labelled(self, source: impl Into<CompactString>, target: impl Into<CompactString>) -> Self {
        Description {
            labels: Some((source.into(), target.into())),
            ..self
        }
    }

    fn on_network(self, network: Option<CompactString>) -> Self {
        Description { network, ..self }
    }

    fn with_fact(self, key: &'static str, value: impl Into<CompactString>) -> Self {
        Description {
            fact: Some((key, value.into())),
            ..self
        }
    }
}

/// `link` with its description as attributes, in a map of exactly their number: a link is kept
/// as long as it exists, and most carry one or two attributes (a map grown by pushing would
/// keep room for four).
fn described(mut link: Link, description: Description) -> Link {
    let Description {
        name,
        labels,
        network,
        fact,
    } = description;
    let count = 1
        + 2 * usize::from(labels.is_some())
        + usize::from(fact.is_some())
        + usize::from(network.is_some());
    let mut attributes = AttrMap::with_capacity(count);
    attributes.insert("link_name", AttrValue::Str(name));
    if let Some((source, target)) = labels {
        attributes.insert("source_label", AttrValue::Str(source));
        attributes.insert("target_label", AttrValue::Str(target));
    }
    if let Some((key, value)) = fact {
        attributes.insert(key, AttrValue::Str(value));
    }
    if let Some(network) = network {
        attributes.insert("network", AttrValue::Str(network));
    }
    link.attributes = attributes;
    link
}

#[cfg(test)]
pub(crate) mod tests;
