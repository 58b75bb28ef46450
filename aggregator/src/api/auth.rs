//! `/auth/tokens`: log in (user name and password → an opaque token with expiry), see who the
//! token stands for, revoke it.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, Body, Caller, ErrorBody};
use crate::service::Service;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Shown once; send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub username: String,
    /// `password` or `ldap`.
    pub method: String,
    pub issued_at: String,
    pub expires_at: String,
    #[schema(value_type = Object)]
    pub grants: crate::store::Grants,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub username: String,
    #[schema(value_type = Object)]
    pub grants: crate::store::Grants,
}

pub fn routes() -> Router<Service> {
    Router::new().route(
        "/auth/tokens",
        post(create_token).get(current_token).delete(revoke_token),
    )
}

/// Log in: local accounts first, then LDAP when configured.
#[utoipa::path(post, path = "/api/v1/auth/tokens", tag = "auth", security(()),
    request_body = Credentials,
    responses((status = 201, body = TokenView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn create_token(
    State(service): State<Service>,
    axum::extract::ConnectInfo(super::ClientAddr(client)): axum::extract::ConnectInfo<
        super::ClientAddr,
    >,
    Body(credentials): Body<Credentials>,
) -> ApiResult<(StatusCode, axum::Json<TokenView>)> {
    let issued = service
        .auth()
        .login(
            &credentials.username,
            &credentials.password,
            Some(client.ip()),
        )
        .await?;
    let method = match issued.record.method {
        crate::store::AuthMethod::Password => "password",
        crate::store::AuthMethod::Ldap => "ldap",
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenView {
            token: issued.token,
            username: issued.record.username,
            method: method.into(),
            issued_at: issued.record.issued_at.to_string(),
            expires_at: issued.record.expires_at.to_string(),
            grants: issued.record.grants,
        }),
    ))
}

/// Who the token stands for.
#[utoipa::path(get, path = "/api/v1/auth/tokens", tag = "auth",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn current_token(Caller(who): Caller) -> axum::Json<WhoAmI> {
    axum::Json(WhoAmI {
        username: who.username,
        grants: who.grants,
    })
}

/// Revoke the token sent with the request.
#[utoipa::path(delete, path = "/api/v1/auth/tokens", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn revoke_token(
    State(service): State<Service>,
    Caller(who): Caller,
) -> ApiResult<StatusCode> {
    service.auth().revoke(&who).await?;
    Ok(StatusCode::NO_CONTENT)
}
