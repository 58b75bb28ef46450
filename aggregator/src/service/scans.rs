//! Scans and scheduled scans. A full (or inventory-only) scan asks every connected agent in
//! scope for a fresh snapshot and completes when each has been stored; a links-only or
//! cliques-only scan rebuilds from the stored model. A worker runs pending scans oldest first;
//! a scheduler turns due schedules into scans every second — the original's schedules never
//! ran (their status was one its manager did not pick up).

use std::collections::BTreeSet;
use std::time::Duration;

use calipso_proto::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::{Principal, Service, ServiceError};
use crate::ingest::AdminChange;
use crate::store::{ScanKind, ScanRecord, ScanStatus, ScheduleRecord, Store};

/// How long a full scan waits for the agents' snapshots.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);
/// The shortest interval of a schedule.
pub const MIN_INTERVAL_SECONDS: u64 = 10;
/// The longest interval and the farthest first run: a year (366 days).
pub const MAX_INTERVAL_SECONDS: u64 = 366 * 24 * 3600;

/// Wakes the worker when a scan is requested.
#[derive(Debug, Default)]
pub struct ScanQueue {
    wake: Notify,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    pub environment: String,
    /// One host; all of the environment's when absent.
    pub host: Option<String>,
    #[serde(default = "full")]
    #[schema(value_type = String, example = "full")]
    pub kind: ScanKind,
}

fn full() -> ScanKind {
    ScanKind::Full
}

/// The original's frequencies, and any interval in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Frequency {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Frequency {
    fn seconds(self) -> u64 {
        match self {
            Frequency::Hourly => 3_600,
            Frequency::Daily => 86_400,
            Frequency::Weekly => 7 * 86_400,
            Frequency::Monthly => 30 * 86_400,
            Frequency::Yearly => 365 * 86_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    pub environment: String,
    pub host: Option<String>,
    #[serde(default = "full")]
    #[schema(value_type = String, example = "links_only")]
    pub kind: ScanKind,
    /// One of `freq` or `interval_seconds`.
    pub freq: Option<Frequency>,
    pub interval_seconds: Option<u64>,
    /// The first run (RFC 3339); now when absent.
    pub first_run: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScanView {
    pub id: String,
    pub environment: String,
    pub host: Option<String>,
    pub kind: String,
    pub status: String,
    pub requested_by: String,
    pub requested_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub detail: String,
    pub schedule: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleView {
    pub id: String,
    pub environment: String,
    pub host: Option<String>,
    pub kind: String,
    pub interval_seconds: u64,
    pub next_run: String,
    pub last_run: Option<String>,
    pub last_scan: Option<String>,
    pub created_by: String,
}

pub fn scan_view(scan: &ScanRecord) -> ScanView {
    ScanView {
        id: scan.id.clone(),
        environment: scan.environment.clone(),
        host: scan.host.clone(),
        kind: scan.kind.as_str().to_owned(),
        status: scan.status.as_str().to_owned(),
        requested_by: scan.requested_by.clone(),
        requested_at: scan.requested_at.to_string(),
        started_at: scan.started_at.map(|t| t.to_string()),
        finished_at: scan.finished_at.map(|t| t.to_string()),
        detail: scan.detail.clone(),
        schedule: scan.schedule.clone(),
    }
}

pub fn schedule_view(schedule: &ScheduleRecord) -> ScheduleView {
    ScheduleView {
        id: schedule.id.clone(),
        environment: schedule.environment.clone(),
        host: schedule.host.clone(),
        kind: schedule.kind.as_str().to_owned(),
        interval_seconds: schedule.interval_seconds,
        next_run: schedule.next_run.to_string(),
        last_run: schedule.last_run.map(|t| t.to_string()),
        last_scan: schedule.last_scan.clone(),
        created_by: schedule.created_by.clone(),
    }
}

/// A sortable unique id: the time, then randomness.
pub(super) fn new_id(prefix: &str, at: Timestamp) -> Result<String, ServiceError> {
    Ok(format!(
        "{prefix}-{:016x}-{}",
        at.unix_micros(),
        super::auth::random_hex(4)?
    ))
}

pub(super) fn add_seconds(at: Timestamp, seconds: u64) -> Timestamp {
    let micros = i64::try_from(seconds.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    Timestamp::from_unix_micros(at.unix_micros().saturating_add(micros))
}

impl Service {
    /// The environment exists (and the host is one of its agents').
    pub(super) fn check_scope(
        &self,
        environment: &str,
        host: Option<&str>,
    ) -> Result<(), ServiceError> {
        let engine = self.sink().engine();
        if engine.environment(environment).is_none() {
            return Err(ServiceError::NotFound(format!(
                "no environment `{environment}`"
            )));
        }
        if let Some(host) = host {
            let known = self
                .sink()
                .agents()
                .iter()
                .any(|a| a.host == host && a.environment == environment);
            if !known {
                return Err(ServiceError::NotFound(format!(
                    "no agent of host `{host}` in environment `{environment}`"
                )));
            }
        }
        Ok(())
    }

    pub async fn request_scan(
        &self,
        who: &Principal,
        request: ScanRequest,
    ) -> Result<ScanView, ServiceError> {
        who.require_edit(&request.environment)?;
        self.check_scope(&request.environment, request.host.as_deref())?;
        let scan = self
            .submit_scan(
                &request.environment,
                request.host,
                request.kind,
                &who.username,
                None,
            )
            .await?;
        Ok(scan_view(&scan))
    }

    async fn submit_scan(
        &self,
        environment: &str,
        host: Option<String>,
        kind: ScanKind,
        requested_by: &str,
        schedule: Option<String>,
    ) -> Result<ScanRecord, ServiceError> {
        let now = Timestamp::now();
        let scan = ScanRecord {
            id: new_id("scan", now)?,
            environment: environment.to_owned(),
            host,
            kind,
            status: ScanStatus::Pending,
            requested_by: requested_by.to_owned(),
            requested_at: now,
            started_at: None,
            finished_at: None,
            detail: String::new(),
            schedule,
        };
        self.store().put_scan(&scan).await?;
        self.inner.scans.wake.notify_one();
        Ok(scan)
    }

    pub async fn scans(
        &self,
        who: &Principal,
        environment: &str,
        status: Option<ScanStatus>,
    ) -> Result<Vec<ScanView>, ServiceError> {
        who.require_view(environment)?;
        let scans = self.store().scans(Some(environment), status).await?;
        Ok(scans.iter().map(scan_view).collect())
    }

    pub async fn scan(&self, who: &Principal, id: &str) -> Result<ScanView, ServiceError> {
        let missing = || ServiceError::NotFound(format!("no scan `{id}`"));
        let scan = self.store().scan(id).await?.ok_or_else(missing)?;
        if !who.grants.can_view(&scan.environment) {
            return Err(missing());
        }
        Ok(scan_view(&scan))
    }

    pub async fn schedules(&self, who: &Principal) -> Result<Vec<ScheduleView>, ServiceError> {
        let schedules = self.store().schedules().await?;
        Ok(schedules
            .iter()
            .filter(|s| who.grants.can_view(&s.environment))
            .map(schedule_view)
            .collect())
    }

    pub async fn create_schedule(
        &self,
        who: &Principal,
        request: ScheduleRequest,
    ) -> Result<ScheduleView, ServiceError> {
        who.require_edit(&request.environment)?;
        self.check_scope(&request.environment, request.host.as_deref())?;
        let interval_seconds = match (request.freq, request.interval_seconds) {
            (Some(freq), None) => freq.seconds(),
            (None, Some(seconds))
                if (MIN_INTERVAL_SECONDS..=MAX_INTERVAL_SECONDS).contains(&seconds) =>
            {
                seconds
            }
            (None, Some(_)) => {
                return Err(ServiceError::BadRequest(format!(
                    "interval_seconds must be from {MIN_INTERVAL_SECONDS} to {MAX_INTERVAL_SECONDS} (a year)"
                )));
            }
            _ => {
                return Err(ServiceError::BadRequest(
                    "give exactly one of freq and interval_seconds".into(),
                ));
            }
        };
        let now = Timestamp::now();
        let next_run = match &request.first_run {
            Some(text) => text.parse::<Timestamp>().map_err(|_| {
                ServiceError::BadRequest(format!("first_run `{text}` is not an RFC 3339 time"))
            })?,
            None => now,
        };
        if next_run > add_seconds(now, MAX_INTERVAL_SECONDS) {
            return Err(ServiceError::BadRequest(format!(
                "first_run {next_run} is more than a year ahead"
            )));
        }
        let schedule = ScheduleRecord {
            id: new_id("schedule", now)?,
            environment: request.environment,
            host: request.host,
            kind: request.kind,
            interval_seconds,
            next_run,
            last_run: None,
            last_scan: None,
            created_by: who.username.clone(),
        };
        self.store().put_schedule(&schedule).await?;
        Ok(schedule_view(&schedule))
    }

    pub async fn delete_schedule(&self, who: &Principal, id: &str) -> Result<(), ServiceError> {
        let missing = || ServiceError::NotFound(format!("no scheduled scan `{id}`"));
        let found = self
            .store()
            .schedules()
            .await?
            .into_iter()
            .find(|s| s.id == id);
        let Some(schedule) = found else {
            // One that cannot be read (so not listed) is an admin's to remove.
            if who.require_admin().is_ok() && self.store().delete_schedule(id).await? {
                return Ok(());
            }
            return Err(missing());
        };
        if !who.grants.can_view(&schedule.environment) {
            return Err(missing());
        }
        who.require_edit(&schedule.environment)?;
        self.store().delete_schedule(id).await?;
        Ok(())
    }

    /// Runs the scan worker and the scheduler until `stop`.
    pub async fn run_scans(self, stop: CancellationToken) {
        if let Err(err) = self.fail_interrupted().await {
            tracing::error!(%err, "cannot mark interrupted scans");
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.inner.scans.wake.notified() => {}
                _ = tick.tick() => {
                    if let Err(err) = self.submit_due_schedules().await {
                        tracing::warn!(%err, "scheduled scans");
                    }
                }
            }
            if let Err(err) = self.run_pending().await {
                tracing::warn!(%err, "scans");
            }
        }
    }

    /// Scans that were running when the aggregator stopped cannot finish.
    async fn fail_interrupted(&self) -> Result<(), ServiceError> {
        for mut scan in self.store().scans(None, Some(ScanStatus::Running)).await? {
            scan.status = ScanStatus::Failed;
            scan.finished_at = Some(Timestamp::now());
            scan.detail = "the aggregator restarted while the scan ran".into();
            self.store().put_scan(&scan).await?;
        }
        Ok(())
    }

    async fn submit_due_schedules(&self) -> Result<(), ServiceError> {
        let now = Timestamp::now();
        for mut schedule in self.store().schedules().await? {
            if schedule.next_run > now {
                continue;
            }
            let scan = self
                .submit_scan(
                    &schedule.environment,
                    schedule.host.clone(),
                    schedule.kind,
                    &schedule.created_by,
                    Some(schedule.id.clone()),
                )
                .await?;
            // Runs missed while the aggregator was down are not replayed one by one.
            let mut next = schedule.next_run;
            while next <= now {
                next = add_seconds(next, schedule.interval_seconds);
            }
            schedule.next_run = next;
            schedule.last_run = Some(now);
            schedule.last_scan = Some(scan.id);
            self.store().put_schedule(&schedule).await?;
        }
        Ok(())
    }

    async fn run_pending(&self) -> Result<(), ServiceError> {
        for mut scan in self.store().scans(None, Some(ScanStatus::Pending)).await? {
            scan.status = ScanStatus::Running;
            scan.started_at = Some(Timestamp::now());
            self.store().put_scan(&scan).await?;
            let (status, detail) = match self.execute(&scan).await {
                Ok(result) => result,
                Err(err) => (ScanStatus::Failed, err.to_string()),
            };
            scan.status = status;
            scan.detail = detail;
            scan.finished_at = Some(Timestamp::now());
            self.store().put_scan(&scan).await?;
            tracing::info!(scan = %scan.id, status = scan.status.as_str(), detail = %scan.detail, "scan finished");
        }
        Ok(())
    }

    async fn execute(&self, scan: &ScanRecord) -> Result<(ScanStatus, String), ServiceError> {
        match scan.kind {
            ScanKind::LinksOnly | ScanKind::CliquesOnly => {
                let corrected = self
                    .sink()
                    .admin(AdminChange::Rebuild(scan.environment.clone(), scan.kind))
                    .await?
                    .map_err(ServiceError::NotFound)?;
                Ok((
                    ScanStatus::Completed,
                    format!("rebuilt; {corrected} versions differed from the incremental model"),
                ))
            }
            ScanKind::Full | ScanKind::InventoryOnly => self.resync(scan).await,
        }
    }

    /// Asks each connected agent in scope for a snapshot and waits until each is stored.
    async fn resync(&self, scan: &ScanRecord) -> Result<(ScanStatus, String), ServiceError> {
        let Some(ingest) = &self.inner.ingest else {
            return Ok((ScanStatus::Failed, "this aggregator takes no agents".into()));
        };
        let hosts: Vec<String> = self
            .sink()
            .agents()
            .into_iter()
            .filter(|a| a.environment == scan.environment)
            .filter(|a| scan.host.as_ref().is_none_or(|h| &a.host == h))
            .map(|a| a.host)
            .collect();
        let asked_at = Timestamp::now();
        let (asked, unreachable): (Vec<String>, Vec<String>) =
            hosts.into_iter().partition(|h| ingest.request_resync(h));
        if asked.is_empty() {
            return Ok((
                ScanStatus::Failed,
                format!(
                    "no agent in scope is connected (disconnected: {})",
                    unreachable.join(", ")
                ),
            ));
        }
        let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
        let mut waiting: BTreeSet<String> = asked.iter().cloned().collect();
        while !waiting.is_empty() && tokio::time::Instant::now() < deadline {
            waiting.retain(|host| {
                self.sink()
                    .last_snapshot(host)
                    .is_none_or(|stored| stored < asked_at)
            });
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let late: Vec<String> = waiting.into_iter().collect();
        let summary = format!(
            "{} of {} connected hosts sent a fresh snapshot",
            asked.len() - late.len(),
            asked.len()
        );
        let mut problems = Vec::new();
        if !unreachable.is_empty() {
            problems.push(format!("not connected: {}", unreachable.join(", ")));
        }
        if !late.is_empty() {
            problems.push(format!(
                "no snapshot within {SNAPSHOT_WAIT:?}: {}",
                late.join(", ")
            ));
        }
        if problems.is_empty() {
            Ok((ScanStatus::Completed, summary))
        } else {
            Ok((
                ScanStatus::CompletedWithErrors,
                format!("{summary}; {}", problems.join("; ")),
            ))
        }
    }
}
