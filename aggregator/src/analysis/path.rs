//! Path: the chain of objects and links a packet between two endpoints crosses — vNICs,
//! bridges and veths, the vswitch, the tunnel endpoint and the NIC under it, the tunnel across
//! the fabric, and the same on the far side — each with its state, and where it breaks.

use std::collections::VecDeque;

use calipso_proto::{AttrValue, Link, LinkType, ObjectId, ObjectType};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AnalysisError, Hop};
use crate::engine::Environment;
use crate::graph::Node;

/// The link types a packet between two endpoints crosses: from a VM or namespace through its
/// vNIC, bridges and veths to the vswitch (not the `vconnector-vedge` summary of a hybrid plug:
/// the packet crosses its veth), then over a tunnel (`otep-otep`) or a vswitch or
/// bridge uplink onto a provider network. A tunnel endpoint's NIC is not a hop of its own
/// kind: it is put in around the tunnel it carries.
const FORWARDING: [&str; 11] = [
    "instance-vnic",
    "vservice-vnic",
    "vnic-vnic",
    "vnic-vconnector",
    "vnic-vedge",
    "vedge-otep",
    "otep-vconnector",
    "otep-otep",
    "vedge-host_pnic",
    "vconnector-host_pnic",
    "host_pnic-network",
];

/// The chain between two endpoints, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PathReport {
    pub from: String,
    pub to: String,
    /// The networks both endpoints are on, which the path keeps to (empty: not known).
    pub networks: Vec<String>,
    /// `up` (every hop passes traffic), `down` (a hop does not: see `broken_at`) or `none` (no
    /// chain of links joins the endpoints).
    pub state: String,
    pub hops: Vec<Hop>,
    /// The first hop, from `from`, that is down or is reached over a link that is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<Hop>,
    pub summary: String,
}

fn forwarding_types() -> Vec<LinkType> {
    FORWARDING.iter().filter_map(|t| t.parse().ok()).collect()
}

/// The networks an endpoint is on: those its own links carry.
fn networks_of(env: &Environment, id: &ObjectId) -> Vec<String> {
    let mut networks: Vec<String> = env
        .links
        .incident(id)
        .filter_map(|l| l.attributes.get("network").and_then(AttrValue::as_str))
        .map(str::to_owned)
        .collect();
    networks.sort();
    networks.dedup();
    networks
}

/// Where an endpoint's side of a path ends: the tunnel endpoints and NICs its clique reaches.
fn side(env: &Environment, id: &ObjectId) -> String {
    let Some(clique) = env.cliques.get(id) else {
        return "nothing it depends on (it has no clique)".to_owned();
    };
    let ends: Vec<String> = clique
        .nodes
        .iter()
        .filter(|n| {
            matches!(
                n.object_type(),
                Some(ObjectType::Otep | ObjectType::HostPnic)
            )
        })
        .map(|n| format!("`{n}`"))
        .collect();
    if ends.is_empty() {
        "no tunnel endpoint or NIC".to_owned()
    } else {
        ends.join(", ")
    }
}

fn is_endpoint_type(object_type: ObjectType) -> bool {
    matches!(
        object_type,
        ObjectType::Instance | ObjectType::Vservice | ObjectType::Vnic
    )
}

/// The path from `from` to `to` (instances, vservices or vNICs).
pub fn path(
    env: &Environment,
    from: &ObjectId,
    to: &ObjectId,
) -> Result<PathReport, AnalysisError> {
    let mut endpoints = Vec::with_capacity(2);
    for id in [from, to] {
        let node = env
            .graph
            .get(id)
            .ok_or_else(|| AnalysisError::UnknownObject(id.clone()))?;
        if !is_endpoint_type(node.object_type()) {
            return Err(AnalysisError::Unsupported(format!(
                "`{id}` is a {}: a path runs between instances, vservices or vNICs",
                node.object_type()
            )));
        }
        endpoints.push(node);
    }
    let (from_networks, to_networks) = (networks_of(env, from), networks_of(env, to));
    let shared: Vec<String> = from_networks
        .iter()
        .filter(|n| to_networks.contains(n))
        .cloned()
        .collect();
    let report =
        |state: &str, hops: Vec<Hop>, broken_at: Option<Hop>, summary: String| PathReport {
            from: from.to_string(),
            to: to.to_string(),
            networks: shared.clone(),
            state: state.to_owned(),
            hops,
            broken_at,
            summary,
        };
    if !from_networks.is_empty() && !to_networks.is_empty() && shared.is_empty() {
        return Ok(report(
            "none",
            Vec::new(),
            None,
            format!(
                "no path: `{from}` is on {} and `{to}` on {}; they share no network (a router between them is not followed)",
                from_networks.join(", "),
                to_networks.join(", ")
            ),
        ));
    }
    // Each endpoint's clique holds what it depends on up to the wire; a packet between them
    // stays within the two (joined by a tunnel, a shared vswitch or bridge, or a network), so
    // the search looks there first and the rest of the environment only if that finds nothing.
    let cliques: Option<FxHashSet<&ObjectId>> = match (env.cliques.get(from), env.cliques.get(to)) {
        (Some(a), Some(b)) => Some(a.nodes.iter().chain(b.nodes.iter()).collect()),
        _ => None,
    };
    let chain = search(env, from, to, &shared, cliques.as_ref())
        .or_else(|| cliques.and_then(|_| search(env, from, to, &shared, None)));
    let Some(chain) = chain else {
        return Ok(report(
            "none",
            Vec::new(),
            None,
            format!(
                "no path{}: `{from}` reaches {} and `{to}` reaches {}, and no tunnel, shared vswitch, bridge or network joins them",
                if shared.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", shared.join(", "))
                },
                side(env, from),
                side(env, to),
            ),
        ));
    };
    let hops = with_tunnel_nics(env, &chain);
    let broken_at = hops.iter().find(|h| h.is_down()).cloned();
    let summary = match &broken_at {
        None => format!(
            "{} hops from `{from}` to `{to}`, all up",
            hops.len().saturating_sub(1)
        ),
        Some(hop) => format!(
            "broken at {} `{}` ({}{})",
            hop.object_type,
            hop.id,
            if hop.state == "down" {
                "down"
            } else {
                "reached over a link that is down"
            },
            hop.link_type
                .as_deref()
                .map(|t| format!(", over {t}"))
                .unwrap_or_default()
        ),
    };
    let state = if broken_at.is_some() { "down" } else { "up" };
    Ok(report(state, hops, broken_at, summary))
}

/// Breadth-first over forwarding links that keep to the shared networks, through no other
/// instance or vservice (and only through the objects `within`, when given): the objects
/// from `from` to `to` with the link into each.
fn search<'e>(
    env: &'e Environment,
    from: &'e ObjectId,
    to: &ObjectId,
    networks: &[String],
    within: Option<&FxHashSet<&ObjectId>>,
) -> Option<Vec<(&'e Node, Option<&'e Link>)>> {
    let types = forwarding_types();
    let on_networks = |link: &Link| {
        networks.is_empty()
            || link
                .attributes
                .get("network")
                .and_then(AttrValue::as_str)
                .is_none_or(|n| networks.iter().any(|s| s == n))
    };
    let mut came_from: FxHashMap<&ObjectId, Option<(&ObjectId, &Link)>> =
        FxHashMap::from_iter([(from, None)]);
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            break;
        }
        let passes_through = at == from
            || !matches!(
                at.object_type(),
                Some(ObjectType::Instance | ObjectType::Vservice)
            );
        if !passes_through {
            continue;
        }
        for link in env.links.incident(at) {
            if !types.contains(&link.link_type) || !on_networks(link) {
                continue;
            }
            let next = if link.source == *at {
                &link.target
            } else {
                &link.source
            };
            let in_scope = within.is_none_or(|scope| scope.contains(next));
            if in_scope && !came_from.contains_key(next) && env.graph.contains(next) {
                came_from.insert(next, Some((at, link)));
                queue.push_back(next);
            }
        }
    }
    let mut backwards = Vec::new();
    let mut at: &ObjectId = came_from.get_key_value(to)?.0;
    loop {
        let step = *came_from.get(at)?;
        backwards.push((env.graph.get(at)?, step.map(|(_, link)| link)));
        match step {
            Some((previous, _)) => at = previous,
            None => break,
        }
    }
    backwards.reverse();
    Some(backwards)
}

/// The chain as hops, with each tunnel's NICs around it: `otep → its NIC → (otep-otep) → the
/// far NIC → the far otep`, so a NIC that is down breaks the path where it carries it.
fn with_tunnel_nics(env: &Environment, chain: &[(&Node, Option<&Link>)]) -> Vec<Hop> {
    let tunnel: LinkType = LinkType::new(ObjectType::Otep, ObjectType::Otep);
    let carrier: LinkType = LinkType::new(ObjectType::Otep, ObjectType::HostPnic);
    let nic_of = |otep: &ObjectId| {
        env.links
            .incident_of_type(otep, carrier)
            .find_map(|l| Some((env.graph.get(&l.target)?, l)))
    };
    let hop =
        |node: &Node, link: Option<&Link>| Hop::of(node, link.map(|l| (l.link_type, l.state)));
    let mut hops = Vec::with_capacity(chain.len() + 2);
    for (index, &(node, link)) in chain.iter().enumerate() {
        let crosses_tunnel = link.is_some_and(|l| l.link_type == tunnel) && index > 0;
        if crosses_tunnel
            && let (Some((near_nic, near_link)), Some((far_nic, far_link))) =
                (nic_of(chain[index - 1].0.id()), nic_of(node.id()))
        {
            hops.push(hop(near_nic, Some(near_link)));
            hops.push(hop(far_nic, link));
            hops.push(hop(node, Some(far_link)));
            continue;
        }
        hops.push(hop(node, link));
    }
    hops
}
