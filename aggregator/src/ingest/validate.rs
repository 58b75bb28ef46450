//! Checks every sink applies before accepting what an agent sent: an agent writes only its own
//! host's objects, in its own environment, with ids that match their types, parents that exist
//! and removals of objects it has. Each failure names the offending item.

use std::collections::HashSet;

use calipso_proto::wire::{Delta, Snapshot};
use calipso_proto::{Object, ObjectId};

use super::AgentSession;

fn check_object(session: &AgentSession, object: &Object) -> Result<(), String> {
    let id = &object.id;
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
