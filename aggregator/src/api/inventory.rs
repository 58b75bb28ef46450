//! Reads: inventory, the tree a level at a time, an object's versions, links, cliques (live or
//! `at` a past time), aggregates, agents, messages, constants.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use calipso_proto::{LinkState, ObjectId, ObjectType};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiError, ApiResult, Caller, Constants, ErrorBody, Params, QueryParams, parse_bool,
    parse_param, parse_time,
};
use crate::service::browse::{GraphOf, GraphView, ObjectVersionView, TreeLevel};
use crate::service::inventory::{
    AgentView, Aggregates, CliqueQuery, CliqueView, InventoryQuery, LinkQuery, LinkView,
    MessageView, ObjectView, parse_level,
};
use crate::service::{Service, settings};
use crate::store::{MessageQuery, ScanKind, ScanStatus};

pub fn routes() -> Router<Service> {
    Router::new()
        .route("/inventory", get(list_inventory))
        .route("/inventory/{*id}", get(get_object))
        .route("/tree", get(tree))
        .route("/graph", get(graph))
        .route("/links", get(list_links))
        .route("/cliques", get(list_cliques))
        .route("/cliques/{*focal_point}", get(get_clique))
        .route("/aggregates", get(aggregates))
        .route("/agents", get(agents))
        .route("/messages", get(messages))
        .route("/constants", get(constants))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectPage {
    pub objects: Vec<ObjectView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkPage {
    pub links: Vec<LinkView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CliquePage {
    pub cliques: Vec<CliqueView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub messages: Vec<MessageView>,
    pub next_cursor: Option<String>,
}

/// Inventory filters. `attributes:<key>=<value>` filters on any attribute as well.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InventoryParams {
    /// The environment.
    pub env_name: String,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    /// An object type (`instance`, `vnic`, …).
    pub object_type: Option<String>,
    pub host: Option<String>,
    pub parent_id: Option<String>,
    /// With `parent_id`: all descendants (`true`) or children only.
    pub sub_tree: Option<String>,
    /// Prefix of the `/`-joined id path.
    pub id_path: Option<String>,
    /// Prefix of the `/`-joined name path.
    pub name_path: Option<String>,
    /// A regular expression on the name.
    pub name: Option<String>,
    /// `up` or `down`.
    pub state: Option<String>,
    pub stale: Option<String>,
    /// RFC 3339: the inventory as it was then.
    pub at: Option<String>,
    pub cursor: Option<String>,
    /// 1 to 1000; 100 by default.
    pub limit: Option<String>,
}

impl QueryParams for InventoryParams {
    const ATTRIBUTE_FILTERS: bool = true;
}

pub(super) fn parse_object_type(name: &str, value: Option<&str>) -> ApiResult<Option<ObjectType>> {
    value
        .map(|text| {
            text.parse::<ObjectType>().map_err(|_| {
                ApiError::bad_request(format!("{name}: `{text}` is not an object type"))
            })
        })
        .transpose()
}

fn parse_state(value: Option<&str>) -> ApiResult<Option<LinkState>> {
    match value {
        None => Ok(None),
        Some("up") => Ok(Some(LinkState::Up)),
        Some("down") => Ok(Some(LinkState::Down)),
        Some("unknown") => Ok(Some(LinkState::Unknown)),
        Some(other) => Err(ApiError::bad_request(format!(
            "state: `{other}` is not up, down or unknown"
        ))),
    }
}

fn parse_limit(value: Option<&str>) -> ApiResult<Option<usize>> {
    parse_param("limit", value)
}

/// Objects of an environment, in a stable order (type, then id), a page at a time.
#[utoipa::path(get, path = "/api/v1/inventory", tag = "inventory", params(InventoryParams),
    responses((status = 200, body = ObjectPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list_inventory(
    State(service): State<Service>,
    Caller(who): Caller,
    Params {
        params, attributes, ..
    }: Params<InventoryParams>,
) -> ApiResult<axum::Json<ObjectPage>> {
    let name = params
        .name
        .as_deref()
        .map(|pattern| {
            regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|err| ApiError::bad_request(format!("name: {err}")))
        })
        .transpose()?;
    let query = InventoryQuery {
        environment: params.env_name,
        object_type: parse_object_type("type", params.object_type.as_deref())?,
        host: params.host,
        parent_id: params.parent_id.map(ObjectId::from_raw),
        sub_tree: parse_bool("sub_tree", params.sub_tree.as_deref())?.unwrap_or(false),
        id_path: params.id_path,
        name_path: params.name_path,
        name,
        attributes,
        state: parse_state(params.state.as_deref())?,
        stale: parse_bool("stale", params.stale.as_deref())?,
        at: parse_time("at", params.at.as_deref())?,
        cursor: params.cursor,
        limit: parse_limit(params.limit.as_deref())?,
    };
    let page = service.inventory(&who, &query).await?;
    Ok(axum::Json(ObjectPage {
        objects: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ObjectParams {
    pub env_name: String,
    /// RFC 3339: the object as it was then.
    pub at: Option<String>,
}

impl QueryParams for ObjectParams {}

/// One object, with an ETag (`If-None-Match` gives 304 when unchanged).
#[utoipa::path(get, path = "/api/v1/inventory/{id}", tag = "inventory",
    params(("id" = String, Path, description = "The object id"), ObjectParams),
    responses((status = 200, body = ObjectView), (status = 304), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_object(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult<Response> {
    if let Some(id) = id.strip_suffix("/versions") {
        let Params { params, .. } = Params::<VersionParams>::parse(&uri)?;
        return Ok(object_versions(service, who, id, params)
            .await?
            .into_response());
    }
    let Params { params, .. } = Params::<ObjectParams>::parse(&uri)?;
    let at = parse_time("at", params.at.as_deref())?;
    let object = service
        .object(&who, &params.env_name, &ObjectId::from_raw(id), at)
        .await?;
    let body = serde_json::to_vec(&object)
        .map_err(|err| ApiError::from(crate::service::ServiceError::Internal(err.to_string())))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    let etag = format!(
        "\"{}\"",
        crate::service::auth::hex(digest.as_ref().get(..16).unwrap_or_default())
    );
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let status = if unchanged {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let mut response = if unchanged {
        status.into_response()
    } else {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    if let Ok(value) = header::HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionParams {
    pub env_name: String,
    /// 1 to 1000; 1000 by default.
    pub limit: Option<String>,
}

impl QueryParams for VersionParams {}

/// The versions of an object, newest first: each with its validity and the object as it was
/// (answered by the object route, whose id may hold `/`).
#[utoipa::path(get, path = "/api/v1/inventory/{id}/versions", tag = "inventory",
    params(("id" = String, Path, description = "The object id"), VersionParams),
    responses((status = 200, body = [ObjectVersionView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn object_versions(
    service: Service,
    who: crate::service::Principal,
    id: &str,
    params: VersionParams,
) -> ApiResult<axum::Json<Vec<ObjectVersionView>>> {
    Ok(axum::Json(
        service
            .object_versions(
                &who,
                &params.env_name,
                &ObjectId::from_raw(id),
                parse_limit(params.limit.as_deref())?,
            )
            .await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TreeParams {
    pub env_name: String,
    /// The object whose children to list; without it, the environment's roots.
    pub parent_id: Option<String>,
    /// RFC 3339: the tree as it was then.
    pub at: Option<String>,
}

impl QueryParams for TreeParams {}

/// One level of the environment tree (regions, zones, hosts, then what each holds): the
/// children of `parent_id`, or the roots, by type then name, each with its number of children.
#[utoipa::path(get, path = "/api/v1/tree", tag = "inventory", params(TreeParams),
    responses((status = 200, body = TreeLevel), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn tree(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<TreeParams>,
) -> ApiResult<axum::Json<TreeLevel>> {
    let parent = params.parent_id.map(ObjectId::from_raw);
    let at = parse_time("at", params.at.as_deref())?;
    Ok(axum::Json(
        service
            .tree(&who, &params.env_name, parent.as_ref(), at)
            .await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GraphParams {
    pub env_name: String,
    /// The graph of this focal point's clique…
    pub focal_point: Option<String>,
    /// …or of this host's objects and links (one of the two).
    pub host: Option<String>,
    /// RFC 3339: the graph as it was then.
    pub at: Option<String>,
}

impl QueryParams for GraphParams {}

/// What a graph of a clique or a host draws: its objects (type, name, state, status) and links.
#[utoipa::path(get, path = "/api/v1/graph", tag = "inventory", params(GraphParams),
    responses((status = 200, body = GraphView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn graph(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<GraphParams>,
) -> ApiResult<axum::Json<GraphView>> {
    let of = match (params.focal_point, params.host) {
        (Some(focal), None) => GraphOf::Clique(ObjectId::from_raw(focal)),
        (None, Some(host)) => GraphOf::Host(host),
        _ => {
            return Err(ApiError::bad_request(
                "give one of focal_point (a clique's graph) or host (a host's graph)",
            ));
        }
    };
    let at = parse_time("at", params.at.as_deref())?;
    Ok(axum::Json(
        service.graph(&who, &params.env_name, &of, at).await?,
    ))
}

/// Link filters. `attributes:<key>=<value>` filters on link attributes as well.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LinkParams {
    pub env_name: String,
    /// `vnic-vedge`, `otep-otep`, …
    pub link_type: Option<String>,
    pub state: Option<String>,
    pub host: Option<String>,
    pub source_id: Option<String>,
    pub target_id: Option<String>,
    pub at: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

impl QueryParams for LinkParams {
    const ATTRIBUTE_FILTERS: bool = true;
}

fn parse_link_type(value: Option<&str>) -> ApiResult<Option<calipso_proto::LinkType>> {
    value
        .map(|text| {
            text.parse::<calipso_proto::LinkType>().map_err(|_| {
                ApiError::bad_request(format!("link_type: `{text}` is not a link type"))
            })
        })
        .transpose()
}

/// Links of an environment, ordered by type, source, target.
#[utoipa::path(get, path = "/api/v1/links", tag = "inventory", params(LinkParams),
    responses((status = 200, body = LinkPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list_links(
    State(service): State<Service>,
    Caller(who): Caller,
    Params {
        params, attributes, ..
    }: Params<LinkParams>,
) -> ApiResult<axum::Json<LinkPage>> {
    let query = LinkQuery {
        environment: params.env_name,
        link_type: parse_link_type(params.link_type.as_deref())?,
        state: parse_state(params.state.as_deref())?,
        host: params.host,
        source_id: params.source_id.map(ObjectId::from_raw),
        target_id: params.target_id.map(ObjectId::from_raw),
        attributes,
        at: parse_time("at", params.at.as_deref())?,
        cursor: params.cursor,
        limit: parse_limit(params.limit.as_deref())?,
    };
    let page = service.links(&who, &query).await?;
    Ok(axum::Json(LinkPage {
        links: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CliqueParams {
    pub env_name: String,
    pub focal_point_type: Option<String>,
    /// Cliques containing this object.
    pub object: Option<String>,
    /// Cliques containing a link of this type (and, with `link_source` / `link_target`,
    /// these ends).
    pub link_type: Option<String>,
    pub link_source: Option<String>,
    pub link_target: Option<String>,
    pub at: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

impl QueryParams for CliqueParams {}

/// Cliques of an environment, by focal point.
#[utoipa::path(get, path = "/api/v1/cliques", tag = "inventory", params(CliqueParams),
    responses((status = 200, body = CliquePage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list_cliques(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<CliqueParams>,
) -> ApiResult<axum::Json<CliquePage>> {
    let query = CliqueQuery {
        environment: params.env_name,
        focal_point_type: parse_object_type(
            "focal_point_type",
            params.focal_point_type.as_deref(),
        )?,
        object: params.object.map(ObjectId::from_raw),
        link_type: parse_link_type(params.link_type.as_deref())?,
        link_source: params.link_source.map(ObjectId::from_raw),
        link_target: params.link_target.map(ObjectId::from_raw),
        at: parse_time("at", params.at.as_deref())?,
        cursor: params.cursor,
        limit: parse_limit(params.limit.as_deref())?,
    };
    let page = service.cliques(&who, &query).await?;
    Ok(axum::Json(CliquePage {
        cliques: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// The clique of a focal point.
#[utoipa::path(get, path = "/api/v1/cliques/{focal_point}", tag = "inventory",
    params(("focal_point" = String, Path, description = "The focal point's object id"), ObjectParams),
    responses((status = 200, body = CliqueView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_clique(
    State(service): State<Service>,
    Caller(who): Caller,
    Path(focal_point): Path<String>,
    uri: axum::http::Uri,
) -> ApiResult<Response> {
    if let Some(focal_point) = focal_point.strip_suffix("/diagnosis") {
        let Params { params, .. } = super::Params::<super::analysis::DiagnosisParams>::parse(&uri)?;
        return Ok(
            super::analysis::diagnosis(service, who, focal_point, params)
                .await?
                .into_response(),
        );
    }
    let Params { params, .. } = super::Params::<ObjectParams>::parse(&uri)?;
    let at = parse_time("at", params.at.as_deref())?;
    let clique = service
        .clique(&who, &params.env_name, &ObjectId::from_raw(focal_point), at)
        .await?;
    Ok(axum::Json(clique).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EnvParams {
    pub env_name: String,
}

impl QueryParams for EnvParams {}

/// Counts by type and state of an environment's objects, links and cliques.
#[utoipa::path(get, path = "/api/v1/aggregates", tag = "inventory", params(EnvParams),
    responses((status = 200, body = Aggregates), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn aggregates(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<EnvParams>,
) -> ApiResult<axum::Json<Aggregates>> {
    Ok(axum::Json(service.aggregates(&who, &params.env_name)?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AgentParams {
    pub env_name: Option<String>,
}

impl QueryParams for AgentParams {}

/// The agents of the environments the caller may see: host, version, state, last seen.
#[utoipa::path(get, path = "/api/v1/agents", tag = "inventory", params(AgentParams),
    responses((status = 200, body = [AgentView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn agents(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<AgentParams>,
) -> ApiResult<axum::Json<Vec<AgentView>>> {
    Ok(axum::Json(service.agents(&who, params.env_name.as_deref())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessageParams {
    /// Without it: the messages of every environment the caller may see (admins: and the
    /// aggregator's own).
    pub env_name: Option<String>,
    /// `info`, `warning` or `error`.
    pub level: Option<String>,
    pub source: Option<String>,
    pub related_object: Option<String>,
    /// RFC 3339, inclusive.
    pub start_time: Option<String>,
    /// RFC 3339, exclusive.
    pub end_time: Option<String>,
    /// `oldest` (first; the default) or `newest` first.
    pub order: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

impl QueryParams for MessageParams {}

/// Messages (hosts going away, refused deltas, …), oldest first unless `order=newest`.
#[utoipa::path(get, path = "/api/v1/messages", tag = "inventory", params(MessageParams),
    responses((status = 200, body = MessagePage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn messages(
    State(service): State<Service>,
    Caller(who): Caller,
    Params { params, .. }: Params<MessageParams>,
) -> ApiResult<axum::Json<MessagePage>> {
    let level = params
        .level
        .as_deref()
        .map(|text| {
            parse_level(text).ok_or_else(|| {
                ApiError::bad_request(format!("level: `{text}` is not info, warning or error"))
            })
        })
        .transpose()?;
    let query = MessageQuery {
        environments: params.env_name.map(|e| vec![e]),
        level,
        source: params.source,
        related_object: params.related_object.map(ObjectId::from_raw),
        from: parse_time("start_time", params.start_time.as_deref())?,
        to: parse_time("end_time", params.end_time.as_deref())?,
        after: None,
        newest_first: match params.order.as_deref() {
            None | Some("oldest") => false,
            Some("newest") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "order: `{other}` is neither oldest nor newest"
                )));
            }
        },
        limit: 0,
    };
    let page = service
        .messages(
            &who,
            query,
            params.cursor.as_deref(),
            parse_limit(params.limit.as_deref())?,
        )
        .await?;
    Ok(axum::Json(MessagePage {
        messages: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// The enumerations the API accepts and returns.
#[utoipa::path(get, path = "/api/v1/constants", tag = "inventory",
    responses((status = 200, body = Constants), (status = 401, body = ErrorBody)))]
pub async fn constants(Caller(_): Caller) -> axum::Json<Constants> {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
    axum::Json(Constants {
        object_types: ObjectType::ALL.iter().map(ToString::to_string).collect(),
        link_types: crate::links::Finders::default()
            .link_types()
            .iter()
            .map(ToString::to_string)
            .collect(),
        link_states: strings(&["up", "down", "unknown"]),
        scan_kinds: ScanKind::ALL
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
        scan_statuses: ScanStatus::ALL
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        message_levels: strings(&["info", "warning", "error"]),
        environment_types: strings(settings::ENVIRONMENT_TYPES),
        mechanism_drivers: strings(settings::MECHANISM_DRIVERS),
        type_drivers: strings(settings::TYPE_DRIVERS),
        configuration_targets: strings(settings::CONFIGURATION_TARGETS),
        schedule_frequencies: strings(&["HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"]),
        roles: strings(&["admin", "view-env", "edit-env"]),
    })
}
