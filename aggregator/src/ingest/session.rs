//! One agent session, from handshake to close.

use std::sync::Arc;
use std::time::Duration;

use calipso_proto::codec;
use calipso_proto::framing::{FrameError, FrameReader, FrameWriter};
use calipso_proto::wire::{
    Ack, AgentMessage, AggregatorMessage, Command, Delta, ErrorCode, Hello, PROTOCOL_VERSION,
    ProtocolError, Resume, Snapshot, Welcome,
};
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::server::{IngestConfig, Registry};
use super::{AgentSession, IngestSink, Outcome};
use crate::tls::{AgentIdentity, peer_identity};

pub(super) const CLOSE_NORMAL: VarInt = VarInt::from_u32(0);
pub(super) const CLOSE_PROTOCOL_ERROR: VarInt = VarInt::from_u32(1);
pub(super) const CLOSE_SUPERSEDED: VarInt = VarInt::from_u32(2);
pub(super) const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(3);
pub(super) const CLOSE_DISCONNECTED: VarInt = VarInt::from_u32(4);

/// The most frames gathered into one sink call (one group commit).
const MAX_BATCH: usize = 4096;
/// Consecutive undecodable frames tolerated before the session is closed.
const MAX_MALFORMED_IN_A_ROW: u32 = 16;
/// How long a refused peer gets to read our `Error` before the connection is closed.
const LINGER: Duration = Duration::from_secs(2);

/// Why a session ended.
enum End {
    /// The agent closed the stream or the connection was lost.
    Closed(String),
    /// We refused something: the agent is told why, then the connection closes.
    Refused(ProtocolError),
}

fn refused(code: ErrorCode, message: impl Into<String>) -> End {
    End::Refused(ProtocolError {
        code,
        message: message.into(),
    })
}

impl From<FrameError> for End {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::TooLarge { max } => refused(
                ErrorCode::FrameTooLarge,
                format!("frame length exceeds the limit of {max} bytes"),
            ),
            FrameError::Decode(err) => refused(ErrorCode::MalformedMessage, err.to_string()),
            FrameError::Encode(err) => End::Closed(err.to_string()),
            FrameError::Io(err) => End::Closed(err.to_string()),
        }
    }
}

pub(super) async fn run<S: IngestSink>(
    connection: quinn::Connection,
    sink: Arc<S>,
    registry: Arc<Registry>,
    config: Arc<IngestConfig>,
) {
    let remote = connection.remote_address();
    // Client authentication is mandatory, so a connection without a certificate cannot exist.
    let Some(identity) = peer_identity(&connection) else {
        tracing::warn!(%remote, "agent certificate has no subject common name");
        connection.close(CLOSE_PROTOCOL_ERROR, b"certificate has no identity");
        return;
    };
    let span = tracing::info_span!("session", host = %identity.host, %remote);
    async move {
        let streams = tokio::time::timeout(config.hello_timeout, connection.accept_bi()).await;
        let (send, recv) = match streams {
            Ok(Ok(streams)) => streams,
            Ok(Err(err)) => return tracing::debug!(%err, "connection ended before its stream opened"),
            Err(_) => {
                tracing::warn!("no stream opened within {:?}", config.hello_timeout);
                return connection.close(CLOSE_PROTOCOL_ERROR, b"no session stream");
            }
        };
        let mut reader = FrameReader::new(recv, config.max_frame_bytes);
        let mut writer = FrameWriter::new(send, config.max_frame_bytes);
        let hello = match tokio::time::timeout(config.hello_timeout, read_hello(&mut reader)).await {
            Ok(Ok(hello)) => hello,
            Ok(Err(end)) => return finish(&connection, &mut writer, end).await,
            Err(_) => {
                let end = refused(ErrorCode::UnexpectedMessage, format!("no Hello within {:?}", config.hello_timeout));
                return finish(&connection, &mut writer, end).await;
            }
        };
        if let Err(reason) = admit(&identity, &hello, config.allow_unbound_agents) {
            tracing::warn!(claimed_host = %hello.host, claimed_environment = %hello.environment, "{reason}");
            return finish(&connection, &mut writer, refused(ErrorCode::IdentityMismatch, reason)).await;
        }
        let info = AgentSession {
            host: hello.host.clone(),
            environment: hello.environment.clone(),
            agent_version: hello.agent_version.clone(),
            epoch: hello.epoch,
            last_acked_seq: hello.last_acked_seq,
        };
        let (command_tx, command_rx) = mpsc::channel(16);
        let session_id = registry.register(&info, command_tx, connection.clone());
        let mut session = Session { sink: sink.clone(), info, writer, last_seq: 0, awaiting_snapshot: true, malformed_in_a_row: 0 };
        let end = match session.welcome(&hello).await {
            Ok(()) => session.serve(&mut reader, command_rx).await,
            Err(end) => end,
        };
        finish(&connection, &mut session.writer, end).await;
        if registry.unregister(&session.info.host, session_id) {
            sink.host_disconnected(&session.info.host).await;
        }
    }
    .instrument(span)
    .await;
}

/// Whether the certificate allows what the Hello claims: its own host, in the environment it
/// was issued for. A certificate from before environments were bound passes only when the
/// operator allows it (while agents are re-issued).
fn admit(identity: &AgentIdentity, hello: &Hello, allow_unbound: bool) -> Result<(), String> {
    let host = &identity.host;
    if hello.host != *host {
        return Err(format!(
            "certificate identifies host `{host}` but Hello claims `{}`",
            hello.host
        ));
    }
    match &identity.environment {
        Some(bound) if *bound == hello.environment => Ok(()),
        Some(bound) => Err(format!(
            "the certificate of host `{host}` is for environment `{bound}`, not `{}`: set the agent's environment to `{bound}`, or issue a certificate for `{}`",
            hello.environment, hello.environment
        )),
        None if allow_unbound => {
            tracing::warn!(
                "the certificate of host `{host}` names no environment; accepted for `{}` because [ingest] allow_unbound_agents is set",
                hello.environment
            );
            Ok(())
        }
        None => Err(format!(
            "the certificate of host `{host}` names no environment: issue it again with `calipso-aggregator ca issue-agent --host {host} --environment {}`",
            hello.environment
        )),
    }
}

async fn read_hello(reader: &mut FrameReader<RecvStream>) -> Result<Hello, End> {
    let Some(frame) = reader.next_frame().await? else {
        return Err(End::Closed("stream closed before Hello".into()));
    };
    if let Some(version) = codec::peek_hello_version(&frame)
        && version != PROTOCOL_VERSION
    {
        return Err(refused(
            ErrorCode::UnsupportedVersion,
            format!(
                "aggregator speaks protocol version {PROTOCOL_VERSION}, agent sent version {version}"
            ),
        ));
    }
    match codec::decode::<AgentMessage>(&frame) {
        Ok(AgentMessage::Hello(hello)) => Ok(hello),
        Ok(_) => Err(refused(
            ErrorCode::UnexpectedMessage,
            "the first message of a session must be Hello",
        )),
        Err(err) => Err(refused(ErrorCode::MalformedMessage, err.to_string())),
    }
}

/// Tells the agent why the session ends (if we end it) and closes the connection once the
/// message had its chance to arrive.
async fn finish(connection: &quinn::Connection, writer: &mut FrameWriter<SendStream>, end: End) {
    match end {
        End::Closed(reason) => {
            tracing::info!(%reason, "session closed");
            connection.close(CLOSE_NORMAL, b"");
        }
        End::Refused(error) => {
            tracing::warn!(code = %error.code, message = %error.message, "session refused");
            if writer.send(&AggregatorMessage::Error(error)).await.is_ok() {
                let stream = writer.get_mut();
                if stream.finish().is_ok() {
                    let _ = tokio::time::timeout(LINGER, stream.stopped()).await;
                }
            }
            connection.close(CLOSE_PROTOCOL_ERROR, b"refused");
        }
    }
}

struct Session<S> {
    sink: Arc<S>,
    info: AgentSession,
    writer: FrameWriter<SendStream>,
    /// The last sequence number durable in the sink for this epoch.
    last_seq: u64,
    /// Deltas are dropped until a snapshot arrives (after SnapshotRequired or a sequence gap).
    awaiting_snapshot: bool,
    malformed_in_a_row: u32,
}

impl<S: IngestSink> Session<S> {
    async fn send(&mut self, message: AggregatorMessage) -> Result<(), End> {
        self.writer
            .send(&message)
            .await
            .map(drop)
            .map_err(End::from)
    }

    async fn welcome(&mut self, hello: &Hello) -> Result<(), End> {
        let unavailable = |e: super::SinkError| refused(ErrorCode::Unavailable, e.0);
        self.sink
            .host_connected(&self.info)
            .await
            .map_err(unavailable)?;
        let point = self
            .sink
            .resume_point(&self.info.host)
            .await
            .map_err(unavailable)?;
        let resume = match point {
            Some(p) if p.epoch == hello.epoch && hello.last_acked_seq <= p.seq => {
                self.last_seq = p.seq;
                self.awaiting_snapshot = false;
                Resume::After { seq: p.seq }
            }
            _ => Resume::SnapshotRequired,
        };
        tracing::info!(epoch = hello.epoch, agent_last_acked = hello.last_acked_seq, ?resume, agent_version = %hello.agent_version, "session established");
        self.send(AggregatorMessage::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            resume,
        }))
        .await?;
        // Always sent, empty or not: settings the environment dropped while the agent was
        // away are dropped by the agent too.
        let health = self.sink.health_overrides(&self.info.environment);
        self.send(AggregatorMessage::Command(Command::Configure(health)))
            .await
    }

    async fn serve(
        &mut self,
        reader: &mut FrameReader<RecvStream>,
        mut commands: mpsc::Receiver<Command>,
    ) -> End {
        loop {
            let first = tokio::select! {
                message = reader.recv::<AgentMessage>() => message,
                Some(command) = commands.recv() => {
                    if let Err(end) = self.send(AggregatorMessage::Command(command)).await {
                        return end;
                    }
                    continue;
                }
            };
            let mut batch = match first {
                Ok(Some(message)) => vec![message],
                Ok(None) => return End::Closed("agent closed the session".into()),
                Err(FrameError::Decode(err)) => {
                    if let Err(end) = self.skip_malformed(&err.to_string()).await {
                        return end;
                    }
                    continue;
                }
                Err(err) => return err.into(),
            };
            self.malformed_in_a_row = 0;
            // Whatever else has already arrived joins the batch: one sink call, one ack.
            let mut deferred_error = None;
            while batch.len() < MAX_BATCH {
                match reader.recv_ready::<AgentMessage>() {
                    Some(Ok(message)) => batch.push(message),
                    Some(Err(err)) => {
                        deferred_error = Some(err);
                        break;
                    }
                    None => break,
                }
            }
            if let Err(end) = self.handle_batch(batch).await {
                return end;
            }
            match deferred_error {
                Some(FrameError::Decode(err)) => {
                    if let Err(end) = self.skip_malformed(&err.to_string()).await {
                        return end;
                    }
                }
                Some(err) => return err.into(),
                None => {}
            }
        }
    }

    /// A frame that does not decode (an object of a type this aggregator does not know, say)
    /// is refused on its own: the agent is told why and the session goes on. The sequence
    /// number it carried is missing, so the next delta asks for a snapshot; nothing is lost.
    /// Only a peer that sends nothing but garbage is disconnected.
    async fn skip_malformed(&mut self, reason: &str) -> Result<(), End> {
        self.malformed_in_a_row += 1;
        if self.malformed_in_a_row > MAX_MALFORMED_IN_A_ROW {
            return Err(refused(
                ErrorCode::MalformedMessage,
                format!("{MAX_MALFORMED_IN_A_ROW} malformed frames in a row; last: {reason}"),
            ));
        }
        tracing::warn!(%reason, "malformed frame refused");
        self.send(AggregatorMessage::Error(ProtocolError {
            code: ErrorCode::MalformedMessage,
            message: format!("frame refused: {reason}"),
        }))
        .await
    }

    async fn handle_batch(&mut self, batch: Vec<AgentMessage>) -> Result<(), End> {
        let mut group = Vec::new();
        for message in batch {
            match message {
                AgentMessage::Delta(delta) => {
                    if let Some(delta) = self.admit(delta).await? {
                        group.push(delta);
                    }
                }
                AgentMessage::Snapshot(snapshot) => {
                    self.apply_group(std::mem::take(&mut group)).await?;
                    self.apply_snapshot(snapshot).await?;
                }
                AgentMessage::Hello(_) => {
                    return Err(refused(
                        ErrorCode::UnexpectedMessage,
                        "Hello in the middle of a session",
                    ));
                }
            }
        }
        self.apply_group(group).await?;
        self.send(AggregatorMessage::Ack(Ack { seq: self.last_seq }))
            .await
    }

    /// Decides whether a delta is the next one to apply; asks for a snapshot on a gap.
    async fn admit(&mut self, delta: Delta) -> Result<Option<Delta>, End> {
        if delta.epoch != self.info.epoch {
            return Err(refused(
                ErrorCode::UnexpectedMessage,
                format!(
                    "delta {} belongs to epoch {}, the session's epoch is {}",
                    delta.seq, delta.epoch, self.info.epoch
                ),
            ));
        }
        if self.awaiting_snapshot || delta.seq <= self.last_seq {
            // Covered by the snapshot to come, or already durable (a resend after a lost ack).
            return Ok(None);
        }
        if delta.seq != self.last_seq + 1 {
            tracing::warn!(
                expected = self.last_seq + 1,
                got = delta.seq,
                "sequence gap: asking for a snapshot"
            );
            self.awaiting_snapshot = true;
            self.send(AggregatorMessage::Command(Command::Resync))
                .await?;
            return Ok(None);
        }
        self.last_seq = delta.seq;
        Ok(Some(delta))
    }

    async fn apply_group(&mut self, group: Vec<Delta>) -> Result<(), End> {
        if group.is_empty() {
            return Ok(());
        }
        let seqs: Vec<u64> = group.iter().map(|d| d.seq).collect();
        let outcomes = self
            .sink
            .apply_deltas(&self.info, group)
            .await
            .map_err(|e| refused(ErrorCode::Unavailable, e.0))?;
        for (seq, outcome) in seqs.into_iter().zip(outcomes) {
            self.report(&format!("delta {seq}"), outcome).await?;
        }
        Ok(())
    }

    async fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), End> {
        if snapshot.epoch != self.info.epoch {
            return Err(refused(
                ErrorCode::UnexpectedMessage,
                format!(
                    "snapshot of epoch {}, the session's epoch is {}",
                    snapshot.epoch, self.info.epoch
                ),
            ));
        }
        let seq = snapshot.seq;
        let outcome = self
            .sink
            .apply_snapshot(&self.info, snapshot)
            .await
            .map_err(|e| refused(ErrorCode::Unavailable, e.0))?;
        self.last_seq = seq;
        self.awaiting_snapshot = false;
        self.report(&format!("snapshot {seq}"), outcome).await
    }

    /// A rejected item is reported to the agent; the session goes on.
    async fn report(&mut self, what: &str, outcome: Outcome) -> Result<(), End> {
        match outcome {
            Outcome::Applied => Ok(()),
            Outcome::Rejected(reason) => {
                tracing::warn!(%reason, "{what} rejected");
                let error = ProtocolError {
                    code: ErrorCode::Rejected,
                    message: format!("{what} rejected: {reason}"),
                };
                self.send(AggregatorMessage::Error(error)).await
            }
        }
    }
}
