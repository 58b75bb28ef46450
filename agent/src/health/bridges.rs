//! Linux bridges (`vconnector`, e.g. a hybrid plug's `qbr`): the bridge is up and has ports.
//! The original ran `brctl showmacs` and only caught a missing bridge; a bridge that lost its
//! ports or was taken down carries no traffic either.

use std::sync::Arc;

use calipso_proto::{Object, ObjectType};
use futures::future::BoxFuture;

use super::{Check, Verdict, flag_attr, text_attr, text_list};

#[derive(Debug, Default)]
pub struct BridgeCheck;

impl BridgeCheck {
    fn check(object: &Object) -> Verdict {
        if flag_attr(object, "admin_up") == Some(false) {
            return Verdict::error("administratively down");
        }
        let ports = text_list(object, "interfaces_names");
        if ports.is_empty() {
            return Verdict::warning("no ports: nothing is bridged");
        }
        // A bridge is operationally down when none of its ports is up.
        if matches!(
            text_attr(object, "operstate"),
            Some("down" | "lowerlayerdown")
        ) {
            return Verdict::error(format!("down: no port up ({})", ports.join(", ")));
        }
        Verdict::ok(format!("up, ports {}", ports.join(", ")))
    }
}

impl Check for BridgeCheck {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn covers(&self) -> &'static [ObjectType] {
        &[ObjectType::Vconnector]
    }

    fn run(self: Arc<Self>, object: Object) -> BoxFuture<'static, Verdict> {
        Box::pin(std::future::ready(Self::check(&object)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calipso_proto::{AttrValue, ObjectId, StatusLevel};

    fn bridge(attributes: &[(&str, AttrValue)]) -> Object {
        let mut object = Object::new(
            ObjectId::from_raw("compute-1-qbr1"),
            ObjectType::Vconnector,
            "qbr1",
            "lab",
        );
        for (key, value) in attributes {
            object.attributes.extra.insert(key, value.clone());
        }
        object
    }

    #[test]
    fn a_bridge_needs_to_be_up_with_ports() {
        let ports = || AttrValue::from(vec!["qvb1".to_owned(), "tap1".to_owned()]);
        let cases = [
            (
                bridge(&[("admin_up", false.into()), ("interfaces_names", ports())]),
                StatusLevel::Error,
                "administratively down",
            ),
            (
                bridge(&[("operstate", "up".into())]),
                StatusLevel::Warning,
                "no ports: nothing is bridged",
            ),
            (
                bridge(&[("operstate", "down".into()), ("interfaces_names", ports())]),
                StatusLevel::Error,
                "down: no port up (qvb1, tap1)",
            ),
            (
                bridge(&[("operstate", "up".into()), ("interfaces_names", ports())]),
                StatusLevel::Ok,
                "up, ports qvb1, tap1",
            ),
        ];
        for (object, level, text) in cases {
            assert_eq!(
                BridgeCheck::check(&object),
                Verdict {
                    level,
                    text: text.into(),
                    perfdata: String::new(),
                }
            );
        }
    }
}
