//! Clique types and constraints (what a clique of a focal point is made of) and the choice of a
//! clique type for an environment, with the original's scoring.

use std::collections::BTreeMap;

use calipso_proto::{LinkType, ObjectType};
use serde::{Deserialize, Serialize};

/// How an environment is built, as clique types are selected by it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EnvironmentConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_version: Option<String>,
    #[serde(default)]
    pub mechanism_drivers: Vec<String>,
    #[serde(default)]
    pub type_drivers: Vec<String>,
    /// `OpenStack` unless said otherwise, as in the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_type: Option<String>,
    /// Connection settings by target (`OpenStack`, `AMQP`, …) as in the original's
    /// `configuration` list; secret values among them are never returned by the API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configuration: BTreeMap<String, BTreeMap<String, String>>,
}

impl EnvironmentConfig {
    pub fn named(name: &str) -> Self {
        EnvironmentConfig {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    fn environment_type(&self) -> &str {
        self.environment_type.as_deref().unwrap_or("OpenStack")
    }
}

/// The walk that builds the clique of a focal point: link types in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CliqueType {
    pub name: String,
    /// `ANY` (the fallback), an environment's name, or absent when the type is chosen by the
    /// configuration fields below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mechanism_drivers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub type_drivers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_type: Option<String>,
    #[schema(value_type = String, example = "instance")]
    pub focal_point_type: ObjectType,
    #[schema(value_type = Vec<String>, example = json!(["instance-vnic", "vnic-vedge"]))]
    pub link_types: Vec<LinkType>,
    #[serde(default)]
    pub use_implicit_links: bool,
    /// How the link types are walked; absent in the original's documents, which walk in order.
    #[serde(default)]
    pub walk: WalkKind,
}

/// How a clique type's link types are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WalkKind {
    /// The original's walk: each link type once, in order, from every object of its source
    /// type gathered so far; the first link type that finds nothing ends the walk.
    #[default]
    Ordered,
    /// Every link type is a move the walk may make from an object of its source type, made
    /// until nothing new is reached (a link type that finds nothing is passed over); then
    /// only what lies between the focal point and its ends is kept — the wire (networks, or
    /// the physical NICs where no network is known) for an instance or a vservice, the
    /// instances, vservices and networks for any other focal point.
    Dependencies,
}

/// Why a clique type cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCliqueType {
    #[error("clique type `{0}` has no link types")]
    NoLinkTypes(String),
    #[error(
        "clique type `{name}`: link type `{link_type}` is not one the link finders produce (set use_implicit_links to walk transitive links)"
    )]
    UnknownLinkType { name: String, link_type: LinkType },
    #[error(
        "clique type `{name}`: the first link type `{link_type}` does not start or end at the focal point type `{focal}`"
    )]
    DoesNotStartAtFocalPoint {
        name: String,
        link_type: LinkType,
        focal: ObjectType,
    },
    #[error("clique type `{0}`: environment `ANY` or a name excludes the configuration fields")]
    MixedSelection(String),
    #[error(
        "clique type `{0}`: implicit links are walked in order only (walk `ordered`, not `dependencies`)"
    )]
    ImplicitDependencies(String),
}

impl CliqueType {
    /// Checks what a walk needs: declared link types (unless implicit links are allowed) and a
    /// first step that starts at the focal point.
    pub fn validate(&self) -> Result<(), InvalidCliqueType> {
        let Some(first) = self.link_types.first() else {
            return Err(InvalidCliqueType::NoLinkTypes(self.name.clone()));
        };
        if first.source != self.focal_point_type && first.target != self.focal_point_type {
            return Err(InvalidCliqueType::DoesNotStartAtFocalPoint {
                name: self.name.clone(),
                link_type: *first,
                focal: self.focal_point_type,
            });
        }
        if !self.use_implicit_links
            && let Some(unknown) = self.link_types.iter().find(|lt| !lt.is_declared())
        {
            return Err(InvalidCliqueType::UnknownLinkType {
                name: self.name.clone(),
                link_type: *unknown,
            });
        }
        if self.use_implicit_links && self.walk == WalkKind::Dependencies {
            return Err(InvalidCliqueType::ImplicitDependencies(self.name.clone()));
        }
        let configured = self.distribution.is_some()
            || self.distribution_version.is_some()
            || !self.mechanism_drivers.is_empty()
            || !self.type_drivers.is_empty();
        if configured && self.environment.as_deref().is_some_and(|e| !e.is_empty()) {
            return Err(InvalidCliqueType::MixedSelection(self.name.clone()));
        }
        Ok(())
    }

    /// How well the type fits an environment; the highest score wins, 0 never applies
    /// (reference §3.2).
    pub fn score(&self, env: &EnvironmentConfig) -> u32 {
        match self.environment.as_deref() {
            Some(name) if name == env.name => return 64,
            Some("ANY") => return 1,
            Some(name) if !name.is_empty() => return 0,
            _ => {}
        }
        if self
            .environment_type
            .as_deref()
            .is_some_and(|t| t != env.environment_type())
        {
            return 0;
        }
        let mut score = 0;
        if let Some(distribution) = &self.distribution {
            if env.distribution.as_ref() != Some(distribution) {
                return 0;
            }
            score += 32;
            if let Some(version) = &self.distribution_version {
                if env.distribution_version.as_ref() != Some(version) {
                    return 0;
                }
                score += 16;
            }
        }
        if !self.mechanism_drivers.is_empty() {
            let shared = self.mechanism_drivers.iter().any(|d| {
                env.mechanism_drivers
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(d))
            });
            if !shared {
                return 0;
            }
            score += 8;
        }
        if !self.type_drivers.is_empty() {
            let shared = self
                .type_drivers
                .iter()
                .any(|d| env.type_drivers.iter().any(|e| e.eq_ignore_ascii_case(d)));
            if !shared {
                return 0;
            }
            score += 4;
        }
        score.max(2)
    }
}

/// Which attributes of a focal point restrict the links its clique may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CliqueConstraint {
    #[schema(value_type = String, example = "instance")]
    pub focal_point_type: ObjectType,
    pub constraints: Vec<String>,
    /// Only for this environment; absent for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// What the clique of each focal point type is built by in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub entries: Vec<(CliqueType, Vec<String>)>,
}

impl Plan {
    /// The best clique type per focal point type (ties go to the first listed) with its
    /// constraints (an environment's own entry before the general one).
    pub fn choose(
        env: &EnvironmentConfig,
        types: &[CliqueType],
        constraints: &[CliqueConstraint],
    ) -> Plan {
        let mut best: Vec<(u32, &CliqueType)> = Vec::new();
        for clique_type in types {
            let score = clique_type.score(env);
            if score == 0 || clique_type.validate().is_err() {
                continue;
            }
            match best
                .iter_mut()
                .find(|(_, t)| t.focal_point_type == clique_type.focal_point_type)
            {
                Some(entry) if entry.0 < score => *entry = (score, clique_type),
                Some(_) => {}
                None => best.push((score, clique_type)),
            }
        }
        let entries = best
            .into_iter()
            .map(|(_, clique_type)| {
                let of_type =
                    |c: &&CliqueConstraint| c.focal_point_type == clique_type.focal_point_type;
                let keys = constraints
                    .iter()
                    .filter(of_type)
                    .find(|c| c.environment.as_deref() == Some(env.name.as_str()))
                    .or_else(|| {
                        constraints
                            .iter()
                            .filter(of_type)
                            .find(|c| c.environment.is_none())
                    })
                    .map(|c| c.constraints.clone())
                    .unwrap_or_default();
                (clique_type.clone(), keys)
            })
            .collect();
        Plan { entries }
    }

    pub fn for_focal_type(&self, object_type: ObjectType) -> Option<&(CliqueType, Vec<String>)> {
        self.entries
            .iter()
            .find(|(t, _)| t.focal_point_type == object_type)
    }
}

pub(crate) fn parse_link_types(names: &[&str]) -> Vec<LinkType> {
    names.iter().filter_map(|name| name.parse().ok()).collect()
}

/// What a vNIC depends on, up to the wire: bridges and veths between it and the vswitch, the
/// vswitch, tunnel endpoints, the NICs that carry them or the provider traffic, the networks
/// they carry and the switch ports (with their switch) facing those NICs.
const VNIC_TO_WIRE: [&str; 13] = [
    "vnic-vnic",
    "vnic-vconnector",
    "vconnector-vnic",
    "vnic-vedge",
    "vconnector-vedge",
    "vconnector-otep",
    "vedge-otep",
    "otep-host_pnic",
    "vconnector-host_pnic",
    "vedge-host_pnic",
    "host_pnic-network",
    "host_pnic-switch_pnic",
    "switch_pnic-switch",
];

/// From a physical NIC to everything that sends through it: tunnel endpoints, vswitches and
/// bridges, the vNICs on them and their instances and vservices.
const HOST_PNIC_TO_CONSUMERS: [&str; 13] = [
    "host_pnic-otep",
    "host_pnic-vedge",
    "host_pnic-vconnector",
    "otep-vedge",
    "otep-vconnector",
    "vedge-vnic",
    "vedge-vconnector",
    "vnic-vnic",
    "vnic-vconnector",
    "vconnector-vnic",
    "vnic-instance",
    "vnic-vservice",
    "host_pnic-network",
];

/// The original's `ANY` instance walk (reference §3.4).
pub(crate) const ORIGINAL_INSTANCE_WALK: [&str; 7] = [
    "instance-vnic",
    "vnic-vconnector",
    "vconnector-vedge",
    "vedge-otep",
    "otep-vconnector",
    "vconnector-host_pnic",
    "host_pnic-network",
];

/// The original's `ANY` vservice walk, also its configuration-based example's.
const ORIGINAL_VSERVICE_WALK: [&str; 6] = [
    "vservice-vnic",
    "vnic-vedge",
    "vedge-otep",
    "otep-vconnector",
    "vconnector-host_pnic",
    "host_pnic-network",
];

/// The original's `ANY` defaults, which this aggregator seeded before its defaults walked to
/// the wire: a stored type equal to one of them was never edited, and is replaced by the
/// current default of its name when the store is loaded.
const ORIGINAL_ANY_DEFAULTS: [(&str, &[&str]); 4] = [
    ("instance", &ORIGINAL_INSTANCE_WALK),
    ("vservice", &ORIGINAL_VSERVICE_WALK),
    (
        "network",
        &[
            "network-host_pnic",
            "host_pnic-vconnector",
            "vconnector-otep",
            "otep-vedge",
            "vedge-vconnector",
            "vedge-vnic",
            "vconnector-vnic",
            "vnic-instance",
            "vnic-vservice",
        ],
    ),
    (
        "switch_pnic",
        &[
            "switch_pnic-switch_pnic",
            "switch_pnic-host_pnic",
            "host_pnic-vconnector",
            "vconnector-otep",
            "otep-vedge",
            "vedge-vconnector",
            "vedge-vnic",
            "vconnector-vnic",
            "vnic-instance",
            "vnic-vservice",
        ],
    ),
];

/// Replaces stored clique types that are the original's `ANY` defaults as seeded by an
/// earlier version (never edited) with today's defaults of the same name; true if any was.
pub fn upgrade_seeded_defaults(types: &mut [CliqueType]) -> bool {
    let current = default_clique_types();
    let mut upgraded = false;
    for stored in types.iter_mut() {
        let seeded_then = ORIGINAL_ANY_DEFAULTS.iter().any(|(name, links)| {
            stored.name == *name
                && stored.environment.as_deref() == Some("ANY")
                && stored.walk == WalkKind::Ordered
                && !stored.use_implicit_links
                && stored.link_types == parse_link_types(links)
        });
        if let Some(now) = current.iter().find(|t| t.name == stored.name)
            && seeded_then
        {
            *stored = now.clone();
            upgraded = true;
        }
    }
    upgraded
}

/// The clique types seeded on first start. The `ANY` types — what applies unless an
/// environment is matched by a more specific one — walk dependencies to the wire, whatever the
/// vswitch (OVS with direct or hybrid plugging, Linux bridge); the environment- and
/// configuration-specific types are the original's defaults (reference §3.4), walked in order
/// as the original did.
pub fn default_clique_types() -> Vec<CliqueType> {
    use ObjectType::*;
    let ordered = |name: &str, focal: ObjectType, links: &[&str]| CliqueType {
        name: name.to_owned(),
        environment: Some("ANY".into()),
        distribution: None,
        distribution_version: None,
        mechanism_drivers: Vec::new(),
        type_drivers: Vec::new(),
        environment_type: None,
        focal_point_type: focal,
        link_types: parse_link_types(links),
        use_implicit_links: false,
        walk: WalkKind::Ordered,
    };
    let dependencies = |focal: ObjectType, first: &[&str], rest: &[&str]| CliqueType {
        walk: WalkKind::Dependencies,
        ..ordered(focal.as_str(), focal, &[first, rest].concat())
    };
    let for_env = |env: &str, focal: ObjectType, links: &[&str]| CliqueType {
        environment: Some(env.to_owned()),
        ..ordered(&format!("{env}_{focal}"), focal, links)
    };
    vec![
        dependencies(Instance, &["instance-vnic"], &VNIC_TO_WIRE),
        dependencies(Vservice, &["vservice-vnic"], &VNIC_TO_WIRE),
        dependencies(
            Network,
            &["network-host_pnic"],
            &HOST_PNIC_TO_CONSUMERS[..HOST_PNIC_TO_CONSUMERS.len() - 1],
        ),
        dependencies(
            SwitchPnic,
            &["switch_pnic-host_pnic"],
            &HOST_PNIC_TO_CONSUMERS,
        ),
        CliqueType {
            name: "config_based_example_vservice".into(),
            environment: None,
            distribution: Some("Mirantis".into()),
            distribution_version: Some("6.0".into()),
            mechanism_drivers: vec!["OVS".into()],
            type_drivers: vec!["vxlan".into()],
            ..ordered("", Vservice, &ORIGINAL_VSERVICE_WALK)
        },
        for_env(
            "Apex-Euphrates",
            Instance,
            &[
                "instance-vnic",
                "vnic-vconnector",
                "vconnector-vedge",
                "vedge-otep",
                "otep-host_pnic",
                "host_pnic-network",
            ],
        ),
        for_env(
            "Apex-Euphrates",
            Vservice,
            &[
                "vservice-vnic",
                "vnic-vedge",
                "vedge-otep",
                "otep-host_pnic",
                "host_pnic-network",
            ],
        ),
        for_env(
            "Apex-Euphrates",
            Network,
            &[
                "network-host_pnic",
                "host_pnic-otep",
                "otep-vedge",
                "vedge-vconnector",
                "vedge-vnic",
                "vconnector-vnic",
                "vnic-instance",
                "vnic-vservice",
            ],
        ),
        for_env(
            "Mercury",
            Instance,
            &[
                "instance-vnic",
                "vnic-vconnector",
                "vconnector-vedge",
                "vedge-host_pnic",
                "host_pnic-network",
            ],
        ),
        for_env(
            "Mercury",
            Vservice,
            &[
                "vservice-vnic",
                "vnic-vedge",
                "vedge-host_pnic",
                "host_pnic-network",
            ],
        ),
        for_env(
            "Mercury",
            Network,
            &[
                "network-host_pnic",
                "host_pnic-vedge",
                "vedge-vconnector",
                "vedge-vnic",
                "vconnector-vnic",
                "vnic-instance",
                "vnic-vservice",
            ],
        ),
        CliqueType {
            use_implicit_links: true,
            ..for_env("implicit-links-ex", Instance, &["instance-network"])
        },
    ]
}

/// The constraints seeded on first start: instance, vservice and network cliques keep to the
/// focal point's networks.
pub fn default_clique_constraints() -> Vec<CliqueConstraint> {
    [
        ObjectType::Instance,
        ObjectType::Vservice,
        ObjectType::Network,
    ]
    .into_iter()
    .map(|focal_point_type| CliqueConstraint {
        focal_point_type,
        constraints: vec!["network".into()],
        environment: None,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_complete() {
        let types = default_clique_types();
        assert_eq!(types.len(), 12);
        for t in &types {
            assert_eq!(t.validate(), Ok(()), "{}", t.name);
        }
        let names: std::collections::BTreeSet<&str> =
            types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), types.len(), "names are unique");
        let expected_links: usize = [14, 14, 13, 14, 6, 6, 5, 8, 5, 4, 7, 1].iter().sum();
        assert_eq!(
            types.iter().map(|t| t.link_types.len()).sum::<usize>(),
            expected_links
        );
    }

    #[test]
    fn scoring_follows_the_original() {
        let types = default_clique_types();
        let plan = |env: EnvironmentConfig| {
            Plan::choose(&env, &types, &default_clique_constraints())
                .entries
                .into_iter()
                .map(|(t, c)| (t.focal_point_type.to_string(), t.name, c))
                .collect::<Vec<_>>()
        };
        let generic = plan(EnvironmentConfig::named("lab"));
        assert!(generic.contains(&("instance".into(), "instance".into(), vec!["network".into()])));
        assert!(generic.contains(&("switch_pnic".into(), "switch_pnic".into(), vec![])));
        let apex = plan(EnvironmentConfig::named("Apex-Euphrates"));
        assert!(apex.iter().any(|(_, n, _)| n == "Apex-Euphrates_instance"));
        let mirantis = EnvironmentConfig {
            distribution: Some("Mirantis".into()),
            distribution_version: Some("6.0".into()),
            mechanism_drivers: vec!["ovs".into()],
            type_drivers: vec!["vxlan".into()],
            ..EnvironmentConfig::named("m")
        };
        let config_based = &types[4];
        assert_eq!(config_based.score(&mirantis), 32 + 16 + 8 + 4);
        assert!(
            plan(mirantis)
                .iter()
                .any(|(_, n, _)| n == "config_based_example_vservice")
        );
        let other_version = EnvironmentConfig {
            distribution: Some("Mirantis".into()),
            distribution_version: Some("7.0".into()),
            ..EnvironmentConfig::named("m")
        };
        assert_eq!(config_based.score(&other_version), 0);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut t = default_clique_types().remove(0);
        t.link_types.push("instance-network".parse().expect("pair"));
        assert_eq!(
            t.validate().map_err(|e| e.to_string()),
            Err("clique type `instance`: link type `instance-network` is not one the link finders produce (set use_implicit_links to walk transitive links)".into())
        );
        t.use_implicit_links = true;
        assert_eq!(
            t.validate().map_err(|e| e.to_string()),
            Err("clique type `instance`: implicit links are walked in order only (walk `ordered`, not `dependencies`)".into())
        );
        t.walk = WalkKind::Ordered;
        assert_eq!(t.validate(), Ok(()));
        t.link_types = vec!["vnic-vedge".parse().expect("pair")];
        assert!(matches!(
            t.validate(),
            Err(InvalidCliqueType::DoesNotStartAtFocalPoint { .. })
        ));
    }
}
