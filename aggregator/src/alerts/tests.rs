use calipso_proto::LinkType;

use super::alertmanager::Firing;
use super::*;
use crate::links::LinkKey;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_micros(seconds * 1_000_000)
}

fn eth0_change(level: StatusLevel, was: Option<StatusLevel>) -> StatusChange {
    StatusChange {
        environment: "lab".into(),
        subject: Subject::Object {
            id: ObjectId::from_raw("compute-1-eth0"),
            object_type: ObjectType::HostPnic,
        },
        name: "host_pnic eth0 on compute-1".into(),
        host: Some("compute-1".into()),
        level,
        was,
        text: "down: no carrier".into(),
        perfdata: String::new(),
        at: at(1_000),
    }
}

fn link_down() -> StatusChange {
    StatusChange {
        environment: "lab".into(),
        subject: Subject::Link {
            key: LinkKey {
                link_type: LinkType::new(ObjectType::Vnic, ObjectType::Vconnector),
                source: ObjectId::from_raw("compute-1-tap1"),
                target: ObjectId::from_raw("compute-1-qbr1"),
            },
            types: [ObjectType::Vnic, ObjectType::Vconnector],
        },
        name: "link vnic-vconnector from vnic tap1 on compute-1 to vconnector qbr1 on compute-1"
            .into(),
        host: Some("compute-1".into()),
        level: StatusLevel::Error,
        was: Some(StatusLevel::Ok),
        text: String::new(),
        perfdata: String::new(),
        at: at(1_000),
    }
}

fn rule(min_level: StatusLevel) -> AlertRule {
    AlertRule {
        id: "rule-1".into(),
        environment: "lab".into(),
        name: "nics".into(),
        min_level,
        object_types: Vec::new(),
        focal_points: Vec::new(),
        send_resolved: true,
        webhook: None,
        alertmanager: None,
        created_by: "admin".into(),
        created_at: at(0),
    }
}

/// vm-1's clique holds tap1 and eth0; nothing else is in any clique.
fn vm1_clique(focal: &ObjectId, object: &ObjectId) -> bool {
    focal.as_str() == "vm-1" && ["compute-1-tap1", "compute-1-eth0"].contains(&object.as_str())
}

#[test]
fn a_rule_fires_at_its_level_and_above_and_resolves_when_it_is_over() {
    use StatusLevel::*;
    let errors = rule(Error);
    let cases = [
        (errors.clone(), Error, Some(Ok), Some(AlertState::Firing)),
        (errors.clone(), Warning, Some(Ok), None),
        (
            errors.clone(),
            Warning,
            Some(Error),
            Some(AlertState::Resolved),
        ),
        (errors.clone(), Ok, Some(Error), Some(AlertState::Resolved)),
        (errors.clone(), Ok, Some(Warning), None),
        (rule(Warning), Warning, Some(Ok), Some(AlertState::Firing)),
        (
            rule(Warning),
            Error,
            Some(Warning),
            Some(AlertState::Firing),
        ),
        (rule(Warning), Unknown, Some(Ok), None),
        (rule(Unknown), Unknown, None, Some(AlertState::Firing)),
    ];
    for (rule, level, was, expected) in cases {
        assert_eq!(
            rule.verdict(&eth0_change(level, was), vm1_clique),
            expected,
            "min {:?}: {was:?} → {level:?}",
            rule.min_level
        );
    }
    let quiet = AlertRule {
        send_resolved: false,
        ..rule(Error)
    };
    assert_eq!(
        quiet.verdict(&eth0_change(Ok, Some(Error)), vm1_clique),
        None
    );
}

#[test]
fn a_rule_keeps_to_its_environment_types_and_cliques() {
    let change = eth0_change(StatusLevel::Error, Some(StatusLevel::Ok));
    let other_environment = AlertRule {
        environment: "prod".into(),
        ..rule(StatusLevel::Warning)
    };
    assert_eq!(other_environment.verdict(&change, vm1_clique), None);

    let vnics_only = AlertRule {
        object_types: vec![ObjectType::Vnic],
        ..rule(StatusLevel::Warning)
    };
    assert_eq!(vnics_only.verdict(&change, vm1_clique), None);
    // A link concerns both its ends' types.
    assert_eq!(
        vnics_only.verdict(&link_down(), vm1_clique),
        Some(AlertState::Firing)
    );

    let vm1 = AlertRule {
        focal_points: vec![ObjectId::from_raw("vm-1")],
        ..rule(StatusLevel::Warning)
    };
    assert_eq!(vm1.verdict(&change, vm1_clique), Some(AlertState::Firing));
    let vm2 = AlertRule {
        focal_points: vec![ObjectId::from_raw("vm-2")],
        ..rule(StatusLevel::Warning)
    };
    assert_eq!(vm2.verdict(&change, vm1_clique), None);
}

#[test]
fn a_silence_holds_back_what_it_matches_while_it_lasts() {
    let change = eth0_change(StatusLevel::Error, Some(StatusLevel::Ok));
    let silence = Silence {
        id: "s1".into(),
        environment: "lab".into(),
        object: None,
        object_type: None,
        host: Some("compute-1".into()),
        focal_point: None,
        starts_at: at(900),
        ends_at: at(1_100),
        comment: "compute-1 maintenance".into(),
        created_by: "admin".into(),
        created_at: at(900),
    };
    assert!(silence.silences(&change, at(1_000), vm1_clique));
    assert!(!silence.silences(&change, at(899), vm1_clique), "not yet");
    assert!(!silence.silences(&change, at(1_100), vm1_clique), "over");
    let other_host = Silence {
        host: Some("compute-2".into()),
        ..silence.clone()
    };
    assert!(!other_host.silences(&change, at(1_000), vm1_clique));
    let vm1 = Silence {
        host: None,
        focal_point: Some(ObjectId::from_raw("vm-1")),
        ..silence.clone()
    };
    assert!(vm1.silences(&change, at(1_000), vm1_clique));
    let the_tap = Silence {
        host: None,
        object: Some(ObjectId::from_raw("compute-1-tap1")),
        ..silence.clone()
    };
    assert!(!the_tap.silences(&change, at(1_000), vm1_clique));
    assert!(the_tap.silences(&link_down(), at(1_000), vm1_clique));
    let other_environment = Silence {
        environment: "prod".into(),
        host: None,
        ..silence
    };
    assert!(!other_environment.silences(&change, at(1_000), vm1_clique));
}

#[test]
fn an_alert_says_what_changed_and_is_named_the_same_on_every_retry() {
    let alert = Alert::new(
        &eth0_change(StatusLevel::Error, Some(StatusLevel::Ok)),
        3,
        &rule(StatusLevel::Warning),
        AlertState::Firing,
    );
    let body = serde_json::to_value(&alert).unwrap_or_default();
    assert_eq!(body["id"], "1000000000.3-rule-1");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["level"], "error");
    assert_eq!(body["previous_level"], "ok");
    assert_eq!(body["object"], "compute-1-eth0");
    assert_eq!(body["object_types"], serde_json::json!(["host_pnic"]));
    assert_eq!(
        body["message"],
        "host_pnic eth0 on compute-1 is error: down: no carrier (was ok)"
    );
    assert_eq!(body["rule"]["name"], "nics");
}

#[test]
fn signatures_are_hmac_sha256_of_the_time_and_the_body() {
    // printf '1764000000.{"id":"a"}' | openssl dgst -sha256 -hmac shh
    assert_eq!(
        signature("shh", 1_764_000_000, br#"{"id":"a"}"#),
        "t=1764000000,v1=6e9ccb440c102733b6d4aac55a5f72d47327a49fb855d4faec79971e23bfd542"
    );
}

#[test]
fn alertmanager_hears_of_a_firing_alert_until_it_is_resolved() {
    let rule = rule(StatusLevel::Warning);
    let alert = |level, was, state, seconds| {
        let mut change = eth0_change(level, was);
        change.at = at(seconds);
        Alert::new(&change, 0, &rule, state)
    };
    let mut firing = Firing::default();
    let warned = firing.apply(&alert(
        StatusLevel::Warning,
        Some(StatusLevel::Ok),
        AlertState::Firing,
        1_000,
    ));
    let warned = serde_json::to_value(&warned).unwrap_or_default();
    assert_eq!(warned[0]["labels"]["severity"], "warning");
    assert_eq!(warned[0]["labels"]["object"], "compute-1-eth0");
    assert_eq!(warned[0]["labels"]["host"], "compute-1");
    assert_eq!(warned[0]["startsAt"], "1970-01-01T00:16:40Z");
    assert!(warned[0].get("endsAt").is_none());

    // Worse: the warning ends, the error starts (labels differ by severity).
    let worse = firing.apply(&alert(
        StatusLevel::Error,
        Some(StatusLevel::Warning),
        AlertState::Firing,
        1_060,
    ));
    let worse = serde_json::to_value(&worse).unwrap_or_default();
    assert_eq!(worse[0]["labels"]["severity"], "warning");
    assert_eq!(worse[0]["endsAt"], "1970-01-01T00:17:40Z");
    assert_eq!(worse[1]["labels"]["severity"], "error");
    assert_eq!(worse[1]["startsAt"], "1970-01-01T00:16:40Z");
    assert_eq!(firing.all().len(), 1);

    let resolved = firing.apply(&alert(
        StatusLevel::Ok,
        Some(StatusLevel::Error),
        AlertState::Resolved,
        1_120,
    ));
    let resolved = serde_json::to_value(&resolved).unwrap_or_default();
    assert_eq!(resolved[0]["labels"]["severity"], "error");
    assert_eq!(resolved[0]["endsAt"], "1970-01-01T00:18:40Z");
    assert!(firing.all().is_empty());
}
