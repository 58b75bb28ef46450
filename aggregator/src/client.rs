//! A small client of the REST API: what the `calipso` CLI (and the tests) talk through.

use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{status}: {message}")]
    Api { status: StatusCode, message: String },
    #[error("the answer of {url} is not JSON: {source}")]
    NotJson {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot set up HTTP: {0}")]
    Setup(String),
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        // reqwest takes the process-wide rustls provider; ring is the project's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| ClientError::Setup(err.to_string()))?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            token: None,
            http,
        })
    }

    /// Trusts only the CA in `ca_cert` (PEM) for an `https://` API.
    pub fn with_ca(mut self, ca_cert: &std::path::Path) -> Result<Self, ClientError> {
        let pem = std::fs::read(ca_cert)
            .map_err(|err| ClientError::Setup(format!("{}: {err}", ca_cert.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| ClientError::Setup(format!("{}: {err}", ca_cert.display())))?;
        self.http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tls_certs_only(certs)
            .build()
            .map_err(|err| ClientError::Setup(err.to_string()))?;
        Ok(self)
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Logs in; returns the token (also kept for the next requests).
    pub async fn login(&mut self, username: &str, password: &str) -> Result<String, ClientError> {
        let body = serde_json::json!({"username": username, "password": password});
        let answer = self
            .json(Method::POST, "/api/v1/auth/tokens", &[], Some(&body))
            .await?;
        let token = answer["token"].as_str().unwrap_or_default().to_owned();
        self.token = Some(token.clone());
        Ok(token)
    }

    /// A request to `path` with the token, if any.
    fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request; returns its URL (for error messages) and the response.
    async fn dispatch(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(String, reqwest::Response), ClientError> {
        let url = format!("{}{path}", self.base);
        match request.send().await {
            Ok(response) => Ok((url, response)),
            Err(source) => Err(ClientError::Transport { url, source }),
        }
    }

    /// Sends a request; returns the status and the JSON body (`Null` when empty), whatever
    /// the status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let mut request = self.request(method, path, query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let (url, response) = self.dispatch(path, request).await?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        if bytes.is_empty() {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_slice(&bytes)
            .map_err(|source| ClientError::NotJson { url, source })?;
        Ok((status, value))
    }

    /// Sends a request and returns its JSON, or the API's error.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let (status, value) = self.send(method, path, query, body).await?;
        if status.is_success() {
            Ok(value)
        } else {
            let message = value["error"]["message"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            Err(ClientError::Api { status, message })
        }
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        self.json(Method::GET, path, query, None).await
    }

    /// Every item of a paged listing (`key` is the list's field), following cursors.
    pub async fn get_all(
        &self,
        path: &str,
        key: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>, ClientError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut page_query: Vec<(&str, &str)> = query.to_vec();
            if let Some(cursor) = &cursor {
                page_query.push(("cursor", cursor));
            }
            let page = self.get(path, &page_query).await?;
            if let Some(list) = page[key].as_array() {
                items.extend(list.iter().cloned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// Follows `/api/v1/events`; `last_event_id` resumes after that event.
    pub async fn events(
        &self,
        query: &[(&str, &str)],
        last_event_id: Option<&str>,
    ) -> Result<impl Stream<Item = SseEvent> + use<>, ClientError> {
        let path = "/api/v1/events";
        let mut request = self.request(Method::GET, path, query);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let (_, response) = self.dispatch(path, request).await?;
        let status = response.status();
        if !status.is_success() {
            let message = response.text().await.unwrap_or_default();
            return Err(ClientError::Api { status, message });
        }
        let bytes = response.bytes_stream();
        let parser = SseParser::default();
        Ok(futures::stream::unfold(
            (bytes, parser),
            |(mut bytes, mut parser)| async move {
                loop {
                    if let Some(event) = parser.next_event() {
                        return Some((event, (bytes, parser)));
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => parser.push(&chunk),
                        Some(Err(_)) | None => return None,
                    }
                }
            },
        ))
    }
}

/// Splits a `text/event-stream` into events.
#[derive(Debug, Default)]
struct SseParser {
    buffer: String,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
    }

    fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let normalized = self.buffer.replace("\r\n", "\n");
            self.buffer = normalized;
            let end = self.buffer.find("\n\n")?;
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut event = SseEvent {
                event: "message".into(),
                id: None,
                data: String::new(),
            };
            let mut has_data = false;
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event.event = value.to_owned(),
                    "id" => event.id = Some(value.to_owned()),
                    "data" => {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            // Keep-alive comments carry no data.
            if has_data {
                return Some(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_across_chunks_and_skips_comments() {
        let mut parser = SseParser::default();
        parser.push(b": keep-alive\n\nevent: change\nid: 1.0\nda");
        assert_eq!(parser.next_event(), None);
        parser.push(b"ta: {\"a\":1}\n\nevent: reset\ndata: gone\r\n\r\n");
        assert_eq!(
            parser.next_event(),
            Some(SseEvent {
                event: "change".into(),
                id: Some("1.0".into()),
                data: "{\"a\":1}".into()
            })
        );
        assert_eq!(parser.next_event().map(|e| e.event), Some("reset".into()));
        assert_eq!(parser.next_event(), None);
    }
}
