//! A multi-host cloud on one machine (`calipso-lab`): every host a network namespace joined to
//! the others by a veth "fabric" bridge, with Open vSwitch (its own `ovsdb-server` and
//! userspace-datapath `ovs-vswitchd`) or Linux bridges as Neutron's agents build them, VMs as
//! tap devices with Nova-style libvirt XML, qdhcp / qrouter namespaces, one real
//! `calipso-agent` per host running inside the host's namespace, one real
//! `calipso-aggregator` with its API, and the cloud's control plane as a Keystone/Neutron
//! double ([`cloud`]) that the aggregator's OpenStack adapter reads.
//!
//! Everything the lab makes is named from the lab's name (namespaces `cl-<name>-…`, root
//! devices `cl<name>…`) and its processes are recorded in the state directory, so
//! [`Lab::down`] removes all of it even after a crash of whatever ran `up`.

pub mod cloud;
pub mod expect;
mod hosts;
pub mod topology;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use calipso_aggregator::ca::CaDir;
use serde::{Deserialize, Serialize};

use crate::netlab::run;
pub use topology::Topology;
use topology::Vm;

/// The aggregator's name in its certificate (the agents' `server_name`).
const SERVER_NAME: &str = "aggregator";

/// Where the lab finds the Calipso binaries and keeps its state.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub state_dir: PathBuf,
    pub agent_bin: PathBuf,
    pub aggregator_bin: PathBuf,
    /// `calipso-lab` itself, which serves the cloud double (`serve-cloud`).
    pub lab_bin: PathBuf,
    /// Where the REST API listens (port 0: any free one).
    pub api_listen: SocketAddr,
}

/// What `up` decided at run time, kept for the later commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    quic_port: u16,
    api: SocketAddr,
    admin_password: String,
    agent_bin: PathBuf,
    aggregator_bin: PathBuf,
    lab_bin: PathBuf,
    /// Where the Keystone/Neutron double listens, and its password.
    cloud: SocketAddr,
    cloud_password: String,
}

/// A lab that is up.
#[derive(Debug)]
pub struct Lab {
    topology: Topology,
    state_dir: PathBuf,
    run: RunState,
    /// Processes this value started and must reap (by name: `aggregator`, `agent-<host>`).
    children: BTreeMap<String, Child>,
}

fn topology_path(state_dir: &Path) -> PathBuf {
    state_dir.join("topology.toml")
}

fn run_state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("lab.json")
}

/// A free port on `ip` (TCP or UDP), for a server that is started right after.
fn free_port(ip: Ipv4Addr, udp: bool) -> anyhow::Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind((ip, 0))?.local_addr()?.port()
    } else {
        std::net::TcpListener::bind((ip, 0))?.local_addr()?.port()
    })
}

fn random_password() -> String {
    (0..24)
        .map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[rand::random_range(0..32)]))
        .collect()
}

/// Names of the namespaces of this machine that start with `prefix`.
fn namespaces_with_prefix(prefix: &str) -> anyhow::Result<Vec<String>> {
    Ok(run("ip", &["netns", "list"])?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        ensure!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Whether `tool` is an executable in one of `$PATH`'s directories.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

impl Lab {
    /// Builds the topology, starts the aggregator and one agent per host.
    pub fn up(topology: Topology, options: &LabOptions) -> anyhow::Result<Lab> {
        topology.validate()?;
        ensure!(
            crate::netlab::is_root(),
            "the lab creates namespaces and interfaces: run it as root"
        );
        if topology.hosts.iter().any(|h| !h.dhcp.is_empty()) {
            ensure!(
                on_path("dnsmasq"),
                "the lab's DHCP namespaces run dnsmasq (apt-get install dnsmasq-base)"
            );
        }
        if topology
            .hosts
            .iter()
            .any(|h| h.switch == topology::Switch::Ovs)
        {
            let missing: Vec<&str> = ["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"]
                .into_iter()
                .filter(|tool| !on_path(tool))
                .collect();
            ensure!(
                missing.is_empty(),
                "the lab's Open vSwitch hosts need Open vSwitch (apt-get install openvswitch-switch); missing: {}",
                missing.join(", ")
            );
        }
        let state_dir = &options.state_dir;
        ensure!(
            !run_state_path(state_dir).exists(),
            "a lab is up in {}: run `calipso-lab down` first",
            state_dir.display()
        );
        let prefix = format!("cl-{}-", topology.name);
        ensure!(
            namespaces_with_prefix(&prefix)?.is_empty(),
            "namespaces {prefix}* exist (a lab named `{}` is up or was not taken down): run `calipso-lab down`",
            topology.name
        );
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let state_dir = std::fs::canonicalize(state_dir)?;
        std::fs::write(topology_path(&state_dir), topology.to_toml()?)?;
        let run_state = RunState {
            quic_port: 0,
            api: options.api_listen,
            admin_password: random_password(),
            agent_bin: options.agent_bin.clone(),
            aggregator_bin: options.aggregator_bin.clone(),
            lab_bin: options.lab_bin.clone(),
            cloud: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            cloud_password: random_password(),
        };
        let mut lab = Lab {
            topology,
            state_dir,
            run: run_state,
            children: BTreeMap::new(),
        };
        // Whatever stops the build half-way — an error or a panic — takes down what it had
        // started: daemons outside the lab's namespaces would outlive the caller otherwise.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lab.build()))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("building the lab panicked")));
        if let Err(error) = built {
            let _ = Lab::down(&lab.state_dir);
            return Err(error);
        }
        Ok(lab)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let gateway = self.topology.fabric.management_gateway();
        self.prepare_ca()?;
        hosts::fabric_up(&self.topology)?;
        self.run.quic_port = free_port(gateway, true)?;
        if self.run.api.port() == 0 {
            let ip = match self.run.api.ip() {
                std::net::IpAddr::V4(ip) => ip,
                std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
            };
            self.run.api.set_port(free_port(ip, false)?);
        }
        self.run
            .cloud
            .set_port(free_port(Ipv4Addr::LOCALHOST, false)?);
        std::fs::write(
            run_state_path(&self.state_dir),
            serde_json::to_vec_pretty(&self.run)?,
        )?;
        for index in 0..self.topology.hosts.len() {
            hosts::host_up(&self.topology, index, &self.host_dir(index))?;
        }
        hosts::sync_lxb_networks(None, &self.topology)?;
        for (index, host) in self.topology.hosts.iter().enumerate() {
            let dir = self.host_dir(index);
            hosts::services_up(&self.topology, index, &dir)?;
            for vm in &host.vms {
                hosts::vm_up(&self.topology, index, vm, &dir)?;
            }
        }
        self.start_cloud()?;
        self.start_aggregator()?;
        self.connect_cloud()?;
        for index in 0..self.topology.hosts.len() {
            let name = self.topology.hosts[index].name.clone();
            self.start_agent(&name)?;
        }
        Ok(())
    }

    /// Opens a lab that another process brought up.
    pub fn open(state_dir: &Path) -> anyhow::Result<Lab> {
        let topology = Topology::load(&topology_path(state_dir))?;
        let run_state: RunState = serde_json::from_slice(
            &std::fs::read(run_state_path(state_dir))
                .with_context(|| format!("no lab is up in {}", state_dir.display()))?,
        )?;
        Ok(Lab {
            topology,
            state_dir: std::fs::canonicalize(state_dir)?,
            run: run_state,
            children: BTreeMap::new(),
        })
    }

    /// Removes everything a lab made: its processes, namespaces, devices and state directory.
    /// Works from the state directory alone and goes on past errors, reporting the first.
    pub fn down(state_dir: &Path) -> anyhow::Result<()> {
        let topology = Topology::load(&topology_path(state_dir))?;
        let mut errors: Vec<anyhow::Error> = pid_files(state_dir)
            .iter()
            .filter_map(|pid_file| stop_recorded_process(pid_file).err())
            .collect();
        hosts::unmount_service_namespaces(state_dir);
        errors.extend(hosts::sweep(&topology.name).err());
        match errors.into_iter().next() {
            Some(first) => Err(first),
            None => std::fs::remove_dir_all(state_dir)
                .with_context(|| format!("cannot remove {}", state_dir.display())),
        }
    }

    /// Removes what is left of a lab whose state directory is gone: its namespaces with the
    /// processes inside them, and its devices (see [`Lab::down`] for the complete removal).
    pub fn sweep(lab_name: &str) -> anyhow::Result<()> {
        hosts::sweep(lab_name)
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.run.api)
    }

    /// The Keystone URL of the lab's cloud double.
    pub fn cloud_url(&self) -> String {
        format!("http://{}", self.run.cloud)
    }

    pub fn admin_password(&self) -> &str {
        &self.run.admin_password
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn host_dir(&self, index: usize) -> PathBuf {
        self.state_dir
            .join("hosts")
            .join(&self.topology.hosts[index].name)
    }

    fn prepare_ca(&self) -> anyhow::Result<()> {
        let ca = CaDir::new(self.state_dir.join("ca"));
        ca.init(&format!("calipso-lab {} CA", self.topology.name), true)?;
        ca.issue_server(
            SERVER_NAME,
            &[self.topology.fabric.management_gateway().to_string()],
            true,
        )?;
        for host in &self.topology.hosts {
            ca.issue_agent(&host.name, &self.topology.environment, true)?;
        }
        Ok(())
    }

    fn aggregator_config(&self) -> String {
        let ca = self.state_dir.join("ca");
        let path = |name: &str| ca.join(name).display().to_string();
        format!(
            r#"[ingest]
listen = "{gateway}:{port}"
ca_cert = "{ca_cert}"
cert = "{cert}"
key = "{key}"
crl = "{crl}"
idle_timeout = "3s"

[store]
url = "sqlite://{db}"
secret_key_file = "{secret_key}"

[api]
listen = "{api}"
admin_password = "{password}"

[metrics]
listen = "{metrics}"
"#,
            gateway = self.topology.fabric.management_gateway(),
            port = self.run.quic_port,
            ca_cert = path("ca.pem"),
            cert = path(&format!("server-{SERVER_NAME}.pem")),
            key = path(&format!("server-{SERVER_NAME}.key")),
            crl = path("crl.pem"),
            db = self.state_dir.join("data").join("calipso.db").display(),
            secret_key = self.state_dir.join("keys").join("secret.key").display(),
            api = self.run.api,
            // Beside the API, on a port of the system's choosing: labs run side by side.
            metrics = std::net::SocketAddr::new(self.run.api.ip(), 0),
            password = self.run.admin_password,
        )
    }

    fn agent_config(&self, index: usize) -> String {
        let host = &self.topology.hosts[index];
        let ca = self.state_dir.join("ca");
        let dir = self.host_dir(index);
        format!(
            r#"host = "{name}"
environment = "{environment}"
state_file = "{state}"

[aggregator]
address = "{gateway}:{port}"
server_name = "{SERVER_NAME}"
ca_cert = "{ca}/ca.pem"
cert = "{ca}/agent-{name}.pem"
key = "{ca}/agent-{name}.key"
keep_alive = "1s"
idle_timeout = "3s"
reconnect_max = "1s"

[netns]
dir = "{netns}"

[libvirt]
dir = "{libvirt}"
config_dir = "{libvirt}/defined"

[health]
interval = "2s"
# A lab shares a busy machine: a lost echo now and then is the machine, not the tunnel.
ping_loss_warning = 20.0
ping_loss_error = 50.0

[kernel]
physical_interfaces = {nics:?}

[ovs]
socket = "{ovs}"
"#,
            name = host.name,
            environment = self.topology.environment,
            gateway = self.topology.fabric.management_gateway(),
            port = self.run.quic_port,
            ca = ca.display(),
            netns = dir.join("netns").display(),
            libvirt = dir.join("libvirt").display(),
            nics = hosts::physical_interfaces(host.switch),
            state = dir.join("agent.state").display(),
            ovs = dir.join("ovs/db.sock").display(),
        )
    }

    /// Starts a process detached from the caller's terminal, logging to `<name>.log` and
    /// recording its pid in `<name>.pid`.
    fn spawn(&mut self, name: &str, mut command: Command) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.state_dir.join(format!("{name}.log")))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("RUST_LOG", "info")
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        std::fs::write(
            self.state_dir.join(format!("{name}.pid")),
            child.id().to_string(),
        )?;
        self.children.insert(name.to_owned(), child);
        Ok(())
    }

    fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        let pid_file = self.state_dir.join(format!("{name}.pid"));
        stop_recorded_process(&pid_file)?;
        if let Some(mut child) = self.children.remove(name) {
            child.wait()?;
        }
        Ok(())
    }

    pub fn start_aggregator(&mut self) -> anyhow::Result<()> {
        let config = self.state_dir.join("aggregator.toml");
        std::fs::write(&config, self.aggregator_config())?;
        std::fs::create_dir_all(self.state_dir.join("data"))?;
        let mut command = Command::new(&self.run.aggregator_bin);
        command.arg("serve").arg("--config").arg(&config);
        self.spawn("aggregator", command)?;
        let api = self.run.api;
        wait_until(
            "the aggregator's API did not answer",
            Duration::from_secs(30),
            || std::net::TcpStream::connect(api).is_ok(),
        )
    }

    /// Starts the Keystone/Neutron double, which serves the topology file as it is now.
    fn start_cloud(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.run.lab_bin);
        command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("serve-cloud")
            .arg("--listen")
            .arg(self.run.cloud.to_string())
            .env("CALIPSO_LAB_CLOUD_PASSWORD", &self.run.cloud_password);
        self.spawn("cloud", command)?;
        let cloud = self.run.cloud;
        wait_until(
            "the cloud double did not answer",
            Duration::from_secs(30),
            || std::net::TcpStream::connect(cloud).is_ok(),
        )
    }

    /// Gives the environment its `OpenStack` configuration through the API, as an operator
    /// would: the adapter reads the double every second.
    fn connect_cloud(&self) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "name": self.topology.environment,
            "mechanism_drivers": [],
            "configuration": {"OpenStack": {
                "url": self.cloud_url(),
                "user": cloud::USER,
                "pwd": self.run.cloud_password,
                "resync_interval": "1",
            }},
        });
        // Its own runtime on its own thread: the lab is driven from plain code and from tests
        // that already run one.
        let api_url = self.api_url();
        let password = self.run.admin_password.clone();
        let configure = move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut client = calipso_aggregator::client::ApiClient::new(&api_url)?;
                client.login("admin", &password).await?;
                let (status, answer) = client
                    .send(
                        reqwest::Method::POST,
                        "/api/v1/environment_configs",
                        &[],
                        Some(&body),
                    )
                    .await?;
                ensure!(
                    status.is_success(),
                    "configuring the environment's OpenStack: {status} {answer}"
                );
                Ok(())
            })
        };
        std::thread::spawn(configure)
            .join()
            .map_err(|_| anyhow::anyhow!("the configuring thread panicked"))?
    }

    /// Stops the aggregator (SIGTERM: a clean shutdown).
    pub fn stop_aggregator(&mut self) -> anyhow::Result<()> {
        self.stop("aggregator")
    }

    /// Starts a host's agent inside the host's namespace.
    pub fn start_agent(&mut self, host: &str) -> anyhow::Result<()> {
        let index = self
            .topology
            .host_index(host)
            .with_context(|| format!("no host `{host}` in the lab"))?;
        let config = self.host_dir(index).join("agent.toml");
        std::fs::write(&config, self.agent_config(index))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.topology.host_netns(host)])
            .arg(&self.run.agent_bin)
            .arg("run")
            .arg("--config")
            .arg(&config);
        self.spawn(&format!("agent-{host}"), command)
    }

    /// Kills a host's agent at once (SIGKILL: no goodbye to the aggregator).
    pub fn kill_agent(&mut self, host: &str) -> anyhow::Result<()> {
        let name = format!("agent-{host}");
        let pid_file = self.state_dir.join(format!("{name}.pid"));
        let pid = read_pid(&pid_file)?;
        run("kill", &["-KILL", &pid.to_string()])?;
        std::fs::remove_file(&pid_file)?;
        if let Some(mut child) = self.children.remove(&name) {
            child.wait()?;
        }
        Ok(())
    }

    /// Stops a host's agent cleanly (SIGTERM).
    pub fn stop_agent(&mut self, host: &str) -> anyhow::Result<()> {
        self.stop(&format!("agent-{host}"))
    }

    /// Kills a host's ovsdb-server (`running` false), as a crash would, or starts it again on
    /// its database.
    pub fn set_ovsdb_server(&self, host: &str, running: bool) -> anyhow::Result<()> {
        let index = self.index_of(host)?;
        let dir = self.host_dir(index);
        if running {
            hosts::start_ovsdb_server(&self.topology, index, &dir)
        } else {
            hosts::kill_daemon(&dir.join("ovs").join("ovsdb-server.pid"))
        }
    }

    /// Kills the DHCP server of `network` on a host (`running` false), or starts it again in
    /// its namespace.
    pub fn set_dhcp_server(&self, host: &str, network: &str, running: bool) -> anyhow::Result<()> {
        let index = self.index_of(host)?;
        let dir = self.host_dir(index);
        if running {
            let netns = self
                .topology
                .service_netns(host, &self.topology.dhcp_netns(network));
            hosts::start_dhcp_server(&self.topology, network, &netns, &dir)
        } else {
            hosts::kill_daemon(&dir.join(format!("dnsmasq-{network}.pid")))
        }
    }

    /// Where a host's agent saves its state (epoch, sequence number, model).
    pub fn agent_state_file(&self, host: &str) -> anyhow::Result<PathBuf> {
        Ok(self.host_dir(self.index_of(host)?).join("agent.state"))
    }

    fn index_of(&self, host: &str) -> anyhow::Result<usize> {
        self.topology
            .host_index(host)
            .with_context(|| format!("no host `{host}` in the lab"))
    }

    /// Takes a host's fabric link down (`connected` false) or up again: the host keeps running
    /// but cannot reach the aggregator or the other hosts.
    pub fn set_fabric_link(&self, host: &str, connected: bool) -> anyhow::Result<()> {
        let index = self
            .topology
            .host_index(host)
            .with_context(|| format!("no host `{host}` in the lab"))?;
        hosts::set_fabric_link(&self.topology, index, connected)
    }

    /// Sets a device of a host (`eth0`, a tap…) down or up inside the host's namespace.
    pub fn set_device(&self, host: &str, device: &str, up: bool) -> anyhow::Result<()> {
        let index = self
            .topology
            .host_index(host)
            .with_context(|| format!("no host `{host}` in the lab"))?;
        hosts::set_host_device(&self.topology, index, device, up)
    }

    /// Boots a VM on a host: its ports, taps and domain XML, as Nova and Neutron would.
    pub fn add_vm(&mut self, host: &str, vm: Vm) -> anyhow::Result<()> {
        let index = self
            .topology
            .host_index(host)
            .with_context(|| format!("no host `{host}` in the lab"))?;
        ensure!(
            self.topology
                .hosts
                .iter()
                .all(|h| h.vms.iter().all(|v| v.name != vm.name)),
            "vm `{}` exists",
            vm.name
        );
        let mut next = self.topology.clone();
        next.hosts[index].vms.push(vm.clone());
        next.validate()?;
        hosts::sync_lxb_networks(Some(&self.topology), &next)?;
        hosts::vm_up(&next, index, &vm, &self.host_dir(index))?;
        self.commit_topology(next)
    }

    /// Deletes a VM: its domain XML first (libvirt's order), then its devices and ports.
    pub fn remove_vm(&mut self, name: &str) -> anyhow::Result<()> {
        let (index, position) = self
            .topology
            .hosts
            .iter()
            .enumerate()
            .find_map(|(i, h)| Some((i, h.vms.iter().position(|v| v.name == name)?)))
            .with_context(|| format!("no vm `{name}` in the lab"))?;
        let mut next = self.topology.clone();
        let vm = next.hosts[index].vms.remove(position);
        hosts::vm_down(&next, index, &vm, &self.host_dir(index))?;
        hosts::sync_lxb_networks(Some(&self.topology), &next)?;
        self.commit_topology(next)
    }

    /// Records a changed topology: the new ground truth.
    /// Writes the topology file whole (a temporary file renamed over it), as the cloud double
    /// re-reads it at any moment.
    fn commit_topology(&mut self, next: Topology) -> anyhow::Result<()> {
        let path = topology_path(&self.state_dir);
        let partial = path.with_extension("toml.new");
        std::fs::write(&partial, next.to_toml()?)?;
        std::fs::rename(&partial, &path)?;
        self.topology = next;
        Ok(())
    }
}

impl Drop for Lab {
    /// Reaps what this value started; the lab itself stays up until [`Lab::down`].
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            let _ = child.try_wait();
        }
    }
}

fn pid_files(state_dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(state_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pid"))
        .collect();
    // Agents before the aggregator, so that they do not log its absence.
    found.sort_by_key(|p| !p.to_string_lossy().contains("agent-"));
    found.extend(hosts::ovs_pid_files(state_dir));
    found
}

fn read_pid(pid_file: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(pid_file)
        .with_context(|| format!("cannot read {}", pid_file.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not a pid", pid_file.display()))
}

/// Stops the process a pid file names (SIGTERM, then SIGKILL after 10 s) and removes the file.
/// A pid that is gone is fine: the process crashed or was stopped before.
fn stop_recorded_process(pid_file: &Path) -> anyhow::Result<()> {
    if !pid_file.exists() {
        return Ok(());
    }
    let pid = read_pid(pid_file)?;
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or_default()
                .trim_start()
                .starts_with('Z')
        })
    };
    if alive() {
        let _ = run("kill", &["-TERM", &pid.to_string()]);
        if wait_until("stop", Duration::from_secs(10), || !alive()).is_err() {
            let _ = run("kill", &["-KILL", &pid.to_string()]);
            if wait_until("stop", Duration::from_secs(5), || !alive()).is_err() {
                bail!("process {pid} ({}) does not stop", pid_file.display());
            }
        }
    }
    // Open vSwitch daemons remove their own pid files as they exit.
    match std::fs::remove_file(pid_file) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove {}", pid_file.display()))
        }
        _ => Ok(()),
    }
}

/// Serves the lab's cloud (`calipso-lab serve-cloud`) until killed: Keystone and Neutron
/// answer from the topology file in `state_dir`, re-read when it changes.
pub async fn serve_cloud(
    state_dir: &Path,
    listen: SocketAddr,
    password: &str,
) -> anyhow::Result<()> {
    let path = topology_path(state_dir);
    let load = || -> anyhow::Result<_> {
        let modified = std::fs::metadata(&path)?.modified()?;
        Ok((modified, Topology::load(&path)?))
    };
    let (mut seen, topology) = load()?;
    let cloud = crate::openstack::FakeCloud::start_on(
        &listen.to_string(),
        cloud::documents(&topology),
        cloud::USER,
        password,
        50,
    )
    .await?;
    tracing::info!(url = %cloud.url, "serving the lab's Keystone and Neutron");
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match load() {
            Ok((modified, topology)) if modified != seen => {
                seen = modified;
                cloud.update(|documents| *documents = cloud::documents(&topology));
            }
            Ok(_) => {}
            // A topology being rewritten: the next look finds it whole.
            Err(error) => tracing::debug!(%error, "topology not readable"),
        }
    }
}

/// A lab that is taken down when the test ends, whatever happened.
#[derive(Debug)]
pub struct RunningLab {
    pub lab: Lab,
    /// Holds the state directory for the lab's life.
    _state: tempfile::TempDir,
}

impl Drop for RunningLab {
    fn drop(&mut self) {
        if let Err(error) = Lab::down(self.lab.state_dir()) {
            eprintln!("lab down: {error:#}");
        }
    }
}

impl RunningLab {
    /// The lab of a checked-in topology file, under its own name, fabric and environment so
    /// that it runs beside a lab an operator brought up from the same file.
    pub fn up(topology: &str, name: &str, fabric: &str) -> anyhow::Result<Self> {
        let mut topology: Topology = toml::from_str(topology)?;
        topology.name = name.into();
        topology.environment = format!("{}-e2e", topology.environment);
        topology.fabric = fabric.parse().map_err(anyhow::Error::msg)?;
        // What a crashed run of this test left behind.
        Lab::sweep(&topology.name)?;
        let state = tempfile::tempdir()?;
        let options = LabOptions {
            state_dir: state.path().join("lab"),
            agent_bin: crate::workspace_binary("calipso-agent", "calipso-agent", false)?,
            aggregator_bin: crate::workspace_binary(
                "calipso-aggregator",
                "calipso-aggregator",
                false,
            )?,
            lab_bin: crate::workspace_binary("calipso-tests", "calipso-lab", false)?,
            api_listen: "127.0.0.1:0".parse()?,
        };
        let lab = Lab::up(topology, &options)?;
        Ok(RunningLab { lab, _state: state })
    }

    pub async fn client(&self) -> anyhow::Result<calipso_aggregator::client::ApiClient> {
        let mut client = calipso_aggregator::client::ApiClient::new(&self.lab.api_url())?;
        client.login("admin", self.lab.admin_password()).await?;
        Ok(client)
    }

    pub fn env(&self) -> String {
        self.lab.topology().environment.clone()
    }
}
