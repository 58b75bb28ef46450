//! oslo.messaging notification bodies, as Neutron and Nova publish them on the bus.
//!
//! A body is the notification itself (messaging v1) or an envelope whose `oslo.message` holds
//! it as a JSON string (messaging v2). What the adapter acts on is the *end* of a Neutron
//! operation: a `.start` may still fail. Nova's events and routers are read elsewhere — the
//! agents report instances from libvirt and routers as their `qrouter-` namespaces, and a
//! router's interfaces arrive as port events — so they are acknowledged and left.

use serde_json::Value;

use super::documents::{CloudEvent, Resource};

/// A body that is not a notification the adapter can read; the text names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the `oslo.message` envelope does not hold a JSON object: {0}")]
    Envelope(String),
    #[error("no `{0}` field")]
    Missing(&'static str),
    #[error("`{event_type}`: {reason}")]
    Payload { event_type: String, reason: String },
}

/// What the adapter makes of one notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Interpretation {
    Change(CloudEvent),
    /// Read and left alone, for this reason.
    Ignored(&'static str),
}

/// One notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub event_type: String,
    pub publisher_id: Option<String>,
    pub interpretation: Interpretation,
}

/// Reads one message body.
pub fn parse(body: &[u8]) -> Result<Notification, NotificationError> {
    let mut value: Value = serde_json::from_slice(body).map_err(NotificationError::NotJson)?;
    if let Some(inner) = value.get("oslo.message") {
        let text = inner
            .as_str()
            .ok_or_else(|| NotificationError::Envelope("it is not a string".into()))?;
        value =
            serde_json::from_str(text).map_err(|e| NotificationError::Envelope(e.to_string()))?;
    }
    let event_type = value
        .get("event_type")
        .and_then(Value::as_str)
        .ok_or(NotificationError::Missing("event_type"))?
        .to_owned();
    let publisher_id = value
        .get("publisher_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let payload = value
        .get("payload")
        .ok_or(NotificationError::Missing("payload"))?;
    let interpretation =
        interpret(&event_type, payload).map_err(|reason| NotificationError::Payload {
            event_type: event_type.clone(),
            reason,
        })?;
    Ok(Notification {
        event_type,
        publisher_id,
        interpretation,
    })
}

fn interpret(event_type: &str, payload: &Value) -> Result<Interpretation, String> {
    let (resource, action) = event_type.rsplit_once('.').unwrap_or((event_type, ""));
    let change = match (resource, action) {
        (_, "start") => return Ok(Interpretation::Ignored("the operation may still fail")),
        ("network.create" | "network.update", "end") => {
            CloudEvent::NetworkUpserted(document(payload, "network")?)
        }
        ("network.delete", "end") => CloudEvent::NetworkDeleted(id(payload, "network_id")?),
        ("subnet.create" | "subnet.update", "end") => {
            CloudEvent::SubnetUpserted(document(payload, "subnet")?)
        }
        ("subnet.delete", "end") => CloudEvent::SubnetDeleted(id(payload, "subnet_id")?),
        ("port.create" | "port.update", "end") => {
            CloudEvent::PortUpserted(document(payload, "port")?)
        }
        ("port.delete", "end") => CloudEvent::PortDeleted(id(payload, "port_id")?),
        _ if event_type.starts_with("router.") => {
            return Ok(Interpretation::Ignored(
                "routers are their agents' qrouter namespaces; their interfaces arrive as port events",
            ));
        }
        _ if event_type.starts_with("compute.") => {
            return Ok(Interpretation::Ignored(
                "instances are reported by their hosts' agents",
            ));
        }
        _ => return Ok(Interpretation::Ignored("not an event the adapter follows")),
    };
    Ok(Interpretation::Change(change))
}

fn document(payload: &Value, key: &str) -> Result<Resource, String> {
    let document = payload
        .get(key)
        .ok_or_else(|| format!("the payload has no `{key}`"))?;
    serde_json::from_value(document.clone()).map_err(|e| format!("`{key}`: {e}"))
}

fn id(payload: &Value, key: &str) -> Result<String, String> {
    payload
        .get(key)
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("the payload has no `{key}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            (
                $name,
                include_str!(concat!(
                    "../../../../shared/fixtures/openstack/notifications/",
                    $name,
                    ".json"
                )),
            )
        };
    }

    /// Every recorded notification, with what the adapter makes of it.
    const RECORDED: &[(&str, &str)] = &[
        fixture!("compute.instance.update-1"),
        fixture!("compute.instance.update-2"),
        fixture!("compute.instance.update-3"),
        fixture!("network.create.end"),
        fixture!("network.delete.end"),
        fixture!("network.update.end"),
        fixture!("port.create.end"),
        fixture!("port.delete.start"),
        fixture!("port.update.end"),
        fixture!("router.create.end"),
        fixture!("router.delete.end"),
        fixture!("router.interface.create"),
        fixture!("router.interface.delete"),
        fixture!("router.update.end-1"),
        fixture!("router.update.end-2"),
        fixture!("router.update.end-3"),
        fixture!("subnet.create.end"),
        fixture!("subnet.delete.end"),
        fixture!("subnet.update.end-1"),
        fixture!("subnet.update.end-2"),
    ];

    fn change_kind(interpretation: &Interpretation) -> &'static str {
        match interpretation {
            Interpretation::Change(CloudEvent::NetworkUpserted(_)) => "network upserted",
            Interpretation::Change(CloudEvent::NetworkDeleted(_)) => "network deleted",
            Interpretation::Change(CloudEvent::SubnetUpserted(_)) => "subnet upserted",
            Interpretation::Change(CloudEvent::SubnetDeleted(_)) => "subnet deleted",
            Interpretation::Change(CloudEvent::PortUpserted(_)) => "port upserted",
            Interpretation::Change(CloudEvent::PortDeleted(_)) => "port deleted",
            Interpretation::Ignored(_) => "ignored",
        }
    }

    #[test]
    fn every_recorded_notification_is_read() {
        for (name, body) in RECORDED {
            let notification = parse(body.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(name.starts_with(&notification.event_type), "{name}");
            let expected = match name.split_once(".end").map_or(*name, |(n, _)| n) {
                "network.create" | "network.update" => "network upserted",
                "network.delete" => "network deleted",
                "subnet.create" | "subnet.update" => "subnet upserted",
                "subnet.delete" => "subnet deleted",
                "port.create" | "port.update" => "port upserted",
                _ => "ignored",
            };
            assert_eq!(
                change_kind(&notification.interpretation),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn payloads_become_documents() {
        let (_, body) = RECORDED[6];
        let notification = parse(body.as_bytes()).expect("port.create.end");
        assert_eq!(
            notification.publisher_id.as_deref(),
            Some("network.node-6.cisco.com")
        );
        let Interpretation::Change(CloudEvent::PortUpserted(port)) = notification.interpretation
        else {
            panic!("a port");
        };
        assert_eq!(port.id, "1233445-75b6-4c05-9480-4bc648845c6f");
        assert_eq!(port.fields["binding:host_id"], "node-223.cisco.com");
        let (_, body) = RECORDED[4];
        assert_eq!(
            parse(body.as_bytes())
                .expect("network.delete.end")
                .interpretation,
            Interpretation::Change(CloudEvent::NetworkDeleted(
                "0bb0ba6c-6863-4121-ac89-93f81a9da2b0".into()
            ))
        );
    }

    #[test]
    fn a_messaging_v2_envelope_is_opened() {
        let (_, body) = RECORDED[3];
        let envelope = serde_json::json!({"oslo.version": "2.0", "oslo.message": body});
        let notification = parse(envelope.to_string().as_bytes()).expect("enveloped");
        assert_eq!(notification.event_type, "network.create.end");
        assert_eq!(
            change_kind(&notification.interpretation),
            "network upserted"
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("{not json", "not JSON"),
            (r#"{"oslo.message": 7}"#, "`oslo.message` envelope"),
            (r#"{"oslo.message": "{nope"}"#, "`oslo.message` envelope"),
            (r#"{"payload": {}}"#, "no `event_type` field"),
            (r#"{"event_type": "port.create.end"}"#, "no `payload` field"),
            (
                r#"{"event_type": "port.create.end", "payload": {}}"#,
                "`port.create.end`: the payload has no `port`",
            ),
            (
                r#"{"event_type": "port.update.end", "payload": {"port": {"name": "x"}}}"#,
                "`port`: missing field `id`",
            ),
            (
                r#"{"event_type": "network.delete.end", "payload": {"network_id": ""}}"#,
                "the payload has no `network_id`",
            ),
        ];
        for (body, expected) in cases {
            let error = parse(body.as_bytes()).expect_err(body).to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
    }
}
