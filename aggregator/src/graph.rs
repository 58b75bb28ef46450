//! The environment graph: every object of one environment in memory, indexed by what the link
//! finders look partners up by (id, type, host, name on a host, address, MAC, references).

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;
use std::net::IpAddr;

use crate::idset::IdSet;
use calipso_proto::{
    AttrValue, CompactString, LinkState, MacAddress, Object, ObjectId, ObjectType, StatusLevel,
    Timestamp,
};

/// An object as the aggregator holds it: what its source reported, plus what the aggregator
/// knows about its freshness.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub object: Object,
    /// The owning host's agent is disconnected: the object keeps its last reported state.
    pub stale: bool,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

impl Node {
    pub fn new(object: Object, at: Timestamp) -> Self {
        Node {
            object,
            stale: false,
            first_seen: at,
            last_seen: at,
        }
    }

    pub fn id(&self) -> &ObjectId {
        &self.object.id
    }

    pub fn object_type(&self) -> ObjectType {
        self.object.object_type
    }

    /// Whether traffic can pass through this object: down when stale or reported down or in
    /// error, up when reported up (or, for objects without an interface state, present).
    pub fn state(&self) -> LinkState {
        if self.stale || self.object.status.level == StatusLevel::Error {
            return LinkState::Down;
        }
        self.object.attributes.link_state.unwrap_or(LinkState::Up)
    }

    /// A free-form string attribute.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.object
            .attributes
            .extra
            .get(key)
            .and_then(AttrValue::as_str)
    }

    /// A free-form attribute that names another object.
    pub fn reference(&self, key: &str) -> Option<ObjectId> {
        self.text(key).map(ObjectId::from_raw)
    }

    /// A list attribute's strings.
    pub fn texts(&self, key: &str) -> Vec<&str> {
        match self.object.attributes.extra.get(key) {
            Some(AttrValue::List(items)) => items.iter().filter_map(AttrValue::as_str).collect(),
            Some(AttrValue::Str(one)) => vec![one.as_str()],
            _ => Vec::new(),
        }
    }

    /// Every address the object holds: interface addresses and an endpoint's `ip_address`.
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        let mut found: BTreeSet<IpAddr> = self
            .object
            .attributes
            .addresses
            .iter()
            .map(|prefix| prefix.addr)
            .collect();
        found.extend(
            self.text("ip_address")
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
        found
    }
}

/// A way to find objects other than by id. An object is found under every lookup
/// [`lookups_of`] lists for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lookup {
    /// A host-local object by host and name.
    Name {
        host: CompactString,
        name: CompactString,
    },
    /// Objects holding an address.
    Address(IpAddr),
    /// A physical NIC by MAC address.
    Mac(MacAddress),
    /// Objects whose attribute `key` names this object.
    ReferenceTo { key: &'static str, target: ObjectId },
    /// Vswitches that use the interface `name` of `host` as an uplink.
    Uplink {
        host: CompactString,
        name: CompactString,
    },
    /// Neutron ports bound to a host (`binding:host_id`).
    BoundTo(CompactString),
    /// A Neutron port by its MAC address.
    PortMac(MacAddress),
}

/// Attributes that name another object and that a finder looks up the other way (which
/// objects name this one). Only these are indexed: an index entry per reference of every vNIC
/// would cost more memory than the whole model.
const REFERENCE_KEYS: &[&str] = &["underlay"];

/// Everything `object` can be found by. Only what some finder looks up is indexed: names and
/// MACs of physical NICs (vswitch uplinks, switch ports), addresses, tunnel endpoints,
/// reverse references, bound ports.
pub fn lookups_of(node: &Node) -> Vec<Lookup> {
    let object = &node.object;
    let mut found = Vec::new();
    let nic = object.object_type == ObjectType::HostPnic;
    if let Some(host) = &object.host {
        if nic {
            found.push(Lookup::Name {
                host: host.clone(),
                name: object.name.clone(),
            });
        }
        for uplink in node.texts("uplinks") {
            found.push(Lookup::Uplink {
                host: host.clone(),
                name: uplink.into(),
            });
        }
    }
    found.extend(node.addresses().into_iter().map(Lookup::Address));
    if nic {
        found.extend(object.attributes.mac_address.map(Lookup::Mac));
    }
    for key in REFERENCE_KEYS {
        if let Some(target) = node.reference(key) {
            found.push(Lookup::ReferenceTo { key, target });
        }
    }
    if let Some(AttrValue::List(interfaces)) = object.attributes.extra.get("interfaces") {
        for interface in interfaces {
            if let AttrValue::Map(fields) = interface
                && let Some(vnic) = fields.get("vnic").and_then(AttrValue::as_str)
            {
                found.push(Lookup::ReferenceTo {
                    key: "interfaces.vnic",
                    target: ObjectId::from_raw(vnic),
                });
            }
        }
    }
    if object.object_type == ObjectType::Port {
        if let Some(host) = node.text("binding:host_id").filter(|h| !h.is_empty()) {
            found.push(Lookup::BoundTo(host.into()));
        }
        found.extend(object.attributes.mac_address.map(Lookup::PortMac));
    }
    found.sort();
    found.dedup();
    found
}

/// The objects of one environment.
#[derive(Debug, Default, Clone)]
pub struct Graph {
    /// Boxed: a node is 256 bytes, and a hash table keeps room for up to twice its entries.
    nodes: FxHashMap<ObjectId, Box<Node>>,
    by_type: FxHashMap<ObjectType, BTreeSet<ObjectId>>,
    by_host: FxHashMap<CompactString, IdSet>,
    lookups: FxHashMap<Lookup, IdSet>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn get(&self, id: &ObjectId) -> Option<&Node> {
        self.get_by_text(id.as_str())
    }

    /// The node whose id is `id`: for an id read from an attribute, without making an
    /// [`ObjectId`] of it first.
    pub fn get_by_text(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id).map(|node| &**node)
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.nodes.contains_key(id)
    }

    /// Every node, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().map(|node| &**node)
    }

    /// Sorts `items` by where their nodes are in memory, for full builds that visit every
    /// node. Objects arrive host by host, so neighbours in memory are partners on one host (a
    /// vNIC's bridge, its peer, its vswitch): visited in this order, and numbered in it, each
    /// object's reads and table entries lie beside its partners'. In the map's hash order
    /// nearly every read of the link build was a cache miss, and it took half as long again.
    pub fn in_memory_order<T>(items: &mut [T], node: impl Fn(&T) -> &Node) {
        items.sort_by_key(|item| std::ptr::from_ref(node(item)) as usize);
    }

    /// The objects found by `lookup`, in id order.
    pub fn find(&self, lookup: &Lookup) -> impl Iterator<Item = &Node> {
        self.lookups
            .get(lookup)
            .into_iter()
            .flatten()
            .filter_map(|id| self.get(id))
    }

    /// The objects of a type, in id order.
    pub fn of_type(&self, object_type: ObjectType) -> impl Iterator<Item = &Node> {
        self.by_type
            .get(&object_type)
            .into_iter()
            .flatten()
            .filter_map(|id| self.get(id))
    }

    /// The ids of a type's objects after `after` (all if `None`), in id order: the inventory's
    /// stable paging order is by type, then id.
    pub fn ids_of_type_after<'a>(
        &'a self,
        object_type: ObjectType,
        after: Option<&'a ObjectId>,
    ) -> impl Iterator<Item = &'a ObjectId> + 'a {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.by_type
            .get(&object_type)
            .into_iter()
            .flat_map(move |ids| ids.range::<ObjectId, _>((lower, Bound::Unbounded)))
    }

    /// The ids of a host's objects, in id order.
    pub fn ids_on_host(&self, host: &str) -> impl Iterator<Item = &ObjectId> {
        self.by_host.get(host).into_iter().flatten()
    }

    /// Inserts or replaces a node; returns the one it replaced.
    pub fn upsert(&mut self, mut node: Node) -> Option<Node> {
        // Kept until the object changes: room left by however it was built is given back.
        node.object.attributes.extra.shrink_to_fit();
        let previous = self.remove(node.id());
        let id = node.id().clone();
        self.by_type
            .entry(node.object_type())
            .or_default()
            .insert(id.clone());
        if let Some(host) = &node.object.host {
            self.by_host
                .entry(host.clone())
                .or_default()
                .insert(id.clone());
        }
        for lookup in lookups_of(&node) {
            self.lookups.entry(lookup).or_default().insert(id.clone());
        }
        self.nodes.insert(id, Box::new(node));
        previous
    }

    pub fn remove(&mut self, id: &ObjectId) -> Option<Node> {
        let node = *self.nodes.remove(id)?;
        let object_type = node.object_type();
        if let Some(ids) = self.by_type.get_mut(&object_type) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_type.remove(&object_type);
            }
        }
        if let Some(host) = &node.object.host {
            remove_from(&mut self.by_host, host, id);
        }
        for lookup in lookups_of(&node) {
            remove_from(&mut self.lookups, &lookup, id);
        }
        Some(node)
    }
}

fn remove_from<K: std::hash::Hash + Eq>(index: &mut FxHashMap<K, IdSet>, key: &K, id: &ObjectId) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calipso_proto::IpPrefix;

    fn otep(host: &str, ip: &str, remotes: &[&str]) -> Node {
        let object = Object::new(
            ObjectId::host_local(ObjectType::Otep, host, ip),
            ObjectType::Otep,
            format!("{host}-otep"),
            "lab",
        )
        .with_host(host)
        .with_extra("underlay", format!("host_pnic:{host}:eth1"))
        .with_extra("ip_address", ip)
        .with_extra(
            "remote_endpoints",
            remotes.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>(),
        );
        Node::new(object, Timestamp::default())
    }

    #[test]
    fn indexes_follow_upserts_and_removals() {
        let mut graph = Graph::new();
        let a = otep("h1", "10.0.0.1", &["10.0.0.2"]);
        graph.upsert(a.clone());
        let by_ip = |g: &Graph, ip: &str| {
            g.find(&Lookup::Address(ip.parse().expect("ip")))
                .map(|n| n.id().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(by_ip(&graph, "10.0.0.1"), vec!["otep:h1:10.0.0.1"]);
        let underlay = Lookup::ReferenceTo {
            key: "underlay",
            target: ObjectId::from_raw("host_pnic:h1:eth1"),
        };
        assert_eq!(graph.find(&underlay).count(), 1);
        let mut moved = a.clone();
        moved
            .object
            .attributes
            .extra
            .insert("underlay", AttrValue::Str("host_pnic:h1:eth2".into()));
        moved.object.attributes.addresses =
            vec!["192.0.2.1/24".parse::<IpPrefix>().expect("prefix")];
        assert_eq!(graph.upsert(moved), Some(a));
        assert_eq!(graph.find(&underlay).count(), 0);
        assert_eq!(by_ip(&graph, "192.0.2.1"), vec!["otep:h1:10.0.0.1"]);
        assert!(
            graph
                .remove(&ObjectId::from_raw("otep:h1:10.0.0.1"))
                .is_some()
        );
        assert!(graph.is_empty());
        assert!(graph.lookups.is_empty() && graph.by_host.is_empty() && graph.by_type.is_empty());
    }

    #[test]
    fn state_is_down_when_stale_or_in_error() {
        let mut node = otep("h1", "10.0.0.1", &[]);
        assert_eq!(node.state(), LinkState::Up);
        node.object.attributes.link_state = Some(LinkState::Unknown);
        assert_eq!(node.state(), LinkState::Unknown);
        node.stale = true;
        assert_eq!(node.state(), LinkState::Down);
        node.stale = false;
        node.object.status.level = StatusLevel::Error;
        assert_eq!(node.state(), LinkState::Down);
    }
}
