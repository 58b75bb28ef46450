//! Length-prefixed frames: a big-endian `u32` payload length, then the payload.
//!
//! The length is checked against the configured limit as soon as its four bytes arrive, before
//! any buffer for the payload is reserved, so a hostile prefix costs nothing.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError};

use crate::codec::{self, DecodeError, EncodeError};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length exceeds the limit of {max} bytes")]
    TooLarge { max: usize },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("stream i/o: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for FrameError {
    fn from(err: std::io::Error) -> Self {
        FrameError::Io(err)
    }
}

fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .big_endian()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

fn classify(err: std::io::Error, max: usize) -> FrameError {
    let too_large = err
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<LengthDelimitedCodecError>().is_some());
    if too_large {
        FrameError::TooLarge { max }
    } else {
        FrameError::Io(err)
    }
}

/// Reads frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: FramedRead<R, LengthDelimitedCodec>,
    max_frame_bytes: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, max_frame_bytes: usize) -> Self {
        FrameReader {
            inner: FramedRead::new(reader, codec(max_frame_bytes)),
            max_frame_bytes,
        }
    }

    /// The next frame's payload, or `None` when the peer closed the stream between frames.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Ok(frame)) => Ok(Some(frame.freeze())),
            Some(Err(err)) => Err(classify(err, self.max_frame_bytes)),
        }
    }

    /// The next message, or `None` at a clean end of stream.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_frame().await? {
            None => Ok(None),
            Some(frame) => Ok(Some(codec::decode(&frame)?)),
        }
    }

    /// A message that is already buffered, without waiting for the network; used to gather the
    /// frames that arrived together into one batch.
    pub fn recv_ready<T: DeserializeOwned>(&mut self) -> Option<Result<T, FrameError>> {
        use futures::FutureExt;
        match self.inner.next().now_or_never()?? {
            Ok(frame) => Some(codec::decode(&frame).map_err(FrameError::from)),
            Err(err) => Some(Err(classify(err, self.max_frame_bytes))),
        }
    }
}

/// Writes frames to a byte stream.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: FramedWrite<W, LengthDelimitedCodec>,
    max_frame_bytes: usize,
    bytes_written: u64,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(writer: W, max_frame_bytes: usize) -> Self {
        FrameWriter {
            inner: FramedWrite::new(writer, codec(max_frame_bytes)),
            max_frame_bytes,
            bytes_written: 0,
        }
    }

    /// Queues a message without flushing; returns its size on the wire.
    pub async fn feed<T: Serialize>(&mut self, message: &T) -> Result<usize, FrameError> {
        let payload = codec::encode(message)?;
        self.feed_frame(Bytes::from(payload)).await
    }

    /// Queues an already-encoded payload without flushing; returns its size on the wire.
    pub async fn feed_frame(&mut self, payload: Bytes) -> Result<usize, FrameError> {
        let wire_len = payload.len() + 4;
        self.inner
            .feed(payload)
            .await
            .map_err(|e| classify(e, self.max_frame_bytes))?;
        self.bytes_written += wire_len as u64;
        Ok(wire_len)
    }

    pub async fn flush(&mut self) -> Result<(), FrameError> {
        SinkExt::<Bytes>::flush(&mut self.inner)
            .await
            .map_err(FrameError::from)
    }

    /// Sends a message and flushes; returns its size on the wire.
    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<usize, FrameError> {
        let len = self.feed(message).await?;
        self.flush().await?;
        Ok(len)
    }

    /// Bytes written so far, length prefixes included.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    pub fn get_mut(&mut self) -> &mut W {
        self.inner.get_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn oversized_prefix_is_refused_before_the_payload_arrives() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(server, 1024);
        // Claim 4 GiB and send nothing more: the reader must fail at once, not wait or allocate.
        client
            .write_all(&u32::MAX.to_be_bytes())
            .await
            .expect("write");
        match reader.next_frame().await {
            Err(FrameError::TooLarge { max: 1024 }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn messages_round_trip_and_eof_is_clean() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut writer = FrameWriter::new(client, 1024);
        let mut reader = FrameReader::new(server, 1024);
        let sent = writer
            .send(&("hello".to_owned(), 7u64))
            .await
            .expect("send");
        assert_eq!(sent as u64, writer.bytes_written());
        assert_eq!(
            reader.recv::<(String, u64)>().await.expect("recv"),
            Some(("hello".to_owned(), 7))
        );
        drop(writer);
        assert_eq!(reader.recv::<(String, u64)>().await.expect("eof"), None);
    }

    #[tokio::test]
    async fn writer_refuses_a_frame_over_the_limit() {
        let (client, _server) = tokio::io::duplex(1 << 16);
        let mut writer = FrameWriter::new(client, 16);
        match writer.send(&vec![0u8; 64]).await {
            Err(FrameError::TooLarge { max: 16 }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
