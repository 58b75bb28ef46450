//! An aggregator with its API on loopback (SQLite store in a temp dir, real QUIC ingest), and
//! agents that report synthetic OVS compute hosts to it.

use std::sync::Arc;
use std::time::Duration;

use calipso_agent::outbox::ChangeSet;
use calipso_aggregator::api::{self, RunningApi};
use calipso_aggregator::client::ApiClient;
use calipso_aggregator::config::ApiSection;
use calipso_aggregator::ingest::DurableSink;
use calipso_aggregator::store::SqliteStore;
use calipso_aggregator::synthetic::{Layout, host_name, host_objects};
use tokio_util::sync::CancellationToken;

use crate::{ENV, Pki, TestAgent, TestAggregator, agent_config};

pub const ADMIN_PASSWORD: &str = "admin-password-1";

#[derive(Debug)]
pub struct ApiHarness {
    pub pki: Pki,
    pub aggregator: TestAggregator<DurableSink>,
    pub api: RunningApi,
    pub url: String,
    shutdown: CancellationToken,
    pub dir: tempfile::TempDir,
}

impl ApiHarness {
    /// Starts the aggregator and its API (plain HTTP); `edit` adjusts the API settings.
    pub async fn start(edit: impl FnOnce(&mut ApiSection)) -> anyhow::Result<Self> {
        Self::launch(edit, false).await
    }

    /// As [`ApiHarness::start`], serving HTTPS with the PKI's server certificate.
    pub async fn start_https() -> anyhow::Result<Self> {
        Self::launch(|_| {}, true).await
    }

    async fn launch(edit: impl FnOnce(&mut ApiSection), https: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let pki = Pki::new()?;
        let sink = Arc::new(
            DurableSink::open(
                SqliteStore::open(&dir.path().join("calipso.db")).await?,
                crate::secret_key(),
            )
            .await?,
        );
        let aggregator = TestAggregator::start(&pki, sink.clone(), ([127, 0, 0, 1], 0).into())?;
        let mut section = ApiSection {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_password: Some(ADMIN_PASSWORD.into()),
            ..ApiSection::default()
        };
        if https {
            let server = pki.server_paths();
            section.tls_cert = Some(server.cert);
            section.tls_key = Some(server.key);
        }
        edit(&mut section);
        let shutdown = CancellationToken::new();
        let api = api::start(
            &section,
            sink,
            Some(aggregator.handle.clone()),
            shutdown.clone(),
        )
        .await?;
        let scheme = if https { "https" } else { "http" };
        let url = format!("{scheme}://{}", api.local_addr);
        Ok(ApiHarness {
            pki,
            aggregator,
            api,
            url,
            shutdown,
            dir,
        })
    }

    /// A client logged in as `username` (trusting the PKI's CA).
    pub async fn client(&self, username: &str, password: &str) -> anyhow::Result<ApiClient> {
        let mut client = ApiClient::new(&self.url)?.with_ca(&self.pki.ca.ca_cert_path())?;
        client.login(username, password).await?;
        Ok(client)
    }

    pub async fn admin(&self) -> anyhow::Result<ApiClient> {
        self.client("admin", ADMIN_PASSWORD).await
    }

    /// Starts an agent for synthetic host `index` and waits until its model (host objects and
    /// `vms` VMs) is stored.
    pub async fn report_host(
        &self,
        index: usize,
        hosts: usize,
        vms: usize,
    ) -> anyhow::Result<TestAgent> {
        let layout = Layout {
            hosts,
            vms_per_host: vms,
            tunnel_peers: hosts.saturating_sub(1),
        };
        let host = host_name(index);
        let (tls, _) = self.pki.agent(&host)?;
        let mut agent = TestAgent::start(&host, &tls, &agent_config(self.aggregator.addr))?;
        // The host's objects include its VMs'.
        let upserts = host_objects(ENV, index, &layout);
        agent
            .outbox
            .publish(
                "synthetic",
                ChangeSet {
                    upserts,
                    removals: vec![],
                },
            )
            .map_err(|err| anyhow::anyhow!("publish: {err}"))?;
        anyhow::ensure!(
            agent.wait_acked(Duration::from_secs(20)).await,
            "host {host} not acknowledged"
        );
        Ok(agent)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.api.task.await;
        self.aggregator.stop().await;
    }
}

/// An aggregator holding a synthetic environment of OVS compute hosts in SQLite (written to the
/// store, then loaded as at a restart), its API on loopback: what the API and UI benchmarks
/// load.
#[derive(Debug)]
pub struct SyntheticApi {
    pub url: String,
    pub layout: Layout,
    pub api: RunningApi,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl SyntheticApi {
    /// `hosts` hosts of about `objects_per_host` objects each in `environment`; the admin's
    /// password is `admin_password`. Prints what it loaded and how long it took.
    pub async fn start(
        environment: &str,
        hosts: usize,
        objects_per_host: usize,
        admin_password: &str,
    ) -> anyhow::Result<Self> {
        use calipso_aggregator::graph::Node;
        use calipso_aggregator::store::{Batch, Store, Write};
        let dir = tempfile::tempdir()?;
        let layout = Layout::with_objects_per_host(hosts, objects_per_host);
        let started = std::time::Instant::now();
        let store = SqliteStore::open(&dir.path().join("calipso.db")).await?;
        let at = calipso_proto::Timestamp::now();
        let mut objects = Vec::new();
        for host in 0..hosts {
            for object in host_objects(environment, host, &layout) {
                let id = object.id.clone();
                objects.push(Write::first(environment, id, Node::new(object, at)));
            }
        }
        let count = objects.len();
        store
            .commit(&Batch {
                at,
                objects,
                ..Batch::default()
            })
            .await?;
        let sink = Arc::new(DurableSink::open(store, crate::secret_key()).await?);
        let (links, cliques) = {
            let engine = sink.engine();
            let env = engine
                .environment(environment)
                .ok_or_else(|| anyhow::anyhow!("no environment"))?;
            (env.links.len(), env.cliques.len())
        };
        println!(
            "loaded {count} objects, {links} links, {cliques} cliques in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let shutdown = CancellationToken::new();
        let section = ApiSection {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_password: Some(admin_password.into()),
            ..ApiSection::default()
        };
        let api = api::start(&section, sink, None, shutdown.clone()).await?;
        Ok(SyntheticApi {
            url: format!("http://{}", api.local_addr),
            layout,
            api,
            shutdown,
            _dir: dir,
        })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.api.task.await;
    }
}
