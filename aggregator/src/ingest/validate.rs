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
