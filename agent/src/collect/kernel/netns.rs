//! Network namespaces: the agent's own and the named ones in the netns directory (`ip netns`
//! keeps them as bind-mounted files in `/run/netns`).
//!
//! A netlink socket belongs to the namespace of the thread that creates it, so sockets for a
//! named namespace are created on a short-lived thread that entered it; the agent's own
//! threads never change namespace.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchMask};
use nix::sched::CloneFlags;
use tokio::sync::mpsc;

/// The name of a namespace: `None` for the agent's own (the host's), `Some` for a named one.
pub type NsName = Option<String>;

/// Shows a namespace name in logs.
pub fn ns_label(name: &NsName) -> &str {
    name.as_deref().unwrap_or("(host)")
}

/// An open handle on a namespace; keeps it alive and lets threads enter it.
#[derive(Clone)]
pub struct Namespace {
    pub name: NsName,
    fd: Arc<OwnedFd>,
    /// False for the namespace the process already runs in: its threads need not enter it.
    enter: bool,
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &ns_label(&self.name))
            .finish()
    }
}

/// `nsfs` magic: a bind-mounted namespace file lives on it; a plain file does not.
const NSFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6e73_6673);

impl Namespace {
    /// The host's namespace: the one the agent runs in, or the one bind-mounted at `path`
    /// (an agent serving a host that is itself a namespace, as in a lab or a test).
    pub fn host(path: Option<&Path>) -> std::io::Result<Self> {
        let (file, enter) = match path {
            None => (std::fs::File::open("/proc/thread-self/ns/net")?, false),
            Some(path) => (open_checked(path)?, true),
        };
        Ok(Namespace {
            name: None,
            fd: Arc::new(file.into()),
            enter,
        })
    }

    /// A named namespace from the netns directory. `ip netns add` creates the file before it
    /// bind-mounts the namespace on it, so a file that is not (yet) a namespace is an error.
    pub fn open_named(dir: &Path, name: &str) -> std::io::Result<Self> {
        let file = open_checked(&dir.join(name))?;
        Ok(Namespace {
            name: Some(name.to_owned()),
            fd: Arc::new(file.into()),
            enter: true,
        })
    }

    /// The namespace's file descriptor number, as `RTM_GETNSID` takes it.
    pub fn raw_fd(&self) -> u32 {
        use std::os::fd::AsRawFd;
        u32::try_from(self.fd.as_raw_fd()).unwrap_or(u32::MAX)
    }

    /// Runs `make` on a thread inside this namespace and returns its result: whatever sockets it
    /// creates stay in this namespace. `runtime` is entered so tokio sockets can register.
    pub fn run_inside<T: Send + 'static>(
        &self,
        runtime: tokio::runtime::Handle,
        make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let fd = self.fd.clone();
        let enter = self.enter;
        std::thread::Builder::new()
            .name("calipso-netns".into())
            .spawn(move || {
                if enter {
                    nix::sched::setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)?;
                }
                let _entered = runtime.enter();
                make()
            })?
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
    }
}

/// Opens a file that must be a bind-mounted network namespace.
fn open_checked(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::open(path)?;
    let statfs = nix::sys::statfs::fstatfs(&file).map_err(std::io::Error::from)?;
    if statfs.filesystem_type() != NSFS_MAGIC {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a network namespace (yet)",
        ));
    }
    Ok(file)
}

/// A change in the netns directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirEvent {
    /// The full list of names, at start and whenever events may have been lost.
    Listing(Vec<String>),
    Added(String),
    Removed(String),
}

/// The names in the netns directory, sorted (none if it does not exist).
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Follows the netns directory until the receiver is dropped. A directory that does not exist
/// (no namespace was ever created on this host) is waited for.
pub async fn watch_dir(dir: PathBuf, events: mpsc::Sender<DirEvent>) {
    loop {
        if !dir.is_dir() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if events.is_closed() {
                return;
            }
            continue;
        }
        let inotify = match Inotify::init() {
            Ok(inotify) => inotify,
            Err(err) => {
                tracing::error!(%err, "inotify unavailable: namespaces are rescanned every 5 s instead");
                return poll_dir(dir, events).await;
            }
        };
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF;
        if let Err(err) = inotify.watches().add(&dir, mask) {
            tracing::warn!(dir = %dir.display(), %err, "cannot watch the netns directory");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let Ok(mut stream) = inotify.into_event_stream(vec![0u8; 4096]) else {
            continue;
        };
        // Listed after the watch is in place, so nothing created in between is missed.
        if events.send(DirEvent::Listing(list(&dir))).await.is_err() {
            return;
        }
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { break };
            let name = event.name.map(|n| n.to_string_lossy().into_owned());
            let message = if event.mask.contains(EventMask::Q_OVERFLOW) {
                Some(DirEvent::Listing(list(&dir)))
            } else if event.mask.contains(EventMask::DELETE_SELF)
                || event.mask.contains(EventMask::IGNORED)
            {
                let _ = events.send(DirEvent::Listing(Vec::new())).await;
                break; // the directory went away: wait for it again
            } else if event
                .mask
                .intersects(EventMask::CREATE | EventMask::MOVED_TO)
            {
                name.map(DirEvent::Added)
            } else if event
                .mask
                .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
            {
                name.map(DirEvent::Removed)
            } else {
                None
            };
            if let Some(message) = message
                && events.send(message).await.is_err()
            {
                return;
            }
        }
    }
}

async fn poll_dir(dir: PathBuf, events: mpsc::Sender<DirEvent>) {
    loop {
        if events.send(DirEvent::Listing(list(&dir))).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
