//! History: named snapshots (`/snapshots`) and the difference between two points (`/diff`).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use utoipa::IntoParams;

use super::inventory::parse_object_type;
use super::{ApiResult, Body, Caller, ErrorBody, Params, QueryParams};
use crate::service::Service;
use crate::service::history::{Diff, DiffQuery, NewSnapshot, SnapshotView};

pub fn routes() -> Router<Service> {
    Router::new()
        .route("/snapshots", get(list_snapshots).post(create_snapshot))
        .route(
            "/snapshots/{name}",
            get(get_snapshot).delete(delete_snapshot),
        )
        .route("/diff", get(diff))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SnapshotParams {
    pub env_name: String,
}

impl QueryParams for SnapshotParams {}

/// Mark a point in an environment's history by name (now, or a past `at` within history):
/// history retention keeps every version in force then. Edit-env.
#[utoipa::path(post, path = "/api/v1/snapshots", tag = "history", request_body = NewSnapshot,
    responses((status = 201, body = SnapshotView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_snapshot(
    State(service): State<Service>,
    Caller(who): Caller,
    Body(request): Body<NewSnapshot>,
) -> ApiResult<(StatusCode, axum::Json<SnapshotView>)> {
    let snapshot = service.create_snapshot(&who, request).await?;
    Ok((StatusCode::CREATED, axum::Json(snapshot)))
}

/// An environment's snapshots, oldest first.
#[utoipa::path(get, path = "/api/v1/snapshots", tag = "history", params(SnapshotParams),
    responses((status = 200, body = [SnapshotView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_snapshots(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<SnapshotParams>,
) -> ApiResult<axum::Json<Vec<SnapshotView>>> {
    Ok(axum::Json(service.snapshots(&who, &params.env_name).await?))
}

#[utoipa::path(get, path = "/api/v1/snapshots/{name}", tag = "history",
    params(("name" = String, Path, description = "The snapshot's name"), SnapshotParams),
    responses((status = 200, body = SnapshotView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_snapshot(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Params { params, .. }: Params<SnapshotParams>,
) -> ApiResult<axum::Json<SnapshotView>> {
    Ok(axum::Json(
        service.snapshot(&who, &params.env_name, &name).await?,
    ))
}

/// Delete a snapshot: retention may then compact what it kept. Edit-env.
#[utoipa::path(delete, path = "/api/v1/snapshots/{name}", tag = "history",
    params(("name" = String, Path, description = "The snapshot's name"), SnapshotParams),
    responses((status = 204), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_snapshot(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Params { params, .. }: Params<SnapshotParams>,
) -> ApiResult<StatusCode> {
    service
        .delete_snapshot(&who, &params.env_name, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffParams {
    pub env_name: String,
    /// A snapshot's name or an RFC 3339 time.
    pub from: String,
    /// A snapshot's name, an RFC 3339 time, or `now` (the default).
    pub to: Option<String>,
    /// Only this host's objects, and links and cliques of its objects.
    pub host: Option<String>,
    /// Only objects of this type, links with an end of it, cliques of focal points of it.
    #[serde(rename = "type")]
    pub object_type: Option<String>,
}

impl QueryParams for DiffParams {}

/// What changed between two points: objects added, removed and changed (attribute by
/// attribute, old → new), links added, removed and changing state, cliques whose membership
/// changed.
#[utoipa::path(get, path = "/api/v1/diff", tag = "history", params(DiffParams),
    responses((status = 200, body = Diff), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn diff(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<DiffParams>,
) -> ApiResult<axum::Json<Diff>> {
    let query = DiffQuery {
        object_type: parse_object_type("type", params.object_type.as_deref())?,
        environment: params.env_name,
        from: params.from,
        to: params.to,
        host: params.host,
    };
    Ok(axum::Json(service.diff(&who, &query).await?))
}
