//! Open vSwitch, read from its database (OVSDB, RFC 7047) rather than from `ovs-vsctl show`
//! and Neutron's tables as the original did.
//!
//! The collector monitors `Open_vSwitch`, `Bridge`, `Port` and `Interface` with
//! `monitor_cond_since` (falling back to `monitor` on servers without it), keeps a copy of the
//! tables, and after each coalesced batch of updates rebuilds its objects:
//!
//! * one `vedge` for the host's OVS: version, system id, bridges, and its infrastructure
//!   ports (patch, tunnel, uplink and internal ports, with VLAN tag and datapath port number);
//! * one `otep` per tunnel local IP: overlay type, UDP port, remote endpoints, tunnel ports;
//! * a `vnic` fragment for every interface that carries a Neutron port id
//!   (`external_ids:iface-id`: VM taps, `qvo` ports, router and DHCP ports), with its bridge,
//!   tag, datapath port, attached MAC and Nova instance; the kernel collector's fragment of the
//!   same interface merges with it into one object.
//!
//! When ovsdb-server restarts, the collector reconnects with backoff, resumes or resyncs, and
//! the outbox's diff lets only real changes out. With no socket it retries quietly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use calipso_proto::{AttrMap, AttrValue, LinkState, MacAddress, Object, ObjectId, ObjectType};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Collector, CollectorError, InterfaceDirectory, Scope};
use crate::outbox::{ChangeSet, Outbox};
use crate::ovsdb::datum::{atom_text, map_entries, optional_atom, set_elements};
use crate::ovsdb::{Client, Endpoint, Event, OvsdbError, Row, Schema, Tables, Touched};

const NAME: &str = "ovs";
const DATABASE: &str = "Open_vSwitch";
/// The all-zero transaction id asks `monitor_cond_since` for everything.
const NO_TRANSACTION: &str = "00000000-0000-0000-0000-000000000000";

const MONITORED: &[(&str, &[&str])] = &[
    (
        "Open_vSwitch",
        &["ovs_version", "db_version", "external_ids", "other_config"],
    ),
    (
        "Bridge",
        &[
            "name",
            "datapath_type",
            "fail_mode",
            "ports",
            "external_ids",
            "other_config",
        ],
    ),
    (
        "Port",
        &[
            "name",
            "tag",
            "trunks",
            "vlan_mode",
            "bond_mode",
            "interfaces",
            "external_ids",
        ],
    ),
    (
        "Interface",
        &[
            "name",
            "type",
            "ofport",
            "admin_state",
            "link_state",
            "link_speed",
            "mac_in_use",
            "mtu",
            "error",
            "options",
            "external_ids",
            "bfd",
            "bfd_status",
        ],
    ),
];

/// Interface types that are tunnels, with their default UDP port.
const TUNNELS: &[(&str, Option<u32>)] = &[
    ("vxlan", Some(4789)),
    ("geneve", Some(6081)),
    ("gre", None),
    ("stt", Some(7471)),
    ("lisp", Some(4341)),
    ("erspan", None),
    ("gtpu", Some(2152)),
    ("bareudp", None),
];

/// How the collector reaches and reads OVSDB.
#[derive(Debug, Clone)]
pub struct OvsOptions {
    pub endpoint: Endpoint,
    /// Monitor `Interface.statistics` too (off by default: vswitchd rewrites it every few seconds).
    pub statistics: bool,
    pub max_message_bytes: usize,
    pub request_timeout: Duration,
    pub coalesce_quiet: Duration,
    pub coalesce_max: Duration,
    /// The longest pause between reconnection attempts.
    pub reconnect_max: Duration,
    /// After this long without a session, OVS is considered gone and its objects removed.
    pub forget_after: Duration,
}

impl Default for OvsOptions {
    fn default() -> Self {
        OvsOptions {
            endpoint: Endpoint::Unix("/run/openvswitch/db.sock".into()),
            statistics: false,
            max_message_bytes: 256 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            coalesce_quiet: Duration::from_millis(1),
            coalesce_max: Duration::from_millis(10),
            reconnect_max: Duration::from_secs(30),
            forget_after: Duration::from_secs(300),
        }
    }
}

/// Reads Open vSwitch through OVSDB.
#[derive(Debug)]
pub struct Ovs {
    scope: Scope,
    options: OvsOptions,
    directory: InterfaceDirectory,
}

fn failed(message: impl std::fmt::Display) -> CollectorError {
    CollectorError {
        collector: NAME,
        message: message.to_string(),
    }
}

fn text(row: &Row, column: &str) -> Option<String> {
    row.get(column)
        .and_then(optional_atom)
        .and_then(atom_text)
        .filter(|t| !t.is_empty())
}

fn int(row: &Row, column: &str) -> Option<i64> {
    row.get(column)
        .and_then(optional_atom)
        .and_then(Value::as_i64)
}

fn map(row: &Row, column: &str) -> BTreeMap<String, String> {
    row.get(column).map(map_entries).unwrap_or_default()
}

fn uuids(row: &Row, column: &str) -> Vec<String> {
    row.get(column)
        .map(|v| set_elements(v).into_iter().filter_map(atom_text).collect())
        .unwrap_or_default()
}

fn string_map(entries: BTreeMap<String, String>) -> AttrValue {
    AttrValue::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k, AttrValue::from(v)))
            .collect(),
    )
}

/// One interface in its port and bridge.
struct Attachment<'a> {
    bridge: &'a Row,
    port: &'a Row,
    interface: &'a Row,
}

impl Attachment<'_> {
    fn name(&self) -> String {
        text(self.interface, "name").unwrap_or_default()
    }

    fn kind(&self) -> String {
        text(self.interface, "type").unwrap_or_else(|| "system".into())
    }

    fn bridge_name(&self) -> String {
        text(self.bridge, "name").unwrap_or_default()
    }

    /// What the vedge lists about an infrastructure port.
    fn port_facts(&self) -> AttrValue {
        let mut facts = BTreeMap::new();
        facts.insert("bridge".to_owned(), AttrValue::from(self.bridge_name()));
        facts.insert("type".to_owned(), AttrValue::from(self.kind()));
        if let Some(port) = text(self.port, "name").filter(|p| *p != self.name()) {
            facts.insert("port".to_owned(), AttrValue::from(port));
        }
        if let Some(ofport) = int(self.interface, "ofport") {
            facts.insert("id".to_owned(), AttrValue::Int(ofport));
        }
        if let Some(tag) = int(self.port, "tag") {
            facts.insert("tag".to_owned(), AttrValue::Int(tag));
        }
        let options = map(self.interface, "options");
        if !options.is_empty() {
            facts.insert("options".to_owned(), string_map(options));
        }
        AttrValue::Map(facts.into())
    }
}

/// Every interface with its port and bridge, in bridge / port / interface name order.
fn attachments(tables: &Tables) -> Vec<Attachment<'_>> {
    let mut found = Vec::new();
    for (_, bridge) in tables.rows("Bridge") {
        for port_uuid in uuids(bridge, "ports") {
            let Some(port) = tables.row("Port", &port_uuid) else {
                continue;
            };
            for interface_uuid in uuids(port, "interfaces") {
                if let Some(interface) = tables.row("Interface", &interface_uuid) {
                    let key = (
                        text(bridge, "name"),
                        text(port, "name"),
                        text(interface, "name"),
                    );
                    found.push((
                        key,
                        Attachment {
                            bridge,
                            port,
                            interface,
                        },
                    ));
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
        .into_iter()
        .map(|(_, attachment)| attachment)
        .collect()
}

/// The local IP a tunnel interface belongs to (`any` when it sets none), or `None` if the
/// interface is not a tunnel.
fn tunnel_ip(attachment: &Attachment<'_>) -> Option<String> {
    let kind = attachment.kind();
    TUNNELS.iter().any(|(t, _)| *t == kind).then(|| {
        map(attachment.interface, "options")
            .get("local_ip")
            .cloned()
            .unwrap_or_else(|| "any".into())
    })
}

fn is_vm_port(interface: &Row) -> bool {
    map(interface, "external_ids").contains_key("iface-id")
}

/// The vedge: the host's OVS with its bridges and infrastructure ports (VM ports are vNICs).
fn vedge(scope: &Scope, root: &Row, tables: &Tables, attached: &[Attachment<'_>]) -> Object {
    let host = scope.host.as_str();
    let mut infrastructure = BTreeMap::new();
    let mut patches = Vec::new();
    let mut uplinks = BTreeSet::new();
    for attachment in attached {
        // A VM port is its own vNIC; counting VM ports here would rewrite the vedge (and its
        // history, and every link that reads it) on every VM start.
        if is_vm_port(attachment.interface) {
            continue;
        }
        let name = attachment.name();
        let kind = attachment.kind();
        if kind == "patch" {
            let peer = map(attachment.interface, "options")
                .get("peer")
                .cloned()
                .unwrap_or_default();
            let peer_bridge = attached
                .iter()
                .find(|a| a.name() == peer)
                .map(Attachment::bridge_name);
            let mut relation = BTreeMap::new();
            relation.insert(
                "bridge".to_owned(),
                AttrValue::from(attachment.bridge_name()),
            );
            relation.insert("port".to_owned(), AttrValue::from(name.as_str()));
            relation.insert("peer".to_owned(), AttrValue::from(peer));
            if let Some(peer_bridge) = peer_bridge {
                relation.insert("peer_bridge".to_owned(), AttrValue::from(peer_bridge));
            }
            patches.push(AttrValue::Map(relation.into()));
        }
        if kind == "system" || kind == "dpdk" {
            uplinks.insert(name.clone());
        }
        infrastructure.insert(name, attachment.port_facts());
    }
    let mut bridges: Vec<(String, AttrValue)> = tables
        .rows("Bridge")
        .map(|(_, bridge)| {
            let name = text(bridge, "name").unwrap_or_default();
            let mut facts = BTreeMap::new();
            facts.insert("name".to_owned(), AttrValue::from(name.as_str()));
            let datapath = text(bridge, "datapath_type").unwrap_or_else(|| "system".into());
            facts.insert("datapath_type".to_owned(), AttrValue::from(datapath));
            if let Some(fail_mode) = text(bridge, "fail_mode") {
                facts.insert("fail_mode".to_owned(), AttrValue::from(fail_mode));
            }
            let external = map(bridge, "external_ids");
            if !external.is_empty() {
                facts.insert("external_ids".to_owned(), string_map(external));
            }
            (name, AttrValue::Map(facts.into()))
        })
        .collect();
    bridges.sort_by(|a, b| a.0.cmp(&b.0));
    let mut vedge = Object::new(
        vedge_id(scope),
        ObjectType::Vedge,
        format!("{host}-OVS"),
        scope.environment.as_str(),
    )
    .with_host(host)
    .with_parent(ObjectId::host(host), ObjectType::Host)
    .with_extra("agent_type", "Open vSwitch")
    .with_extra(
        "bridges",
        AttrValue::List(bridges.into_iter().map(|(_, b)| b).collect()),
    )
    .with_extra("ports", AttrValue::Map(infrastructure.into()))
    .with_extra("patch_ports", AttrValue::List(patches))
    .with_extra("uplinks", uplinks.into_iter().collect::<Vec<_>>());
    for (key, column) in [("ovs_version", "ovs_version"), ("db_version", "db_version")] {
        if let Some(value) = text(root, column) {
            vedge = vedge.with_extra(key, value);
        }
    }
    let external = map(root, "external_ids");
    for (key, external_key) in [
        ("system_id", "system-id"),
        ("ovs_hostname", "hostname"),
        ("bridge_mappings", "ovn-bridge-mappings"),
    ] {
        if let Some(value) = external.get(external_key) {
            vedge = vedge.with_extra(key, value.as_str());
        }
    }
    vedge
}

fn vedge_id(scope: &Scope) -> ObjectId {
    ObjectId::host_local(ObjectType::Vedge, &scope.host, "ovs")
}

fn attach<'a>(
    tables: &'a Tables,
    port_of_interface: &HashMap<String, String>,
    bridge_of_port: &HashMap<String, String>,
    interface_uuid: &str,
) -> Option<Attachment<'a>> {
    let port_uuid = port_of_interface.get(interface_uuid)?;
    Some(Attachment {
        bridge: tables.row("Bridge", bridge_of_port.get(port_uuid)?)?,
        port: tables.row("Port", port_uuid)?,
        interface: tables.row("Interface", interface_uuid)?,
    })
}

/// What the collector knows and what it published, so that an update rebuilds only what it
/// can have changed: the vNICs of touched interfaces, the tunnel endpoints of touched tunnels,
/// and the vedge when an infrastructure port or the set of VM ports changed.
#[derive(Debug, Default)]
pub struct OvsView {
    pub tables: Tables,
    /// Port UUID of each interface, bridge UUID of each port.
    port_of_interface: HashMap<String, String>,
    bridge_of_port: HashMap<String, String>,
    /// The vNIC published for each interface UUID.
    vnics: HashMap<String, ObjectId>,
    /// The local IP of each tunnel interface, as last published.
    tunnels: HashMap<String, String>,
    /// Bridge names, to notice a rename.
    bridge_names: HashMap<String, String>,
    vedge_published: bool,
}

impl OvsView {
    fn reindex(&mut self) {
        self.port_of_interface.clear();
        self.bridge_of_port.clear();
        for (bridge_uuid, bridge) in self.tables.rows("Bridge") {
            for port_uuid in uuids(bridge, "ports") {
                if let Some(port) = self.tables.row("Port", &port_uuid) {
                    for interface_uuid in uuids(port, "interfaces") {
                        self.port_of_interface
                            .insert(interface_uuid, port_uuid.clone());
                    }
                }
                self.bridge_of_port.insert(port_uuid, bridge_uuid.clone());
            }
        }
    }

    fn attachment(&self, interface_uuid: &str) -> Option<Attachment<'_>> {
        attach(
            &self.tables,
            &self.port_of_interface,
            &self.bridge_of_port,
            interface_uuid,
        )
    }

    /// Forgets what was published (a fresh outbox or a full resync follows).
    /// Points a port's interfaces at it (after the port changed, without re-indexing all).
    fn index_port(&mut self, port_uuid: &str) {
        if let Some(port) = self.tables.row("Port", port_uuid) {
            for interface_uuid in uuids(port, "interfaces") {
                self.port_of_interface
                    .insert(interface_uuid, port_uuid.to_owned());
            }
        }
    }

    /// The interfaces of a bridge's ports.
    fn bridge_interfaces(&self, bridge_uuid: &str) -> Vec<String> {
        let Some(bridge) = self.tables.row("Bridge", bridge_uuid) else {
            return Vec::new();
        };
        uuids(bridge, "ports")
            .iter()
            .filter_map(|port| self.tables.row("Port", port))
            .flat_map(|port| uuids(port, "interfaces"))
            .collect()
    }

    /// What changed: `touched` rows only, or everything when `None`.
    pub fn changes(
        &mut self,
        scope: &Scope,
        touched: Option<&[Touched]>,
        resolve: &impl Fn(&str) -> Option<ObjectId>,
    ) -> ChangeSet {
        let everything = touched.is_none();
        let rows = touched.unwrap_or_default();
        let bridges_touched: Vec<&Touched> = rows.iter().filter(|t| t.table == "Bridge").collect();
        // A bridge's port set changes when ports come and go: only then is the index rebuilt.
        if everything || !bridges_touched.is_empty() {
            self.reindex();
        } else {
            for port in rows.iter().filter(|t| t.table == "Port") {
                self.index_port(&port.uuid);
            }
        }
        let mut interfaces: BTreeSet<String> = BTreeSet::new();
        if everything {
            interfaces.extend(self.tables.rows("Interface").map(|(uuid, _)| uuid.clone()));
            interfaces.extend(self.vnics.keys().cloned());
            interfaces.extend(self.tunnels.keys().cloned());
        }
        for row in rows {
            match row.table.as_str() {
                "Interface" => {
                    interfaces.insert(row.uuid.clone());
                }
                "Port" => {
                    if let Some(port) = self.tables.row("Port", &row.uuid) {
                        interfaces.extend(uuids(port, "interfaces"));
                    }
                }
                _ => {}
            }
        }
        // A renamed (or new, or deleted) bridge changes what its ports' vNICs say.
        for bridge in &bridges_touched {
            let name = self
                .tables
                .row("Bridge", &bridge.uuid)
                .and_then(|b| text(b, "name"));
            let previous = match &name {
                Some(name) => self.bridge_names.insert(bridge.uuid.clone(), name.clone()),
                None => self.bridge_names.remove(&bridge.uuid),
            };
            if previous != name {
                interfaces.extend(self.bridge_interfaces(&bridge.uuid));
            }
        }
        if everything {
            self.bridge_names = self
                .tables
                .rows("Bridge")
                .filter_map(|(uuid, b)| Some((uuid.clone(), text(b, "name")?)))
                .collect();
        }
        let vedge_id = vedge_id(scope);
        let mut changes = ChangeSet::default();
        let mut vedge_dirty = everything
            || !self.vedge_published
            || rows
                .iter()
                .any(|t| t.table == "Bridge" || t.table == "Open_vSwitch");
        let mut tunnel_ips = BTreeSet::new();
        for uuid in &interfaces {
            let attachment = attach(
                &self.tables,
                &self.port_of_interface,
                &self.bridge_of_port,
                uuid,
            );
            let object = attachment
                .as_ref()
                .filter(|a| is_vm_port(a.interface))
                .map(|a| {
                    vnic(
                        scope,
                        &vedge_id,
                        a,
                        &map(a.interface, "external_ids"),
                        resolve,
                    )
                });
            let previous = match &object {
                Some(object) => self.vnics.insert(uuid.clone(), object.id.clone()),
                None => self.vnics.remove(uuid),
            };
            // A VM port that came or went changes the vedge's counts; any other port is the
            // vedge's own.
            vedge_dirty |= object.is_none() || previous.is_none();
            if let Some(previous) = previous.filter(|p| Some(p) != object.as_ref().map(|o| &o.id)) {
                changes.removals.push(previous);
            }
            changes.upserts.extend(object);
            if let Some(ip) = self.tunnels.remove(uuid) {
                tunnel_ips.insert(ip);
            }
            if let Some(ip) = attachment.as_ref().and_then(tunnel_ip) {
                self.tunnels.insert(uuid.clone(), ip.clone());
                tunnel_ips.insert(ip);
            }
        }
        for ip in tunnel_ips {
            let mut members: Vec<(Option<String>, Attachment<'_>)> = self
                .tunnels
                .iter()
                .filter(|(_, local)| **local == ip)
                .filter_map(|(uuid, _)| self.attachment(uuid))
                .map(|a| (text(a.interface, "name"), a))
                .collect();
            members.sort_by(|a, b| a.0.cmp(&b.0));
            let id = ObjectId::host_local(ObjectType::Otep, &scope.host, &ip);
            if members.is_empty() {
                changes.removals.push(id);
            } else {
                let ports: Vec<&Attachment<'_>> = members.iter().map(|(_, a)| a).collect();
                changes.upserts.push(otep(scope, &vedge_id, &ip, &ports));
            }
        }
        if vedge_dirty {
            match self.tables.rows("Open_vSwitch").next() {
                Some((_, root)) => {
                    changes.upserts.push(vedge(
                        scope,
                        root,
                        &self.tables,
                        &attachments(&self.tables),
                    ));
                    self.vedge_published = true;
                }
                None if self.vedge_published => {
                    changes.removals.push(vedge_id);
                    self.vedge_published = false;
                }
                None => {}
            }
        }
        changes
    }
}

/// Every object the tables describe (what `discover` prints), sorted by id.
pub fn build(
    scope: &Scope,
    tables: Tables,
    resolve: impl Fn(&str) -> Option<ObjectId>,
) -> Vec<Object> {
    let mut view = OvsView {
        tables,
        ..OvsView::default()
    };
    let mut objects = view.changes(scope, None, &resolve).upserts;
    objects.sort_by(|a, b| a.id.cmp(&b.id));
    objects
}

fn otep(scope: &Scope, vedge_id: &ObjectId, local: &str, ports: &[&Attachment<'_>]) -> Object {
    let mut types = BTreeSet::new();
    let mut remotes = BTreeSet::new();
    let mut udp_ports = BTreeSet::new();
    let mut listed = Vec::new();
    for port in ports {
        let kind = port.kind();
        let options = map(port.interface, "options");
        let default_port = TUNNELS
            .iter()
            .find(|(t, _)| *t == kind)
            .and_then(|(_, p)| *p);
        if let Some(udp) = options
            .get("dst_port")
            .and_then(|p| p.parse::<u32>().ok())
            .or(default_port)
        {
            udp_ports.insert(udp);
        }
        if let Some(remote) = options.get("remote_ip") {
            remotes.insert(remote.clone());
        }
        types.insert(kind);
        let mut facts = match port.port_facts() {
            AttrValue::Map(facts) => facts,
            _ => AttrMap::new(),
        };
        facts.insert("name", AttrValue::from(port.name()));
        listed.push(AttrValue::Map(facts));
    }
    let mut object = Object::new(
        ObjectId::host_local(ObjectType::Otep, &scope.host, local),
        ObjectType::Otep,
        format!("{}-otep-{local}", scope.host),
        scope.environment.as_str(),
    )
    .with_host(scope.host.as_str())
    .with_parent(vedge_id.clone(), ObjectType::Vedge)
    .with_extra("vedge", vedge_id.as_str())
    .with_extra(
        "overlay_type",
        types.into_iter().collect::<Vec<_>>().join("/"),
    )
    .with_extra("remote_endpoints", remotes.into_iter().collect::<Vec<_>>())
    .with_extra("tunnel_ports", AttrValue::List(listed));
    if local != "any" {
        object = object.with_extra("ip_address", local);
    }
    if let [udp] = udp_ports.into_iter().collect::<Vec<_>>().as_slice() {
        object = object.with_extra("udp_port", *udp);
    }
    object
}

fn vnic(
    scope: &Scope,
    vedge_id: &ObjectId,
    attachment: &Attachment<'_>,
    external: &BTreeMap<String, String>,
    resolve: &impl Fn(&str) -> Option<ObjectId>,
) -> Object {
    let name = attachment.name();
    let id = resolve(&name)
        .unwrap_or_else(|| ObjectId::host_local(ObjectType::Vnic, &scope.host, &name));
    let interface = attachment.interface;
    let mut object = Object::new(
        id,
        ObjectType::Vnic,
        name.as_str(),
        scope.environment.as_str(),
    )
    .with_host(scope.host.as_str())
    .with_parent(ObjectId::host(&scope.host), ObjectType::Host)
    .with_extra("vedge", vedge_id.as_str())
    .with_extra("ovs_bridge", attachment.bridge_name())
    .with_extra("ovs_type", attachment.kind());
    if let Some(port) = text(attachment.port, "name") {
        object = object.with_extra("ovs_port", port);
    }
    if let Some(ofport) = int(interface, "ofport") {
        object = object.with_extra("ofport", AttrValue::Int(ofport));
    }
    if let Some(tag) = int(attachment.port, "tag") {
        object = object.with_extra("tag", AttrValue::Int(tag));
    }
    let trunks: Vec<AttrValue> = attachment
        .port
        .get("trunks")
        .map(|t| {
            set_elements(t)
                .into_iter()
                .filter_map(Value::as_i64)
                .map(AttrValue::Int)
                .collect()
        })
        .unwrap_or_default();
    if !trunks.is_empty() {
        object = object.with_extra("trunks", AttrValue::List(trunks));
    }
    if let Some(mode) = text(attachment.port, "vlan_mode") {
        object = object.with_extra("vlan_mode", mode);
    }
    for (key, column) in [
        ("ovs_admin_state", "admin_state"),
        ("ovs_link_state", "link_state"),
        ("ovs_error", "error"),
    ] {
        if let Some(value) = text(interface, column) {
            object = object.with_extra(key, value);
        }
    }
    if let Some(speed) = int(interface, "link_speed") {
        object = object.with_extra("link_speed", AttrValue::Int(speed));
    }
    if let Some(iface_id) = external.get("iface-id") {
        object = object.with_extra("iface_id", iface_id.as_str()).with_extra(
            "port",
            ObjectId::global(ObjectType::Port, iface_id).as_str(),
        );
    }
    if let Some(mac) = external.get("attached-mac") {
        object = object.with_extra("attached_mac", mac.as_str());
    }
    if let Some(vm) = external.get("vm-uuid") {
        object = object
            .with_extra("vm_uuid", vm.as_str())
            .with_extra(
                "instance",
                ObjectId::global(ObjectType::Instance, vm).as_str(),
            )
            .with_extra("vnic_type", "instance_vnic");
    }
    if let Some(status) = external.get("iface-status") {
        object = object.with_extra("iface_status", status.as_str());
    }
    let attrs = &mut object.attributes;
    attrs.mac_address = text(interface, "mac_in_use").and_then(|m| m.parse::<MacAddress>().ok());
    attrs.mtu = int(interface, "mtu").and_then(|m| u32::try_from(m).ok());
    attrs.link_state = match text(interface, "link_state").as_deref() {
        Some("up") => Some(LinkState::Up),
        Some("down") => Some(LinkState::Down),
        _ => None,
    };
    object
}

impl Ovs {
    pub fn new(scope: Scope, options: OvsOptions, directory: InterfaceDirectory) -> Self {
        Ovs {
            scope,
            options,
            directory,
        }
    }

    fn resolver(&self) -> impl Fn(&str) -> Option<ObjectId> + '_ {
        |name| self.directory.lookup(name)
    }

    fn monitored(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        MONITORED
            .iter()
            .map(|(table, columns)| {
                let mut columns = columns.to_vec();
                if self.options.statistics && *table == "Interface" {
                    columns.push("statistics");
                }
                (*table, columns)
            })
            .collect()
    }

    /// Connects, checks the database, and subscribes; returns the client, its events, the schema
    /// and the method in use. `tables` and `last_txn` carry over between sessions.
    async fn subscribe(
        &self,
        tables: &mut Tables,
        last_txn: &mut Option<String>,
    ) -> Result<(Client, tokio::sync::mpsc::Receiver<Event>, Schema), OvsdbError> {
        let (client, events) = Client::connect(
            &self.options.endpoint,
            self.options.max_message_bytes,
            self.options.request_timeout,
        )
        .await?;
        let databases = client.call("list_dbs", json!([])).await?;
        if !databases
            .as_array()
            .is_some_and(|dbs| dbs.iter().any(|d| d == DATABASE))
        {
            return Err(OvsdbError::Malformed {
                method: Some("list_dbs".into()),
                message: format!("no {DATABASE} database in {databases}"),
            });
        }
        let schema_json = client.call("get_schema", json!([DATABASE])).await?;
        let schema = Schema::parse(&schema_json).map_err(|message| OvsdbError::Malformed {
            method: Some("get_schema".into()),
            message,
        })?;
        let monitored = self.monitored();
        let wanted: Vec<(&str, &[&str])> =
            monitored.iter().map(|(t, c)| (*t, c.as_slice())).collect();
        let since = last_txn.clone().unwrap_or_else(|| NO_TRANSACTION.into());
        let conditional = json!([
            DATABASE,
            "calipso",
            schema.monitor_requests(&wanted, true),
            since
        ]);
        match client.call("monitor_cond_since", conditional).await {
            Ok(reply) => {
                let malformed = |message: String| OvsdbError::Malformed {
                    method: Some("monitor_cond_since".into()),
                    message,
                };
                let parts = reply.as_array().ok_or_else(|| {
                    malformed(format!("reply {reply} is not [found, txn, updates]"))
                })?;
                let found = parts.first().and_then(Value::as_bool).unwrap_or(false);
                if !found {
                    tables.clear();
                }
                *last_txn = parts.get(1).and_then(Value::as_str).map(str::to_owned);
                tables
                    .apply_update2(&schema, parts.get(2).unwrap_or(&Value::Null))
                    .map_err(malformed)?;
                tracing::debug!(resumed = found, "OVSDB monitor_cond_since established");
            }
            Err(OvsdbError::Rpc { .. }) => {
                // An older server: plain monitor, always a full resync.
                let reply = client
                    .call(
                        "monitor",
                        json!([DATABASE, "calipso", schema.monitor_requests(&wanted, false)]),
                    )
                    .await?;
                tables.clear();
                *last_txn = None;
                tables
                    .apply_update(&reply)
                    .map_err(|message| OvsdbError::Malformed {
                        method: Some("monitor".into()),
                        message,
                    })?;
            }
            Err(other) => return Err(other),
        }
        Ok((client, events, schema))
    }

    /// Applies one notification to the tables; returns the rows it touched.
    fn apply(
        tables: &mut Tables,
        schema: &Schema,
        last_txn: &mut Option<String>,
        method: &str,
        params: &Value,
    ) -> Result<Vec<Touched>, OvsdbError> {
        let malformed = |message: String| OvsdbError::Malformed {
            method: Some(method.into()),
            message,
        };
        let params = params
            .as_array()
            .ok_or_else(|| malformed("params are not an array".into()))?;
        match method {
            "update" => tables
                .apply_update(params.get(1).unwrap_or(&Value::Null))
                .map_err(malformed),
            "update2" => tables
                .apply_update2(schema, params.get(1).unwrap_or(&Value::Null))
                .map_err(malformed),
            "update3" => {
                *last_txn = params.get(1).and_then(Value::as_str).map(str::to_owned);
                tables
                    .apply_update2(schema, params.get(2).unwrap_or(&Value::Null))
                    .map_err(malformed)
            }
            "monitor_canceled" => Err(malformed("the server cancelled the monitor".into())),
            _ => {
                tracing::debug!(method, "OVSDB notification ignored");
                Ok(Vec::new())
            }
        }
    }

    /// One session: subscribe, publish, follow. Returns when the connection ends (an error) or
    /// `shutdown` fires (`Ok`). `alive` is stamped whenever the server is heard from.
    async fn session(
        &self,
        view: &mut OvsView,
        last_txn: &mut Option<String>,
        outbox: &Outbox,
        alive: &mut Instant,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionEnd> {
        // Subscribed before anything is built, so that no directory change can slip in between.
        let mut directory = self.directory.subscribe();
        let (_client, mut events, schema) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            subscribed = self.subscribe(&mut view.tables, last_txn) => subscribed.map_err(SessionEnd::Ovsdb)?,
        };
        *alive = Instant::now();
        tracing::info!(endpoint = %self.options.endpoint, "following Open vSwitch");
        self.publish(outbox, view, None)?;
        loop {
            // Wait for a notification or a change in the kernel's namespaced interfaces …
            let first = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                event = events.recv() => Some(event),
                _ = directory.changed() => None,
            };
            // … then gather what else arrives before the batch is published.
            let mut everything = first.is_none();
            let mut touched = Vec::new();
            let mut next = first;
            let deadline = Instant::now() + self.options.coalesce_max;
            loop {
                if let Some(event) = next {
                    match event {
                        None => return Err(SessionEnd::Ovsdb(OvsdbError::Closed)),
                        Some(Event::Closed(reason)) => return Err(SessionEnd::Ovsdb(reason)),
                        Some(Event::Notification { method, params }) => {
                            *alive = Instant::now();
                            let rows =
                                Self::apply(&mut view.tables, &schema, last_txn, &method, &params)
                                    .map_err(SessionEnd::Ovsdb)?;
                            touched.extend(rows);
                        }
                    }
                }
                let quiet_until = (Instant::now() + self.options.coalesce_quiet).min(deadline);
                next = tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    event = events.recv() => Some(event),
                    _ = directory.changed() => {
                        everything = true;
                        None
                    }
                    () = tokio::time::sleep_until(quiet_until) => break,
                };
            }
            self.publish(outbox, view, (!everything).then_some(touched.as_slice()))?;
        }
    }

    /// Publishes what the touched rows changed (everything when `None`).
    fn publish(
        &self,
        outbox: &Outbox,
        view: &mut OvsView,
        touched: Option<&[Touched]>,
    ) -> Result<(), SessionEnd> {
        let changes = view.changes(&self.scope, touched, &self.resolver());
        outbox
            .publish(NAME, changes)
            .map(drop)
            .map_err(|e| SessionEnd::Collector(failed(e)))
    }
}

/// Why a session ended.
enum SessionEnd {
    Ovsdb(OvsdbError),
    Collector(CollectorError),
}

impl Collector for Ovs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn scan(&mut self) -> BoxFuture<'_, Result<Vec<Object>, CollectorError>> {
        async move {
            let mut tables = Tables::default();
            match self.subscribe(&mut tables, &mut None).await {
                Ok(_) => Ok(build(&self.scope, tables, self.resolver())),
                Err(err) if err.is_absent() => Ok(Vec::new()),
                Err(err) => Err(failed(err)),
            }
        }
        .boxed()
    }

    fn follow(
        self: Box<Self>,
        outbox: Outbox,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), CollectorError>> {
        async move {
            let mut view = OvsView::default();
            let mut last_txn = None;
            let mut attempt: u32 = 0;
            let mut alive = Instant::now();
            loop {
                let started = Instant::now();
                match self
                    .session(&mut view, &mut last_txn, &outbox, &mut alive, &shutdown)
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(SessionEnd::Collector(err)) => return Err(err),
                    Err(SessionEnd::Ovsdb(err)) if err.is_absent() => {
                        tracing::debug!(%err, "no Open vSwitch database; retrying quietly");
                        if view.tables.tables.is_empty() {
                            // What this collector sees: nothing (a restarted agent waits for
                            // every collector's first word before it resumes).
                            outbox.replace_all(NAME, Vec::new()).map_err(failed)?;
                        }
                    }
                    Err(SessionEnd::Ovsdb(err)) => {
                        tracing::warn!(%err, "OVSDB session ended; reconnecting")
                    }
                }
                if started.elapsed() > Duration::from_secs(10) {
                    attempt = 0;
                }
                if !view.tables.tables.is_empty() && alive.elapsed() > self.options.forget_after {
                    tracing::warn!(
                        "Open vSwitch unreachable for {:?}: its objects are withdrawn",
                        self.options.forget_after
                    );
                    view = OvsView::default();
                    last_txn = None;
                    outbox.replace_all(NAME, Vec::new()).map_err(failed)?;
                }
                let delay = crate::backoff::delay(
                    attempt,
                    Duration::from_millis(100),
                    self.options.reconnect_max,
                );
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
        .boxed()
    }
}
