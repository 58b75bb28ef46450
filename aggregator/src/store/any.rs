//! The store a URL names, chosen at run time: the API and the committer hold one type whichever
//! backend an operator configured.

use calipso_proto::{Link, Timestamp};

use super::{
    AgentRecord, Batch, Compacted, HistoryStart, Loaded, MessageQuery, ObjectVersion,
    PostgresStore, ScanRecord, ScanStatus, ScheduleRecord, SnapshotRecord, SqliteStore, Store,
    StoreError, StoredMessage, TokenRecord, UserRecord, Version,
};
use crate::cliques::Clique;
use crate::graph::Node;

#[derive(Debug, Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl AnyStore {
    /// Opens `sqlite:PATH` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(AnyStore::Sqlite(SqliteStore::connect(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(AnyStore::Postgres(PostgresStore::connect(url).await?))
        } else {
            Err(StoreError::UnknownScheme(url.to_owned()))
        }
    }
}

impl From<SqliteStore> for AnyStore {
    fn from(store: SqliteStore) -> Self {
        AnyStore::Sqlite(store)
    }
}

impl From<PostgresStore> for AnyStore {
    fn from(store: PostgresStore) -> Self {
        AnyStore::Postgres(store)
    }
}

/// Forwards each listed method to the backend.
macro_rules! delegate {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $out:ty;)*) => {
        $(
            async fn $name(&self $(, $arg: $ty)*) -> Result<$out, StoreError> {
                match self {
                    AnyStore::Sqlite(store) => store.$name($($arg),*).await,
                    AnyStore::Postgres(store) => store.$name($($arg),*).await,
                }
            }
        )*
    };
}

impl Store for AnyStore {
    delegate! {
        fn load(&self) -> Loaded;
        fn commit_all(&self, batches: &[&Batch]) -> ();
        fn objects_at(&self, environment: &str, at: Timestamp) -> Vec<Node>;
        fn links_at(&self, environment: &str, at: Timestamp) -> Vec<Link>;
        fn cliques_at(&self, environment: &str, at: Timestamp) -> Vec<Clique>;
        fn object_changes(&self, environment: &str, from: Timestamp, to: Timestamp) -> Vec<ObjectVersion>;
        fn object_versions(&self, environment: &str, id: &calipso_proto::ObjectId, limit: usize) -> Vec<ObjectVersion>;
        fn link_changes(&self, environment: &str, from: Timestamp, to: Timestamp) -> Vec<Version<Link>>;
        fn clique_changes(&self, environment: &str, from: Timestamp, to: Timestamp) -> Vec<Version<Clique>>;
        fn history_start(&self) -> Option<HistoryStart>;
        fn compact_history(&self, before: Timestamp) -> Compacted;
        fn put_snapshot(&self, snapshot: &SnapshotRecord) -> ();
        fn snapshots(&self, environment: Option<&str>) -> Vec<SnapshotRecord>;
        fn delete_snapshot(&self, environment: &str, name: &str) -> bool;
        fn query_messages(&self, query: &MessageQuery) -> Vec<StoredMessage>;
        fn agents(&self) -> Vec<AgentRecord>;
        fn user(&self, username: &str) -> Option<UserRecord>;
        fn users(&self) -> Vec<UserRecord>;
        fn put_user(&self, user: &UserRecord) -> ();
        fn delete_user(&self, username: &str) -> bool;
        fn put_token(&self, token: &TokenRecord) -> ();
        fn delete_tokens(&self, username: &str) -> u64;
        fn token(&self, token_hash: &str) -> Option<TokenRecord>;
        fn put_scan(&self, scan: &ScanRecord) -> ();
        fn scan(&self, id: &str) -> Option<ScanRecord>;
        fn scans(&self, environment: Option<&str>, status: Option<ScanStatus>) -> Vec<ScanRecord>;
        fn put_schedule(&self, schedule: &ScheduleRecord) -> ();
        fn schedules(&self) -> Vec<ScheduleRecord>;
        fn delete_schedule(&self, id: &str) -> bool;
        fn put_alert_rule(&self, rule: &crate::alerts::AlertRule) -> ();
        fn alert_rules(&self) -> Vec<crate::alerts::AlertRule>;
        fn delete_alert_rule(&self, id: &str) -> bool;
        fn put_silence(&self, silence: &crate::alerts::Silence) -> ();
        fn silences(&self) -> Vec<crate::alerts::Silence>;
        fn delete_silence(&self, id: &str) -> bool;
        fn delete_environment(&self, name: &str) -> bool;
    }
}
