//! The binary encoding of protocol messages. This is the only module that names the codec
//! (bincode 2, through serde); everything else calls [`encode`] and [`decode`], so replacing
//! the codec is a change to this file and a protocol version bump.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Upper bound on what one decode may claim to allocate. Frames are already limited in size
/// before they reach the decoder; this guards against length fields inside a frame that claim
/// more than the frame could hold.
const DECODE_LIMIT_BYTES: usize = 256 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

/// A message that could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode message: {0}")]
pub struct EncodeError(String);

/// Bytes that are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode message: {0}")]
pub struct DecodeError(String);

pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(message, config()).map_err(|e| EncodeError(e.to_string()))
}

/// Decodes one whole message; trailing bytes are an error, not ignored.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (message, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| DecodeError(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError(format!(
            "{} trailing bytes after the message",
            bytes.len() - used
        )));
    }
    Ok(message)
}

/// Reads the protocol version out of a frame that should hold a `Hello`, without decoding the
/// rest, so that a peer speaking another version gets an answer naming both versions even if
/// its `Hello` no longer decodes. Relies on the invariant documented in [`crate::wire`].
pub fn peek_hello_version(frame: &[u8]) -> Option<u16> {
    let ((variant, version), _): ((u32, u16), usize) =
        bincode::serde::decode_from_slice(frame, config()).ok()?;
    (variant == 0).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AgentMessage, AggregatorMessage, ErrorCode, Hello, ProtocolError};

    fn hello(version: u16) -> AgentMessage {
        AgentMessage::Hello(Hello {
            protocol_version: version,
            agent_version: "9.9.9".into(),
            host: "compute-1".into(),
            environment: "lab".into(),
            epoch: 42,
            last_acked_seq: 7,
        })
    }

    #[test]
    fn round_trip_and_trailing_bytes() {
        let bytes = encode(&hello(1)).expect("encodes");
        assert_eq!(decode::<AgentMessage>(&bytes).ok(), Some(hello(1)));
        let mut longer = bytes.clone();
        longer.push(0);
        let err = decode::<AgentMessage>(&longer)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn hello_version_is_readable_at_any_version() {
        for version in [0, 1, 2, 300, u16::MAX] {
            let bytes = encode(&hello(version)).expect("encodes");
            assert_eq!(peek_hello_version(&bytes), Some(version));
        }
        let not_hello = encode(&AggregatorMessage::Error(ProtocolError {
            code: ErrorCode::Rejected,
            message: String::new(),
        }))
        .expect("encodes");
        assert_eq!(peek_hello_version(&not_hello), None);
        assert_eq!(peek_hello_version(&[]), None);
    }
}
