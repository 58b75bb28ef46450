//! Alerts: health changes sent where operators look. Per environment, alert rules choose which
//! changes matter (a level, object types, the cliques of given focal points) and where they go:
//! a webhook (JSON, signed with HMAC-SHA256) and/or Alertmanager's `/api/v2/alerts`. Silences
//! (maintenance windows) hold back what they match while they last.
//!
//! The committer publishes each group's [`StatusChange`]s; [`Alerting::run`] matches them
//! against the rules and hands each alert to its destination's own worker through a bounded
//! queue, so a dead or slow receiver delays only itself: its queue fills and what does not fit
//! is dropped and counted, never waited for. Each worker delivers in order, retrying with
//! backoff (see [`deliver`]).

mod alertmanager;
mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use calipso_proto::{ObjectId, ObjectType, StatusLevel, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::engine::Engine;
use crate::ingest::{DurableSink, Published};
use crate::metrics::metrics;
use crate::monitoring::{StatusChange, Subject};

pub use webhook::{SIGNATURE_HEADER, signature};

/// How long an ended silence is kept (listed as ended) before it is forgotten.
const SILENCE_KEPT_AFTER_END: Duration = Duration::from_secs(30 * 86_400);

/// Silences that ended before this (seen from `now`) are forgotten.
pub fn forgotten_before(now: Timestamp) -> Timestamp {
    let kept = i64::try_from(SILENCE_KEPT_AFTER_END.as_micros()).unwrap_or(i64::MAX);
    Timestamp::from_unix_micros(now.unix_micros().saturating_sub(kept))
}

/// An alert rule as stored: which health changes of an environment to send, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRule {
    pub id: String,
    pub environment: String,
    pub name: String,
    /// The least severe level that fires: `warning` fires on warning and error, `unknown` on
    /// every level but ok.
    pub min_level: StatusLevel,
    /// Only changes of objects (or links with an end) of these types; all when empty.
    #[serde(default)]
    pub object_types: Vec<ObjectType>,
    /// Only changes within these focal points' cliques; all when empty.
    #[serde(default)]
    pub focal_points: Vec<ObjectId>,
    /// Also send when a change that fired is over (back below `min_level`).
    pub send_resolved: bool,
    #[serde(default)]
    pub webhook: Option<Webhook>,
    /// Alertmanager's base URL (`http://alertmanager:9093`).
    #[serde(default)]
    pub alertmanager: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
}

/// Where a rule posts its alerts, and the secret their signatures use (sealed at rest).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
}

impl AlertRule {
    /// Whether `level` is one this rule fires on.
    fn fires_on(&self, level: StatusLevel) -> bool {
        level != StatusLevel::Ok && level.severity() >= self.min_level.severity()
    }

    /// Whether this rule sends `change`, and as what. `in_clique(focal, object)` tells whether
    /// the object belongs to the focal point's clique.
    pub fn verdict(
        &self,
        change: &StatusChange,
        in_clique: impl Fn(&ObjectId, &ObjectId) -> bool,
    ) -> Option<AlertState> {
        if change.environment != self.environment {
            return None;
        }
        if !self.object_types.is_empty()
            && !change
                .object_types()
                .iter()
                .any(|t| self.object_types.contains(t))
        {
            return None;
        }
        if !self.focal_points.is_empty()
            && !self.focal_points.iter().any(|focal| {
                change
                    .objects()
                    .into_iter()
                    .any(|object| in_clique(focal, object))
            })
        {
            return None;
        }
        if self.fires_on(change.level) {
            Some(AlertState::Firing)
        } else if self.send_resolved && change.was.is_some_and(|was| self.fires_on(was)) {
            Some(AlertState::Resolved)
        } else {
            None
        }
    }
}

/// The field a rule's webhook secret is sealed under.
pub fn webhook_secret_field(rule: &str) -> String {
    format!("alert_rule.{rule}.webhook.secret")
}

/// A maintenance window: alerts it matches are not sent while it lasts. Every matcher given
/// must match; one with none silences the whole environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Silence {
    pub id: String,
    pub environment: String,
    /// The object (or a link's end).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub object: Option<ObjectId>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub object_type: Option<ObjectType>,
    #[serde(default)]
    pub host: Option<String>,
    /// Everything in this focal point's clique.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub focal_point: Option<ObjectId>,
    #[schema(value_type = String)]
    pub starts_at: Timestamp,
    #[schema(value_type = String)]
    pub ends_at: Timestamp,
    #[serde(default)]
    pub comment: String,
    pub created_by: String,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
}

impl Silence {
    pub fn active(&self, now: Timestamp) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// Whether it holds back `change` at `now`.
    pub fn silences(
        &self,
        change: &StatusChange,
        now: Timestamp,
        in_clique: impl Fn(&ObjectId, &ObjectId) -> bool,
    ) -> bool {
        let objects = change.objects();
        self.active(now)
            && self.environment == change.environment
            && self.object.as_ref().is_none_or(|id| objects.contains(&id))
            && self
                .object_type
                .is_none_or(|t| change.object_types().contains(&t))
            && self
                .host
                .as_ref()
                .is_none_or(|host| change.host.as_ref() == Some(host))
            && self
                .focal_point
                .as_ref()
                .is_none_or(|focal| objects.iter().any(|object| in_clique(focal, object)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// What a webhook receives (the JSON body), and what Alertmanager's alerts are made from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Unique per change and rule, the same on every retry: receivers drop repeats by it.
    pub id: String,
    pub status: AlertState,
    pub environment: String,
    pub rule: RuleRef,
    pub level: StatusLevel,
    pub previous_level: Option<StatusLevel>,
    /// The object, or a link's source.
    pub object: String,
    pub object_types: Vec<ObjectType>,
    /// The link (`type:source->target`) when a link changed.
    pub link: Option<String>,
    /// "host_pnic eth0 on compute-1".
    pub name: String,
    pub host: Option<String>,
    /// What the check said.
    pub text: String,
    pub perfdata: String,
    /// The message the change wrote.
    pub message: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub id: String,
    pub name: String,
}

impl Alert {
    fn new(change: &StatusChange, index: usize, rule: &AlertRule, status: AlertState) -> Self {
        Alert {
            id: format!("{}.{index}-{}", change.at.unix_micros(), rule.id),
            status,
            environment: change.environment.clone(),
            rule: RuleRef {
                id: rule.id.clone(),
                name: rule.name.clone(),
            },
            level: change.level,
            previous_level: change.was,
            object: change.object().to_string(),
            object_types: change.object_types().to_vec(),
            link: match &change.subject {
                Subject::Link { key, .. } => Some(key.to_string()),
                Subject::Object { .. } => None,
            },
            name: change.name.clone(),
            host: change.host.clone(),
            text: change.text.clone(),
            perfdata: change.perfdata.clone(),
            message: change.summary(),
            at: change.at,
        }
    }

    /// What the alert is about, across its changes: a later alert of the same subject and
    /// rule replaces an earlier one.
    fn subject_key(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.rule.id,
            self.environment,
            self.link.as_deref().unwrap_or(&self.object)
        )
    }
}

/// How alerts are delivered (`[api.alerts]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// One delivery attempt's time limit.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per alert before it is given up (logged and counted).
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles, up to `retry_max` (a receiver's
    /// `Retry-After` is honoured within it).
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Alerts waiting per destination: one more is dropped (and counted) rather than delay
    /// anything else.
    pub queue: usize,
    /// How often firing alerts are posted to Alertmanager again (it resolves an alert it
    /// stops hearing of).
    #[serde(with = "humantime_serde")]
    pub alertmanager_repeat: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            timeout: Duration::from_secs(10),
            max_attempts: 6,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            queue: 1024,
            alertmanager_repeat: Duration::from_secs(60),
        }
    }
}

/// What happened to a destination's alerts since the aggregator started.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    sent: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    last: Mutex<DeliveryReport>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct DeliveryReport {
    /// Alerts the receiver accepted.
    pub sent: u64,
    /// Attempts that failed and were tried again.
    pub retried: u64,
    /// Alerts given up after every attempt, or refused by the receiver.
    pub failed: u64,
    /// Alerts dropped because the destination's queue was full.
    pub dropped: u64,
    /// When an alert was last accepted.
    pub last_sent_at: Option<String>,
    /// The last failure, and when.
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

impl DeliveryStats {
    fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        metrics().alerts.get_or_create(&outcome("sent")).inc();
        self.lock().last_sent_at = Some(Timestamp::now().to_string());
    }

    fn retried(&self, error: &str) {
        self.retried.fetch_add(1, Ordering::Relaxed);
        metrics().alerts.get_or_create(&outcome("retried")).inc();
        self.error(error);
    }

    fn failed(&self, error: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        metrics().alerts.get_or_create(&outcome("failed")).inc();
        self.error(error);
    }

    fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics().alerts.get_or_create(&outcome("dropped")).inc();
    }

    fn error(&self, error: &str) {
        let mut last = self.lock();
        last.last_error = Some(error.to_owned());
        last.last_error_at = Some(Timestamp::now().to_string());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeliveryReport> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn report(&self) -> DeliveryReport {
        DeliveryReport {
            sent: self.sent.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            ..self.lock().clone()
        }
    }
}

fn outcome(outcome: &'static str) -> crate::metrics::OutcomeLabel {
    crate::metrics::OutcomeLabel { outcome }
}

/// Where one rule's alerts go: a worker fed by a bounded queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Webhook(Webhook),
    Alertmanager(String),
}

#[derive(Debug)]
struct Destination {
    target: Target,
    queue: mpsc::Sender<Alert>,
    stats: Arc<DeliveryStats>,
}

impl Destination {
    fn offer(&self, alert: Alert) {
        if self.queue.try_send(alert).is_err() {
            self.stats.dropped();
            tracing::warn!(target = ?self.target_url(), "alert dropped: its receiver is not keeping up");
        }
    }

    fn target_url(&self) -> &str {
        match &self.target {
            Target::Webhook(webhook) => &webhook.url,
            Target::Alertmanager(url) => url,
        }
    }
}

#[derive(Debug)]
struct ActiveRule {
    rule: AlertRule,
    destinations: Vec<Destination>,
}

#[derive(Debug, Default)]
struct Rules {
    rules: Vec<ActiveRule>,
    silences: Vec<Silence>,
}

/// The rules in force and their destinations' workers.
#[derive(Debug, Clone)]
pub struct Alerting {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: AlertSettings,
    http: reqwest::Client,
    rules: Mutex<Rules>,
    silenced: AtomicU64,
    stop: CancellationToken,
}

impl Alerting {
    pub fn new(settings: AlertSettings, stop: CancellationToken) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No redirects: a signed alert goes where its rule says, nowhere a receiver points.
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("calipso-aggregator/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|error| {
                tracing::error!(%error, "alert client: falling back to defaults (no time limit)");
                reqwest::Client::default()
            });
        Alerting {
            inner: Arc::new(Inner {
                settings,
                http,
                rules: Mutex::default(),
                silenced: AtomicU64::new(0),
                stop,
            }),
        }
    }

    /// Puts `rules` (webhook secrets opened) and `silences` in force. A destination whose rule
    /// and target are unchanged keeps its worker and queue; others start afresh (a replaced
    /// worker finishes what it holds).
    pub fn load(&self, rules: Vec<AlertRule>, silences: Vec<Silence>) {
        let mut current = self.lock();
        let mut old: HashMap<(String, Target), Destination> = std::mem::take(&mut current.rules)
            .into_iter()
            .flat_map(|active| {
                let id = active.rule.id;
                active
                    .destinations
                    .into_iter()
                    .map(move |d| ((id.clone(), d.target.clone()), d))
            })
            .collect();
        current.rules = rules
            .into_iter()
            .map(|rule| {
                let targets = rule
                    .webhook
                    .clone()
                    .map(Target::Webhook)
                    .into_iter()
                    .chain(rule.alertmanager.clone().map(Target::Alertmanager));
                let destinations = targets
                    .map(|target| {
                        old.remove(&(rule.id.clone(), target.clone()))
                            .unwrap_or_else(|| self.start_worker(target))
                    })
                    .collect();
                ActiveRule { rule, destinations }
            })
            .collect();
        current.silences = silences;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.inner
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn start_worker(&self, target: Target) -> Destination {
        let (queue, alerts) = mpsc::channel(self.inner.settings.queue.max(1));
        let stats = Arc::new(DeliveryStats::default());
        let worker = Worker {
            http: self.inner.http.clone(),
            settings: self.inner.settings.clone(),
            stats: stats.clone(),
            stop: self.inner.stop.clone(),
        };
        match target.clone() {
            Target::Webhook(webhook) => {
                tokio::spawn(webhook::run(worker, webhook, alerts));
            }
            Target::Alertmanager(url) => {
                tokio::spawn(alertmanager::run(worker, url, alerts));
            }
        }
        Destination {
            target,
            queue,
            stats,
        }
    }

    /// Delivery reports of a rule's destinations: (`webhook` or `alertmanager`, report).
    pub fn reports(&self, rule: &str) -> Vec<(&'static str, DeliveryReport)> {
        let rules = self.lock();
        let Some(active) = rules.rules.iter().find(|active| active.rule.id == rule) else {
            return Vec::new();
        };
        active
            .destinations
            .iter()
            .map(|d| {
                let kind = match d.target {
                    Target::Webhook(_) => "webhook",
                    Target::Alertmanager(_) => "alertmanager",
                };
                (kind, d.stats.report())
            })
            .collect()
    }

    /// Alerts held back by silences since the start.
    pub fn silenced(&self) -> u64 {
        self.inner.silenced.load(Ordering::Relaxed)
    }

    /// Matches one group's health changes and queues their alerts.
    fn dispatch(&self, changes: &[StatusChange], engine: &Engine) {
        let in_clique = |environment: &str, focal: &ObjectId, object: &ObjectId| {
            engine
                .environment(environment)
                .and_then(|env| env.cliques.get(focal))
                .is_some_and(|clique| clique.nodes.contains(object))
        };
        let now = Timestamp::now();
        let rules = self.lock();
        for (index, change) in changes.iter().enumerate() {
            let in_clique =
                |focal: &ObjectId, object: &ObjectId| in_clique(&change.environment, focal, object);
            let mut silenced = None;
            for active in &rules.rules {
                let Some(state) = active.rule.verdict(change, in_clique) else {
                    continue;
                };
                let held = *silenced.get_or_insert_with(|| {
                    rules
                        .silences
                        .iter()
                        .any(|silence| silence.silences(change, now, in_clique))
                });
                if held {
                    self.inner.silenced.fetch_add(1, Ordering::Relaxed);
                    metrics().alerts.get_or_create(&outcome("silenced")).inc();
                    continue;
                }
                let alert = Alert::new(change, index, &active.rule, state);
                for destination in &active.destinations {
                    destination.offer(alert.clone());
                }
            }
        }
    }

    /// Follows the committer's groups until `stop`, sending what the rules ask for.
    pub async fn run(self, sink: Arc<DurableSink>) {
        let mut groups = sink.subscribe();
        loop {
            let published = tokio::select! {
                () = self.inner.stop.cancelled() => return,
                published = groups.recv() => published,
            };
            match published {
                Ok(published) => {
                    if let Published::Changes(group) = published.as_ref()
                        && !group.status_changes.is_empty()
                    {
                        self.dispatch(&group.status_changes, &sink.engine());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::error!(
                        missed,
                        "alerting fell behind the committer: the alerts of {missed} groups were not sent"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// What each destination's worker needs.
#[derive(Debug, Clone)]
struct Worker {
    http: reqwest::Client,
    settings: AlertSettings,
    stats: Arc<DeliveryStats>,
    stop: CancellationToken,
}

/// Why an attempt failed, and whether another may succeed.
#[derive(Debug)]
struct Failure {
    error: String,
    retry: bool,
    /// The receiver's `Retry-After`.
    after: Option<Duration>,
}

impl Worker {
    /// Sends one request (built afresh for each attempt) until the receiver accepts it, refuses
    /// it for good, or the attempts run out. True when accepted.
    async fn deliver(&self, what: &str, request: impl Fn() -> reqwest::RequestBuilder) -> bool {
        let mut delay = self.settings.retry_initial;
        for attempt in 1..=self.settings.max_attempts.max(1) {
            let failure = match request().send().await {
                Ok(response) if response.status().is_success() => {
                    self.stats.sent();
                    return true;
                }
                Ok(response) => {
                    let status = response.status();
                    let after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok())
                        .map(Duration::from_secs);
                    Failure {
                        error: format!("{what}: the receiver answered {status}"),
                        retry: status.is_server_error()
                            || matches!(status.as_u16(), 408 | 425 | 429),
                        after,
                    }
                }
                Err(error) => Failure {
                    error: format!("{what}: {error}"),
                    retry: true,
                    after: None,
                },
            };
            if !failure.retry || attempt == self.settings.max_attempts.max(1) {
                tracing::warn!(error = %failure.error, attempt, "alert not delivered, given up");
                self.stats.failed(&failure.error);
                return false;
            }
            self.stats.retried(&failure.error);
            let wait = failure.after.unwrap_or(delay).min(self.settings.retry_max);
            tokio::select! {
                () = self.stop.cancelled() => return false,
                () = tokio::time::sleep(wait) => {}
            }
            delay = (delay * 2).min(self.settings.retry_max);
        }
        false
    }
}

#[cfg(test)]
mod tests;
