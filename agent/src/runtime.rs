//! Wires the agent together: collectors feed the outbox, the uplink drains it.

use std::sync::Arc;
use std::time::Duration;

use calipso_proto::Object;
use tokio_util::sync::CancellationToken;

use crate::collect::{
    Collector, CollectorError, HostFacts, InterfaceDirectory, Kernel, Libvirt, Ovs, Scope,
};
use crate::config::{AgentConfig, ConfigError};
use crate::health::plugins::load_sensu;
use crate::health::{
    BridgeCheck, Check, InstanceCheck, InterfaceCheck, Monitor, PluginCheck, ServiceCheck,
    TunnelCheck, VswitchCheck,
};
use crate::outbox::{Outbox, Warming};
use crate::state::StateFile;
use crate::uplink::Uplink;

/// How long a restarted agent waits for every collector to describe the host before it sends
/// what changed since its last run.
const MAX_WARMUP: Duration = Duration::from_secs(10);
/// Publications pausing this long end the warm-up once every collector has published.
const WARMUP_QUIET: Duration = Duration::from_millis(200);
/// How often the state is saved when it changed.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// An agent for one host.
pub struct Agent {
    outbox: Outbox,
    collectors: Vec<Box<dyn Collector>>,
    /// The health checks, unless `[health] enabled = false`.
    monitor: Option<Monitor>,
    state_file: Option<StateFile>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.collectors.iter().map(|c| c.name()).collect();
        f.debug_struct("Agent")
            .field("outbox", &self.outbox)
            .field("collectors", &names)
            .finish()
    }
}

impl Agent {
    /// Builds the agent and its collectors from a validated configuration. With a saved state
    /// of this host ([`AgentConfig::state_file`]) it continues that epoch; otherwise it starts
    /// a new one, and the aggregator asks for a snapshot.
    pub fn new(config: &AgentConfig) -> Result<Self, ConfigError> {
        let host = config.host_id()?;
        let scope = Scope {
            host: host.clone(),
            environment: config.environment.clone(),
        };
        let directory = InterfaceDirectory::default();
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(HostFacts::new(scope.clone(), config.host_facts.refresh)),
            Box::new(
                Kernel::new(scope.clone(), config.kernel.options(&config.netns))
                    .with_directory(directory.clone()),
            ),
            Box::new(Libvirt::new(
                scope.clone(),
                config.libvirt.dir.clone(),
                config.libvirt.config_dir.clone(),
            )),
            Box::new(Ovs::new(
                scope,
                config.ovs.options(&config.kernel),
                directory,
            )),
        ];
        let state_file = config.state_file().map(StateFile::new);
        let saved = state_file.as_ref().and_then(|file| match file.load() {
            Ok(saved) => saved,
            Err(err) => {
                tracing::warn!(%err, "starting a new epoch");
                None
            }
        });
        let cap = config.aggregator.outbox_max_bytes;
        let outbox = match saved {
            Some(saved) if saved.host == host && saved.environment == config.environment => {
                tracing::info!(
                    epoch = saved.epoch,
                    seq = saved.seq,
                    objects = saved.objects.len(),
                    "resuming the saved epoch"
                );
                let names: Vec<&'static str> = collectors.iter().map(|c| c.name()).collect();
                Outbox::resumed(saved, cap, &names, MAX_WARMUP)
            }
            _ => Outbox::new(
                &host,
                &config.environment,
                rand::random_range(1..u64::MAX),
                cap,
            ),
        };
        let monitor = if config.health.enabled {
            Some(monitor(config)?)
        } else {
            None
        };
        Ok(Agent {
            outbox,
            collectors,
            monitor,
            state_file,
        })
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Every collector's view, once (sorted by id).
    pub async fn discover(&mut self) -> Result<Vec<Object>, CollectorError> {
        let mut objects = Vec::new();
        for collector in &mut self.collectors {
            objects.extend(collector.scan().await?);
        }
        objects.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(objects)
    }

    /// Runs every collector and the uplink until `shutdown` is cancelled. A collector that fails
    /// is logged and the others go on: partial visibility beats none.
    pub async fn run(self, uplink: &Uplink, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for collector in self.collectors {
            let (outbox, shutdown) = (self.outbox.clone(), shutdown.clone());
            let name = collector.name();
            tasks.spawn(async move {
                if let Err(err) = collector.follow(outbox, shutdown).await {
                    tracing::error!(collector = name, %err, "collector stopped");
                }
            });
        }
        if let Some(monitor) = self.monitor {
            tasks.spawn(monitor.run(
                self.outbox.clone(),
                uplink.health_overrides(),
                shutdown.clone(),
            ));
        }
        tasks.spawn(finish_warmup(self.outbox.clone(), shutdown.clone()));
        if let Some(file) = self.state_file.clone() {
            tasks.spawn(keep_saved(self.outbox.clone(), file, shutdown.clone()));
        }
        uplink.run(self.outbox.clone(), shutdown).await;
        tasks.join_all().await;
    }
}

/// The built-in checks and the configured plugins (and Sensu checks).
fn monitor(config: &AgentConfig) -> Result<Monitor, ConfigError> {
    let health = &config.health;
    let mut checks: Vec<Arc<dyn Check>> = vec![
        Arc::new(InterfaceCheck::new(
            config.kernel.sysfs_net.clone(),
            health.rate_limits(),
        )),
        Arc::new(BridgeCheck),
        Arc::new(InstanceCheck),
        Arc::new(ServiceCheck::new(config.netns.dir.clone(), "/proc".into())),
        Arc::new(TunnelCheck::new(health.ping(), config.netns.host.clone())),
        Arc::new(VswitchCheck::new(
            config.ovs.options(&config.kernel).endpoint,
            config.ovs.vswitchd_ctl.clone(),
            health.timeout / 2,
        )),
    ];
    let invalid = |key, problem: String| ConfigError::Invalid {
        path: "agent configuration".into(),
        key,
        problem,
    };
    let mut plugins = health.plugins.clone();
    for file in &health.sensu_checks {
        plugins.extend(
            load_sensu(file).map_err(|err| invalid("health.sensu_checks", err.to_string()))?,
        );
    }
    for plugin in plugins {
        let check =
            PluginCheck::new(plugin).map_err(|err| invalid("health.plugins", err.to_string()))?;
        checks.push(Arc::new(check));
    }
    Ok(Monitor::new(checks, health.clone()))
}

/// Ends a resumed outbox's warm-up (see [`Outbox::end_warmup`]).
async fn finish_warmup(outbox: Outbox, shutdown: CancellationToken) {
    loop {
        match outbox.end_warmup(WARMUP_QUIET) {
            Ok(Warming::Done) => return,
            Ok(Warming::Warming) => {}
            Err(err) => {
                tracing::error!(%err, "cannot encode the post-restart delta");
                return;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Saves the outbox's state whenever its sequence number moved, and once more at shutdown.
async fn keep_saved(outbox: Outbox, file: StateFile, shutdown: CancellationToken) {
    let mut saved_seq: Option<u64> = None;
    let mut warned = false;
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(SAVE_EVERY) => false,
        };
        if let Some(state) = outbox.saved_state()
            && saved_seq != Some(state.seq)
        {
            let seq = state.seq;
            let target = file.clone();
            let written = tokio::task::spawn_blocking(move || target.save(&state)).await;
            match written {
                Ok(Ok(())) => saved_seq = Some(seq),
                Ok(Err(err)) if !warned => {
                    warned = true;
                    tracing::warn!(%err, "cannot save the agent state: a restart will send a snapshot");
                }
                Ok(Err(_)) => {}
                Err(err) => tracing::error!(%err, "state saving task failed"),
            }
        }
        if stopping {
            return;
        }
    }
}
