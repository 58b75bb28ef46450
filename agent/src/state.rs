//! What the agent keeps across restarts: its epoch, the last sequence number and its model as
//! of that number. A restarted agent resumes the epoch (the aggregator answers with the point
//! it holds) and sends only what changed while it was down, instead of a snapshot of the
//! whole host.
//!
//! Any saved pair of sequence number and model is safe to resume from: if the aggregator holds
//! less or more than the saved number (deltas were in flight at the crash, or acknowledged
//! after the last save), the outbox cannot continue after the aggregator's point and sends a
//! snapshot, as after any gap.

use std::io::Write;
use std::path::{Path, PathBuf};

use calipso_proto::Object;
use calipso_proto::codec;
use serde::{Deserialize, Serialize};

/// Leads the file, so that another file at the path is refused rather than misread.
const MAGIC: &[u8; 8] = b"CALAGST1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub host: String,
    pub environment: String,
    pub epoch: u64,
    pub seq: u64,
    /// The model as of `seq`, sorted by id.
    pub objects: Vec<Object>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("agent state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent state {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// The file the state lives in.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The saved state, or `None` when there is none yet.
    pub fn load(&self) -> Result<Option<SavedState>, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.io(error)),
        };
        let invalid = |problem: String| StateError::Invalid {
            path: self.path.clone(),
            problem,
        };
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| invalid("not an agent state file (unknown header)".into()))?;
        codec::decode(body)
            .map(Some)
            .map_err(|e| invalid(format!("unreadable ({e})")))
    }

    /// Writes the state durably: a temporary file (mode 0600), synced, then renamed over the
    /// old one, so that a crash leaves either the old state or the new one.
    pub fn save(&self, state: &SavedState) -> Result<(), StateError> {
        let body = codec::encode(state).map_err(|e| StateError::Invalid {
            path: self.path.clone(),
            problem: e.to_string(),
        })?;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| self.io(e))?;
        }
        let staged = self.path.with_extension("tmp");
        // The host's model is for the agent alone (0600), whatever the umask.
        let _ = std::fs::remove_file(&staged);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged)
            .map_err(|e| self.io(e))?;
        file.write_all(MAGIC).map_err(|e| self.io(e))?;
        file.write_all(&body).map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&staged, &self.path).map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calipso_proto::{ObjectId, ObjectType};

    fn state() -> SavedState {
        SavedState {
            host: "h1".into(),
            environment: "env".into(),
            epoch: 42,
            seq: 7,
            objects: vec![
                Object::new(
                    ObjectId::host_local(ObjectType::Vnic, "h1", "tap1"),
                    ObjectType::Vnic,
                    "tap1",
                    "env",
                )
                .with_host("h1"),
            ],
        }
    }

    #[test]
    fn a_saved_state_loads_back() {
        let dir = tempfile::tempdir().expect("dir");
        let file = StateFile::new(dir.path().join("sub/state"));
        assert!(file.load().expect("absent is fine").is_none());
        file.save(&state()).expect("save");
        assert_eq!(file.load().expect("load"), Some(state()));
        let mut later = state();
        later.seq = 8;
        file.save(&later).expect("save again");
        assert_eq!(file.load().expect("load"), Some(later));
    }

    /// Issue 24, item 6: the host's model was 0644.
    #[test]
    fn the_state_and_its_directory_are_the_agents_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let file = StateFile::new(dir.path().join("sub/state"));
        file.save(&state()).expect("save");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("sub/state")), 0o600);
        assert_eq!(mode(&dir.path().join("sub")), 0o700);
    }

    #[test]
    fn a_foreign_or_damaged_file_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("state");
        std::fs::write(&path, b"hello").expect("write");
        let error = StateFile::new(&path).load().expect_err("foreign");
        assert!(error.to_string().contains("unknown header"), "{error}");
        assert!(error.to_string().contains(&path.display().to_string()));
        let mut damaged = MAGIC.to_vec();
        damaged.extend_from_slice(&[0xff; 3]);
        std::fs::write(&path, damaged).expect("write");
        let error = StateFile::new(&path).load().expect_err("damaged");
        assert!(error.to_string().contains("unreadable"), "{error}");
    }
}
