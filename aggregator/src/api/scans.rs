//! Scans (request one, follow its status) and scheduled scans.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiError, ApiResult, Body, Caller, ErrorBody, Params, QueryParams};
use crate::service::Service;
use crate::service::scans::{ScanRequest, ScanView, ScheduleRequest, ScheduleView};
use crate::store::ScanStatus;

pub fn routes() -> Router<Service> {
    Router::new()
        .route("/scans", get(list_scans).post(create_scan))
        .route("/scans/{id}", get(get_scan))
        .route(
            "/scheduled_scans",
            get(list_schedules).post(create_schedule),
        )
        .route(
            "/scheduled_scans/{id}",
            axum::routing::delete(delete_schedule),
        )
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScanParams {
    pub env_name: String,
    /// `pending`, `running`, `completed`, `completed_with_errors` or `failed`.
    pub status: Option<String>,
}

impl QueryParams for ScanParams {}

/// An environment's scans, oldest first.
#[utoipa::path(get, path = "/api/v1/scans", tag = "scans", params(ScanParams),
    responses((status = 200, body = [ScanView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_scans(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<ScanParams>,
) -> ApiResult<axum::Json<Vec<ScanView>>> {
    let status = params
        .status
        .as_deref()
        .map(|text| {
            ScanStatus::ALL
                .into_iter()
                .find(|s| s.as_str() == text)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("status: `{text}` is not a scan status"))
                })
        })
        .transpose()?;
    Ok(axum::Json(
        service.scans(&who, &params.env_name, status).await?,
    ))
}

/// Request a scan: `full` / `inventory_only` (agents resend snapshots), `links_only` or
/// `cliques_only` (rebuilt from the stored model). Edit-env.
#[utoipa::path(post, path = "/api/v1/scans", tag = "scans", request_body = ScanRequest,
    responses((status = 202, body = ScanView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn create_scan(
    State(service): State<Service>,
    Caller(who): Caller,
    Body(request): Body<ScanRequest>,
) -> ApiResult<(StatusCode, axum::Json<ScanView>)> {
    let scan = service.request_scan(&who, request).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(scan)))
}

#[utoipa::path(get, path = "/api/v1/scans/{id}", tag = "scans", params(("id" = String, Path)),
    responses((status = 200, body = ScanView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_scan(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ScanView>> {
    Ok(axum::Json(service.scan(&who, &id).await?))
}

/// The scheduled scans of the environments the caller may see.
#[utoipa::path(get, path = "/api/v1/scheduled_scans", tag = "scans",
    responses((status = 200, body = [ScheduleView]), (status = 401, body = ErrorBody)))]
pub async fn list_schedules(
    State(service): State<Service>,
    Caller(who): Caller,
) -> ApiResult<axum::Json<Vec<ScheduleView>>> {
    Ok(axum::Json(service.schedules(&who).await?))
}

/// Schedule a scan every `freq` (HOURLY … YEARLY) or `interval_seconds`. Edit-env.
#[utoipa::path(post, path = "/api/v1/scheduled_scans", tag = "scans",
    request_body = ScheduleRequest,
    responses((status = 201, body = ScheduleView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn create_schedule(
    State(service): State<Service>,
    Caller(who): Caller,
    Body(request): Body<ScheduleRequest>,
) -> ApiResult<(StatusCode, axum::Json<ScheduleView>)> {
    let schedule = service.create_schedule(&who, request).await?;
    Ok((StatusCode::CREATED, axum::Json(schedule)))
}

#[utoipa::path(delete, path = "/api/v1/scheduled_scans/{id}", tag = "scans",
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_schedule(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    service.delete_schedule(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
