use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use calipso_proto::wire::{Delta, Snapshot};
use calipso_proto::{Object, ObjectId};

use super::validate::{check_delta, check_snapshot};
use super::{AgentSession, IngestSink, Outcome, ResumePoint, SinkError};

/// What the sink received, in order: the record tests assert exact sequences against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalEntry {
    Connected {
        host: String,
        epoch: u64,
    },
    Snapshot {
        host: String,
        epoch: u64,
        seq: u64,
        objects: usize,
    },
    Delta {
        host: String,
        epoch: u64,
        seq: u64,
        changes: usize,
    },
    Rejected {
        host: String,
        seq: u64,
        reason: String,
    },
    Disconnected {
        host: String,
    },
}

#[derive(Debug, Default)]
struct Partition {
    epoch: u64,
    seq: u64,
    objects: BTreeMap<ObjectId, Object>,
}

#[derive(Debug, Default)]
struct State {
    hosts: HashMap<String, Partition>,
    journal: Vec<JournalEntry>,
}

/// An [`IngestSink`] that holds every host's objects in memory: "durable" for as long as the
/// process lives. For tests, benchmarks and runs that need no persistence.
#[derive(Debug, Default)]
pub struct MemorySink {
    state: Mutex<State>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Everything received so far.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.state().journal.clone()
    }

    /// The objects currently held for a host.
    pub fn objects(&self, host: &str) -> Vec<Object> {
        self.state()
            .hosts
            .get(host)
            .map(|p| p.objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Hosts with data, sorted.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.state().hosts.keys().cloned().collect();
        hosts.sort();
        hosts
    }

    /// Drops every partition, as an aggregator that lost its store would.
    pub fn forget_everything(&self) {
        self.state().hosts.clear();
    }
}

impl IngestSink for MemorySink {
    async fn resume_point(&self, host: &str) -> Result<Option<ResumePoint>, SinkError> {
        Ok(self.state().hosts.get(host).map(|p| ResumePoint {
            epoch: p.epoch,
            seq: p.seq,
        }))
    }

    async fn host_connected(&self, session: &AgentSession) -> Result<(), SinkError> {
        self.state().journal.push(JournalEntry::Connected {
            host: session.host.clone(),
            epoch: session.epoch,
        });
        Ok(())
    }

    async fn apply_snapshot(
        &self,
        session: &AgentSession,
        snapshot: Snapshot,
    ) -> Result<Outcome, SinkError> {
        let mut state = self.state();
        let host = session.host.clone();
        if let Err(reason) = check_snapshot(session, &snapshot) {
            // A refused snapshot still starts the epoch, empty, so that the deltas after it
            // have something to apply to and the agent is not asked for the same snapshot forever.
            state.hosts.insert(
                host.clone(),
                Partition {
                    epoch: snapshot.epoch,
                    seq: snapshot.seq,
                    objects: BTreeMap::new(),
                },
            );
            state.journal.push(JournalEntry::Rejected {
                host,
                seq: snapshot.seq,
                reason: reason.clone(),
            });
            return Ok(Outcome::Rejected(reason));
        }
        let objects = snapshot.objects.len();
        let partition = Partition {
            epoch: snapshot.epoch,
            seq: snapshot.seq,
            objects: snapshot
                .objects
                .into_iter()
                .map(|o| (o.id.clone(), o))
                .collect(),
        };
        state.hosts.insert(host.clone(), partition);
        state.journal.push(JournalEntry::Snapshot {
            host,
            epoch: snapshot.epoch,
            seq: snapshot.seq,
            objects,
        });
        Ok(Outcome::Applied)
    }

    async fn apply_deltas(
        &self,
        session: &AgentSession,
        deltas: Vec<Delta>,
    ) -> Result<Vec<Outcome>, SinkError> {
        let mut state = self.state();
        let State { hosts, journal } = &mut *state;
        let host = session.host.clone();
        let partition = hosts.entry(host.clone()).or_insert_with(|| Partition {
            epoch: session.epoch,
            ..Partition::default()
        });
        let mut outcomes = Vec::with_capacity(deltas.len());
        for delta in deltas {
            partition.epoch = delta.epoch;
            partition.seq = delta.seq;
            if let Err(reason) =
                check_delta(session, &delta, |id| partition.objects.contains_key(id))
            {
                journal.push(JournalEntry::Rejected {
                    host: host.clone(),
                    seq: delta.seq,
                    reason: reason.clone(),
                });
                outcomes.push(Outcome::Rejected(reason));
                continue;
            }
            journal.push(JournalEntry::Delta {
                host: host.clone(),
                epoch: delta.epoch,
                seq: delta.seq,
                changes: delta.change_count(),
            });
            for id in &delta.removals {
                partition.objects.remove(id);
            }
            for object in delta.upserts {
                partition.objects.insert(object.id.clone(), object);
            }
            outcomes.push(Outcome::Applied);
        }
        Ok(outcomes)
    }

    async fn host_disconnected(&self, host: &str) {
        self.state().journal.push(JournalEntry::Disconnected {
            host: host.to_owned(),
        });
    }
}
