//! Wires the agent together: collectors feed the outbox, the uplink drains it.

use calipso_proto::Object;
use tokio_util::sync::CancellationToken;

use crate::collect::{
    Collector, CollectorError, HostFacts, InterfaceDirectory, Kernel, Libvirt, Ovs, Scope,
};
use crate::config::{AgentConfig, ConfigError};
use crate::outbox::Outbox;
use crate::uplink::Uplink;

/// An agent for one host.
pub struct Agent {
    outbox: Outbox,
    collectors: Vec<Box<dyn Collector>>,
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
    /// Builds the agent and its collectors from a validated configuration. Each start is a new
    /// epoch: sequence numbers restart and the aggregator asks for a snapshot.
    pub fn new(config: &AgentConfig) -> Result<Self, ConfigError> {
        let host = config.host_id()?;
        let scope = Scope {
            host: host.clone(),
            environment: config.environment.clone(),
        };
        let epoch = rand::random_range(1..u64::MAX);
        let outbox = Outbox::new(
            &host,
            &config.environment,
            epoch,
            config.aggregator.outbox_max_bytes,
        );
        let directory = InterfaceDirectory::default();
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(HostFacts::new(scope.clone(), config.host_facts.refresh)),
            Box::new(
                Kernel::new(scope.clone(), config.kernel.options(&config.netns))
                    .with_directory(directory.clone()),
            ),
            Box::new(Libvirt::new(scope.clone(), config.libvirt.dir.clone())),
            Box::new(Ovs::new(
                scope,
                config.ovs.options(&config.kernel),
                directory,
            )),
        ];
        Ok(Agent { outbox, collectors })
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
        uplink.run(self.outbox.clone(), shutdown).await;
        tasks.join_all().await;
    }
}
