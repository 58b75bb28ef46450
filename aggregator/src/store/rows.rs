//! The read side both backends share. The two schemas differ only in the message id column,
//! so the SQL and the decoding are written once; [`shared_methods!`] expands the same read
//! methods inside each backend's `Store` impl, where sqlx checks them against that backend.

use calipso_proto::{Object, Timestamp};

use super::{
    AgentRecord, AgentState, Message, MessageLevel, ObjectVersion, StoreError, Write, decode,
    from_db,
};
use crate::graph::Node;

/// `body, stale, first_seen, last_seen, valid_from, valid_to`
pub(super) type ObjectRow = (String, bool, i64, i64, i64, Option<i64>);
pub(super) const OBJECT_COLUMNS: &str = "body, stale, first_seen, last_seen, valid_from, valid_to";

/// `host, environment, agent_version, epoch, seq, state, last_seen`
pub(super) type AgentRow = (String, String, String, Option<i64>, i64, String, i64);
pub(super) const AGENTS: &str = "SELECT host, environment, agent_version, epoch, seq, state, last_seen FROM agents ORDER BY host";

/// `environment, level, source, related_object, text, at`
pub(super) type MessageRow = (Option<String>, String, String, Option<String>, String, i64);

/// Rows of a versioned table valid at `$2` in environment `$1`.
pub(super) fn valid_at(table: &str, columns: &str, order: &str) -> String {
    format!(
        "SELECT {columns} FROM {table} WHERE environment = $1 \
         AND valid_from <= $2 AND (valid_to IS NULL OR valid_to > $2) ORDER BY {order}"
    )
}

/// The current rows of a versioned table, with the environment first.
pub(super) fn current(table: &str, columns: &str) -> String {
    format!("SELECT environment, {columns} FROM {table} WHERE valid_to IS NULL")
}

/// Versions of a table in environment `$1` that began or ended in `($2, $3]`: two range reads,
/// one on each validity index (an `OR` of the two ranges reads the whole environment), the
/// second leaving out what the first found.
pub(super) fn changes_sql(table: &str, columns: &str, order: &str) -> String {
    format!(
        "SELECT * FROM (\
         SELECT {columns}, {order} FROM {table} WHERE environment = $1 \
         AND valid_from > $2 AND valid_from <= $3 \
         UNION ALL \
         SELECT {columns}, {order} FROM {table} WHERE environment = $1 \
         AND valid_to > $2 AND valid_to <= $3 AND valid_from <= $2\
         ) AS changed ORDER BY {order}, valid_from"
    )
}

/// `body, valid_from, valid_to` of a link or clique version.
pub(super) type BodyVersionRow = (String, i64, Option<i64>);

pub(super) fn body_version<T: serde::de::DeserializeOwned>(
    what: &str,
    row: BodyVersionRow,
) -> Result<super::Version<T>, StoreError> {
    let (body, valid_from, valid_to) = row;
    Ok(super::Version {
        value: decode(what, &body)?,
        valid_from: Timestamp::from_unix_micros(valid_from),
        valid_to: valid_to.map(Timestamp::from_unix_micros),
    })
}

pub(super) fn object_version(row: ObjectRow) -> Result<ObjectVersion, StoreError> {
    let (body, stale, first_seen, last_seen, valid_from, valid_to) = row;
    let object: Object = decode("object", &body)?;
    Ok(ObjectVersion {
        value: Node {
            object,
            stale,
            first_seen: Timestamp::from_unix_micros(first_seen),
            last_seen: Timestamp::from_unix_micros(last_seen),
        },
        valid_from: Timestamp::from_unix_micros(valid_from),
        valid_to: valid_to.map(Timestamp::from_unix_micros),
    })
}

pub(super) fn agent(row: AgentRow) -> AgentRecord {
    let (host, environment, agent_version, epoch, seq, state, last_seen) = row;
    AgentRecord {
        host,
        environment,
        agent_version,
        epoch: epoch.map(from_db),
        seq: from_db(seq),
        state: AgentState::parse(&state),
        last_seen: Timestamp::from_unix_micros(last_seen),
    }
}

pub(super) fn message(row: MessageRow) -> Message {
    let (environment, level, source, related_object, text, at) = row;
    Message {
        environment,
        level: MessageLevel::parse(&level),
        source,
        related_object: related_object.map(calipso_proto::ObjectId::from_raw),
        text,
        at: Timestamp::from_unix_micros(at),
    }
}

/// The reads of [`super::Store`], identical for both backends (`self.pool` is each backend's
/// pool).
macro_rules! shared_methods {
    () => {
        async fn load(&self) -> Result<$crate::store::Loaded, $crate::store::StoreError> {
            use $crate::store::{decode, rows};
            let mut loaded = $crate::store::Loaded::default();
            let environments: Vec<(String,)> =
                sqlx::query_as("SELECT config FROM environments ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?;
            for (config,) in environments {
                loaded.environments.push(decode("environment", &config)?);
            }
            let objects: Vec<(String, String, bool, i64, i64, i64, Option<i64>)> = sqlx::query_as(
                sqlx::AssertSqlSafe(rows::current("objects", rows::OBJECT_COLUMNS)),
            )
            .fetch_all(&self.pool)
            .await?;
            for (env, body, stale, first, last, from, to) in objects {
                let version = rows::object_version((body, stale, first, last, from, to))?;
                loaded.objects.push((env, version.value));
            }
            let links: Vec<(String, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(rows::current("links", "body")))
                    .fetch_all(&self.pool)
                    .await?;
            for (env, body) in links {
                loaded.links.push((env, decode("link", &body)?));
            }
            let cliques: Vec<(String, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(rows::current("cliques", "body")))
                    .fetch_all(&self.pool)
                    .await?;
            for (env, body) in cliques {
                loaded.cliques.push((env, decode("clique", &body)?));
            }
            loaded.agents = self.agents().await?;
            let seeded: Option<(String,)> =
                sqlx::query_as("SELECT value FROM store_meta WHERE key = 'clique_rules_seeded'")
                    .fetch_optional(&self.pool)
                    .await?;
            if seeded.is_some() {
                let types: Vec<(String,)> =
                    sqlx::query_as("SELECT body FROM clique_types ORDER BY name")
                        .fetch_all(&self.pool)
                        .await?;
                let constraints: Vec<(String,)> = sqlx::query_as(
                    "SELECT body FROM clique_constraints ORDER BY focal_point_type, environment",
                )
                .fetch_all(&self.pool)
                .await?;
                let types = types
                    .iter()
                    .map(|(body,)| decode("clique type", body))
                    .collect::<Result<Vec<_>, _>>()?;
                let constraints = constraints
                    .iter()
                    .map(|(body,)| decode("clique constraint", body))
                    .collect::<Result<Vec<_>, _>>()?;
                loaded.clique_rules = Some((types, constraints));
            }
            let last: (Option<i64>,) = sqlx::query_as(
                "SELECT MAX(t) FROM (SELECT MAX(valid_from) AS t FROM objects \
                 UNION ALL SELECT MAX(valid_from) FROM links \
                 UNION ALL SELECT MAX(valid_from) FROM cliques \
                 UNION ALL SELECT MAX(valid_to) FROM objects \
                 UNION ALL SELECT MAX(at) FROM messages) AS times",
            )
            .fetch_one(&self.pool)
            .await?;
            loaded.last_commit = calipso_proto::Timestamp::from_unix_micros(last.0.unwrap_or(0));
            Ok(loaded)
        }

        async fn objects_at(
            &self,
            environment: &str,
            at: calipso_proto::Timestamp,
        ) -> Result<Vec<$crate::graph::Node>, $crate::store::StoreError> {
            use $crate::store::rows;
            let sql = rows::valid_at("objects", rows::OBJECT_COLUMNS, "id");
            let found: Vec<rows::ObjectRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(environment)
                .bind(at.unix_micros())
                .fetch_all(&self.pool)
                .await?;
            found
                .into_iter()
                .map(|row| rows::object_version(row).map(|v| v.value))
                .collect()
        }

        async fn links_at(
            &self,
            environment: &str,
            at: calipso_proto::Timestamp,
        ) -> Result<Vec<calipso_proto::Link>, $crate::store::StoreError> {
            use $crate::store::{decode, rows};
            let sql = rows::valid_at("links", "body", "link_type, source_id, target_id");
            let found: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(environment)
                .bind(at.unix_micros())
                .fetch_all(&self.pool)
                .await?;
            found.iter().map(|(body,)| decode("link", body)).collect()
        }

        async fn cliques_at(
            &self,
            environment: &str,
            at: calipso_proto::Timestamp,
        ) -> Result<Vec<$crate::cliques::Clique>, $crate::store::StoreError> {
            use $crate::store::{decode, rows};
            let sql = rows::valid_at("cliques", "body", "focal_point");
            let found: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(environment)
                .bind(at.unix_micros())
                .fetch_all(&self.pool)
                .await?;
            found.iter().map(|(body,)| decode("clique", body)).collect()
        }

        async fn object_changes(
            &self,
            environment: &str,
            from: calipso_proto::Timestamp,
            to: calipso_proto::Timestamp,
        ) -> Result<Vec<$crate::store::ObjectVersion>, $crate::store::StoreError> {
            use $crate::store::rows;
            let sql = rows::changes_sql("objects", rows::OBJECT_COLUMNS, "id");
            let found: Vec<rows::ObjectRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(environment)
                .bind(from.unix_micros())
                .bind(to.unix_micros())
                .fetch_all(&self.pool)
                .await?;
            found.into_iter().map(rows::object_version).collect()
        }

        async fn object_versions(
            &self,
            environment: &str,
            id: &calipso_proto::ObjectId,
            limit: usize,
        ) -> Result<Vec<$crate::store::ObjectVersion>, $crate::store::StoreError> {
            use $crate::store::rows;
            let sql = format!(
                "SELECT {} FROM objects WHERE environment = $1 AND id = $2 \
                 ORDER BY valid_from DESC LIMIT $3",
                rows::OBJECT_COLUMNS
            );
            let found: Vec<rows::ObjectRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(environment)
                .bind(id.as_str())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
            found.into_iter().map(rows::object_version).collect()
        }

        async fn link_changes(
            &self,
            environment: &str,
            from: calipso_proto::Timestamp,
            to: calipso_proto::Timestamp,
        ) -> Result<Vec<$crate::store::Version<calipso_proto::Link>>, $crate::store::StoreError> {
            use $crate::store::rows;
            let sql = rows::changes_sql(
                "links",
                "body, valid_from, valid_to",
                "link_type, source_id, target_id",
            );
            let found: Vec<rows::BodyVersionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(environment)
                .bind(from.unix_micros())
                .bind(to.unix_micros())
                .fetch_all(&self.pool)
                .await?;
            found
                .into_iter()
                .map(|row| rows::body_version("link", row))
                .collect()
        }

        async fn clique_changes(
            &self,
            environment: &str,
            from: calipso_proto::Timestamp,
            to: calipso_proto::Timestamp,
        ) -> Result<Vec<$crate::store::Version<$crate::cliques::Clique>>, $crate::store::StoreError>
        {
            use $crate::store::rows;
            let sql = rows::changes_sql("cliques", "body, valid_from, valid_to", "focal_point");
            let found: Vec<rows::BodyVersionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(environment)
                .bind(from.unix_micros())
                .bind(to.unix_micros())
                .fetch_all(&self.pool)
                .await?;
            found
                .into_iter()
                .map(|row| rows::body_version("clique", row))
                .collect()
        }

        async fn agents(
            &self,
        ) -> Result<Vec<$crate::store::AgentRecord>, $crate::store::StoreError> {
            use $crate::store::rows;
            let found: Vec<rows::AgentRow> =
                sqlx::query_as(rows::AGENTS).fetch_all(&self.pool).await?;
            Ok(found.into_iter().map(rows::agent).collect())
        }
    };
}

/// Writes a prepared batch's environments, agents and messages (few rows) inside transaction
/// `$tx`, the same way on both backends.
macro_rules! write_small_tables {
    ($tx:ident, $p:ident) => {
        for (name, config) in &$p.environments {
            sqlx::query(
                "INSERT INTO environments (name, config) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET config = excluded.config",
            )
            .bind(name)
            .bind(config)
            .execute(&mut **$tx)
            .await?;
        }
        for chunk in $p.agents.chunks(rows::ROWS_PER_STATEMENT) {
            let mut upsert = sqlx::QueryBuilder::new(rows::INSERT_AGENTS);
            upsert.push_values(chunk, |mut row, agent| {
                row.push_bind(&agent.0)
                    .push_bind(&agent.1)
                    .push_bind(&agent.2)
                    .push_bind(agent.3)
                    .push_bind(agent.4)
                    .push_bind(&agent.5)
                    .push_bind(agent.6);
            });
            upsert.push(rows::ON_AGENT_CONFLICT);
            upsert.build().execute(&mut **$tx).await?;
        }
        if let Some((types, constraints)) = &$p.clique_rules {
            sqlx::query("DELETE FROM clique_types")
                .execute(&mut **$tx)
                .await?;
            sqlx::query("DELETE FROM clique_constraints")
                .execute(&mut **$tx)
                .await?;
            for (name, body) in types {
                sqlx::query("INSERT INTO clique_types (name, body) VALUES ($1, $2)")
                    .bind(name)
                    .bind(body)
                    .execute(&mut **$tx)
                    .await?;
            }
            for (focal_point_type, environment, body) in constraints {
                sqlx::query(
                    "INSERT INTO clique_constraints (focal_point_type, environment, body) \
                     VALUES ($1, $2, $3)",
                )
                .bind(focal_point_type)
                .bind(environment)
                .bind(body)
                .execute(&mut **$tx)
                .await?;
            }
            sqlx::query(rows::MARK_SEEDED).execute(&mut **$tx).await?;
        }
        for chunk in $p.messages.chunks(rows::ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::new(rows::INSERT_MESSAGES);
            insert.push_values(chunk, |mut row, message| {
                row.push_bind(&message.0)
                    .push_bind(&message.1)
                    .push_bind(&message.2)
                    .push_bind(&message.3)
                    .push_bind(&message.4)
                    .push_bind(message.5);
            });
            insert.build().execute(&mut **$tx).await?;
        }
    };
}

pub(super) use {shared_methods, write_small_tables};

/// A batch laid out as columns, ready for either backend's writes. Within a table each key
/// appears once (the last version wins), so no two versions share a start time.
#[derive(Debug, Default)]
pub(super) struct Prepared<'b> {
    pub at: i64,
    pub environments: Vec<(String, String)>,
    pub objects: Versioned<2>,
    /// The new version of each inserted object, in `objects.inserted` order: each backend
    /// encodes its columns as it writes them (PostgreSQL while the server takes the rows
    /// before).
    pub object_rows: Vec<&'b Node>,
    pub links: Versioned<4>,
    pub link_rows: LinkColumns,
    pub cliques: Versioned<2>,
    pub clique_bodies: Vec<String>,
    pub agents: Vec<AgentRow>,
    pub messages: Vec<MessageRow>,
    /// (name, body) of each clique type; (focal point type, environment, body) of each
    /// constraint.
    pub clique_rules: Option<CliqueRuleRows>,
}

pub(super) type CliqueRuleRows = (Vec<(String, String)>, Vec<(String, String, String)>);

/// Keys written, which of them close a current version and which get a new one (`closed`
/// and `inserted` index into `keys`).
#[derive(Debug)]
pub(super) struct Versioned<const N: usize> {
    /// One column per key part.
    pub keys: [Vec<String>; N],
    pub closed: Vec<usize>,
    pub inserted: Vec<usize>,
}

impl<const N: usize> Default for Versioned<N> {
    fn default() -> Self {
        Versioned {
            keys: std::array::from_fn(|_| Vec::new()),
            closed: Vec::new(),
            inserted: Vec::new(),
        }
    }
}

impl<const N: usize> Versioned<N> {
    pub fn len(&self) -> usize {
        self.keys[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, key: [String; N], inserted: bool, closes: bool) {
        let index = self.len();
        for (column, value) in self.keys.iter_mut().zip(key) {
            column.push(value);
        }
        if closes {
            self.closed.push(index);
        }
        if inserted {
            self.inserted.push(index);
        }
    }

    /// Key part `part` of the versions to close.
    pub fn closed_column(&self, part: usize) -> Vec<&str> {
        self.closed
            .iter()
            .map(|&i| self.keys[part][i].as_str())
            .collect()
    }
}

#[derive(Debug, Default)]
pub(super) struct LinkColumns {
    pub state: Vec<String>,
    pub body: Vec<String>,
}

/// Each key's last write in `writes` (in the order of those last writes), with whether the
/// key's first write found a current version to close: what a batch replaces is the version
/// current before it, whatever it did to the key in between.
fn per_key<K: std::hash::Hash + Eq, V>(
    writes: &[Write<K, V>],
) -> impl Iterator<Item = (&Write<K, V>, bool)> {
    let mut seen: rustc_hash::FxHashMap<(&str, &K), (bool, usize)> =
        rustc_hash::FxHashMap::default();
    seen.reserve(writes.len());
    for (index, write) in writes.iter().enumerate() {
        seen.entry((write.environment.as_str(), &write.key))
            .and_modify(|(_, last)| *last = index)
            .or_insert((write.replaces, index));
    }
    writes.iter().enumerate().filter_map(move |(index, write)| {
        let &(closes, last) = seen.get(&(write.environment.as_str(), &write.key))?;
        (last == index).then_some((write, closes))
    })
}

pub(super) fn prepare(batch: &super::Batch) -> Result<Prepared<'_>, StoreError> {
    use super::{encode, to_db};
    let mut prepared = Prepared {
        at: batch.at.unix_micros(),
        ..Prepared::default()
    };
    for config in &batch.environments {
        prepared
            .environments
            .push((config.name.clone(), encode("environment", config)?));
    }
    for (write, closes) in per_key(&batch.objects) {
        prepared.objects.push(
            [write.environment.clone(), write.key.as_str().to_owned()],
            write.version.is_some(),
            closes,
        );
        if let Some(node) = &write.version {
            prepared.object_rows.push(node);
        }
    }
    for (write, closes) in per_key(&batch.links) {
        let key = &write.key;
        prepared.links.push(
            [
                write.environment.clone(),
                key.link_type.to_string(),
                key.source.to_string(),
                key.target.to_string(),
            ],
            write.version.is_some(),
            closes,
        );
        if let Some(link) = &write.version {
            prepared
                .link_rows
                .state
                .push(link.state.as_str().to_owned());
            prepared.link_rows.body.push(encode("link", link)?);
        }
    }
    for (write, closes) in per_key(&batch.cliques) {
        prepared.cliques.push(
            [write.environment.clone(), write.key.as_str().to_owned()],
            write.version.is_some(),
            closes,
        );
        if let Some(clique) = &write.version {
            prepared.clique_bodies.push(encode("clique", clique)?);
        }
    }
    if let Some((types, constraints)) = &batch.clique_rules {
        let types = types
            .iter()
            .map(|t| Ok((t.name.clone(), encode("clique type", t)?)))
            .collect::<Result<_, StoreError>>()?;
        let constraints = constraints
            .iter()
            .map(|c| {
                Ok((
                    c.focal_point_type.to_string(),
                    c.environment.clone().unwrap_or_default(),
                    encode("clique constraint", c)?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        prepared.clique_rules = Some((types, constraints));
    }
    // One row per host, its last: an upsert statement may not touch a row twice.
    let last_of_host: rustc_hash::FxHashMap<&str, usize> = batch
        .agents
        .iter()
        .enumerate()
        .map(|(index, agent)| (agent.host.as_str(), index))
        .collect();
    for (_, agent) in batch
        .agents
        .iter()
        .enumerate()
        .filter(|(index, agent)| last_of_host.get(agent.host.as_str()) == Some(index))
    {
        prepared.agents.push((
            agent.host.clone(),
            agent.environment.clone(),
            agent.agent_version.clone(),
            agent.epoch.map(to_db),
            to_db(agent.seq),
            agent.state.as_str().to_owned(),
            agent.last_seen.unix_micros(),
        ));
    }
    for message in &batch.messages {
        prepared.messages.push((
            message.environment.clone(),
            message.level.as_str().to_owned(),
            message.source.clone(),
            message.related_object.as_ref().map(ToString::to_string),
            message.text.clone(),
            message.at.unix_micros(),
        ));
    }
    Ok(prepared)
}

/// Rows of the small tables (agents, messages) one statement writes: each statement is a
/// round trip to the database (for SQLite, to its connection's thread and back through the
/// runtime), and a status churn writes three messages and an agent row per change — one
/// statement per row made the writer wait on the runtime more than on the database.
pub(super) const ROWS_PER_STATEMENT: usize = 500;

/// Followed by `VALUES …` and [`ON_AGENT_CONFLICT`]; a statement names each host once
/// ([`prepare`] keeps each host's last row).
pub(super) const INSERT_AGENTS: &str =
    "INSERT INTO agents (host, environment, agent_version, epoch, seq, state, last_seen) ";

pub(super) const ON_AGENT_CONFLICT: &str = " ON CONFLICT (host) DO UPDATE SET \
     environment = excluded.environment, agent_version = excluded.agent_version, \
     epoch = excluded.epoch, seq = excluded.seq, state = excluded.state, \
     last_seen = excluded.last_seen";

/// Followed by `VALUES …`.
pub(super) const INSERT_MESSAGES: &str =
    "INSERT INTO messages (environment, level, source, related_object, text, at) ";

pub(super) const MARK_SEEDED: &str = "INSERT INTO store_meta (key, value) \
     VALUES ('clique_rules_seeded', '1') ON CONFLICT (key) DO NOTHING";
