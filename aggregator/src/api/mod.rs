//! The REST API (`/api/v1`), thin over [`crate::service`]: each handler parses and validates
//! its request, calls one service method with the caller's principal, and renders JSON.
//!
//! * Every route but `/healthz`, the docs and token creation needs a token
//!   (`Authorization: Bearer …` or the original's `X-Auth-Token`).
//! * Query parameters are strict: an unknown one is a 400 naming it, and every value is parsed
//!   with an error naming the parameter.
//! * Errors are `{"error": {"code", "message"}}`; no request can produce a panic.

mod alerts;
mod analysis;
mod auth;
mod events;
mod history;
mod inventory;
mod scans;
mod serve;
mod settings;
pub mod tls;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use crate::service::{Principal, Service, ServiceError};

/// The largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// An error as the API returns it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds, for a `Retry-After` header.
    retry_after: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `unavailable`,
    /// `internal`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let (status, code) = match &err {
            ServiceError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ServiceError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ServiceError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ServiceError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ServiceError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
            }
            ServiceError::Internal(_) | ServiceError::Store(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        if status.is_server_error() {
            tracing::error!(%err, "request failed");
        }
        let retry_after = match &err {
            ServiceError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        ApiError {
            status,
            code,
            message: err.to_string(),
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The authenticated caller.
#[derive(Debug)]
pub struct Caller(pub Principal);

impl FromRequestParts<Service> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &Service) -> ApiResult<Self> {
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::from(ServiceError::Unauthorized(
                "this needs a token: POST /api/v1/auth/tokens, then send it as \
                 `Authorization: Bearer <token>`"
                    .into(),
            ))
        })?;
        Ok(Caller(service.auth().authenticate(&token).await?))
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().ok()?;
        let (scheme, token) = text.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.trim().to_owned())
}

/// Query parameters: every one known (a 400 names the unknown ones), except
/// `attributes:<key>` filters where a route takes them.
#[derive(Debug)]
pub struct Params<T> {
    pub params: T,
    pub attributes: Vec<(String, String)>,
    /// The values of the parameters that may be given more than once, in order.
    pub repeated: Vec<(String, String)>,
}

/// Query structs say whether they take `attributes:<key>` filters, and which parameters may be
/// given more than once (those are not fields of the struct: they come in `repeated`).
pub trait QueryParams: DeserializeOwned {
    const ATTRIBUTE_FILTERS: bool = false;
    const REPEATED: &'static [&'static str] = &[];
}

impl<T: QueryParams, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        Self::parse(&parts.uri)
    }
}

impl<T: QueryParams> Params<T> {
    /// The query parameters of `uri`, for a handler that chooses what to parse by its path.
    pub fn parse(uri: &axum::http::Uri) -> ApiResult<Self> {
        let raw = uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|err| ApiError::bad_request(format!("query string: {err}")))?;
        let mut attributes = Vec::new();
        let mut repeated = Vec::new();
        let mut rest = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (key, value) in pairs {
            if let Some(name) = key.strip_prefix("attributes:") {
                if !T::ATTRIBUTE_FILTERS {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter `{key}`: this route takes no attribute filters"
                    )));
                }
                if name.is_empty() {
                    return Err(ApiError::bad_request("`attributes:` needs a key name"));
                }
                attributes.push((name.to_owned(), value));
            } else if T::REPEATED.contains(&key.as_str()) {
                repeated.push((key, value));
            } else {
                if !seen.insert(key.clone()) {
                    return Err(ApiError::bad_request(format!(
                        "query parameter `{key}` is given twice"
                    )));
                }
                rest.push((key, value));
            }
        }
        let encoded = serde_urlencoded::to_string(&rest)
            .map_err(|err| ApiError::bad_request(format!("query string: {err}")))?;
        let params = serde_urlencoded::from_str(&encoded)
            .map_err(|err| ApiError::bad_request(format!("query parameters: {err}")))?;
        Ok(Params {
            params,
            attributes,
            repeated,
        })
    }
}

/// A JSON request body, with serde's message (field and position) on error.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> ApiResult<Self> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.starts_with("application/json"));
        if !json {
            return Err(ApiError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                message: "the body must be application/json".into(),
                retry_after: None,
            });
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|err| match err.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    code: "payload_too_large",
                    message: format!("the request body is larger than {MAX_BODY} bytes"),
                    retry_after: None,
                },
                _ => ApiError::bad_request(format!("request body: {err}")),
            })?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|err| ApiError::bad_request(format!("request body: {err}")))
    }
}

/// Parses an optional parameter, naming it on error.
pub fn parse_param<T: std::str::FromStr>(name: &str, value: Option<&str>) -> ApiResult<Option<T>> {
    value
        .map(|text| {
            text.parse::<T>()
                .map_err(|_| ApiError::bad_request(format!("{name}: `{text}` is not valid")))
        })
        .transpose()
}

/// `true`/`false`, naming the parameter on error.
pub fn parse_bool(name: &str, value: Option<&str>) -> ApiResult<Option<bool>> {
    match value {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}: `{other}` is neither true nor false"
        ))),
    }
}

/// An RFC 3339 time, naming the parameter on error.
pub fn parse_time(name: &str, value: Option<&str>) -> ApiResult<Option<calipso_proto::Timestamp>> {
    value
        .map(|text| {
            text.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "{name}: `{text}` is not an RFC 3339 time (2026-11-22T08:00:00Z)"
                ))
            })
        })
        .transpose()
}

/// Counts of things the API serves, for `GET /api/v1/constants`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Constants {
    pub object_types: Vec<String>,
    pub link_types: Vec<String>,
    pub link_states: Vec<String>,
    pub scan_kinds: Vec<String>,
    pub scan_statuses: Vec<String>,
    pub message_levels: Vec<String>,
    pub environment_types: Vec<String>,
    pub mechanism_drivers: Vec<String>,
    pub type_drivers: Vec<String>,
    pub configuration_targets: Vec<String>,
    pub schedule_frequencies: Vec<String>,
    pub roles: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// `GET /healthz`: liveness, no token needed — and so nothing about the environments (their
/// names and sizes are behind a token, in `/aggregates`).
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the API is under /api/v1 (see /api/docs)")
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Calipso aggregator API", description = "Network topology of OpenStack and container clouds: inventory, links, cliques, history, scans, alerts and a live stream."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    paths(
        healthz,
        auth::create_token, auth::current_token, auth::revoke_token,
        inventory::list_inventory, inventory::get_object, inventory::object_versions,
        inventory::tree, inventory::graph, inventory::list_links,
        inventory::list_cliques, inventory::get_clique, inventory::aggregates,
        inventory::agents, inventory::messages, inventory::constants,
        analysis::impact, analysis::diagnosis, analysis::path,
        history::create_snapshot, history::list_snapshots, history::get_snapshot,
        history::delete_snapshot, history::diff,
        settings::list_clique_types, settings::create_clique_type, settings::get_clique_type,
        settings::replace_clique_type, settings::delete_clique_type,
        settings::list_clique_constraints, settings::put_clique_constraint,
        settings::delete_clique_constraint,
        settings::list_environments, settings::create_environment, settings::get_environment,
        settings::replace_environment, settings::patch_environment, settings::delete_environment,
        settings::list_users, settings::get_user, settings::put_user, settings::delete_user,
        scans::list_scans, scans::create_scan, scans::get_scan,
        scans::list_schedules, scans::create_schedule, scans::delete_schedule,
        alerts::list_rules, alerts::create_rule, alerts::get_rule, alerts::replace_rule,
        alerts::delete_rule, alerts::list_silences, alerts::create_silence,
        alerts::delete_silence,
        events::stream,
    ),
)]
pub struct ApiDoc;

/// The whole HTTP surface.
pub fn router(service: Service) -> Router {
    let api = Router::new()
        .merge(auth::routes())
        .merge(inventory::routes())
        .merge(analysis::routes())
        .merge(history::routes())
        .merge(settings::routes())
        .merge(scans::routes())
        .merge(alerts::routes())
        .merge(events::routes());
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/api/v1", api)
        .merge(crate::ui::routes())
        .merge(SwaggerUi::new("/api/docs").url("/api/v1/openapi.json", ApiDoc::openapi()))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(json_method_errors))
        .with_state(service)
}

/// Axum answers a wrong method (405) and some rejections in plain text; this keeps every
/// error in the API's JSON shape.
async fn json_method_errors(request: Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    // Answers are data, never to be sniffed into something else, and may hold what a shared
    // cache must not keep.
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(header::HeaderValue::from_static("no-store"));
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let code = match status {
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::NOT_FOUND => "not_found",
            _ if status.is_server_error() => "internal",
            _ => "bad_request",
        };
        let message = status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned();
        let mut replaced = ApiError {
            status,
            code,
            message,
            retry_after: None,
        }
        .into_response();
        if let Some(allow) = response.headers().get(header::ALLOW) {
            replaced.headers_mut().insert(header::ALLOW, allow.clone());
        }
        return replaced;
    }
    response
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for the API on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot prepare the first admin: {0}")]
    Admin(#[from] ServiceError),
    #[error("cannot read the alert rules: {0}")]
    Alerts(ServiceError),
    #[error(transparent)]
    Tls(#[from] tls::ApiTlsError),
}

/// A running API server.
#[derive(Debug)]
pub struct RunningApi {
    pub local_addr: std::net::SocketAddr,
    /// The admin created on this first start, with its password (printed once, never stored).
    pub first_admin: Option<(String, String)>,
    pub service: Service,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds the API, creates the first admin if the store has no user, and serves (with the scan
/// worker and scheduler) until `shutdown`.
pub async fn start(
    section: &crate::config::ApiSection,
    sink: std::sync::Arc<crate::ingest::DurableSink>,
    ingest: Option<crate::ingest::IngestHandle>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<RunningApi, StartError> {
    let tls = match (&section.tls_cert, &section.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let auth = crate::service::Auth::new(
        sink.store().clone(),
        section.ldap.clone(),
        section.token_lifetime,
    );
    let first_admin = auth.ensure_admin(section.admin_password.as_deref()).await?;
    let streams = crate::service::events::StreamLimits {
        buffer: section.event_buffer,
        per_token: section.max_streams_per_token,
    };
    let service = Service::new(
        sink.clone(),
        ingest,
        auth,
        streams,
        section.alerts.clone(),
        shutdown.clone(),
    );
    service.reload_alerts().await.map_err(StartError::Alerts)?;
    tokio::spawn(service.alerting().clone().run(sink));
    let listener = tokio::net::TcpListener::bind(section.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: section.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: section.listen,
        source,
    })?;
    tokio::spawn(service.clone().run_scans(shutdown.clone()));
    let app = router(service.clone());
    let limits = serve::Limits {
        max_connections: section.max_connections,
        header_timeout: section.header_timeout,
    };
    let task = match tls {
        Some(config) => {
            let listener =
                tls::TlsListener::new(listener, config, shutdown.clone()).map_err(|source| {
                    StartError::Bind {
                        addr: section.listen,
                        source,
                    }
                })?;
            serve::spawn(listener, app, limits, shutdown)
        }
        None => serve::spawn(listener, app, limits, shutdown),
    };
    Ok(RunningApi {
        local_addr,
        first_admin,
        service,
        task,
    })
}

/// What `serve` tells the operator of the first admin: a generated password, once; never a
/// password the operator chose (printed, it would land in the journal).
pub fn first_admin_notice(first_admin: Option<&(String, String)>, chosen: bool) -> Option<String> {
    let (user, password) = first_admin?;
    Some(if chosen {
        format!(
            "created the first admin: user `{user}`, with the password given in the configuration"
        )
    } else {
        format!(
            "created the first admin: user `{user}`, password `{password}` (shown once; change it with PUT /api/v1/users/{user})"
        )
    })
}

/// The client's address, which the login throttle counts failures by.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

#[cfg(test)]
mod tests {
    use super::first_admin_notice;

    /// Issue 24, item 6: `serve` printed the admin password from its configuration.
    #[test]
    fn a_chosen_admin_password_is_never_printed() {
        let admin = ("admin".to_owned(), "s3cret-from-config".to_owned());
        let chosen = first_admin_notice(Some(&admin), true).unwrap_or_default();
        assert!(
            chosen.contains("`admin`") && !chosen.contains("s3cret"),
            "{chosen}"
        );
        let generated = first_admin_notice(Some(&admin), false).unwrap_or_default();
        assert!(generated.contains("s3cret-from-config"), "{generated}");
        assert_eq!(first_admin_notice(None, false), None);
    }
}
