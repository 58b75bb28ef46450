//! The agent's host model and its outbox of unacknowledged deltas.
//!
//! Collectors publish what they see; the outbox diffs it against the model, and whatever really
//! changed becomes one [`Delta`] with the next sequence number of this agent's epoch.
//!
//! Several collectors may describe the same object (the kernel sees a tap device, Open vSwitch
//! sees the same interface as a port with a Neutron port id): each publishes its *fragment*
//! under its own name, and the model holds their merge ([`merge`]). A collector only ever adds,
//! changes or removes its own fragments; an object disappears when its last fragment does. Deltas stay
//! in the outbox, encoded once, until the aggregator acknowledges them. The outbox is bounded in
//! bytes: past the cap it drops every pending delta and marks that the next thing the aggregator
//! must get is a snapshot, which the model can always produce.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calipso_proto::codec::{self, EncodeError};
use calipso_proto::wire::{AgentMessage, Delta, Snapshot};
use calipso_proto::{Object, ObjectId, Status, StatusLevel, Timestamp};
use tokio::sync::watch;

use crate::state::SavedState;

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

/// What the collectors say about one object, and the merge the aggregator gets.
#[derive(Debug)]
struct Entry {
    fragments: BTreeMap<&'static str, Object>,
    /// The health checks' verdict ([`Outbox::set_statuses`]): no collector's fragment carries
    /// it, so a collector re-describing the object leaves it in place.
    status: Option<Status>,
    /// The merge, kept only when several collectors describe the object; with one, the object
    /// is that fragment, carrying the status (no second copy of every object).
    merged: Option<Object>,
}

impl Entry {
    fn object(&self) -> Option<&Object> {
        self.merged
            .as_ref()
            .or_else(|| self.fragments.values().next())
    }

    fn remerge(&mut self) {
        if self.fragments.len() > 1 {
            self.merged = merge(self.fragments.iter().map(|(c, o)| (*c, o))).map(|mut object| {
                if let Some(status) = &self.status {
                    object.status = status.clone();
                }
                object
            });
            return;
        }
        self.merged = None;
        // A collector republishing its fragment brings no status: the check's is put back.
        if let (Some(status), Some(only)) = (&self.status, self.fragments.values_mut().next()) {
            only.status = status.clone();
        }
    }
}

/// The order fragments merge in: the kernel's view of an interface is the base (its identity
/// and typed attributes win), then libvirt's and the host's own, then any other collector's in
/// name order.
fn rank(collector: &str) -> (u8, &str) {
    match collector {
        "kernel" => (0, collector),
        "libvirt" => (1, collector),
        "host_facts" => (2, collector),
        other => (3, other),
    }
}

/// Merges the fragments of one object: identity (type, name, parent, host, environment) and
/// status from the first fragment in [`rank`] order, each typed attribute from the first
/// fragment that has it, and `extra` keys from all, the earliest fragment winning a conflict.
pub fn merge<'a>(fragments: impl IntoIterator<Item = (&'a str, &'a Object)>) -> Option<Object> {
    let mut ordered: Vec<(&str, &Object)> = fragments.into_iter().collect();
    ordered.sort_by_key(|(collector, _)| rank(collector));
    let (_, base) = ordered.first()?;
    let mut merged = (*base).clone();
    for (_, fragment) in &ordered[1..] {
        let (attrs, more) = (&mut merged.attributes, &fragment.attributes);
        attrs.mac_address = attrs.mac_address.or(more.mac_address);
        attrs.mtu = attrs.mtu.or(more.mtu);
        attrs.link_state = attrs.link_state.or(more.link_state);
        if attrs.addresses.is_empty() {
            attrs.addresses.clone_from(&more.addresses);
        }
        for (key, value) in &more.extra {
            if !attrs.extra.contains_key(key) {
                attrs.extra.insert(key, value.clone());
            }
        }
    }
    Some(merged)
}

#[derive(Debug)]
struct State {
    /// Every object the agent currently sees, by id.
    model: BTreeMap<ObjectId, Entry>,
    last_seq: u64,
    acked_seq: u64,
    /// Every delta after `floor_seq` is in `pending`; deltas up to it are acked or were dropped.
    floor_seq: u64,
    pending: VecDeque<PendingDelta>,
    pending_bytes: usize,
    /// Set while a restarted agent rebuilds its model: no delta leaves until the model is
    /// complete and can be compared with the saved one.
    warmup: Option<Warmup>,
}

/// The saved model of a resumed epoch, and how far the collectors are in describing the host
/// again.
#[derive(Debug)]
struct Warmup {
    baseline: BTreeMap<ObjectId, Object>,
    /// Collectors that have not published yet.
    waiting: BTreeSet<&'static str>,
    last_publish: Instant,
    deadline: Instant,
}

/// Whether a resumed outbox still rebuilds its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warming {
    Done,
    Warming,
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
            warmup: None,
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

    /// An outbox that continues a saved epoch after `saved.seq`. Its model starts empty; the
    /// collectors describe the host again, and once each of `collectors` has published and
    /// publications pause (see [`Outbox::end_warmup`]), what differs from the saved model
    /// leaves as one delta. Until then no delta leaves.
    pub fn resumed(
        saved: SavedState,
        cap_bytes: usize,
        collectors: &[&'static str],
        max_warmup: Duration,
    ) -> Self {
        let now = Instant::now();
        let state = State {
            model: BTreeMap::new(),
            last_seq: saved.seq,
            acked_seq: saved.seq,
            floor_seq: saved.seq,
            pending: VecDeque::new(),
            pending_bytes: 0,
            warmup: Some(Warmup {
                baseline: saved
                    .objects
                    .into_iter()
                    .map(|o| (o.id.clone(), o))
                    .collect(),
                waiting: collectors.iter().copied().collect(),
                last_publish: now,
                deadline: now + max_warmup,
            }),
        };
        Outbox {
            inner: Arc::new(Inner {
                host: saved.host,
                environment: saved.environment,
                epoch: saved.epoch,
                cap_bytes,
                state: Mutex::new(state),
                last_seq: watch::Sender::new(saved.seq),
            }),
        }
    }

    /// Ends a resumed outbox's warm-up once every collector has published and none has for
    /// `quiet`, or at its deadline: the difference between the saved model and the rebuilt one
    /// becomes the next delta.
    pub fn end_warmup(&self, quiet: Duration) -> Result<Warming, EncodeError> {
        let mut state = self.state();
        let Some(warmup) = &state.warmup else {
            return Ok(Warming::Done);
        };
        let settled = warmup.waiting.is_empty() && warmup.last_publish.elapsed() >= quiet;
        if !settled && Instant::now() < warmup.deadline {
            return Ok(Warming::Warming);
        }
        let Some(warmup) = state.warmup.take() else {
            return Ok(Warming::Done);
        };
        if !warmup.waiting.is_empty() {
            tracing::warn!(
                waiting = ?warmup.waiting,
                "collectors did not report within the warm-up; resuming with what the others saw"
            );
        }
        let mut delta = ChangeSet::default();
        for entry in state.model.values() {
            if let Some(object) = entry.object()
                && warmup.baseline.get(&object.id) != Some(object)
            {
                delta.upserts.push(object.clone());
            }
        }
        delta.removals = warmup
            .baseline
            .into_keys()
            .filter(|id| !state.model.contains_key(id))
            .collect();
        tracing::info!(
            changed = delta.upserts.len(),
            removed = delta.removals.len(),
            "model rebuilt after the restart; sending what changed while the agent was down"
        );
        self.append(&mut state, delta)?;
        Ok(Warming::Done)
    }

    /// What a restarted agent needs to resume this epoch; `None` while warming up (the model
    /// is not yet the host's).
    pub fn saved_state(&self) -> Option<SavedState> {
        let state = self.state();
        if state.warmup.is_some() {
            return None;
        }
        Some(SavedState {
            host: self.inner.host.clone(),
            environment: self.inner.environment.clone(),
            epoch: self.inner.epoch,
            seq: state.last_seq,
            objects: state
                .model
                .values()
                .filter_map(|e| e.object().cloned())
                .collect(),
        })
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

    /// Applies a collector's changes to its fragments; returns the new delta's sequence number,
    /// or `None` when no merged object actually changed (an upsert equal to the collector's
    /// current fragment, a removal of a fragment it does not have).
    pub fn publish(
        &self,
        collector: &'static str,
        changes: ChangeSet,
    ) -> Result<Option<u64>, EncodeError> {
        let mut state = self.state();
        let mut delta = ChangeSet::default();
        for id in changes.removals {
            let Some(entry) = state.model.get_mut(&id) else {
                continue;
            };
            if !entry.fragments.contains_key(collector) {
                continue;
            }
            let before = entry.object().cloned();
            entry.fragments.remove(collector);
            if entry.fragments.is_empty() {
                state.model.remove(&id);
                delta.removals.push(id);
                continue;
            }
            entry.remerge();
            if let Some(after) = entry
                .object()
                .filter(|after| Some(*after) != before.as_ref())
            {
                delta.upserts.push(after.clone());
            }
        }
        for object in changes.upserts {
            match state.model.get_mut(&object.id) {
                Some(entry) => {
                    if entry.fragments.get(collector) == Some(&object) {
                        continue;
                    }
                    let before = entry.object().cloned();
                    entry.fragments.insert(collector, object);
                    entry.remerge();
                    if let Some(after) = entry
                        .object()
                        .filter(|after| Some(*after) != before.as_ref())
                    {
                        delta.upserts.push(after.clone());
                    }
                }
                None => {
                    // After a restart the checks' last verdict stands until they run again,
                    // so the rebuilt model matches the saved one.
                    let status = state
                        .warmup
                        .as_ref()
                        .and_then(|warmup| warmup.baseline.get(&object.id))
                        .map(|saved| saved.status.clone())
                        .filter(|status| status.level != StatusLevel::Unknown);
                    let mut entry = Entry {
                        fragments: BTreeMap::from([(collector, object.clone())]),
                        status,
                        merged: None,
                    };
                    entry.remerge();
                    let upsert = entry.object().cloned().unwrap_or(object);
                    state.model.insert(upsert.id.clone(), entry);
                    delta.upserts.push(upsert);
                }
            }
        }
        if let Some(warmup) = &mut state.warmup {
            warmup.waiting.remove(collector);
            warmup.last_publish = Instant::now();
            return Ok(None);
        }
        self.append(&mut state, delta)
    }

    /// Records the health checks' verdicts as the objects' statuses; returns the delta's
    /// sequence number, or `None` when no status changed. A new level is always recorded; an
    /// `ok` that stays `ok` is not rewritten (a plugin's round-trip figures would otherwise
    /// make a new version of the object on every run), a problem's text is kept current. A
    /// status keeps the time its level was first seen (the verdict's own timestamp is not
    /// used); objects no longer in the model are skipped.
    pub fn set_statuses(
        &self,
        verdicts: impl IntoIterator<Item = (ObjectId, Status)>,
    ) -> Result<Option<u64>, EncodeError> {
        let mut state = self.state();
        let mut delta = ChangeSet::default();
        let now = Timestamp::now();
        for (id, verdict) in verdicts {
            let Some(entry) = state.model.get_mut(&id) else {
                continue;
            };
            let current = entry.object().map(|object| &object.status);
            let same = |status: &&Status| {
                status.level == verdict.level
                    && (verdict.level == StatusLevel::Ok || status.text == verdict.text)
            };
            if current.is_some_and(|status| same(&status)) {
                continue;
            }
            let since = current
                .filter(|status| status.level == verdict.level)
                .and_then(|status| status.timestamp)
                .unwrap_or(now);
            entry.status = Some(Status {
                timestamp: Some(since),
                ..verdict
            });
            entry.remerge();
            if let Some(object) = entry.object() {
                delta.upserts.push(object.clone());
            }
        }
        if state.warmup.is_some() {
            return Ok(None);
        }
        self.append(&mut state, delta)
    }

    /// Replaces every fragment `collector` has with `objects`: what is missing is removed.
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
                .filter(|(id, entry)| entry.fragments.contains_key(collector) && !keep.contains(id))
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
            objects: state
                .model
                .values()
                .filter_map(|e| e.object().cloned())
                .collect(),
            observed_at: Timestamp::now(),
        });
        let frame = Bytes::from(codec::encode(&message)?);
        state.pending.clear();
        state.pending_bytes = 0;
        state.floor_seq = seq;
        // The snapshot states the whole model: nothing is left to compare with the saved one.
        state.warmup = None;
        Ok((seq, frame))
    }

    /// The current model, sorted by id.
    pub fn objects(&self) -> Vec<Object> {
        self.state()
            .model
            .values()
            .filter_map(|e| e.object().cloned())
            .collect()
    }

    /// Visits every current object, in id order, without copying any.
    pub fn for_each_object(&self, mut visit: impl FnMut(&Object)) {
        for object in self.state().model.values().filter_map(Entry::object) {
            visit(object);
        }
    }

    /// The current object `id`, if the model has it.
    pub fn object(&self, id: &ObjectId) -> Option<Object> {
        self.state().model.get(id).and_then(Entry::object).cloned()
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
    fn fragments_of_one_object_merge() {
        let outbox = Outbox::new("h1", "env", 7, 1 << 20);
        let mut from_ovs = vnic("tap1", 0);
        from_ovs.attributes.mtu = None;
        from_ovs
            .attributes
            .extra
            .insert("iface_id", "port-1".into());
        from_ovs
            .attributes
            .extra
            .insert("kind", "ovs-says-so".into());
        let mut from_kernel = vnic("tap1", 1500);
        from_kernel.attributes.extra.insert("kind", "tun".into());
        let upsert = |o: &Object| ChangeSet {
            upserts: vec![o.clone()],
            removals: vec![],
        };

        assert_eq!(outbox.publish("ovs", upsert(&from_ovs)).ok(), Some(Some(1)));
        assert_eq!(
            outbox.publish("kernel", upsert(&from_kernel)).ok(),
            Some(Some(2))
        );
        let merged = outbox.objects().remove(0);
        assert_eq!(merged.attributes.mtu, Some(1500));
        assert_eq!(
            merged.attributes.extra.get("kind"),
            Some(&"tun".into()),
            "the kernel's fragment wins"
        );
        assert_eq!(
            merged.attributes.extra.get("iface_id"),
            Some(&"port-1".into())
        );
        // The kernel's device goes away: the object stays with what OVS says.
        let removal = ChangeSet {
            upserts: vec![],
            removals: vec![from_kernel.id.clone()],
        };
        assert_eq!(
            outbox.publish("kernel", removal.clone()).ok(),
            Some(Some(3))
        );
        assert_eq!(outbox.objects(), vec![from_ovs.clone()]);
        // Once OVS forgets it too, it is removed.
        assert_eq!(outbox.publish("ovs", removal).ok(), Some(Some(4)));
        assert!(outbox.objects().is_empty());
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

    fn saved(objects: Vec<Object>) -> SavedState {
        SavedState {
            host: "h1".into(),
            environment: "env".into(),
            epoch: 7,
            seq: 40,
            objects,
        }
    }

    fn delta_of(outbox: &Outbox, seq: u64) -> Delta {
        let pending = outbox.pending_after(seq - 1);
        match pending
            .first()
            .map(|d| codec::decode::<AgentMessage>(&d.frame))
        {
            Some(Ok(AgentMessage::Delta(delta))) => delta,
            other => panic!("expected delta {seq}, got {other:?}"),
        }
    }

    #[test]
    fn a_resumed_outbox_sends_only_what_changed_while_the_agent_was_down() {
        let before = vec![vnic("a", 1500), vnic("b", 1500), vnic("gone", 1500)];
        let outbox = Outbox::resumed(
            saved(before),
            1 << 20,
            &["netlink", "ovs"],
            Duration::from_secs(60),
        );
        assert_eq!(outbox.epoch(), 7);
        assert_eq!(outbox.acked_seq(), 40);
        assert!(outbox.resume_after(40), "the aggregator holds seq 40");
        assert_eq!(outbox.saved_state(), None, "nothing to save while warming");
        let quiet = Duration::ZERO;
        let published = outbox.replace_all("netlink", vec![vnic("a", 1500), vnic("b", 9000)]);
        assert_eq!(published.ok(), Some(None), "no delta while warming");
        assert_eq!(
            outbox.end_warmup(quiet).ok(),
            Some(Warming::Warming),
            "ovs has not reported"
        );
        let _ = outbox.replace_all("ovs", vec![vnic("new", 1500)]);
        assert_eq!(outbox.end_warmup(quiet).ok(), Some(Warming::Done));
        let delta = delta_of(&outbox, 41);
        assert_eq!((delta.epoch, delta.seq), (7, 41));
        assert_eq!(delta.upserts, vec![vnic("b", 9000), vnic("new", 1500)]);
        assert_eq!(
            delta.removals,
            vec![ObjectId::host_local(ObjectType::Vnic, "h1", "gone")]
        );
        let state = outbox.saved_state().expect("saved after warm-up");
        assert_eq!(state.seq, 41);
        assert_eq!(state.objects.len(), 3);
        // Later changes are ordinary deltas.
        assert_eq!(
            outbox.replace_all("netlink", vec![vnic("a", 1500)]).ok(),
            Some(Some(42))
        );
    }

    #[test]
    fn a_resumed_outbox_stops_waiting_at_its_deadline_and_a_snapshot_ends_the_warm_up() {
        let outbox = Outbox::resumed(
            saved(vec![vnic("a", 1500)]),
            1 << 20,
            &["netlink", "ovs"],
            Duration::ZERO,
        );
        let _ = outbox.replace_all("netlink", vec![vnic("a", 1500)]);
        assert_eq!(
            outbox.end_warmup(Duration::from_secs(60)).ok(),
            Some(Warming::Done)
        );
        assert!(outbox.pending_after(40).is_empty(), "nothing changed");

        let outbox = Outbox::resumed(
            saved(vec![vnic("a", 1500)]),
            1 << 20,
            &["netlink"],
            Duration::from_secs(60),
        );
        let (seq, _) = outbox.snapshot().expect("snapshot");
        assert_eq!(seq, 40);
        assert_eq!(outbox.end_warmup(Duration::ZERO).ok(), Some(Warming::Done));
        assert!(outbox.saved_state().is_some());
    }
}
