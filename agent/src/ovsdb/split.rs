//! Splits a byte stream into JSON texts. OVSDB's JSON-RPC has no framing: messages are JSON
//! objects sent back to back. The splitter scans each byte once (tracking nesting, strings and
//! escapes), so a large message arriving in many reads costs linear time, and it refuses a
//! message longer than its limit before buffering more of it.

/// Why the stream cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("unexpected byte {0:#04x} between JSON messages")]
    Garbage(u8),
    #[error("JSON message longer than the {0}-byte limit")]
    TooLong(usize),
    #[error("unbalanced JSON: closing bracket without an opening one")]
    Unbalanced,
}

/// Incremental state over a growing buffer.
#[derive(Debug)]
pub struct Splitter {
    max_message_bytes: usize,
    /// Bytes of the buffer already scanned.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Where the message being scanned starts, once its opening brace was seen.
    start: Option<usize>,
}

impl Splitter {
    pub fn new(max_message_bytes: usize) -> Self {
        Splitter {
            max_message_bytes,
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            start: None,
        }
    }

    /// Scans what was appended to `buffer` since the last call; returns the end (exclusive) of
    /// the next complete message, if there is one. The caller then takes `buffer[..end]` and
    /// calls [`Splitter::consumed`].
    pub fn next_end(&mut self, buffer: &[u8]) -> Result<Option<usize>, SplitError> {
        while self.scanned < buffer.len() {
            let byte = buffer[self.scanned];
            self.scanned += 1;
            if self.in_string {
                match (self.escaped, byte) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
            } else {
                match byte {
                    b'{' | b'[' => {
                        if self.depth == 0 {
                            if byte == b'[' {
                                return Err(SplitError::Garbage(byte));
                            }
                            self.start = Some(self.scanned - 1);
                        }
                        self.depth += 1;
                    }
                    b'}' | b']' => {
                        self.depth = self.depth.checked_sub(1).ok_or(SplitError::Unbalanced)?;
                        if self.depth == 0 {
                            return Ok(Some(self.scanned));
                        }
                    }
                    b'"' if self.depth > 0 => self.in_string = true,
                    b' ' | b'\n' | b'\r' | b'\t' if self.depth == 0 => {}
                    other if self.depth == 0 => return Err(SplitError::Garbage(other)),
                    _ => {}
                }
            }
            if let Some(start) = self.start
                && self.scanned - start > self.max_message_bytes
            {
                return Err(SplitError::TooLong(self.max_message_bytes));
            }
        }
        Ok(None)
    }

    /// The caller removed the first `n` bytes from the buffer.
    pub fn consumed(&mut self, n: usize) {
        self.scanned -= n;
        self.start = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(input: &[u8], chunk: usize) -> Result<Vec<String>, SplitError> {
        let mut splitter = Splitter::new(1 << 20);
        let mut buffer = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buffer.extend_from_slice(piece);
            while let Some(end) = splitter.next_end(&buffer)? {
                out.push(String::from_utf8_lossy(&buffer[..end]).trim().to_owned());
                buffer.drain(..end);
                splitter.consumed(end);
            }
        }
        Ok(out)
    }

    #[test]
    fn splits_back_to_back_messages_in_any_chunking() {
        let input = br#"{"id":1,"result":["a}b","c\"{"]} {"method":"update","params":[null,{"t":{}}],"id":null}
{"x":{"y":[1,2,{"z":"]"}]}}"#;
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let messages = split_all(input, chunk).expect("valid stream");
            assert_eq!(messages.len(), 3, "chunk {chunk}");
            for message in &messages {
                assert!(
                    serde_json::from_str::<serde_json::Value>(message).is_ok(),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn refuses_garbage_unbalanced_and_oversized() {
        assert_eq!(split_all(b"hello", 8), Err(SplitError::Garbage(b'h')));
        assert_eq!(split_all(b"[1,2]", 8), Err(SplitError::Garbage(b'[')));
        assert_eq!(split_all(b"{}}", 8), Err(SplitError::Unbalanced));
        let mut splitter = Splitter::new(16);
        let long = format!("{{\"k\":\"{}\"}}", "v".repeat(100));
        assert_eq!(
            splitter.next_end(long.as_bytes()),
            Err(SplitError::TooLong(16))
        );
    }
}
