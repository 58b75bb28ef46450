//! Analysis over one environment's model: what depends on objects ([`impact`]), what is wrong
//! in a clique, ranked from the wire upward ([`diagnosis`]), and the chain of objects and links
//! a packet crosses between two endpoints ([`path`]). Pure functions over the engine's
//! [`Environment`], answered under its read lock; the service layer adds access control and
//! history (since when a member is wrong).

pub mod diagnosis;
pub mod impact;
pub mod path;

use std::collections::VecDeque;

use calipso_proto::{LinkState, LinkType, ObjectId, ObjectType};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use utoipa::ToSchema;

use crate::cliques::Clique;
use crate::engine::Environment;
use crate::graph::Node;
use crate::links::LinkKey;

pub use diagnosis::{Diagnosis, Finding, diagnose};
pub use impact::{Dependent, Impact, impact};
pub use path::{PathReport, path};

/// Why an analysis cannot be answered; each names what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    #[error("no object `{0}` in the environment")]
    UnknownObject(ObjectId),
    #[error("`{0}` has no clique")]
    NoClique(ObjectId),
    #[error("{0}")]
    Unsupported(String),
}

/// One step of a chain of objects: the object, and the link that led to it from the step
/// before (none for the first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Hop {
    pub id: String,
    #[serde(rename = "type")]
    pub object_type: String,
    pub name: String,
    /// `up` or `down`: whether traffic passes the object.
    pub state: String,
    pub stale: bool,
    /// The object's health status level (`ok`, `warning`, `error`, `unknown`).
    pub status: String,
    /// The link from the previous hop (`vnic-vedge`, …), as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_type: Option<String>,
    /// That link's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_state: Option<String>,
}

impl Hop {
    fn of(node: &Node, link: Option<(LinkType, LinkState)>) -> Self {
        Hop {
            id: node.id().to_string(),
            object_type: node.object_type().to_string(),
            name: node.object.name.to_string(),
            state: node.state().as_str().to_owned(),
            stale: node.stale,
            status: node.object.status.level.as_str().to_owned(),
            link_type: link.map(|(link_type, _)| link_type.to_string()),
            link_state: link.map(|(_, state)| state.as_str().to_owned()),
        }
    }

    /// Whether traffic stops here: the object or the link into it is down.
    pub fn is_down(&self) -> bool {
        self.state == "down" || self.link_state.as_deref() == Some("down")
    }
}

/// How far from the wire an object sits: switch ports and switches first, then physical NICs,
/// tunnel endpoints, vswitches, bridges, vNICs, networks, and what uses them.
fn rank_from_the_wire(object_type: ObjectType) -> u8 {
    use ObjectType::*;
    match object_type {
        Switch | SwitchPnic => 0,
        HostPnic => 1,
        Otep => 2,
        Vedge => 3,
        Vconnector => 4,
        Vnic => 5,
        Network => 6,
        Instance | Vservice => 7,
        _ => 8,
    }
}

/// The shortest chain of a clique's links from any of `starts` to `to`, as hops from the start
/// to `to`; `None` if the clique does not join them.
fn chain_in_clique(
    env: &Environment,
    clique: &Clique,
    starts: &[&ObjectId],
    to: &ObjectId,
) -> Option<Vec<Hop>> {
    let mut adjacent: FxHashMap<&ObjectId, Vec<(&ObjectId, &LinkKey)>> = FxHashMap::default();
    for key in clique.links.iter() {
        adjacent
            .entry(&key.source)
            .or_default()
            .push((&key.target, key));
        adjacent
            .entry(&key.target)
            .or_default()
            .push((&key.source, key));
    }
    let mut came_from: FxHashMap<&ObjectId, Option<(&ObjectId, &LinkKey)>> = FxHashMap::default();
    let mut queue: VecDeque<&ObjectId> = VecDeque::new();
    for &start in starts {
        if came_from.insert(start, None).is_none() {
            queue.push_back(start);
        }
    }
    while let Some(at) = queue.pop_front() {
        if at == to {
            break;
        }
        for &(next, key) in adjacent.get(at).into_iter().flatten() {
            if !came_from.contains_key(next) {
                came_from.insert(next, Some((at, key)));
                queue.push_back(next);
            }
        }
    }
    came_from.get(to)?;
    let mut backwards = Vec::new();
    let mut at = to;
    loop {
        let step = *came_from.get(at)?;
        backwards.push((at, step.map(|(_, key)| key)));
        match step {
            Some((previous, _)) => at = previous,
            None => break,
        }
    }
    backwards
        .into_iter()
        .rev()
        .map(|(id, key)| {
            let node = env.graph.get(id)?;
            let link = key.map(|k| {
                (
                    k.link_type,
                    env.links.get(k).map_or(LinkState::Down, |l| l.state),
                )
            });
            Some(Hop::of(node, link))
        })
        .collect()
}

/// The objects named, with a host standing for itself and every object on it.
fn expand_hosts(env: &Environment, objects: &[ObjectId]) -> Result<Vec<ObjectId>, AnalysisError> {
    let mut all: FxHashSet<ObjectId> = FxHashSet::default();
    for id in objects {
        let node = env
            .graph
            .get(id)
            .ok_or_else(|| AnalysisError::UnknownObject(id.clone()))?;
        all.insert(id.clone());
        if node.object_type() == ObjectType::Host {
            all.extend(env.graph.ids_on_host(&node.object.name).cloned());
        }
    }
    let mut all: Vec<ObjectId> = all.into_iter().collect();
    all.sort();
    Ok(all)
}

#[cfg(test)]
mod tests;
