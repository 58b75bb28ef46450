//! Building the lab's hosts with iproute2 and ovs-vsctl: the fabric, each host's switch
//! (Open vSwitch or Linux bridges), its Neutron services and its VMs.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};

use super::topology::{Plug, Switch, Topology, Vm, cidr_host};
use crate::netlab::run;

/// The host end of the fabric (tunnel traffic, the agent's uplink) and, on OVS hosts, the
/// provider NIC plugged into br-ex. Both are veths the agent is told to report as NICs.
pub fn physical_interfaces(switch: Switch) -> Vec<&'static str> {
    match switch {
        Switch::Ovs => vec!["eth0", "eth1"],
        Switch::Lxb => vec!["eth0"],
    }
}

fn bridge_name(topology: &Topology) -> String {
    format!("cl{}", topology.name)
}

/// Runs a script in the root namespace (`netns` None) or in a namespace.
fn sh(netns: Option<&str>, script: &str) -> anyhow::Result<String> {
    match netns {
        None => run("sh", &["-ec", script]),
        Some(ns) => run("ip", &["netns", "exec", ns, "sh", "-ec", script]),
    }
}

/// ovs-vsctl against a host's database; waits for ovs-vswitchd to apply the change unless
/// `no_wait` (before vswitchd runs).
fn vsctl(host_dir: &Path, no_wait: bool, args: &[&str]) -> anyhow::Result<String> {
    let db = format!("--db=unix:{}", host_dir.join("ovs/db.sock").display());
    let mut all = vec![db.as_str(), "--timeout=20"];
    if no_wait {
        all.push("--no-wait");
    }
    all.extend_from_slice(args);
    run("ovs-vsctl", &all)
}

/// The fabric bridge (the data network: tunnels) and the management bridge (holding the
/// address the agents reach the aggregator on) in the root namespace.
pub fn fabric_up(topology: &Topology) -> anyhow::Result<()> {
    let bridge = bridge_name(topology);
    sh(
        None,
        &format!(
            "ip link add {bridge} type bridge\n\
             ip addr add {}/24 dev {bridge}\n\
             ip link set {bridge} up\n\
             ip link add {bridge}m type bridge\n\
             ip addr add {}/24 dev {bridge}m\n\
             ip link set {bridge}m up",
            topology.fabric.gateway(),
            topology.fabric.management_gateway()
        ),
    )?;
    Ok(())
}

/// Unmounts the service namespaces' bind mounts in a lab's state directory.
pub fn unmount_service_namespaces(state_dir: &Path) {
    let hosts = state_dir.join("hosts");
    for host in std::fs::read_dir(&hosts).into_iter().flatten().flatten() {
        for mount in std::fs::read_dir(host.path().join("netns"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = mount.path();
            let _ = run("umount", &["-l", &path.to_string_lossy()]);
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Removes a lab's namespaces, killing what still runs inside them (agents, Open vSwitch),
/// and its devices in the root namespace: everything named after the lab.
pub fn sweep(lab_name: &str) -> anyhow::Result<()> {
    let prefix = format!("cl-{lab_name}-");
    let namespaces = super::namespaces_with_prefix(&prefix)?;
    for ns in &namespaces {
        for pid in run("ip", &["netns", "pids", ns])?.split_whitespace() {
            let _ = run("kill", &["-KILL", pid]);
        }
    }
    for ns in &namespaces {
        run("ip", &["netns", "del", ns])?;
    }
    let devices = run("ip", &["-o", "link", "show"])?;
    let root_prefix = format!("cl{lab_name}");
    for line in devices.lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if name == root_prefix
            || (name.starts_with(&root_prefix)
                && name[root_prefix.len()..].starts_with(['h', 'p', 'm']))
        {
            // A veth goes with its peer's namespace, which the kernel removes asynchronously.
            if let Err(error) = run("ip", &["link", "del", name])
                && !error.to_string().contains("Cannot find device")
            {
                return Err(error);
            }
        }
    }
    Ok(())
}

/// Sets the root ends of a host's fabric and management veths down or up: the host is cut off
/// every network, or back.
pub fn set_fabric_link(topology: &Topology, index: usize, up: bool) -> anyhow::Result<()> {
    let bridge = bridge_name(topology);
    for device in [format!("{bridge}h{index}"), format!("{bridge}m{index}")] {
        run(
            "ip",
            &["link", "set", &device, if up { "up" } else { "down" }],
        )?;
    }
    Ok(())
}

/// Sets a device in a host's namespace down or up, as its operator would.
pub fn set_host_device(
    topology: &Topology,
    index: usize,
    device: &str,
    up: bool,
) -> anyhow::Result<()> {
    let ns = topology.host_netns(&topology.hosts[index].name);
    run(
        "ip",
        &[
            "-n",
            &ns,
            "link",
            "set",
            device,
            if up { "up" } else { "down" },
        ],
    )?;
    Ok(())
}

/// The pid files of every host's OVS daemons, vswitchd before its database.
pub fn ovs_pid_files(state_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for host in std::fs::read_dir(state_dir.join("hosts"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for daemon in ["ovs-vswitchd", "ovsdb-server"] {
            let pid = host.path().join("ovs").join(format!("{daemon}.pid"));
            if pid.exists() {
                found.push(pid);
            }
        }
    }
    found.sort_by_key(|p| p.to_string_lossy().contains("ovsdb-server"));
    found
}

/// A host: its namespace, its fabric NIC and its switch, without services or VMs.
pub fn host_up(topology: &Topology, index: usize, host_dir: &Path) -> anyhow::Result<()> {
    let host = &topology.hosts[index];
    let ns = topology.host_netns(&host.name);
    for dir in ["netns", "libvirt", "ovs"] {
        std::fs::create_dir_all(host_dir.join(dir))?;
    }
    let bridge = bridge_name(topology);
    let ip = topology.fabric.host_ip(index);
    let mut script = format!(
        "ip netns add {ns}\n\
         ip -n {ns} link set lo up\n\
         ip link add {bridge}h{index} type veth peer name eth0 netns {ns}\n\
         ip link set {bridge}h{index} master {bridge} up\n\
         ip -n {ns} addr add {ip}/24 dev eth0\n\
         ip -n {ns} link set eth0 up\n\
         ip link add {bridge}m{index} type veth peer name mgmt0 netns {ns}\n\
         ip link set {bridge}m{index} master {bridge}m up\n\
         ip -n {ns} addr add {management}/24 dev mgmt0\n\
         ip -n {ns} link set mgmt0 up\n",
        management = topology.fabric.management_ip(index),
    );
    if host.switch == Switch::Ovs {
        let _ = writeln!(
            script,
            "ip link add {bridge}p{index} type veth peer name eth1 netns {ns}\n\
             ip link set {bridge}p{index} up\n\
             ip -n {ns} link set eth1 up"
        );
    }
    sh(None, &script)?;
    if host.switch == Switch::Ovs {
        ovs_up(topology, index, host_dir)?;
    }
    Ok(())
}

/// A daemon of Open vSwitch inside a host's namespace (so that sweeping the namespace stops
/// it), detached, with its files in the host's `ovs` directory.
fn ovs_daemon(netns: &str, ovs_dir: &Path, program: &str, args: &[String]) -> anyhow::Result<()> {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns, program]);
    let dir = ovs_dir.display();
    command
        .args(args)
        .arg(format!("--pidfile={dir}/{program}.pid"))
        .arg(format!("--unixctl={dir}/{program}.ctl"))
        .arg(format!("--log-file={dir}/{program}.log"))
        .args(["-vconsole:off", "--detach", "--no-chdir"])
        .env("OVS_RUNDIR", ovs_dir)
        .env("OVS_LOGDIR", ovs_dir)
        .env("OVS_DBDIR", ovs_dir);
    let status = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    ensure!(
        status.success(),
        "{program} did not start (see {dir}/{program}.log)"
    );
    Ok(())
}

/// Starts a host's ovsdb-server on its existing database (after [`kill_daemon`]).
pub fn start_ovsdb_server(
    topology: &Topology,
    index: usize,
    host_dir: &Path,
) -> anyhow::Result<()> {
    let ovs_dir = host_dir.join("ovs");
    ovs_daemon(
        &topology.host_netns(&topology.hosts[index].name),
        &ovs_dir,
        "ovsdb-server",
        &[
            ovs_dir.join("conf.db").display().to_string(),
            format!("--remote=punix:{}", ovs_dir.join("db.sock").display()),
        ],
    )
}

/// Kills (SIGKILL) the process a pid file names, as a crash would, and removes the file.
pub fn kill_daemon(pid_file: &Path) -> anyhow::Result<()> {
    let pid =
        std::fs::read_to_string(pid_file).with_context(|| format!("{}", pid_file.display()))?;
    run("kill", &["-KILL", pid.trim()])?;
    std::fs::remove_file(pid_file)?;
    Ok(())
}

/// br-int, br-tun (VXLAN to every other OVS host) and br-ex (the provider NIC), patched as
/// the Neutron OVS agent does.
fn ovs_up(topology: &Topology, index: usize, host_dir: &Path) -> anyhow::Result<()> {
    let host = &topology.hosts[index];
    let ovs_dir = host_dir.join("ovs");
    let db = ovs_dir.join("conf.db");
    run(
        "ovsdb-tool",
        &[
            "create",
            &db.to_string_lossy(),
            "/usr/share/openvswitch/vswitch.ovsschema",
        ],
    )?;
    let netns = topology.host_netns(&host.name);
    ovs_daemon(
        &netns,
        &ovs_dir,
        "ovsdb-server",
        &[
            db.display().to_string(),
            format!("--remote=punix:{}", ovs_dir.join("db.sock").display()),
        ],
    )?;
    vsctl(host_dir, true, &["init"])?;
    vsctl(
        host_dir,
        true,
        &[
            "set",
            "open_vswitch",
            ".",
            &format!("external_ids:system-id={}", host.name),
            &format!("external_ids:hostname={}", host.name),
        ],
    )?;
    ovs_daemon(
        &netns,
        &ovs_dir,
        "ovs-vswitchd",
        &[format!("unix:{}", ovs_dir.join("db.sock").display())],
    )?;
    let netdev = |bridge: &str, secure: bool| {
        let mut args = vec![
            "--may-exist".to_owned(),
            "add-br".into(),
            bridge.into(),
            "--".into(),
            "set".into(),
            "bridge".into(),
            bridge.into(),
            "datapath_type=netdev".into(),
        ];
        if secure {
            args.push("fail_mode=secure".into());
        }
        args
    };
    let patch = |bridge: &str, port: &str, peer: &str| -> Vec<String> {
        [
            "add-port",
            bridge,
            port,
            "--",
            "set",
            "interface",
            port,
            "type=patch",
            &format!("options:peer={peer}"),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let mut commands = vec![
        netdev("br-int", true),
        netdev("br-tun", true),
        netdev("br-ex", false),
        patch("br-int", "patch-tun", "patch-int"),
        patch("br-tun", "patch-int", "patch-tun"),
        patch("br-int", "int-br-ex", "phy-br-ex"),
        patch("br-ex", "phy-br-ex", "int-br-ex"),
        vec!["add-port".into(), "br-ex".into(), "eth1".into()],
    ];
    let local = topology.fabric.host_ip(index);
    for (other, peer) in topology.hosts.iter().enumerate() {
        if other == index || peer.switch != Switch::Ovs {
            continue;
        }
        let remote = topology.fabric.host_ip(other);
        let port = format!("vxlan-{:08x}", u32::from(remote));
        commands.push(
            [
                "add-port",
                "br-tun",
                &port,
                "--",
                "set",
                "interface",
                &port,
                "type=vxlan",
                &format!("options:remote_ip={remote}"),
                &format!("options:local_ip={local}"),
                "options:key=flow",
                "options:dst_port=4789",
            ]
            .map(str::to_owned)
            .to_vec(),
        );
    }
    // One transaction: ovs-vsctl joins commands with `--`.
    let mut joined: Vec<String> = Vec::new();
    for command in commands {
        if !joined.is_empty() {
            joined.push("--".into());
        }
        joined.extend(command);
    }
    let args: Vec<&str> = joined.iter().map(String::as_str).collect();
    vsctl(host_dir, false, &args)?;
    Ok(())
}

/// The networks a Linux bridge host carries: those its VMs, DHCP and routers have ports on.
pub(super) fn lxb_networks(topology: &Topology, index: usize) -> BTreeSet<String> {
    let host = &topology.hosts[index];
    if host.switch != Switch::Lxb {
        return BTreeSet::new();
    }
    host.vms
        .iter()
        .flat_map(|vm| vm.networks.iter())
        .chain(host.dhcp.iter())
        .chain(host.routers.iter().flat_map(|r| r.networks.iter()))
        .cloned()
        .collect()
}

pub(super) fn lxb_bridge(topology: &Topology, network: &str) -> String {
    format!("brq{}", &topology.network_id(network)[..11])
}

fn vni(topology: &Topology, network: &str) -> anyhow::Result<u32> {
    Ok(topology
        .network(network)
        .with_context(|| format!("unknown network `{network}`"))?
        .vni)
}

/// The VXLAN forwarding entries of every Linux bridge host: (host, network, remote host's
/// address), one per other host carrying the network, as Neutron's l2population installs them.
fn lxb_fdb(topology: &Topology) -> BTreeSet<(usize, String, std::net::Ipv4Addr)> {
    let carried: Vec<BTreeSet<String>> = (0..topology.hosts.len())
        .map(|i| lxb_networks(topology, i))
        .collect();
    let mut entries = BTreeSet::new();
    for (i, networks) in carried.iter().enumerate() {
        for network in networks {
            for (j, others) in carried.iter().enumerate() {
                if i != j && others.contains(network) {
                    entries.insert((i, network.clone(), topology.fabric.host_ip(j)));
                }
            }
        }
    }
    entries
}

/// Brings the Linux bridge hosts' per-network bridges, VXLAN devices and forwarding entries
/// from what `before` needed to what `after` needs. Bridges are added first and removed last,
/// so call this before plugging new ports and after unplugging old ones.
pub fn sync_lxb_networks(before: Option<&Topology>, after: &Topology) -> anyhow::Result<()> {
    let empty = BTreeSet::new;
    for (index, host) in after.hosts.iter().enumerate() {
        let ns = after.host_netns(&host.name);
        let old = before.map_or_else(empty, |b| lxb_networks(b, index));
        let new = lxb_networks(after, index);
        let mut script = String::new();
        for network in new.difference(&old) {
            let bridge = lxb_bridge(after, network);
            let vni = vni(after, network)?;
            let _ = writeln!(
                script,
                "ip link add {bridge} type bridge\n\
                 ip link set {bridge} up\n\
                 ip link add vxlan-{vni} type vxlan id {vni} local {ip} dev eth0 dstport 4789 nolearning\n\
                 ip link set vxlan-{vni} master {bridge} up",
                ip = after.fabric.host_ip(index)
            );
        }
        for network in old.difference(&new) {
            let vni = vni(after, network)?;
            let _ = writeln!(
                script,
                "ip link del vxlan-{vni}\nip link del {}",
                lxb_bridge(after, network)
            );
        }
        if !script.is_empty() {
            sh(Some(&ns), &script)?;
        }
    }
    let old_fdb = before.map(lxb_fdb).unwrap_or_default();
    let new_fdb = lxb_fdb(after);
    for (verb, entries) in [
        ("append", new_fdb.difference(&old_fdb)),
        ("del", old_fdb.difference(&new_fdb)),
    ] {
        for (index, network, remote) in entries {
            let ns = after.host_netns(&after.hosts[*index].name);
            let vni = vni(after, network)?;
            let device_gone = verb == "del" && !lxb_networks(after, *index).contains(network);
            if !device_gone {
                sh(
                    Some(&ns),
                    &format!("bridge fdb {verb} 00:00:00:00:00:00 dev vxlan-{vni} dst {remote}"),
                )?;
            }
        }
    }
    Ok(())
}

/// A service namespace (`qdhcp-…`, `qrouter-…`) of a host: a namespace of its own, visible
/// under its Neutron name in the host's netns directory. Returns its global name.
fn service_netns(
    topology: &Topology,
    index: usize,
    host_dir: &Path,
    local: &str,
) -> anyhow::Result<String> {
    let global = topology.service_netns(&topology.hosts[index].name, local);
    let file = host_dir.join("netns").join(local);
    sh(
        None,
        &format!(
            "ip netns add {global}\n\
             ip -n {global} link set lo up\n\
             touch {file}\n\
             mount --bind /run/netns/{global} {file}",
            file = file.display()
        ),
    )?;
    Ok(global)
}

/// The local VLAN of a network on an OVS host's br-int.
fn ovs_tag(topology: &Topology, network: &str) -> usize {
    topology
        .networks
        .iter()
        .position(|n| n.name == network)
        .unwrap_or_default()
        + 1
}

/// A Neutron port inside a service namespace, with its address: an OVS internal port moved
/// into the namespace, or on a Linux bridge host a veth whose other end (`tap…`) is on the
/// network's bridge.
#[allow(clippy::too_many_arguments)]
fn service_port(
    topology: &Topology,
    index: usize,
    host_dir: &Path,
    netns: &str,
    owner: &str,
    network: &str,
    device_prefix: &str,
    address: u32,
) -> anyhow::Result<()> {
    let host = &topology.hosts[index];
    let host_ns = topology.host_netns(&host.name);
    let port = topology.port(owner, network);
    let cidr = &topology
        .network(network)
        .with_context(|| format!("unknown network `{network}`"))?
        .cidr;
    let address = cidr_host(cidr, address)?;
    match host.switch {
        Switch::Ovs => {
            let device = port.device(device_prefix);
            vsctl(
                host_dir,
                false,
                &[
                    "add-port",
                    "br-int",
                    &device,
                    &format!("tag={}", ovs_tag(topology, network)),
                    "--",
                    "set",
                    "interface",
                    &device,
                    "type=internal",
                    &format!("external_ids:iface-id={}", port.id),
                    &format!("external_ids:attached-mac={}", port.mac),
                    "external_ids:iface-status=active",
                ],
            )?;
            sh(
                Some(&host_ns),
                &format!(
                    "ip link set {device} netns {netns}\n\
                     ip -n {netns} link set {device} address {mac}\n\
                     ip -n {netns} addr add {address} dev {device}\n\
                     ip -n {netns} link set {device} up",
                    mac = port.mac
                ),
            )?;
        }
        Switch::Lxb => {
            let inside = port.device(device_prefix);
            let outside = port.device("tap");
            sh(
                Some(&host_ns),
                &format!(
                    "ip link add {outside} type veth peer name {inside} netns {netns}\n\
                     ip link set {outside} master {bridge} up\n\
                     ip -n {netns} link set {inside} address {mac}\n\
                     ip -n {netns} addr add {address} dev {inside}\n\
                     ip -n {netns} link set {inside} up",
                    bridge = lxb_bridge(topology, network),
                    mac = port.mac
                ),
            )?;
        }
    }
    Ok(())
}

/// The device name inside a DHCP namespace: Neutron's `tap…` for OVS internal ports, `ns-…`
/// for the veth of a Linux bridge host.
pub fn dhcp_device_prefix(switch: Switch) -> &'static str {
    match switch {
        Switch::Ovs => "tap",
        Switch::Lxb => "ns-",
    }
}

/// The owner name of a host's DHCP ports and of a router's ports (for port ids).
pub fn dhcp_owner(host: &str) -> String {
    format!("dhcp@{host}")
}

pub fn router_owner(host: &str, router: &str) -> String {
    format!("router@{host}/{router}")
}

/// dnsmasq in a network's DHCP namespace, as Neutron's DHCP agent runs it (static leases
/// only, no DNS): the process the vservice's health check looks for. It lives until `down`
/// kills everything in the lab's namespaces, or a test kills it (its pid file is
/// `dnsmasq-<network>.pid` in the host's directory).
pub fn start_dhcp_server(
    topology: &Topology,
    network: &str,
    netns: &str,
    host_dir: &Path,
) -> anyhow::Result<()> {
    let cidr = &topology
        .network(network)
        .with_context(|| format!("unknown network `{network}`"))?
        .cidr;
    let subnet = cidr.split('/').next().unwrap_or(cidr);
    let pid_file = host_dir.join(format!("dnsmasq-{network}.pid"));
    let started = Command::new("ip")
        .args(["netns", "exec", netns, "dnsmasq"])
        .args([
            "--conf-file=/dev/null",
            "--no-hosts",
            "--no-resolv",
            "--port=0",
            "--bind-dynamic",
            "--except-interface=lo",
            "--leasefile-ro",
        ])
        .arg(format!("--dhcp-range={subnet},static"))
        .arg(format!("--pid-file={}", pid_file.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .context("cannot start dnsmasq (apt-get install dnsmasq-base)")?;
    ensure!(
        started.status.success(),
        "dnsmasq in {netns}: {}",
        String::from_utf8_lossy(&started.stderr).trim()
    );
    Ok(())
}

/// A host's qdhcp and qrouter namespaces with their ports.
pub fn services_up(topology: &Topology, index: usize, host_dir: &Path) -> anyhow::Result<()> {
    let host = &topology.hosts[index];
    for network in &host.dhcp {
        let local = topology.dhcp_netns(network);
        let netns = service_netns(topology, index, host_dir, &local)?;
        service_port(
            topology,
            index,
            host_dir,
            &netns,
            &dhcp_owner(&host.name),
            network,
            dhcp_device_prefix(host.switch),
            2,
        )?;
        start_dhcp_server(topology, network, &netns, host_dir)?;
    }
    for router in &host.routers {
        let local = topology.router_netns(&host.name, &router.name);
        let netns = service_netns(topology, index, host_dir, &local)?;
        for network in &router.networks {
            service_port(
                topology,
                index,
                host_dir,
                &netns,
                &router_owner(&host.name, &router.name),
                network,
                "qr-",
                1,
            )?;
        }
    }
    Ok(())
}

/// The libvirt domain XML Nova writes for a VM (the parts the agent reads, in Nova's shape:
/// fixtures/libvirt/instance-00000026.xml).
fn domain_xml(topology: &Topology, host: &str, vm: &Vm, switch: Switch, pid: u32) -> String {
    let uuid = topology.instance_uuid(&vm.name);
    let mut interfaces = String::new();
    for network in &vm.networks {
        let port = topology.port(&vm.name, network);
        let tap = port.device("tap");
        let (bridge, virtualport) = match (switch, vm.plug) {
            (Switch::Lxb, _) => (lxb_bridge(topology, network), String::new()),
            (Switch::Ovs, Plug::Hybrid) => (port.device("qbr"), String::new()),
            (Switch::Ovs, Plug::Ovs) => (
                "br-int".to_owned(),
                format!(
                    "\n      <virtualport type='openvswitch'>\n        <parameters interfaceid='{}'/>\n      </virtualport>",
                    port.id
                ),
            ),
        };
        let _ = write!(
            interfaces,
            "\n    <interface type='bridge'>\n      <mac address='{mac}'/>\n      <source bridge='{bridge}'/>{virtualport}\n      <target dev='{tap}'/>\n      <model type='virtio'/>\n    </interface>",
            mac = port.mac
        );
    }
    format!(
        "<domstatus state='running' reason='booted' pid='{pid}'>\n\
<domain type='qemu'>\n  <name>instance-{short}</name>\n  <uuid>{uuid}</uuid>\n  <metadata>\n    \
<nova:instance xmlns:nova=\"http://openstack.org/xmlns/libvirt/nova/1.0\">\n      \
<nova:name>{name}</nova:name>\n      <nova:flavor name=\"m1.micro\"/>\n      <nova:owner>\n        \
<nova:user uuid=\"13baa553aae44adca6615e711fd2f6d9\">admin</nova:user>\n        \
<nova:project uuid=\"{project}\">admin</nova:project>\n      </nova:owner>\n    \
</nova:instance>\n  </metadata>\n  <devices>{interfaces}\n  </devices>\n</domain>\n\
<!-- calipso-lab host {host} -->\n</domstatus>\n",
        short = &uuid[..8],
        name = vm.name,
        project = super::cloud::project_id(topology),
    )
}

/// A VM's devices and ports, then its domain XML (Nova plugs before it starts the domain).
pub fn vm_up(topology: &Topology, index: usize, vm: &Vm, host_dir: &Path) -> anyhow::Result<()> {
    let host = &topology.hosts[index];
    let ns = topology.host_netns(&host.name);
    let uuid = topology.instance_uuid(&vm.name);
    for network in &vm.networks {
        let port = topology.port(&vm.name, network);
        let tap = port.device("tap");
        // libvirt gives the host side of a tap the VM's MAC with the first byte fe.
        let tap_mac = format!("fe{}", &port.mac[2..]);
        let mut script =
            format!("ip tuntap add dev {tap} mode tap\nip link set {tap} address {tap_mac}\n");
        match (host.switch, vm.plug) {
            (Switch::Lxb, _) => {
                let _ = writeln!(
                    script,
                    "ip link set {tap} master {} up",
                    lxb_bridge(topology, network)
                );
                sh(Some(&ns), &script)?;
            }
            (Switch::Ovs, plug) => {
                let ovs_port = match plug {
                    Plug::Ovs => {
                        let _ = writeln!(script, "ip link set {tap} up");
                        tap
                    }
                    Plug::Hybrid => {
                        let (qbr, qvb, qvo) =
                            (port.device("qbr"), port.device("qvb"), port.device("qvo"));
                        let _ = writeln!(
                            script,
                            "ip link add {qbr} type bridge\n\
                             ip link set {qbr} up\n\
                             ip link set {tap} master {qbr} up\n\
                             ip link add {qvb} type veth peer name {qvo}\n\
                             ip link set {qvb} master {qbr} up\n\
                             ip link set {qvo} up"
                        );
                        qvo
                    }
                };
                sh(Some(&ns), &script)?;
                vsctl(
                    host_dir,
                    false,
                    &[
                        "add-port",
                        "br-int",
                        &ovs_port,
                        &format!("tag={}", ovs_tag(topology, network)),
                        "--",
                        "set",
                        "interface",
                        &ovs_port,
                        &format!("external_ids:iface-id={}", port.id),
                        &format!("external_ids:attached-mac={}", port.mac),
                        &format!("external_ids:vm-uuid={uuid}"),
                        "external_ids:iface-status=active",
                    ],
                )?;
            }
        }
    }
    let taps: Vec<String> = vm
        .networks
        .iter()
        .map(|network| topology.port(&vm.name, network).device("tap"))
        .collect();
    let pid = start_vm_process(&ns, &taps)?;
    let libvirt = host_dir.join("libvirt");
    std::fs::write(libvirt.join(format!("{}.pid", vm.name)), pid.to_string())?;
    let staged = libvirt.join(format!(".{}.xml.tmp", vm.name));
    std::fs::write(
        &staged,
        domain_xml(topology, &host.name, vm, host.switch, pid),
    )?;
    std::fs::rename(&staged, libvirt.join(format!("{}.xml", vm.name)))?;
    Ok(())
}

/// What stands for a VM's qemu: a process in the host's namespace that holds its taps open,
/// as qemu does, so that they have a carrier (a tap nobody holds is down). It runs until it is
/// killed: by `vm_down`, or with everything else in the namespace by `down`.
const VM_PROCESS: &str = r#"
import fcntl, os, signal, struct, sys
TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000
held = []
for name in sys.argv[1:]:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    held.append(fd)
print("holding", flush=True)
signal.pause()
"#;

fn start_vm_process(netns: &str, taps: &[String]) -> anyhow::Result<u32> {
    use std::io::BufRead;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-c", VM_PROCESS])
        .args(taps)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start a VM's process (python3)")?;
    let pid = child.id();
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        std::io::BufReader::new(stdout).read_line(&mut line)?;
    }
    ensure!(
        line.trim() == "holding",
        "the VM's process could not open its taps {taps:?}"
    );
    Ok(pid)
}

/// A VM's domain XML goes first (the domain stops), then its ports and devices.
pub fn vm_down(topology: &Topology, index: usize, vm: &Vm, host_dir: &Path) -> anyhow::Result<()> {
    let host = &topology.hosts[index];
    let ns = topology.host_netns(&host.name);
    let xml = host_dir.join("libvirt").join(format!("{}.xml", vm.name));
    std::fs::remove_file(&xml).with_context(|| format!("cannot remove {}", xml.display()))?;
    let pid_file = host_dir.join("libvirt").join(format!("{}.pid", vm.name));
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = run("kill", &["-KILL", pid.trim()]);
        let _ = std::fs::remove_file(&pid_file);
    }
    for network in &vm.networks {
        let port = topology.port(&vm.name, network);
        let tap = port.device("tap");
        match (host.switch, vm.plug) {
            (Switch::Lxb, _) => {
                sh(Some(&ns), &format!("ip link del {tap}"))?;
            }
            (Switch::Ovs, Plug::Ovs) => {
                vsctl(host_dir, false, &["del-port", "br-int", &tap])?;
                sh(Some(&ns), &format!("ip link del {tap}"))?;
            }
            (Switch::Ovs, Plug::Hybrid) => {
                let qvo = port.device("qvo");
                vsctl(host_dir, false, &["del-port", "br-int", &qvo])?;
                sh(
                    Some(&ns),
                    &format!(
                        "ip link del {qvo}\nip link del {tap}\nip link del {}",
                        port.device("qbr")
                    ),
                )?;
            }
        }
    }
    Ok(())
}
