//! Network services in namespaces (`vservice`: `qdhcp-…`, `qrouter-…`): the namespace still
//! exists, and, for a DHCP service, a live process serves in it (the original's `ip netns pid`
//! and `ps`, without a shell). A router namespace needs no process: its ports are its service.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use calipso_proto::{Object, ObjectType};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Check, Verdict, read_trimmed, text_attr};

#[derive(Debug)]
pub struct ServiceCheck {
    netns_dir: PathBuf,
    proc_dir: PathBuf,
    /// The last walk of `/proc`: the processes of every network namespace, by its (device,
    /// inode). Checks of many namespaces within [`SCAN_REUSE`] share one walk.
    scan: Mutex<Option<(Instant, Arc<Scan>)>>,
}

type Scan = HashMap<(u64, u64), Vec<Process>>;

/// How long one walk of `/proc` answers for.
const SCAN_REUSE: Duration = Duration::from_secs(5);

/// A process living in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Process {
    pid: u32,
    command: String,
    /// The one-letter state of `/proc/PID/stat` (R running, S sleeping, D waiting, Z zombie …).
    state: char,
}

impl ServiceCheck {
    pub fn new(netns_dir: PathBuf, proc_dir: PathBuf) -> Self {
        ServiceCheck {
            netns_dir,
            proc_dir,
            scan: Mutex::new(None),
        }
    }

    /// Every process by network namespace, walking `/proc` at most once per [`SCAN_REUSE`].
    fn processes(&self) -> Arc<Scan> {
        let mut cached = self.scan.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, scan)) = cached.as_ref()
            && at.elapsed() < SCAN_REUSE
        {
            return scan.clone();
        }
        let scan = Arc::new(scan_processes(&self.proc_dir));
        *cached = Some((Instant::now(), scan.clone()));
        scan
    }

    fn check(&self, object: &Object) -> Verdict {
        let name = text_attr(object, "local_service_id").unwrap_or(object.name.as_str());
        let path = self.netns_dir.join(name);
        let namespace = match std::fs::metadata(&path) {
            Ok(meta) => (meta.dev(), meta.ino()),
            Err(err) => return Verdict::error(format!("namespace {name} is gone: {err}")),
        };
        let scan = self.processes();
        let processes: &[Process] = scan.get(&namespace).map(Vec::as_slice).unwrap_or_default();
        let alive: Vec<&Process> = processes
            .iter()
            .filter(|p| matches!(p.state, 'R' | 'S' | 'D'))
            .collect();
        let listed = |list: &[&Process]| {
            list.iter()
                .take(5)
                .map(|p| format!("{} (pid {})", p.command, p.pid))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if text_attr(object, "service_type") == Some("dhcp") {
            if alive.is_empty() {
                let dead: Vec<&Process> = processes.iter().collect();
                return Verdict::error(if dead.is_empty() {
                    format!("no DHCP server: no process in {name}")
                } else {
                    format!(
                        "no DHCP server: only dead processes in {name}: {}",
                        listed(&dead)
                    )
                });
            }
            return Verdict::ok(listed(&alive));
        }
        if alive.is_empty() {
            Verdict::ok("namespace present")
        } else {
            Verdict::ok(format!("namespace present; {}", listed(&alive)))
        }
    }
}

/// Every process, by its network namespace (device and inode of the nsfs file its `ns/net`
/// link resolves to). A process that ends during the walk is simply not there.
fn scan_processes(proc_dir: &Path) -> Scan {
    let mut scan = Scan::new();
    let Ok(entries) = std::fs::read_dir(proc_dir) else {
        return scan;
    };
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let dir = proc_dir.join(pid.to_string());
        let Ok(namespace) = std::fs::metadata(dir.join("ns/net")) else {
            continue;
        };
        let Some((command, state)) =
            read_trimmed(&dir.join("stat")).and_then(|stat| parse_stat(&stat))
        else {
            continue;
        };
        scan.entry((namespace.dev(), namespace.ino()))
            .or_default()
            .push(Process {
                pid,
                command,
                state,
            });
    }
    scan
}

/// The command and state of a `/proc/PID/stat` line: `812 (dnsmasq) S 1 …`. The command may
/// hold spaces and parentheses, so it ends at the last `)`.
fn parse_stat(line: &str) -> Option<(String, char)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let command = line.get(open + 1..close)?.to_owned();
    let state = line.get(close + 1..)?.trim_start().chars().next()?;
    Some((command, state))
}

impl Check for ServiceCheck {
    fn name(&self) -> &'static str {
        "service"
    }

    fn covers(&self) -> &'static [ObjectType] {
        &[ObjectType::Vservice]
    }

    fn run(self: Arc<Self>, object: Object) -> BoxFuture<'static, Verdict> {
        // Scanning /proc is blocking work: off the runtime's threads.
        tokio::task::spawn_blocking(move || self.check(&object))
            .map(|joined| {
                joined.unwrap_or_else(|err| Verdict::unknown(format!("check failed: {err}")))
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_commands() {
        assert_eq!(
            parse_stat("812 (dnsmasq) S 1 812 812 0 -1"),
            Some(("dnsmasq".into(), 'S'))
        );
        assert_eq!(
            parse_stat("77 (my (odd) cmd) Z 1 77"),
            Some(("my (odd) cmd".into(), 'Z'))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_missing_namespace_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = ServiceCheck::new(dir.path().to_owned(), "/proc".into());
        let object = Object::new(
            calipso_proto::ObjectId::from_raw("compute-1-qdhcp-net-a"),
            ObjectType::Vservice,
            "qdhcp-net-a",
            "lab",
        )
        .with_extra("local_service_id", "qdhcp-net-a")
        .with_extra("service_type", "dhcp");
        let verdict = check.check(&object);
        assert_eq!(verdict.level, calipso_proto::StatusLevel::Error);
        assert!(
            verdict.text.starts_with("namespace qdhcp-net-a is gone: "),
            "{}",
            verdict.text
        );
    }
}
