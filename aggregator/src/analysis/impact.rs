//! Impact: everything that depends on some objects — the instances, vservices and networks
//! whose cliques hold them, and the hosts and projects of those instances and vservices — each
//! with the chain of links from the objects to it.

use std::collections::BTreeMap;

use calipso_proto::{ObjectId, ObjectType};
use rustc_hash::FxHashSet;
use serde::Serialize;
use utoipa::ToSchema;

use super::{AnalysisError, Hop, chain_in_clique, expand_hosts};
use crate::engine::Environment;
use crate::graph::Node;

/// One object that depends on what was asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Dependent {
    pub id: String,
    pub name: String,
    /// `up` or `down`.
    pub state: String,
    /// From one of the objects asked about to this one, over its clique's links; for a host or
    /// a project, the chain to the first of its instances or vservices that depends on them.
    pub path: Vec<Hop>,
    /// For a host or a project: its instances and vservices that depend on the objects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub through: Vec<String>,
}

/// What depends on a set of objects, by type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Impact {
    /// The objects asked about; a host stands for itself and every object on it.
    pub objects: Vec<String>,
    /// Dependents by type (`instance`, `vservice`, `network`, `host`, `project`), each list
    /// ordered by id.
    pub dependents: BTreeMap<String, Vec<Dependent>>,
    /// How many dependents in all.
    pub total: usize,
}

/// What depends on `objects` in `env`.
pub fn impact(env: &Environment, objects: &[ObjectId]) -> Result<Impact, AnalysisError> {
    let asked = expand_hosts(env, objects)?;
    let asked_set: FxHashSet<&ObjectId> = asked.iter().collect();
    let mut candidates: FxHashSet<&ObjectId> = FxHashSet::default();
    for id in &asked {
        candidates.extend(env.cliques.walks_through(id));
        for link in env.links.incident(id) {
            let neighbour = if link.source == *id {
                &link.target
            } else {
                &link.source
            };
            candidates.extend(env.cliques.walks_through(neighbour));
        }
    }
    let mut by_type: BTreeMap<String, Vec<Dependent>> = BTreeMap::new();
    let mut consumers: Vec<(&Node, Vec<Hop>)> = Vec::new();
    let mut candidates: Vec<&ObjectId> = candidates.into_iter().collect();
    candidates.sort();
    for focal in candidates {
        let Some(clique) = env.cliques.get(focal) else {
            continue;
        };
        let held: Vec<&ObjectId> = clique
            .nodes
            .iter()
            .filter(|n| asked_set.contains(n))
            .collect();
        if held.is_empty() {
            continue;
        }
        let Some(node) = env.graph.get(focal) else {
            continue;
        };
        let path = chain_in_clique(env, clique, &held, focal).unwrap_or_default();
        if matches!(
            node.object_type(),
            ObjectType::Instance | ObjectType::Vservice
        ) {
            consumers.push((node, path.clone()));
        }
        by_type
            .entry(node.object_type().to_string())
            .or_default()
            .push(dependent(node, path, Vec::new()));
    }
    for (owner_type, owner_of) in [
        (ObjectType::Host, host_of as fn(&Node) -> Option<ObjectId>),
        (ObjectType::Project, project_of),
    ] {
        let mut owners: BTreeMap<ObjectId, (Vec<Hop>, Vec<String>)> = BTreeMap::new();
        for (consumer, path) in &consumers {
            let Some(owner) = owner_of(consumer).filter(|id| env.graph.contains(id)) else {
                continue;
            };
            let entry = owners
                .entry(owner)
                .or_insert_with(|| (path.clone(), Vec::new()));
            entry.1.push(consumer.id().to_string());
        }
        for (owner, (path, through)) in owners {
            if let Some(node) = env.graph.get(&owner) {
                by_type
                    .entry(owner_type.to_string())
                    .or_default()
                    .push(dependent(node, path, through));
            }
        }
    }
    Ok(Impact {
        objects: asked.iter().map(ToString::to_string).collect(),
        total: by_type.values().map(Vec::len).sum(),
        dependents: by_type,
    })
}

fn dependent(node: &Node, path: Vec<Hop>, through: Vec<String>) -> Dependent {
    Dependent {
        id: node.id().to_string(),
        name: node.object.name.to_string(),
        state: node.state().as_str().to_owned(),
        path,
        through,
    }
}

fn host_of(node: &Node) -> Option<ObjectId> {
    node.object.host.as_deref().map(ObjectId::host)
}

fn project_of(node: &Node) -> Option<ObjectId> {
    let project = node.text("project_id").or_else(|| node.text("tenant_id"))?;
    Some(ObjectId::global(ObjectType::Project, project))
}
