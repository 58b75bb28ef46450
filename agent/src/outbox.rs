//! The agent's host model and its outbox of unacknowledged deltas.
//!
//! Collectors publish what they see; the outbox diffs it against the model, and whatever really
//! changed becomes one [`Delta`] with the next sequence number of this agent's epoch. Deltas stay
//! in the outbox, encoded once, until the aggregator acknowledges them. The outbox is bounded in
//! bytes: past the cap it drops every pending delta and marks that the next thing the aggregator
//! must get is a snapshot, which the model can always produce.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use calipso_proto::codec::{self, EncodeError};
use calipso_proto::wire::{AgentMessage, Delta, Snapshot};
use calipso_proto::{Object, ObjectId, Timestamp};
use tokio::sync::watch;

/// A set of changes from one collector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    pub upserts: Vec<Object>,
    pub removals: Vec<ObjectId>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// A delta waiting for its acknowledgement, already encoded as a frame payload.
#[derive(Debug, Clone)]
pub struct PendingDelta {
    pub seq: u64,
    pub frame: Bytes,
}

#[derive(Debug)]
struct State {
    /// Every object the agent currently sees, with the collector that owns it.
    model: BTreeMap<ObjectId, (&'static str, Object)>,
    last_seq: u64,
    acked_seq: u64,
    /// Every delta after `floor_seq` is in `pending`; deltas up to it are acked or were dropped.
    floor_seq: u64,
    pending: VecDeque<PendingDelta>,
    pending_bytes: usize,
}

/// Shared between the collectors (writers) and the uplink (reader).
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    host: String,
    environment: String,
    epoch: u64,
    cap_bytes: usize,
    state: Mutex<State>,
    /// The last sequence number assigned; the uplink waits on it for new deltas.
    last_seq: watch::Sender<u64>,
}

impl Outbox {
    /// An empty outbox for a new epoch (one per agent start).
    pub fn new(host: &str, environment: &str, epoch: u64, cap_bytes: usize) -> Self {
        let state = State {
            model: BTreeMap::new(),
            last_seq: 0,
            acked_seq: 0,
            floor_seq: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
        };
        Outbox {
            inner: Arc::new(Inner {
                host: host.to_owned(),
                environment: environment.to_owned(),
                epoch,
                cap_bytes,
                state: Mutex::new(state),
                last_seq: watch::Sender::new(0),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn host(&self) -> &str {
        &self.inner.host
    }

    pub fn environment(&self) -> &str {
        &self.inner.environment
    }

    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    pub fn acked_seq(&self) -> u64 {
        self.state().acked_seq
    }

    /// Subscribes to the last assigned sequence number.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.last_seq.subscribe()
    }

    /// Applies a collector's changes; returns the new delta's sequence number, or `None` when
    /// nothing actually changed (an upsert equal to what the model has, a removal of an
    /// object the model lacks or another collector owns).
    pub fn publish(
        &self,
        collector: &'static str,
        changes: ChangeSet,
    ) -> Result<Option<u64>, EncodeError> {
        let mut state = self.state();
        let mut delta = ChangeSet::default();
        for id in changes.removals {
            if state
                .model
                .get(&id)
                .is_some_and(|(owner, _)| *owner == collector)
            {
                state.model.remove(&id);
                delta.removals.push(id);
            }
        }
        for object in changes.upserts {
            let unchanged = state
                .model
                .get(&object.id)
                .is_some_and(|(_, current)| *current == object);
            if !unchanged {
                state
                    .model
                    .insert(object.id.clone(), (collector, object.clone()));
                delta.upserts.push(object);
            }
        }
        self.append(&mut state, delta)
    }

    /// Replaces everything `collector` owns with `objects`: what is missing is removed.
    pub fn replace_all(
        &self,
        collector: &'static str,
        objects: Vec<Object>,
    ) -> Result<Option<u64>, EncodeError> {
        let keep: std::collections::HashSet<&ObjectId> = objects.iter().map(|o| &o.id).collect();
        let removals = {
            let state = self.state();
            state
                .model
                .iter()
                .filter(|(id, (owner, _))| *owner == collector && !keep.contains(id))
                .map(|(id, _)| id.clone())
                .collect()
        };
        self.publish(
            collector,
            ChangeSet {
                upserts: objects,
                removals,
            },
        )
    }

    fn append(&self, state: &mut State, changes: ChangeSet) -> Result<Option<u64>, EncodeError> {
        if changes.is_empty() {
            return Ok(None);
        }
        let seq = state.last_seq + 1;
        let message = AgentMessage::Delta(Delta {
            epoch: self.inner.epoch,
            seq,
            upserts: changes.upserts,
            removals: changes.removals,
            observed_at: Timestamp::now(),
        });
        let frame = Bytes::from(codec::encode(&message)?);
        state.last_seq = seq;
        state.pending_bytes += frame.len();
        state.pending.push_back(PendingDelta { seq, frame });
        if state.pending_bytes > self.inner.cap_bytes {
            tracing::warn!(
                cap_bytes = self.inner.cap_bytes,
                dropped = state.pending.len(),
                "outbox over its cap: dropping unacknowledged deltas; the aggregator will get a snapshot"
            );
            state.pending.clear();
            state.pending_bytes = 0;
            state.floor_seq = seq;
        }
        self.inner.last_seq.send_replace(seq);
        Ok(Some(seq))
    }

    /// The aggregator durably holds everything up to `seq`.
    pub fn ack(&self, seq: u64) {
        let mut state = self.state();
        if seq <= state.acked_seq || seq > state.last_seq {
            return;
        }
        state.acked_seq = seq;
        while state.pending.front().is_some_and(|d| d.seq <= seq) {
            if let Some(done) = state.pending.pop_front() {
                state.pending_bytes -= done.frame.len();
            }
        }
        state.floor_seq = state.floor_seq.max(seq);
    }

    /// Takes note that the aggregator durably holds this epoch up to `seq`; returns whether the
    /// deltas after it are all still here (resume), or a snapshot must be sent instead.
    pub fn resume_after(&self, seq: u64) -> bool {
        if seq > self.state().last_seq {
            // The aggregator claims more than this epoch ever produced: trust nothing.
            return false;
        }
        self.ack(seq);
        self.can_continue_after(seq)
    }

    /// Pending deltas after `seq`, in order (what a live session has not sent yet).
    pub fn pending_after(&self, seq: u64) -> Vec<PendingDelta> {
        let state = self.state();
        state
            .pending
            .iter()
            .filter(|d| d.seq > seq)
            .cloned()
            .collect()
    }

    /// Whether every delta after `seq` is still pending, so a session that sent up to `seq`
    /// can go on with deltas; false once an overflow dropped some.
    pub fn can_continue_after(&self, seq: u64) -> bool {
        seq >= self.state().floor_seq
    }

    /// The whole model as of the last sequence number, encoded; it replaces every pending
    /// delta, which it covers.
    pub fn snapshot(&self) -> Result<(u64, Bytes), EncodeError> {
        let mut state = self.state();
        let seq = state.last_seq;
        let message = AgentMessage::Snapshot(Snapshot {
            epoch: self.inner.epoch,
            seq,
            objects: state.model.values().map(|(_, o)| o.clone()).collect(),
            observed_at: Timestamp::now(),
        });
        let frame = Bytes::from(codec::encode(&message)?);
        state.pending.clear();
        state.pending_bytes = 0;
        state.floor_seq = seq;
        Ok((seq, frame))
    }

    /// The current model, sorted by id.
    pub fn objects(&self) -> Vec<Object> {
        self.state()
            .model
            .values()
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Bytes held by unacknowledged deltas.
    pub fn pending_bytes(&self) -> usize {
        self.state().pending_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calipso_proto::ObjectType;

    fn vnic(name: &str, mtu: u32) -> Object {
        let mut o = Object::new(
            ObjectId::host_local(ObjectType::Vnic, "h1", name),
            ObjectType::Vnic,
            name,
            "env",
        )
        .with_host("h1");
        o.attributes.mtu = Some(mtu);
        o
    }

    #[test]
    fn unchanged_state_sends_nothing() {
        let outbox = Outbox::new("h1", "env", 7, 1 << 20);
        assert_eq!(
            outbox
                .replace_all("netlink", vec![vnic("a", 1500), vnic("b", 1500)])
                .ok(),
            Some(Some(1))
        );
        assert_eq!(
            outbox
                .replace_all("netlink", vec![vnic("a", 1500), vnic("b", 1500)])
                .ok(),
            Some(None)
        );
        assert_eq!(
            outbox.replace_all("netlink", vec![vnic("a", 9000)]).ok(),
            Some(Some(2))
        );
        assert_eq!(outbox.objects(), vec![vnic("a", 9000)]);
        // Another collector cannot remove what it does not own.
        let removal = ChangeSet {
            upserts: vec![],
            removals: vec![vnic("a", 0).id],
        };
        assert_eq!(outbox.publish("ovs", removal).ok(), Some(None));
    }

    #[test]
    fn acks_trim_and_resume_plans() {
        let outbox = Outbox::new("h1", "env", 7, 1 << 20);
        for mtu in 1..=5 {
            let _ = outbox.replace_all("netlink", vec![vnic("a", mtu)]);
        }
        outbox.ack(2);
        assert_eq!(outbox.acked_seq(), 2);
        let seqs = |after| {
            outbox
                .pending_after(after)
                .iter()
                .map(|d| d.seq)
                .collect::<Vec<_>>()
        };
        // The aggregator got 3 but the ack was lost: resume after 3.
        assert!(outbox.resume_after(3));
        assert_eq!(seqs(3), vec![4, 5]);
        // An aggregator that says 1 after acking 2 lost data the outbox no longer has: snapshot.
        assert!(!outbox.resume_after(1));
        assert!(outbox.resume_after(5));
        assert_eq!(seqs(5), Vec::<u64>::new());
        assert!(!outbox.resume_after(9));
        assert_eq!(outbox.pending_bytes(), 0);
    }

    #[test]
    fn overflow_drops_pending_and_forces_a_snapshot() {
        let outbox = Outbox::new("h1", "env", 7, 600);
        for mtu in 1..=20 {
            let _ = outbox.replace_all("netlink", vec![vnic("a", mtu)]);
        }
        assert!(outbox.pending_bytes() <= 600);
        assert!(!outbox.can_continue_after(0));
        assert!(!outbox.resume_after(0));
        let (seq, frame) = outbox.snapshot().expect("snapshot encodes");
        assert_eq!(seq, 20);
        match codec::decode::<AgentMessage>(&frame) {
            Ok(AgentMessage::Snapshot(s)) => assert_eq!(s.objects, vec![vnic("a", 20)]),
            other => panic!("expected a snapshot, got {other:?}"),
        }
        assert!(outbox.can_continue_after(20));
    }
}
