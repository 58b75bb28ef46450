//! The messages of an agent session.
//!
//! One QUIC connection per agent, one ordered bidirectional stream per session:
//!
//! ```text
//! agent                                   aggregator
//!   Hello{version, host, env, epoch, last_acked_seq} ──►
//!                        ◄── Welcome{ResumeAfter{seq} | SnapshotRequired}   (or Error, then close)
//!   Snapshot{epoch, seq, objects}   (only if required, or asked for by Command::Resync)
//!   Delta{epoch, seq, upserts, removals} …  ──►
//!                        ◄── Ack{seq}  (cumulative; sent once the sink says the delta is durable)
//!                        ◄── Command{Resync | Configure{health settings}}  (Configure after every Welcome)
//! ```
//!
//! Compatibility invariant: `Hello` is variant 0 of [`AgentMessage`] with `protocol_version`
//! as its first field, and `Error` is variant 3 of [`AggregatorMessage`]; neither layout may
//! change between protocol versions, so that a version mismatch is always reported clearly.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{Object, ObjectId, ObjectType, Timestamp};

/// The version this build speaks. Bump it on any change to a message's encoding.
pub const PROTOCOL_VERSION: u16 = 3;

/// The ALPN protocol id both ends require during the TLS handshake.
pub const ALPN: &[u8] = b"calipso/1";

/// The default limit on one frame's payload.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// What an agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    Hello(Hello),
    Snapshot(Snapshot),
    Delta(Delta),
}

/// The first message of every session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub agent_version: String,
    pub host: String,
    pub environment: String,
    /// Random per agent start: sequence numbers are only comparable within one epoch.
    pub epoch: u64,
    /// The highest sequence number the aggregator has acknowledged in this epoch (0: none).
    pub last_acked_seq: u64,
}

/// The whole host as the agent sees it after applying every change up to `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub epoch: u64,
    pub seq: u64,
    pub objects: Vec<Object>,
    pub observed_at: Timestamp,
}

/// One batch of changes; `seq` numbers deltas 1, 2, 3 … within an epoch, with no gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub epoch: u64,
    pub seq: u64,
    pub upserts: Vec<Object>,
    pub removals: Vec<ObjectId>,
    pub observed_at: Timestamp,
}

impl Delta {
    /// How many object changes the delta carries.
    pub fn change_count(&self) -> usize {
        self.upserts.len() + self.removals.len()
    }
}

/// What the aggregator sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AggregatorMessage {
    Welcome(Welcome),
    Ack(Ack),
    Command(Command),
    Error(ProtocolError),
}

/// The answer to a `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u16,
    pub resume: Resume,
}

/// Where the session picks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resume {
    /// The aggregator durably holds this epoch up to `seq`: send deltas after it.
    After { seq: u64 },
    /// The aggregator does not hold this epoch (new agent start, or state lost): send a snapshot.
    SnapshotRequired,
}

/// Everything up to and including `seq` is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: u64,
}

/// A request from the aggregator to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Send a fresh snapshot of the whole host.
    Resync,
    /// Run the health checks with these settings over the agent's own. Sent after every
    /// `Welcome` (empty when the environment sets nothing) and whenever they change.
    Configure(HealthOverrides),
}

/// Health-check settings an environment gives all its agents (its `Monitoring`
/// configuration); what is absent keeps the agent's own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthOverrides {
    pub interval_ms: Option<u64>,
    /// By object type, over `interval_ms`.
    pub intervals_ms: Vec<(ObjectType, u64)>,
    pub timeout_ms: Option<u64>,
    /// Interface error and drop rates (per second) that make a warning.
    pub error_rate_warning: Option<f64>,
    pub drop_rate_warning: Option<f64>,
    /// Tunnel probes: loss (percent) and round-trip time that make a warning and an error.
    pub ping_loss_warning: Option<f64>,
    pub ping_loss_error: Option<f64>,
    pub ping_rtt_warning_ms: Option<u64>,
    pub ping_rtt_error_ms: Option<u64>,
}

/// A refusal. Every code but [`ErrorCode::Rejected`] ends the session: the sender closes the
/// connection after it. `Rejected` reports a snapshot or delta that was consumed but not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Why a session was refused. Encoded by name, so an older peer still decodes a newer code
/// (as [`ErrorCode::Other`]) and can show its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    UnsupportedVersion,
    IdentityMismatch,
    MalformedMessage,
    FrameTooLarge,
    UnexpectedMessage,
    /// The content was refused (for example a delta that touches another host's objects).
    Rejected,
    /// The aggregator could not make a change durable and is dropping the session.
    Unavailable,
    Other(String),
}

impl ErrorCode {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::IdentityMismatch => "identity_mismatch",
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnexpectedMessage => "unexpected_message",
            ErrorCode::Rejected => "rejected",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Other(name) => name,
        }
    }

    fn from_name(name: &str) -> Self {
        [
            ErrorCode::UnsupportedVersion,
            ErrorCode::IdentityMismatch,
            ErrorCode::MalformedMessage,
            ErrorCode::FrameTooLarge,
            ErrorCode::UnexpectedMessage,
            ErrorCode::Rejected,
            ErrorCode::Unavailable,
        ]
        .into_iter()
        .find(|code| code.as_str() == name)
        .unwrap_or_else(|| ErrorCode::Other(name.to_owned()))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(ErrorCode::from_name(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_by_name() {
        for code in [
            ErrorCode::UnsupportedVersion,
            ErrorCode::Rejected,
            ErrorCode::Other("quota".into()),
        ] {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).ok(), Some(code));
        }
    }
}
