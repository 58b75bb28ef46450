use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calipso_proto::wire::{Command, DEFAULT_MAX_FRAME_BYTES, HealthOverrides};
use quinn::crypto::rustls::QuicServerConfig;
use tokio::sync::mpsc;

use super::IngestSink;
use super::session;
use crate::tls::{ServerTlsPaths, TlsError, server_config};

/// How the ingest endpoint listens and what it tolerates.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub listen: SocketAddr,
    pub tls: ServerTlsPaths,
    pub max_frame_bytes: usize,
    /// A session with no traffic (agents send keep-alives) for this long is dropped and its
    /// host reported disconnected.
    pub idle_timeout: Duration,
    /// How long a new connection may take to open its stream and say `Hello`.
    pub hello_timeout: Duration,
    /// Accept agent certificates that name no environment (issued before binding), for the
    /// environment their Hello names. Off: such a session is refused with how to re-issue.
    pub allow_unbound_agents: bool,
}

impl IngestConfig {
    pub fn new(listen: SocketAddr, tls: ServerTlsPaths) -> Self {
        IngestConfig {
            listen,
            tls,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            idle_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
            allow_unbound_agents: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("QUIC configuration: {0}")]
    Quic(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A live session, as the registry knows it.
#[derive(Debug)]
pub(super) struct SessionEntry {
    pub(super) id: u64,
    pub(super) environment: String,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) connection: quinn::Connection,
}

/// The live sessions, one per host: a newer session for a host supersedes the older one.
#[derive(Debug, Default)]
pub(super) struct Registry {
    sessions: Mutex<HashMap<String, SessionEntry>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Registry {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a session and closes the one it replaces; returns its id.
    pub(super) fn register(
        &self,
        session: &super::AgentSession,
        commands: mpsc::Sender<Command>,
        connection: quinn::Connection,
    ) -> u64 {
        let host = session.host.as_str();
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let previous = self.sessions().insert(
            host.to_owned(),
            SessionEntry {
                id,
                environment: session.environment.clone(),
                commands,
                connection,
            },
        );
        if let Some(previous) = previous {
            tracing::info!(host, "new session supersedes the previous one");
            previous
                .connection
                .close(session::CLOSE_SUPERSEDED, b"superseded by a newer session");
        }
        id
    }

    /// Removes the session if it is still the host's current one; returns whether it was.
    pub(super) fn unregister(&self, host: &str, id: u64) -> bool {
        let mut sessions = self.sessions();
        if sessions.get(host).is_some_and(|s| s.id == id) {
            sessions.remove(host);
            true
        } else {
            false
        }
    }
}

/// Talks to the live sessions of a running server.
#[derive(Debug, Clone)]
pub struct IngestHandle {
    registry: Arc<Registry>,
}

impl IngestHandle {
    /// Asks a connected host's agent for a fresh snapshot; false if the host is not connected.
    pub fn request_resync(&self, host: &str) -> bool {
        let sender = self
            .registry
            .sessions()
            .get(host)
            .map(|s| s.commands.clone());
        sender.is_some_and(|s| s.try_send(Command::Resync).is_ok())
    }

    /// Gives the connected agents of `environment` its health settings; returns how many.
    pub fn configure(&self, environment: &str, overrides: &HealthOverrides) -> usize {
        self.registry
            .sessions()
            .values()
            .filter(|s| s.environment == environment)
            .filter(|s| {
                s.commands
                    .try_send(Command::Configure(overrides.clone()))
                    .is_ok()
            })
            .count()
    }

    /// Drops a host's session at once, as a network failure would; the agent reconnects and
    /// resumes. False if the host is not connected.
    pub fn disconnect(&self, host: &str) -> bool {
        let connection = self
            .registry
            .sessions()
            .get(host)
            .map(|s| s.connection.clone());
        if let Some(connection) = &connection {
            connection.close(
                session::CLOSE_DISCONNECTED,
                b"disconnected by the aggregator",
            );
        }
        connection.is_some()
    }

    /// The hosts with a live session, sorted.
    pub fn connected_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.registry.sessions().keys().cloned().collect();
        hosts.sort();
        hosts
    }
}

/// The QUIC endpoint agents connect to.
#[derive(Debug)]
pub struct IngestServer<S> {
    endpoint: quinn::Endpoint,
    sink: Arc<S>,
    registry: Arc<Registry>,
    config: Arc<IngestConfig>,
}

impl<S: IngestSink> IngestServer<S> {
    pub fn bind(config: IngestConfig, sink: Arc<S>) -> Result<Self, IngestError> {
        let crypto = QuicServerConfig::try_from(server_config(&config.tls)?)
            .map_err(|e| IngestError::Quic(e.to_string()))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
            .map_err(|e| IngestError::Quic(e.to_string()))?;
        transport.max_idle_timeout(Some(idle));
        // One ordered stream per session; nothing else may be opened.
        transport.max_concurrent_bidi_streams(1u8.into());
        transport.max_concurrent_uni_streams(0u8.into());
        server_config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server_config, config.listen).map_err(|source| {
            IngestError::Bind {
                addr: config.listen,
                source,
            }
        })?;
        Ok(IngestServer {
            endpoint,
            sink,
            registry: Arc::default(),
            config: Arc::new(config),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn handle(&self) -> IngestHandle {
        IngestHandle {
            registry: self.registry.clone(),
        }
    }

    /// Accepts sessions until `shutdown` resolves, then closes every connection.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                () = &mut shutdown => break,
                incoming = self.endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { break };
            let (sink, registry, config) = (
                self.sink.clone(),
                self.registry.clone(),
                self.config.clone(),
            );
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(connection) => session::run(connection, sink, registry, config).await,
                    // Wrong CA, revoked or missing certificate, wrong ALPN: rustls refused it.
                    Err(err) => tracing::warn!(%remote, %err, "agent handshake refused"),
                }
            });
        }
        self.endpoint
            .close(session::CLOSE_SHUTDOWN, b"aggregator shutting down");
        self.endpoint.wait_idle().await;
    }
}
