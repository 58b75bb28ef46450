//! Health as the aggregator presents it: the status agents' checks report, made honest about
//! disconnected hosts, rolled up to cliques, and told as messages when it changes.
//!
//! Agents report an object's status with the object (see the agent's `health` module). Here:
//! * [`effective_status`]: a stale object (its agent is away) is `unknown`, not its last `ok`;
//! * [`clique_status`]: a clique is as healthy as its worst member, which it names;
//! * [`link_status`]: a link is an error when down, else as healthy as the worse of its ends;
//! * [`status_changes`]: every status change, and every link going down or coming back up
//!   for a reason other than its host's agent going away, is a message (source
//!   `Monitoring`), stored and streamed with the change.

use std::borrow::Cow;
use std::time::Duration;

use calipso_proto::wire::HealthOverrides;
use calipso_proto::{Link, LinkState, ObjectId, ObjectType, Status, StatusLevel, Timestamp};
use serde::Serialize;
use utoipa::ToSchema;

use crate::cliques::{Clique, EnvironmentConfig};
use crate::engine::Applied;
use crate::graph::{Graph, Node};
use crate::links::LinkKey;
use crate::store::{Message, MessageLevel};

/// The source of the messages this module writes.
pub const SOURCE: &str = "Monitoring";

/// The level an operator should see: a stale object's is `unknown` (counts need no text).
pub fn effective_level(node: &Node) -> StatusLevel {
    if node.stale {
        StatusLevel::Unknown
    } else {
        node.object.status.level
    }
}

/// The status an operator should see: a stale object's is `unknown`, saying why and what was
/// last reported.
pub fn effective_status(node: &Node) -> Cow<'_, Status> {
    let status = &node.object.status;
    if !node.stale {
        return Cow::Borrowed(status);
    }
    let host = node.object.host.as_deref().unwrap_or("its host");
    let mut text = format!("the agent of {host} is disconnected");
    if status.level != StatusLevel::Unknown {
        text.push_str(&format!("; last reported {}", status.level.as_str()));
        if !status.text.is_empty() {
            text.push_str(&format!(": {}", status.text));
        }
    }
    Cow::Owned(Status {
        level: StatusLevel::Unknown,
        text,
        timestamp: status.timestamp,
        perfdata: String::new(),
    })
}

/// The health of a group of objects (a clique, a link's ends): its worst member's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatusSummary {
    /// `ok`, `warning`, `error` or `unknown`.
    pub level: String,
    /// The worst member and what its status says ("vnic tap1 on compute-1: down: no carrier").
    pub text: String,
    /// The worst member's id (the first of equals, by id); absent when every member is ok.
    pub member: Option<String>,
}

/// The worst status among the clique's members (objects missing from `lookup` are skipped).
pub fn clique_status<'a>(
    clique: &Clique,
    lookup: impl Fn(&ObjectId) -> Option<&'a Node>,
) -> StatusSummary {
    worst_of(clique.nodes.iter().filter_map(lookup))
}

/// A link's health: a link that is down is an error; otherwise the worse of its ends.
pub fn link_status<'a>(
    link: &Link,
    lookup: impl Fn(&ObjectId) -> Option<&'a Node>,
) -> StatusSummary {
    if link.state == LinkState::Down {
        return StatusSummary {
            level: StatusLevel::Error.as_str().to_owned(),
            text: "the link is down".into(),
            member: None,
        };
    }
    worst_of([&link.source, &link.target].into_iter().filter_map(lookup))
}

fn worst_of<'a>(members: impl Iterator<Item = &'a Node>) -> StatusSummary {
    let mut worst: Option<(&Node, Cow<'_, Status>)> = None;
    for node in members {
        let status = effective_status(node);
        let worse = worst
            .as_ref()
            .is_none_or(|(_, w)| status.level.severity() > w.level.severity());
        if worse {
            worst = Some((node, status));
        }
    }
    match worst {
        Some((node, status)) if status.level != StatusLevel::Ok => StatusSummary {
            level: status.level.as_str().to_owned(),
            text: format!("{}: {}", describe(node), status.text),
            member: Some(node.id().to_string()),
        },
        Some(_) => StatusSummary {
            level: StatusLevel::Ok.as_str().to_owned(),
            text: "every member is ok".into(),
            member: None,
        },
        None => StatusSummary {
            level: StatusLevel::Unknown.as_str().to_owned(),
            text: "no member is known".into(),
            member: None,
        },
    }
}

/// "vnic tap1 on compute-1", "network net-a".
fn describe(node: &Node) -> String {
    let object = &node.object;
    match &object.host {
        Some(host) => format!("{} {} on {host}", object.object_type, object.name),
        None => format!("{} {}", object.object_type, object.name),
    }
}

fn message_level(level: StatusLevel) -> MessageLevel {
    match level {
        StatusLevel::Ok => MessageLevel::Info,
        StatusLevel::Warning | StatusLevel::Unknown => MessageLevel::Warning,
        StatusLevel::Error => MessageLevel::Error,
    }
}

/// What a health change is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Object {
        id: ObjectId,
        object_type: ObjectType,
    },
    /// A link whose state flipped; `types` are its ends' object types.
    Link {
        key: LinkKey,
        types: [ObjectType; 2],
    },
}

/// One change of health: an object's status level, or a link going down or up again. Each is
/// a message (source `Monitoring`) and what alert rules are matched against.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub environment: String,
    pub subject: Subject,
    /// "vnic tap1 on compute-1", "link vnic-vconnector from … to …".
    pub name: String,
    pub host: Option<String>,
    /// A link down is `error`, up again `ok`.
    pub level: StatusLevel,
    /// `None` for an object that arrived with this status.
    pub was: Option<StatusLevel>,
    /// What the check said (empty for a link).
    pub text: String,
    pub perfdata: String,
    pub at: Timestamp,
}

impl StatusChange {
    /// The object the change is about (a link's source).
    pub fn object(&self) -> &ObjectId {
        match &self.subject {
            Subject::Object { id, .. } => id,
            Subject::Link { key, .. } => &key.source,
        }
    }

    /// The object types it concerns: the object's, or both ends' of a link.
    pub fn object_types(&self) -> &[ObjectType] {
        match &self.subject {
            Subject::Object { object_type, .. } => std::slice::from_ref(object_type),
            Subject::Link { types, .. } => types,
        }
    }

    /// The objects it concerns: the object, or both ends of a link.
    pub fn objects(&self) -> Vec<&ObjectId> {
        match &self.subject {
            Subject::Object { id, .. } => vec![id],
            Subject::Link { key, .. } => vec![&key.source, &key.target],
        }
    }

    /// What the change's message says ("vnic tap1 on compute-1 is error: … (was ok)").
    pub fn summary(&self) -> String {
        match &self.subject {
            Subject::Link { .. } if self.level == StatusLevel::Ok => {
                format!("{} is up again", self.name)
            }
            Subject::Link { .. } => format!("{} is down", self.name),
            Subject::Object { .. } => {
                let mut text = format!("{} is {}", self.name, self.level.as_str());
                if !self.text.is_empty() {
                    text.push_str(&format!(": {}", self.text));
                }
                if let Some(was) = self.was {
                    text.push_str(&format!(" (was {})", was.as_str()));
                }
                text
            }
        }
    }

    pub fn message(&self) -> Message {
        Message {
            environment: Some(self.environment.clone()),
            level: message_level(self.level),
            source: SOURCE.to_owned(),
            related_object: Some(self.object().clone()),
            text: self.summary(),
            at: self.at,
        }
    }
}

/// The health changes of one applied change: a status that changed level (but not a first
/// verdict of ok, nor a new object arriving unknown), and a link whose state flipped while both
/// its ends' agents are connected (a host going away is one message of its own, not one per
/// link). `graph` is the environment after the change.
pub fn status_changes(
    environment: &str,
    applied: &Applied,
    graph: &Graph,
    at: Timestamp,
) -> Vec<StatusChange> {
    let mut changes = Vec::new();
    for diff in &applied.objects {
        let Some(after) = &diff.after else { continue };
        let now = &after.object.status;
        let was = diff
            .before
            .as_ref()
            .map(|before| before.object.status.level);
        // A first verdict of ok is no news: an agent starting would otherwise say so once
        // for every object of its host.
        let first = was.is_none_or(|was| was == StatusLevel::Unknown);
        let changed = match was {
            _ if first && now.level == StatusLevel::Ok => false,
            Some(was) => was != now.level,
            None => now.level != StatusLevel::Unknown,
        };
        if !changed {
            continue;
        }
        changes.push(StatusChange {
            environment: environment.to_owned(),
            subject: Subject::Object {
                id: diff.id.clone(),
                object_type: after.object_type(),
            },
            name: describe(after),
            host: after.object.host.as_deref().map(str::to_owned),
            level: now.level,
            was,
            text: now.text.clone(),
            perfdata: now.perfdata.clone(),
            at,
        });
    }
    for key in &applied.links.flipped {
        let Some(link) = applied
            .links
            .changed
            .iter()
            .find(|link| LinkKey::of(link) == *key)
        else {
            continue;
        };
        let (Some(source), Some(target)) = (graph.get(&key.source), graph.get(&key.target)) else {
            continue;
        };
        if source.stale || target.stale {
            continue;
        }
        let (level, was) = match link.state {
            LinkState::Down => (StatusLevel::Error, StatusLevel::Ok),
            LinkState::Up => (StatusLevel::Ok, StatusLevel::Error),
            LinkState::Unknown => continue,
        };
        changes.push(StatusChange {
            environment: environment.to_owned(),
            subject: Subject::Link {
                key: key.clone(),
                types: [source.object_type(), target.object_type()],
            },
            name: format!(
                "link {} from {} to {}",
                key.link_type,
                describe(source),
                describe(target)
            ),
            host: link.host.as_deref().map(str::to_owned),
            level,
            was: Some(was),
            text: String::new(),
            perfdata: String::new(),
            at,
        });
    }
    changes
}

/// The settings of an environment's `Monitoring` configuration that its agents' checks take
/// (pushed over their sessions), and their bounds.
pub const HEALTH_SETTINGS: &[&str] = &[
    "interval",
    "interval.<object type>",
    "timeout",
    "error_rate_warning",
    "drop_rate_warning",
    "ping_loss_warning",
    "ping_loss_error",
    "ping_rtt_warning",
    "ping_rtt_error",
];

/// The original's Sensu settings: kept (an imported environment keeps them) but unused.
const SENSU_SETTINGS: &[&str] = &[
    "type",
    "server_ip",
    "server_name",
    "api_port",
    "rabbitmq_port",
    "rabbitmq_user",
    "rabbitmq_pass",
    "ssh_user",
    "ssh_password",
    "ssh_port",
    "config_folder",
    "provision",
    "env_type",
    "install_monitoring_client",
];

/// What the agents' checks take from an environment's `Monitoring` configuration, or why a
/// setting cannot be taken (named `Monitoring.<key>`).
pub fn health_overrides(config: &EnvironmentConfig) -> Result<HealthOverrides, String> {
    let mut overrides = HealthOverrides::default();
    let Some(settings) = config.configuration.get("Monitoring") else {
        return Ok(overrides);
    };
    for (key, value) in settings {
        let bad = |why: &str| format!("Monitoring.{key}: `{value}` {why}");
        let duration = |low: Duration, high: Duration| -> Result<u64, String> {
            let parsed = humantime_serde::re::humantime::parse_duration(value)
                .map_err(|_| bad("is not a duration (15s, 2m)"))?;
            if parsed < low || parsed > high {
                return Err(bad(&format!(
                    "must be from {} to {}",
                    humantime_serde::re::humantime::format_duration(low),
                    humantime_serde::re::humantime::format_duration(high)
                )));
            }
            Ok(u64::try_from(parsed.as_millis()).unwrap_or(u64::MAX))
        };
        let number = |high: f64| -> Result<f64, String> {
            match value.parse::<f64>() {
                Ok(n) if (0.0..=high).contains(&n) => Ok(n),
                _ => Err(bad(&format!("must be a number from 0 to {high}"))),
            }
        };
        let second = Duration::from_secs(1);
        let day = Duration::from_secs(86_400);
        let millisecond = Duration::from_millis(1);
        let minute = Duration::from_secs(60);
        match key.as_str() {
            "interval" => overrides.interval_ms = Some(duration(second, day)?),
            "timeout" => overrides.timeout_ms = Some(duration(second, 10 * minute)?),
            "error_rate_warning" => overrides.error_rate_warning = Some(number(1e9)?),
            "drop_rate_warning" => overrides.drop_rate_warning = Some(number(1e9)?),
            "ping_loss_warning" => overrides.ping_loss_warning = Some(number(100.0)?),
            "ping_loss_error" => overrides.ping_loss_error = Some(number(100.0)?),
            "ping_rtt_warning" => {
                overrides.ping_rtt_warning_ms = Some(duration(millisecond, minute)?);
            }
            "ping_rtt_error" => overrides.ping_rtt_error_ms = Some(duration(millisecond, minute)?),
            _ if SENSU_SETTINGS.contains(&key.as_str()) => {}
            _ => {
                let Some(object_type) = key.strip_prefix("interval.") else {
                    return Err(format!(
                        "Monitoring.{key} is not a setting: the agents' checks take {}",
                        HEALTH_SETTINGS.join(", ")
                    ));
                };
                let object_type: ObjectType = object_type.parse().map_err(|_| {
                    format!("Monitoring.{key}: `{object_type}` is not an object type")
                })?;
                overrides
                    .intervals_ms
                    .push((object_type, duration(second, day)?));
            }
        }
    }
    Ok(overrides)
}

#[cfg(test)]
mod tests {
    use calipso_proto::Object;

    use super::*;

    fn node(name: &str, level: StatusLevel, text: &str, stale: bool) -> Node {
        let mut object = Object::new(
            ObjectId::from_raw(format!("compute-1-{name}")),
            ObjectType::Vnic,
            name,
            "lab",
        )
        .with_host("compute-1");
        object.status = Status {
            level,
            text: text.into(),
            ..Status::default()
        };
        let mut node = Node::new(object, Timestamp::from_unix_micros(1));
        node.stale = stale;
        node
    }

    #[test]
    fn a_stale_object_is_unknown_and_says_what_it_last_was() {
        let stale = node("tap1", StatusLevel::Ok, "up", true);
        let status = effective_status(&stale);
        assert_eq!(status.level, StatusLevel::Unknown);
        assert_eq!(
            status.text,
            "the agent of compute-1 is disconnected; last reported ok: up"
        );
        let fresh = node("tap1", StatusLevel::Ok, "up", false);
        assert_eq!(effective_status(&fresh).level, StatusLevel::Ok);
    }

    #[test]
    fn a_clique_is_as_healthy_as_its_worst_member() {
        let members = [
            node("tap1", StatusLevel::Ok, "up", false),
            node(
                "qvo1",
                StatusLevel::Warning,
                "up: 3.0 drops/s (over 1)",
                false,
            ),
            node("eth1", StatusLevel::Error, "down: no carrier", false),
            node("tap2", StatusLevel::Ok, "up", true),
        ];
        let mut clique = Clique {
            focal_point: ObjectId::from_raw("vm-1"),
            focal_point_type: ObjectType::Instance,
            clique_type: "instance".into(),
            constraints: Default::default(),
            nodes: members.iter().map(|n| n.id().clone()).collect(),
            links: Default::default(),
            implicit_links: Vec::new(),
        };
        let lookup = |id: &ObjectId| members.iter().find(|n| n.id() == id);
        assert_eq!(
            clique_status(&clique, lookup),
            StatusSummary {
                level: "error".into(),
                text: "vnic eth1 on compute-1: down: no carrier".into(),
                member: Some("compute-1-eth1".into()),
            }
        );
        clique.nodes = [members[0].id().clone(), members[3].id().clone()]
            .into_iter()
            .collect();
        let status = clique_status(&clique, lookup);
        assert_eq!(status.level, "unknown", "a disconnected member is not ok");
        assert_eq!(status.member.as_deref(), Some("compute-1-tap2"));
        clique.nodes = std::iter::once(members[0].id().clone()).collect();
        assert_eq!(clique_status(&clique, lookup).text, "every member is ok");
    }

    #[test]
    fn a_link_is_an_error_when_down_and_else_as_healthy_as_its_worse_end() {
        let ends = [
            node("tap1", StatusLevel::Ok, "up", false),
            node(
                "qbr1",
                StatusLevel::Warning,
                "no ports: nothing is bridged",
                false,
            ),
        ];
        let lookup = |id: &ObjectId| ends.iter().find(|n| n.id() == id);
        let mut link = Link {
            source: ends[0].id().clone(),
            target: ends[1].id().clone(),
            link_type: calipso_proto::LinkType::new(ObjectType::Vnic, ObjectType::Vconnector),
            state: LinkState::Up,
            host: None,
            implicit: false,
            attributes: Default::default(),
        };
        assert_eq!(
            link_status(&link, lookup),
            StatusSummary {
                level: "warning".into(),
                text: "vnic qbr1 on compute-1: no ports: nothing is bridged".into(),
                member: Some("compute-1-qbr1".into()),
            }
        );
        link.state = LinkState::Down;
        assert_eq!(
            link_status(&link, lookup),
            StatusSummary {
                level: "error".into(),
                text: "the link is down".into(),
                member: None,
            }
        );
    }

    #[test]
    fn an_environments_monitoring_settings_become_its_agents_overrides() {
        let mut config = EnvironmentConfig {
            name: "lab".into(),
            ..EnvironmentConfig::default()
        };
        let monitoring = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        config.configuration.insert(
            "Monitoring".into(),
            monitoring(&[
                ("interval", "30s"),
                ("interval.host_pnic", "5s"),
                ("ping_loss_error", "50"),
                ("ping_rtt_warning", "150ms"),
                // The original's Sensu settings are kept and ignored.
                ("server_ip", "10.0.0.9"),
            ]),
        );
        assert_eq!(
            health_overrides(&config),
            Ok(HealthOverrides {
                interval_ms: Some(30_000),
                intervals_ms: vec![(ObjectType::HostPnic, 5_000)],
                ping_loss_error: Some(50.0),
                ping_rtt_warning_ms: Some(150),
                ..HealthOverrides::default()
            })
        );
        for (key, value, says) in [
            (
                "interval",
                "often",
                "Monitoring.interval: `often` is not a duration (15s, 2m)",
            ),
            (
                "interval",
                "100ms",
                "Monitoring.interval: `100ms` must be from 1s to 1day",
            ),
            (
                "ping_loss_warning",
                "120",
                "Monitoring.ping_loss_warning: `120` must be a number from 0 to 100",
            ),
            (
                "interval.switch_box",
                "5s",
                "Monitoring.interval.switch_box: `switch_box` is not an object type",
            ),
            (
                "pings",
                "3",
                "Monitoring.pings is not a setting: the agents' checks take interval, interval.<object type>, timeout, error_rate_warning, drop_rate_warning, ping_loss_warning, ping_loss_error, ping_rtt_warning, ping_rtt_error",
            ),
        ] {
            config
                .configuration
                .insert("Monitoring".into(), monitoring(&[(key, value)]));
            assert_eq!(health_overrides(&config), Err(says.to_owned()), "{key}");
        }
    }
}
