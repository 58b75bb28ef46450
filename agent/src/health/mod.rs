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
//! * [`plugins`]: Nagios-compatible programs and Sensu check definitions.
//! * [`services`]: network namespaces of DHCP servers and routers, and their processes.
//! * [`tunnels`]: tunnel endpoints and the reachability of their remotes.
//! * [`vswitch`]: Open vSwitch's database and switch daemon.

pub mod bridges;
pub mod instances;
pub mod interfaces;
pub mod plugins;
pub mod services;
pub mod tunnels;
pub mod vswitch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calipso_proto::wire::HealthOverrides;
use calipso_proto::{Object, ObjectId, ObjectType, Status, StatusLevel};
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::HealthConfig;
use crate::outbox::Outbox;

pub use bridges::BridgeCheck;
pub use instances::InstanceCheck;
pub use interfaces::InterfaceCheck;
pub use plugins::PluginCheck;
pub use services::ServiceCheck;
pub use tunnels::TunnelCheck;
pub use vswitch::VswitchCheck;

/// What one run of a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub level: StatusLevel,
    /// One line an operator reads ("down: no carrier", "dnsmasq (pid 812)").
    pub text: String,
    /// Measurements, in Nagios plugin form (`time=0.1s;1;2 size=12B`); empty when none.
    pub perfdata: String,
}

impl Verdict {
    fn new(level: StatusLevel, text: impl Into<String>) -> Self {
        Verdict {
            level,
            text: text.into(),
            perfdata: String::new(),
        }
    }

    pub fn ok(text: impl Into<String>) -> Self {
        Self::new(StatusLevel::Ok, text)
    }

    pub fn warning(text: impl Into<String>) -> Self {
        Self::new(StatusLevel::Warning, text)
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self::new(StatusLevel::Error, text)
    }

    pub fn unknown(text: impl Into<String>) -> Self {
        Self::new(StatusLevel::Unknown, text)
    }
}

/// An object's status from the verdicts of the checks that cover it (by check name): the
/// worst level; with one check its text, with several each check's text after its name, the
/// worst first.
fn roll_up<'a>(verdicts: impl IntoIterator<Item = (&'a str, &'a Verdict)>) -> Status {
    let mut ranked: Vec<(&str, &Verdict)> = verdicts.into_iter().collect();
    ranked.sort_by_key(|(_, verdict)| std::cmp::Reverse(verdict.level.severity()));
    let level = ranked
        .first()
        .map_or(StatusLevel::Unknown, |(_, verdict)| verdict.level);
    let (text, perfdata) = match ranked.as_slice() {
        [(_, only)] => (only.text.clone(), only.perfdata.clone()),
        _ => (
            ranked
                .iter()
                .map(|(name, verdict)| format!("{name}: {}", verdict.text))
                .collect::<Vec<_>>()
                .join("; "),
            ranked
                .iter()
                .map(|(_, verdict)| verdict.perfdata.as_str())
                .filter(|perfdata| !perfdata.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        ),
    };
    Status {
        level,
        text,
        timestamp: None,
        perfdata,
    }
}

/// A check: which objects it covers and how one is checked.
pub trait Check: Send + Sync + 'static {
    /// The name in logs, in a status that several checks make, and in the reason of a check
    /// that timed out.
    fn name(&self) -> &str;

    /// The object types this check covers.
    fn covers(&self) -> &[ObjectType];

    /// Whether it checks this object of a covered type (plugins select by attribute).
    fn selects(&self, _object: &Object) -> bool {
        true
    }

    /// How often it runs, when not the object type's interval.
    fn interval(&self) -> Option<Duration> {
        None
    }

    /// Checks one object as the model describes it now.
    fn run(self: Arc<Self>, object: Object) -> BoxFuture<'static, Verdict>;

    /// The object is gone: forget what was kept about it (counter samples).
    fn forget(&self, _id: &ObjectId) {}

    /// The settings changed (the environment's came from the aggregator): take up the
    /// thresholds this check judges by.
    fn configure(&self, _config: &HealthConfig) {}
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

/// One check of one object: the object and the check's index.
type Slot = (ObjectId, usize);

impl Monitor {
    pub fn new(checks: Vec<Arc<dyn Check>>, config: HealthConfig) -> Self {
        Monitor { checks, config }
    }

    /// Checks every covered object when due and publishes what changed, until `shutdown`.
    /// `overrides` are the environment's settings over the agent's own: when they change,
    /// every check takes them up and runs again within [`FIRST_RUN_WITHIN`].
    ///
    /// The schedule is kept as (object, check) slots with their next time, rebuilt from the
    /// model (visited, not copied) when it changed; an object is copied only when one of its
    /// checks is due. A new slot's first run is spread over its interval, so a host's checks do
    /// not all fire in the same instant.
    pub async fn run(
        mut self,
        outbox: Outbox,
        mut overrides: watch::Receiver<Arc<HealthOverrides>>,
        shutdown: CancellationToken,
    ) {
        let own = self.config.clone();
        let mut overrides_open = true;
        let mut by_type: HashMap<ObjectType, Vec<usize>> = HashMap::new();
        for (index, check) in self.checks.iter().enumerate() {
            for object_type in check.covers() {
                by_type.entry(*object_type).or_default().push(index);
            }
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(self.config.max_concurrent));
        let model = outbox.watch();
        let mut model_seen: Option<u64> = None;
        let mut rescheduled: Option<Instant> = None;
        let mut next_due: HashMap<Slot, Instant> = HashMap::new();
        let mut running: HashSet<Slot> = HashSet::new();
        // By object, each covering check's last verdict (by the check's index).
        let mut verdicts: HashMap<ObjectId, BTreeMap<usize, Verdict>> = HashMap::new();
        let mut tasks: JoinSet<(Slot, Verdict)> = JoinSet::new();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = overrides.changed(), if overrides_open => {
                    if changed.is_err() {
                        overrides_open = false;
                        continue;
                    }
                    let latest = overrides.borrow_and_update().clone();
                    self.config = own.with_overrides(&latest);
                    for check in &self.checks {
                        check.configure(&self.config);
                    }
                    let now = Instant::now();
                    for at in next_due.values_mut() {
                        *at = (*at).min(now + FIRST_RUN_WITHIN.mul_f64(rand::random::<f64>()));
                    }
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let mut changed: HashSet<ObjectId> = HashSet::new();
                    let mut record = |done: Result<(Slot, Verdict), tokio::task::JoinError>| match done {
                        Ok(((id, index), verdict)) => {
                            running.remove(&(id.clone(), index));
                            // An object that went while its check ran has nothing to record.
                            if let Some(object_verdicts) = verdicts.get_mut(&id) {
                                object_verdicts.insert(index, verdict);
                                changed.insert(id);
                            }
                        }
                        Err(err) => tracing::error!(%err, "a health check task failed"),
                    };
                    record(done);
                    while let Some(done) = tasks.try_join_next() {
                        record(done);
                    }
                    let statuses = changed.into_iter().filter_map(|id| {
                        let named = verdicts
                            .get(&id)?
                            .iter()
                            .map(|(index, verdict)| (self.checks[*index].name(), verdict));
                        Some((id, roll_up(named)))
                    });
                    if let Err(err) = outbox.set_statuses(statuses) {
                        tracing::error!(%err, "cannot encode status changes");
                    }
                }
                _ = ticker.tick() => {
                    let now = Instant::now();
                    // Deltas (the checks' own among them) come often; the schedule follows the
                    // model at most every RESCHEDULE_EVERY.
                    let seq = *model.borrow();
                    if model_seen != Some(seq) && rescheduled.is_none_or(|at| now - at >= RESCHEDULE_EVERY) {
                        model_seen = Some(seq);
                        rescheduled = Some(now);
                        self.reschedule(&outbox, &by_type, &mut next_due, &mut verdicts, now);
                    }
                    let due: Vec<Slot> = next_due
                        .iter()
                        .filter(|(slot, at)| **at <= now && !running.contains(*slot))
                        .map(|(slot, _)| slot.clone())
                        .collect();
                    for slot in due {
                        let (id, index) = &slot;
                        let Some(object) = outbox.object(id) else {
                            continue;
                        };
                        let check = self.checks[*index].clone();
                        let every = check
                            .interval()
                            .unwrap_or_else(|| self.config.interval_for(object.object_type));
                        next_due.insert(slot.clone(), now + every);
                        running.insert(slot.clone());
                        let (limit, timeout) = (limit.clone(), self.config.timeout);
                        tasks.spawn(async move {
                            let name = check.name().to_owned();
                            // A closed semaphore cannot happen: the monitor owns it.
                            let _permit = limit.acquire_owned().await;
                            let verdict = tokio::time::timeout(timeout, check.run(object))
                                .await
                                .unwrap_or_else(|_| {
                                    Verdict::unknown(format!("{name} check timed out after {timeout:?}"))
                                });
                            (slot, verdict)
                        });
                    }
                }
            }
        }
    }

    /// Brings the schedule in line with the model: a slot for every covered object and check
    /// that selects it (new ones first due at a random point of their interval), none for what
    /// is gone.
    fn reschedule(
        &self,
        outbox: &Outbox,
        by_type: &HashMap<ObjectType, Vec<usize>>,
        next_due: &mut HashMap<Slot, Instant>,
        verdicts: &mut HashMap<ObjectId, BTreeMap<usize, Verdict>>,
        now: Instant,
    ) {
        let mut wanted: HashSet<Slot> = HashSet::with_capacity(next_due.len());
        let mut wanted_objects: HashSet<ObjectId> = HashSet::with_capacity(verdicts.len());
        outbox.for_each_object(|object| {
            let Some(indices) = by_type.get(&object.object_type) else {
                return;
            };
            for &index in indices {
                let check = &self.checks[index];
                if !check.selects(object) {
                    continue;
                }
                let slot = (object.id.clone(), index);
                if !next_due.contains_key(&slot) {
                    let every = check
                        .interval()
                        .unwrap_or_else(|| self.config.interval_for(object.object_type));
                    let offset = every.mul_f64(rand::random::<f64>());
                    next_due.insert(slot.clone(), now + offset.min(FIRST_RUN_WITHIN));
                    verdicts.entry(object.id.clone()).or_default();
                }
                wanted.insert(slot);
                if !wanted_objects.contains(&object.id) {
                    wanted_objects.insert(object.id.clone());
                }
            }
        });
        next_due.retain(|slot, _| wanted.contains(slot));
        verdicts.retain(|id, object_verdicts| {
            object_verdicts.retain(|index, _| wanted.contains(&(id.clone(), *index)));
            let keep = wanted_objects.contains(id);
            if !keep {
                self.checks.iter().for_each(|check| check.forget(id));
            }
            keep
        });
    }
}

/// How often at most the schedule is rebuilt from a changing model.
const RESCHEDULE_EVERY: Duration = Duration::from_secs(1);

/// A new object's first verdict comes within this long, whatever its interval.
const FIRST_RUN_WITHIN: Duration = Duration::from_secs(5);

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
