//! Synthetic host models: what an agent on an Open vSwitch compute host of an OpenStack cloud
//! reports, generated at any size. Used by the tests (randomized change sequences), the
//! benchmarks (1 000 hosts × 500 objects) and simulated agents; the shapes and attribute names
//! are those the real collectors produce (see the agent's kernel, libvirt and OVS collectors).

use calipso_proto::{IpPrefix, LinkState, MacAddress, Object, ObjectId, ObjectType};

/// How a synthetic environment is laid out.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub hosts: usize,
    pub vms_per_host: usize,
    /// How many other hosts each host has VXLAN tunnels to (neighbours on a ring), as l2
    /// population would configure for hosts sharing networks.
    pub tunnel_peers: usize,
}

impl Layout {
    /// A layout whose hosts have about `objects_per_host` objects each.
    pub fn with_objects_per_host(hosts: usize, objects_per_host: usize) -> Self {
        Layout {
            hosts,
            vms_per_host: objects_per_host.saturating_sub(HOST_OBJECTS) / VM_OBJECTS,
            tunnel_peers: 16.min(hosts.saturating_sub(1)),
        }
    }
}

/// Objects per host besides its VMs: host, 3 NICs, vedge, otep, a DHCP namespace and its port.
pub const HOST_OBJECTS: usize = 8;
/// Objects per VM: instance, tap, qbr bridge, qvb and qvo veth ends.
pub const VM_OBJECTS: usize = 5;

pub fn host_name(index: usize) -> String {
    format!("compute-{index:04}")
}

/// The VXLAN endpoint address of synthetic host `index`.
pub fn tunnel_ip(index: usize) -> String {
    format!(
        "10.{}.{}.{}",
        16 + (index >> 16) % 16,
        (index >> 8) % 256,
        index % 256 + 1
    )
}

fn mac(host: usize, slot: usize) -> MacAddress {
    let [_, _, _, _, _, _, h1, h0] = (host as u64).to_be_bytes();
    let [_, _, _, _, _, _, s1, s0] = (slot as u64).to_be_bytes();
    MacAddress([0xfa, 0x16, h1, h0, s1, s0])
}

/// The Nova UUID of a synthetic VM.
pub fn vm_uuid(host: usize, vm: usize) -> String {
    format!("{host:08x}-0000-4000-8000-{vm:012x}")
}

/// A Neutron network id used by the synthetic VMs (a few networks shared by many hosts).
pub fn network_uuid(index: usize) -> String {
    format!("{index:08x}-1111-4000-8000-000000000000")
}

fn interface(
    env: &str,
    host: &str,
    object_type: ObjectType,
    name: &str,
    parent: (ObjectId, ObjectType),
) -> Object {
    let mut object = Object::new(
        ObjectId::host_local(object_type, host, name),
        object_type,
        name,
        env,
    )
    .with_host(host)
    .with_parent(parent.0, parent.1);
    object.attributes.link_state = Some(LinkState::Up);
    object.attributes.mtu = Some(1500);
    object
}

/// Everything an agent on host `index` reports.
pub fn host_objects(env: &str, index: usize, layout: &Layout) -> Vec<Object> {
    let host = host_name(index);
    let host_id = ObjectId::host(&host);
    let on_host = (host_id.clone(), ObjectType::Host);
    let mut objects =
        vec![Object::new(host_id.clone(), ObjectType::Host, host.as_str(), env).with_host(&host)];
    let nic = |name: &str, slot: usize, address: Option<String>| {
        let mut pnic = interface(env, &host, ObjectType::HostPnic, name, on_host.clone())
            .with_extra("kind", "physical");
        pnic.attributes.mac_address = Some(mac(index, slot));
        pnic.attributes.addresses = address
            .and_then(|a| a.parse::<IpPrefix>().ok())
            .into_iter()
            .collect();
        pnic
    };
    objects.push(nic(
        "eth0",
        0,
        Some(format!("192.168.{}.{}/16", index / 256, index % 256 + 1)),
    ));
    objects.push(nic("eth1", 1, Some(format!("{}/12", tunnel_ip(index)))));
    objects.push(nic("eth2", 2, None));
    let vedge_id = ObjectId::host_local(ObjectType::Vedge, &host, "ovs");
    objects.push(
        Object::new(
            vedge_id.clone(),
            ObjectType::Vedge,
            format!("{host}-OVS"),
            env,
        )
        .with_host(&host)
        .with_parent(host_id.clone(), ObjectType::Host)
        .with_extra("agent_type", "Open vSwitch")
        .with_extra("uplinks", vec!["eth2"]),
    );
    let peers: Vec<String> = (1..=layout.tunnel_peers)
        .map(|step| tunnel_ip((index + step) % layout.hosts.max(1)))
        .chain((1..=layout.tunnel_peers).map(|step| {
            tunnel_ip((index + layout.hosts - step % layout.hosts.max(1)) % layout.hosts.max(1))
        }))
        .filter(|ip| *ip != tunnel_ip(index))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let local = tunnel_ip(index);
    objects.push(
        Object::new(
            ObjectId::host_local(ObjectType::Otep, &host, &local),
            ObjectType::Otep,
            format!("{host}-otep-{local}"),
            env,
        )
        .with_host(&host)
        .with_parent(vedge_id.clone(), ObjectType::Vedge)
        .with_extra("vedge", vedge_id.as_str())
        .with_extra("overlay_type", "vxlan")
        .with_extra("ip_address", local.as_str())
        .with_extra("udp_port", 4789u32)
        .with_extra("remote_endpoints", peers),
    );
    let network = network_uuid(index % 8);
    let namespace = format!("qdhcp-{network}");
    let service_id = ObjectId::host_local(ObjectType::Vservice, &host, &namespace);
    objects.push(
        Object::new(
            service_id.clone(),
            ObjectType::Vservice,
            namespace.as_str(),
            env,
        )
        .with_host(&host)
        .with_parent(host_id.clone(), ObjectType::Host)
        .with_extra("service_type", "dhcp")
        .with_extra("network_id", network.as_str()),
    );
    let tap = format!("tap{}", &network[..11]);
    let mut dhcp_port = interface(
        env,
        &host,
        ObjectType::Vnic,
        &ObjectId::interface_key(Some(&namespace), &tap),
        (service_id, ObjectType::Vservice),
    )
    .with_extra("vnic_type", "vservice_vnic")
    .with_extra("vedge", vedge_id.as_str())
    .with_extra("tag", 1u32);
    dhcp_port.name = tap.into();
    dhcp_port.attributes.addresses = "10.0.0.2/24".parse::<IpPrefix>().into_iter().collect();
    objects.push(dhcp_port);
    for vm in 0..layout.vms_per_host {
        objects.extend(vm_objects(env, index, vm));
    }
    objects
}

/// What a VM adds to its host: the instance, its tap on a `qbr` bridge and the veth pair that
/// joins the bridge to the vswitch, as Neutron's hybrid plugging builds it.
pub fn vm_objects(env: &str, host_index: usize, vm: usize) -> Vec<Object> {
    let host = host_name(host_index);
    let host_id = ObjectId::host(&host);
    let on_host = (host_id.clone(), ObjectType::Host);
    let uuid = vm_uuid(host_index, vm);
    let port = format!("{:011x}", host_index * 100_000 + vm);
    let instance_id = ObjectId::global(ObjectType::Instance, &uuid);
    let vedge_id = ObjectId::host_local(ObjectType::Vedge, &host, "ovs");
    let name = |prefix: &str| format!("{prefix}{port}");
    let bridge_id = ObjectId::host_local(ObjectType::Vconnector, &host, &name("qbr"));
    let id = |prefix: &str| ObjectId::host_local(ObjectType::Vnic, &host, &name(prefix));
    let mut tap = interface(env, &host, ObjectType::Vnic, &name("tap"), on_host.clone())
        .with_extra("master", bridge_id.as_str())
        .with_extra("kind", "tun");
    tap.attributes.mac_address = Some(mac(host_index, 16 + vm));
    let instance = Object::new(
        instance_id.clone(),
        ObjectType::Instance,
        format!("vm-{vm}"),
        env,
    )
    .with_host(&host)
    .with_parent(host_id.clone(), ObjectType::Host)
    .with_extra("uuid", uuid.as_str())
    .with_extra(
        "local_name",
        format!("instance-{:08x}", host_index * 1000 + vm),
    )
    .with_extra(
        "interfaces",
        calipso_proto::AttrValue::List(vec![calipso_proto::AttrValue::Map(
            [
                (
                    "target_dev".to_owned(),
                    calipso_proto::AttrValue::from(name("tap")),
                ),
                (
                    "vnic".to_owned(),
                    calipso_proto::AttrValue::from(id("tap").as_str()),
                ),
            ]
            .into_iter()
            .collect(),
        )]),
    );
    let bridge = interface(
        env,
        &host,
        ObjectType::Vconnector,
        &name("qbr"),
        on_host.clone(),
    )
    .with_extra("connector_type", "bridge")
    .with_extra("interfaces_names", vec![name("qvb"), name("tap")]);
    let qvb = interface(env, &host, ObjectType::Vnic, &name("qvb"), on_host.clone())
        .with_extra("kind", "veth")
        .with_extra("master", bridge_id.as_str())
        .with_extra("peer", id("qvo").as_str());
    let iface_id = format!("{port}-0000-4000-8000-000000000000");
    let qvo = interface(env, &host, ObjectType::Vnic, &name("qvo"), on_host)
        .with_extra("kind", "veth")
        .with_extra("peer", id("qvb").as_str())
        .with_extra("vedge", vedge_id.as_str())
        .with_extra("ovs_bridge", "br-int")
        .with_extra("ofport", calipso_proto::AttrValue::Int(vm as i64 + 10))
        .with_extra("tag", calipso_proto::AttrValue::Int(1 + (vm % 4) as i64))
        .with_extra("iface_id", iface_id.as_str())
        .with_extra(
            "port",
            ObjectId::global(ObjectType::Port, &iface_id).as_str(),
        )
        .with_extra("vm_uuid", uuid.as_str())
        .with_extra("instance", instance_id.as_str());
    vec![instance, tap, bridge, qvb, qvo]
}
