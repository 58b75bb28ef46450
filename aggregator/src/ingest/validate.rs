//! Checks every sink applies before accepting what an agent sent: an agent writes only its own
//! host's objects, in its own environment, with ids that match their types, parents that exist
//! and removals of objects it has; a cloud source writes only the control plane's objects.
//! Each failure names the offending item.

use std::collections::HashSet;

use calipso_proto::wire::{Delta, Snapshot};
use calipso_proto::{Object, ObjectId, ObjectType};

use super::AgentSession;

/// Objects only the cloud's control plane knows, written by its adapter and never by an
/// agent: so an agent cannot overwrite a Neutron network, nor the adapter a host's model.
pub const CONTROL_PLANE_TYPES: &[ObjectType] = &[
    ObjectType::Region,
    ObjectType::AvailabilityZone,
    ObjectType::Project,
    ObjectType::Network,
    ObjectType::Port,
];

fn check_object(session: &AgentSession, object: &Object) -> Result<(), String> {
    let id = &object.id;
    if CONTROL_PLANE_TYPES.contains(&object.object_type) {
        return Err(format!(
            "object {id}: `{}` objects come from the cloud's control plane, not from agents",
            object.object_type
        ));
    }
    if object.environment != session.environment {
        return Err(format!(
            "object {id}: environment `{}` is not the session's `{}`",
            object.environment, session.environment
        ));
    }
    if object.host.as_deref() != Some(session.host.as_str()) {
        return Err(format!(
            "object {id}: host {:?} is not the session's host `{}`",
            object.host, session.host
        ));
    }
    if id.object_type() != Some(object.object_type) {
        return Err(format!(
            "object {id}: id does not start with its type `{}`",
            object.object_type
        ));
    }
    if object.object_type.is_host_local() && id.owning_host() != Some(session.host.as_str()) {
        return Err(format!(
            "object {id}: id belongs to another host than `{}`",
            session.host
        ));
    }
    Ok(())
}

/// A snapshot must be self-contained: unique ids and parents within it.
pub fn check_snapshot(session: &AgentSession, snapshot: &Snapshot) -> Result<(), String> {
    let mut ids = HashSet::with_capacity(snapshot.objects.len());
    for object in &snapshot.objects {
        check_object(session, object)?;
        if !ids.insert(&object.id) {
            return Err(format!(
                "object {}: appears twice in the snapshot",
                object.id
            ));
        }
    }
    for object in &snapshot.objects {
        if let Some(parent) = &object.parent
            && !ids.contains(&parent.id)
        {
            return Err(format!(
                "object {}: parent {} is not in the snapshot",
                object.id, parent.id
            ));
        }
    }
    Ok(())
}

/// A delta applies to the host's current objects (`exists`).
pub fn check_delta(
    session: &AgentSession,
    delta: &Delta,
    exists: impl Fn(&ObjectId) -> bool,
) -> Result<(), String> {
    let removed: HashSet<&ObjectId> = delta.removals.iter().collect();
    let upserted: HashSet<&ObjectId> = delta.upserts.iter().map(|o| &o.id).collect();
    for id in &delta.removals {
        if !exists(id) {
            return Err(format!(
                "removal of {id}: no such object on host `{}`",
                session.host
            ));
        }
        if upserted.contains(id) {
            return Err(format!(
                "object {id}: both upserted and removed in one delta"
            ));
        }
    }
    for object in &delta.upserts {
        check_object(session, object)?;
        if let Some(parent) = &object.parent {
            let present = upserted.contains(&parent.id)
                || (exists(&parent.id) && !removed.contains(&parent.id));
            if !present {
                return Err(format!(
                    "object {}: parent {} does not exist",
                    object.id, parent.id
                ));
            }
        }
    }
    Ok(())
}

/// An object a cloud source writes: a control-plane type, no host, no parent, in the
/// environment it writes to, with an id of its type.
pub fn check_cloud_object(environment: &str, object: &Object) -> Result<(), String> {
    let id = &object.id;
    if !CONTROL_PLANE_TYPES.contains(&object.object_type) {
        return Err(format!(
            "object {id}: `{}` objects are reported by agents",
            object.object_type
        ));
    }
    if object.environment != environment {
        return Err(format!(
            "object {id}: environment `{}` is not `{environment}`",
            object.environment
        ));
    }
    if id.object_type() != Some(object.object_type)
        || id.as_str().len() <= object.object_type.as_str().len() + 1
    {
        return Err(format!(
            "object {id}: id is not `{}:<key>`",
            object.object_type
        ));
    }
    if object.host.is_some() || object.parent.is_some() {
        return Err(format!(
            "object {id}: a control-plane object has no host and no parent"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use calipso_proto::{ObjectType, Timestamp};

    fn session() -> AgentSession {
        AgentSession {
            host: "h1".into(),
            environment: "lab".into(),
            agent_version: "t".into(),
            epoch: 1,
            last_acked_seq: 0,
        }
    }

    fn vnic(host: &str, name: &str) -> Object {
        Object::new(
            ObjectId::host_local(ObjectType::Vnic, host, name),
            ObjectType::Vnic,
            name,
            "lab",
        )
        .with_host(host)
    }

    fn delta(upserts: Vec<Object>, removals: Vec<ObjectId>) -> Delta {
        Delta {
            epoch: 1,
            seq: 1,
            upserts,
            removals,
            observed_at: Timestamp::default(),
        }
    }

    #[test]
    fn refusals_name_the_item() {
        let none = |_: &ObjectId| false;
        let cases = [
            (
                delta(vec![vnic("h2", "tap0")], vec![]),
                "object vnic:h2:tap0: host Some(\"h2\")",
            ),
            (
                delta(
                    vec![
                        vnic("h1", "tap0")
                            .with_host("h1")
                            .with_parent(ObjectId::host("h1"), ObjectType::Host),
                    ],
                    vec![],
                ),
                "parent host:h1 does not exist",
            ),
            (
                delta(vec![], vec![ObjectId::from_raw("vnic:h1:gone")]),
                "removal of vnic:h1:gone: no such object",
            ),
        ];
        for (delta, expected) in cases {
            let err = check_delta(&session(), &delta, none)
                .err()
                .unwrap_or_default();
            assert!(err.contains(expected), "{err}");
        }
        let mut foreign = vnic("h1", "tap0");
        foreign.id = ObjectId::host_local(ObjectType::Vnic, "h2", "tap0");
        let err = check_delta(&session(), &delta(vec![foreign], vec![]), none)
            .err()
            .unwrap_or_default();
        assert_eq!(
            err,
            "object vnic:h2:tap0: id belongs to another host than `h1`"
        );
        let mut mistyped = vnic("h1", "tap0");
        mistyped.object_type = ObjectType::HostPnic;
        let err = check_delta(&session(), &delta(vec![mistyped], vec![]), none)
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("does not start with its type `host_pnic`"),
            "{err}"
        );
    }

    #[test]
    fn agents_and_the_control_plane_keep_to_their_own_types() {
        let network = Object::new(
            ObjectId::global(ObjectType::Network, "N1"),
            ObjectType::Network,
            "net",
            "lab",
        );
        let from_agent = network.clone().with_host("h1");
        let err = check_delta(&session(), &delta(vec![from_agent], vec![]), |_| false)
            .expect_err("refused");
        assert!(err.contains("come from the cloud's control plane"), "{err}");

        assert_eq!(check_cloud_object("lab", &network), Ok(()));
        let cases = [
            (vnic("h1", "tap0"), "are reported by agents"),
            (network.clone().with_host("h1"), "no host and no parent"),
            (
                Object::new(network.id.clone(), ObjectType::Network, "net", "other"),
                "environment `other` is not `lab`",
            ),
            (
                Object::new(
                    ObjectId::from_raw("network:"),
                    ObjectType::Network,
                    "net",
                    "lab",
                ),
                "id is not `network:<key>`",
            ),
        ];
        for (object, expected) in cases {
            let err = check_cloud_object("lab", &object).expect_err("refused");
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn parents_may_arrive_in_the_same_delta_or_exist_already() {
        let host = Object::new(ObjectId::host("h1"), ObjectType::Host, "h1", "lab").with_host("h1");
        let child = vnic("h1", "tap0").with_parent(ObjectId::host("h1"), ObjectType::Host);
        assert_eq!(
            check_delta(
                &session(),
                &delta(vec![host.clone(), child.clone()], vec![]),
                |_| false
            ),
            Ok(())
        );
        let exists = |id: &ObjectId| id.as_str() == "host:h1";
        assert_eq!(
            check_delta(&session(), &delta(vec![child.clone()], vec![]), exists),
            Ok(())
        );
        let err = check_delta(
            &session(),
            &delta(vec![child], vec![ObjectId::host("h1")]),
            exists,
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("parent host:h1 does not exist"), "{err}");
        let snapshot = Snapshot {
            epoch: 1,
            seq: 0,
            objects: vec![host.clone(), host],
            observed_at: Timestamp::default(),
        };
        assert_eq!(
            check_snapshot(&session(), &snapshot),
            Err("object host:h1: appears twice in the snapshot".into())
        );
    }
}
