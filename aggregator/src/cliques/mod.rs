//! The clique engine: for every focal point (an instance, a vservice, a network, a switch
//! port), the sub-graph it depends on, walked over the link types of its clique type in order
//! (reference §3.3).
//!
//! Incremental: a clique depends only on the links incident to the nodes its walk expanded
//! from, and on its focal point. The set remembers, per node, the cliques whose walk expanded
//! from it; a changed link dirties the cliques of its two ends, a changed focal point its own
//! clique, and only those are walked again. A full build gives the same result (tested on long
//! randomized change sequences).

mod types;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustc_hash::{FxHashMap, FxHashSet};

use calipso_proto::{AttrValue, Link, LinkState, LinkType, ObjectId, ObjectType};
use serde::{Deserialize, Serialize};

pub use types::{
    CliqueConstraint, CliqueType, EnvironmentConfig, InvalidCliqueType, Plan, WalkKind,
    default_clique_constraints, default_clique_types, upgrade_seeded_defaults,
};

use crate::graph::{Graph, Node};
use crate::interner::{Interner, Ix};
use crate::links::{LinkChanges, LinkKey, LinkSet};
use crate::parallel::{alongside, map_on_all_cores};
use crate::sorted_set::SortedSet;
use smallvec::SmallVec;

/// The sub-graph of one focal point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clique {
    pub focal_point: ObjectId,
    pub focal_point_type: ObjectType,
    pub clique_type: String,
    /// The focal point's values of the constraint attributes the links were checked against.
    pub constraints: BTreeMap<String, Vec<String>>,
    pub nodes: SortedSet<ObjectId>,
    pub links: SortedSet<LinkKey>,
    /// Transitive links, for clique types that walk them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub implicit_links: Vec<Link>,
}

/// The cliques that changed in one update.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CliqueChanges {
    /// Cliques of focal points that had none.
    pub created: Vec<Clique>,
    /// Cliques whose nodes or links changed.
    pub changed: Vec<Clique>,
    pub removed: Vec<ObjectId>,
}

impl CliqueChanges {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// How many clique versions the changes make.
    pub fn len(&self) -> usize {
        self.created.len() + self.changed.len() + self.removed.len()
    }

    /// The new versions: created and changed cliques.
    pub fn upserted(&self) -> impl Iterator<Item = &Clique> {
        self.created.iter().chain(&self.changed)
    }

    /// Records `now` as created (no clique `before`) or changed (one that differs).
    fn record(&mut self, before: Option<&Clique>, now: &Clique) {
        match before {
            None => self.created.push(now.clone()),
            Some(before) if before != now => self.changed.push(now.clone()),
            Some(_) => {}
        }
    }
}

/// The constraint values of a focal point: its attribute, a string or a list; a network is
/// its own `network`; else the values its own links carry (an instance's vNIC links carry the
/// networks of its ports), so that a focal point the cloud does not describe is still kept
/// to what it is attached to.
fn constraint_values(
    focal: &Node,
    key: &str,
    links: &LinkSet,
    expanded: &mut Vec<Expansion>,
) -> Option<Vec<String>> {
    match focal.object.attributes.extra.get(key) {
        Some(AttrValue::Str(value)) => return Some(vec![value.to_string()]),
        Some(AttrValue::List(values)) => {
            return Some(
                values
                    .iter()
                    .filter_map(AttrValue::as_str)
                    .map(str::to_owned)
                    .collect(),
            );
        }
        _ => {}
    }
    if key == "network" && focal.object_type() == ObjectType::Network {
        return Some(vec![focal.id().to_string()]);
    }
    expanded.push((focal.id().clone(), None));
    let mut carried: Vec<String> = links
        .incident(focal.id())
        .filter_map(|link| link.attributes.get(key).and_then(AttrValue::as_str))
        .map(str::to_owned)
        .collect();
    carried.sort();
    carried.dedup();
    (!carried.is_empty()).then_some(carried)
}

/// A link passes when each constraint attribute it carries has one of the focal point's values.
fn passes(link: &Link, constraints: &BTreeMap<String, Vec<String>>) -> bool {
    constraints.iter().all(|(key, allowed)| {
        match link.attributes.get(key).and_then(AttrValue::as_str) {
            Some(value) => allowed.iter().any(|a| a == value),
            None => true,
        }
    })
}

/// A node a walk looked at for links of one type (`None`: of any type, for transitive steps).
type Expansion = (ObjectId, Option<LinkType>);

/// The link types a walk expanded one node for: a bit per declared link type, and one for
/// "any type" (a transitive step, or the focal point's own links read for its constraints).
/// One record per node rather than per (node, type): a dependency walk tries several moves
/// from most nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Expanded(u32);

impl Expanded {
    const ANY: u32 = 1 << 31;

    fn of(link_type: Option<LinkType>) -> Self {
        let bit = link_type
            .and_then(|t| LinkType::declared().position(|d| d == t))
            .map_or(Self::ANY, |i| 1 << i);
        Expanded(bit)
    }

    fn covers(self, link_type: LinkType) -> bool {
        self.0 & Self::ANY != 0 || self.0 & Self::of(Some(link_type)).0 != 0
    }
}

/// The outcome of one walk: the clique (if any link was found) and every node it expanded.
struct Walk {
    clique: Option<Clique>,
    expanded: Vec<(ObjectId, Expanded)>,
}

/// A walk's expansions, one record per node. Most walks expand a dozen nodes: their records
/// are merged by a scan (the same shared id compares by pointer), a network's thousands by a
/// hash index.
fn merged(expansions: Vec<Expansion>) -> Vec<(ObjectId, Expanded)> {
    const SCANNED: usize = 32;
    let mut out: Vec<(ObjectId, Expanded)> = Vec::with_capacity(expansions.len());
    let mut index: FxHashMap<ObjectId, usize> = FxHashMap::default();
    for (id, link_type) in expansions {
        let bits = Expanded::of(link_type).0;
        let seen = if out.len() <= SCANNED {
            out.iter().position(|(seen, _)| *seen == id)
        } else {
            if index.is_empty() {
                index.extend(out.iter().enumerate().map(|(i, (id, _))| (id.clone(), i)));
            }
            index.get(&id).copied()
        };
        match seen {
            Some(at) => out[at].1.0 |= bits,
            None => {
                if !index.is_empty() {
                    index.insert(id.clone(), out.len());
                }
                out.push((id, Expanded(bits)));
            }
        }
    }
    out
}

/// The direction in which links of a step's type are stored (`vnic-vconnector` for a
/// `vconnector-vnic` step).
fn stored_type(step: LinkType) -> LinkType {
    if LinkType::declared().any(|d| d == step) {
        step
    } else {
        step.reversed()
    }
}

/// Calls `visit` with each link of a step's type at `id` that passes the constraints, and
/// its far end.
fn step_from<'l>(
    id: &ObjectId,
    step: LinkType,
    links: &'l LinkSet,
    constraints: &BTreeMap<String, Vec<String>>,
    expanded: &mut Vec<Expansion>,
    mut visit: impl FnMut(&'l Link, &'l ObjectId),
) {
    let stored = stored_type(step);
    expanded.push((id.clone(), Some(stored)));
    for link in links.incident_of_type(id, stored) {
        let far = if link.link_type == step && link.source == *id {
            &link.target
        } else if link.link_type == step.reversed() && link.target == *id {
            &link.source
        } else {
            continue;
        };
        if passes(link, constraints) {
            visit(link, far);
        }
    }
}

/// What a walk gathered before it is made a clique.
#[derive(Default)]
struct Gathered {
    nodes: FxHashSet<ObjectId>,
    links: Vec<LinkKey>,
    implicit_links: Vec<Link>,
}

fn walk(
    focal: &Node,
    clique_type: &CliqueType,
    constraint_keys: &[String],
    links: &LinkSet,
) -> Walk {
    let mut expanded: Vec<Expansion> = Vec::new();
    let constraints: BTreeMap<String, Vec<String>> = constraint_keys
        .iter()
        .filter_map(|key| {
            Some((
                key.clone(),
                constraint_values(focal, key, links, &mut expanded)?,
            ))
        })
        .collect();
    let gathered = match clique_type.walk {
        WalkKind::Ordered => walk_in_order(focal, clique_type, &constraints, links, &mut expanded),
        WalkKind::Dependencies => {
            let mut gathered =
                walk_dependencies(focal, clique_type, &constraints, links, &mut expanded);
            keep_what_lies_between_ends(focal, &mut gathered);
            gathered
        }
    };
    let expanded = merged(expanded);
    let Gathered {
        nodes,
        links: found,
        mut implicit_links,
    } = gathered;
    if found.is_empty() && implicit_links.is_empty() {
        return Walk {
            clique: None,
            expanded,
        };
    }
    implicit_links.sort_by(|a, b| (&a.source, &a.target).cmp(&(&b.source, &b.target)));
    implicit_links.dedup_by(|a, b| a.source == b.source && a.target == b.target);
    Walk {
        clique: Some(Clique {
            focal_point: focal.id().clone(),
            focal_point_type: focal.object_type(),
            clique_type: clique_type.name.clone(),
            constraints,
            nodes: nodes.into_iter().collect(),
            links: found.into_iter().collect(),
            implicit_links,
        }),
        expanded,
    }
}

/// The original's walk: each step once, in order, from every object of its source type
/// gathered so far; a step that finds nothing ends it.
fn walk_in_order(
    focal: &Node,
    clique_type: &CliqueType,
    constraints: &BTreeMap<String, Vec<String>>,
    links: &LinkSet,
    expanded: &mut Vec<Expansion>,
) -> Gathered {
    let mut collected: FxHashMap<ObjectType, BTreeSet<ObjectId>> = FxHashMap::default();
    collected
        .entry(focal.object_type())
        .or_default()
        .insert(focal.id().clone());
    let mut gathered = Gathered::default();
    for &step in &clique_type.link_types {
        let from: Vec<ObjectId> = collected
            .get(&step.source)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        let mut reached = Vec::new();
        if step.is_declared() {
            for id in &from {
                step_from(id, step, links, constraints, expanded, |link, far| {
                    gathered.links.push(LinkKey::of(link));
                    reached.push(far.clone());
                });
            }
        } else if clique_type.use_implicit_links {
            for id in &from {
                for link in transitive(id, step, links, constraints, expanded) {
                    reached.push(link.target.clone());
                    gathered.implicit_links.push(link);
                }
            }
        }
        if reached.is_empty() {
            break;
        }
        collected.entry(step.target).or_default().extend(reached);
    }
    gathered.nodes = collected.into_values().flatten().collect();
    gathered
}

/// Every move the clique type allows, from every object reached, until nothing new is reached.
fn walk_dependencies(
    focal: &Node,
    clique_type: &CliqueType,
    constraints: &BTreeMap<String, Vec<String>>,
    links: &LinkSet,
    expanded: &mut Vec<Expansion>,
) -> Gathered {
    let mut gathered = Gathered::default();
    gathered.nodes.insert(focal.id().clone());
    let mut queue = VecDeque::from([focal.id().clone()]);
    while let Some(id) = queue.pop_front() {
        let Some(object_type) = id.object_type() else {
            continue;
        };
        let moves = clique_type
            .link_types
            .iter()
            .filter(|step| step.source == object_type);
        for &step in moves {
            step_from(&id, step, links, constraints, expanded, |link, far| {
                gathered.links.push(LinkKey::of(link));
                if gathered.nodes.insert(far.clone()) {
                    queue.push_back(far.clone());
                }
            });
        }
    }
    gathered
}

/// The types a clique's walk serves: what sends and receives through the network.
fn is_consumer(object_type: ObjectType) -> bool {
    matches!(object_type, ObjectType::Instance | ObjectType::Vservice)
}

/// The physical fabric beyond a host's NICs.
fn is_fabric(object_type: ObjectType) -> bool {
    matches!(object_type, ObjectType::SwitchPnic | ObjectType::Switch)
}

/// Keeps the nodes that lie between the focal point and its ends, and the links among them.
///
/// The ends of an instance's or a vservice's clique are its networks (the physical NICs when no
/// network was reached: a host without a cloud adapter); those of any other focal point are
/// the instances, vservices and networks it reaches. A node that is not an end and has at most
/// one neighbour left leads nowhere — another VM's tap on a shared bridge, a DHCP port behind
/// its veth, an uplink NIC carrying none of the focal point's networks — and is removed, until
/// none is left. For a consumer's clique the fabric (switch ports, switches) is left out of
/// that and then put back where it faces a NIC that was kept. A walk that reached no end is
/// kept whole: there is nothing to prune towards.
fn keep_what_lies_between_ends(focal: &Node, gathered: &mut Gathered) {
    let consumer = is_consumer(focal.object_type());
    let nodes: Vec<&ObjectId> = gathered.nodes.iter().collect();
    let types: Vec<Option<ObjectType>> = nodes.iter().map(|id| id.object_type()).collect();
    let has = |t: ObjectType| types.contains(&Some(t));
    let is_end = |t: Option<ObjectType>| match t {
        Some(t) if consumer && has(ObjectType::Network) => t == ObjectType::Network,
        Some(t) if consumer => t == ObjectType::HostPnic,
        Some(t) => is_consumer(t) || t == ObjectType::Network,
        None => false,
    };
    let protected: Vec<bool> = nodes
        .iter()
        .zip(&types)
        .map(|(id, &t)| *id == focal.id() || is_end(t))
        .collect();
    if protected.iter().filter(|&&p| p).count() < 2 {
        return;
    }
    let index: FxHashMap<&ObjectId, usize> =
        nodes.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let in_core = |i: usize| !(consumer && types[i].is_some_and(is_fabric));
    let mut edges: Vec<(usize, usize)> = gathered
        .links
        .iter()
        .filter_map(|k| {
            let (a, b) = (*index.get(&k.source)?, *index.get(&k.target)?);
            Some((a.min(b), a.max(b)))
        })
        .collect();
    edges.sort_unstable();
    edges.dedup();
    let mut removed: Vec<bool> = (0..nodes.len()).map(|i| !in_core(i)).collect();
    let mut degree = vec![0u32; nodes.len()];
    for &(a, b) in &edges {
        if !removed[a] && !removed[b] {
            degree[a] += 1;
            degree[b] += 1;
        }
    }
    let mut leaves: Vec<usize> = (0..nodes.len())
        .filter(|&i| !removed[i] && !protected[i] && degree[i] <= 1)
        .collect();
    while let Some(leaf) = leaves.pop() {
        if removed[leaf] {
            continue;
        }
        removed[leaf] = true;
        for &(a, b) in &edges {
            let other = match (a == leaf, b == leaf) {
                (true, _) => b,
                (_, true) => a,
                _ => continue,
            };
            if !removed[other] {
                degree[other] -= 1;
                if degree[other] <= 1 && !protected[other] {
                    leaves.push(other);
                }
            }
        }
    }
    if consumer {
        // The switch ports facing kept NICs, and what the walk reached beyond them.
        let mut frontier: Vec<usize> = (0..nodes.len())
            .filter(|&i| !removed[i] && types[i] == Some(ObjectType::HostPnic))
            .collect();
        while let Some(at) = frontier.pop() {
            for &(a, b) in &edges {
                let far = match (a == at, b == at) {
                    (true, _) => b,
                    (_, true) => a,
                    _ => continue,
                };
                if removed[far] && types[far].is_some_and(is_fabric) {
                    removed[far] = false;
                    frontier.push(far);
                }
            }
        }
    }
    let gone: FxHashSet<ObjectId> = nodes
        .iter()
        .zip(&removed)
        .filter(|(_, r)| **r)
        .map(|(id, _)| (*id).clone())
        .collect();
    if gone.is_empty() {
        return;
    }
    gathered.nodes.retain(|id| !gone.contains(id));
    gathered
        .links
        .retain(|k| !gone.contains(&k.source) && !gone.contains(&k.target));
}

/// Implicit links from `start` to the objects of `step.target` reachable over links followed in
/// their direction (`instance-network`), or else against it (`network-instance`), where two
/// consecutive links differ in type and every link passes the constraints: the original's
/// transitive closure, computed for one clique instead of the whole environment.
fn transitive(
    start: &ObjectId,
    step: LinkType,
    links: &LinkSet,
    constraints: &BTreeMap<String, Vec<String>>,
    expanded: &mut Vec<Expansion>,
) -> Vec<Link> {
    let found = reachable(start, step, links, constraints, expanded, true);
    if found.is_empty() {
        reachable(start, step, links, constraints, expanded, false)
    } else {
        found
    }
}

fn reachable(
    start: &ObjectId,
    step: LinkType,
    links: &LinkSet,
    constraints: &BTreeMap<String, Vec<String>>,
    expanded: &mut Vec<Expansion>,
    downstream: bool,
) -> Vec<Link> {
    let mut out = Vec::new();
    let mut seen: FxHashSet<ObjectId> = FxHashSet::from_iter([start.clone()]);
    let mut queue: VecDeque<(ObjectId, Option<LinkType>, LinkState)> =
        VecDeque::from([(start.clone(), None, LinkState::Up)]);
    while let Some((at, arrived_by, state)) = queue.pop_front() {
        expanded.push((at.clone(), None));
        for link in links.incident(&at) {
            let symmetric = link.link_type.source == link.link_type.target;
            if symmetric || Some(link.link_type) == arrived_by || !passes(link, constraints) {
                continue;
            }
            let far = match (link.source == at, downstream) {
                (true, true) => &link.target,
                (false, false) => &link.source,
                _ => continue,
            };
            if !seen.insert(far.clone()) {
                continue;
            }
            let path_state = state.and(link.state);
            if far.object_type() == Some(step.target) {
                let mut implicit = link.clone();
                implicit.source = start.clone();
                implicit.target = far.clone();
                implicit.link_type = step;
                implicit.implicit = true;
                implicit.state = path_state;
                implicit
                    .attributes
                    .retain(|key, _| constraints.contains_key(key));
                out.push(implicit);
            } else {
                queue.push_back((far.clone(), Some(link.link_type), path_state));
            }
        }
    }
    out
}

/// An expansion with its node numbered in the clique set.
type Numbered = (Ix, Expanded);

/// The walks that expanded one node: the link types expanded and the focal point's number.
/// Most nodes are expanded by one or two walks.
type ExpandedBy = SmallVec<[(Expanded, Ix); 2]>;

/// The cliques of one environment.
///
/// What each walk expanded is kept by number ([`Interner`]): a walk's record holds its focal
/// point and every node it expanded, so the index from a node to the walks that expanded it is
/// a vector by number.
#[derive(Debug, Default)]
pub struct CliqueSet {
    plan: Plan,
    cliques: FxHashMap<ObjectId, Clique>,
    ids: Interner<ObjectId>,
    /// Per node number: the walks (link types expanded, focal point number) that expanded it.
    expanded_by: Vec<ExpandedBy>,
    /// Per focal point number: the expansions of its walk (`None`: it has no walk on record).
    expansions: Vec<Option<Box<[Numbered]>>>,
}

impl CliqueSet {
    /// Every clique of the graph, from scratch. The walks run on every core (they only read
    /// the graph and the links); their expansions are numbered on this thread, then the
    /// cliques and the expansion index are recorded by two threads at once.
    pub fn build(plan: Plan, graph: &Graph, links: &LinkSet) -> Self {
        let mut set = CliqueSet::default();
        let mut focal: Vec<(&Node, &(CliqueType, Vec<String>))> = plan
            .entries
            .iter()
            .flat_map(|entry| {
                graph
                    .of_type(entry.0.focal_point_type)
                    .map(move |n| (n, entry))
            })
            .collect();
        Graph::in_memory_order(&mut focal, |(node, _)| node);
        let walks = map_on_all_cores(&focal, |(node, (clique_type, keys))| {
            walk(node, clique_type, keys, links)
        });
        set.ids.reserve(focal.len() * 2);
        let mut cliques = Vec::with_capacity(walks.len());
        let mut records = Vec::with_capacity(walks.len());
        for ((node, _), walk) in focal.iter().zip(walks) {
            records.push(set.number(node.id(), walk.expanded));
            cliques.extend(walk.clique.map(|c| (node.id().clone(), c)));
        }
        set.fit_tables();
        set.cliques.reserve(cliques.len());
        let CliqueSet {
            cliques: by_focal,
            expanded_by,
            expansions,
            ..
        } = &mut set;
        alongside(
            || by_focal.extend(cliques),
            || {
                for (focal, expanded) in &records {
                    for &(node, link_type) in expanded.iter() {
                        expanded_by[node as usize].push((link_type, *focal));
                    }
                }
            },
        );
        for (focal, expanded) in records {
            expansions[focal as usize] = Some(expanded);
        }
        set.plan = plan;
        set
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn len(&self) -> usize {
        self.cliques.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cliques.is_empty()
    }

    pub fn get(&self, focal_point: &ObjectId) -> Option<&Clique> {
        self.cliques.get(focal_point)
    }

    pub fn cliques(&self) -> impl Iterator<Item = &Clique> {
        self.cliques.values()
    }

    /// The focal points whose walks expanded `id`: every clique holding `id` is among them or
    /// among those of `id`'s neighbours (a walk reaches a node over a link from one it
    /// expanded), which is how what depends on an object is found without a membership index.
    pub fn walks_through(&self, id: &ObjectId) -> impl Iterator<Item = &ObjectId> {
        self.ids
            .get(id)
            .into_iter()
            .flat_map(|node| self.expanded_by[node as usize].iter())
            .map(|&(_, focal)| self.ids.key(focal))
    }

    /// Brings the cliques up to date after objects (`touched`) and links changed.
    pub fn update(
        &mut self,
        graph: &Graph,
        links: &LinkSet,
        touched: &[ObjectId],
        link_changes: &LinkChanges,
    ) -> CliqueChanges {
        let mut dirty: BTreeSet<ObjectId> = BTreeSet::new();
        // A link that only went down or up leaves every walk as it was (walks follow links
        // whatever their state); only the transitive links some clique types gather carry it.
        let restated = |l: &Link| {
            link_changes
                .state_only
                .binary_search(&LinkKey::of(l))
                .is_ok()
        };
        let changed = link_changes
            .upserted()
            .map(|l| (l.link_type, [&l.source, &l.target], restated(l)))
            .chain(
                link_changes
                    .removed
                    .iter()
                    .map(|k| (k.link_type, [&k.source, &k.target], false)),
            );
        for (link_type, ends, state_only) in changed {
            for end in ends {
                let Some(node) = self.ids.get(end) else {
                    continue;
                };
                for &(expanded, focal) in &self.expanded_by[node as usize] {
                    if !expanded.covers(link_type) {
                        continue;
                    }
                    let focal = self.ids.key(focal);
                    if !state_only || self.gathers_implicit_links(focal, graph) {
                        dirty.insert(focal.clone());
                    }
                }
            }
        }
        for id in touched {
            let is_focal = self.cliques.contains_key(id)
                || self
                    .ids
                    .get(id)
                    .is_some_and(|n| self.expansions[n as usize].is_some())
                || graph
                    .get(id)
                    .is_some_and(|n| self.plan.for_focal_type(n.object_type()).is_some());
            if is_focal {
                dirty.insert(id.clone());
            }
        }
        let mut changes = CliqueChanges::default();
        for focal in dirty {
            let before = self.cliques.get(&focal).cloned();
            self.rewalk(&focal, graph, links);
            match (before, self.cliques.get(&focal)) {
                (Some(_), None) => changes.removed.push(focal),
                (before, Some(now)) => changes.record(before.as_ref(), now),
                (None, None) => {}
            }
        }
        changes
    }

    /// Whether the focal point's clique type gathers transitive links (which carry state).
    fn gathers_implicit_links(&self, focal: &ObjectId, graph: &Graph) -> bool {
        graph
            .get(focal)
            .and_then(|node| self.plan.for_focal_type(node.object_type()))
            .is_none_or(|(clique_type, _)| clique_type.use_implicit_links)
    }

    /// Replaces the plan (clique types or constraints changed) and rebuilds every clique.
    pub fn replan(&mut self, plan: Plan, graph: &Graph, links: &LinkSet) -> CliqueChanges {
        let before = std::mem::take(&mut self.cliques);
        *self = CliqueSet::build(plan, graph, links);
        let mut changes = CliqueChanges::default();
        for (focal, clique) in &self.cliques {
            changes.record(before.get(focal), clique);
        }
        changes.removed = before
            .into_keys()
            .filter(|focal| !self.cliques.contains_key(focal))
            .collect();
        changes.removed.sort();
        changes
    }

    fn rewalk(&mut self, focal: &ObjectId, graph: &Graph, links: &LinkSet) {
        if let Some(number) = self.ids.get(focal)
            && let Some(old) = self.expansions[number as usize].take()
        {
            for &(node, link_type) in old.iter() {
                let walks = &mut self.expanded_by[node as usize];
                if let Some(at) = walks.iter().position(|&w| w == (link_type, number)) {
                    walks.swap_remove(at);
                }
                self.ids.release(node);
            }
            self.ids.release(number);
        }
        self.cliques.remove(focal);
        let Some(node) = graph.get(focal) else {
            return;
        };
        let Some((clique_type, keys)) = self.plan.for_focal_type(node.object_type()) else {
            return;
        };
        let walk = walk(node, clique_type, keys, links);
        let (number, expanded) = self.number(node.id(), walk.expanded);
        self.fit_tables();
        for &(node, link_type) in expanded.iter() {
            self.expanded_by[node as usize].push((link_type, number));
        }
        self.expansions[number as usize] = Some(expanded);
        if let Some(clique) = walk.clique {
            self.cliques.insert(node.id().clone(), clique);
        }
    }

    /// Numbers a walk's record: its focal point and every node it expanded, each held.
    fn number(
        &mut self,
        focal: &ObjectId,
        expanded: Vec<(ObjectId, Expanded)>,
    ) -> (Ix, Box<[Numbered]>) {
        let focal = self.ids.hold(focal);
        let expanded = expanded
            .into_iter()
            .map(|(id, link_type)| (self.ids.hold(&id), link_type))
            .collect();
        (focal, expanded)
    }

    /// Extends the per-number tables to every number given out.
    fn fit_tables(&mut self) {
        let span = self.ids.span();
        if self.expanded_by.len() < span {
            self.expanded_by.resize_with(span, ExpandedBy::new);
            self.expansions.resize_with(span, || None);
        }
    }

    /// What the set's bookkeeping holds: numbered ids, index entries, walks on record. An
    /// incremental set must hold exactly what a full build of the same graph holds.
    #[cfg(test)]
    fn bookkeeping(&self) -> [usize; 3] {
        [
            self.ids.held(),
            self.expanded_by.iter().map(|w| w.len()).sum(),
            self.expansions.iter().flatten().count(),
        ]
    }
}

#[cfg(test)]
pub(crate) mod tests;
