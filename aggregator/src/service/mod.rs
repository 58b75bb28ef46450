//! The service layer: everything the API does, without HTTP. Handlers in [`crate::api`] parse a
//! request, call one method here with the caller's [`Principal`], and render the result.
//!
//! * [`analysis`]: impact, diagnosis (root cause) and path over the live model.
//! * [`auth`]: accounts, tokens, LDAP, grants.
//! * [`inventory`]: objects, links, cliques, aggregates — live from the engine or, with `at`,
//!   from the store's history.
//! * [`settings`]: clique types and constraints, environment configurations, users.
//! * [`scans`]: scan requests, their worker and the scheduler that runs scheduled scans.
//! * [`events`]: the live stream of committed changes, with resume.
//! * [`history`]: snapshots, diffs between two points, retention.
//! * [`browse`]: the environment tree a level at a time, an object's versions, the graph of
//!   a clique or a host with its objects.

pub mod alerts;
pub mod analysis;
pub mod auth;
pub mod browse;
pub mod events;
pub mod history;
pub mod inventory;
pub mod scans;
pub mod settings;

use std::sync::Arc;

use calipso_proto::Timestamp;

use crate::ingest::{DurableSink, IngestHandle, SinkError};
use crate::store::{AnyStore, StoreError};

pub use auth::{Auth, LdapSettings, Principal};

/// Why a request could not be served; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// Too many attempts: retry after the number of seconds given.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("{0}")]
    Internal(String),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
}

impl From<SinkError> for ServiceError {
    fn from(err: SinkError) -> Self {
        ServiceError::Unavailable(err.to_string())
    }
}

/// A page of a listing and where the next one starts.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The default and largest page sizes.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// Everything the API serves from.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sink: Arc<DurableSink>,
    ingest: Option<IngestHandle>,
    auth: Auth,
    events: events::EventLog,
    scans: scans::ScanQueue,
    alerting: crate::alerts::Alerting,
    /// Serializes read-modify-write changes of settings (clique rules, environments).
    settings: tokio::sync::Mutex<()>,
    /// Cancelled at shutdown: ends the live streams, which would otherwise hold the server.
    stop: tokio_util::sync::CancellationToken,
}

impl Service {
    /// A service over a sink; `ingest` lets scans ask connected agents for snapshots.
    pub fn new(
        sink: Arc<DurableSink>,
        ingest: Option<IngestHandle>,
        auth: Auth,
        streams: events::StreamLimits,
        alerts: crate::alerts::AlertSettings,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        let events = events::EventLog::start(&sink, streams);
        let alerting = crate::alerts::Alerting::new(alerts, stop.clone());
        Service {
            inner: Arc::new(Inner {
                sink,
                ingest,
                auth,
                events,
                scans: scans::ScanQueue::default(),
                alerting,
                settings: tokio::sync::Mutex::new(()),
                stop,
            }),
        }
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub fn sink(&self) -> &DurableSink {
        &self.inner.sink
    }

    pub fn store(&self) -> &AnyStore {
        self.inner.sink.store()
    }

    pub fn events(&self) -> &events::EventLog {
        &self.inner.events
    }

    pub fn alerting(&self) -> &crate::alerts::Alerting {
        &self.inner.alerting
    }

    async fn inner_settings_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.settings.lock().await
    }
}

/// Encodes a position as an opaque cursor.
fn encode_cursor(parts: &[&str]) -> String {
    auth::hex(parts.join("\n").as_bytes())
}

/// The parts of a cursor this service issued, or why it is not one.
fn decode_cursor(cursor: &str, parts: usize) -> Result<Vec<String>, ServiceError> {
    let invalid =
        || ServiceError::BadRequest(format!("cursor `{cursor}` is not one this API issued"));
    if !cursor.len().is_multiple_of(2) || cursor.len() > 8192 {
        return Err(invalid());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let found: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if found.len() == parts {
        Ok(found)
    } else {
        Err(invalid())
    }
}

/// An RFC 3339 time from a request, naming the field on error.
fn parse_time(field: &str, text: &str) -> Result<Timestamp, ServiceError> {
    text.parse().map_err(|_| {
        ServiceError::BadRequest(format!(
            "{field}: `{text}` is not an RFC 3339 time (2026-11-22T08:00:00Z)"
        ))
    })
}

/// Clamps a requested page size.
fn page_limit(limit: Option<usize>) -> Result<usize, ServiceError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(ServiceError::BadRequest("limit must be at least 1".into())),
        Some(n) if n > MAX_LIMIT => Err(ServiceError::BadRequest(format!(
            "limit must be at most {MAX_LIMIT}"
        ))),
        Some(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let cursor = encode_cursor(&["vnic", "host:a/vnic:tap\u{e9}"]);
        assert_eq!(
            decode_cursor(&cursor, 2).expect("valid"),
            vec!["vnic".to_owned(), "host:a/vnic:tap\u{e9}".to_owned()]
        );
        for bad in ["zz", "abc", "ff", &encode_cursor(&["one"])] {
            assert!(decode_cursor(bad, 2).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(page_limit(None).ok(), Some(DEFAULT_LIMIT));
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(MAX_LIMIT + 1)).is_err());
    }
}
