//! The durable store: one trait, two sqlx implementations — [`SqliteStore`] (the embedded
//! default: a file in the data directory) and [`PostgresStore`] (production). Both apply their
//! checked-in migrations at open and pass the same conformance suite.
//!
//! Objects, links and cliques are versioned: every version is a row with its validity range
//! `[valid_from, valid_to)`, the current one open-ended. "The state at T" selects the rows valid
//! at T; "what changed between T1 and T2" selects the rows that began or ended in between;
//! both are index range scans, not replays. A [`Batch`] is written in one transaction, so a
//! group of deltas is durable whole or not at all.

mod any;
mod postgres;
mod records;
mod rows;
mod sqlite;

use std::future::Future;

use calipso_proto::{Link, ObjectId, Timestamp};
use serde::{Deserialize, Serialize};

pub use any::AnyStore;
pub use postgres::PostgresStore;
pub use records::{
    AuthMethod, Grants, MessageQuery, ScanKind, ScanRecord, ScanStatus, ScheduleRecord,
    SnapshotRecord, StoredMessage, TokenRecord, UserRecord,
};
pub use sqlite::SqliteStore;

use crate::cliques::{Clique, CliqueConstraint, CliqueType, EnvironmentConfig};
use crate::graph::Node;
use crate::links::LinkKey;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored {what} is not valid JSON: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("store URL `{0}` is neither sqlite:… nor postgres://…")]
    UnknownScheme(String),
    #[error("cannot make {path} readable by its owner only: {source}")]
    Permissions {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether an agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Connected,
    Disconnected,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Connected => "connected",
            AgentState::Disconnected => "disconnected",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "connected" {
            AgentState::Connected
        } else {
            AgentState::Disconnected
        }
    }
}

/// What the store knows of a host's agent, including where its session resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub host: String,
    pub environment: String,
    pub agent_version: String,
    /// The epoch of the data held for the host; `None` until a snapshot or delta of it was
    /// applied (the host must send a snapshot).
    pub epoch: Option<u64>,
    /// The last sequence number applied and durable in that epoch.
    pub seq: u64,
    pub state: AgentState,
    pub last_seen: Timestamp,
}

/// Severity of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageLevel {
    Info,
    Warning,
    Error,
}

impl MessageLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageLevel::Info => "info",
            MessageLevel::Warning => "warning",
            MessageLevel::Error => "error",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "error" => MessageLevel::Error,
            "warning" => MessageLevel::Warning,
            _ => MessageLevel::Info,
        }
    }
}

/// An event worth an operator's attention (a host went away, a delta was refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub environment: Option<String>,
    pub level: MessageLevel,
    pub source: String,
    pub related_object: Option<ObjectId>,
    pub text: String,
    pub at: Timestamp,
}

/// One version of an object, a link or a clique in history: valid from `valid_from` until
/// `valid_to` (`None`: current).
#[derive(Debug, Clone, PartialEq)]
pub struct Version<T> {
    pub value: T,
    pub valid_from: Timestamp,
    pub valid_to: Option<Timestamp>,
}

impl<T> Version<T> {
    /// Whether this version was the one in force at `at`.
    pub fn valid_at(&self, at: Timestamp) -> bool {
        self.valid_from <= at && self.valid_to.is_none_or(|end| end > at)
    }
}

pub type ObjectVersion = Version<Node>;

/// Where history starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryStart {
    pub at: Timestamp,
    /// Versions before `at` were compacted away (else nothing was recorded before it).
    pub compacted: bool,
}

/// What a history compaction removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    pub objects: u64,
    pub links: u64,
    pub cliques: u64,
    pub messages: u64,
}

/// One key's write to a versioned table: its new version, or `None` for its end (a removal).
///
/// Whether the key has a current version to close comes from the engine, which knows: a first
/// version skips the close. Most of a snapshot's and of a VM boot's versions are first ones,
/// and on PostgreSQL closing them anyway costs an index probe each, or a join over every
/// current row when the planner misjudges the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Write<K, V> {
    pub environment: String,
    pub key: K,
    pub version: Option<V>,
    pub replaces: bool,
}

impl<K, V> Write<K, V> {
    /// The first version of a key that has none.
    pub fn first(environment: impl Into<String>, key: K, version: V) -> Self {
        Write {
            environment: environment.into(),
            key,
            version: Some(version),
            replaces: false,
        }
    }

    /// A new version of a key that has a current one, or (`None`) its end.
    pub fn replacing(environment: impl Into<String>, key: K, version: Option<V>) -> Self {
        Write {
            environment: environment.into(),
            key,
            version,
            replaces: true,
        }
    }
}

/// Everything one transaction writes. A key written more than once keeps its last version,
/// and closes its current one if its first write in the batch found one.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// The commit time: the start of the new versions and the end of the replaced ones.
    pub at: Timestamp,
    pub environments: Vec<EnvironmentConfig>,
    pub objects: Vec<Write<ObjectId, Node>>,
    pub links: Vec<Write<LinkKey, Link>>,
    pub cliques: Vec<Write<ObjectId, Clique>>,
    pub agents: Vec<AgentRecord>,
    pub messages: Vec<Message>,
    /// Replaces every clique type and constraint.
    pub clique_rules: Option<(Vec<CliqueType>, Vec<CliqueConstraint>)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.environments.is_empty()
            && self.objects.is_empty()
            && self.links.is_empty()
            && self.cliques.is_empty()
            && self.agents.is_empty()
            && self.messages.is_empty()
            && self.clique_rules.is_none()
    }

    /// How many object, link and clique versions it writes.
    pub fn change_count(&self) -> usize {
        self.objects.len() + self.links.len() + self.cliques.len()
    }
}

/// What the aggregator needs at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub environments: Vec<EnvironmentConfig>,
    /// Current objects, by environment.
    pub objects: Vec<(String, Node)>,
    pub links: Vec<(String, Link)>,
    pub cliques: Vec<(String, Clique)>,
    pub agents: Vec<AgentRecord>,
    /// `None` until the defaults were seeded once: an operator who deletes every clique type
    /// does not get them back at the next start.
    pub clique_rules: Option<(Vec<CliqueType>, Vec<CliqueConstraint>)>,
    /// The latest commit time, so that new versions never start before old ones.
    pub last_commit: Timestamp,
}

/// The durable store. Implemented for SQLite and PostgreSQL; every method is one transaction.
pub trait Store: Send + Sync + 'static {
    /// Everything current, for the engine and the ingest layer at start.
    fn load(&self) -> impl Future<Output = Result<Loaded, StoreError>> + Send;

    /// Writes a batch atomically.
    fn commit(&self, batch: &Batch) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move { self.commit_all(&[batch]).await }
    }

    /// Writes several batches, in order, in one transaction: a writer that fell behind pays
    /// one fsync for all it has queued instead of one per batch.
    fn commit_all(&self, batches: &[&Batch])
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The objects of an environment as they were at `at`.
    fn objects_at(
        &self,
        environment: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<Vec<Node>, StoreError>> + Send;

    /// The links of an environment as they were at `at`.
    fn links_at(
        &self,
        environment: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<Vec<Link>, StoreError>> + Send;

    /// The cliques of an environment as they were at `at`.
    fn cliques_at(
        &self,
        environment: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<Vec<Clique>, StoreError>> + Send;

    /// Object versions that began or ended in `(from, to]`, by id then time.
    fn object_changes(
        &self,
        environment: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Future<Output = Result<Vec<ObjectVersion>, StoreError>> + Send;

    /// The versions of one object, newest first, at most `limit`.
    fn object_versions(
        &self,
        environment: &str,
        id: &ObjectId,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ObjectVersion>, StoreError>> + Send;

    /// Link versions that began or ended in `(from, to]`, by key then time.
    fn link_changes(
        &self,
        environment: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Future<Output = Result<Vec<Version<Link>>, StoreError>> + Send;

    /// Clique versions that began or ended in `(from, to]`, by focal point then time.
    fn clique_changes(
        &self,
        environment: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Future<Output = Result<Vec<Version<Clique>>, StoreError>> + Send;

    /// Since when history is complete: the last compaction's cutoff, else the first version
    /// written (`None`: nothing yet).
    fn history_start(
        &self,
    ) -> impl Future<Output = Result<Option<HistoryStart>, StoreError>> + Send;

    /// Removes the versions that ended before `before`, except those in force at a snapshot
    /// of their environment, and the messages written before it; history then starts at
    /// `before`.
    fn compact_history(
        &self,
        before: Timestamp,
    ) -> impl Future<Output = Result<Compacted, StoreError>> + Send;

    /// Adds or replaces a named snapshot.
    fn put_snapshot(
        &self,
        snapshot: &SnapshotRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Snapshots of an environment (all when `None`), by time.
    fn snapshots(
        &self,
        environment: Option<&str>,
    ) -> impl Future<Output = Result<Vec<SnapshotRecord>, StoreError>> + Send;

    fn delete_snapshot(
        &self,
        environment: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Messages matching a query, by id (the order they were written).
    fn query_messages(
        &self,
        query: &MessageQuery,
    ) -> impl Future<Output = Result<Vec<StoredMessage>, StoreError>> + Send;

    fn agents(&self) -> impl Future<Output = Result<Vec<AgentRecord>, StoreError>> + Send;

    fn user(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send;

    fn users(&self) -> impl Future<Output = Result<Vec<UserRecord>, StoreError>> + Send;

    fn put_user(&self, user: &UserRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes a user and every token issued to them; false if there was none.
    fn delete_user(&self, username: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores a token (a revocation is a put with `revoked` set) and drops expired ones.
    fn put_token(&self, token: &TokenRecord)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes every token of a user (their grants changed); returns how many.
    fn delete_tokens(&self, username: &str)
    -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn token(
        &self,
        token_hash: &str,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    fn put_scan(&self, scan: &ScanRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn scan(&self, id: &str)
    -> impl Future<Output = Result<Option<ScanRecord>, StoreError>> + Send;

    /// Scans by request time, optionally of one environment and in one status.
    fn scans(
        &self,
        environment: Option<&str>,
        status: Option<ScanStatus>,
    ) -> impl Future<Output = Result<Vec<ScanRecord>, StoreError>> + Send;

    fn put_schedule(
        &self,
        schedule: &ScheduleRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn schedules(&self) -> impl Future<Output = Result<Vec<ScheduleRecord>, StoreError>> + Send;

    fn delete_schedule(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn put_alert_rule(
        &self,
        rule: &crate::alerts::AlertRule,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn alert_rules(
        &self,
    ) -> impl Future<Output = Result<Vec<crate::alerts::AlertRule>, StoreError>> + Send;

    fn delete_alert_rule(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Adds or replaces a silence, and forgets those that ended long ago.
    fn put_silence(
        &self,
        silence: &crate::alerts::Silence,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Silences by end time.
    fn silences(
        &self,
    ) -> impl Future<Output = Result<Vec<crate::alerts::Silence>, StoreError>> + Send;

    fn delete_silence(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes an environment's configuration, schedules, alert rules and silences (its
    /// history stays).
    fn delete_environment(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode {
        what: what.to_owned(),
        source,
    })
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: what.to_owned(),
        source,
    })
}

/// u64 agent epochs and sequence numbers are stored in signed 64-bit columns bit for bit.
fn to_db(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

fn from_db(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_survive_signed_columns() {
        for value in [0, 1, u64::MAX, 1 << 63, 12_345_678_901_234_567_890] {
            assert_eq!(from_db(to_db(value)), value);
        }
    }
}
