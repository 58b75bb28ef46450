//! The REST side: Keystone v3 password authentication with its service catalog, Keystone
//! projects, and Neutron's networks, subnets and ports, following Neutron's pagination.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::documents::Inventory;
use super::settings::OpenStackSettings;

/// How long before its expiry a token is replaced.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// More pages than this is a loop of `next` links, not a cloud (at 1 000 items a page, ten
/// million ports).
const MAX_PAGES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: unexpected answer: {reason}")]
    Answer { url: String, reason: String },
    #[error("the service catalog has no `{0}` endpoint for this interface and region")]
    NoEndpoint(&'static str),
}

/// A Keystone token with the endpoints its catalog names. Its `Debug` leaves the token out.
#[derive(Clone)]
struct Token {
    value: String,
    expires_at: Option<OffsetDateTime>,
    identity: String,
    network: String,
    /// Nova's endpoint, with its version (`…/v2.1`); a catalog without one reads no zones.
    compute: Option<String>,
    regions: Vec<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expires_at", &self.expires_at)
            .field("network", &self.network)
            .field("compute", &self.compute)
            .finish_non_exhaustive()
    }
}

/// A client of one cloud's APIs.
#[derive(Debug)]
pub struct OpenStackClient {
    settings: OpenStackSettings,
    http: reqwest::Client,
    token: Option<Token>,
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenDocument,
}

#[derive(Deserialize)]
struct TokenDocument {
    expires_at: Option<String>,
    #[serde(default)]
    catalog: Vec<CatalogEntry>,
}

#[derive(Deserialize)]
struct CatalogEntry {
    #[serde(rename = "type")]
    service_type: String,
    #[serde(default)]
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
struct Endpoint {
    interface: String,
    url: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
}

impl OpenStackClient {
    pub fn new(settings: OpenStackSettings) -> Result<Self, RestError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| RestError::Http {
                url: settings.auth_url.clone(),
                source,
            })?;
        Ok(OpenStackClient {
            settings,
            http,
            token: None,
        })
    }

    /// Reads every region, availability zone, project, network, subnet and port.
    pub async fn inventory(&mut self) -> Result<Inventory, RestError> {
        let token = self.token().await?;
        let (identity, network) = (token.identity, token.network);
        let zones = match token.compute {
            // One page: Nova does not paginate zones.
            Some(compute) => {
                let url = format!("{compute}/os-availability-zone/detail");
                self.list(&url, "availabilityZoneInfo").await?
            }
            None => Vec::new(),
        };
        Ok(Inventory {
            regions: token.regions,
            zones,
            projects: self
                .list(&format!("{identity}/v3/projects"), "projects")
                .await?,
            networks: self
                .list(&format!("{network}/v2.0/networks"), "networks")
                .await?,
            subnets: self
                .list(&format!("{network}/v2.0/subnets"), "subnets")
                .await?,
            ports: self.list(&format!("{network}/v2.0/ports"), "ports").await?,
        })
    }

    /// A valid token, authenticating when there is none or it is about to expire.
    async fn token(&mut self) -> Result<Token, RestError> {
        let fresh = self.token.as_ref().filter(|t| {
            t.expires_at
                .is_none_or(|at| at - TOKEN_MARGIN > OffsetDateTime::now_utc())
        });
        if let Some(token) = fresh {
            return Ok(token.clone());
        }
        let token = self.authenticate().await?;
        self.token = Some(token.clone());
        Ok(token)
    }

    async fn authenticate(&self) -> Result<Token, RestError> {
        let s = &self.settings;
        let url = format!("{}/v3/auth/tokens", s.auth_url);
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": s.user, "domain": {"name": s.domain}, "password": s.password}}},
            "scope": {"project": {"name": s.project, "domain": {"name": s.domain}}}
        }});
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|source| RestError::Http {
                url: url.clone(),
                source,
            })?;
        let response = checked(&url, response).await?;
        let value = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| RestError::Answer {
                url: url.clone(),
                reason: "no X-Subject-Token header".into(),
            })?;
        let document: TokenBody = read_json(&url, response).await?;
        let expires_at = match document.token.expires_at {
            None => None,
            Some(text) => {
                Some(
                    OffsetDateTime::parse(&text, &Rfc3339).map_err(|e| RestError::Answer {
                        url: url.clone(),
                        reason: format!("expires_at `{text}`: {e}"),
                    })?,
                )
            }
        };
        let catalog = &document.token.catalog;
        let mut regions: Vec<String> = catalog
            .iter()
            .flat_map(|entry| &entry.endpoints)
            .filter(|e| e.interface == s.interface)
            .filter_map(|e| e.region_id.clone().or_else(|| e.region.clone()))
            .filter(|r| s.region.as_ref().is_none_or(|wanted| wanted == r))
            .collect();
        regions.sort();
        regions.dedup();
        Ok(Token {
            value,
            expires_at,
            identity: self
                .endpoint(catalog, "identity", true)
                .unwrap_or_else(|_| s.auth_url.clone()),
            network: self.endpoint(catalog, "network", true)?,
            compute: self.endpoint(catalog, "compute", false).ok(),
            regions,
        })
    }

    /// The catalog's URL of a service for the configured interface (and region); with
    /// `unversioned`, without a trailing `/v3` or `/v2.0` (the paths add it).
    fn endpoint(
        &self,
        catalog: &[CatalogEntry],
        service: &'static str,
        unversioned: bool,
    ) -> Result<String, RestError> {
        let s = &self.settings;
        catalog
            .iter()
            .filter(|entry| entry.service_type == service)
            .flat_map(|entry| &entry.endpoints)
            .find(|e| {
                e.interface == s.interface
                    && s.region.as_ref().is_none_or(|r| {
                        e.region.as_ref() == Some(r) || e.region_id.as_ref() == Some(r)
                    })
            })
            .map(|e| {
                let url = e.url.trim_end_matches('/');
                let bare = url
                    .strip_suffix("/v3")
                    .or_else(|| url.strip_suffix("/v2.0"))
                    .filter(|_| unversioned);
                bare.unwrap_or(url).to_owned()
            })
            .ok_or(RestError::NoEndpoint(service))
    }

    /// Every item of a collection, following `<collection>_links` `next` pages.
    async fn list<T: DeserializeOwned>(
        &mut self,
        first: &str,
        collection: &str,
    ) -> Result<Vec<T>, RestError> {
        let mut items = Vec::new();
        let mut next = Some(first.to_owned());
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(RestError::Answer {
                    url,
                    reason: format!("more than {MAX_PAGES} pages"),
                });
            }
            let mut page: Value = self.get(&url).await?;
            let found =
                page.get_mut(collection)
                    .map(Value::take)
                    .ok_or_else(|| RestError::Answer {
                        url: url.clone(),
                        reason: format!("no `{collection}` list"),
                    })?;
            let found: Vec<T> = serde_json::from_value(found).map_err(|e| RestError::Answer {
                url: url.clone(),
                reason: format!("`{collection}`: {e}"),
            })?;
            let empty = found.is_empty();
            items.extend(found);
            next = page
                .get(format!("{collection}_links"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|link| link.get("rel").and_then(Value::as_str) == Some("next"))
                .and_then(|link| link.get("href").and_then(Value::as_str))
                .filter(|_| !empty)
                .map(str::to_owned);
        }
        Ok(items)
    }

    /// A GET with the token; a 401 (a revoked token) authenticates again, once.
    async fn get(&mut self, url: &str) -> Result<Value, RestError> {
        let mut response = self.send_get(url).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            self.token = None;
            response = self.send_get(url).await?;
        }
        read_json(url, checked(url, response).await?).await
    }

    async fn send_get(&mut self, url: &str) -> Result<reqwest::Response, RestError> {
        let token = self.token().await?;
        self.http
            .get(url)
            .header("X-Auth-Token", &token.value)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|source| RestError::Http {
                url: url.to_owned(),
                source,
            })
    }
}

async fn checked(url: &str, response: reqwest::Response) -> Result<reqwest::Response, RestError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let mut body = response.text().await.unwrap_or_default();
    body.truncate(300);
    Err(RestError::Status {
        url: url.to_owned(),
        status,
        body,
    })
}

async fn read_json<T: DeserializeOwned>(
    url: &str,
    response: reqwest::Response,
) -> Result<T, RestError> {
    let bytes = response.bytes().await.map_err(|source| RestError::Http {
        url: url.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| RestError::Answer {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}
