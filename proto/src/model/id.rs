//! Deterministic object ids.
//!
//! An id is derived only from facts that survive an agent restart, so the same host state
//! always yields the same ids and a restarted agent's snapshot matches what the aggregator has.
//!
//! | type | id | natural key |
//! |---|---|---|
//! | host | `host:<host>` | the configured host id (hostname by default) |
//! | host_pnic, vnic | `<type>:<host>:<ifkey>` | `<ifkey>` = interface name, or `<netns>/<ifname>` inside a named network namespace |
//! | vconnector | `vconnector:<host>:<ifkey>` (Linux bridge) or `vconnector:<host>:bd-<id>` (VPP bridge domain) | bridge device / bridge-domain id |
//! | vedge | `vedge:<host>:ovs` or `vedge:<host>:vpp` | one per vswitch per host |
//! | otep | `otep:<host>:<local ip>` (OVS/VPP tunnel endpoint) or `otep:<host>:<ifkey>` (LXB vxlan device) | tunnel local IP / device |
//! | vservice | `vservice:<host>:<netns>` | namespace name (`qdhcp-…`, `qrouter-…`) |
//! | network_agent | `network_agent:<host>:<binary>` | agent binary name |
//! | container | `container:<host>:<container id>` | runtime id |
//! | instance, network, port, project, region, … | `<type>:<uuid or name>` (lower-case) | the Nova/Neutron/Keystone UUID, so that an agent-seen interface's `vm-uuid` and `iface-id` name the same objects as the OpenStack adapter |
//!
//! Interface names cannot contain `/` or `:` (the kernel refuses them) and host ids are
//! validated to contain neither, so the parts of an id never run into each other.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ObjectType;

/// The id of an inventory object; see the module documentation for the rule per type.
///
/// Shared, not copied: the aggregator indexes every id several times (by type, host, links,
/// cliques), and a clone is a reference count, not a new string.
#[derive(Debug, Clone, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectId(Arc<str>);

/// As its text, so that maps keyed by ids can be searched with a `&str` ([`std::borrow::Borrow`]).
impl std::hash::Hash for ObjectId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Equal when they share their text (the common case in the aggregator's indexes, which
/// hold copies of one id) or have the same text.
impl PartialEq for ObjectId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl ObjectId {
    /// Wraps an id read from the wire, the store or a request. No format is imposed: ids of
    /// objects that came from elsewhere are checked where ownership matters
    /// ([`ObjectId::owning_host`]).
    pub fn from_raw(id: impl Into<String>) -> Self {
        ObjectId(Arc::from(id.into()))
    }

    /// The id of a host object.
    pub fn host(host: &str) -> Self {
        ObjectId::from_raw(format!("{}:{host}", ObjectType::Host))
    }

    /// The id of an object that lives on one host, from its natural key on that host.
    pub fn host_local(object_type: ObjectType, host: &str, key: &str) -> Self {
        ObjectId::from_raw(format!("{object_type}:{host}:{key}"))
    }

    /// The id of a cloud-level object known by a global key (a Nova or Neutron UUID).
    pub fn global(object_type: ObjectType, key: &str) -> Self {
        ObjectId::from_raw(format!("{object_type}:{}", key.to_ascii_lowercase()))
    }

    /// The key of a network interface: its name, prefixed by its namespace when it is not in
    /// the host's own.
    pub fn interface_key(netns: Option<&str>, ifname: &str) -> String {
        match netns {
            Some(ns) => format!("{ns}/{ifname}"),
            None => ifname.to_owned(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether both are copies of one id (not only equal text): a test that reads no text.
    pub fn is_same_copy(&self, other: &ObjectId) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The type named by the id's first part, if it names one.
    pub fn object_type(&self) -> Option<ObjectType> {
        self.0.split(':').next()?.parse().ok()
    }

    /// The host an id belongs to, for ids of host-local types (`vnic:<host>:…`, `host:<host>`).
    pub fn owning_host(&self) -> Option<&str> {
        let mut parts = self.0.splitn(3, ':');
        let object_type: ObjectType = parts.next()?.parse().ok()?;
        if !object_type.is_host_local() {
            return None;
        }
        let host = parts.next()?;
        match (object_type, parts.next()) {
            (ObjectType::Host, None) => Some(host),
            (ObjectType::Host, Some(_)) => None,
            (_, Some(key)) if !key.is_empty() => Some(host),
            _ => None,
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// An id hashes, compares and orders as its text, so maps keyed by ids are searched with a
/// `&str` read from an attribute without making an id of it first.
impl std::borrow::Borrow<str> for ObjectId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ObjectId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_per_type() {
        assert_eq!(ObjectId::host("compute-1").as_str(), "host:compute-1");
        let key = ObjectId::interface_key(Some("qdhcp-5a7c"), "tap1f72bd15-8a");
        let vnic = ObjectId::host_local(ObjectType::Vnic, "compute-1", &key);
        assert_eq!(vnic.as_str(), "vnic:compute-1:qdhcp-5a7c/tap1f72bd15-8a");
        assert_eq!(vnic.owning_host(), Some("compute-1"));
        assert_eq!(vnic.object_type(), Some(ObjectType::Vnic));
        let vm = ObjectId::global(ObjectType::Instance, "BF0CB914-B316-486C-A4CE-F22DEB453C52");
        assert_eq!(vm.as_str(), "instance:bf0cb914-b316-486c-a4ce-f22deb453c52");
        assert_eq!(vm.owning_host(), None);
    }

    #[test]
    fn owning_host_refuses_malformed_ids() {
        for raw in [
            "vnic:compute-1",
            "vnic:compute-1:",
            "bogus:compute-1:eth0",
            "host:a:b",
            "vnic",
        ] {
            assert_eq!(ObjectId::from_raw(raw).owning_host(), None, "{raw}");
        }
    }
}
