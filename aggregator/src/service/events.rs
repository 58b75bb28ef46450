//! The live stream: every object, link and clique change as an [`Event`] as soon as the engine
//! has it (what queries then show; its commit follows, see [`Published`]), in commit order, with
//! an id a reconnecting client hands back (`Last-Event-ID`) to get what it missed. A failed
//! commit rolls the engine back, and clients get a `reset`.
//!
//! The last `capacity` events are kept in memory. A client whose resume id is older than that
//! (or older than this process) gets a `reset` instead of a silent gap: it must re-read the
//! listings, then follow the stream again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use calipso_proto::{ObjectId, ObjectType, Timestamp};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use super::inventory::{clique_view, link_view};
use super::{Principal, Service, ServiceError};
use crate::engine::Applied;
use crate::ingest::{DurableSink, GroupChanges, Published};
use crate::links::LinkKey;

/// An event's position: the commit time, then its index within the commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId {
    pub at: i64,
    pub index: u32,
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.at, self.index)
    }
}

impl std::str::FromStr for EventId {
    type Err = ServiceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ServiceError::BadRequest(format!("`{text}` is not an event id"));
        let (at, index) = text.split_once('.').ok_or_else(invalid)?;
        Ok(EventId {
            at: at.parse().map_err(|_| invalid())?,
            index: index.parse().map_err(|_| invalid())?,
        })
    }
}

/// One change, as committed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Event {
    /// The resume id.
    pub id: String,
    /// The commit time.
    pub at: String,
    pub environment: String,
    /// `object`, `link`, `clique` or `message`.
    pub kind: String,
    /// `upsert` or `remove` (a message is an `upsert`).
    pub action: String,
    /// The object id, the link id (`type:source->target`), the clique's focal point, or a
    /// message's related object (empty when it has none).
    pub key: String,
    /// The object's type, the link's type, the focal point's type, or a message's level.
    pub item_type: String,
    pub host: Option<String>,
    /// The object, link or clique after the change (absent for a removal).
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    #[serde(skip)]
    position: EventId,
    /// Ends of a link, for clique filters.
    #[serde(skip)]
    ends: Option<(ObjectId, ObjectId)>,
}

/// What a stream subscriber wants.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub environment: Option<String>,
    /// Object types (of objects, of link ends, of focal points).
    pub types: Vec<ObjectType>,
    pub host: Option<String>,
    /// Only changes of this focal point's clique and of what it contains.
    pub focal_point: Option<ObjectId>,
    pub resume_after: Option<EventId>,
}

/// What a stream yields.
#[derive(Debug, Clone)]
pub enum StreamItem {
    Event(Arc<Event>),
    /// Events were lost between the client's resume id and now.
    Reset(String),
}

#[derive(Debug)]
struct Buffer {
    events: VecDeque<Arc<Event>>,
    /// Events at or before this may have been dropped (or predate this process).
    horizon: EventId,
}

/// How many changes the log keeps for reconnecting clients, and how many streams one token may
/// hold open at once.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub buffer: usize,
    pub per_token: usize,
}

/// The recent events and the feed of new ones.
#[derive(Debug)]
pub struct EventLog {
    buffer: Arc<Mutex<Buffer>>,
    feed: broadcast::Sender<StreamItem>,
    /// Each bounded by `per_token`.
    open: OpenStreams,
    per_token: usize,
}

/// How many streams each token (by its hash) holds open.
type OpenStreams = Arc<Mutex<HashMap<String, usize>>>;

/// One open stream of a token, counted until it is dropped (the stream ended or the client
/// went away).
#[derive(Debug)]
struct StreamSlot {
    open: OpenStreams,
    token: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.token) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.token);
            }
        }
    }
}

impl EventLog {
    /// A slot for one more stream of `token`, unless it holds as many as it may.
    fn open_stream(&self, token: &str) -> Result<StreamSlot, ServiceError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(token.to_owned()).or_default();
        if *count >= self.per_token {
            return Err(ServiceError::TooManyRequests {
                message: format!(
                    "this token has {} live streams open, as many as one token may: close one first",
                    self.per_token
                ),
                retry_after: 5,
            });
        }
        *count += 1;
        Ok(StreamSlot {
            open: self.open.clone(),
            token: token.to_owned(),
        })
    }
}

impl EventLog {
    /// Follows the sink's commits from now on.
    pub fn start(sink: &DurableSink, limits: StreamLimits) -> Self {
        let capacity = limits.buffer;
        let started = EventId {
            at: Timestamp::now().unix_micros(),
            index: u32::MAX,
        };
        let buffer = Arc::new(Mutex::new(Buffer {
            events: VecDeque::with_capacity(capacity.min(65_536)),
            horizon: started,
        }));
        let (feed, _) = broadcast::channel(4096);
        let mut commits = sink.subscribe();
        let log_buffer = buffer.clone();
        let log_feed = feed.clone();
        tokio::spawn(async move {
            loop {
                let restart = |buffer: &mut Buffer| {
                    buffer.events.clear();
                    buffer.horizon = EventId {
                        at: Timestamp::now().unix_micros(),
                        index: u32::MAX,
                    };
                };
                match commits.recv().await {
                    Ok(published) => {
                        let Published::Changes(group) = published.as_ref() else {
                            let mut buffer =
                                log_buffer.lock().unwrap_or_else(PoisonError::into_inner);
                            restart(&mut buffer);
                            let _ = log_feed.send(StreamItem::Reset(
                                "a commit failed and the aggregator reloaded its store: \
                                 changes since the last durable one may not have happened"
                                    .into(),
                            ));
                            continue;
                        };
                        let events = events_of(group);
                        let mut buffer = log_buffer.lock().unwrap_or_else(PoisonError::into_inner);
                        for event in events {
                            if buffer.events.len() >= capacity.max(1)
                                && let Some(dropped) = buffer.events.pop_front()
                            {
                                buffer.horizon = dropped.position;
                            }
                            buffer.events.push_back(event.clone());
                            let _ = log_feed.send(StreamItem::Event(event));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let mut buffer = log_buffer.lock().unwrap_or_else(PoisonError::into_inner);
                        restart(&mut buffer);
                        let _ = log_feed.send(StreamItem::Reset(format!(
                            "the event log fell {missed} commits behind"
                        )));
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        EventLog {
            buffer,
            feed,
            open: Arc::default(),
            per_token: limits.per_token.max(1),
        }
    }
}

fn event(
    environment: &str,
    at: Timestamp,
    kind: &str,
    key: String,
    item_type: String,
    host: Option<String>,
    data: Option<serde_json::Value>,
) -> Event {
    Event {
        id: String::new(),
        at: at.to_string(),
        environment: environment.to_owned(),
        kind: kind.to_owned(),
        action: if data.is_some() { "upsert" } else { "remove" }.to_owned(),
        key,
        item_type,
        host,
        data,
        // Set once the commit's events are numbered.
        position: EventId::default(),
        ends: None,
    }
}

fn events_of(commit: &GroupChanges) -> Vec<Arc<Event>> {
    let mut events = Vec::new();
    for (environment, applied) in &commit.changes {
        push_events(&mut events, environment, commit.at, applied);
    }
    // The aggregator's own messages (no environment) stay in `/messages`, for admins.
    for message in &commit.messages {
        if let Some(environment) = &message.environment {
            events.push(event(
                environment,
                commit.at,
                "message",
                message
                    .related_object
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                message.level.as_str().to_owned(),
                None,
                Some(serde_json::json!({
                    "environment": environment,
                    "level": message.level.as_str(),
                    "source": message.source,
                    "related_object": message.related_object.as_ref().map(ToString::to_string),
                    "text": message.text,
                    "at": message.at.to_string(),
                })),
            ));
        }
    }
    events
        .into_iter()
        .enumerate()
        .map(|(index, mut event)| {
            let position = EventId {
                at: commit.at.unix_micros(),
                index: u32::try_from(index).unwrap_or(u32::MAX),
            };
            event.id = position.to_string();
            event.position = position;
            Arc::new(event)
        })
        .collect()
}

fn push_events(events: &mut Vec<Event>, environment: &str, at: Timestamp, applied: &Applied) {
    for diff in &applied.objects {
        let node = diff.after.as_ref().or(diff.before.as_ref());
        events.push(event(
            environment,
            at,
            "object",
            diff.id.to_string(),
            node.map(|n| n.object_type().to_string())
                .unwrap_or_default(),
            node.and_then(|n| n.object.host.as_deref().map(str::to_owned)),
            diff.after
                .as_ref()
                .and_then(|n| serde_json::to_value(&n.object).ok()),
        ));
    }
    let link_event = |key: &LinkKey, data: Option<serde_json::Value>, host: Option<String>| {
        let mut e = event(
            environment,
            at,
            "link",
            key.to_string(),
            key.link_type.to_string(),
            host,
            data,
        );
        e.ends = Some((key.source.clone(), key.target.clone()));
        e
    };
    for link in applied.links.upserted() {
        let data = serde_json::to_value(link_view(link, None)).ok();
        events.push(link_event(
            &LinkKey::of(link),
            data,
            link.host.as_deref().map(str::to_owned),
        ));
    }
    for key in &applied.links.removed {
        events.push(link_event(key, None, None));
    }
    for clique in applied.cliques.upserted() {
        events.push(event(
            environment,
            at,
            "clique",
            clique.focal_point.to_string(),
            clique.focal_point_type.to_string(),
            None,
            serde_json::to_value(clique_view(environment, clique, None)).ok(),
        ));
    }
    for focal in &applied.cliques.removed {
        events.push(event(
            environment,
            at,
            "clique",
            focal.to_string(),
            focal
                .object_type()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            None,
            None,
        ));
    }
}

impl Service {
    /// The caller's stream: missed events after `resume_after` (or a reset), then live ones,
    /// filtered and limited to what the caller may see.
    pub fn event_stream(
        &self,
        who: &Principal,
        filter: EventFilter,
    ) -> Result<impl Stream<Item = StreamItem> + Send + use<>, ServiceError> {
        if let Some(environment) = &filter.environment {
            who.require_view(environment)?;
        }
        if filter.focal_point.is_some() && filter.environment.is_none() {
            return Err(ServiceError::BadRequest(
                "focal_point needs env_name".into(),
            ));
        }
        if let Some(after) = filter.resume_after
            && after.at > Timestamp::now().unix_micros()
        {
            return Err(ServiceError::BadRequest(format!(
                "the resume id {after} lies in the future: no event has it yet"
            )));
        }
        let log = self.events();
        let slot = log.open_stream(who.token_key())?;
        // Subscribe before reading the buffer, so nothing falls between the two.
        let live = log.feed.subscribe();
        let (backlog, reset) = {
            let buffer = log.buffer.lock().unwrap_or_else(PoisonError::into_inner);
            match filter.resume_after {
                None => (Vec::new(), None),
                Some(after) if after < buffer.horizon => (
                    Vec::new(),
                    Some(format!(
                        "events after {after} are no longer kept; re-read the listings"
                    )),
                ),
                Some(after) => (
                    buffer
                        .events
                        .iter()
                        .filter(|e| e.position > after)
                        .cloned()
                        .collect::<Vec<_>>(),
                    None,
                ),
            }
        };
        let mut first: Vec<StreamItem> = reset.into_iter().map(StreamItem::Reset).collect();
        // Live events the backlog holds too are skipped by position as the stream goes.
        let last_sent = filter.resume_after;
        first.extend(backlog.into_iter().map(StreamItem::Event));
        let state = StreamState {
            service: self.clone(),
            grants: who.clone(),
            filter,
            first: first.into(),
            live,
            last_sent,
            _slot: slot,
        };
        let stop = self.inner.stop.clone().cancelled_owned();
        Ok(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
        .take_until(stop))
    }
}

struct StreamState {
    service: Service,
    grants: Principal,
    filter: EventFilter,
    first: VecDeque<StreamItem>,
    live: broadcast::Receiver<StreamItem>,
    last_sent: Option<EventId>,
    /// Counts this stream against its token's limit while it lives.
    _slot: StreamSlot,
}

/// How often a quiet stream checks that its token still stands (expiry, revocation, grants).
const TOKEN_RECHECK: Duration = Duration::from_secs(5);

impl StreamState {
    /// The next item for this client; `None` ends the stream — also when its token expired,
    /// was revoked, or its user's grants changed (checked before each event, and every few
    /// seconds while nothing comes).
    async fn next(&mut self) -> Option<StreamItem> {
        loop {
            let item = match self.first.pop_front() {
                Some(item) => item,
                None => {
                    let received = tokio::select! {
                        received = self.live.recv() => received,
                        () = tokio::time::sleep(TOKEN_RECHECK) => {
                            if !self.service.auth().still_valid(&self.grants).await {
                                return None;
                            }
                            continue;
                        }
                    };
                    match received {
                        Ok(item) => item,
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            StreamItem::Reset(format!("this client fell {missed} events behind"))
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            };
            if !self.service.auth().still_valid(&self.grants).await {
                return None;
            }
            match &item {
                StreamItem::Reset(_) => return Some(item),
                StreamItem::Event(event) => {
                    if self.last_sent.is_some_and(|last| event.position <= last) {
                        continue;
                    }
                    self.last_sent = Some(event.position);
                    if self.wants(event) {
                        return Some(item);
                    }
                }
            }
        }
    }

    fn wants(&self, event: &Event) -> bool {
        let filter = &self.filter;
        if !self.grants.grants.can_view(&event.environment)
            || filter
                .environment
                .as_ref()
                .is_some_and(|e| e != &event.environment)
            || filter
                .host
                .as_ref()
                .is_some_and(|h| event.host.as_ref() != Some(h))
        {
            return false;
        }
        if !filter.types.is_empty() {
            let matches = match &event.ends {
                Some((source, target)) => [source, target]
                    .iter()
                    .any(|id| id.object_type().is_some_and(|t| filter.types.contains(&t))),
                None => event
                    .item_type
                    .parse::<ObjectType>()
                    .is_ok_and(|t| filter.types.contains(&t)),
            };
            if !matches {
                return false;
            }
        }
        match &filter.focal_point {
            None => true,
            Some(focal) => {
                if event.kind == "clique" {
                    return event.key == focal.as_str();
                }
                let engine = self.service.sink().engine();
                let Some(clique) = engine
                    .environment(&event.environment)
                    .and_then(|env| env.cliques.get(focal))
                else {
                    return false;
                };
                match &event.ends {
                    Some((source, target)) => {
                        clique.nodes.contains(source) && clique.nodes.contains(target)
                    }
                    None => clique
                        .nodes
                        .contains(&ObjectId::from_raw(event.key.clone())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_order_by_commit_then_index() {
        let a: EventId = "100.2".parse().expect("valid");
        let b: EventId = "101.0".parse().expect("valid");
        assert!(a < b);
        assert_eq!(a.to_string(), "100.2");
        for bad in ["", "100", "x.1", "1.-1", "1.2.3"] {
            assert!(bad.parse::<EventId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_environments_messages_are_events_and_the_aggregators_own_are_not() {
        use crate::store::{Message, MessageLevel};
        let at = Timestamp::from_unix_micros(5_000_000);
        let message = |environment: Option<&str>| Message {
            environment: environment.map(str::to_owned),
            level: MessageLevel::Warning,
            source: "ingest".into(),
            related_object: Some(ObjectId::host("h1")),
            text: "h1 went away".into(),
            at,
        };
        let events = events_of(&GroupChanges {
            at,
            changes: vec![],
            messages: vec![message(Some("lab")), message(None)],
            status_changes: Vec::new(),
        });
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(
            (
                event.kind.as_str(),
                event.action.as_str(),
                event.key.as_str(),
                event.item_type.as_str(),
                event.environment.as_str(),
                event.id.as_str()
            ),
            (
                "message",
                "upsert",
                "host:h1",
                "warning",
                "lab",
                "5000000.0"
            )
        );
        let data = event.data.as_ref().expect("a message has its text");
        assert_eq!(data["text"], "h1 went away");
        assert_eq!(data["source"], "ingest");
    }
}
