//! Health checks the agent runs itself, in place of the original's Sensu checks: nothing to
//! deploy, no second daemon, results over the same session as the inventory.
//!
//! Every object of a covered type gets its check, derived from the agent's own model: a check
//! starts when the object appears and stops when it goes. Checks run concurrently, each with a
//! time limit, on their own tasks, so a slow one never holds up collection or another check.
//! A result becomes the object's status in the [`Outbox`] (only when its level or text
//! changes), so it reaches the aggregator as a delta, in order and resumable like any other.
//!
//! One module per family, all behind [`Check`]:
//! * [`interfaces`]: physical NICs and vNICs (state, carrier, error and drop rates).
//! * [`bridges`]: Linux bridges (vconnectors) and their ports.
//! * [`instances`]: VMs: their domain runs.
//! * [`services`]: network namespaces of DHCP servers and routers, and their processes.
//! * [`tunnels`]: tunnel endpoints and the reachability of their remotes.
//! * [`vswitch`]: Open vSwitch's database and switch daemon.

pub mod bridges;
pub mod instances;
pub mod interfaces;
pub mod services;
pub mod tunnels;
pub mod vswitch;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calipso_proto::{Object, ObjectId, ObjectType, StatusLevel};
use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::HealthConfig;
use crate::outbox::Outbox;

pub use bridges::BridgeCheck;
pub use instances::InstanceCheck;
pub use interfaces::InterfaceCheck;
pub use services::ServiceCheck;
pub use tunnels::TunnelCheck;
pub use vswitch::VswitchCheck;

/// What one run of a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub level: StatusLevel,
    /// One line an operator reads ("down: no carrier", "dnsmasq (pid 812)").
    pub text: String,
}

impl Verdict {
    pub fn ok(text: impl Into<String>) -> Self {
        Verdict {
            level: StatusLevel::Ok,
            text: text.into(),
        }
    }

    pub fn warning(text: impl Into<String>) -> Self {
        Verdict {
            level: StatusLevel::Warning,
            text: text.into(),
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Verdict {
            level: StatusLevel::Error,
            text: text.into(),
        }
    }

    pub fn unknown(text: impl Into<String>) -> Self {
        Verdict {
            level: StatusLevel::Unknown,
            text: text.into(),
        }
    }
}

/// A family of checks: which objects it covers and how one is checked.
pub trait Check: Send + Sync + 'static {
    /// The name in logs and in the reason of a check that timed out.
    fn name(&self) -> &'static str;

    /// The object types this family checks.
    fn covers(&self) -> &'static [ObjectType];

    /// Checks one object as the model describes it now.
    fn run(self: Arc<Self>, object: Object) -> BoxFuture<'static, Verdict>;

    /// The object is gone: forget what was kept about it (counter samples).
    fn forget(&self, _id: &ObjectId) {}
}

/// Runs every check on its schedule and records the verdicts as statuses.
pub struct Monitor {
    checks: Vec<Arc<dyn Check>>,
    config: HealthConfig,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.checks.iter().map(|c| c.name()).collect();
        f.debug_struct("Monitor")
            .field("checks", &names)
            .field("config", &self.config)
            .finish()
    }
}

/// How often the monitor looks for checks that are due.
const TICK: Duration = Duration::from_millis(250);

impl Monitor {
    pub fn new(checks: Vec<Arc<dyn Check>>, config: HealthConfig) -> Self {
        Monitor { checks, config }
    }

    /// Checks every covered object when due and publishes what changed, until `shutdown`.
    pub async fn run(self, outbox: Outbox, shutdown: CancellationToken) {
        let by_type: HashMap<ObjectType, Arc<dyn Check>> = self
            .checks
            .iter()
            .flat_map(|check| check.covers().iter().map(move |t| (*t, check.clone())))
            .collect();
        let limit = Arc::new(tokio::sync::Semaphore::new(self.config.max_concurrent));
        let mut next_due: HashMap<ObjectId, Instant> = HashMap::new();
        let mut running: HashSet<ObjectId> = HashSet::new();
        let mut tasks: JoinSet<(ObjectId, Verdict)> = JoinSet::new();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let mut verdicts = Vec::new();
                    let mut record = |done: Result<(ObjectId, Verdict), tokio::task::JoinError>| match done {
                        Ok((id, verdict)) => {
                            running.remove(&id);
                            verdicts.push((id, verdict));
                        }
                        Err(err) => tracing::error!(%err, "a health check task failed"),
                    };
                    record(done);
                    while let Some(done) = tasks.try_join_next() {
                        record(done);
                    }
                    if let Err(err) = outbox.set_statuses(verdicts.into_iter().map(|(id, v)| (id, v.level, v.text))) {
                        tracing::error!(%err, "cannot encode status changes");
                    }
                }
                _ = ticker.tick() => {
                    let now = Instant::now();
                    let objects = outbox.objects_of(|object_type| by_type.contains_key(&object_type));
                    let present: HashSet<&ObjectId> = objects.iter().map(|o| &o.id).collect();
                    next_due.retain(|id, _| {
                        let keep = present.contains(id);
                        if !keep {
                            by_type.values().for_each(|check| check.forget(id));
                        }
                        keep
                    });
                    for object in objects {
                        let due = next_due.get(&object.id).is_none_or(|at| *at <= now);
                        if !due || running.contains(&object.id) {
                            continue;
                        }
                        let Some(check) = by_type.get(&object.object_type).cloned() else {
                            continue;
                        };
                        next_due.insert(object.id.clone(), now + self.config.interval_for(object.object_type));
                        running.insert(object.id.clone());
                        let (limit, timeout) = (limit.clone(), self.config.timeout);
                        tasks.spawn(async move {
                            let id = object.id.clone();
                            let name = check.name();
                            // A closed semaphore cannot happen: the monitor owns it.
                            let _permit = limit.acquire_owned().await;
                            let verdict = tokio::time::timeout(timeout, check.run(object))
                                .await
                                .unwrap_or_else(|_| {
                                    Verdict::unknown(format!("{name} check timed out after {timeout:?}"))
                                });
                            (id, verdict)
                        });
                    }
                }
            }
        }
    }
}

/// Reads a small text file (sysfs, procfs): `None` when it is missing or unreadable.
fn read_trimmed(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

/// An extra attribute as text.
fn text_attr<'a>(object: &'a Object, key: &str) -> Option<&'a str> {
    object.attributes.extra.get(key).and_then(|v| v.as_str())
}

/// An extra attribute that is a list of text, as that text (empty when absent).
fn text_list<'a>(object: &'a Object, key: &str) -> Vec<&'a str> {
    match object.attributes.extra.get(key) {
        Some(calipso_proto::AttrValue::List(items)) => items
            .iter()
            .filter_map(calipso_proto::AttrValue::as_str)
            .collect(),
        _ => Vec::new(),
    }
}

/// An extra attribute as a flag.
fn flag_attr(object: &Object, key: &str) -> Option<bool> {
    object.attributes.extra.get(key).and_then(|v| v.as_bool())
}
