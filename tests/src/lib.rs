//! Harness for end-to-end tests and benchmarks: a throw-away PKI, an aggregator on loopback, an
//! agent driven directly through its outbox, and a raw QUIC client for speaking bad protocol.
//! Everything runs for real: QUIC over UDP on 127.0.0.1, TLS with certificates from the CA tool.

pub mod alertmanager;
pub mod api;
pub mod browser;
pub mod lab;
pub mod ldap;
pub mod netlab;
pub mod openstack;
pub mod ovslab;
pub mod pg;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calipso_agent::config::{AggregatorConfig, UplinkTls};
use calipso_agent::outbox::Outbox;
use calipso_agent::{Uplink, UplinkEvent};
use calipso_aggregator::ca::CaDir;
use calipso_aggregator::ingest::{
    IngestConfig, IngestHandle, IngestServer, IngestSink, MemorySink,
};
use calipso_aggregator::tls::ServerTlsPaths;
use calipso_proto::{Object, ObjectId, ObjectType};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SERVER_NAME: &str = "localhost";

/// The key that seals environment secrets in tests: the same on every call, so a test that
/// reopens a store opens what it sealed.
pub fn secret_key() -> calipso_aggregator::secrets::SecretKey {
    calipso_aggregator::secrets::SecretKey::parse(
        "Y2FsaXBzby10ZXN0cy1zZWNyZXQta2V5LTMyLWJ5dGU=",
        "the tests' key",
    )
    .unwrap_or_else(|err| panic!("{err}"))
}

/// A durable sink over a new SQLite store in `dir`, sealing with the tests' key.
pub async fn sqlite_sink(
    dir: &std::path::Path,
) -> anyhow::Result<Arc<calipso_aggregator::ingest::DurableSink>> {
    let store = calipso_aggregator::store::SqliteStore::open(&dir.join("calipso.db")).await?;
    Ok(Arc::new(
        calipso_aggregator::ingest::DurableSink::open(store, secret_key()).await?,
    ))
}

/// reqwest is built without a TLS provider of its own: the process installs ring's, once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
pub const ENV: &str = "lab";

/// A CA in a temporary directory with a server certificate for `localhost`.
#[derive(Debug)]
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: CaDir,
    root: PathBuf,
}

impl Pki {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("ca");
        let ca = CaDir::new(&root);
        ca.init("test CA", false)?;
        ca.issue_server(SERVER_NAME, &["127.0.0.1".into()], false)?;
        Ok(Pki {
            _dir: dir,
            ca,
            root,
        })
    }

    pub fn server_paths(&self) -> ServerTlsPaths {
        ServerTlsPaths {
            ca_cert: self.ca.ca_cert_path(),
            cert: self.root.join(format!("server-{SERVER_NAME}.pem")),
            key: self.root.join(format!("server-{SERVER_NAME}.key")),
            crl: self.ca.crl_path(),
        }
    }

    /// Issues an agent certificate for `host` in the tests' environment ([`ENV`]); returns
    /// its paths and serial.
    pub fn agent(&self, host: &str) -> anyhow::Result<(UplinkTls, String)> {
        self.agent_in(host, ENV)
    }

    /// An agent certificate as the CA issued them before environments were bound: signed by
    /// the same CA, CN = host, no environment.
    pub fn unbound_agent(&self, host: &str) -> anyhow::Result<UplinkTls> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
        let ca_key = KeyPair::from_pem(&std::fs::read_to_string(self.root.join("ca.key"))?)?;
        let issuer =
            Issuer::from_ca_cert_pem(&std::fs::read_to_string(self.ca.ca_cert_path())?, ca_key)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Calipso");
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let (cert_path, key_path) = (
            self.root.join(format!("unbound-{host}.pem")),
            self.root.join(format!("unbound-{host}.key")),
        );
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok(UplinkTls {
            ca_cert: self.ca.ca_cert_path(),
            cert: cert_path,
            key: key_path,
        })
    }

    /// Issues an agent certificate for `host` bound to `environment`.
    pub fn agent_in(&self, host: &str, environment: &str) -> anyhow::Result<(UplinkTls, String)> {
        let issued = self.ca.issue_agent(host, environment, true)?;
        Ok((
            UplinkTls {
                ca_cert: self.ca.ca_cert_path(),
                cert: issued.cert,
                key: issued.key,
            },
            issued.serial,
        ))
    }
}

/// An aggregator running on loopback.
#[derive(Debug)]
pub struct TestAggregator<S> {
    pub addr: SocketAddr,
    pub sink: Arc<S>,
    pub handle: IngestHandle,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl<S: IngestSink> TestAggregator<S> {
    pub fn start(pki: &Pki, sink: Arc<S>, listen: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(IngestConfig::new(listen, pki.server_paths()), sink)
    }

    pub fn start_with(config: IngestConfig, sink: Arc<S>) -> anyhow::Result<Self> {
        let server = IngestServer::bind(config, sink.clone())?;
        let addr = server.local_addr()?;
        let handle = server.handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone().cancelled_owned()));
        Ok(TestAggregator {
            addr,
            sink,
            handle,
            shutdown,
            task,
        })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// An agent whose outbox the test fills directly (no collectors).
#[derive(Debug)]
pub struct TestAgent {
    pub host: String,
    pub outbox: Outbox,
    pub uplink: Arc<Uplink>,
    pub events: broadcast::Receiver<UplinkEvent>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// Agent-side settings for tests: quick keep-alives and reconnects.
pub fn agent_config(addr: SocketAddr) -> AggregatorConfig {
    AggregatorConfig {
        address: addr.to_string(),
        server_name: SERVER_NAME.into(),
        keep_alive: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(5),
        reconnect_max: Duration::from_millis(500),
        ..AggregatorConfig::default()
    }
}

impl TestAgent {
    /// Starts an agent for `host` with the given certificate; a new epoch every call.
    pub fn start(host: &str, tls: &UplinkTls, config: &AggregatorConfig) -> anyhow::Result<Self> {
        let epoch = rand::random_range(1..u64::MAX);
        Self::with_outbox(
            Outbox::new(host, ENV, epoch, config.outbox_max_bytes),
            tls,
            config,
        )
    }

    /// Starts a new uplink on an existing outbox: the same epoch, as after a reconnect.
    pub fn with_outbox(
        outbox: Outbox,
        tls: &UplinkTls,
        config: &AggregatorConfig,
    ) -> anyhow::Result<Self> {
        let uplink = Arc::new(Uplink::new(config, tls)?);
        let events = uplink.subscribe();
        let shutdown = CancellationToken::new();
        let (run_outbox, run_shutdown, run_uplink) =
            (outbox.clone(), shutdown.clone(), uplink.clone());
        let task = tokio::spawn(async move { run_uplink.run(run_outbox, run_shutdown).await });
        Ok(TestAgent {
            host: outbox.host().to_owned(),
            outbox,
            uplink,
            events,
            shutdown,
            task,
        })
    }

    /// Publishes one single-object change: vNIC `name` with the given MTU.
    pub fn change(&self, name: &str, mtu: u32) -> u64 {
        let object = vnic(&self.host, name, mtu);
        self.outbox
            .publish(
                "test",
                calipso_agent::outbox::ChangeSet {
                    upserts: vec![object],
                    removals: vec![],
                },
            )
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Waits for an event matching `pred`, up to `timeout`.
    pub async fn wait_event(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&UplinkEvent) -> bool,
    ) -> Option<UplinkEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Ok(event)) if pred(&event) => return Some(event),
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
            }
        }
    }

    /// Waits until the aggregator acknowledged everything published so far.
    pub async fn wait_acked(&mut self, timeout: Duration) -> bool {
        let target = *self.outbox.watch().borrow();
        let deadline = Instant::now() + timeout;
        while self.outbox.acked_seq() < target {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// A host-local vNIC object as an agent would report it.
pub fn vnic(host: &str, name: &str, mtu: u32) -> Object {
    let mut object = Object::new(
        ObjectId::host_local(ObjectType::Vnic, host, name),
        ObjectType::Vnic,
        name,
        ENV,
    )
    .with_host(host);
    object.attributes.mtu = Some(mtu);
    object
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Opens a session stream to the aggregator with an agent certificate, for tests that speak
/// the protocol by hand.
pub async fn raw_session(
    addr: SocketAddr,
    tls: &UplinkTls,
) -> anyhow::Result<(
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
)> {
    let client_config = calipso_agent::uplink::client_config(&agent_config(addr), tls)?;
    let endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into())?;
    let connection = endpoint
        .connect_with(client_config, addr, SERVER_NAME)?
        .await?;
    let (send, recv) = connection.open_bi().await?;
    Ok((endpoint, connection, send, recv))
}

/// Installs a test log subscriber once (`RUST_LOG` decides; silent by default).
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The usual start of a test: logging, a PKI, an aggregator on loopback with an in-memory sink,
/// and an agent certificate for `host`.
#[derive(Debug)]
pub struct Setup {
    pub pki: Pki,
    pub aggregator: TestAggregator<MemorySink>,
    pub host: String,
    pub tls: UplinkTls,
    pub serial: String,
}

impl Setup {
    pub fn new(host: &str) -> anyhow::Result<Self> {
        init_test_logging();
        let pki = Pki::new()?;
        let aggregator = TestAggregator::start(
            &pki,
            Arc::new(MemorySink::new()),
            ([127, 0, 0, 1], 0).into(),
        )?;
        let (tls, serial) = pki.agent(host)?;
        Ok(Setup {
            pki,
            aggregator,
            host: host.to_owned(),
            tls,
            serial,
        })
    }

    /// Starts an agent for the set-up's host (a new epoch each time).
    pub fn agent(&self) -> anyhow::Result<TestAgent> {
        TestAgent::start(&self.host, &self.tls, &agent_config(self.aggregator.addr))
    }

    pub fn sink(&self) -> &MemorySink {
        &self.aggregator.sink
    }
}

/// Waits until no delta was added to `outbox` for 300 ms; returns its last sequence number.
pub async fn settle(outbox: &Outbox) -> u64 {
    let mut watch = outbox.watch();
    while tokio::time::timeout(Duration::from_millis(300), watch.changed())
        .await
        .is_ok_and(|r| r.is_ok())
    {}
    *watch.borrow()
}

/// The net effect of every pending delta after `seq`: (ids upserted, ids removed).
pub fn net_changes(
    outbox: &Outbox,
    seq: u64,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let mut upserted = std::collections::BTreeSet::new();
    let mut removed = std::collections::BTreeSet::new();
    for pending in outbox.pending_after(seq) {
        let Ok(calipso_proto::wire::AgentMessage::Delta(delta)) =
            calipso_proto::codec::decode(&pending.frame)
        else {
            continue;
        };
        for id in delta.removals {
            upserted.remove(id.as_str());
            removed.insert(id.as_str().to_owned());
        }
        for object in delta.upserts {
            removed.remove(object.id.as_str());
            upserted.insert(object.id.as_str().to_owned());
        }
    }
    (upserted, removed)
}

/// A binary of another workspace package, built by cargo if needed (`release` for benches),
/// next to the running test or bench executable.
pub fn workspace_binary(package: &str, name: &str, release: bool) -> anyhow::Result<PathBuf> {
    let mut build = std::process::Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "-p", package, "--bin", name]);
    if release {
        build.arg("--release");
    }
    anyhow::ensure!(build.status()?.success(), "cannot build {name}");
    let running = std::env::current_exe()?;
    let target = running
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow::anyhow!("unexpected location of {}", running.display()))?;
    Ok(target.join(name))
}

/// This process's resident memory in MiB (0 where /proc does not say).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// An API answer's refusal as status and message (status 0 and a description when it was no
/// refusal), for tests that state what a bad request gets.
pub fn refusal(
    result: Result<serde_json::Value, calipso_aggregator::client::ClientError>,
) -> (u16, String) {
    match result {
        Err(calipso_aggregator::client::ClientError::Api { status, message }) => {
            (status.as_u16(), message)
        }
        other => (0, format!("{other:?}")),
    }
}
