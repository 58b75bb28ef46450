//! Alert rules (where health changes are sent) and silences (maintenance windows).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiResult, Body, Caller, ErrorBody, Params, QueryParams};
use crate::service::Service;
use crate::service::alerts::{AlertRuleInput, AlertRuleView, SilenceInput, SilenceView};

pub fn routes() -> Router<Service> {
    Router::new()
        .route("/alert_rules", get(list_rules).post(create_rule))
        .route(
            "/alert_rules/{id}",
            get(get_rule).put(replace_rule).delete(delete_rule),
        )
        .route("/silences", get(list_silences).post(create_silence))
        .route("/silences/{id}", axum::routing::delete(delete_silence))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EnvironmentParams {
    /// One environment; every one the caller may see when absent.
    pub env_name: Option<String>,
}

impl QueryParams for EnvironmentParams {}

/// Alert rules, with what became of their alerts since the aggregator started.
#[utoipa::path(get, path = "/api/v1/alert_rules", tag = "alerts", params(EnvironmentParams),
    responses((status = 200, body = [AlertRuleView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list_rules(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<EnvironmentParams>,
) -> ApiResult<axum::Json<Vec<AlertRuleView>>> {
    Ok(axum::Json(
        service
            .alert_rules(&who, params.env_name.as_deref())
            .await?,
    ))
}

/// Send an environment's health changes at `min_level` and above (of some object types, in
/// some cliques) to a webhook (signed: `X-Calipso-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">`) and/or Alertmanager. Edit-env.
#[utoipa::path(post, path = "/api/v1/alert_rules", tag = "alerts", request_body = AlertRuleInput,
    responses((status = 201, body = AlertRuleView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_rule(
    State(service): State<Service>,
    Caller(who): Caller,
    Body(input): Body<AlertRuleInput>,
) -> ApiResult<(StatusCode, axum::Json<AlertRuleView>)> {
    let rule = service.put_alert_rule(&who, None, input).await?;
    Ok((StatusCode::CREATED, axum::Json(rule)))
}

#[utoipa::path(get, path = "/api/v1/alert_rules/{id}", tag = "alerts",
    params(("id" = String, Path)),
    responses((status = 200, body = AlertRuleView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_rule(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<AlertRuleView>> {
    Ok(axum::Json(service.alert_rule(&who, &id).await?))
}

/// Replace a rule (a webhook secret left out stays). Edit-env.
#[utoipa::path(put, path = "/api/v1/alert_rules/{id}", tag = "alerts",
    params(("id" = String, Path)), request_body = AlertRuleInput,
    responses((status = 200, body = AlertRuleView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn replace_rule(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Body(input): Body<AlertRuleInput>,
) -> ApiResult<axum::Json<AlertRuleView>> {
    Ok(axum::Json(
        service.put_alert_rule(&who, Some(&id), input).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/alert_rules/{id}", tag = "alerts",
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_rule(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    service.delete_alert_rule(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Silences, the ended ones too (for 30 days), by end time.
#[utoipa::path(get, path = "/api/v1/silences", tag = "alerts", params(EnvironmentParams),
    responses((status = 200, body = [SilenceView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list_silences(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<EnvironmentParams>,
) -> ApiResult<axum::Json<Vec<SilenceView>>> {
    Ok(axum::Json(
        service.silences(&who, params.env_name.as_deref()).await?,
    ))
}

/// Hold back the alerts of what the matchers select (an object, an object type, a host, a
/// focal point's clique; all of the environment with none) from `starts_at` to `ends_at`.
/// Edit-env.
#[utoipa::path(post, path = "/api/v1/silences", tag = "alerts", request_body = SilenceInput,
    responses((status = 201, body = SilenceView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_silence(
    State(service): State<Service>,
    Caller(who): Caller,
    Body(input): Body<SilenceInput>,
) -> ApiResult<(StatusCode, axum::Json<SilenceView>)> {
    let silence = service.create_silence(&who, input).await?;
    Ok((StatusCode::CREATED, axum::Json(silence)))
}

#[utoipa::path(delete, path = "/api/v1/silences/{id}", tag = "alerts",
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_silence(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    service.delete_silence(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
