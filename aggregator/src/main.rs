use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use calipso_aggregator::ca::CaDir;
use calipso_aggregator::config::AggregatorConfig;
use calipso_aggregator::ingest::{DurableSink, IngestServer};
use calipso_aggregator::quickstart::{self, QuickstartOptions};
use calipso_aggregator::secrets::{KeyOrigin, SecretKey};
use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator: the engine makes millions of small allocations, and
/// with glibc a full build spent a fifth of its time in malloc bookkeeping and the incremental
/// p99 was twice as high (docs/benchmarks.md, "Aggregator core").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Calipso aggregator: receives what the agents discover, over QUIC with mutual TLS, and
/// ships the deployment CA tool.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything on this machine: a CA, the aggregator, its API and an agent for this host.
    Quickstart {
        /// Where the CA, certificates and data live; reused on the next run.
        #[arg(long, default_value = "calipso-data")]
        data_dir: PathBuf,
        /// Where the aggregator listens for agents.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: SocketAddr,
        /// Where the REST API listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        api_listen: SocketAddr,
        /// Stop once the agent's first snapshot is stored.
        #[arg(long)]
        once: bool,
    },
    /// Run the aggregator from a configuration file.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage the deployment CA.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Create the key that seals environment secrets in the store (0600), or check the one
    /// there; prints its id. The packages run it at install: the service cannot write /etc.
    SecretKey {
        #[arg(long, default_value = "/etc/calipso/secret.key")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create the CA (key, certificate, empty revocation list).
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "Calipso deployment CA")]
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Issue the aggregator's server certificate.
    IssueServer {
        #[arg(long)]
        dir: PathBuf,
        /// The name agents connect to (their `aggregator.server_name`).
        #[arg(long)]
        name: String,
        /// Further DNS names or IP addresses of the aggregator.
        #[arg(long)]
        san: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Issue an agent certificate; its identity is the host id, and the aggregator accepts it
    /// for the one environment named here.
    IssueAgent {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        host: String,
        /// The environment the host reports into (its agent's `environment`).
        #[arg(long)]
        environment: String,
        #[arg(long)]
        force: bool,
    },
    /// Revoke a certificate by serial (see `ca list`), or every valid certificate of an agent
    /// host; takes effect on the next handshake.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["serial", "host"])))]
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        serial: Option<String>,
        /// Retire a host: its agent certificates, however many were issued.
        #[arg(long)]
        host: Option<String>,
    },
    /// List the certificates this CA issued.
    List {
        #[arg(long)]
        dir: PathBuf,
        /// Only the certificates of this subject (host id or server name).
        #[arg(long)]
        host: Option<String>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    calipso_agent::process::exit_status(run().await)
}

async fn run() -> anyhow::Result<()> {
    calipso_agent::process::init_logging();
    match Cli::parse().command {
        Command::Quickstart {
            data_dir,
            listen,
            api_listen,
            once,
        } => {
            let shutdown = calipso_agent::process::shutdown_on_signal();
            quickstart::run(
                QuickstartOptions {
                    data_dir,
                    listen,
                    api_listen,
                    once,
                },
                shutdown,
            )
            .await?;
        }
        Command::Serve { config } => {
            let mut config = AggregatorConfig::load(&config)?;
            // A password the operator chose is theirs: never echoed into the journal.
            let chosen = config.api.admin_password.is_some()
                || std::env::var_os("CALIPSO_ADMIN_PASSWORD").is_some();
            if config.api.admin_password.is_none() {
                config.api.admin_password = std::env::var("CALIPSO_ADMIN_PASSWORD").ok();
            }
            let secrets = open_secret_key(&config.store.secret_key_file)?;
            let sink = Arc::new(
                DurableSink::connect(&config.store.url, secrets)
                    .await
                    .context("opening the store named by store.url")?,
            );
            let shutdown = calipso_agent::process::shutdown_on_signal();
            if config.metrics.enabled {
                let listen = calipso_aggregator::metrics::serve(
                    config.metrics.listen,
                    sink.clone(),
                    shutdown.clone(),
                )
                .await
                .with_context(|| format!("metrics.listen {}", config.metrics.listen))?;
                tracing::info!(%listen, "Prometheus metrics on /metrics");
            }
            let server = IngestServer::bind(config.ingest(), sink.clone())?;
            tracing::info!(listen = %server.local_addr()?, "aggregator listening for agents");
            calipso_aggregator::openstack::supervise(sink.clone(), shutdown.clone());
            if let Some(retention) = config.store.history_retention {
                tokio::spawn(calipso_aggregator::service::history::keep_history(
                    sink.store().clone(),
                    retention,
                    shutdown.clone(),
                ));
            }
            let api = calipso_aggregator::api::start(
                &config.api,
                sink,
                Some(server.handle()),
                shutdown.clone(),
            )
            .await?;
            tracing::info!(listen = %api.local_addr, "API listening");
            if let Some(notice) =
                calipso_aggregator::api::first_admin_notice(api.first_admin.as_ref(), chosen)
            {
                println!("{notice}");
            }
            calipso_agent::process::notify_ready(&shutdown);
            server.run(shutdown.cancelled_owned()).await;
            let _ = api.task.await;
        }
        Command::Ca(command) => run_ca(command)?,
        Command::SecretKey { file } => {
            let (key, origin) = SecretKey::load_or_create(&file)?;
            match origin {
                KeyOrigin::Created(path) => {
                    println!("created secret key {} in {}", key.id(), path.display())
                }
                KeyOrigin::File(path) => println!("secret key {} in {}", key.id(), path.display()),
                KeyOrigin::Variable => anyhow::bail!(
                    "${} is set: the key comes from it, and no file was made or checked",
                    calipso_aggregator::secrets::KEY_VARIABLE
                ),
            }
        }
    }
    Ok(())
}

/// The key that seals environment secrets, said once in the log so operators know to back
/// it up.
fn open_secret_key(path: &std::path::Path) -> anyhow::Result<SecretKey> {
    let (key, origin) = SecretKey::load_or_create(path)?;
    match origin {
        KeyOrigin::Created(path) => tracing::warn!(
            key = key.id(),
            "created the key that seals environment secrets at {}: back it up apart from the database, the stored cloud passwords cannot be read without it",
            path.display()
        ),
        KeyOrigin::File(path) => {
            tracing::info!(
                key = key.id(),
                "environment secrets sealed with the key in {}",
                path.display()
            )
        }
        KeyOrigin::Variable => tracing::info!(
            key = key.id(),
            "environment secrets sealed with the key in ${}",
            calipso_aggregator::secrets::KEY_VARIABLE
        ),
    }
    Ok(key)
}

fn run_ca(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init { dir, name, force } => {
            let cert = CaDir::new(&dir).init(&name, force)?;
            println!("CA certificate: {}", cert.display());
        }
        CaCommand::IssueServer {
            dir,
            name,
            san,
            force,
        } => {
            let issued = CaDir::new(&dir).issue_server(&name, &san, force)?;
            println!(
                "certificate: {}\nkey: {}\nserial: {}",
                issued.cert.display(),
                issued.key.display(),
                issued.serial
            );
        }
        CaCommand::IssueAgent {
            dir,
            host,
            environment,
            force,
        } => {
            let issued = CaDir::new(&dir).issue_agent(&host, &environment, force)?;
            println!(
                "certificate: {}\nkey: {}\nserial: {}",
                issued.cert.display(),
                issued.key.display(),
                issued.serial
            );
        }
        CaCommand::Revoke { dir, serial, host } => {
            let revoked = match (serial, host) {
                (Some(serial), _) => vec![CaDir::new(&dir).revoke(&serial)?],
                (None, Some(host)) => CaDir::new(&dir).revoke_agent_host(&host)?,
                (None, None) => anyhow::bail!("name a certificate: --serial or --host"),
            };
            if revoked.is_empty() {
                println!("no valid certificate to revoke");
            }
            for cert in revoked {
                println!(
                    "revoked {} ({:?} `{}`); the revocation list is updated",
                    cert.serial, cert.kind, cert.subject
                );
            }
        }
        CaCommand::List { dir, host } => {
            let listed = CaDir::new(&dir).list()?.into_iter();
            for cert in listed.filter(|cert| host.as_ref().is_none_or(|h| &cert.subject == h)) {
                let state = if cert.revoked_at.is_some() {
                    "revoked"
                } else {
                    "valid"
                };
                let bound = match (&cert.kind, &cert.environment) {
                    (_, Some(environment)) => format!("  environment {environment}"),
                    (calipso_aggregator::ca::CertKind::Agent, None) => {
                        "  no environment (issued before binding)".to_owned()
                    }
                    (calipso_aggregator::ca::CertKind::Server, None) => String::new(),
                };
                println!(
                    "{}  {:<7} {:<8} {}{bound}",
                    cert.serial,
                    state,
                    format!("{:?}", cert.kind).to_lowercase(),
                    cert.subject
                );
            }
        }
    }
    Ok(())
}
