//! What the agent replaces, measured on the same hosts: the original Calipso's per-host
//! command set over SSH, run host after host as its scanner did, against the agents' full
//! resync and their change latency. Needs root (it builds a `calipso-lab` OVS cloud and runs
//! one sshd per host inside the host's namespace, on the host's fabric address).
//!
//! The command set is reference §4.1–4.2 (calipso-original.md) for OVS hosts, with the lab's
//! equivalents where a command needs what the lab does not run: `ovs-appctl dpctl/show` for
//! `ovs-dpctl show` (userspace datapath), `ls` and `cat` of the domain XML directory for
//! `virsh list` and `virsh dumpxml` (no libvirtd), the lab's declared NICs for the sysfs
//! listing (veths). The original's MySQL reads of Neutron are left out, so the baseline is a
//! lower bound of what the original spent per host.
//!
//! Needs openssh-server, openssh-client and ethtool (`apt-get install openssh-server ethtool`).
//! `cargo bench -p calipso-tests --bench ssh_baseline`; CALIPSO_BENCH_LAB_HOSTS (default 4)
//! hosts with CALIPSO_BENCH_LAB_VMS (default 6) VMs each; CALIPSO_BENCH_ROUNDS (default 5).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use calipso_aggregator::client::ApiClient;
use calipso_tests::lab::topology::{Host, Network, Plug, Switch, Vm};
use calipso_tests::lab::{Lab, LabOptions, Topology};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn topology(hosts: usize, vms: usize) -> Topology {
    let networks = vec![
        Network {
            name: "net-a".into(),
            vni: 301,
            cidr: "192.168.60.0/24".into(),
        },
        Network {
            name: "net-b".into(),
            vni: 302,
            cidr: "192.168.70.0/24".into(),
        },
    ];
    let hosts = (0..hosts)
        .map(|h| Host {
            name: format!("node-{h}"),
            switch: Switch::Ovs,
            dhcp: if h == 0 {
                vec!["net-a".into(), "net-b".into()]
            } else {
                Vec::new()
            },
            routers: Vec::new(),
            vms: (0..vms)
                .map(|v| Vm {
                    name: format!("vm-{h}-{v}"),
                    networks: vec![if v % 2 == 0 { "net-a" } else { "net-b" }.into()],
                    plug: if v % 3 == 0 { Plug::Hybrid } else { Plug::Ovs },
                })
                .collect(),
        })
        .collect();
    Topology {
        name: "bssh".into(),
        environment: "bench-ssh".into(),
        fabric: "10.251.9.0/24"
            .parse()
            .map_err(anyhow::Error::msg)
            .expect("fabric"),
        networks,
        hosts,
    }
}

/// One sshd per lab host, inside its namespace, and a client key they all accept.
struct SshFleet {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

impl SshFleet {
    fn start(topology: &Topology) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = |name: &str| dir.path().join(name);
        std::fs::create_dir_all("/run/sshd")?;
        for key in ["host_key", "client_key"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path(key))
                .status()
                .context("ssh-keygen (openssh-client)")?;
            ensure!(status.success(), "ssh-keygen failed");
        }
        std::fs::copy(path("client_key.pub"), path("authorized_keys"))?;
        // The sessions run as root with /bin/sh and an empty home: this machine's root
        // `.bashrc` (pyenv) costs ~200 ms per session, which a compute host's shell does not,
        // and would inflate the baseline. The changed passwd is bind-mounted in a mount
        // namespace of the sshds only.
        std::fs::create_dir_all(path("home"))?;
        let passwd: String = std::fs::read_to_string("/etc/passwd")?
            .lines()
            .map(|line| {
                if line.starts_with("root:") {
                    format!("root:x:0:0:root:{}:/bin/sh\n", path("home").display())
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::write(path("passwd"), passwd)?;
        let mut daemons = Vec::new();
        for (index, host) in topology.hosts.iter().enumerate() {
            let config = path(&format!("sshd-{}.conf", host.name));
            std::fs::write(
                &config,
                format!(
                    "ListenAddress {ip}\nPort 22\nHostKey {key}\nPidFile {dir}/sshd-{name}.pid\n\
                     AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
                     PasswordAuthentication no\nUsePAM no\nStrictModes no\nMaxSessions 100\n",
                    ip = topology.fabric.host_ip(index),
                    key = path("host_key").display(),
                    dir = dir.path().display(),
                    name = host.name,
                ),
            )?;
            let child = Command::new("unshare")
                .args(["-m", "sh", "-c"])
                .arg(format!(
                    "mount --bind {passwd} /etc/passwd && exec ip netns exec {ns} /usr/sbin/sshd -D -f {config}",
                    passwd = path("passwd").display(),
                    ns = topology.host_netns(&host.name),
                    config = config.display(),
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("sshd (openssh-server)")?;
            daemons.push(child);
        }
        let fleet = SshFleet { dir, daemons };
        for index in 0..topology.hosts.len() {
            let ip = topology.fabric.host_ip(index);
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect((ip, 22)).is_err() {
                ensure!(Instant::now() < deadline, "sshd on {ip} did not open");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(fleet)
    }

    /// Runs a command on a host over SSH, through the host's shared connection (opened by
    /// the first command, as the original cached one connection per host).
    fn run(&self, ip: &str, command: &str) -> anyhow::Result<String> {
        let output = Command::new("ssh")
            .arg("-i")
            .arg(self.dir.path().join("client_key"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ControlMaster=auto",
                "-o",
                "ControlPersist=120",
                "-o",
            ])
            .arg(format!("ControlPath={}/cm-%h", self.dir.path().display()))
            .arg(format!("root@{ip}"))
            .arg(command)
            .output()?;
        ensure!(
            output.status.success(),
            "ssh {ip} {command}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Closes every shared connection, so that the next scan pays the SSH handshakes again.
    fn disconnect(&self, topology: &Topology) {
        for index in 0..topology.hosts.len() {
            let _ = Command::new("ssh")
                .args(["-o", "LogLevel=QUIET", "-O", "exit", "-o"])
                .arg(format!("ControlPath={}/cm-%h", self.dir.path().display()))
                .arg(format!("root@{}", topology.fabric.host_ip(index)))
                .output();
        }
    }
}

impl Drop for SshFleet {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The original's scan of one OVS host: every command of reference §4.1–4.2, in its order,
/// the per-object ones once per object it found. Returns how many commands ran.
fn scan_host_over_ssh(fleet: &SshFleet, lab: &Lab, index: usize) -> anyhow::Result<usize> {
    let topology = lab.topology();
    let host = &topology.hosts[index];
    let ip = topology.fabric.host_ip(index).to_string();
    let host_dir = lab.state_dir().join("hosts").join(&host.name);
    let ovs = host_dir.join("ovs");
    let mut commands: Vec<String> = vec![
        "cat /etc/os-release && echo \"ARCHITECURE=`arch`\"".into(),
        "ls -l /sys/class/net | grep ^l | grep -v \"/virtual/\" || true".into(),
    ];
    for nic in ["eth0", "eth1"] {
        commands.push(format!("ip address show {nic}"));
        commands.push(format!("ethtool {nic} || true"));
    }
    commands.push("ls -1 /proc/net/bonding/ 2>&1 || true".into());
    commands.push("ip netns list".into());
    for local in topology.service_namespaces(host) {
        commands.push(format!(
            "ip netns exec {} ip address show",
            topology.service_netns(&host.name, &local)
        ));
    }
    let libvirt = host_dir.join("libvirt");
    commands.push(format!("ls -1 {}", libvirt.display()));
    for vm in &host.vms {
        commands.push(format!("cat {}/{}.xml", libvirt.display(), vm.name));
    }
    commands.push(format!(
        "ovs-appctl -t {}/ovs-vswitchd.ctl dpctl/show",
        ovs.display()
    ));
    commands.push(format!(
        "ovs-vsctl --db=unix:{}/db.sock show",
        ovs.display()
    ));
    commands.push("ip address show".into());
    commands.push("brctl show".into());
    for command in &commands {
        fleet.run(&ip, command)?;
    }
    Ok(commands.len())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn full_resync(client: &ApiClient, env: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let (code, scan) = client
        .send(
            Method::POST,
            "/api/v1/scans",
            &[],
            Some(&json!({"environment": env, "kind": "full"})),
        )
        .await?;
    ensure!(code == StatusCode::ACCEPTED, "scan request: {scan}");
    let id = scan["id"].as_str().unwrap_or_default().to_owned();
    loop {
        let scan = client.get(&format!("/api/v1/scans/{id}"), &[]).await?;
        match scan["status"].as_str() {
            Some("completed") => return Ok(start.elapsed()),
            Some("pending" | "running") => tokio::time::sleep(Duration::from_millis(2)).await,
            _ => anyhow::bail!("scan did not complete: {scan}"),
        }
    }
}

/// Boots a VM and waits until the API shows its instance linked to its vNIC: the time from
/// the last step of the boot (the domain XML written) to visibility.
async fn change_latency(
    lab: &mut Lab,
    client: &ApiClient,
    env: &str,
    host: &str,
    name: &str,
) -> anyhow::Result<Duration> {
    lab.add_vm(
        host,
        Vm {
            name: name.into(),
            networks: vec!["net-a".into()],
            plug: Plug::Ovs,
        },
    )?;
    let start = Instant::now();
    let instance = format!("instance:{}", lab.topology().instance_uuid(name));
    loop {
        let links = client
            .get(
                "/api/v1/links",
                &[
                    ("env_name", env),
                    ("source_id", &instance),
                    ("link_type", "instance-vnic"),
                ],
            )
            .await?;
        if links["links"].as_array().is_some_and(|l| !l.is_empty()) {
            return Ok(start.elapsed());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "{name} never showed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn summary(label: &str, samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let (p50, max) = (percentile(samples, 0.5), percentile(samples, 1.0));
    println!(
        "{label}: p50 {:.1} ms, min {:.1} ms, max {:.1} ms ({} runs)",
        millis(p50),
        millis(samples[0]),
        millis(max),
        samples.len()
    );
    (p50, max)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let hosts = env_number("CALIPSO_BENCH_LAB_HOSTS", 4);
    let vms = env_number("CALIPSO_BENCH_LAB_VMS", 6);
    let rounds = env_number("CALIPSO_BENCH_ROUNDS", 5).max(1);
    let topology = topology(hosts, vms);
    Lab::sweep(&topology.name)?;
    let state = tempfile::tempdir()?;
    let state_dir: PathBuf = state.path().join("lab");
    let options = LabOptions {
        state_dir: state_dir.clone(),
        agent_bin: calipso_tests::workspace_binary("calipso-agent", "calipso-agent", true)?,
        aggregator_bin: calipso_tests::workspace_binary(
            "calipso-aggregator",
            "calipso-aggregator",
            true,
        )?,
        lab_bin: calipso_tests::workspace_binary("calipso-tests", "calipso-lab", true)?,
        api_listen: "127.0.0.1:0".parse()?,
    };
    let result = run(topology, &options, rounds).await;
    if let Err(error) = Lab::down(&state_dir) {
        eprintln!("lab down: {error:#}");
    }
    result
}

async fn run(topology: Topology, options: &LabOptions, rounds: usize) -> anyhow::Result<()> {
    let mut lab = Lab::up(topology, options)?;
    let mut client = ApiClient::new(&lab.api_url())?;
    client.login("admin", lab.admin_password()).await?;
    let env = lab.topology().environment.clone();
    let hosts = lab.topology().hosts.len();
    wait_for_objects(&client, &env, hosts).await?;
    let fleet = SshFleet::start(lab.topology())?;
    println!(
        "lab: {hosts} OVS hosts, {} VMs each, 2 DHCP namespaces on node-0",
        lab.topology().hosts[0].vms.len()
    );

    let (mut cold, mut warm, mut one_host) = (Vec::new(), Vec::new(), Vec::new());
    let mut commands = 0;
    for _ in 0..rounds {
        fleet.disconnect(lab.topology());
        let start = Instant::now();
        commands = 0;
        for index in 0..hosts {
            commands += scan_host_over_ssh(&fleet, &lab, index)?;
        }
        cold.push(start.elapsed());
        let start = Instant::now();
        for index in 0..hosts {
            let host_start = Instant::now();
            scan_host_over_ssh(&fleet, &lab, index)?;
            one_host.push(host_start.elapsed());
        }
        warm.push(start.elapsed());
    }
    println!("SSH baseline: {commands} commands per scan of the {hosts} hosts");
    let (cold_p50, _) = summary("SSH scan, new connections", &mut cold);
    let (warm_p50, _) = summary("SSH scan, connections kept", &mut warm);
    let (host_p50, _) = summary("SSH scan of one host, connection kept", &mut one_host);

    let mut resync = Vec::new();
    for _ in 0..rounds {
        resync.push(full_resync(&client, &env).await?);
    }
    let (resync_p50, _) = summary("agents' full resync (all hosts, stored)", &mut resync);

    let mut change = Vec::new();
    for round in 0..rounds * 4 {
        let host = format!("node-{}", round % hosts);
        let name = format!("latency-{round}");
        change.push(change_latency(&mut lab, &client, &env, &host, &name).await?);
        lab.remove_vm(&name)?;
    }
    let (change_p50, change_max) = summary("agent: VM booted → linked in the API", &mut change);

    println!(
        "ratios (p50): full scan SSH/agents {:.1}x with new connections, {:.1}x with kept ones; \
         a change: SSH scan of its host alone {:.1}x the agent's latency (the original saw it only \
         at its next scan: add up to one scan interval), agent max {:.1} ms",
        cold_p50.as_secs_f64() / resync_p50.as_secs_f64(),
        warm_p50.as_secs_f64() / resync_p50.as_secs_f64(),
        host_p50.as_secs_f64() / change_p50.as_secs_f64(),
        millis(change_max),
    );
    Ok(())
}

/// Waits until every host's agent has reported (its host object is in the API).
async fn wait_for_objects(client: &ApiClient, env: &str, hosts: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let found = client
            .get_all(
                "/api/v1/inventory",
                "objects",
                &[("env_name", env), ("type", "host")],
            )
            .await?;
        if found.len() == hosts {
            return Ok(());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "agents did not report"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
