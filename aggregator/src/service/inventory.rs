//! Reads of the model: inventory, links, cliques, aggregates, agents, messages. Without `at`
//! they answer from the engine in memory; with `at` from the store's history, through the
//! same filters.

use std::collections::BTreeMap;

use calipso_proto::{Link, LinkState, LinkType, ObjectId, ObjectType, StatusLevel, Timestamp};
use rustc_hash::FxHashMap;
use serde::Serialize;
use utoipa::ToSchema;

use super::{Page, Principal, Service, ServiceError, decode_cursor, encode_cursor, page_limit};
use crate::cliques::Clique;
use crate::graph::{Graph, Node};
use crate::links::LinkKey;
use crate::monitoring::{
    StatusSummary, clique_status, effective_level, effective_status, link_status,
};
use crate::store::{AgentRecord, MessageLevel, MessageQuery, Store};

/// An object as the API shows it: the model's fields and where it sits in the tree.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ObjectView {
    pub id: String,
    #[serde(rename = "type")]
    pub object_type: String,
    pub name: String,
    pub environment: String,
    pub host: Option<String>,
    pub parent_id: Option<String>,
    pub parent_type: Option<String>,
    /// `/`-joined ids from the environment down to the object.
    pub id_path: String,
    /// `/`-joined names from the environment down to the object.
    pub name_path: String,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    #[schema(value_type = Object)]
    pub status: serde_json::Value,
    /// `up` or `down`: what links to the object take their state from.
    pub state: String,
    /// The host's agent is disconnected: the object is as last reported.
    pub stale: bool,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LinkView {
    /// `link_type:source->target`.
    pub id: String,
    pub link_type: String,
    pub source: String,
    pub target: String,
    pub state: String,
    pub host: Option<String>,
    pub implicit: bool,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// Down is an error; otherwise the worse of its ends' statuses. Given where the ends are
    /// at hand (listings, graphs), absent in the live stream.
    pub status: Option<StatusSummary>,
}

/// A link as a clique lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LinkRef {
    pub link_type: String,
    pub source: String,
    pub target: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CliqueView {
    pub environment: String,
    pub focal_point: String,
    pub focal_point_type: String,
    pub clique_type: String,
    pub constraints: BTreeMap<String, Vec<String>>,
    pub nodes: Vec<String>,
    pub links: Vec<LinkRef>,
    pub implicit_links: Vec<LinkView>,
    /// The worst member's status, naming it. Absent from live-stream events, which carry a
    /// member's status change as that object's event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusSummary>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Aggregates {
    pub environment: String,
    pub objects: usize,
    pub objects_by_type: BTreeMap<String, usize>,
    pub objects_by_state: BTreeMap<String, usize>,
    pub objects_by_status: BTreeMap<String, usize>,
    /// Per object type, its objects by status.
    pub status_by_type: BTreeMap<String, BTreeMap<String, usize>>,
    pub stale_objects: usize,
    pub links: usize,
    pub links_by_type: BTreeMap<String, usize>,
    pub links_by_state: BTreeMap<String, usize>,
    pub cliques: usize,
    pub cliques_by_focal_point_type: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentView {
    pub host: String,
    pub environment: String,
    pub agent_version: String,
    /// `connected` or `disconnected`.
    pub state: String,
    pub last_seen: String,
    /// The agent's run, a 64-bit number sent as a string: JavaScript's numbers would round it.
    pub epoch: Option<String>,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageView {
    pub id: i64,
    pub environment: Option<String>,
    pub level: String,
    pub source: String,
    pub related_object: Option<String>,
    pub text: String,
    pub at: String,
}

/// Inventory filters, as the original's `/inventory` plus type, host, name and attributes.
#[derive(Debug, Clone, Default)]
pub struct InventoryQuery {
    pub environment: String,
    pub object_type: Option<ObjectType>,
    pub host: Option<String>,
    pub parent_id: Option<ObjectId>,
    /// With `parent_id`: every descendant, not only children.
    pub sub_tree: bool,
    pub id_path: Option<String>,
    pub name_path: Option<String>,
    pub name: Option<regex::Regex>,
    pub attributes: Vec<(String, String)>,
    pub state: Option<LinkState>,
    pub stale: Option<bool>,
    pub at: Option<Timestamp>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct LinkQuery {
    pub environment: String,
    pub link_type: Option<calipso_proto::LinkType>,
    pub state: Option<LinkState>,
    pub host: Option<String>,
    pub source_id: Option<ObjectId>,
    pub target_id: Option<ObjectId>,
    pub attributes: Vec<(String, String)>,
    pub at: Option<Timestamp>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct CliqueQuery {
    pub environment: String,
    pub focal_point_type: Option<ObjectType>,
    /// Cliques that contain this object.
    pub object: Option<ObjectId>,
    /// Cliques that contain a link of this type.
    pub link_type: Option<calipso_proto::LinkType>,
    /// Cliques that contain the link with these ends (and `link_type`, when given).
    pub link_source: Option<ObjectId>,
    pub link_target: Option<ObjectId>,
    pub at: Option<Timestamp>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// How deep a parent chain is followed: a cycle in reported parents must not hang a request.
const MAX_DEPTH: usize = 32;

/// The node above `node` in the inventory tree: its parent; for a host its agent reported
/// without one, the availability zone whose Nova host list names it; for a zone without one,
/// the environment's region when there is exactly one; for another object on a host whose
/// parent is not (or no longer) in the model, that host. So the tree reads region → zone →
/// host → … as the original's did, though agents know nothing of zones, and nothing on a host
/// is lost from it.
pub fn tree_parent<'g>(graph: &'g Graph, node: &Node) -> Option<&'g Node> {
    if let Some(parent) = node
        .object
        .parent
        .as_ref()
        .and_then(|p| graph.get(&p.id))
        .filter(|p| p.id() != node.id())
    {
        return Some(parent);
    }
    match node.object_type() {
        ObjectType::Host => graph
            .of_type(ObjectType::AvailabilityZone)
            .find(|zone| zone.texts("hosts").contains(&node.object.name.as_str())),
        ObjectType::AvailabilityZone => {
            let mut regions = graph.of_type(ObjectType::Region);
            let first = regions.next();
            first.filter(|_| regions.next().is_none())
        }
        // An agent's object whose parent is gone (or that has none) hangs under its host.
        _ => node
            .object
            .host
            .as_deref()
            .and_then(|host| graph.get(&ObjectId::host(host))),
    }
}

/// The ids and names from the root down to `node`.
fn paths(graph: &Graph, node: &Node) -> (String, String) {
    let mut chain = vec![node];
    let mut current = node;
    while let Some(parent) = tree_parent(graph, current) {
        if chain.len() >= MAX_DEPTH || chain.iter().any(|n| n.id() == parent.id()) {
            break;
        }
        chain.push(parent);
        current = parent;
    }
    let environment = &node.object.environment;
    let mut id_path = format!("/{environment}");
    let mut name_path = format!("/{environment}");
    for n in chain.iter().rev() {
        id_path.push('/');
        id_path.push_str(n.id().as_str());
        name_path.push('/');
        name_path.push_str(&n.object.name);
    }
    (id_path, name_path)
}

pub fn object_view(graph: &Graph, node: &Node) -> ObjectView {
    let (id_path, name_path) = paths(graph, node);
    let object = &node.object;
    ObjectView {
        id: object.id.to_string(),
        object_type: object.object_type.to_string(),
        name: object.name.to_string(),
        environment: object.environment.to_string(),
        host: object.host.as_deref().map(str::to_owned),
        parent_id: object.parent.as_ref().map(|p| p.id.to_string()),
        parent_type: object.parent.as_ref().map(|p| p.object_type.to_string()),
        id_path,
        name_path,
        attributes: serde_json::to_value(&object.attributes).unwrap_or_default(),
        status: serde_json::to_value(effective_status(node)).unwrap_or_default(),
        state: node.state().as_str().to_owned(),
        stale: node.stale,
        first_seen: node.first_seen.to_string(),
        last_seen: node.last_seen.to_string(),
    }
}

pub fn link_view(link: &Link, ends: Option<Members<'_, '_>>) -> LinkView {
    LinkView {
        status: ends.map(|lookup| link_status(link, lookup)),
        id: LinkKey::of(link).to_string(),
        link_type: link.link_type.to_string(),
        source: link.source.to_string(),
        target: link.target.to_string(),
        state: link.state.as_str().to_owned(),
        host: link.host.as_deref().map(str::to_owned),
        implicit: link.implicit,
        attributes: serde_json::to_value(&link.attributes).unwrap_or_default(),
    }
}

/// Finds an environment's object by id: in the live graph, or among the objects at a time.
pub type Members<'m, 'a> = &'m dyn Fn(&ObjectId) -> Option<&'a Node>;

/// A clique as the API shows it, with its status when `members` finds its nodes (live, or at
/// the clique's time).
pub fn clique_view(
    environment: &str,
    clique: &Clique,
    members: Option<Members<'_, '_>>,
) -> CliqueView {
    CliqueView {
        status: members.map(|lookup| clique_status(clique, lookup)),
        environment: environment.to_owned(),
        focal_point: clique.focal_point.to_string(),
        focal_point_type: clique.focal_point_type.to_string(),
        clique_type: clique.clique_type.clone(),
        constraints: clique.constraints.clone(),
        nodes: clique.nodes.iter().map(ToString::to_string).collect(),
        links: clique
            .links
            .iter()
            .map(|key| LinkRef {
                link_type: key.link_type.to_string(),
                source: key.source.to_string(),
                target: key.target.to_string(),
            })
            .collect(),
        implicit_links: clique
            .implicit_links
            .iter()
            .map(|link| link_view(link, members))
            .collect(),
    }
}

/// Whether an object's attribute `key` has the value `value` (as text; any item of a list).
fn attribute_matches(node: &Node, key: &str, value: &str) -> bool {
    let attributes = &node.object.attributes;
    match key {
        "mac_address" => attributes
            .mac_address
            .is_some_and(|mac| mac.to_string().eq_ignore_ascii_case(value)),
        "mtu" => attributes.mtu.is_some_and(|mtu| mtu.to_string() == value),
        "link_state" => attributes
            .link_state
            .is_some_and(|state| state.as_str() == value),
        "addresses" => attributes.addresses.iter().any(|prefix| {
            let text = prefix.to_string();
            text == value || text.split('/').next() == Some(value)
        }),
        _ => node.texts(key).contains(&value),
    }
}

fn link_attribute_matches(link: &Link, key: &str, value: &str) -> bool {
    use calipso_proto::AttrValue;
    match link.attributes.get(key) {
        Some(AttrValue::Str(text)) => text == value,
        Some(AttrValue::List(items)) => items.iter().any(|i| i.as_str() == Some(value)),
        Some(other) => {
            let text = serde_json::to_value(other)
                .map(|v| v.to_string())
                .unwrap_or_default();
            text == value
        }
        None => false,
    }
}

impl InventoryQuery {
    fn matches(&self, graph: &Graph, node: &Node) -> bool {
        let object = &node.object;
        if self
            .host
            .as_deref()
            .is_some_and(|h| object.host.as_deref() != Some(h))
            || self.state.is_some_and(|s| node.state() != s)
            || self.stale.is_some_and(|s| node.stale != s)
            || self
                .name
                .as_ref()
                .is_some_and(|re| !re.is_match(&object.name))
            || !self
                .attributes
                .iter()
                .all(|(k, v)| attribute_matches(node, k, v))
        {
            return false;
        }
        if self.parent_id.is_none() && self.id_path.is_none() && self.name_path.is_none() {
            return true;
        }
        let (id_path, name_path) = paths(graph, node);
        if let Some(parent) = &self.parent_id {
            let child = object.parent.as_ref().is_some_and(|p| &p.id == parent);
            let descendant =
                self.sub_tree && id_path.contains(&format!("/{parent}/")) && object.id != *parent;
            if !(child || descendant) {
                return false;
            }
        }
        self.id_path
            .as_ref()
            .is_none_or(|p| id_path.starts_with(p.as_str()))
            && self
                .name_path
                .as_ref()
                .is_none_or(|p| name_path.starts_with(p.as_str()))
    }
}

impl Service {
    /// The graph a read is answered from: the live one, or one rebuilt from history at `at`.
    /// The objects of an environment as they were at `at`, from history (refused before a
    /// compaction's cutoff).
    pub(super) async fn graph_at(
        &self,
        environment: &str,
        at: Timestamp,
    ) -> Result<Graph, ServiceError> {
        self.answerable(Some(at)).await?;
        let mut graph = Graph::new();
        for node in self.store().objects_at(environment, at).await? {
            graph.upsert(node);
        }
        Ok(graph)
    }

    pub(super) async fn with_graph<T>(
        &self,
        environment: &str,
        at: Option<Timestamp>,
        read: impl FnOnce(&Graph) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        match at {
            Some(at) => read(&self.graph_at(environment, at).await?),
            None => {
                let engine = self.sink().engine();
                let env = environment_of(&engine, environment)?;
                read(&env.graph)
            }
        }
    }

    pub async fn inventory(
        &self,
        who: &Principal,
        query: &InventoryQuery,
    ) -> Result<Page<ObjectView>, ServiceError> {
        who.require_view(&query.environment)?;
        let limit = page_limit(query.limit)?;
        let after = query
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c, 2))
            .transpose()?;
        let start_type = after
            .as_ref()
            .map(|parts| {
                parts[0]
                    .parse::<ObjectType>()
                    .map_err(|_| ServiceError::BadRequest("cursor names no object type".into()))
            })
            .transpose()?;
        let after_id = after.map(|parts| ObjectId::from_raw(parts[1].clone()));
        self.with_graph(&query.environment, query.at, |graph| {
            let mut items = Vec::new();
            let mut last: Option<&Node> = None;
            let mut more = false;
            let after_ref = after_id.as_ref();
            let rank = |t: ObjectType| ObjectType::ALL.iter().position(|x| *x == t);
            let position = start_type
                .zip(after_id.as_ref())
                .map(|(t, id)| (rank(t), id));
            let of_type = |n: &Node| query.object_type.is_none_or(|t| n.object_type() == t);
            // A host's objects come from the host index (hundreds), not a scan of all types.
            let candidates: Box<dyn Iterator<Item = &Node>> = match &query.host {
                Some(host) => {
                    let mut on_host: Vec<&Node> = graph
                        .ids_on_host(host)
                        .filter_map(|id| graph.get(id))
                        .filter(|n| of_type(n))
                        .collect();
                    on_host.sort_by(|a, b| {
                        (rank(a.object_type()), a.id()).cmp(&(rank(b.object_type()), b.id()))
                    });
                    Box::new(on_host.into_iter().filter(move |n| {
                        position.is_none_or(|p| (rank(n.object_type()), n.id()) > p)
                    }))
                }
                None => Box::new(
                    ObjectType::ALL
                        .iter()
                        .copied()
                        .filter(|t| query.object_type.is_none_or(|q| q == *t))
                        .skip_while(move |t| start_type.is_some_and(|s| s != *t))
                        .flat_map(|t| {
                            let from = after_ref.filter(|_| Some(t) == start_type);
                            graph.ids_of_type_after(t, from)
                        })
                        .filter_map(|id| graph.get(id)),
                ),
            };
            for node in candidates {
                if !query.matches(graph, node) {
                    continue;
                }
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push(object_view(graph, node));
                last = Some(node);
            }
            let next_cursor = last
                .filter(|_| more)
                .map(|node| encode_cursor(&[&node.object_type().to_string(), node.id().as_str()]));
            Ok(Page { items, next_cursor })
        })
        .await
    }

    /// One object, live or at `at`.
    pub async fn object(
        &self,
        who: &Principal,
        environment: &str,
        id: &ObjectId,
        at: Option<Timestamp>,
    ) -> Result<ObjectView, ServiceError> {
        who.require_view(environment)?;
        self.with_graph(environment, at, |graph| {
            graph
                .get(id)
                .map(|node| object_view(graph, node))
                .ok_or_else(|| {
                    ServiceError::NotFound(format!("no object `{id}` in `{environment}`"))
                })
        })
        .await
    }

    pub async fn links(
        &self,
        who: &Principal,
        query: &LinkQuery,
    ) -> Result<Page<LinkView>, ServiceError> {
        who.require_view(&query.environment)?;
        let limit = page_limit(query.limit)?;
        let after = query
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c, 3))
            .transpose()?
            .map(|parts| -> Result<LinkKey, ServiceError> {
                Ok(LinkKey {
                    link_type: parts[0].parse().map_err(|_| {
                        ServiceError::BadRequest("cursor names no link type".into())
                    })?,
                    source: ObjectId::from_raw(parts[1].clone()),
                    target: ObjectId::from_raw(parts[2].clone()),
                })
            })
            .transpose()?;
        let keep = |link: &Link| {
            query.link_type.is_none_or(|t| link.link_type == t)
                && query.state.is_none_or(|s| link.state == s)
                && query
                    .host
                    .as_deref()
                    .is_none_or(|h| link.host.as_deref() == Some(h))
                && query.source_id.as_ref().is_none_or(|s| &link.source == s)
                && query.target_id.as_ref().is_none_or(|t| &link.target == t)
                && query
                    .attributes
                    .iter()
                    .all(|(k, v)| link_attribute_matches(link, k, v))
                && after.as_ref().is_none_or(|a| &LinkKey::of(link) > a)
        };
        let page = |mut links: Vec<&Link>, ends: Members<'_, '_>| {
            links.sort_by_key(|l| LinkKey::of(l));
            let more = links.len() > limit;
            links.truncate(limit);
            let next_cursor = links.last().filter(|_| more).map(|l| {
                encode_cursor(&[
                    &l.link_type.to_string(),
                    l.source.as_str(),
                    l.target.as_str(),
                ])
            });
            Page {
                items: links
                    .into_iter()
                    .map(|link| link_view(link, Some(ends)))
                    .collect(),
                next_cursor,
            }
        };
        self.answerable(query.at).await?;
        match query.at {
            Some(at) => {
                let links = self.store().links_at(&query.environment, at).await?;
                let objects = self.store().objects_at(&query.environment, at).await?;
                let ends: std::collections::HashMap<&ObjectId, &Node> =
                    objects.iter().map(|n| (n.id(), n)).collect();
                let lookup = |id: &ObjectId| ends.get(id).copied();
                Ok(page(links.iter().filter(|l| keep(l)).collect(), &lookup))
            }
            None => {
                let engine = self.sink().engine();
                let env = environment_of(&engine, &query.environment)?;
                let lookup = |id: &ObjectId| env.graph.get(id);
                Ok(page(
                    env.links.links().filter(|l| keep(l)).collect(),
                    &lookup,
                ))
            }
        }
    }

    pub async fn cliques(
        &self,
        who: &Principal,
        query: &CliqueQuery,
    ) -> Result<Page<CliqueView>, ServiceError> {
        who.require_view(&query.environment)?;
        let limit = page_limit(query.limit)?;
        let after = query
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c, 1))
            .transpose()?
            .map(|mut parts| ObjectId::from_raw(parts.remove(0)));
        let keep = |clique: &Clique| {
            query
                .focal_point_type
                .is_none_or(|t| clique.focal_point_type == t)
                && query
                    .object
                    .as_ref()
                    .is_none_or(|o| clique.nodes.contains(o))
                && clique_has_link(clique, query)
                && after.as_ref().is_none_or(|a| &clique.focal_point > a)
        };
        let environment = &query.environment;
        self.answerable(query.at).await?;
        let mut found: Vec<CliqueView> = match query.at {
            Some(at) => self.cliques_at(environment, at, keep).await?,
            None => {
                let engine = self.sink().engine();
                let env = environment_of(&engine, environment)?;
                let lookup = |id: &ObjectId| env.graph.get(id);
                let mut cliques: Vec<&Clique> = env.cliques.cliques().filter(|c| keep(c)).collect();
                cliques.sort_by(|a, b| a.focal_point.cmp(&b.focal_point));
                cliques
                    .into_iter()
                    .take(limit + 1)
                    .map(|c| clique_view(environment, c, Some(&lookup)))
                    .collect()
            }
        };
        found.sort_by(|a, b| a.focal_point.cmp(&b.focal_point));
        let more = found.len() > limit;
        found.truncate(limit);
        let next_cursor = found
            .last()
            .filter(|_| more)
            .map(|c| encode_cursor(&[&c.focal_point]));
        Ok(Page {
            items: found,
            next_cursor,
        })
    }

    /// The clique of a focal point, live or at `at`.
    pub async fn clique(
        &self,
        who: &Principal,
        environment: &str,
        focal_point: &ObjectId,
        at: Option<Timestamp>,
    ) -> Result<CliqueView, ServiceError> {
        who.require_view(environment)?;
        let missing =
            || ServiceError::NotFound(format!("no clique of `{focal_point}` in `{environment}`"));
        self.answerable(at).await?;
        match at {
            Some(at) => self
                .cliques_at(environment, at, |c| &c.focal_point == focal_point)
                .await?
                .into_iter()
                .next()
                .ok_or_else(missing),
            None => {
                let engine = self.sink().engine();
                let env = engine.environment(environment);
                let lookup = |id: &ObjectId| env.and_then(|env| env.graph.get(id));
                env.and_then(|env| env.cliques.get(focal_point))
                    .map(|c| clique_view(environment, c, Some(&lookup)))
                    .ok_or_else(missing)
            }
        }
    }

    /// The cliques `keep` accepts as they were at a past time, each with its status then.
    async fn cliques_at(
        &self,
        environment: &str,
        at: Timestamp,
        keep: impl Fn(&Clique) -> bool,
    ) -> Result<Vec<CliqueView>, ServiceError> {
        let cliques = self.store().cliques_at(environment, at).await?;
        let members: FxHashMap<ObjectId, Node> = self
            .store()
            .objects_at(environment, at)
            .await?
            .into_iter()
            .map(|node| (node.id().clone(), node))
            .collect();
        let lookup = |id: &ObjectId| members.get(id);
        Ok(cliques
            .iter()
            .filter(|c| keep(c))
            .map(|c| clique_view(environment, c, Some(&lookup)))
            .collect())
    }

    pub fn aggregates(
        &self,
        who: &Principal,
        environment: &str,
    ) -> Result<Aggregates, ServiceError> {
        who.require_view(environment)?;
        let engine = self.sink().engine();
        let env = environment_of(&engine, environment)?;
        let mut aggregates = Aggregates {
            environment: environment.to_owned(),
            objects: env.graph.len(),
            objects_by_type: BTreeMap::new(),
            objects_by_state: BTreeMap::new(),
            objects_by_status: BTreeMap::new(),
            status_by_type: BTreeMap::new(),
            stale_objects: 0,
            links: env.links.len(),
            links_by_type: BTreeMap::new(),
            links_by_state: BTreeMap::new(),
            cliques: env.cliques.len(),
            cliques_by_focal_point_type: BTreeMap::new(),
        };
        // Counted by value, named once at the end: half a million objects and more links
        // are read here, and a string made for each would cost more than the reading.
        let mut by_type_and_status: FxHashMap<(ObjectType, StatusLevel), usize> =
            FxHashMap::default();
        let mut by_state: FxHashMap<LinkState, usize> = FxHashMap::default();
        for node in env.graph.nodes() {
            // A stale object counts as unknown, as it is shown.
            *by_type_and_status
                .entry((node.object_type(), effective_level(node)))
                .or_default() += 1;
            *by_state.entry(node.state()).or_default() += 1;
            aggregates.stale_objects += usize::from(node.stale);
        }
        for ((object_type, status), count) in by_type_and_status {
            let (object_type, status) = (object_type.to_string(), status.as_str().to_owned());
            *aggregates
                .objects_by_type
                .entry(object_type.clone())
                .or_default() += count;
            *aggregates
                .objects_by_status
                .entry(status.clone())
                .or_default() += count;
            *aggregates
                .status_by_type
                .entry(object_type)
                .or_default()
                .entry(status)
                .or_default() += count;
        }
        for (state, count) in by_state {
            aggregates
                .objects_by_state
                .insert(state.as_str().to_owned(), count);
        }
        let mut links_by: FxHashMap<(LinkType, LinkState), usize> = FxHashMap::default();
        for link in env.links.links() {
            *links_by.entry((link.link_type, link.state)).or_default() += 1;
        }
        for ((link_type, state), count) in links_by {
            *aggregates
                .links_by_type
                .entry(link_type.to_string())
                .or_default() += count;
            *aggregates
                .links_by_state
                .entry(state.as_str().to_owned())
                .or_default() += count;
        }
        for clique in env.cliques.cliques() {
            *aggregates
                .cliques_by_focal_point_type
                .entry(clique.focal_point_type.to_string())
                .or_default() += 1;
        }
        Ok(aggregates)
    }

    /// The agents of the environments the caller may see.
    pub fn agents(&self, who: &Principal, environment: Option<&str>) -> Vec<AgentView> {
        self.sink()
            .agents()
            .into_iter()
            .filter(|a| environment.is_none_or(|e| a.environment == e))
            .filter(|a| who.grants.can_view(&a.environment))
            .map(agent_view)
            .collect()
    }

    pub async fn messages(
        &self,
        who: &Principal,
        mut query: MessageQuery,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Page<MessageView>, ServiceError> {
        let limit = page_limit(limit)?;
        let visible = |env: &String| who.grants.can_view(env);
        query.environments = match query.environments.take() {
            Some(requested) => {
                if let Some(denied) = requested.iter().find(|e| !visible(e)) {
                    return Err(ServiceError::Forbidden(format!(
                        "you have no view-env grant on environment `{denied}`"
                    )));
                }
                Some(requested)
            }
            // Messages without an environment are the aggregator's own: admins only.
            None if who.grants.admin => None,
            None => Some(
                self.environment_names()
                    .into_iter()
                    .filter(visible)
                    .collect(),
            ),
        };
        query.after = cursor
            .map(|c| {
                decode_cursor(c, 1)?.remove(0).parse::<i64>().map_err(|_| {
                    ServiceError::BadRequest(format!("cursor `{c}` is not one this API issued"))
                })
            })
            .transpose()?;
        query.limit = u32::try_from(limit + 1).unwrap_or(u32::MAX);
        let mut found = self.store().query_messages(&query).await?;
        let more = found.len() > limit;
        found.truncate(limit);
        let next_cursor = found
            .last()
            .filter(|_| more)
            .map(|m| encode_cursor(&[&m.id.to_string()]));
        Ok(Page {
            items: found
                .into_iter()
                .map(|stored| MessageView {
                    id: stored.id,
                    environment: stored.message.environment,
                    level: stored.message.level.as_str().to_owned(),
                    source: stored.message.source,
                    related_object: stored.message.related_object.map(|o| o.to_string()),
                    text: stored.message.text,
                    at: stored.message.at.to_string(),
                })
                .collect(),
            next_cursor,
        })
    }

    /// Every environment the engine holds.
    pub fn environment_names(&self) -> Vec<String> {
        self.sink()
            .engine()
            .environments()
            .map(|e| e.config.name.clone())
            .collect()
    }
}

/// An environment of the engine, or a 404 naming it.
pub(super) fn environment_of<'e>(
    engine: &'e crate::engine::Engine,
    name: &str,
) -> Result<&'e crate::engine::Environment, ServiceError> {
    engine
        .environment(name)
        .ok_or_else(|| ServiceError::NotFound(format!("no environment `{name}`")))
}

fn clique_has_link(clique: &Clique, query: &CliqueQuery) -> bool {
    if query.link_type.is_none() && query.link_source.is_none() && query.link_target.is_none() {
        return true;
    }
    clique.links.iter().any(|key| {
        query.link_type.is_none_or(|t| key.link_type == t)
            && query.link_source.as_ref().is_none_or(|s| &key.source == s)
            && query.link_target.as_ref().is_none_or(|t| &key.target == t)
    })
}

fn agent_view(record: AgentRecord) -> AgentView {
    AgentView {
        host: record.host,
        environment: record.environment,
        agent_version: record.agent_version,
        state: record.state.as_str().to_owned(),
        last_seen: record.last_seen.to_string(),
        epoch: record.epoch.map(|e| e.to_string()),
        seq: record.seq,
    }
}

/// The message levels by name, for query parsing.
pub fn parse_level(text: &str) -> Option<MessageLevel> {
    [
        MessageLevel::Info,
        MessageLevel::Warning,
        MessageLevel::Error,
    ]
    .into_iter()
    .find(|l| l.as_str() == text)
}
