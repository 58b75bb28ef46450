//! Alertmanager: alerts POSTed to `/api/v2/alerts` as it expects them (labels, annotations,
//! `startsAt` / `endsAt`). Alertmanager resolves an alert it stops hearing of, so the worker
//! keeps what is firing and posts it again every `alertmanager_repeat`; a resolved change is
//! posted with its `endsAt`.

use std::collections::{BTreeMap, HashMap};

use calipso_proto::{StatusLevel, Timestamp};
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Alert, AlertState, Worker};

/// One alert in Alertmanager's `PostableAlert` shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PostableAlert {
    labels: BTreeMap<&'static str, String>,
    annotations: BTreeMap<&'static str, String>,
    starts_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    ends_at: Option<Timestamp>,
}

impl PostableAlert {
    /// Labels identify an alert in Alertmanager: the subject, the rule and the level (so a
    /// warning that becomes an error is a new alert, and the warning is resolved).
    fn firing(alert: &Alert, severity: StatusLevel, starts_at: Timestamp) -> Self {
        let mut labels = BTreeMap::from([
            ("alertname", "CalipsoHealth".to_owned()),
            ("environment", alert.environment.clone()),
            ("object", alert.object.clone()),
            (
                "object_type",
                alert
                    .object_types
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("severity", severity.as_str().to_owned()),
            ("rule", alert.rule.name.clone()),
        ]);
        if let Some(host) = &alert.host {
            labels.insert("host", host.clone());
        }
        if let Some(link) = &alert.link {
            labels.insert("link", link.clone());
        }
        let mut annotations = BTreeMap::from([("summary", alert.message.clone())]);
        if !alert.text.is_empty() {
            annotations.insert("description", alert.text.clone());
        }
        if !alert.perfdata.is_empty() {
            annotations.insert("perfdata", alert.perfdata.clone());
        }
        PostableAlert {
            labels,
            annotations,
            starts_at,
            ends_at: None,
        }
    }

    fn ended(mut self, at: Timestamp) -> Self {
        self.ends_at = Some(at);
        self
    }
}

/// What is firing, by subject; and what one alert changes in it (the alerts to post).
#[derive(Debug, Default)]
pub(super) struct Firing {
    alerts: HashMap<String, PostableAlert>,
}

impl Firing {
    pub(super) fn apply(&mut self, alert: &Alert) -> Vec<PostableAlert> {
        let key = alert.subject_key();
        let previous = self.alerts.remove(&key);
        match alert.status {
            AlertState::Firing => {
                let starts_at = previous.as_ref().map_or(alert.at, |p| p.starts_at);
                let now = PostableAlert::firing(alert, alert.level, starts_at);
                let mut post = Vec::new();
                if let Some(previous) = previous.filter(|p| p.labels != now.labels) {
                    post.push(previous.ended(alert.at));
                }
                self.alerts.insert(key, now.clone());
                post.push(now);
                post
            }
            AlertState::Resolved => match previous {
                Some(previous) => vec![previous.ended(alert.at)],
                // Not seen firing (the aggregator restarted since): resolve what it would be.
                None => {
                    let was = alert.previous_level.unwrap_or(alert.level);
                    vec![PostableAlert::firing(alert, was, alert.at).ended(alert.at)]
                }
            },
        }
    }

    pub(super) fn all(&self) -> Vec<PostableAlert> {
        self.alerts.values().cloned().collect()
    }
}

pub(super) async fn run(worker: Worker, base: String, mut alerts: mpsc::Receiver<Alert>) {
    let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    let what = format!("Alertmanager {url}");
    let mut firing = Firing::default();
    let mut repeat = tokio::time::interval(worker.settings.alertmanager_repeat);
    repeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    repeat.tick().await;
    loop {
        let post = tokio::select! {
            () = worker.stop.cancelled() => return,
            alert = alerts.recv() => match alert {
                Some(alert) => firing.apply(&alert),
                None => return,
            },
            _ = repeat.tick() => firing.all(),
        };
        if post.is_empty() {
            continue;
        }
        let body = match serde_json::to_vec(&post) {
            Ok(body) => body,
            Err(error) => {
                worker
                    .stats
                    .failed(&format!("cannot encode alerts: {error}"));
                continue;
            }
        };
        worker
            .deliver(&what, || {
                worker
                    .http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await;
    }
}
