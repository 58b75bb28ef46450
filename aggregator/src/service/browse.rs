//! Browsing: the environment tree a level at a time, one object's versions, and the graph of
//! a clique or a host with what the UI draws of each object. What the web UI reads; an
//! environment of half a million objects is never sent whole, only the level being opened or
//! the graph being drawn.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rustc_hash::FxHashMap;

use calipso_proto::{Link, ObjectId, ObjectType, Timestamp};
use serde::Serialize;
use utoipa::ToSchema;

use super::inventory::{LinkView, ObjectView, link_view, object_view, tree_parent};
use super::{Principal, Service, ServiceError};
use crate::graph::{Graph, Node};
use crate::links::LinkKey;
use crate::monitoring::effective_status;
use crate::store::Store;

/// The most rows one level of the tree answers; a level with more says how many it left out
/// (the search finds those).
pub const MAX_TREE_ROWS: usize = 5000;

/// An object as the tree and the graphs show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ObjectBrief {
    pub id: String,
    #[serde(rename = "type")]
    pub object_type: String,
    pub name: String,
    pub host: Option<String>,
    /// `up` or `down`.
    pub state: String,
    pub stale: bool,
    /// `ok`, `warning`, `error` or `unknown`.
    pub status: String,
    /// What the status says, when anything.
    pub status_text: String,
}

/// One row of the tree.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TreeRow {
    #[serde(flatten)]
    pub object: ObjectBrief,
    /// How many objects have this one as their parent.
    pub children: usize,
}

/// The objects and links of a clique or of a host.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GraphView {
    pub environment: String,
    /// A clique's focal point.
    pub focal_point: Option<String>,
    /// A host's name.
    pub host: Option<String>,
    /// By id. For a host: its objects, then the far ends of its links (a remote tunnel
    /// endpoint, a network), which have another host or none.
    pub nodes: Vec<ObjectBrief>,
    /// By type, source, target.
    pub links: Vec<LinkView>,
}

/// What a graph is of.
#[derive(Debug, Clone)]
pub enum GraphOf {
    Clique(ObjectId),
    Host(String),
}

/// One level of the tree: the children of a parent, or the roots of an environment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TreeLevel {
    pub environment: String,
    /// The parent asked for; absent for the roots.
    pub parent: Option<String>,
    /// By type (in the model's order), then name.
    pub rows: Vec<TreeRow>,
    /// Rows of this level not returned (past [`MAX_TREE_ROWS`]).
    pub left_out: usize,
}

/// One version of an object: what it was, from when until when.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ObjectVersionView {
    pub valid_from: String,
    /// Absent for the current version.
    pub valid_to: Option<String>,
    pub object: ObjectView,
}

/// The most versions one request returns.
pub const MAX_VERSIONS: usize = 1000;

pub fn summary(node: &Node) -> ObjectBrief {
    let object = &node.object;
    let status = effective_status(node);
    ObjectBrief {
        id: object.id.to_string(),
        object_type: object.object_type.to_string(),
        name: object.name.to_string(),
        host: object.host.as_deref().map(str::to_owned),
        state: node.state().as_str().to_owned(),
        stale: node.stale,
        status: status.level.as_str().to_owned(),
        status_text: status.text.clone(),
    }
}

/// The host whose objects may hang under `node`: a host's own, or the host `node` is on.
fn host_of(node: &Node) -> Option<&str> {
    if node.object_type() == ObjectType::Host {
        Some(node.object.name.as_str())
    } else {
        node.object.host.as_deref()
    }
}

/// What may hang under a node of `host` (under a cloud-level node or at the top when `None`):
/// an agent's objects hang under something on their own host, so a host's level is read from
/// the host index (hundreds of objects), never from the whole environment; cloud-level
/// objects (and hosts, under their zones) are read by type.
fn candidates<'g>(graph: &'g Graph, host: Option<&str>) -> Vec<&'g Node> {
    match host {
        Some(host) => graph
            .ids_on_host(host)
            .filter_map(|id| graph.get(id))
            .collect(),
        None => ObjectType::ALL
            .iter()
            .filter(|t| !t.is_host_local() || **t == ObjectType::Host)
            .flat_map(|t| graph.of_type(*t))
            // Instances are cloud-level but on a host: they hang under it.
            .filter(|n| n.object.host.is_none() || n.object_type() == ObjectType::Host)
            .collect(),
    }
}

/// The level under `parent` (the roots when `None`), each row with its number of children.
/// Levels follow [`tree_parent`]: a host sits under the zone that lists it.
pub fn tree_level(graph: &Graph, environment: &str, parent: Option<&ObjectId>) -> TreeLevel {
    let parent_node = parent.and_then(|p| graph.get(p));
    let mut level: Vec<&Node> = candidates(graph, parent_node.and_then(host_of))
        .into_iter()
        .filter(|n| tree_parent(graph, n).map(Node::id) == parent)
        .collect();
    // Children counted once per host the rows are on (one pass over each), not per row.
    let mut children: FxHashMap<&ObjectId, usize> = level.iter().map(|n| (n.id(), 0)).collect();
    let hosts: BTreeSet<Option<&str>> = level.iter().map(|n| host_of(n)).collect();
    for host in hosts {
        for node in candidates(graph, host) {
            if let Some(count) = tree_parent(graph, node).and_then(|p| children.get_mut(p.id())) {
                *count += 1;
            }
        }
    }
    let rank = |t: ObjectType| ObjectType::ALL.iter().position(|x| *x == t);
    level.sort_by(|a, b| {
        (rank(a.object_type()), &a.object.name, a.id()).cmp(&(
            rank(b.object_type()),
            &b.object.name,
            b.id(),
        ))
    });
    let left_out = level.len().saturating_sub(MAX_TREE_ROWS);
    level.truncate(MAX_TREE_ROWS);
    TreeLevel {
        environment: environment.to_owned(),
        parent: parent.map(ToString::to_string),
        rows: level
            .iter()
            .map(|n| TreeRow {
                object: summary(n),
                children: children.get(n.id()).copied().unwrap_or(0),
            })
            .collect(),
        left_out,
    }
}

/// The graph of `ids` and `links`: objects that are not in `graph` (a removed far end) are
/// left out with their links.
fn graph_view<'l>(
    graph: &Graph,
    environment: &str,
    of: &GraphOf,
    ids: BTreeSet<&ObjectId>,
    links: impl Iterator<Item = &'l Link>,
) -> GraphView {
    let nodes: BTreeMap<&ObjectId, &Node> = ids
        .into_iter()
        .filter_map(|id| graph.get(id).map(|n| (id, n)))
        .collect();
    let mut links: Vec<&Link> = links
        .filter(|l| nodes.contains_key(&l.source) && nodes.contains_key(&l.target))
        .collect();
    links.sort_by_key(|l| LinkKey::of(l));
    links.dedup_by_key(|l| LinkKey::of(l));
    let (focal_point, host) = match of {
        GraphOf::Clique(focal) => (Some(focal.to_string()), None),
        GraphOf::Host(host) => (None, Some(host.clone())),
    };
    GraphView {
        environment: environment.to_owned(),
        focal_point,
        host,
        nodes: nodes.values().map(|n| summary(n)).collect(),
        links: links
            .into_iter()
            .map(|link| link_view(link, Some(&|id: &ObjectId| graph.get(id))))
            .collect(),
    }
}

/// A host's objects and every link with an end among them, with the far ends.
fn host_graph<'l>(
    graph: &Graph,
    environment: &str,
    host: &str,
    incident: impl Fn(&ObjectId) -> Vec<&'l Link>,
) -> Result<GraphView, ServiceError> {
    let on_host: Vec<&ObjectId> = graph.ids_on_host(host).collect();
    if on_host.is_empty() {
        return Err(ServiceError::NotFound(format!(
            "no host `{host}` in `{environment}`"
        )));
    }
    let links: Vec<&Link> = on_host.iter().flat_map(|id| incident(id)).collect();
    let mut ids: BTreeSet<&ObjectId> = on_host.into_iter().collect();
    for link in &links {
        ids.insert(&link.source);
        ids.insert(&link.target);
    }
    Ok(graph_view(
        graph,
        environment,
        &GraphOf::Host(host.to_owned()),
        ids,
        links.into_iter(),
    ))
}

impl Service {
    /// The graph of a clique or a host, live or at `at`.
    pub async fn graph(
        &self,
        who: &Principal,
        environment: &str,
        of: &GraphOf,
        at: Option<Timestamp>,
    ) -> Result<GraphView, ServiceError> {
        who.require_view(environment)?;
        match at {
            None => {
                let engine = self.sink().engine();
                let env = super::inventory::environment_of(&engine, environment)?;
                match of {
                    GraphOf::Clique(focal) => {
                        let clique = env.cliques.get(focal).ok_or_else(|| {
                            ServiceError::NotFound(format!(
                                "no clique of `{focal}` in `{environment}`"
                            ))
                        })?;
                        let links = clique
                            .links
                            .iter()
                            .filter_map(|key| env.links.get(key))
                            .chain(&clique.implicit_links);
                        Ok(graph_view(
                            &env.graph,
                            environment,
                            of,
                            clique.nodes.iter().collect(),
                            links,
                        ))
                    }
                    GraphOf::Host(host) => host_graph(&env.graph, environment, host, |id| {
                        env.links.incident(id).collect()
                    }),
                }
            }
            Some(at) => {
                let graph = self.graph_at(environment, at).await?;
                let store = self.store();
                let links = store.links_at(environment, at).await?;
                match of {
                    GraphOf::Clique(focal) => {
                        let clique = store
                            .cliques_at(environment, at)
                            .await?
                            .into_iter()
                            .find(|c| &c.focal_point == focal)
                            .ok_or_else(|| {
                                ServiceError::NotFound(format!(
                                    "no clique of `{focal}` in `{environment}` at {at}"
                                ))
                            })?;
                        let keys: BTreeSet<LinkKey> = clique.links.iter().cloned().collect();
                        let kept = links
                            .iter()
                            .filter(|l| keys.contains(&LinkKey::of(l)))
                            .chain(&clique.implicit_links);
                        Ok(graph_view(
                            &graph,
                            environment,
                            of,
                            clique.nodes.iter().collect(),
                            kept,
                        ))
                    }
                    GraphOf::Host(host) => {
                        let mut by_end: HashMap<&ObjectId, Vec<&Link>> = HashMap::new();
                        for link in &links {
                            by_end.entry(&link.source).or_default().push(link);
                            by_end.entry(&link.target).or_default().push(link);
                        }
                        host_graph(&graph, environment, host, |id| {
                            by_end.get(id).cloned().unwrap_or_default()
                        })
                    }
                }
            }
        }
    }

    /// One level of an environment's tree, live or at `at`.
    pub async fn tree(
        &self,
        who: &Principal,
        environment: &str,
        parent: Option<&ObjectId>,
        at: Option<Timestamp>,
    ) -> Result<TreeLevel, ServiceError> {
        who.require_view(environment)?;
        self.with_graph(environment, at, |graph| {
            if let Some(parent) = parent.filter(|p| !graph.contains(p)) {
                return Err(ServiceError::NotFound(format!(
                    "no object `{parent}` in `{environment}`"
                )));
            }
            Ok(tree_level(graph, environment, parent))
        })
        .await
    }

    /// The versions of an object, newest first (at most `limit`, [`MAX_VERSIONS`] by default).
    pub async fn object_versions(
        &self,
        who: &Principal,
        environment: &str,
        id: &ObjectId,
        limit: Option<usize>,
    ) -> Result<Vec<ObjectVersionView>, ServiceError> {
        who.require_view(environment)?;
        let limit = match limit {
            None => MAX_VERSIONS,
            Some(n @ 1..=MAX_VERSIONS) => n,
            Some(_) => {
                return Err(ServiceError::BadRequest(format!(
                    "limit must be 1 to {MAX_VERSIONS}"
                )));
            }
        };
        let versions = self.store().object_versions(environment, id, limit).await?;
        if versions.is_empty() {
            return Err(ServiceError::NotFound(format!(
                "no object `{id}` in `{environment}`, now or in its history"
            )));
        }
        // Paths are the object's own as each version names its parent; the parents themselves
        // are looked up live (a version's view is for reading its attributes and status).
        let engine = self.sink().engine();
        let empty = Graph::new();
        let graph = engine
            .environment(environment)
            .map_or(&empty, |env| &env.graph);
        Ok(versions
            .into_iter()
            .map(|version| ObjectVersionView {
                valid_from: version.valid_from.to_string(),
                valid_to: version.valid_to.map(|t| t.to_string()),
                object: object_view(graph, &version.value),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use calipso_proto::Object;

    use super::*;

    /// An object as the agents and the cloud adapter make them: an id, a name, the host it is
    /// on (agents' objects), a parent.
    fn node(
        id: &str,
        object_type: ObjectType,
        name: &str,
        host: Option<&str>,
        parent: Option<(&str, ObjectType)>,
    ) -> Node {
        let mut object = Object::new(ObjectId::from_raw(id), object_type, name, "env");
        if let Some(host) = host {
            object = object.with_host(host);
        }
        if let Some((parent, parent_type)) = parent {
            object = object.with_parent(ObjectId::from_raw(parent), parent_type);
        }
        Node::new(object, Timestamp::from_unix_micros(1))
    }

    fn graph() -> Graph {
        use ObjectType::{AvailabilityZone, Host, HostPnic, Instance, Network, Region, Vnic};
        let h1 = Some("h1");
        let mut zone = node("zone:z1", AvailabilityZone, "z1", None, None);
        zone.object
            .attributes
            .extra
            .insert("hosts", vec!["h3".to_owned()].into());
        let mut graph = Graph::new();
        for n in [
            node("region:r1", Region, "r1", None, None),
            node("host:h1", Host, "h1", h1, Some(("region:r1", Region))),
            // Its zone was never read: the host is a root rather than lost.
            node(
                "host:h2",
                Host,
                "h2",
                Some("h2"),
                Some(("zone:gone", AvailabilityZone)),
            ),
            node("instance:b", Instance, "vm-b", h1, Some(("host:h1", Host))),
            node("instance:a", Instance, "vm-a", h1, Some(("host:h1", Host))),
            node(
                "vnic:h1:tap-a",
                Vnic,
                "tap-a",
                h1,
                Some(("instance:a", Instance)),
            ),
            node(
                "host_pnic:h1:1",
                HostPnic,
                "eth0",
                h1,
                Some(("host:h1", Host)),
            ),
            // Its instance is gone: it hangs under its host.
            node(
                "vnic:h1:tap-c",
                Vnic,
                "tap-c",
                h1,
                Some(("instance:c", Instance)),
            ),
            // A parent that names itself would make a cycle of one.
            node(
                "network:loop",
                Network,
                "loop",
                None,
                Some(("network:loop", Network)),
            ),
            // Agents give hosts no parent: Nova's zone lists them, the sole region holds it.
            node("host:h3", Host, "h3", Some("h3"), None),
            zone,
        ] {
            graph.upsert(n);
        }
        graph
    }

    fn ids_and_children(level: &TreeLevel) -> Vec<(&str, usize)> {
        level
            .rows
            .iter()
            .map(|r| (r.object.id.as_str(), r.children))
            .collect()
    }

    #[test]
    fn roots_are_what_has_no_parent_in_the_model() {
        let graph = graph();
        let level = tree_level(&graph, "env", None);
        assert_eq!(
            ids_and_children(&level),
            vec![("region:r1", 2), ("host:h2", 0), ("network:loop", 0)]
        );
        assert_eq!(level.left_out, 0);
    }

    #[test]
    fn hosts_sit_under_the_zone_that_lists_them_and_zones_under_the_sole_region() {
        let graph = graph();
        let region = tree_level(&graph, "env", Some(&ObjectId::from_raw("region:r1")));
        assert_eq!(
            ids_and_children(&region),
            vec![("zone:z1", 1), ("host:h1", 4)]
        );
        let zone = tree_level(&graph, "env", Some(&ObjectId::from_raw("zone:z1")));
        assert_eq!(ids_and_children(&zone), vec![("host:h3", 0)]);
    }

    #[test]
    fn a_level_is_sorted_by_type_then_name_with_child_counts() {
        let graph = graph();
        let level = tree_level(&graph, "env", Some(&ObjectId::from_raw("host:h1")));
        assert_eq!(
            ids_and_children(&level),
            vec![
                ("instance:a", 1),
                ("instance:b", 0),
                ("vnic:h1:tap-c", 0),
                ("host_pnic:h1:1", 0)
            ]
        );
        assert_eq!(level.parent.as_deref(), Some("host:h1"));
    }
}
