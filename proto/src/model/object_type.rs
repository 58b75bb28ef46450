use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines [`ObjectType`] from one list of `Variant => "name"` pairs so the enum, its string
/// names and the list of all types cannot drift apart.
macro_rules! object_types {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// The type of an inventory object, named as the original Calipso names it.
        ///
        /// It is serialized as its name (`"host_pnic"`), in JSON and on the wire alike, so that
        /// adding a type never renumbers the others.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ObjectType {
            $($variant),+
        }

        impl ObjectType {
            /// Every object type, in declaration order.
            pub const ALL: &'static [ObjectType] = &[$(ObjectType::$variant),+];

            /// The name used in ids, link types, JSON and on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ObjectType::$variant => $name),+
                }
            }
        }

        impl FromStr for ObjectType {
            type Err = UnknownObjectType;

            fn from_str(name: &str) -> Result<Self, Self::Err> {
                match name {
                    $($name => Ok(ObjectType::$variant),)+
                    other => Err(UnknownObjectType(other.to_owned())),
                }
            }
        }
    };
}

object_types! {
    Environment => "environment",
    Region => "region",
    AvailabilityZone => "availability_zone",
    Project => "project",
    Host => "host",
    Instance => "instance",
    Vnic => "vnic",
    Vconnector => "vconnector",
    Vedge => "vedge",
    Otep => "otep",
    HostPnic => "host_pnic",
    Switch => "switch",
    SwitchPnic => "switch_pnic",
    Network => "network",
    Port => "port",
    Vservice => "vservice",
    NetworkAgent => "network_agent",
    Container => "container",
    Pod => "pod",
}

impl ObjectType {
    /// Whether objects of this type belong to one host (and so carry its name in their id and
    /// are written only by that host's agent). Cloud-level objects (projects, networks, Neutron
    /// ports, instances known by their Nova UUID, switches) do not.
    pub const fn is_host_local(self) -> bool {
        matches!(
            self,
            ObjectType::Host
                | ObjectType::Vnic
                | ObjectType::Vconnector
                | ObjectType::Vedge
                | ObjectType::Otep
                | ObjectType::HostPnic
                | ObjectType::Vservice
                | ObjectType::NetworkAgent
                | ObjectType::Container
        )
    }
}

/// A type name that is not one of [`ObjectType::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown object type `{0}`")]
pub struct UnknownObjectType(pub String);

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for ObjectType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ObjectType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for ty in ObjectType::ALL {
            assert!(seen.insert(ty.as_str()), "duplicate name {ty}");
            assert_eq!(ty.as_str().parse::<ObjectType>(), Ok(*ty));
            assert!(
                !ty.as_str().contains('-'),
                "type names must not contain the link separator"
            );
        }
        assert_eq!(ObjectType::ALL.len(), 19);
    }

    #[test]
    fn json_uses_the_original_names() {
        assert_eq!(
            serde_json::to_string(&ObjectType::HostPnic).ok(),
            Some("\"host_pnic\"".to_owned())
        );
        let err = serde_json::from_str::<ObjectType>("\"vrouter\"")
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("unknown object type `vrouter`"));
    }
}
