//! What the API keeps besides the model: users, tokens, scans, schedules, and the message
//! query. Each record is one JSON body beside the few columns queries select on; the SQL is
//! written once ([`record_methods!`]) and expanded in both backends.

use std::collections::BTreeSet;

use calipso_proto::{ObjectId, Timestamp};
use serde::{Deserialize, Serialize};

use super::MessageLevel;

/// What a user may do: everything (`admin`), or per environment read (`view-env`) or read and
/// write (`edit-env`), the original's roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub admin: bool,
    #[serde(default, rename = "view-env")]
    pub view_env: BTreeSet<String>,
    #[serde(default, rename = "edit-env")]
    pub edit_env: BTreeSet<String>,
}

impl Grants {
    pub fn can_view(&self, environment: &str) -> bool {
        self.admin || self.view_env.contains(environment) || self.can_edit(environment)
    }

    pub fn can_edit(&self, environment: &str) -> bool {
        self.admin || self.edit_env.contains(environment)
    }

    /// Adds another source's grants (a directory's groups to a local record).
    pub fn merge(&mut self, other: &Grants) {
        self.admin |= other.admin;
        self.view_env.extend(other.view_env.iter().cloned());
        self.edit_env.extend(other.edit_env.iter().cloned());
    }
}

/// An account. LDAP users have no password hash: the directory checks their password, and a
/// record only when an operator granted them something locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub username: String,
    /// argon2id in PHC string format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    pub grants: Grants,
    pub created_at: Timestamp,
}

/// How a token's holder proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Password,
    Ldap,
}

/// An issued token. The token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub token_hash: String,
    pub username: String,
    pub method: AuthMethod,
    /// The grants at issue time (for LDAP users, their groups then).
    pub grants: Grants,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    #[serde(default)]
    pub revoked: bool,
}

/// What a scan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanKind {
    /// Every agent in scope sends a fresh snapshot (the original's full scan).
    Full,
    /// As `full`: the agents' snapshots are the inventory; links and cliques follow from it.
    InventoryOnly,
    /// Links (and the cliques over them) rebuilt from the stored inventory.
    LinksOnly,
    /// Cliques rebuilt from the stored links.
    CliquesOnly,
}

impl ScanKind {
    pub const ALL: [ScanKind; 4] = [
        ScanKind::Full,
        ScanKind::InventoryOnly,
        ScanKind::LinksOnly,
        ScanKind::CliquesOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScanKind::Full => "full",
            ScanKind::InventoryOnly => "inventory_only",
            ScanKind::LinksOnly => "links_only",
            ScanKind::CliquesOnly => "cliques_only",
        }
    }
}

/// Where a scan is, with the original's status names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanStatus {
    Pending,
    Running,
    Completed,
    CompletedWithErrors,
    Failed,
}

impl ScanStatus {
    pub const ALL: [ScanStatus; 5] = [
        ScanStatus::Pending,
        ScanStatus::Running,
        ScanStatus::Completed,
        ScanStatus::CompletedWithErrors,
        ScanStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Pending => "pending",
            ScanStatus::Running => "running",
            ScanStatus::Completed => "completed",
            ScanStatus::CompletedWithErrors => "completed_with_errors",
            ScanStatus::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, ScanStatus::Pending | ScanStatus::Running)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    pub id: String,
    pub environment: String,
    /// One host, or every host of the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub kind: ScanKind,
    pub status: ScanStatus,
    pub requested_by: String,
    pub requested_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// What happened, for operators (hosts asked, changes found, why it failed).
    #[serde(default)]
    pub detail: String,
    /// The schedule that submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub id: String,
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub kind: ScanKind,
    pub interval_seconds: u64,
    pub next_run: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<String>,
    pub created_by: String,
}

/// A named point in an environment's history, which history retention keeps answerable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub environment: String,
    pub name: String,
    pub at: Timestamp,
    #[serde(default)]
    pub note: String,
    pub created_by: String,
    pub created_at: Timestamp,
}

/// Which messages to read, oldest first; `after` is the id of the last one a page returned.
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    /// `Some(list)`: only these environments (what the reader may see); `None`: all.
    pub environments: Option<Vec<String>>,
    pub level: Option<MessageLevel>,
    pub source: Option<String>,
    pub related_object: Option<ObjectId>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Past this id: above it oldest first, below it newest first.
    pub after: Option<i64>,
    pub newest_first: bool,
    pub limit: u32,
}

/// A stored message with its id (the pagination cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: i64,
    pub message: super::Message,
}

/// The record methods of [`super::Store`], identical for both backends (`self.pool` is each
/// backend's pool).
macro_rules! record_methods {
    () => {
        async fn user(
            &self,
            username: &str,
        ) -> Result<Option<$crate::store::UserRecord>, $crate::store::StoreError> {
            let found: Option<(String,)> =
                sqlx::query_as("SELECT body FROM users WHERE username = $1")
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await?;
            found
                .map(|(body,)| $crate::store::decode("user", &body))
                .transpose()
        }

        async fn users(
            &self,
        ) -> Result<Vec<$crate::store::UserRecord>, $crate::store::StoreError> {
            let found: Vec<(String,)> = sqlx::query_as("SELECT body FROM users ORDER BY username")
                .fetch_all(&self.pool)
                .await?;
            found
                .iter()
                .map(|(body,)| $crate::store::decode("user", body))
                .collect()
        }

        async fn put_user(
            &self,
            user: &$crate::store::UserRecord,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(
                "INSERT INTO users (username, body) VALUES ($1, $2) \
                 ON CONFLICT (username) DO UPDATE SET body = excluded.body",
            )
            .bind(&user.username)
            .bind($crate::store::encode("user", user)?)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn delete_user(&self, username: &str) -> Result<bool, $crate::store::StoreError> {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM tokens WHERE username = $1")
                .bind(username)
                .execute(&mut *tx)
                .await?;
            let deleted = sqlx::query("DELETE FROM users WHERE username = $1")
                .bind(username)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(deleted > 0)
        }

        async fn put_token(
            &self,
            token: &$crate::store::TokenRecord,
        ) -> Result<(), $crate::store::StoreError> {
            let mut tx = self.pool.begin().await?;
            // Expired tokens are of no use to anyone; each issue sweeps them.
            sqlx::query("DELETE FROM tokens WHERE expires_at < $1")
                .bind(token.issued_at.unix_micros())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO tokens (token_hash, username, expires_at, body) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (token_hash) DO UPDATE SET body = excluded.body",
            )
            .bind(&token.token_hash)
            .bind(&token.username)
            .bind(token.expires_at.unix_micros())
            .bind($crate::store::encode("token", token)?)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn delete_tokens(&self, username: &str) -> Result<u64, $crate::store::StoreError> {
            Ok(sqlx::query("DELETE FROM tokens WHERE username = $1")
                .bind(username)
                .execute(&self.pool)
                .await?
                .rows_affected())
        }

        async fn token(
            &self,
            token_hash: &str,
        ) -> Result<Option<$crate::store::TokenRecord>, $crate::store::StoreError> {
            let found: Option<(String,)> =
                sqlx::query_as("SELECT body FROM tokens WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?;
            found
                .map(|(body,)| $crate::store::decode("token", &body))
                .transpose()
        }

        async fn put_scan(
            &self,
            scan: &$crate::store::ScanRecord,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(
                "INSERT INTO scans (id, environment, requested_at, status, body) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
                 status = excluded.status, body = excluded.body",
            )
            .bind(&scan.id)
            .bind(&scan.environment)
            .bind(scan.requested_at.unix_micros())
            .bind(scan.status.as_str())
            .bind($crate::store::encode("scan", scan)?)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn scan(
            &self,
            id: &str,
        ) -> Result<Option<$crate::store::ScanRecord>, $crate::store::StoreError> {
            let found: Option<(String,)> = sqlx::query_as("SELECT body FROM scans WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            found
                .map(|(body,)| $crate::store::decode("scan", &body))
                .transpose()
        }

        async fn scans(
            &self,
            environment: Option<&str>,
            status: Option<$crate::store::ScanStatus>,
        ) -> Result<Vec<$crate::store::ScanRecord>, $crate::store::StoreError> {
            let mut query = sqlx::QueryBuilder::new("SELECT body FROM scans WHERE TRUE");
            if let Some(environment) = environment {
                query.push(" AND environment = ").push_bind(environment);
            }
            if let Some(status) = status {
                query.push(" AND status = ").push_bind(status.as_str());
            }
            query.push(" ORDER BY requested_at, id");
            let found: Vec<(String,)> = query.build_query_as().fetch_all(&self.pool).await?;
            found
                .iter()
                .map(|(body,)| $crate::store::decode("scan", body))
                .collect()
        }

        async fn put_schedule(
            &self,
            schedule: &$crate::store::ScheduleRecord,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(
                "INSERT INTO scheduled_scans (id, environment, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            )
            .bind(&schedule.id)
            .bind(&schedule.environment)
            .bind($crate::store::encode("scheduled scan", schedule)?)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn schedules(
            &self,
        ) -> Result<Vec<$crate::store::ScheduleRecord>, $crate::store::StoreError> {
            let found: Vec<(String, String)> =
                sqlx::query_as("SELECT id, body FROM scheduled_scans ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
            // A row this version cannot read (written before times were bounded) is left out
            // with a warning, not allowed to fail every schedule; an admin can delete it.
            Ok(found
                .iter()
                .filter_map(|(id, body)| {
                    $crate::store::decode("scheduled scan", body)
                        .map_err(|error| {
                            tracing::warn!(id, %error, "unreadable scheduled scan left out")
                        })
                        .ok()
                })
                .collect())
        }

        async fn delete_schedule(&self, id: &str) -> Result<bool, $crate::store::StoreError> {
            let deleted = sqlx::query("DELETE FROM scheduled_scans WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected();
            Ok(deleted > 0)
        }

        async fn put_snapshot(
            &self,
            snapshot: &$crate::store::SnapshotRecord,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(
                "INSERT INTO snapshots (environment, name, at, body) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (environment, name) DO UPDATE SET at = excluded.at, body = excluded.body",
            )
            .bind(&snapshot.environment)
            .bind(&snapshot.name)
            .bind(snapshot.at.unix_micros())
            .bind($crate::store::encode("snapshot", snapshot)?)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn snapshots(
            &self,
            environment: Option<&str>,
        ) -> Result<Vec<$crate::store::SnapshotRecord>, $crate::store::StoreError> {
            let mut query = sqlx::QueryBuilder::new("SELECT body FROM snapshots WHERE TRUE");
            if let Some(environment) = environment {
                query.push(" AND environment = ").push_bind(environment);
            }
            query.push(" ORDER BY at, name");
            let found: Vec<(String,)> = query.build_query_as().fetch_all(&self.pool).await?;
            found
                .iter()
                .map(|(body,)| $crate::store::decode("snapshot", body))
                .collect()
        }

        async fn delete_snapshot(
            &self,
            environment: &str,
            name: &str,
        ) -> Result<bool, $crate::store::StoreError> {
            let deleted = sqlx::query("DELETE FROM snapshots WHERE environment = $1 AND name = $2")
                .bind(environment)
                .bind(name)
                .execute(&self.pool)
                .await?
                .rows_affected();
            Ok(deleted > 0)
        }

        async fn history_start(
            &self,
        ) -> Result<Option<$crate::store::HistoryStart>, $crate::store::StoreError> {
            let kept: Option<(String,)> =
                sqlx::query_as("SELECT value FROM store_meta WHERE key = 'history_start'")
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(start) = kept.and_then(|(v,)| v.parse::<i64>().ok()) {
                return Ok(Some($crate::store::HistoryStart {
                    at: calipso_proto::Timestamp::from_unix_micros(start),
                    compacted: true,
                }));
            }
            // The first version's time never changes once there is one (only a compaction moves
            // the start, and it writes `history_start`): found by a scan once, then kept.
            let kept: Option<(String,)> =
                sqlx::query_as("SELECT value FROM store_meta WHERE key = 'first_version'")
                    .fetch_optional(&self.pool)
                    .await?;
            let first = match kept.and_then(|(v,)| v.parse::<i64>().ok()) {
                Some(first) => Some(first),
                None => {
                    let (first,): (Option<i64>,) =
                        sqlx::query_as("SELECT MIN(valid_from) FROM objects")
                            .fetch_one(&self.pool)
                            .await?;
                    if let Some(first) = first {
                        sqlx::query(
                            "INSERT INTO store_meta (key, value) VALUES ('first_version', $1) \
                             ON CONFLICT (key) DO NOTHING",
                        )
                        .bind(first.to_string())
                        .execute(&self.pool)
                        .await?;
                    }
                    first
                }
            };
            Ok(first.map(|at| $crate::store::HistoryStart {
                at: calipso_proto::Timestamp::from_unix_micros(at),
                compacted: false,
            }))
        }

        async fn compact_history(
            &self,
            before: calipso_proto::Timestamp,
        ) -> Result<$crate::store::Compacted, $crate::store::StoreError> {
            let cutoff = before.unix_micros();
            let mut tx = self.pool.begin().await?;
            let mut removed = [0u64; 3];
            for (count, table) in removed.iter_mut().zip(["objects", "links", "cliques"]) {
                let sql = format!(
                    "DELETE FROM {table} WHERE valid_to IS NOT NULL AND valid_to < $1 \
                     AND NOT EXISTS (SELECT 1 FROM snapshots s \
                     WHERE s.environment = {table}.environment \
                     AND s.at >= {table}.valid_from AND s.at < {table}.valid_to)"
                );
                *count = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(cutoff)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            let messages = sqlx::query("DELETE FROM messages WHERE at < $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(
                "INSERT INTO store_meta (key, value) VALUES ('history_start', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(cutoff.to_string())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            let [objects, links, cliques] = removed;
            Ok($crate::store::Compacted {
                objects,
                links,
                cliques,
                messages,
            })
        }

        async fn put_alert_rule(
            &self,
            rule: &$crate::alerts::AlertRule,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(
                "INSERT INTO alert_rules (id, environment, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            )
            .bind(&rule.id)
            .bind(&rule.environment)
            .bind($crate::store::encode("alert rule", rule)?)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn alert_rules(
            &self,
        ) -> Result<Vec<$crate::alerts::AlertRule>, $crate::store::StoreError> {
            let found: Vec<(String,)> =
                sqlx::query_as("SELECT body FROM alert_rules ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
            found
                .iter()
                .map(|(body,)| $crate::store::decode("alert rule", body))
                .collect()
        }

        async fn delete_alert_rule(&self, id: &str) -> Result<bool, $crate::store::StoreError> {
            let deleted = sqlx::query("DELETE FROM alert_rules WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected();
            Ok(deleted > 0)
        }

        async fn put_silence(
            &self,
            silence: &$crate::alerts::Silence,
        ) -> Result<(), $crate::store::StoreError> {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO silences (id, environment, ends_at, body) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET ends_at = excluded.ends_at, body = excluded.body",
            )
            .bind(&silence.id)
            .bind(&silence.environment)
            .bind(silence.ends_at.unix_micros())
            .bind($crate::store::encode("silence", silence)?)
            .execute(&mut *tx)
            .await?;
            // Silences that ended long ago say nothing any more.
            sqlx::query("DELETE FROM silences WHERE ends_at < $1")
                .bind($crate::alerts::forgotten_before(silence.created_at).unix_micros())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn silences(&self) -> Result<Vec<$crate::alerts::Silence>, $crate::store::StoreError> {
            let found: Vec<(String,)> =
                sqlx::query_as("SELECT body FROM silences ORDER BY ends_at, id")
                    .fetch_all(&self.pool)
                    .await?;
            found
                .iter()
                .map(|(body,)| $crate::store::decode("silence", body))
                .collect()
        }

        async fn delete_silence(&self, id: &str) -> Result<bool, $crate::store::StoreError> {
            let deleted = sqlx::query("DELETE FROM silences WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected();
            Ok(deleted > 0)
        }

        async fn delete_environment(&self, name: &str) -> Result<bool, $crate::store::StoreError> {
            let mut tx = self.pool.begin().await?;
            for delete in [
                "DELETE FROM scheduled_scans WHERE environment = $1",
                "DELETE FROM alert_rules WHERE environment = $1",
                "DELETE FROM silences WHERE environment = $1",
            ] {
                sqlx::query(delete).bind(name).execute(&mut *tx).await?;
            }
            let deleted = sqlx::query("DELETE FROM environments WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(deleted > 0)
        }

        async fn query_messages(
            &self,
            query: &$crate::store::MessageQuery,
        ) -> Result<Vec<$crate::store::StoredMessage>, $crate::store::StoreError> {
            use $crate::store::rows;
            let mut sql = sqlx::QueryBuilder::new(
                "SELECT id, environment, level, source, related_object, text, at FROM messages \
                 WHERE TRUE",
            );
            if let Some(environments) = &query.environments {
                if environments.is_empty() {
                    return Ok(Vec::new());
                }
                sql.push(" AND environment IN (");
                let mut list = sql.separated(", ");
                for environment in environments {
                    list.push_bind(environment.clone());
                }
                sql.push(")");
            }
            if let Some(level) = query.level {
                sql.push(" AND level = ").push_bind(level.as_str());
            }
            if let Some(source) = &query.source {
                sql.push(" AND source = ").push_bind(source.clone());
            }
            if let Some(object) = &query.related_object {
                sql.push(" AND related_object = ").push_bind(object.to_string());
            }
            if let Some(from) = query.from {
                sql.push(" AND at >= ").push_bind(from.unix_micros());
            }
            if let Some(to) = query.to {
                sql.push(" AND at < ").push_bind(to.unix_micros());
            }
            let (past, order) = if query.newest_first {
                (" AND id < ", " ORDER BY id DESC LIMIT ")
            } else {
                (" AND id > ", " ORDER BY id LIMIT ")
            };
            if let Some(after) = query.after {
                sql.push(past).push_bind(after);
            }
            sql.push(order).push_bind(i64::from(query.limit));
            let found: Vec<(i64, Option<String>, String, String, Option<String>, String, i64)> =
                sql.build_query_as().fetch_all(&self.pool).await?;
            Ok(found
                .into_iter()
                .map(|(id, environment, level, source, related, text, at)| {
                    $crate::store::StoredMessage {
                        id,
                        message: rows::message((environment, level, source, related, text, at)),
                    }
                })
                .collect())
        }
    };
}

pub(super) use record_methods;
