//! History for operators: named snapshots (points in time that retention keeps answerable),
//! the difference between two points (objects attribute by attribute, links, clique
//! membership) for pre/post maintenance reviews, and retention itself (versions older than
//! `[store] history_retention` compacted away, except what snapshots pin).

use std::collections::BTreeMap;
use std::time::Duration;

use calipso_proto::{Link, ObjectId, ObjectType, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::inventory::environment_of;
use super::{Principal, Service, ServiceError};
use crate::cliques::Clique;
use crate::graph::Node;
use crate::links::LinkKey;
use crate::store::{AnyStore, SnapshotRecord, Store, Version};

/// A snapshot as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SnapshotView {
    pub environment: String,
    pub name: String,
    /// The point in time it marks (RFC 3339).
    pub at: String,
    pub note: String,
    pub created_by: String,
    pub created_at: String,
}

impl From<SnapshotRecord> for SnapshotView {
    fn from(record: SnapshotRecord) -> Self {
        SnapshotView {
            environment: record.environment,
            name: record.name,
            at: record.at.to_string(),
            note: record.note,
            created_by: record.created_by,
            created_at: record.created_at.to_string(),
        }
    }
}

/// A request for a new snapshot.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSnapshot {
    pub env_name: String,
    /// Letters, digits, `.`, `_` and `-`, at most 128.
    pub name: String,
    #[serde(default)]
    pub note: String,
    /// RFC 3339; now when absent. A past time must lie within history.
    #[serde(default)]
    pub at: Option<String>,
}

/// Which changes a diff reports.
#[derive(Debug, Clone, Default)]
pub struct DiffQuery {
    pub environment: String,
    /// A snapshot's name or an RFC 3339 time.
    pub from: String,
    /// A snapshot's name, an RFC 3339 time, or `now` (the default).
    pub to: Option<String>,
    pub host: Option<String>,
    pub object_type: Option<ObjectType>,
}

/// One end of a diff.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DiffPoint {
    /// What was asked: a snapshot's name, a time, or `now`.
    pub point: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ObjectSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub object_type: String,
    pub name: String,
    pub host: Option<String>,
}

/// An attribute that differs: its path in the object's JSON, its value before and after
/// (`null`: absent).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttributeChange {
    pub path: String,
    #[schema(value_type = Object)]
    pub from: Value,
    #[schema(value_type = Object)]
    pub to: Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ObjectChange {
    #[serde(flatten)]
    pub object: ObjectSummary,
    pub changes: Vec<AttributeChange>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ObjectDiff {
    pub added: Vec<ObjectSummary>,
    pub removed: Vec<ObjectSummary>,
    pub changed: Vec<ObjectChange>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LinkSummary {
    pub link_type: String,
    pub source: String,
    pub target: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LinkStateChange {
    pub link_type: String,
    pub source: String,
    pub target: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct LinkDiff {
    pub added: Vec<LinkSummary>,
    pub removed: Vec<LinkSummary>,
    pub state_changed: Vec<LinkStateChange>,
}

/// A clique whose membership differs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CliqueChange {
    pub focal_point: String,
    pub added_nodes: Vec<String>,
    pub removed_nodes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct CliqueDiff {
    /// Focal points that have a clique at `to` and had none at `from`.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<CliqueChange>,
}

/// What differs between two points of an environment's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Diff {
    pub environment: String,
    pub from: DiffPoint,
    pub to: DiffPoint,
    pub objects: ObjectDiff,
    pub links: LinkDiff,
    pub cliques: CliqueDiff,
}

/// The longest snapshot name.
const MAX_SNAPSHOT_NAME: usize = 128;

fn check_snapshot_name(name: &str) -> Result<(), ServiceError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_SNAPSHOT_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(ServiceError::BadRequest(format!(
            "name: `{name}` is not a snapshot name (letters, digits, `.`, `_`, `-`; 1 to {MAX_SNAPSHOT_NAME})"
        )))
    }
}

impl Service {
    /// Refuses a time a diff or a snapshot cannot use: in the future, or before history starts
    /// (compacted away, or before anything was recorded).
    async fn within_history(&self, what: &str, at: Timestamp) -> Result<(), ServiceError> {
        if at > Timestamp::now() {
            return Err(ServiceError::BadRequest(format!(
                "{what}: {at} is in the future"
            )));
        }
        match self.store().history_start().await? {
            Some(start) if at < start.at => Err(ServiceError::BadRequest(format!(
                "{what}: {at} is before history, which starts at {} ({})",
                start.at,
                if start.compacted {
                    "older versions were compacted; snapshots keep theirs"
                } else {
                    "nothing was recorded before"
                }
            ))),
            None => Err(ServiceError::BadRequest(format!(
                "{what}: history is empty"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a past time whose versions were compacted away, for reads `at` a time: before
    /// the first record they answer what existed (nothing), after a compaction they could
    /// only answer part of it.
    pub(super) async fn answerable(&self, at: Option<Timestamp>) -> Result<(), ServiceError> {
        let Some(at) = at else {
            return Ok(());
        };
        match self.store().history_start().await? {
            Some(start) if start.compacted && at < start.at => {
                Err(ServiceError::BadRequest(format!(
                    "at: {at} is before history, which starts at {} (older versions were compacted; snapshots keep theirs: use /diff from a snapshot)",
                    start.at
                )))
            }
            _ => Ok(()),
        }
    }

    async fn snapshot_named(
        &self,
        environment: &str,
        name: &str,
    ) -> Result<SnapshotRecord, ServiceError> {
        self.store()
            .snapshots(Some(environment))
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                ServiceError::NotFound(format!("no snapshot `{name}` in `{environment}`"))
            })
    }

    pub async fn create_snapshot(
        &self,
        who: &Principal,
        request: NewSnapshot,
    ) -> Result<SnapshotView, ServiceError> {
        who.require_edit(&request.env_name)?;
        check_snapshot_name(&request.name)?;
        {
            let engine = self.sink().engine();
            environment_of(&engine, &request.env_name)?;
        }
        let at = match request.at.as_deref() {
            None => Timestamp::now(),
            Some(text) => {
                let at = super::parse_time("at", text)?;
                self.within_history("at", at).await?;
                at
            }
        };
        let existing = self.store().snapshots(Some(&request.env_name)).await?;
        if existing.iter().any(|s| s.name == request.name) {
            return Err(ServiceError::Conflict(format!(
                "a snapshot `{}` of `{}` exists; delete it first",
                request.name, request.env_name
            )));
        }
        let record = SnapshotRecord {
            environment: request.env_name,
            name: request.name,
            at,
            note: request.note,
            created_by: who.username.clone(),
            created_at: Timestamp::now(),
        };
        self.store().put_snapshot(&record).await?;
        Ok(record.into())
    }

    pub async fn snapshots(
        &self,
        who: &Principal,
        environment: &str,
    ) -> Result<Vec<SnapshotView>, ServiceError> {
        who.require_view(environment)?;
        Ok(self
            .store()
            .snapshots(Some(environment))
            .await?
            .into_iter()
            .map(SnapshotView::from)
            .collect())
    }

    pub async fn snapshot(
        &self,
        who: &Principal,
        environment: &str,
        name: &str,
    ) -> Result<SnapshotView, ServiceError> {
        who.require_view(environment)?;
        Ok(self.snapshot_named(environment, name).await?.into())
    }

    pub async fn delete_snapshot(
        &self,
        who: &Principal,
        environment: &str,
        name: &str,
    ) -> Result<(), ServiceError> {
        who.require_edit(environment)?;
        if self.store().delete_snapshot(environment, name).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!(
                "no snapshot `{name}` in `{environment}`"
            )))
        }
    }

    /// A snapshot's name, an RFC 3339 time or `now`, as a time; a snapshot stays answerable
    /// before history's start (retention keeps what it pins).
    async fn point(
        &self,
        what: &str,
        environment: &str,
        text: &str,
    ) -> Result<Timestamp, ServiceError> {
        if text == "now" {
            return Ok(Timestamp::now());
        }
        if let Ok(at) = text.parse::<Timestamp>() {
            self.within_history(what, at).await?;
            return Ok(at);
        }
        Ok(self.snapshot_named(environment, text).await?.at)
    }

    /// What changed between two points: objects (attribute by attribute), links (added,
    /// removed, state), cliques (membership).
    pub async fn diff(&self, who: &Principal, query: &DiffQuery) -> Result<Diff, ServiceError> {
        who.require_view(&query.environment)?;
        let environment = query.environment.as_str();
        let to_text = query.to.as_deref().unwrap_or("now");
        let from = self.point("from", environment, &query.from).await?;
        let to = self.point("to", environment, to_text).await?;
        if from > to {
            return Err(ServiceError::BadRequest(format!(
                "from ({from}) is after to ({to})"
            )));
        }
        let mut diff = diff_between(self.store(), environment, from, to, query).await?;
        diff.from.point = query.from.clone();
        diff.to.point = to_text.to_owned();
        Ok(diff)
    }
}

/// What changed in `environment` between two times, from the versions that began or ended
/// between them (the query's host and type filters apply; its points are not read).
pub async fn diff_between(
    store: &impl Store,
    environment: &str,
    from: Timestamp,
    to: Timestamp,
    query: &DiffQuery,
) -> Result<Diff, ServiceError> {
    let (objects, links, cliques) = tokio::try_join!(
        store.object_changes(environment, from, to),
        store.link_changes(environment, from, to),
        store.clique_changes(environment, from, to),
    )?;
    let filter = DiffFilter {
        host: query.host.as_deref(),
        object_type: query.object_type,
    };
    let point = |at: Timestamp| DiffPoint {
        point: at.to_string(),
        at: at.to_string(),
    };
    Ok(Diff {
        environment: environment.to_owned(),
        from: point(from),
        to: point(to),
        objects: object_diff(&objects, from, to, &filter),
        links: link_diff(&links, from, to, &filter),
        cliques: clique_diff(&cliques, from, to, &filter),
    })
}

struct DiffFilter<'q> {
    host: Option<&'q str>,
    object_type: Option<ObjectType>,
}

impl DiffFilter<'_> {
    fn keeps_object(&self, node: &Node) -> bool {
        self.host
            .is_none_or(|h| node.object.host.as_deref() == Some(h))
            && self.object_type.is_none_or(|t| node.object_type() == t)
    }

    fn keeps_id(&self, id: &ObjectId) -> bool {
        self.host.is_none_or(|h| names_host(id, h))
            && self.object_type.is_none_or(|t| id.object_type() == Some(t))
    }

    fn keeps_link(&self, link: &Link) -> bool {
        let host = self
            .host
            .is_none_or(|h| link.host.as_deref() == Some(h) || names_host(&link.source, h));
        let of_type = self.object_type.is_none_or(|t| {
            link.source.object_type() == Some(t) || link.target.object_type() == Some(t)
        });
        host && of_type
    }
}

/// Whether an id names `host` (`type:host:key`): links and cliques are filtered by host
/// through their ids, since the diff does not hold their objects.
fn names_host(id: &ObjectId, host: &str) -> bool {
    let mut parts = id.as_str().splitn(3, ':');
    parts.next();
    parts.next() == Some(host) && parts.next().is_some()
}

/// The versions of each key in force at `from` and at `to`, from a list ordered by key.
fn ends_by_key<T, K: Ord>(
    versions: &[Version<T>],
    key: impl Fn(&T) -> K,
    from: Timestamp,
    to: Timestamp,
) -> BTreeMap<K, (Option<&T>, Option<&T>)> {
    let mut ends: BTreeMap<K, (Option<&T>, Option<&T>)> = BTreeMap::new();
    for version in versions {
        let entry = ends.entry(key(&version.value)).or_default();
        if version.valid_at(from) {
            entry.0 = Some(&version.value);
        }
        if version.valid_at(to) {
            entry.1 = Some(&version.value);
        }
    }
    ends
}

fn summary(node: &Node) -> ObjectSummary {
    ObjectSummary {
        id: node.id().to_string(),
        object_type: node.object_type().to_string(),
        name: node.object.name.to_string(),
        host: node.object.host.as_ref().map(ToString::to_string),
    }
}

/// The object's JSON with its freshness, flattened to `path → leaf`.
fn leaves(node: &Node) -> BTreeMap<String, Value> {
    let mut value = serde_json::to_value(&node.object).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("stale".into(), Value::Bool(node.stale));
    }
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, inner) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, inner, out);
            }
        }
        leaf => {
            out.insert(prefix.to_owned(), leaf.clone());
        }
    }
}

fn attribute_changes(before: &Node, after: &Node) -> Vec<AttributeChange> {
    let (old, new) = (leaves(before), leaves(after));
    let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|path| old.get(*path) != new.get(*path))
        .map(|path| AttributeChange {
            path: path.clone(),
            from: old.get(path).cloned().unwrap_or(Value::Null),
            to: new.get(path).cloned().unwrap_or(Value::Null),
        })
        .collect()
}

fn object_diff(
    versions: &[Version<Node>],
    from: Timestamp,
    to: Timestamp,
    filter: &DiffFilter<'_>,
) -> ObjectDiff {
    let mut diff = ObjectDiff::default();
    for (_, ends) in ends_by_key(versions, |n| n.id().clone(), from, to) {
        match ends {
            (None, Some(after)) if filter.keeps_object(after) => diff.added.push(summary(after)),
            (Some(before), None) if filter.keeps_object(before) => {
                diff.removed.push(summary(before))
            }
            (Some(before), Some(after)) if filter.keeps_object(after) => {
                let changes = attribute_changes(before, after);
                if !changes.is_empty() {
                    diff.changed.push(ObjectChange {
                        object: summary(after),
                        changes,
                    });
                }
            }
            _ => {}
        }
    }
    diff
}

fn link_summary(link: &Link) -> LinkSummary {
    LinkSummary {
        link_type: link.link_type.to_string(),
        source: link.source.to_string(),
        target: link.target.to_string(),
        state: link.state.as_str().to_owned(),
    }
}

fn link_diff(
    versions: &[Version<Link>],
    from: Timestamp,
    to: Timestamp,
    filter: &DiffFilter<'_>,
) -> LinkDiff {
    let mut diff = LinkDiff::default();
    for (_, ends) in ends_by_key(versions, LinkKey::of, from, to) {
        match ends {
            (None, Some(after)) if filter.keeps_link(after) => diff.added.push(link_summary(after)),
            (Some(before), None) if filter.keeps_link(before) => {
                diff.removed.push(link_summary(before))
            }
            (Some(before), Some(after))
                if filter.keeps_link(after) && before.state != after.state =>
            {
                diff.state_changed.push(LinkStateChange {
                    link_type: after.link_type.to_string(),
                    source: after.source.to_string(),
                    target: after.target.to_string(),
                    from: before.state.as_str().to_owned(),
                    to: after.state.as_str().to_owned(),
                })
            }
            _ => {}
        }
    }
    diff
}

fn clique_diff(
    versions: &[Version<Clique>],
    from: Timestamp,
    to: Timestamp,
    filter: &DiffFilter<'_>,
) -> CliqueDiff {
    let mut diff = CliqueDiff::default();
    for (focal, ends) in ends_by_key(versions, |c| c.focal_point.clone(), from, to) {
        if !filter.keeps_id(&focal) {
            continue;
        }
        match ends {
            (None, Some(_)) => diff.added.push(focal.to_string()),
            (Some(_), None) => diff.removed.push(focal.to_string()),
            (Some(before), Some(after)) => {
                let added_nodes: Vec<String> = after
                    .nodes
                    .iter()
                    .filter(|n| !before.nodes.contains(n))
                    .map(ToString::to_string)
                    .collect();
                let removed_nodes: Vec<String> = before
                    .nodes
                    .iter()
                    .filter(|n| !after.nodes.contains(n))
                    .map(ToString::to_string)
                    .collect();
                if !added_nodes.is_empty() || !removed_nodes.is_empty() {
                    diff.changed.push(CliqueChange {
                        focal_point: focal.to_string(),
                        added_nodes,
                        removed_nodes,
                    });
                }
            }
            (None, None) => {}
        }
    }
    diff
}

/// How often retention runs: a twelfth of the retention, between a minute and an hour.
fn retention_period(retention: Duration) -> Duration {
    (retention / 12).clamp(Duration::from_secs(60), Duration::from_secs(3600))
}

/// Compacts history older than `retention` now and then until `shutdown`; snapshots keep what
/// they pin. Failures are logged and retried at the next run.
pub async fn keep_history(
    store: AnyStore,
    retention: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let period = retention_period(retention);
    loop {
        let micros = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
        let cutoff =
            Timestamp::from_unix_micros(Timestamp::now().unix_micros().saturating_sub(micros));
        match store.compact_history(cutoff).await {
            Ok(removed) => tracing::info!(
                %cutoff,
                objects = removed.objects,
                links = removed.links,
                cliques = removed.cliques,
                messages = removed.messages,
                "history compacted"
            ),
            Err(error) => tracing::warn!(%error, "history compaction failed; retried later"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}
