use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{AttrMap, CompactString, ObjectId, ObjectType, UnknownObjectType};

/// A link type, `<source type>-<target type>` as the original names it (`vnic-vconnector`).
///
/// Any pair of object types parses (implicit, transitive links such as `instance-network` are
/// pairs too); [`LinkType::is_declared`] tells whether a pair is one the link finders produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkType {
    pub source: ObjectType,
    pub target: ObjectType,
}

/// The link types the link finders produce: reference §2.2 of the original, plus `otep-otep`
/// (the tunnel between two hosts' endpoints) and `vnic-vnic` (veth peers).
const DECLARED: &[(ObjectType, ObjectType)] = {
    use ObjectType::*;
    &[
        (Instance, Vnic),
        (Vnic, Vconnector),
        (Vnic, Vedge),
        (Vconnector, Vedge),
        (Vedge, HostPnic),
        (Vedge, Otep),
        (Otep, Vconnector),
        (Otep, HostPnic),
        (Vconnector, HostPnic),
        (Vservice, Vnic),
        (HostPnic, Network),
        (HostPnic, SwitchPnic),
        (Switch, SwitchPnic),
        (SwitchPnic, SwitchPnic),
        (Otep, Otep),
        (Vnic, Vnic),
    ]
};

impl LinkType {
    pub const fn new(source: ObjectType, target: ObjectType) -> Self {
        LinkType { source, target }
    }

    /// The link types the link finders produce, in their canonical direction.
    pub fn declared() -> impl Iterator<Item = LinkType> {
        DECLARED.iter().map(|&(s, t)| LinkType::new(s, t))
    }

    /// The same link walked the other way (`vconnector-vnic` for `vnic-vconnector`).
    pub const fn reversed(self) -> Self {
        LinkType::new(self.target, self.source)
    }

    /// Whether this type, in either direction, is one the link finders produce. Clique types
    /// walk links in both directions, so both spellings are declared, as in the original.
    pub fn is_declared(self) -> bool {
        Self::declared().any(|d| d == self || d == self.reversed())
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.source, self.target)
    }
}

/// Why a string is not a link type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseLinkTypeError {
    #[error("link type `{0}` is not of the form `<source type>-<target type>`")]
    Shape(String),
    #[error("link type `{link}`: {source}")]
    Type {
        link: String,
        #[source]
        source: UnknownObjectType,
    },
}

impl FromStr for LinkType {
    type Err = ParseLinkTypeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Object type names never contain '-', so a link type has exactly one.
        let (source, target) = text
            .split_once('-')
            .filter(|(_, target)| !target.contains('-'))
            .ok_or_else(|| ParseLinkTypeError::Shape(text.to_owned()))?;
        let parse = |name: &str| {
            name.parse::<ObjectType>()
                .map_err(|source| ParseLinkTypeError::Type {
                    link: text.to_owned(),
                    source,
                })
        };
        Ok(LinkType::new(parse(source)?, parse(target)?))
    }
}

impl Serialize for LinkType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LinkType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether traffic can cross a link, derived from its endpoints (never assumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Up,
    Down,
    #[default]
    Unknown,
}

impl LinkState {
    pub const fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Unknown => "unknown",
        }
    }

    /// The state of a path through two parts: down if either is down, up only if both are up.
    pub fn and(self, other: LinkState) -> LinkState {
        match (self, other) {
            (LinkState::Down, _) | (_, LinkState::Down) => LinkState::Down,
            (LinkState::Up, LinkState::Up) => LinkState::Up,
            _ => LinkState::Unknown,
        }
    }
}

/// A typed edge between two inventory objects, built by the aggregator's link finders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub source: ObjectId,
    pub target: ObjectId,
    pub link_type: LinkType,
    pub state: LinkState,
    /// The host both ends live on, for host-local links (inline, as an object's host is).
    pub host: Option<CompactString>,
    /// Whether the link is the transitive closure of two others rather than observed.
    pub implicit: bool,
    pub attributes: AttrMap,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_original_names() {
        let lt: LinkType = "host_pnic-network".parse().expect("valid link type");
        assert_eq!(lt, LinkType::new(ObjectType::HostPnic, ObjectType::Network));
        assert_eq!(lt.to_string(), "host_pnic-network");
        assert!(lt.is_declared());
        assert!(lt.reversed().is_declared());
        assert!(!LinkType::new(ObjectType::Instance, ObjectType::Network).is_declared());
    }

    #[test]
    fn declared_set_counts_as_the_original_plus_two() {
        assert_eq!(LinkType::declared().count(), 16);
        // The original declared 27 names: 14 pairs and their reverses, `switch_pnic-switch_pnic`
        // being its own reverse. We add `otep-otep` and `vnic-vnic`, also their own reverses.
        let mut names: Vec<String> = LinkType::declared()
            .flat_map(|l| [l.to_string(), l.reversed().to_string()])
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 27 + 2);
    }

    #[test]
    fn rejects_bad_shapes_with_the_offending_text() {
        for bad in ["vnic", "vnic-vedge-otep", "-vnic", "vnic-router"] {
            let err = bad
                .parse::<LinkType>()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(bad) || err.contains("router"), "{bad}: {err}");
        }
    }

    #[test]
    fn state_of_a_path() {
        use LinkState::*;
        assert_eq!(Up.and(Up), Up);
        assert_eq!(Up.and(Down), Down);
        assert_eq!(Unknown.and(Down), Down);
        assert_eq!(Up.and(Unknown), Unknown);
    }
}
