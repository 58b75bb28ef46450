//! Settings: clique types and constraints (admin), environment configurations (create and
//! delete: admin; change: edit-env), users (admin).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use calipso_proto::ObjectType;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiError, ApiResult, Body, Caller, ErrorBody, Params, QueryParams};
use crate::cliques::{CliqueConstraint, CliqueType};
use crate::service::Service;
use crate::service::settings::{EnvironmentInput, EnvironmentView, UserInput, UserView, WriteMode};

pub fn routes() -> Router<Service> {
    Router::new()
        .route(
            "/clique_types",
            get(list_clique_types).post(create_clique_type),
        )
        .route(
            "/clique_types/{name}",
            get(get_clique_type)
                .put(replace_clique_type)
                .delete(delete_clique_type),
        )
        .route(
            "/clique_constraints",
            get(list_clique_constraints).post(put_clique_constraint),
        )
        .route(
            "/clique_constraints/{focal_point_type}",
            axum::routing::delete(delete_clique_constraint),
        )
        .route(
            "/environment_configs",
            get(list_environments).post(create_environment),
        )
        .route(
            "/environment_configs/{name}",
            get(get_environment)
                .put(replace_environment)
                .patch(patch_environment)
                .delete(delete_environment),
        )
        .route("/users", get(list_users))
        .route(
            "/users/{username}",
            get(get_user).put(put_user).delete(delete_user),
        )
}

/// Every clique type.
#[utoipa::path(get, path = "/api/v1/clique_types", tag = "settings",
    responses((status = 200, body = [CliqueType]), (status = 401, body = ErrorBody)))]
pub async fn list_clique_types(
    State(service): State<Service>,
    Caller(_): Caller,
) -> axum::Json<Vec<CliqueType>> {
    axum::Json(service.clique_types())
}

/// Create a clique type; link types must be ones the finders produce (or
/// `use_implicit_links`).
#[utoipa::path(post, path = "/api/v1/clique_types", tag = "settings",
    request_body = CliqueType,
    responses((status = 201, body = CliqueType), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn create_clique_type(
    State(service): State<Service>,
    Caller(who): Caller,
    Body(clique_type): Body<CliqueType>,
) -> ApiResult<(StatusCode, axum::Json<CliqueType>)> {
    service
        .put_clique_type(&who, clique_type.clone(), false)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(clique_type)))
}

#[utoipa::path(get, path = "/api/v1/clique_types/{name}", tag = "settings",
    params(("name" = String, Path)),
    responses((status = 200, body = CliqueType), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_clique_type(
    State(service): State<Service>,
    Caller(_): Caller,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<CliqueType>> {
    Ok(axum::Json(service.clique_type(&name)?))
}

/// Replace a clique type (the body's name, if given, must be the path's).
#[utoipa::path(put, path = "/api/v1/clique_types/{name}", tag = "settings",
    params(("name" = String, Path)), request_body = CliqueType,
    responses((status = 200, body = CliqueType), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn replace_clique_type(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Body(clique_type): Body<CliqueType>,
) -> ApiResult<axum::Json<CliqueType>> {
    if clique_type.name != name {
        return Err(ApiError::bad_request(format!(
            "the body names `{}`, the path `{name}`",
            clique_type.name
        )));
    }
    service
        .put_clique_type(&who, clique_type.clone(), true)
        .await?;
    Ok(axum::Json(clique_type))
}

#[utoipa::path(delete, path = "/api/v1/clique_types/{name}", tag = "settings",
    params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_clique_type(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    service.delete_clique_type(&who, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every clique constraint.
#[utoipa::path(get, path = "/api/v1/clique_constraints", tag = "settings",
    responses((status = 200, body = [CliqueConstraint]), (status = 401, body = ErrorBody)))]
pub async fn list_clique_constraints(
    State(service): State<Service>,
    Caller(_): Caller,
) -> axum::Json<Vec<CliqueConstraint>> {
    axum::Json(service.clique_constraints())
}

/// Create or replace the constraint of a focal point type (optionally per environment).
#[utoipa::path(post, path = "/api/v1/clique_constraints", tag = "settings",
    request_body = CliqueConstraint,
    responses((status = 201, body = CliqueConstraint), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn put_clique_constraint(
    State(service): State<Service>,
    Caller(who): Caller,
    Body(constraint): Body<CliqueConstraint>,
) -> ApiResult<(StatusCode, axum::Json<CliqueConstraint>)> {
    service
        .put_clique_constraint(&who, constraint.clone())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(constraint)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConstraintParams {
    /// The environment of an environment-specific constraint.
    pub environment: Option<String>,
}

impl QueryParams for ConstraintParams {}

#[utoipa::path(delete, path = "/api/v1/clique_constraints/{focal_point_type}", tag = "settings",
    params(("focal_point_type" = String, Path), ConstraintParams),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_clique_constraint(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(focal_point_type): Path<String>,
    Params { params, .. }: Params<ConstraintParams>,
) -> ApiResult<StatusCode> {
    let focal: ObjectType = focal_point_type.parse().map_err(|_| {
        ApiError::bad_request(format!("`{focal_point_type}` is not an object type"))
    })?;
    service
        .delete_clique_constraint(&who, focal, params.environment.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The environments the caller may see; secrets are listed by name, never returned.
#[utoipa::path(get, path = "/api/v1/environment_configs", tag = "settings",
    responses((status = 200, body = [EnvironmentView]), (status = 401, body = ErrorBody)))]
pub async fn list_environments(
    State(service): State<Service>,
    Caller(who): Caller,
) -> axum::Json<Vec<EnvironmentView>> {
    axum::Json(service.environment_configs(&who))
}

/// Create an environment (admin).
#[utoipa::path(post, path = "/api/v1/environment_configs", tag = "settings",
    request_body = EnvironmentInput,
    responses((status = 201, body = EnvironmentView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn create_environment(
    State(service): State<Service>,
    Caller(who): Caller,
    Body(input): Body<EnvironmentInput>,
) -> ApiResult<(StatusCode, axum::Json<EnvironmentView>)> {
    let name = input
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("request body: missing field `name`"))?;
    let view = service
        .write_environment(&who, &name, input, WriteMode::Create)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

#[utoipa::path(get, path = "/api/v1/environment_configs/{name}", tag = "settings",
    params(("name" = String, Path)),
    responses((status = 200, body = EnvironmentView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_environment(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<EnvironmentView>> {
    Ok(axum::Json(service.environment(&who, &name)?))
}

/// Replace an environment's configuration (edit-env); secrets left out keep their values.
#[utoipa::path(put, path = "/api/v1/environment_configs/{name}", tag = "settings",
    params(("name" = String, Path)), request_body = EnvironmentInput,
    responses((status = 200, body = EnvironmentView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn replace_environment(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Body(input): Body<EnvironmentInput>,
) -> ApiResult<axum::Json<EnvironmentView>> {
    let view = service
        .write_environment(&who, &name, input, WriteMode::Replace)
        .await?;
    Ok(axum::Json(view))
}

/// Change the fields given (edit-env).
#[utoipa::path(patch, path = "/api/v1/environment_configs/{name}", tag = "settings",
    params(("name" = String, Path)), request_body = EnvironmentInput,
    responses((status = 200, body = EnvironmentView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn patch_environment(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Body(input): Body<EnvironmentInput>,
) -> ApiResult<axum::Json<EnvironmentView>> {
    let view = service
        .write_environment(&who, &name, input, WriteMode::Merge)
        .await?;
    Ok(axum::Json(view))
}

/// Delete an environment that holds no objects (admin); its history stays.
#[utoipa::path(delete, path = "/api/v1/environment_configs/{name}", tag = "settings",
    params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_environment(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    service.delete_environment(&who, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every user (admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "settings",
    responses((status = 200, body = [UserView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_users(
    State(service): State<Service>,
    Caller(who): Caller,
) -> ApiResult<axum::Json<Vec<UserView>>> {
    Ok(axum::Json(service.users(&who).await?))
}

#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "settings",
    params(("username" = String, Path)),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(username): Path<String>,
) -> ApiResult<axum::Json<UserView>> {
    Ok(axum::Json(service.user(&who, &username).await?))
}

/// Create or replace a user and their grants (admin).
#[utoipa::path(put, path = "/api/v1/users/{username}", tag = "settings",
    params(("username" = String, Path)), request_body = UserInput,
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn put_user(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(username): Path<String>,
    Body(input): Body<UserInput>,
) -> ApiResult<axum::Json<UserView>> {
    Ok(axum::Json(service.put_user(&who, &username, input).await?))
}

/// Delete a user and revoke their tokens (admin).
#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "settings",
    params(("username" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_user(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(username): Path<String>,
) -> ApiResult<StatusCode> {
    service.delete_user(&who, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}
