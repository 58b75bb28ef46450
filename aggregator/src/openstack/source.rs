//! The adapter's tasks: one per environment with an `OpenStack` configuration, and the
//! supervisor that starts, restarts and stops them as configurations change.
//!
//! A source reads the whole cloud (REST), writes it as one [`CloudWrite::Replace`], then
//! applies notifications as they come, each written before it is acknowledged to the broker.
//! It reads everything again every `resync_interval` and after every reconnect, so a
//! notification lost while it was away costs one interval at most. Failures are retried with
//! a growing pause; operators get a message on its first read, when it starts failing and when
//! it recovers, not on every retry or re-read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::bus::{self, Bus, BusError};
use super::documents::{CloudState, ObjectChanges};
use super::notifications::{self, Interpretation};
use super::rest::{OpenStackClient, RestError};
use super::settings::OpenStackSettings;
use crate::ingest::validate::CONTROL_PLANE_TYPES;
use crate::ingest::{CloudUpdate, CloudWrite, DurableSink, Outcome, SinkError};
use crate::store::MessageLevel;

/// How often the supervisor looks at the environments' configurations.
const SUPERVISE_EVERY: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// The name messages carry, as the original's `source_system`.
const SOURCE: &str = "OpenStack";

#[derive(Debug, thiserror::Error)]
enum SourceError {
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the store refused the cloud's objects: {0}")]
    Refused(String),
}

/// A running source.
struct Running {
    settings: OpenStackSettings,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts the supervisor: from now on every environment whose configuration has an
/// `OpenStack` entry is read from its cloud, until `shutdown`. When an environment's entry is
/// removed, its source stops and the control plane's objects it wrote are closed (kept in
/// history): nothing maintains them any more, and the environment can then be removed.
pub fn supervise(sink: Arc<DurableSink>, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut refused: HashMap<String, String> = HashMap::new();
        loop {
            let (wanted, unconfigured) = wanted_sources(&sink, &mut refused).await;
            let changed: Vec<String> = running
                .iter()
                .filter(|(environment, source)| wanted.get(*environment) != Some(&source.settings))
                .map(|(environment, _)| environment.clone())
                .collect();
            for environment in changed {
                if let Some(source) = running.remove(&environment) {
                    tracing::info!(%environment, "stopping the OpenStack adapter");
                    source.stop.cancel();
                    // Its last write lands before anything below replaces what it wrote.
                    let _ = source.task.await;
                }
            }
            for environment in unconfigured {
                close_control_plane(&sink, &environment).await;
            }
            for (environment, settings) in wanted {
                if running.contains_key(&environment) {
                    continue;
                }
                tracing::info!(%environment, keystone = %settings.auth_url, "starting the OpenStack adapter");
                let stop = shutdown.child_token();
                let task = tokio::spawn(run(
                    environment.clone(),
                    settings.clone(),
                    sink.clone(),
                    stop.clone(),
                ));
                running.insert(
                    environment,
                    Running {
                        settings,
                        stop,
                        task,
                    },
                );
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(SUPERVISE_EVERY) => {}
            }
        }
    })
}

/// Closes the control plane's objects of an environment that no longer has an `OpenStack`
/// entry, if it holds any.
async fn close_control_plane(sink: &DurableSink, environment: &str) {
    let holds_any = sink.engine().environment(environment).is_some_and(|env| {
        CONTROL_PLANE_TYPES
            .iter()
            .flat_map(|t| env.graph.of_type(*t))
            .any(|node| node.object.host.is_none())
    });
    if !holds_any {
        return;
    }
    let update = CloudUpdate {
        environment: environment.to_owned(),
        source: SOURCE.into(),
        write: CloudWrite::Replace(Vec::new()),
        notes: vec![(
            MessageLevel::Info,
            "no OpenStack configuration any more: the control plane's objects are closed".into(),
        )],
    };
    if let Err(error) = sink.cloud(update).await {
        tracing::warn!(%environment, %error, "cannot close the control plane's objects");
    }
}

/// The settings of every environment that asks for the adapter, and the names of those without
/// an `OpenStack` entry. A configuration that cannot be used is reported once (per distinct
/// problem) and skipped; its objects stay.
async fn wanted_sources(
    sink: &DurableSink,
    refused: &mut HashMap<String, String>,
) -> (HashMap<String, OpenStackSettings>, Vec<String>) {
    let configs: Vec<_> = sink
        .engine()
        .environments()
        .map(|env| env.config.clone())
        .collect();
    let mut wanted = HashMap::new();
    let mut unconfigured = Vec::new();
    for config in configs {
        match OpenStackSettings::of(&config) {
            Ok(Some(settings)) => {
                refused.remove(&config.name);
                wanted.insert(config.name.clone(), settings);
            }
            Ok(None) => {
                refused.remove(&config.name);
                unconfigured.push(config.name.clone());
            }
            Err(error) => {
                let text = error.to_string();
                if refused.get(&config.name) != Some(&text) {
                    tracing::warn!(%error, "OpenStack adapter not started");
                    note(
                        sink,
                        &config.name,
                        MessageLevel::Error,
                        format!("adapter not started: {text}"),
                    )
                    .await;
                    refused.insert(config.name.clone(), text);
                }
            }
        }
    }
    (wanted, unconfigured)
}

async fn note(sink: &DurableSink, environment: &str, level: MessageLevel, text: String) {
    let update = CloudUpdate {
        environment: environment.to_owned(),
        source: SOURCE.into(),
        write: CloudWrite::Apply {
            upserts: Vec::new(),
            removals: Vec::new(),
        },
        notes: vec![(level, text)],
    };
    if let Err(error) = sink.cloud(update).await {
        tracing::warn!(%error, "cannot record an OpenStack adapter message");
    }
}

/// Whether the source is failing, how long it waits before the next try, and whether its
/// first read was reported.
struct Health {
    failing: bool,
    pause: Duration,
    announced: bool,
}

/// One environment's source, until `stop`.
async fn run(
    environment: String,
    settings: OpenStackSettings,
    sink: Arc<DurableSink>,
    stop: CancellationToken,
) {
    let mut health = Health {
        failing: false,
        pause: FIRST_RETRY,
        announced: false,
    };
    loop {
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = session(&environment, &settings, &sink, &mut health) => result,
        };
        let Err(error) = result;
        tracing::warn!(%environment, %error, retry_in = ?health.pause, "OpenStack adapter");
        if !health.failing {
            health.failing = true;
            note(
                &sink,
                &environment,
                MessageLevel::Warning,
                format!("cannot read the cloud: {error}; retrying"),
            )
            .await;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(health.pause) => {}
        }
        health.pause = (health.pause * 2).min(LAST_RETRY);
    }
}

/// Connects and follows the cloud until something fails.
async fn session(
    environment: &str,
    settings: &OpenStackSettings,
    sink: &DurableSink,
    health: &mut Health,
) -> Result<std::convert::Infallible, SourceError> {
    let mut client = OpenStackClient::new(settings.clone())?;
    // The queue exists before the full read, so nothing that changes during it is missed.
    let mut bus = match &settings.amqp {
        Some(amqp) => Some(Bus::connect(amqp, environment).await?),
        None => None,
    };
    let mut state = CloudState::new(environment);
    let counts = sync(&mut client, &mut state, sink, environment).await?;
    let recovered = std::mem::replace(&mut health.failing, false);
    health.pause = FIRST_RETRY;
    let text = format!(
        "read {counts} from {}{}",
        settings.auth_url,
        if bus.is_some() {
            "; following notifications"
        } else {
            ""
        }
    );
    tracing::info!(%environment, "{text}");
    if recovered || !health.announced {
        health.announced = true;
        let text = if recovered {
            format!("recovered: {text}")
        } else {
            text
        };
        note(sink, environment, MessageLevel::Info, text).await;
    }
    let mut resync = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.resync_interval,
        settings.resync_interval,
    );
    loop {
        tokio::select! {
            _ = resync.tick() => {
                sync(&mut client, &mut state, sink, environment).await?;
            }
            delivery = next_delivery(bus.as_mut()) => {
                let delivery = delivery?;
                if handle(&delivery.data, &mut state, sink, environment).await? {
                    bus::ack(&delivery).await?;
                } else {
                    bus::reject(&delivery).await?;
                }
            }
        }
    }
}

async fn next_delivery(bus: Option<&mut Bus>) -> Result<lapin::message::Delivery, BusError> {
    match bus {
        Some(bus) => bus.next().await,
        None => std::future::pending().await,
    }
}

/// Reads the whole cloud and writes it; returns what it read, for the log.
async fn sync(
    client: &mut OpenStackClient,
    state: &mut CloudState,
    sink: &DurableSink,
    environment: &str,
) -> Result<String, SourceError> {
    let inventory = client.inventory().await?;
    let counts = format!(
        "{} regions, {} availability zones, {} projects, {} networks, {} subnets, {} ports",
        inventory.regions.len(),
        inventory.zones.len(),
        inventory.projects.len(),
        inventory.networks.len(),
        inventory.subnets.len(),
        inventory.ports.len()
    );
    state.replace(inventory);
    write(sink, environment, CloudWrite::Replace(state.objects())).await?;
    Ok(counts)
}

/// Applies one notification; `false` when it cannot be read: that is recorded, and the
/// message is to be rejected rather than retried, as it would fail the same way every time.
async fn handle(
    body: &[u8],
    state: &mut CloudState,
    sink: &DurableSink,
    environment: &str,
) -> Result<bool, SourceError> {
    match notifications::parse(body) {
        Ok(notification) => match notification.interpretation {
            Interpretation::Change(event) => {
                tracing::debug!(%environment, event = %notification.event_type, "notification");
                let ObjectChanges { upserts, removals } = state.apply(event);
                write(sink, environment, CloudWrite::Apply { upserts, removals }).await?;
                Ok(true)
            }
            Interpretation::Ignored(reason) => {
                tracing::debug!(%environment, event = %notification.event_type, reason, "notification left");
                Ok(true)
            }
        },
        Err(error) => {
            tracing::warn!(%environment, %error, "notification rejected");
            note(
                sink,
                environment,
                MessageLevel::Error,
                format!("notification rejected: {error}"),
            )
            .await;
            Ok(false)
        }
    }
}

async fn write(
    sink: &DurableSink,
    environment: &str,
    write: CloudWrite,
) -> Result<(), SourceError> {
    let update = CloudUpdate {
        environment: environment.to_owned(),
        source: SOURCE.into(),
        write,
        notes: Vec::new(),
    };
    match sink.cloud(update).await? {
        Outcome::Applied => Ok(()),
        Outcome::Rejected(reason) => Err(SourceError::Refused(reason)),
    }
}
