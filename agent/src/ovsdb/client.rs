//! An async OVSDB JSON-RPC client (RFC 7047 §4) over a unix socket or TCP: requests matched to
//! responses by id, the server's `echo` keep-alives answered, notifications (`update`,
//! `update2`, `update3`) handed to the caller in order. Any malformed message closes the
//! connection with an error that names it; nothing from the server can panic the agent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::split::{SplitError, Splitter};
use super::tls::SslFiles;

/// Where ovsdb-server listens: `unix:PATH` (or a bare path), `tcp:HOST:PORT` or
/// `ssl:HOST:PORT` (certificates from [`SslFiles`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
    Ssl {
        address: String,
        files: Option<SslFiles>,
    },
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(Endpoint::Unix(path.into()));
        }
        if let Some(address) = text.strip_prefix("tcp:") {
            return Ok(Endpoint::Tcp(address.into()));
        }
        if let Some(address) = text.strip_prefix("ssl:") {
            return Ok(Endpoint::Ssl {
                address: address.into(),
                files: None,
            });
        }
        if text.starts_with('/') {
            return Ok(Endpoint::Unix(text.into()));
        }
        Err(format!(
            "`{text}` is not an OVSDB endpoint (unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT)"
        ))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "tcp:{address}"),
            Endpoint::Ssl { address, .. } => write!(f, "ssl:{address}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("stream: {0}")]
    Split(#[from] SplitError),
    #[error("malformed message{}: {message}", .method.as_ref().map(|m| format!(" (method {m})")).unwrap_or_default())]
    Malformed {
        method: Option<String>,
        message: String,
    },
    #[error("{method} failed: {error}")]
    Rpc { method: String, error: Value },
    #[error("{0} got no answer in time")]
    Timeout(String),
    #[error("connection closed")]
    Closed,
}

impl OvsdbError {
    /// Whether the server is simply not there (no OVS on this host, or not yet started).
    pub fn is_absent(&self) -> bool {
        matches!(self, OvsdbError::Connect { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused))
    }
}

/// Something the server sent that is not an answer.
#[derive(Debug)]
pub enum Event {
    Notification {
        method: String,
        params: Value,
    },
    /// The connection ended; no more events follow.
    Closed(OvsdbError),
}

type Pending = Arc<Mutex<HashMap<u64, (String, oneshot::Sender<Result<Value, OvsdbError>>)>>>;

/// A connected client. Dropping it closes the connection.
#[derive(Debug)]
pub struct Client {
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    timeout: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Client {
    /// Connects and starts reading; events arrive on the returned receiver.
    pub async fn connect(
        endpoint: &Endpoint,
        max_message_bytes: usize,
        timeout: Duration,
    ) -> Result<(Client, mpsc::Receiver<Event>), OvsdbError> {
        let connect_error = |source| OvsdbError::Connect {
            endpoint: endpoint.to_string(),
            source,
        };
        match endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_error)?;
                let (read, write) = stream.into_split();
                Ok(Self::start(read, write, max_message_bytes, timeout))
            }
            Endpoint::Tcp(address) => {
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(connect_error)?;
                let (read, write) = stream.into_split();
                Ok(Self::start(read, write, max_message_bytes, timeout))
            }
            Endpoint::Ssl { address, files } => {
                let invalid = |message: String| {
                    connect_error(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        message,
                    ))
                };
                let files = files.as_ref().ok_or_else(|| {
                    invalid("ssl needs a CA certificate, a certificate and a key".into())
                })?;
                let config = super::tls::client_config(files).map_err(invalid)?;
                let host = address
                    .rsplit_once(':')
                    .map_or(address.as_str(), |(host, _)| host);
                let name = rustls::pki_types::ServerName::try_from(
                    host.trim_matches(['[', ']']).to_owned(),
                )
                .map_err(|e| invalid(format!("`{host}`: {e}")))?;
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(connect_error)?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await
                    .map_err(connect_error)?;
                let (read, write) = tokio::io::split(stream);
                Ok(Self::start(read, write, max_message_bytes, timeout))
            }
        }
    }

    fn start<R, W>(
        read: R,
        write: W,
        max_message_bytes: usize,
        timeout: Duration,
    ) -> (Client, mpsc::Receiver<Event>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (outgoing, to_write) = mpsc::unbounded_channel::<Vec<u8>>();
        let (events_tx, events) = mpsc::channel(1024);
        let pending: Pending = Arc::default();
        let writer = tokio::spawn(write_loop(write, to_write));
        let reader = tokio::spawn(read_loop(
            read,
            max_message_bytes,
            pending.clone(),
            outgoing.clone(),
            events_tx,
        ));
        let client = Client {
            outgoing,
            pending,
            next_id: AtomicU64::new(1),
            timeout,
            tasks: vec![reader, writer],
        };
        (client, events)
    }

    /// Sends a request and waits for its result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (method.to_owned(), tx));
        let request = json!({"method": method, "params": params, "id": id});
        let bytes = serde_json::to_vec(&request).map_err(|e| OvsdbError::Malformed {
            method: Some(method.into()),
            message: e.to_string(),
        })?;
        self.outgoing.send(bytes).map_err(|_| OvsdbError::Closed)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(OvsdbError::Closed),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                Err(OvsdbError::Timeout(method.to_owned()))
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut to_write: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(bytes) = to_write.recv().await {
        if write.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read: R,
    max_message_bytes: usize,
    pending: Pending,
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    events: mpsc::Sender<Event>,
) {
    let reason = read_messages(&mut read, max_message_bytes, &pending, &outgoing, &events).await;
    for (_, (_, waiter)) in pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
    {
        let _ = waiter.send(Err(OvsdbError::Closed));
    }
    let _ = events.send(Event::Closed(reason)).await;
}

/// Reads until the connection ends; returns why it ended.
async fn read_messages<R: AsyncRead + Unpin>(
    read: &mut R,
    max_message_bytes: usize,
    pending: &Pending,
    outgoing: &mpsc::UnboundedSender<Vec<u8>>,
    events: &mpsc::Sender<Event>,
) -> OvsdbError {
    let mut splitter = Splitter::new(max_message_bytes);
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match read.read(&mut chunk).await {
            Ok(0) => return OvsdbError::Closed,
            Ok(n) => n,
            Err(err) => return OvsdbError::Io(err),
        };
        buffer.extend_from_slice(&chunk[..n]);
        loop {
            let end = match splitter.next_end(&buffer) {
                Ok(Some(end)) => end,
                Ok(None) => break,
                Err(err) => return err.into(),
            };
            let parsed = serde_json::from_slice::<Value>(&buffer[..end]);
            buffer.drain(..end);
            splitter.consumed(end);
            let message = match parsed {
                Ok(message) => message,
                Err(err) => {
                    return OvsdbError::Malformed {
                        method: None,
                        message: err.to_string(),
                    };
                }
            };
            if let Err(err) = dispatch(message, pending, outgoing, events).await {
                return err;
            }
        }
        // Do not keep a large message's capacity once it is gone.
        if buffer.is_empty() && buffer.capacity() > 1024 * 1024 {
            buffer = Vec::with_capacity(64 * 1024);
        }
    }
}

async fn dispatch(
    message: Value,
    pending: &Pending,
    outgoing: &mpsc::UnboundedSender<Vec<u8>>,
    events: &mpsc::Sender<Event>,
) -> Result<(), OvsdbError> {
    let Value::Object(mut message) = message else {
        return Err(OvsdbError::Malformed {
            method: None,
            message: "a message that is not a JSON object".into(),
        });
    };
    let id = message.remove("id").unwrap_or(Value::Null);
    match message.remove("method") {
        Some(Value::String(method)) => {
            let params = message.remove("params").unwrap_or(Value::Null);
            if method == "echo" {
                let reply = json!({"id": id, "result": params, "error": null});
                let bytes = serde_json::to_vec(&reply).map_err(|e| OvsdbError::Malformed {
                    method: Some(method.clone()),
                    message: e.to_string(),
                })?;
                return outgoing.send(bytes).map_err(|_| OvsdbError::Closed);
            }
            if !id.is_null() {
                // A request we do not serve: answer it rather than leave the server waiting.
                let reply = json!({"id": id, "result": null, "error": "not supported"});
                let bytes = serde_json::to_vec(&reply).map_err(|e| OvsdbError::Malformed {
                    method: Some(method.clone()),
                    message: e.to_string(),
                })?;
                return outgoing.send(bytes).map_err(|_| OvsdbError::Closed);
            }
            events
                .send(Event::Notification { method, params })
                .await
                .map_err(|_| OvsdbError::Closed)
        }
        Some(other) => Err(OvsdbError::Malformed {
            method: None,
            message: format!("`method` is not a string: {other}"),
        }),
        None => {
            let Some(id) = id.as_u64() else {
                return Err(OvsdbError::Malformed {
                    method: None,
                    message: format!("a response with an unknown id {id}"),
                });
            };
            let Some((method, waiter)) = pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id)
            else {
                return Err(OvsdbError::Malformed {
                    method: None,
                    message: format!("a response to id {id}, which was not asked"),
                });
            };
            let error = message.remove("error").unwrap_or(Value::Null);
            let result = if error.is_null() {
                Ok(message.remove("result").unwrap_or(Value::Null))
            } else {
                Err(OvsdbError::Rpc { method, error })
            };
            let _ = waiter.send(result);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a client against a scripted server on an in-memory pipe.
    async fn scripted(
        server_says: &'static [u8],
    ) -> (Client, mpsc::Receiver<Event>, tokio::io::DuplexStream) {
        let (client_side, mut server_side) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(client_side);
        let (client, events) = Client::start(read, write, 4096, Duration::from_secs(2));
        server_side.write_all(server_says).await.expect("write");
        (client, events, server_side)
    }

    #[tokio::test]
    async fn echo_is_answered_and_notifications_delivered() {
        let (_client, mut events, mut server) =
            scripted(br#"{"method":"echo","params":["x"],"id":"echo"}{"method":"update","params":[null,{}],"id":null}"#).await;
        let mut reply = vec![0u8; 256];
        let n = server.read(&mut reply).await.expect("reply");
        let reply: Value = serde_json::from_slice(&reply[..n]).expect("json reply");
        assert_eq!(reply, json!({"id": "echo", "result": ["x"], "error": null}));
        match events.recv().await {
            Some(Event::Notification { method, .. }) => assert_eq!(method, "update"),
            other => panic!("expected a notification, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn malformed_input_closes_with_a_named_error() {
        for (input, expected) in [
            (&br#"{"id":1,"result":[] garbage}"#[..], "malformed"),
            (&b"not json at all"[..], "unexpected byte"),
            (
                &br#"{"method":7,"id":null}"#[..],
                "`method` is not a string",
            ),
            (&br#"{"id":99,"result":[]}"#[..], "not asked"),
        ] {
            let (_client, mut events, _server) = scripted(input).await;
            match events.recv().await {
                Some(Event::Closed(err)) => {
                    assert!(err.to_string().contains(expected), "{input:?}: {err}")
                }
                other => panic!("expected a close, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_before_it_is_buffered() {
        let mut big = br#"{"method":"update","params":[""#.to_vec();
        big.extend(std::iter::repeat_n(b'x', 10_000));
        let (client_side, mut server_side) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(client_side);
        let (_client, mut events) = Client::start(read, write, 4096, Duration::from_secs(2));
        server_side.write_all(&big).await.expect("write");
        match events.recv().await {
            Some(Event::Closed(err)) => {
                assert!(err.to_string().contains("4096-byte limit"), "{err}")
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn errors_and_results_reach_their_callers() {
        let (client_side, server_side) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(client_side);
        let (client, _events) = Client::start(read, write, 4096, Duration::from_secs(2));
        let (mut server_read, mut server_write) = tokio::io::split(server_side);
        let server = tokio::spawn(async move {
            let mut buf = vec![0u8; 1024];
            for _ in 0..2 {
                let n = server_read.read(&mut buf).await.expect("request");
                let request: Value = serde_json::from_slice(&buf[..n]).expect("json");
                let reply = if request["method"] == "list_dbs" {
                    json!({"id": request["id"], "result": ["Open_vSwitch"], "error": null})
                } else {
                    json!({"id": request["id"], "result": null, "error": "unknown method"})
                };
                server_write
                    .write_all(&serde_json::to_vec(&reply).expect("encode"))
                    .await
                    .expect("reply");
            }
        });
        assert_eq!(
            client.call("list_dbs", json!([])).await.ok(),
            Some(json!(["Open_vSwitch"]))
        );
        let err = client
            .call("monitor_cond_since", json!([]))
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("monitor_cond_since failed: \"unknown method\"")
        );
        server.await.expect("server");
    }
}
