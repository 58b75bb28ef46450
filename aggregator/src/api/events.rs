//! `/events`: the live stream as Server-Sent Events. Each change is an `event: change` with
//! its resume id; a reconnecting client sends `Last-Event-ID` (or `since`) and gets what it
//! missed, or an `event: reset` when that is no longer kept.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use calipso_proto::{ObjectId, ObjectType};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiError, ApiResult, Caller, ErrorBody, Params, QueryParams};
use crate::service::Service;
use crate::service::events::{EventFilter, EventId, StreamItem};

pub fn routes() -> Router<Service> {
    Router::new().route("/events", get(stream))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    pub env_name: Option<String>,
    /// Comma-separated object types (of objects, link ends, focal points).
    pub types: Option<String>,
    pub host: Option<String>,
    /// Only the clique of this focal point and what it contains (needs `env_name`).
    pub focal_point: Option<String>,
    /// Resume after this event id (as `Last-Event-ID`).
    pub since: Option<String>,
}

impl QueryParams for EventParams {}

/// Follow committed object, link and clique changes.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventParams),
    responses((status = 200, description = "text/event-stream of `change` events (JSON of an Event) and `reset` events", content_type = "text/event-stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn stream(
    State(service): State<Service>,
    Caller(who): Caller,
    headers: HeaderMap,
    Params { params, .. }: Params<EventParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>> {
    let types = params
        .types
        .as_deref()
        .map(|list| {
            list.split(',')
                .map(|t| {
                    t.trim().parse::<ObjectType>().map_err(|_| {
                        ApiError::bad_request(format!("types: `{t}` is not an object type"))
                    })
                })
                .collect::<ApiResult<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    let resume = params.since.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let resume_after = resume.map(|text| text.parse::<EventId>()).transpose()?;
    let filter = EventFilter {
        environment: params.env_name,
        types,
        host: params.host,
        focal_point: params.focal_point.map(ObjectId::from_raw),
        resume_after,
    };
    let events = service.event_stream(&who, filter)?.map(|item| {
        Ok(match item {
            StreamItem::Event(event) => SseEvent::default()
                .event("change")
                .id(event.id.clone())
                .json_data(&*event)
                .unwrap_or_else(|_| SseEvent::default().event("change").data("{}")),
            StreamItem::Reset(reason) => SseEvent::default().event("reset").data(reason),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
