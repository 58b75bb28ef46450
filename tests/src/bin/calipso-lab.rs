//! `calipso-lab`: a multi-host cloud on this machine (network namespaces, Open vSwitch or
//! Linux bridges, VMs as taps with libvirt XML, Neutron service namespaces), one Calipso agent
//! per host and an aggregator. Needs root. See `calipso_tests::lab`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use calipso_tests::lab::topology::Vm;
use calipso_tests::lab::{Lab, LabOptions, Topology};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "A multi-host cloud on one machine, for Calipso")]
struct Cli {
    /// Where the lab keeps its CA, configurations, logs and what `down` needs.
    #[arg(long, global = true, default_value = "/var/tmp/calipso-lab")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the topology of FILE and start the aggregator and one agent per host.
    Up {
        file: PathBuf,
        /// Where the aggregator's REST API listens.
        #[arg(long, default_value = "127.0.0.1:8081")]
        api_listen: SocketAddr,
        /// Directory of calipso-agent and calipso-aggregator (default: beside this binary).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Remove everything the lab made, also after a crash.
    Down {
        /// With no state directory left: remove what is named after this lab.
        #[arg(long)]
        name: Option<String>,
    },
    /// Create and delete VMs at a steady rate.
    Churn {
        /// VM creations and deletions per second.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// How long to churn (e.g. 30s, 5m).
        #[arg(long, default_value = "30s", value_parser = humantime_serde::re::humantime::parse_duration)]
        duration: Duration,
        /// Churned VMs alive at most at once.
        #[arg(long, default_value_t = 10)]
        max_vms: usize,
    },
    /// Print the API address and credentials of the running lab.
    Status,
    /// Serve the lab's Keystone and Neutron (started by `up`; the password comes from
    /// CALIPSO_LAB_CLOUD_PASSWORD).
    #[command(hide = true)]
    ServeCloud {
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("calipso-lab: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up {
            file,
            api_listen,
            bin_dir,
        } => {
            let topology = Topology::load(&file)?;
            let bin_dir = match bin_dir {
                Some(dir) => dir,
                None => std::env::current_exe()?
                    .parent()
                    .context("cannot locate this binary's directory")?
                    .to_owned(),
            };
            let options = LabOptions {
                state_dir: cli.state_dir.clone(),
                agent_bin: existing(&bin_dir.join("calipso-agent"))?,
                aggregator_bin: existing(&bin_dir.join("calipso-aggregator"))?,
                lab_bin: std::env::current_exe()?,
                api_listen,
            };
            let lab = Lab::up(topology, &options)?;
            println!(
                "lab `{}` is up: {} hosts",
                lab.topology().name,
                lab.topology().hosts.len()
            );
            status(&lab);
            Ok(())
        }
        Command::Down { name } => {
            if cli.state_dir.join("topology.toml").exists() {
                Lab::down(&cli.state_dir)?;
                println!("lab in {} is down", cli.state_dir.display());
            } else {
                let name = name.with_context(|| {
                    format!(
                        "no lab in {}: pass --name to remove what a lab of that name left",
                        cli.state_dir.display()
                    )
                })?;
                Lab::sweep(&name)?;
                println!("removed what lab `{name}` left");
            }
            Ok(())
        }
        Command::Churn {
            rate,
            duration,
            max_vms,
        } => churn(&cli.state_dir, rate, duration, max_vms),
        Command::Status => {
            status(&Lab::open(&cli.state_dir)?);
            Ok(())
        }
        Command::ServeCloud { listen } => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .init();
            let password = std::env::var("CALIPSO_LAB_CLOUD_PASSWORD")
                .context("CALIPSO_LAB_CLOUD_PASSWORD is not set")?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(calipso_tests::lab::serve_cloud(
                    &cli.state_dir,
                    listen,
                    &password,
                ))
        }
    }
}

fn existing(path: &Path) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        path.exists(),
        "{} missing: build it (cargo build --release --workspace) or pass --bin-dir",
        path.display()
    );
    Ok(path.to_owned())
}

fn status(lab: &Lab) {
    println!(
        "web UI: {}/ and API: {}/api/v1 (user admin, password {})",
        lab.api_url(),
        lab.api_url(),
        lab.admin_password()
    );
    println!(
        "OpenStack (Keystone/Neutron double): {} (the environment's OpenStack configuration)",
        lab.cloud_url()
    );
    println!(
        "state, logs and configurations: {}",
        lab.state_dir().display()
    );
    println!("  calipso --url {} login admin", lab.api_url());
    println!(
        "  calipso --url {} get inventory --env {}",
        lab.api_url(),
        lab.topology().environment
    );
}

/// Alternates creations and deletions of `churn-N` VMs on random hosts and networks, keeping
/// at most `max_vms` of them.
fn churn(state_dir: &Path, rate: f64, duration: Duration, max_vms: usize) -> anyhow::Result<()> {
    anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
    let mut lab = Lab::open(state_dir)?;
    anyhow::ensure!(
        !lab.topology().networks.is_empty(),
        "the topology declares no network for VMs"
    );
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let (mut created, mut deleted) = (0usize, 0usize);
    let mut next_id = 0usize;
    while start.elapsed() < duration {
        let tick = Instant::now();
        let churned: Vec<String> = lab
            .topology()
            .hosts
            .iter()
            .flat_map(|h| h.vms.iter())
            .filter(|vm| vm.name.starts_with("churn-"))
            .map(|vm| vm.name.clone())
            .collect();
        let delete = !churned.is_empty() && (churned.len() >= max_vms || rand::random_bool(0.5));
        if delete {
            let victim = &churned[rand::random_range(0..churned.len())];
            lab.remove_vm(victim)?;
            deleted += 1;
        } else {
            let topology = lab.topology();
            let host = topology.hosts[rand::random_range(0..topology.hosts.len())]
                .name
                .clone();
            let network = topology.networks[rand::random_range(0..topology.networks.len())]
                .name
                .clone();
            let name = loop {
                next_id += 1;
                let name = format!("churn-{next_id}");
                if topology
                    .hosts
                    .iter()
                    .all(|h| h.vms.iter().all(|v| v.name != name))
                {
                    break name;
                }
            };
            lab.add_vm(
                &host,
                Vm {
                    name,
                    networks: vec![network],
                    plug: Default::default(),
                },
            )?;
            created += 1;
        }
        if let Some(rest) = interval.checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "churned for {seconds:.1} s: {created} VMs created, {deleted} deleted ({:.2} operations/s)",
        (created + deleted) as f64 / seconds
    );
    Ok(())
}
