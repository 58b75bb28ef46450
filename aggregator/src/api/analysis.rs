//! Analysis: what depends on objects (`/impact`), what is wrong in a clique
//! (`/cliques/{focal_point}/diagnosis`, answered by the clique route, whose focal point may
//! hold `/`), and the chain between two endpoints (`/path`).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use calipso_proto::ObjectId;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiResult, Caller, ErrorBody, Params, QueryParams};
use crate::analysis::{Diagnosis, Impact, PathReport};
use crate::service::Service;

pub fn routes() -> Router<Service> {
    Router::new()
        .route("/impact", get(impact))
        .route("/path", get(path))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImpactParams {
    pub env_name: String,
}

impl QueryParams for ImpactParams {
    const REPEATED: &'static [&'static str] = &["object"];
}

/// Everything that depends on the objects: the instances, vservices and networks whose cliques
/// hold them and the hosts and projects of those instances and vservices, by type, each with
/// the chain of links from the objects to it. A host stands for itself and all its objects
/// (a host going into maintenance).
#[utoipa::path(get, path = "/api/v1/impact", tag = "analysis",
    params(ImpactParams,
        ("object" = Vec<String>, Query, description = "An object id; repeat for several (at most 1000)")),
    responses((status = 200, body = Impact), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn impact(
    State(service): State<Service>,
    Caller(who): Caller,
    Params {
        params, repeated, ..
    }: Params<ImpactParams>,
) -> ApiResult<axum::Json<Impact>> {
    let objects: Vec<ObjectId> = repeated
        .into_iter()
        .map(|(_, id)| ObjectId::from_raw(id))
        .collect();
    Ok(axum::Json(service.impact(
        &who,
        &params.env_name,
        &objects,
    )?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiagnosisParams {
    pub env_name: String,
}

impl QueryParams for DiagnosisParams {}

/// The members of the clique that are down, stale, or whose status is warning or error, ranked
/// from the wire upward (switch port, NIC, tunnel endpoint, vswitch, bridge, vNIC), each with
/// its path to the focal point and since when; a clique with nothing wrong says so.
#[utoipa::path(get, path = "/api/v1/cliques/{focal_point}/diagnosis", tag = "analysis",
    params(("focal_point" = String, Path, description = "The focal point's object id"), DiagnosisParams),
    responses((status = 200, body = Diagnosis), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn diagnosis(
    service: Service,
    who: crate::service::Principal,
    focal_point: &str,
    params: DiagnosisParams,
) -> ApiResult<axum::Json<Diagnosis>> {
    let focal_point = ObjectId::from_raw(focal_point);
    Ok(axum::Json(service.diagnosis(
        &who,
        &params.env_name,
        &focal_point,
    )?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PathParams {
    pub env_name: String,
    /// An instance, vservice or vNIC id.
    pub from: String,
    /// An instance, vservice or vNIC id.
    pub to: String,
}

impl QueryParams for PathParams {}

/// The chain of objects and links a packet between two endpoints crosses on the networks they
/// share — vNIC, bridges, vswitch, tunnel endpoint and its NIC, the tunnel, the far side —
/// each hop with its state and status, and the first hop where it breaks.
#[utoipa::path(get, path = "/api/v1/path", tag = "analysis", params(PathParams),
    responses((status = 200, body = PathReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn path(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<PathParams>,
) -> ApiResult<axum::Json<PathReport>> {
    let (from, to) = (
        ObjectId::from_raw(params.from),
        ObjectId::from_raw(params.to),
    );
    Ok(axum::Json(service.path(
        &who,
        &params.env_name,
        &from,
        &to,
    )?))
}
