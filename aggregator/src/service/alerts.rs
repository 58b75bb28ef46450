//! Alert rules and silences as operators manage them: an environment's viewers read them, its
//! editors (and admins) change them. A webhook's secret is write-only (sealed at rest, never
//! returned); every change is put in force at once.

use calipso_proto::{ObjectId, ObjectType, StatusLevel, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::scans::{MAX_INTERVAL_SECONDS, add_seconds, new_id};
use super::settings::validate_name;
use super::{Principal, Service, ServiceError, parse_time};
use crate::alerts::{AlertRule, DeliveryReport, Silence, Webhook, webhook_secret_field};
use crate::store::Store;

/// Rules per environment, and silences per environment.
const MAX_RULES: usize = 100;
const MAX_SILENCES: usize = 1000;
/// A webhook secret's bounds: long enough to resist guessing, short enough to keep.
const SECRET_LENGTH: std::ops::RangeInclusive<usize> = 16..=1024;
const MAX_URL: usize = 2048;
const MAX_FOCAL_POINTS: usize = 100;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleInput {
    pub environment: String,
    /// 1 to 64 of A-Z a-z 0-9 . _ -
    pub name: String,
    /// `warning` (the default: warning and error), `error`, or `unknown` (every level but ok).
    #[schema(value_type = Option<String>, example = "error")]
    pub min_level: Option<StatusLevel>,
    /// Object types (`host_pnic`, `vnic`, …); all when empty.
    #[serde(default)]
    pub object_types: Vec<String>,
    /// Focal points whose cliques the rule covers; all objects when empty.
    #[serde(default)]
    pub focal_points: Vec<String>,
    /// Also send when a change that fired is over (default true).
    pub send_resolved: Option<bool>,
    pub webhook: Option<WebhookInput>,
    /// Alertmanager's base URL; alerts go to its `/api/v2/alerts`.
    pub alertmanager: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    pub url: String,
    /// The HMAC-SHA256 key of the signature header (16 to 1024 bytes). Write-only: leave it
    /// out when replacing a rule to keep the stored one.
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertRuleView {
    pub id: String,
    pub environment: String,
    pub name: String,
    pub min_level: String,
    pub object_types: Vec<String>,
    pub focal_points: Vec<String>,
    pub send_resolved: bool,
    pub webhook: Option<WebhookView>,
    pub alertmanager: Option<String>,
    pub created_by: String,
    pub created_at: String,
    /// What became of its alerts since the aggregator started, per destination.
    pub delivery: Vec<DestinationReport>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    pub url: String,
    pub secret_set: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DestinationReport {
    /// `webhook` or `alertmanager`.
    pub destination: String,
    #[serde(flatten)]
    pub report: DeliveryReport,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceInput {
    pub environment: String,
    /// Matchers: every one given must match; none silences the whole environment.
    pub object: Option<String>,
    pub object_type: Option<String>,
    pub host: Option<String>,
    /// Everything in this focal point's clique.
    pub focal_point: Option<String>,
    /// RFC 3339; now when absent.
    pub starts_at: Option<String>,
    /// RFC 3339, or `duration_seconds` after the start; at most a year ahead.
    pub ends_at: Option<String>,
    pub duration_seconds: Option<u64>,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SilenceView {
    #[serde(flatten)]
    pub silence: Silence,
    /// In force now.
    pub active: bool,
}

fn rule_view(rule: &AlertRule, delivery: Vec<DestinationReport>) -> AlertRuleView {
    AlertRuleView {
        id: rule.id.clone(),
        environment: rule.environment.clone(),
        name: rule.name.clone(),
        min_level: rule.min_level.as_str().to_owned(),
        object_types: rule.object_types.iter().map(ToString::to_string).collect(),
        focal_points: rule.focal_points.iter().map(ToString::to_string).collect(),
        send_resolved: rule.send_resolved,
        webhook: rule.webhook.as_ref().map(|w| WebhookView {
            url: w.url.clone(),
            secret_set: !w.secret.is_empty(),
        }),
        alertmanager: rule.alertmanager.clone(),
        created_by: rule.created_by.clone(),
        created_at: rule.created_at.to_string(),
        delivery,
    }
}

/// An http(s) URL, or why not.
fn check_url(field: &str, url: &str) -> Result<(), ServiceError> {
    let bad = |why: &str| ServiceError::BadRequest(format!("{field}: `{url}` {why}"));
    if url.len() > MAX_URL {
        return Err(bad(&format!("is longer than {MAX_URL} bytes")));
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|error| bad(&format!("is not a URL: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("must be an http:// or https:// URL with a host"));
    }
    Ok(())
}

fn parse_object_type(field: &str, text: &str) -> Result<ObjectType, ServiceError> {
    text.parse()
        .map_err(|_| ServiceError::BadRequest(format!("{field}: `{text}` is not an object type")))
}

fn not_found(what: &str, id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no {what} `{id}`"))
}

impl Service {
    /// The rules of the environments the caller may see (of one, when given).
    pub async fn alert_rules(
        &self,
        who: &Principal,
        environment: Option<&str>,
    ) -> Result<Vec<AlertRuleView>, ServiceError> {
        Ok(self
            .store()
            .alert_rules()
            .await?
            .iter()
            .filter(|r| environment.is_none_or(|e| r.environment == e))
            .filter(|r| who.require_view(&r.environment).is_ok())
            .map(|r| rule_view(r, self.delivery(&r.id)))
            .collect())
    }

    pub async fn alert_rule(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<AlertRuleView, ServiceError> {
        let rule = self.stored_rule(id).await?;
        who.require_view(&rule.environment)
            .map_err(|_| not_found("alert rule", id))?;
        Ok(rule_view(&rule, self.delivery(id)))
    }

    /// Creates a rule (`id` None) or replaces one.
    pub async fn put_alert_rule(
        &self,
        who: &Principal,
        id: Option<&str>,
        input: AlertRuleInput,
    ) -> Result<AlertRuleView, ServiceError> {
        who.require_edit(&input.environment)?;
        let _settings = self.inner_settings_lock().await;
        let stored = self.store().alert_rules().await?;
        let previous = match id {
            Some(id) => {
                let previous = stored
                    .iter()
                    .find(|r| r.id == id)
                    .ok_or_else(|| not_found("alert rule", id))?;
                who.require_edit(&previous.environment)?;
                if previous.environment != input.environment {
                    return Err(ServiceError::BadRequest(format!(
                        "alert rule `{id}` belongs to environment `{}`: a rule cannot move",
                        previous.environment
                    )));
                }
                Some(previous)
            }
            None => {
                let count = stored
                    .iter()
                    .filter(|r| r.environment == input.environment)
                    .count();
                if count >= MAX_RULES {
                    return Err(ServiceError::Conflict(format!(
                        "environment `{}` has {MAX_RULES} alert rules, as many as it may",
                        input.environment
                    )));
                }
                None
            }
        };
        let rule = self.alert_rule_from(who, input, previous)?;
        self.store().put_alert_rule(&rule).await?;
        self.reload_alerts().await?;
        Ok(rule_view(&rule, self.delivery(&rule.id)))
    }

    fn alert_rule_from(
        &self,
        who: &Principal,
        input: AlertRuleInput,
        previous: Option<&AlertRule>,
    ) -> Result<AlertRule, ServiceError> {
        validate_name("alert rule name", &input.name)?;
        self.check_scope(&input.environment, None)?;
        let min_level = input.min_level.unwrap_or(StatusLevel::Warning);
        if min_level == StatusLevel::Ok {
            return Err(ServiceError::BadRequest(
                "min_level: `ok` would fire on nothing; use warning, error or unknown".into(),
            ));
        }
        let object_types = input
            .object_types
            .iter()
            .map(|t| parse_object_type("object_types", t))
            .collect::<Result<Vec<_>, _>>()?;
        if input.focal_points.len() > MAX_FOCAL_POINTS {
            return Err(ServiceError::BadRequest(format!(
                "focal_points: at most {MAX_FOCAL_POINTS}"
            )));
        }
        if input.webhook.is_none() && input.alertmanager.is_none() {
            return Err(ServiceError::BadRequest(
                "a rule needs somewhere to send: `webhook` and/or `alertmanager`".into(),
            ));
        }
        let (id, created_by, created_at) = match previous {
            Some(p) => (p.id.clone(), p.created_by.clone(), p.created_at),
            None => {
                let now = Timestamp::now();
                (new_id("alert", now)?, who.username.clone(), now)
            }
        };
        let webhook = input
            .webhook
            .map(|webhook| {
                check_url("webhook.url", &webhook.url)?;
                let sealed = match webhook.secret {
                    Some(secret) => {
                        if !SECRET_LENGTH.contains(&secret.len()) {
                            return Err(ServiceError::BadRequest(format!(
                                "webhook.secret must be {} to {} bytes",
                                SECRET_LENGTH.start(),
                                SECRET_LENGTH.end()
                            )));
                        }
                        self.sink().secrets().seal_value(
                            &input.environment,
                            &webhook_secret_field(&id),
                            &secret,
                        )
                    }
                    None => previous
                        .and_then(|p| p.webhook.as_ref())
                        .map(|w| w.secret.clone())
                        .ok_or_else(|| {
                            ServiceError::BadRequest(
                                "webhook.secret is required: receivers check the signature it makes"
                                    .into(),
                            )
                        })?,
                };
                Ok(Webhook {
                    url: webhook.url,
                    secret: sealed,
                })
            })
            .transpose()?;
        if let Some(url) = &input.alertmanager {
            check_url("alertmanager", url)?;
        }
        Ok(AlertRule {
            id,
            environment: input.environment,
            name: input.name,
            min_level,
            object_types,
            focal_points: input
                .focal_points
                .into_iter()
                .map(ObjectId::from_raw)
                .collect(),
            send_resolved: input.send_resolved.unwrap_or(true),
            webhook,
            alertmanager: input.alertmanager,
            created_by,
            created_at,
        })
    }

    pub async fn delete_alert_rule(&self, who: &Principal, id: &str) -> Result<(), ServiceError> {
        let rule = self.stored_rule(id).await?;
        who.require_edit(&rule.environment)?;
        self.store().delete_alert_rule(id).await?;
        self.reload_alerts().await
    }

    async fn stored_rule(&self, id: &str) -> Result<AlertRule, ServiceError> {
        self.store()
            .alert_rules()
            .await?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| not_found("alert rule", id))
    }

    fn delivery(&self, rule: &str) -> Vec<DestinationReport> {
        self.alerting()
            .reports(rule)
            .into_iter()
            .map(|(destination, report)| DestinationReport {
                destination: destination.to_owned(),
                report,
            })
            .collect()
    }

    /// The silences of the environments the caller may see (of one, when given).
    pub async fn silences(
        &self,
        who: &Principal,
        environment: Option<&str>,
    ) -> Result<Vec<SilenceView>, ServiceError> {
        let now = Timestamp::now();
        Ok(self
            .store()
            .silences()
            .await?
            .into_iter()
            .filter(|s| environment.is_none_or(|e| s.environment == e))
            .filter(|s| who.require_view(&s.environment).is_ok())
            .map(|silence| SilenceView {
                active: silence.active(now),
                silence,
            })
            .collect())
    }

    pub async fn create_silence(
        &self,
        who: &Principal,
        input: SilenceInput,
    ) -> Result<SilenceView, ServiceError> {
        who.require_edit(&input.environment)?;
        self.check_scope(&input.environment, None)?;
        let now = Timestamp::now();
        let starts_at = match &input.starts_at {
            Some(text) => parse_time("starts_at", text)?,
            None => now,
        };
        let ends_at = match (&input.ends_at, input.duration_seconds) {
            (Some(text), None) => parse_time("ends_at", text)?,
            (None, Some(seconds)) if seconds > 0 => add_seconds(starts_at, seconds),
            _ => {
                return Err(ServiceError::BadRequest(
                    "give one of `ends_at` or `duration_seconds` (more than 0)".into(),
                ));
            }
        };
        let farthest = add_seconds(now, MAX_INTERVAL_SECONDS);
        if ends_at <= starts_at || ends_at <= now || ends_at > farthest || starts_at > farthest {
            return Err(ServiceError::BadRequest(format!(
                "a silence must end after it starts and after now, within a year (by {farthest})"
            )));
        }
        let _settings = self.inner_settings_lock().await;
        let count = self
            .store()
            .silences()
            .await?
            .iter()
            .filter(|s| s.environment == input.environment && s.ends_at > now)
            .count();
        if count >= MAX_SILENCES {
            return Err(ServiceError::Conflict(format!(
                "environment `{}` has {MAX_SILENCES} silences, as many as it may",
                input.environment
            )));
        }
        let silence = Silence {
            id: new_id("silence", now)?,
            environment: input.environment,
            object: input.object.map(ObjectId::from_raw),
            object_type: input
                .object_type
                .as_deref()
                .map(|t| parse_object_type("object_type", t))
                .transpose()?,
            host: input.host,
            focal_point: input.focal_point.map(ObjectId::from_raw),
            starts_at,
            ends_at,
            comment: input.comment,
            created_by: who.username.clone(),
            created_at: now,
        };
        self.store().put_silence(&silence).await?;
        self.reload_alerts().await?;
        Ok(SilenceView {
            active: silence.active(now),
            silence,
        })
    }

    pub async fn delete_silence(&self, who: &Principal, id: &str) -> Result<(), ServiceError> {
        let silence = self
            .store()
            .silences()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| not_found("silence", id))?;
        who.require_edit(&silence.environment)?;
        self.store().delete_silence(id).await?;
        self.reload_alerts().await
    }

    /// Puts the stored rules and silences in force. A rule whose webhook secret cannot be
    /// opened (another key) is left out with an error in the log, not every rule.
    pub async fn reload_alerts(&self) -> Result<(), ServiceError> {
        let secrets = self.sink().secrets();
        let rules = self
            .store()
            .alert_rules()
            .await?
            .into_iter()
            .filter_map(|mut rule| {
                if let Some(webhook) = &mut rule.webhook {
                    let field = webhook_secret_field(&rule.id);
                    match secrets.open_value(&rule.environment, &field, &webhook.secret) {
                        Ok(secret) => webhook.secret = secret,
                        Err(error) => {
                            tracing::error!(rule = rule.id, %error, "alert rule left out");
                            return None;
                        }
                    }
                }
                Some(rule)
            })
            .collect();
        let silences = self.store().silences().await?;
        self.alerting().load(rules, silences);
        Ok(())
    }
}
