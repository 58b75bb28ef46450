//! Ingest: the server side of agent sessions.
//!
//! [`server`] accepts QUIC connections, [`session`] runs the protocol of one agent (hello,
//! resume or snapshot, ordered deltas, cumulative acks), and an [`IngestSink`] makes what the
//! agent sent durable. A delta is acknowledged only after the sink returns, so an acknowledged
//! delta survives any crash of the aggregator.

mod durable;
mod memory;
mod server;
mod session;
pub mod validate;

use std::future::Future;

use calipso_proto::wire::{Delta, HealthOverrides, Snapshot};

pub use durable::{
    AdminChange, CloudUpdate, CloudWrite, DurableSink, GroupChanges, OpenError, Published,
};
pub use memory::{JournalEntry, MemorySink};
pub use server::{IngestConfig, IngestError, IngestHandle, IngestServer};

/// Who is on the other end of a session, as established by its certificate and `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSession {
    pub host: String,
    pub environment: String,
    pub agent_version: String,
    pub epoch: u64,
    /// The last sequence number the agent saw acknowledged, from its `Hello`.
    pub last_acked_seq: u64,
}

/// What the sink durably holds for a host: the epoch and the last sequence number applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    pub epoch: u64,
    pub seq: u64,
}

/// What became of one snapshot or delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Nothing of it was applied, but its sequence number is consumed, so the session goes on;
    /// the reason names the offending item.
    Rejected(String),
}

/// The sink could not make anything durable; the session ends and the agent resumes later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sink unavailable: {0}")]
pub struct SinkError(pub String);

/// Where sessions deliver what agents send. Implemented by the store; [`MemorySink`] keeps it in
/// memory for tests and ephemeral runs.
pub trait IngestSink: Send + Sync + 'static {
    /// What the sink holds for `host`, to decide between resume and snapshot.
    fn resume_point(
        &self,
        host: &str,
    ) -> impl Future<Output = Result<Option<ResumePoint>, SinkError>> + Send;

    /// A session was established.
    fn host_connected(
        &self,
        session: &AgentSession,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Replaces everything the sink holds for the session's host with the snapshot, atomically.
    fn apply_snapshot(
        &self,
        session: &AgentSession,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<Outcome, SinkError>> + Send;

    /// Applies consecutive deltas in order, each atomically; returns one outcome per delta.
    /// Implementations may commit them together (group commit) but must be durable on return.
    fn apply_deltas(
        &self,
        session: &AgentSession,
        deltas: Vec<Delta>,
    ) -> impl Future<Output = Result<Vec<Outcome>, SinkError>> + Send;

    /// The host's session ended (closed, timed out or superseded by nothing).
    fn host_disconnected(&self, host: &str) -> impl Future<Output = ()> + Send;

    /// The health-check settings the environment gives its agents.
    fn health_overrides(&self, _environment: &str) -> HealthOverrides {
        HealthOverrides::default()
    }
}
