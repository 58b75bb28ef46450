use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::{AttrMap, AttrValue, IpPrefix, LinkState, MacAddress, ObjectId, ObjectType, Timestamp};

/// An inventory object as an agent reports it (and as the aggregator keeps it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub id: ObjectId,
    #[serde(rename = "type")]
    pub object_type: ObjectType,
    /// Names, environments and hosts are short: kept inline, not as one allocation each of
    /// the hundreds of thousands of objects an aggregator holds.
    pub name: CompactString,
    pub environment: CompactString,
    /// The owning host, for host-local objects.
    pub host: Option<CompactString>,
    /// The object's place in the inventory tree (a vnic's instance or vservice, a vservice's host).
    pub parent: Option<ParentRef>,
    pub attributes: Attributes,
    pub status: Status,
}

/// The parent of an object in the inventory tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub id: ObjectId,
    #[serde(rename = "type")]
    pub object_type: ObjectType,
}

/// Attributes: the fields link finders and health checks match on are typed; the rest of what
/// a collector knows (ethtool facts, OVSDB external_ids, libvirt metadata) goes in `extra`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Attributes {
    pub mac_address: Option<MacAddress>,
    pub mtu: Option<u32>,
    /// Addresses with their prefix length (a vservice vNIC's `10.0.0.2/24`).
    pub addresses: Vec<IpPrefix>,
    /// Operational state of an interface-like object.
    pub link_state: Option<LinkState>,
    pub extra: AttrMap,
}

/// The health of an object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Status {
    pub level: StatusLevel,
    pub text: String,
    /// When the level last changed.
    pub timestamp: Option<Timestamp>,
    /// Measurements the check reported, in Nagios plugin form (`rtt=0.4ms;300;1000 loss=0%`).
    #[serde(default)]
    pub perfdata: String,
}

/// Health levels, as the original's monitoring reported them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum StatusLevel {
    Ok,
    Warning,
    Error,
    #[default]
    Unknown,
}

impl StatusLevel {
    /// How bad a level is, for roll-ups: an error outranks a warning, which outranks not
    /// knowing, which outranks ok.
    pub const fn severity(self) -> u8 {
        match self {
            StatusLevel::Ok => 0,
            StatusLevel::Unknown => 1,
            StatusLevel::Warning => 2,
            StatusLevel::Error => 3,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            StatusLevel::Ok => "ok",
            StatusLevel::Warning => "warning",
            StatusLevel::Error => "error",
            StatusLevel::Unknown => "unknown",
        }
    }
}

impl Object {
    /// A new object with empty attributes and an unknown status.
    pub fn new(
        id: ObjectId,
        object_type: ObjectType,
        name: impl Into<CompactString>,
        environment: impl Into<CompactString>,
    ) -> Self {
        Object {
            id,
            object_type,
            name: name.into(),
            environment: environment.into(),
            host: None,
            parent: None,
            attributes: Attributes::default(),
            status: Status::default(),
        }
    }

    pub fn with_host(mut self, host: impl Into<CompactString>) -> Self {
        self.host = Some(host.into());
        self
    }

    pub fn with_parent(mut self, id: ObjectId, object_type: ObjectType) -> Self {
        self.parent = Some(ParentRef { id, object_type });
        self
    }

    /// Sets a free-form attribute.
    pub fn with_extra(mut self, key: &str, value: impl Into<AttrValue>) -> Self {
        self.attributes.extra.insert(key, value.into());
        self
    }
}
