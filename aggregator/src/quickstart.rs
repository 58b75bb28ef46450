//! `calipso-aggregator quickstart`: everything on this machine, with nothing to set up. Creates
//! (or reuses) a data directory with a CA and certificates, starts the aggregator on loopback
//! and an agent for this very host connected to it over QUIC with mTLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use calipso_agent::config::UplinkTls;
use calipso_agent::{Agent, AgentConfig, Uplink, UplinkEvent};
use calipso_proto::wire::Resume;
use tokio_util::sync::CancellationToken;

use crate::ca::{CaDir, CertKind};
use crate::ingest::{DurableSink, IngestConfig, IngestServer};
use crate::secrets::SecretKey;
use crate::store::SqliteStore;
use crate::tls::ServerTlsPaths;

const SERVER_NAME: &str = "localhost";

/// Options of the quickstart command.
#[derive(Debug, Clone)]
pub struct QuickstartOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Where the REST API listens.
    pub api_listen: SocketAddr,
    /// Stop once the agent's first snapshot is stored (for scripted checks).
    pub once: bool,
}

/// Creates what is missing in the CA directory and returns the paths both sides need.
fn prepare_ca(
    ca_dir: &Path,
    host: &str,
    environment: &str,
) -> anyhow::Result<(ServerTlsPaths, UplinkTls)> {
    let ca = CaDir::new(ca_dir);
    if !ca.ca_cert_path().exists() {
        ca.init("Calipso quickstart CA", false)?;
        println!("created a CA in {}", ca_dir.display());
    }
    let server_cert = ca_dir.join(format!("server-{SERVER_NAME}.pem"));
    if !server_cert.exists() {
        ca.issue_server(SERVER_NAME, &["127.0.0.1".into(), "::1".into()], false)?;
    }
    let agent_cert = ca_dir.join(format!("agent-{host}.pem"));
    // A data directory from before certificates named their environment holds one the
    // aggregator refuses: issue it again, bound.
    let bound = ca
        .list()?
        .into_iter()
        .rev()
        .find(|cert| cert.kind == CertKind::Agent && cert.subject == host)
        .and_then(|cert| cert.environment);
    if !agent_cert.exists() || bound.as_deref() != Some(environment) {
        ca.issue_agent(host, environment, true)?;
    }
    let server = ServerTlsPaths {
        ca_cert: ca.ca_cert_path(),
        cert: server_cert,
        key: ca_dir.join(format!("server-{SERVER_NAME}.key")),
        crl: ca.crl_path(),
    };
    let agent = UplinkTls {
        ca_cert: ca.ca_cert_path(),
        cert: agent_cert,
        key: ca_dir.join(format!("agent-{host}.key")),
    };
    Ok((server, agent))
}

/// Writes a secret readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// What the aggregator holds for the host: objects by type, links by type, cliques.
fn print_summary(sink: &DurableSink, host: &str, seq: u64) {
    let engine = sink.engine();
    let Some(env) = engine
        .environments()
        .find(|e| e.graph.ids_on_host(host).next().is_some())
    else {
        return;
    };
    let mut objects: std::collections::BTreeMap<String, usize> = Default::default();
    for id in env.graph.ids_on_host(host) {
        if let Some(node) = env.graph.get(id) {
            *objects
                .entry(node.object.object_type.to_string())
                .or_default() += 1;
        }
    }
    let mut links: std::collections::BTreeMap<String, usize> = Default::default();
    for link in env.links.links() {
        *links.entry(link.link_type.to_string()).or_default() += 1;
    }
    let count = |m: &std::collections::BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "stored up to seq {seq} in environment `{}`:\n  objects of `{host}`: {}\n  links: {}\n  cliques: {}",
        env.config.name,
        count(&objects),
        if links.is_empty() {
            "none".into()
        } else {
            count(&links)
        },
        env.cliques.len(),
    );
}

pub async fn run(options: QuickstartOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    // The store, the CA's keys and the admin's password live here: the user's alone.
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = &options.data_dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    }
    let mut agent_config = AgentConfig::default();
    let host = agent_config.host_id()?;
    let (server_tls, agent_tls) = prepare_ca(
        &options.data_dir.join("ca"),
        &host,
        &agent_config.environment,
    )?;

    let store_path = options.data_dir.join("calipso.db");
    // Beside the database, unlike a packaged install (/etc/calipso): everything of the quick
    // start is in one directory only its user can read.
    let (secrets, _) = SecretKey::load_or_create(&options.data_dir.join("secret.key"))?;
    let sink = Arc::new(DurableSink::open(SqliteStore::open(&store_path).await?, secrets).await?);
    let server = IngestServer::bind(IngestConfig::new(options.listen, server_tls), sink.clone())?;
    let listen = server.local_addr()?;
    agent_config.host = Some(host.clone());
    agent_config.state_file = options.data_dir.join("agent-state");
    agent_config.aggregator.address = listen.to_string();
    agent_config.aggregator.server_name = SERVER_NAME.into();

    let password_file = options.data_dir.join("admin-password");
    let api_section = crate::config::ApiSection {
        listen: options.api_listen,
        ..Default::default()
    };
    // An environment given an `OpenStack` configuration through the API is read from its cloud.
    crate::openstack::supervise(sink.clone(), shutdown.clone());
    let api = crate::api::start(
        &api_section,
        sink.clone(),
        Some(server.handle()),
        shutdown.clone(),
    )
    .await?;
    if let Some((_, password)) = &api.first_admin {
        write_secret(&password_file, password)?;
    }
    let api_url = format!("http://{}", api.local_addr);
    println!(
        "web UI on {api_url}/ and API on {api_url}/api/v1 (docs: {api_url}/api/docs); user `admin`, password in {} (`cat` it)",
        password_file.display()
    );
    let env = &agent_config.environment;
    println!("try:");
    println!("  calipso --url {api_url} login admin");
    println!("  calipso --url {api_url} get inventory --env {env} --type vnic");
    println!("  calipso --url {api_url} watch --env {env}");
    println!("  calipso --url {api_url} snapshot create before --env {env}   # then, later:");
    println!("  calipso --url {api_url} diff --env {env} --from before");
    println!(
        "  calipso --url {api_url} impact host:{host} --env {env}     # what depends on this host"
    );
    println!(
        "  curl -s -XPOST {api_url}/api/v1/auth/tokens -H 'content-type: application/json' -d '{{\"username\":\"admin\",\"password\":\"'$(cat {})'\"}}'",
        password_file.display()
    );
    println!(
        "this host alone shows little; for VMs, tunnels and cliques to look at, build a three-host cloud in namespaces (root, Open vSwitch):"
    );
    println!(
        "  cargo build --release --workspace && sudo target/release/calipso-lab up tests/labs/ovs-3.toml"
    );

    let agent = Agent::new(&agent_config)?;
    let outbox = agent.outbox().clone();
    let uplink = Uplink::new(&agent_config.aggregator, &agent_tls)?;
    let mut events = uplink.subscribe();

    println!(
        "aggregator listening on {listen} (QUIC, mTLS; CA in {})",
        options.data_dir.join("ca").display()
    );
    println!(
        "agent for host `{host}` connecting; Ctrl-C stops the agent, the aggregator and the API"
    );

    let server_task = tokio::spawn(server.run(shutdown.clone().cancelled_owned()));
    let agent_shutdown = shutdown.clone();
    let agent_task = tokio::spawn(async move { agent.run(&uplink, agent_shutdown).await });

    // The last acknowledgement printed: each new one prints what the aggregator holds.
    let mut reported: Option<u64> = None;
    // A second run resumes the saved epoch and may have nothing to send; `once` then ends when
    // the agent's warm-up is over with nothing unacknowledged.
    let mut resumed = false;
    let mut settle = tokio::time::interval(Duration::from_millis(100));
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = settle.tick(), if resumed && options.once => {
                let settled = outbox.saved_state().is_some()
                    && outbox.pending_after(outbox.acked_seq()).is_empty();
                if settled {
                    println!("nothing changed since the last run");
                    shutdown.cancel();
                }
                continue;
            }
            event = events.recv() => event,
        };
        match event {
            Ok(UplinkEvent::Connected {
                resume: Resume::After { seq },
            }) => {
                println!(
                    "the aggregator holds this host up to seq {seq}: resuming, only what changed is sent"
                );
                resumed = true;
                if reported < Some(seq) {
                    reported = Some(seq);
                    print_summary(&sink, &host, seq);
                }
            }
            Ok(UplinkEvent::Acked { seq }) if reported < Some(seq) => {
                reported = Some(seq);
                print_summary(&sink, &host, seq);
                if options.once {
                    shutdown.cancel();
                }
            }
            Ok(UplinkEvent::Disconnected { reason }) => {
                println!("agent disconnected: {reason}; it will reconnect")
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    shutdown.cancel();
    let api_task = api.task;
    let stop = async {
        let _ = agent_task.await;
        let _ = server_task.await;
        let _ = api_task.await;
    };
    if tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .is_err()
    {
        anyhow::bail!("agent and aggregator did not stop within 10 s");
    }
    println!("stopped");
    Ok(())
}
