//! A test double of an OpenStack control plane, and the notification bus it publishes on.
//!
//! No OpenStack control plane can run on the test machines, so [`FakeCloud`] stands in for its
//! REST side and speaks the real protocol as Keystone v3 and Neutron v2.0 define it: password
//! authentication at `POST /v3/auth/tokens` answering `201` with the token in
//! `X-Subject-Token` and a service catalog in the body; `X-Auth-Token` on every other request
//! (`401` when unknown or revoked); `GET /v3/projects`; `GET /v2.0/{networks,subnets,ports}`
//! with Neutron's `limit`/`marker` pagination and `<collection>_links` (the server's
//! `pagination_max_limit` applies when the client asks for no limit). Its documents are shaped
//! as the recorded API answers and notification payloads in `shared/fixtures/openstack/`.
//!
//! The bus is real: [`publish`] sends notification bodies to a RabbitMQ exchange the way
//! oslo.messaging does (topic exchange, routing key `notifications.info`, JSON body).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The documents the double serves, as Neutron and Keystone would return them.
#[derive(Debug, Clone, Default)]
pub struct CloudDocuments {
    /// Nova's `availabilityZoneInfo` entries.
    pub zones: Vec<Value>,
    pub projects: Vec<Value>,
    pub networks: Vec<Value>,
    pub subnets: Vec<Value>,
    pub ports: Vec<Value>,
}

#[derive(Debug)]
struct CloudState {
    documents: CloudDocuments,
    user: String,
    password: String,
    tokens: HashSet<String>,
    issued: u64,
    page_size: usize,
    base: String,
}

type Shared = Arc<Mutex<CloudState>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, CloudState> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keystone and Neutron on one loopback port.
#[derive(Debug)]
pub struct FakeCloud {
    /// Keystone's base URL (what `OpenStack.url` names).
    pub url: String,
    shared: Shared,
    task: JoinHandle<()>,
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCloud {
    /// Serves `documents` to `user`/`password`, at most `page_size` items per page.
    pub async fn start(
        documents: CloudDocuments,
        user: &str,
        password: &str,
        page_size: usize,
    ) -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0", documents, user, password, page_size).await
    }

    /// Like [`FakeCloud::start`], on a given address (a lab host's fabric address).
    pub async fn start_on(
        listen: &str,
        documents: CloudDocuments,
        user: &str,
        password: &str,
        page_size: usize,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Mutex::new(CloudState {
            documents,
            user: user.to_owned(),
            password: password.to_owned(),
            tokens: HashSet::new(),
            issued: 0,
            page_size: page_size.max(1),
            base: url.clone(),
        }));
        let app = axum::Router::new()
            .route("/v3/auth/tokens", post(issue_token))
            .route("/v3/projects", get(projects))
            .route("/v2.0/networks", get(networks))
            .route("/v2.0/subnets", get(subnets))
            .route("/v2.0/ports", get(ports))
            .route("/v2.1/os-availability-zone/detail", get(zones))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeCloud { url, shared, task })
    }

    /// Changes what the APIs return from now on.
    pub fn update(&self, change: impl FnOnce(&mut CloudDocuments)) {
        change(&mut lock(&self.shared).documents);
    }

    /// Revokes every token issued so far (clients get `401` until they authenticate again).
    pub fn revoke_tokens(&self) {
        lock(&self.shared).tokens.clear();
    }

    /// How many tokens were issued.
    pub fn tokens_issued(&self) -> u64 {
        lock(&self.shared).issued
    }
}

#[derive(Deserialize)]
struct AuthRequest {
    auth: Value,
}

async fn issue_token(State(shared): State<Shared>, Json(request): Json<AuthRequest>) -> Response {
    let user = &request.auth["identity"]["password"]["user"];
    let mut state = lock(&shared);
    if user["name"] != state.user.as_str() || user["password"] != state.password.as_str() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": 401, "title": "Unauthorized",
                "message": "The request you have made requires authentication."}})),
        )
            .into_response();
    }
    state.issued += 1;
    let token = format!("gAAAAAB{:016x}", state.issued);
    state.tokens.insert(token.clone());
    let base = state.base.clone();
    let endpoints = |service: &str, url: String| {
        json!({"type": service, "name": service, "endpoints": [
            {"interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": url},
            {"interface": "internal", "region": "RegionOne", "region_id": "RegionOne", "url": url},
        ]})
    };
    let body = json!({"token": {
        "methods": ["password"],
        "expires_at": "2099-01-01T00:00:00.000000Z",
        "project": {"name": request.auth["scope"]["project"]["name"], "domain": {"name": "Default"}},
        "catalog": [
            endpoints("identity", format!("{base}/v3")),
            endpoints("compute", format!("{base}/v2.1")),
            endpoints("network", base),
        ],
    }});
    let mut headers = HeaderMap::new();
    if let Ok(value) = token.parse() {
        headers.insert("x-subject-token", value);
    }
    (StatusCode::CREATED, headers, Json(body)).into_response()
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    marker: Option<String>,
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok());
    token.is_some_and(|t| lock(shared).tokens.contains(t))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": {"code": 401, "title": "Unauthorized",
            "message": "The request you have made requires authentication."}})),
    )
        .into_response()
}

/// One page of a collection, with a `next` link when more follow.
fn page(
    shared: &Shared,
    headers: &HeaderMap,
    collection: &str,
    query: Page,
    items: impl FnOnce(&CloudDocuments) -> Vec<Value>,
) -> Response {
    if !authorized(shared, headers) {
        return unauthorized();
    }
    let state = lock(shared);
    let all = items(&state.documents);
    let limit = query
        .limit
        .unwrap_or(state.page_size)
        .min(state.page_size)
        .max(1);
    let start = match &query.marker {
        None => 0,
        Some(marker) => match all.iter().position(|d| d["id"] == marker.as_str()) {
            Some(at) => at + 1,
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    Json(json!({"NeutronError": {"type": "MarkerNotFound",
                        "message": format!("Marker {marker} could not be found."), "detail": ""}})),
                )
                    .into_response();
            }
        },
    };
    let chunk: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    let mut body = json!({ collection: chunk });
    if start + limit < all.len()
        && let Some(last) = chunk.last()
    {
        let marker = last["id"].as_str().unwrap_or_default();
        body[format!("{collection}_links")] = json!([{"rel": "next",
            "href": format!("{}/v2.0/{collection}?limit={limit}&marker={marker}", state.base)}]);
    }
    Json(body).into_response()
}

async fn projects(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let projects = lock(&shared).documents.projects.clone();
    Json(json!({"projects": projects, "links": {"self": null, "next": null, "previous": null}}))
        .into_response()
}

async fn zones(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let zones = lock(&shared).documents.zones.clone();
    Json(json!({ "availabilityZoneInfo": zones })).into_response()
}

/// A Nova availability zone with its compute hosts.
pub fn zone(name: &str, hosts: &[&str]) -> Value {
    let hosts: serde_json::Map<String, Value> = hosts
        .iter()
        .map(|h| {
            (
                (*h).to_owned(),
                json!({"nova-compute": {"active": true, "available": true,
                    "updated_at": "2026-12-01T12:00:00.000000"}}),
            )
        })
        .collect();
    json!({"zoneName": name, "zoneState": {"available": true}, "hosts": hosts})
}

async fn networks(State(s): State<Shared>, headers: HeaderMap, Query(q): Query<Page>) -> Response {
    page(&s, &headers, "networks", q, |d| d.networks.clone())
}

async fn subnets(State(s): State<Shared>, headers: HeaderMap, Query(q): Query<Page>) -> Response {
    page(&s, &headers, "subnets", q, |d| d.subnets.clone())
}

async fn ports(State(s): State<Shared>, headers: HeaderMap, Query(q): Query<Page>) -> Response {
    page(&s, &headers, "ports", q, |d| d.ports.clone())
}

/// A Neutron network document as the API and `network.create.end` carry it.
pub fn network(id: &str, name: &str, project: &str, network_type: &str, segment: i64) -> Value {
    json!({"id": id, "name": name, "tenant_id": project, "project_id": project,
        "admin_state_up": true, "status": "ACTIVE", "shared": false, "router:external": false,
        "mtu": 1450, "port_security_enabled": true, "subnets": [],
        "provider:network_type": network_type, "provider:physical_network": null,
        "provider:segmentation_id": segment})
}

/// A Neutron subnet document.
pub fn subnet(id: &str, network_id: &str, project: &str, cidr: &str) -> Value {
    json!({"id": id, "name": format!("{cidr} subnet"), "network_id": network_id,
        "tenant_id": project, "ip_version": 4, "cidr": cidr, "enable_dhcp": true,
        "gateway_ip": null, "allocation_pools": [], "dns_nameservers": [], "host_routes": []})
}

/// A Neutron port document bound to `host`.
pub fn port(
    id: &str,
    network_id: &str,
    project: &str,
    mac: &str,
    host: &str,
    device_owner: &str,
    device_id: &str,
) -> Value {
    json!({"id": id, "name": "", "network_id": network_id, "tenant_id": project,
        "mac_address": mac, "admin_state_up": true, "status": "ACTIVE",
        "binding:host_id": host, "binding:vif_type": "ovs", "binding:vnic_type": "normal",
        "device_owner": device_owner, "device_id": device_id, "fixed_ips": []})
}

/// A notification body as oslo.messaging (v1) sends it.
pub fn notification(event_type: &str, payload: Value) -> Value {
    json!({"event_type": event_type, "payload": payload, "priority": "INFO",
        "publisher_id": "network.lab-controller", "message_id": format!("{:032x}", rand::random::<u128>()),
        "timestamp": "2026-12-01 12:00:00.000000"})
}

/// A RabbitMQ broker, as the adapter's `AMQP` configuration names it.
#[derive(Debug, Clone)]
pub struct Broker {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

/// The broker for tests: `AMQP_URL` (`amqp://user:password@host:port/vhost`; the test command
/// exports one, starting an ephemeral broker when none answers), else the conventional local
/// RabbitMQ.
pub fn broker() -> anyhow::Result<Broker> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let rest = url
        .strip_prefix("amqp://")
        .ok_or_else(|| anyhow::anyhow!("AMQP_URL `{url}` is not amqp://"))?;
    let (credentials, address) = rest
        .split_once('@')
        .ok_or_else(|| anyhow::anyhow!("AMQP_URL `{url}` has no user:password@"))?;
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let address = address.split('/').next().unwrap_or_default();
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "5672"));
    Ok(Broker {
        url: url.clone(),
        host: host.to_owned(),
        port: port.parse()?,
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// Publishes one body on `exchange` (a topic exchange, declared as oslo.messaging declares
/// it) with the routing key `notifications.info`.
pub async fn publish(url: &str, exchange: &str, body: &[u8]) -> anyhow::Result<()> {
    use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
    use lapin::types::FieldTable;
    let connection =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .basic_publish(
            exchange.into(),
            "notifications.info".into(),
            BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default().with_content_type("application/json".into()),
        )
        .await?
        .await?;
    connection.close(200, "done".into()).await?;
    Ok(())
}
