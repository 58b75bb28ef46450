//! The agent's side of the session: connects to the aggregator over QUIC with its client
//! certificate, says hello, resumes or sends a snapshot, then streams deltas as the outbox
//! grows and trims the outbox as acknowledgements arrive. On any failure it reconnects with
//! capped exponential backoff and jitter, keeping the outbox.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use calipso_proto::framing::{FrameError, FrameReader, FrameWriter};
use calipso_proto::tls::{PemError, load_certs, load_key};
use calipso_proto::wire::{
    ALPN, AgentMessage, AggregatorMessage, Command, ErrorCode, HealthOverrides, Hello,
    PROTOCOL_VERSION, ProtocolError, Resume,
};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{RecvStream, SendStream};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{AggregatorConfig, UplinkTls};
use crate::outbox::Outbox;

/// The first reconnect delay; it doubles per failed attempt up to the configured cap.
const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// How long the aggregator may take to answer a Hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
}

/// Why one session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot resolve `{0}`")]
    Resolve(String),
    #[error("connect: {0}")]
    Connect(String),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("aggregator refused the session: {0}")]
    Refused(ProtocolError),
    #[error("aggregator broke the protocol: {0}")]
    Protocol(String),
    #[error("aggregator closed the session")]
    Closed,
}

/// What the uplink did, for observers (tests, status reporting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkEvent {
    Connected { resume: Resume },
    SentSnapshot { seq: u64, bytes: usize },
    SentDelta { seq: u64, bytes: usize },
    Acked { seq: u64 },
    Disconnected { reason: String },
}

/// Counters over the uplink's whole life.
#[derive(Debug, Default)]
pub struct UplinkStats {
    /// Sessions established (Welcome received).
    pub sessions: AtomicU64,
    /// Protocol bytes written: frames with their length prefixes.
    pub frame_bytes_sent: AtomicU64,
    /// UDP payload bytes sent by finished connections, QUIC and TLS overhead included.
    pub udp_bytes_sent: AtomicU64,
}

/// A configured uplink, ready to run.
#[derive(Debug)]
pub struct Uplink {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    address: String,
    server_name: String,
    max_frame_bytes: usize,
    reconnect_max: Duration,
    agent_version: String,
    events: broadcast::Sender<UplinkEvent>,
    stats: UplinkStats,
    /// The environment's health settings, as the aggregator last sent them.
    health: watch::Sender<Arc<HealthOverrides>>,
}

impl Uplink {
    pub fn new(config: &AggregatorConfig, tls: &UplinkTls) -> Result<Self, UplinkError> {
        let client_config = client_config(config, tls)?;
        let bind: SocketAddr = ([0, 0, 0, 0], 0).into();
        let endpoint = quinn::Endpoint::client(bind).map_err(UplinkError::Socket)?;
        Ok(Uplink {
            endpoint,
            client_config,
            address: config.address.clone(),
            server_name: config.server_name.clone(),
            max_frame_bytes: config.max_frame_bytes,
            reconnect_max: config.reconnect_max,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            events: broadcast::channel(4096).0,
            stats: UplinkStats::default(),
            health: watch::channel(Arc::default()).0,
        })
    }

    /// Follows what the uplink does; slow subscribers miss events rather than slow it down.
    pub fn subscribe(&self) -> broadcast::Receiver<UplinkEvent> {
        self.events.subscribe()
    }

    pub fn stats(&self) -> &UplinkStats {
        &self.stats
    }

    /// The health settings the environment gives its agents (empty until a session says).
    pub fn health_overrides(&self) -> watch::Receiver<Arc<HealthOverrides>> {
        self.health.subscribe()
    }

    fn emit(&self, event: UplinkEvent) {
        let _ = self.events.send(event);
    }

    /// Keeps a session up until `shutdown` is cancelled.
    pub async fn run(&self, outbox: Outbox, shutdown: CancellationToken) {
        let mut attempt: u32 = 0;
        loop {
            let started = Instant::now();
            match self.session(&outbox, &shutdown).await {
                Ok(()) => break,
                Err(err) => {
                    let level_error = matches!(&err, SessionError::Refused(e) if e.code != ErrorCode::Unavailable);
                    if level_error {
                        tracing::error!(%err, "session ended");
                    } else {
                        tracing::warn!(%err, "session ended");
                    }
                    self.emit(UplinkEvent::Disconnected {
                        reason: err.to_string(),
                    });
                }
            }
            if started.elapsed() >= STABLE_SESSION {
                attempt = 0;
            }
            let delay = crate::backoff::delay(attempt, BACKOFF_INITIAL, self.reconnect_max);
            attempt = attempt.saturating_add(1);
            tracing::debug!(?delay, attempt, "reconnecting");
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.endpoint.close(0u8.into(), b"agent shutting down");
        self.endpoint.wait_idle().await;
    }

    /// One session; `Ok` only when `shutdown` ended it.
    async fn session(
        &self,
        outbox: &Outbox,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let connect = async {
            let addr = tokio::net::lookup_host(&self.address)
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| SessionError::Resolve(self.address.clone()))?;
            let connection = self
                .endpoint
                .connect_with(self.client_config.clone(), addr, &self.server_name)
                .map_err(|e| SessionError::Connect(e.to_string()))?
                .await?;
            let streams = connection.open_bi().await?;
            Ok::<_, SessionError>((connection, streams))
        };
        let (connection, (send, recv)) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            connected = connect => connected?,
        };
        let mut session = Session {
            uplink: self,
            outbox,
            reader: FrameReader::new(recv, self.max_frame_bytes),
            writer: FrameWriter::new(send, self.max_frame_bytes),
            sent_seq: 0,
        };
        let result = tokio::select! {
            () = shutdown.cancelled() => Ok(()),
            result = session.run() => result,
        };
        if result.is_ok() {
            let _ = session.writer.get_mut().finish();
        }
        self.stats
            .frame_bytes_sent
            .fetch_add(session.writer.bytes_written(), Ordering::Relaxed);
        connection.close(0u8.into(), b"");
        self.stats
            .udp_bytes_sent
            .fetch_add(connection.stats().udp_tx.bytes, Ordering::Relaxed);
        result
    }
}

/// The QUIC client configuration of an agent: TLS 1.3 with its client certificate, the
/// deployment CA as the only root, ALPN `calipso/1`, keep-alives and the idle timeout.
pub fn client_config(
    config: &AggregatorConfig,
    tls: &UplinkTls,
) -> Result<quinn::ClientConfig, UplinkError> {
    let tls_err = |path: &Path, e: &dyn std::fmt::Display| {
        UplinkError::Tls(format!("{}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(&tls.ca_cert)? {
        roots.add(cert).map_err(|e| tls_err(&tls.ca_cert, &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| UplinkError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(&tls.cert)?, load_key(&tls.key)?)
        .map_err(|e| tls_err(&tls.key, &e))?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(crypto).map_err(|e| UplinkError::Tls(e.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(config.keep_alive));
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .map_err(|e| UplinkError::Tls(e.to_string()))?;
    transport.max_idle_timeout(Some(idle));
    client_config.transport_config(Arc::new(transport));
    Ok(client_config)
}

struct Session<'a> {
    uplink: &'a Uplink,
    outbox: &'a Outbox,
    reader: FrameReader<RecvStream>,
    writer: FrameWriter<SendStream>,
    /// The highest sequence number this session has sent (or that the aggregator already had).
    sent_seq: u64,
}

impl Session<'_> {
    /// Runs until the session fails; the caller ends it on shutdown.
    async fn run(&mut self) -> Result<(), SessionError> {
        let hello = AgentMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: self.uplink.agent_version.clone(),
            host: self.outbox.host().to_owned(),
            environment: self.outbox.environment().to_owned(),
            epoch: self.outbox.epoch(),
            last_acked_seq: self.outbox.acked_seq(),
        });
        self.writer.send(&hello).await?;
        let resume = match tokio::time::timeout(
            WELCOME_TIMEOUT,
            self.reader.recv::<AggregatorMessage>(),
        )
        .await
        {
            Err(_) => {
                return Err(SessionError::Protocol(format!(
                    "no Welcome within {WELCOME_TIMEOUT:?}"
                )));
            }
            Ok(Ok(Some(AggregatorMessage::Welcome(welcome)))) => {
                if welcome.protocol_version != PROTOCOL_VERSION {
                    return Err(SessionError::Protocol(format!(
                        "aggregator speaks protocol version {}, agent speaks {PROTOCOL_VERSION}",
                        welcome.protocol_version
                    )));
                }
                welcome.resume
            }
            Ok(Ok(Some(AggregatorMessage::Error(error)))) => {
                return Err(SessionError::Refused(error));
            }
            Ok(Ok(Some(other))) => {
                return Err(SessionError::Protocol(format!(
                    "expected Welcome, got {other:?}"
                )));
            }
            Ok(Ok(None)) => return Err(SessionError::Closed),
            Ok(Err(err)) => return Err(err.into()),
        };
        tracing::info!(?resume, "connected to the aggregator");
        self.uplink.stats.sessions.fetch_add(1, Ordering::Relaxed);
        self.uplink.emit(UplinkEvent::Connected { resume });
        match resume {
            Resume::After { seq } if self.outbox.resume_after(seq) => self.sent_seq = seq,
            Resume::After { .. } => self.send_snapshot().await?,
            Resume::SnapshotRequired => self.send_snapshot().await?,
        }
        let mut new_deltas = self.outbox.watch();
        loop {
            new_deltas.borrow_and_update();
            self.send_pending().await?;
            tokio::select! {
                changed = new_deltas.changed() => {
                    if changed.is_err() {
                        return Err(SessionError::Protocol("the outbox is gone".into()));
                    }
                }
                message = self.reader.recv::<AggregatorMessage>() => self.handle(message?).await?,
            }
        }
    }

    async fn handle(&mut self, message: Option<AggregatorMessage>) -> Result<(), SessionError> {
        match message {
            None => Err(SessionError::Closed),
            Some(AggregatorMessage::Ack(ack)) => {
                self.outbox.ack(ack.seq);
                self.uplink.emit(UplinkEvent::Acked { seq: ack.seq });
                Ok(())
            }
            Some(AggregatorMessage::Command(Command::Resync)) => {
                tracing::info!("aggregator asked for a snapshot");
                self.send_snapshot().await
            }
            Some(AggregatorMessage::Command(Command::Configure(overrides))) => {
                self.uplink.health.send_if_modified(|current| {
                    let changed = **current != overrides;
                    if changed {
                        tracing::info!(?overrides, "health settings from the environment");
                        *current = Arc::new(overrides);
                    }
                    changed
                });
                Ok(())
            }
            Some(AggregatorMessage::Error(error)) if error.code == ErrorCode::Rejected => {
                tracing::warn!(message = %error.message, "aggregator rejected a change");
                Ok(())
            }
            Some(AggregatorMessage::Error(error)) => Err(SessionError::Refused(error)),
            Some(AggregatorMessage::Welcome(_)) => Err(SessionError::Protocol(
                "Welcome in the middle of a session".into(),
            )),
        }
    }

    async fn send_snapshot(&mut self) -> Result<(), SessionError> {
        let (seq, frame) = self
            .outbox
            .snapshot()
            .map_err(|e| SessionError::Protocol(e.to_string()))?;
        let bytes = self.writer.feed_frame(frame).await?;
        self.writer.flush().await?;
        self.sent_seq = seq;
        tracing::info!(seq, bytes, "sent a snapshot");
        self.uplink.emit(UplinkEvent::SentSnapshot { seq, bytes });
        Ok(())
    }

    async fn send_pending(&mut self) -> Result<(), SessionError> {
        if !self.outbox.can_continue_after(self.sent_seq) {
            return self.send_snapshot().await;
        }
        let pending = self.outbox.pending_after(self.sent_seq);
        if pending.is_empty() {
            return Ok(());
        }
        for delta in pending {
            let bytes = self.writer.feed_frame(delta.frame).await?;
            self.sent_seq = delta.seq;
            self.uplink.emit(UplinkEvent::SentDelta {
                seq: delta.seq,
                bytes,
            });
        }
        self.writer.flush().await?;
        Ok(())
    }
}
