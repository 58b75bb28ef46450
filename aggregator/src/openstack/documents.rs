//! Neutron and Keystone documents, and the cloud-level objects they make.
//!
//! [`CloudState`] keeps the documents of one environment, as the last full read and the
//! notifications since left them, and turns them into inventory objects: a network carries
//! its subnets' ids and CIDRs (as the original's network documents did), so a subnet event
//! changes its network's object.

use std::collections::BTreeMap;

use calipso_proto::{AttrValue, LinkState, Object, ObjectId, ObjectType, StatusLevel};
use serde::Deserialize;
use serde_json::Value;

/// Fields every Neutron resource has; the rest of the document is kept as attributes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Resource {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub fields: BTreeMap<String, Value>,
}

impl Resource {
    fn text(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// The owning project: `project_id` on current releases, `tenant_id` on older ones.
    fn project(&self) -> Option<&str> {
        self.text("project_id").or_else(|| self.text("tenant_id"))
    }

    fn display_name(&self) -> String {
        match self.name.as_deref() {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => self.id.clone(),
        }
    }
}

/// A Keystone v3 project.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub fields: BTreeMap<String, Value>,
}

/// A Nova availability zone, as `os-availability-zone/detail` lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Zone {
    pub zone_name: String,
    #[serde(default)]
    pub zone_state: ZoneState,
    /// Host name → the Nova services it runs there (`null` for a zone without hosts).
    #[serde(default)]
    pub hosts: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ZoneState {
    #[serde(default)]
    pub available: bool,
}

/// Everything one full read of the APIs returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// The regions the service catalog names.
    pub regions: Vec<String>,
    pub zones: Vec<Zone>,
    pub projects: Vec<Project>,
    pub networks: Vec<Resource>,
    pub subnets: Vec<Resource>,
    pub ports: Vec<Resource>,
}

/// What changed in the cloud, as one notification tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum CloudEvent {
    NetworkUpserted(Resource),
    NetworkDeleted(String),
    SubnetUpserted(Resource),
    SubnetDeleted(String),
    PortUpserted(Resource),
    PortDeleted(String),
}

/// Objects to write and ids to remove.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectChanges {
    pub upserts: Vec<Object>,
    pub removals: Vec<ObjectId>,
}

/// The Neutron and Keystone documents of one environment.
#[derive(Debug, Clone, Default)]
pub struct CloudState {
    environment: String,
    regions: Vec<String>,
    zones: Vec<Zone>,
    projects: BTreeMap<String, Project>,
    networks: BTreeMap<String, Resource>,
    subnets: BTreeMap<String, Resource>,
    ports: BTreeMap<String, Resource>,
}

fn by_id<T>(items: Vec<T>, id: impl Fn(&T) -> &str) -> BTreeMap<String, T> {
    items
        .into_iter()
        .map(|item| (id(&item).to_ascii_lowercase(), item))
        .collect()
}

impl CloudState {
    pub fn new(environment: &str) -> Self {
        CloudState {
            environment: environment.to_owned(),
            ..Self::default()
        }
    }

    /// Replaces every document with a full read.
    pub fn replace(&mut self, inventory: Inventory) {
        self.regions = inventory.regions;
        self.regions.sort();
        self.regions.dedup();
        self.zones = inventory.zones;
        self.projects = by_id(inventory.projects, |p| &p.id);
        self.networks = by_id(inventory.networks, |r| &r.id);
        self.subnets = by_id(inventory.subnets, |r| &r.id);
        self.ports = by_id(inventory.ports, |r| &r.id);
    }

    /// Every object the documents make.
    pub fn objects(&self) -> Vec<Object> {
        let regions = self
            .regions
            .iter()
            .map(|r| self.new_object(ObjectType::Region, r, r.clone()));
        let zones = self.zones.iter().map(|z| self.zone_object(z));
        let projects = self.projects.values().map(|p| self.project_object(p));
        // Subnets grouped by network once, not searched for each network.
        let mut subnets: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
        for subnet in self.subnets.values() {
            if let Some(network) = subnet.text("network_id") {
                subnets
                    .entry(network.to_ascii_lowercase())
                    .or_default()
                    .push(subnet);
            }
        }
        let networks = self.networks.iter().map(move |(key, network)| {
            self.network_object(network, subnets.get(key).map_or(&[], Vec::as_slice))
        });
        let ports = self.ports.values().map(|p| self.port_object(p));
        regions
            .chain(zones)
            .chain(projects)
            .chain(networks)
            .chain(ports)
            .collect()
    }

    /// Applies one event; returns the objects it changes.
    pub fn apply(&mut self, event: CloudEvent) -> ObjectChanges {
        let mut changes = ObjectChanges::default();
        match event {
            CloudEvent::NetworkUpserted(network) => {
                changes
                    .upserts
                    .push(self.network_object(&network, &self.subnets_of(&network.id)));
                self.networks
                    .insert(network.id.to_ascii_lowercase(), network);
            }
            CloudEvent::NetworkDeleted(id) => {
                let key = id.to_ascii_lowercase();
                self.networks.remove(&key);
                self.subnets.retain(|_, s| {
                    !s.text("network_id")
                        .is_some_and(|n| n.eq_ignore_ascii_case(&key))
                });
                changes
                    .removals
                    .push(ObjectId::global(ObjectType::Network, &key));
            }
            CloudEvent::SubnetUpserted(subnet) => {
                let network = subnet.text("network_id").map(str::to_owned);
                self.subnets.insert(subnet.id.to_ascii_lowercase(), subnet);
                changes
                    .upserts
                    .extend(network.and_then(|id| self.network_now(&id)));
            }
            CloudEvent::SubnetDeleted(id) => {
                let network = self
                    .subnets
                    .remove(&id.to_ascii_lowercase())
                    .and_then(|s| s.text("network_id").map(str::to_owned));
                changes
                    .upserts
                    .extend(network.and_then(|id| self.network_now(&id)));
            }
            CloudEvent::PortUpserted(port) => {
                changes.upserts.push(self.port_object(&port));
                self.ports.insert(port.id.to_ascii_lowercase(), port);
            }
            CloudEvent::PortDeleted(id) => {
                self.ports.remove(&id.to_ascii_lowercase());
                changes
                    .removals
                    .push(ObjectId::global(ObjectType::Port, &id));
            }
        }
        changes
    }

    fn network_now(&self, id: &str) -> Option<Object> {
        self.networks
            .get(&id.to_ascii_lowercase())
            .map(|n| self.network_object(n, &self.subnets_of(id)))
    }

    fn new_object(&self, object_type: ObjectType, id: &str, name: String) -> Object {
        Object::new(
            ObjectId::global(object_type, id),
            object_type,
            name,
            &self.environment,
        )
    }

    /// A zone with its hosts (Nova's host names, which agents use as their host ids by
    /// default) and whether Nova reports it available.
    fn zone_object(&self, zone: &Zone) -> Object {
        let mut object = self.new_object(
            ObjectType::AvailabilityZone,
            &zone.zone_name,
            zone.zone_name.clone(),
        );
        let hosts: Vec<String> = zone
            .hosts
            .iter()
            .flat_map(|hosts| hosts.keys().cloned())
            .collect();
        object.attributes.extra.insert("hosts", hosts.into());
        object
            .attributes
            .extra
            .insert("available", zone.zone_state.available.into());
        object.attributes.link_state = Some(if zone.zone_state.available {
            LinkState::Up
        } else {
            LinkState::Down
        });
        object.status.level = if zone.zone_state.available {
            StatusLevel::Ok
        } else {
            StatusLevel::Error
        };
        object
    }

    fn project_object(&self, project: &Project) -> Object {
        let mut object = self.new_object(ObjectType::Project, &project.id, project.name.clone());
        copy_fields(&mut object, &project.fields);
        object.with_extra("project_id", project.id.as_str())
    }

    /// The subnets of one network.
    fn subnets_of(&self, network: &str) -> Vec<&Resource> {
        self.subnets
            .values()
            .filter(|s| {
                s.text("network_id")
                    .is_some_and(|n| n.eq_ignore_ascii_case(network))
            })
            .collect()
    }

    fn network_object(&self, network: &Resource, subnets: &[&Resource]) -> Object {
        let mut object = self.new_object(ObjectType::Network, &network.id, network.display_name());
        copy_fields(&mut object, &network.fields);
        let list = |f: &dyn Fn(&Resource) -> Option<String>| -> AttrValue {
            AttrValue::List(
                subnets
                    .iter()
                    .filter_map(|s| f(s))
                    .map(AttrValue::from)
                    .collect(),
            )
        };
        let extra = &mut object.attributes.extra;
        extra.insert("subnet_ids", list(&|s| Some(s.id.clone())));
        extra.insert("cidrs", list(&|s| s.text("cidr").map(str::to_owned)));
        extra.insert("subnet_names", list(&|s| Some(s.display_name())));
        if let Some(project) = network.project() {
            extra.insert("project_id", AttrValue::from(project));
        }
        set_state(&mut object, network);
        object
    }

    fn port_object(&self, port: &Resource) -> Object {
        let mut object = self.new_object(ObjectType::Port, &port.id, port.display_name());
        copy_fields(&mut object, &port.fields);
        object.attributes.mac_address = port.text("mac_address").and_then(|m| m.parse().ok());
        if let Some(project) = port.project() {
            object
                .attributes
                .extra
                .insert("project_id", AttrValue::from(project));
        }
        set_state(&mut object, port);
        object
    }
}

/// Keeps every field of the document as an attribute; a value too deep to keep is dropped
/// (Neutron documents are a few levels deep at most).
fn copy_fields(object: &mut Object, fields: &BTreeMap<String, Value>) {
    for (key, value) in fields {
        if let Ok(value) = serde_json::from_value::<AttrValue>(value.clone()) {
            object.attributes.extra.insert(key, value);
        }
    }
}

/// Neutron's `status` and `admin_state_up` as the object's state and health.
fn set_state(object: &mut Object, resource: &Resource) {
    let admin_up = resource
        .fields
        .get("admin_state_up")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let status = resource.text("status").unwrap_or_default();
    object.attributes.link_state = Some(if admin_up && status != "DOWN" && status != "ERROR" {
        LinkState::Up
    } else {
        LinkState::Down
    });
    object.status.level = match status {
        "ACTIVE" => StatusLevel::Ok,
        "ERROR" => StatusLevel::Error,
        "DOWN" | "BUILD" => StatusLevel::Warning,
        _ => StatusLevel::Unknown,
    };
    object.status.text = status.to_owned();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resource(value: Value) -> Resource {
        serde_json::from_value(value).expect("resource")
    }

    fn read<T: serde::de::DeserializeOwned>(text: &str, key: &str) -> Vec<T> {
        let mut value: Value = serde_json::from_str(text).expect("json");
        serde_json::from_value(value[key].take()).expect(key)
    }

    #[test]
    fn the_recorded_api_answers_make_objects() {
        let mut state = CloudState::new("lab");
        state.replace(Inventory {
            regions: vec!["RegionOne".into()],
            zones: read(
                include_str!(
                    "../../../../shared/fixtures/openstack/api/nova-os-availability-zone-detail-1.json"
                ),
                "availabilityZoneInfo",
            ),
            projects: read::<Project>(
                r#"{"projects": [{"id": "75C0EB79", "name": "admin", "enabled": true}]}"#,
                "projects",
            ),
            networks: read(
                include_str!("../../../../shared/fixtures/openstack/api/neutron-networks.json"),
                "networks",
            ),
            subnets: read(
                include_str!("../../../../shared/fixtures/openstack/api/neutron-subnets.json"),
                "subnets",
            ),
            ports: read(
                include_str!("../../../../shared/fixtures/openstack/api/neutron-ports.json"),
                "ports",
            ),
        });
        let objects = state.objects();
        let ids: Vec<&str> = objects.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "region:regionone",
                "availability_zone:internal",
                "availability_zone:osdna-zone",
                "project:75c0eb79",
                "network:8673c48a-f137-4497-b25d-08b7b218fd17",
                "port:16620a58-c48c-4195-b9c1-779a8ba2e6f8",
            ]
        );
        let zone = &objects[2];
        assert_eq!(zone.name, "osdna-zone");
        assert_eq!(
            zone.attributes.extra.get("hosts"),
            Some(&AttrValue::List(vec!["node-5.cisco.com".into()]))
        );
        assert_eq!(zone.attributes.link_state, Some(LinkState::Up));
        let port = &objects[5];
        assert_eq!(port.host, None);
        assert_eq!(
            port.name, "16620a58-c48c-4195-b9c1-779a8ba2e6f8",
            "unnamed: its id"
        );
        assert_eq!(
            port.attributes
                .mac_address
                .map(|m| m.to_string())
                .as_deref(),
            Some("fa:16:3e:d7:c5:16")
        );
        assert_eq!(
            port.attributes
                .extra
                .get("network_id")
                .and_then(AttrValue::as_str),
            Some("b6fd5175-4b22-4256-9b1a-9fc4b9dce1fe")
        );
        assert_eq!(
            port.attributes
                .extra
                .get("project_id")
                .and_then(AttrValue::as_str),
            Some("75c0eb79ff4a42b0ae4973c8375ddf40"),
            "tenant_id of older releases"
        );
    }

    #[test]
    fn subnet_events_change_their_network() {
        let mut state = CloudState::new("lab");
        let network = resource(json!({"id": "N1", "name": "net", "status": "ACTIVE",
            "admin_state_up": true, "provider:network_type": "vxlan", "provider:segmentation_id": 8}));
        let changes = state.apply(CloudEvent::NetworkUpserted(network));
        assert_eq!(changes.upserts.len(), 1);
        assert_eq!(
            changes.upserts[0].attributes.link_state,
            Some(LinkState::Up)
        );
        assert_eq!(changes.upserts[0].status.level, StatusLevel::Ok);

        let subnet =
            resource(json!({"id": "S1", "name": "sub", "network_id": "N1", "cidr": "10.0.0.0/24"}));
        let changes = state.apply(CloudEvent::SubnetUpserted(subnet));
        let cidrs = changes.upserts[0].attributes.extra.get("cidrs").cloned();
        assert_eq!(
            cidrs,
            Some(AttrValue::List(vec![AttrValue::Str("10.0.0.0/24".into())]))
        );

        let changes = state.apply(CloudEvent::SubnetDeleted("S1".into()));
        assert_eq!(
            changes.upserts[0].attributes.extra.get("cidrs"),
            Some(&AttrValue::List(Vec::new()))
        );
        let changes = state.apply(CloudEvent::SubnetDeleted("unknown".into()));
        assert_eq!(changes, ObjectChanges::default(), "nothing to change");

        let down =
            resource(json!({"id": "N1", "name": "net", "status": "DOWN", "admin_state_up": false}));
        let changes = state.apply(CloudEvent::NetworkUpserted(down));
        assert_eq!(
            changes.upserts[0].attributes.link_state,
            Some(LinkState::Down)
        );
        let changes = state.apply(CloudEvent::NetworkDeleted("N1".into()));
        assert_eq!(
            changes.removals,
            vec![ObjectId::global(ObjectType::Network, "n1")]
        );
        assert!(state.objects().is_empty());
    }

    #[test]
    fn ports_come_and_go() {
        let mut state = CloudState::new("lab");
        let port = resource(json!({"id": "P1", "network_id": "N1", "status": "ERROR",
            "binding:host_id": "compute-1", "fixed_ips": [{"subnet_id": "S1", "ip_address": "10.0.0.5"}]}));
        let changes = state.apply(CloudEvent::PortUpserted(port));
        let object = &changes.upserts[0];
        assert_eq!(object.id.as_str(), "port:p1");
        assert_eq!(object.status.level, StatusLevel::Error);
        assert!(
            object.attributes.addresses.is_empty(),
            "a port's address is not an interface's"
        );
        assert_eq!(state.objects().len(), 1);
        let changes = state.apply(CloudEvent::PortDeleted("P1".into()));
        assert_eq!(changes.removals, vec![ObjectId::from_raw("port:p1")]);
        assert!(state.objects().is_empty());
    }
}
