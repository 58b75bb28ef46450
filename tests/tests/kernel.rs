//! The kernel collector against real kernel objects: namespaces, veth pairs across them, a Linux
//! bridge with members, a vxlan device with FDB entries, a tap with a Nova-style domain XML, a
//! qdhcp-style namespace with an address. Every change must produce exactly the expected delta
//! and nothing else. Needs root.

use std::collections::BTreeSet;

use calipso_agent::collect::{Collector, Kernel, Libvirt, Scope};
use calipso_agent::outbox::Outbox;
use calipso_proto::{AttrValue, LinkState, Object, ObjectType};
use calipso_tests::netlab::NetLab;
use tokio_util::sync::CancellationToken;

const HOST: &str = "lab-1";

fn scope() -> Scope {
    Scope {
        host: HOST.into(),
        environment: "lab".into(),
    }
}

/// A running kernel collector (and optionally the libvirt one) publishing into an outbox.
struct Watched {
    outbox: Outbox,
    stop: CancellationToken,
    options: calipso_agent::collect::KernelOptions,
}

impl Watched {
    fn start(lab: &NetLab, libvirt: bool) -> Self {
        let outbox = Outbox::new(HOST, "lab", 1, 1 << 26);
        let stop = CancellationToken::new();
        let options = lab.kernel_options();
        let kernel = Box::new(Kernel::new(scope(), options.clone()));
        tokio::spawn(kernel.follow(outbox.clone(), stop.clone()));
        if libvirt {
            let collector = Box::new(Libvirt::new(
                scope(),
                lab.libvirt_dir.path().to_owned(),
                lab.libvirt_dir.path().join("defined"),
            ));
            tokio::spawn(collector.follow(outbox.clone(), stop.clone()));
        }
        Watched {
            outbox,
            stop,
            options,
        }
    }

    async fn settle(&self) -> u64 {
        calipso_tests::settle(&self.outbox).await
    }

    fn changes_since(&self, seq: u64) -> (BTreeSet<String>, BTreeSet<String>) {
        calipso_tests::net_changes(&self.outbox, seq)
    }

    /// Runs `change`, waits for the deltas to settle, and returns their net effect.
    async fn after(
        &self,
        change: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
        let before = self.settle().await;
        change()?;
        self.settle().await;
        self.assert_matches_full_scan().await?;
        Ok(self.changes_since(before))
    }

    /// The incrementally maintained model must equal a from-scratch scan.
    async fn assert_matches_full_scan(&self) -> anyhow::Result<()> {
        let full = Kernel::new(scope(), self.options.clone()).scan().await?;
        let followed: Vec<Object> = self
            .outbox
            .objects()
            .into_iter()
            .filter(|o| o.object_type != ObjectType::Instance)
            .collect();
        assert_eq!(
            followed, full,
            "the followed model differs from a full scan"
        );
        Ok(())
    }

    fn object(&self, id: &str) -> Option<Object> {
        self.outbox
            .objects()
            .into_iter()
            .find(|o| o.id.as_str() == id)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn extra<'a>(object: &'a Object, key: &str) -> Option<&'a AttrValue> {
    object.attributes.extra.get(key)
}

#[tokio::test]
async fn initial_model_of_a_compute_host() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let mut lab = NetLab::new()?;
    let dhcp = lab.add_netns("qdhcp-5a7c")?;
    lab.sh(&format!(
        "ip link add br-lab type bridge
         ip link add tap-vm1 type veth peer name tap-vm1p
         ip link set tap-vm1 master br-lab
         ip link add uplink type veth peer name uplinkp
         ip addr add 10.9.0.1/24 dev uplink
         ip link set uplink up
         ip link add vxlan-42 type vxlan id 42 local 10.9.0.1 dstport 4789 dev uplink
         ip link set vxlan-42 master br-lab
         bridge fdb append 00:00:00:00:00:00 dev vxlan-42 dst 10.9.0.2
         bridge fdb append 00:00:00:00:00:00 dev vxlan-42 dst 10.9.0.3
         ip tuntap add tapvm2 mode tap
         ip link add ns-dhcp type veth peer name ns-dhcpp
         ip link set ns-dhcpp netns {dhcp}
         ip link set br-lab up; ip link set vxlan-42 up; ip link set tap-vm1 up"
    ))?;
    lab.sh_in(
        "qdhcp-5a7c",
        "ip addr add 10.0.0.2/24 dev ns-dhcpp; ip link set ns-dhcpp up",
    )?;
    let watched = Watched::start(&lab, false);
    watched.settle().await;

    let types: BTreeSet<(String, ObjectType)> = watched
        .outbox
        .objects()
        .into_iter()
        .map(|o| (o.id.as_str().to_owned(), o.object_type))
        .collect();
    let expected: BTreeSet<(String, ObjectType)> = [
        ("otep:lab-1:vxlan-42", ObjectType::Otep),
        ("vconnector:lab-1:br-lab", ObjectType::Vconnector),
        ("vnic:lab-1:ns-dhcp", ObjectType::Vnic),
        ("vnic:lab-1:qdhcp-5a7c/ns-dhcpp", ObjectType::Vnic),
        ("vnic:lab-1:tap-vm1", ObjectType::Vnic),
        ("vnic:lab-1:tap-vm1p", ObjectType::Vnic),
        ("vnic:lab-1:tapvm2", ObjectType::Vnic),
        ("vnic:lab-1:uplink", ObjectType::Vnic),
        ("vnic:lab-1:uplinkp", ObjectType::Vnic),
        ("vservice:lab-1:qdhcp-5a7c", ObjectType::Vservice),
    ]
    .into_iter()
    .map(|(id, t)| (id.to_owned(), t))
    .collect();
    assert_eq!(types, expected);

    let bridge = watched.object("vconnector:lab-1:br-lab").expect("bridge");
    assert_eq!(
        extra(&bridge, "interfaces_names"),
        Some(&vec!["tap-vm1", "vxlan-42"].into())
    );
    assert!(
        extra(&bridge, "bridge_id")
            .and_then(AttrValue::as_str)
            .is_some_and(|id| id.starts_with("8000."))
    );
    let otep = watched.object("otep:lab-1:vxlan-42").expect("otep");
    assert_eq!(extra(&otep, "vni"), Some(&AttrValue::Int(42)));
    assert_eq!(extra(&otep, "udp_port"), Some(&AttrValue::Int(4789)));
    assert_eq!(extra(&otep, "ip_address"), Some(&"10.9.0.1".into()));
    assert_eq!(
        extra(&otep, "remote_endpoints"),
        Some(&vec!["10.9.0.2", "10.9.0.3"].into())
    );
    assert_eq!(extra(&otep, "underlay"), Some(&"vnic:lab-1:uplink".into()));
    assert_eq!(
        extra(&otep, "master"),
        Some(&"vconnector:lab-1:br-lab".into())
    );
    let tap = watched.object("vnic:lab-1:tapvm2").expect("tap");
    assert_eq!(extra(&tap, "tun_mode"), Some(&"tap".into()));
    assert_eq!(tap.attributes.link_state, Some(LinkState::Down));
    let inside = watched
        .object("vnic:lab-1:qdhcp-5a7c/ns-dhcpp")
        .expect("namespaced vnic");
    assert_eq!(inside.attributes.addresses, vec!["10.0.0.2/24".parse()?]);
    assert_eq!(extra(&inside, "vnic_type"), Some(&"vservice_vnic".into()));
    assert_eq!(extra(&inside, "peer"), Some(&"vnic:lab-1:ns-dhcp".into()));
    assert_eq!(
        inside.parent.as_ref().map(|p| p.id.as_str()),
        Some("vservice:lab-1:qdhcp-5a7c")
    );
    let outside = watched.object("vnic:lab-1:ns-dhcp").expect("host end");
    assert_eq!(
        extra(&outside, "peer"),
        Some(&"vnic:lab-1:qdhcp-5a7c/ns-dhcpp".into())
    );
    let service = watched
        .object("vservice:lab-1:qdhcp-5a7c")
        .expect("vservice");
    assert_eq!(extra(&service, "service_type"), Some(&"dhcp".into()));
    assert_eq!(extra(&service, "network_id"), Some(&"5a7c".into()));
    Ok(())
}

#[tokio::test]
async fn every_change_produces_exactly_its_delta() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let mut lab = NetLab::new()?;
    let watched = Watched::start(&lab, false);
    watched.settle().await;
    assert!(
        watched.outbox.objects().is_empty(),
        "an empty host has no objects"
    );

    let changed = watched
        .after(|| lab.sh("ip link add va type veth peer name vb").map(drop))
        .await?;
    assert_eq!(
        changed,
        (ids(&["vnic:lab-1:va", "vnic:lab-1:vb"]), ids(&[])),
        "add"
    );

    let changed = watched
        .after(|| lab.sh("ip link set va up; ip link set vb up").map(drop))
        .await?;
    assert_eq!(
        changed,
        (ids(&["vnic:lab-1:va", "vnic:lab-1:vb"]), ids(&[])),
        "up"
    );
    assert_eq!(
        watched
            .object("vnic:lab-1:va")
            .and_then(|o| o.attributes.link_state),
        Some(LinkState::Up)
    );

    let changed = watched
        .after(|| lab.sh("ip addr add 10.1.0.1/24 dev va").map(drop))
        .await?;
    assert_eq!(changed, (ids(&["vnic:lab-1:va"]), ids(&[])), "address");
    assert_eq!(
        watched
            .object("vnic:lab-1:va")
            .map(|o| o.attributes.addresses),
        Some(vec!["10.1.0.1/24".parse()?])
    );

    let changed = watched
        .after(|| lab.sh("ip link set vb down").map(drop))
        .await?;
    assert_eq!(
        changed,
        (ids(&["vnic:lab-1:va", "vnic:lab-1:vb"]), ids(&[])),
        "down (va loses its carrier)"
    );
    assert_eq!(
        watched
            .object("vnic:lab-1:va")
            .and_then(|o| o.attributes.link_state),
        Some(LinkState::Down)
    );

    let mut ns = String::new();
    let changed = watched
        .after(|| {
            ns = lab.add_netns("qrouter-r1")?;
            Ok(())
        })
        .await?;
    assert_eq!(
        changed,
        (ids(&["vservice:lab-1:qrouter-r1"]), ids(&[])),
        "namespace added"
    );

    let changed = watched
        .after(|| lab.sh(&format!("ip link set vb netns {ns}")).map(drop))
        .await?;
    assert_eq!(
        changed,
        (
            ids(&["vnic:lab-1:qrouter-r1/vb", "vnic:lab-1:va"]),
            ids(&["vnic:lab-1:vb"])
        ),
        "move to another namespace"
    );
    assert_eq!(
        watched
            .object("vnic:lab-1:va")
            .and_then(|o| extra(&o, "peer").cloned()),
        Some("vnic:lab-1:qrouter-r1/vb".into())
    );

    // Deleting the namespace destroys the veth end inside it, and with it the pair.
    let changed = watched.after(|| lab.del_netns("qrouter-r1")).await?;
    assert_eq!(
        changed,
        (
            ids(&[]),
            ids(&[
                "vnic:lab-1:qrouter-r1/vb",
                "vnic:lab-1:va",
                "vservice:lab-1:qrouter-r1"
            ])
        ),
        "namespace deleted"
    );

    lab.sh("ip link add br0 type bridge; ip link add vc type veth peer name vd")?;
    watched.settle().await;
    let changed = watched
        .after(|| lab.sh("ip link set vc master br0").map(drop))
        .await?;
    assert_eq!(
        changed,
        (ids(&["vconnector:lab-1:br0", "vnic:lab-1:vc"]), ids(&[])),
        "bridge membership"
    );

    let changed = watched.after(|| lab.sh("ip link del vc").map(drop)).await?;
    assert_eq!(
        changed,
        (
            ids(&["vconnector:lab-1:br0"]),
            ids(&["vnic:lab-1:vc", "vnic:lab-1:vd"])
        ),
        "remove (both ends, and the bridge loses a member)"
    );

    let quiet = watched.after(|| Ok(())).await?;
    assert_eq!(quiet, (ids(&[]), ids(&[])), "nothing changes on its own");
    Ok(())
}

#[tokio::test]
async fn vxlan_fdb_entries_are_tunnel_endpoints() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let lab = NetLab::new()?;
    lab.sh("ip link add under type veth peer name underp
         ip addr add 10.9.0.1/24 dev under
         ip link add vx7 type vxlan id 7 local 10.9.0.1 dstport 4789 dev under")?;
    let watched = Watched::start(&lab, false);
    watched.settle().await;
    let changed = watched
        .after(|| {
            lab.sh("bridge fdb append 00:00:00:00:00:00 dev vx7 dst 10.9.0.5")
                .map(drop)
        })
        .await?;
    assert_eq!(changed, (ids(&["otep:lab-1:vx7"]), ids(&[])));
    let otep = watched.object("otep:lab-1:vx7").expect("otep");
    assert_eq!(
        extra(&otep, "remote_endpoints"),
        Some(&vec!["10.9.0.5"].into())
    );
    let changed = watched
        .after(|| {
            lab.sh("bridge fdb del 00:00:00:00:00:00 dev vx7 dst 10.9.0.5")
                .map(drop)
        })
        .await?;
    assert_eq!(changed, (ids(&["otep:lab-1:vx7"]), ids(&[])));
    let otep = watched.object("otep:lab-1:vx7").expect("otep");
    assert_eq!(
        extra(&otep, "remote_endpoints"),
        Some(&Vec::<String>::new().into())
    );
    Ok(())
}

#[tokio::test]
async fn a_tap_and_its_nova_domain() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let lab = NetLab::new()?;
    lab.sh("ip tuntap add tap1f72bd15-8a mode tap")?;
    let watched = Watched::start(&lab, true);
    watched.settle().await;
    let xml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/libvirt/instance-00000026.xml"
    ))?;
    let changed = watched
        .after(|| {
            std::fs::write(lab.libvirt_dir.path().join("instance-00000026.xml"), &xml)?;
            Ok(())
        })
        .await?;
    assert_eq!(
        changed,
        (
            ids(&["instance:bf0cb914-b316-486c-a4ce-f22deb453c52"]),
            ids(&[])
        )
    );
    let instance = watched
        .object("instance:bf0cb914-b316-486c-a4ce-f22deb453c52")
        .expect("instance");
    assert_eq!(instance.name, "test");
    let Some(AttrValue::List(interfaces)) = extra(&instance, "interfaces") else {
        panic!("interfaces")
    };
    let Some(AttrValue::Map(first)) = interfaces.first() else {
        panic!("an interface")
    };
    let vnic = first
        .get("vnic")
        .and_then(AttrValue::as_str)
        .expect("vnic id");
    assert!(
        watched.object(vnic).is_some(),
        "the domain's tap is a vNIC the kernel collector reports"
    );

    let changed = watched
        .after(|| {
            std::fs::remove_file(lab.libvirt_dir.path().join("instance-00000026.xml"))?;
            Ok(())
        })
        .await?;
    assert_eq!(
        changed,
        (
            ids(&[]),
            ids(&["instance:bf0cb914-b316-486c-a4ce-f22deb453c52"])
        )
    );
    Ok(())
}

#[tokio::test]
async fn lost_notifications_are_recovered_by_a_dump() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let lab = NetLab::new()?;
    let outbox = Outbox::new(HOST, "lab", 1, 1 << 26);
    let stop = CancellationToken::new();
    // A receive buffer of a few messages: a burst overruns it (ENOBUFS) for certain.
    let options = calipso_agent::collect::KernelOptions {
        netlink_rcvbuf: Some(1024),
        ..lab.kernel_options()
    };
    tokio::spawn(
        Box::new(Kernel::new(scope(), options.clone())).follow(outbox.clone(), stop.clone()),
    );
    let watched = Watched {
        outbox,
        stop,
        options,
    };
    watched.settle().await;
    let batch: String = (0..40)
        .map(|i| format!("link add burst{i} type veth peer name burst{i}p\n"))
        .collect();
    let batch_file = tempfile::NamedTempFile::new()?;
    std::fs::write(batch_file.path(), batch)?;
    let (upserted, removed) = watched
        .after(|| {
            calipso_tests::netlab::run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &lab.host_ns,
                    "ip",
                    "-batch",
                    &batch_file.path().to_string_lossy(),
                ],
            )
            .map(drop)
        })
        .await?;
    assert_eq!(upserted.len(), 80, "every interface of the burst arrives");
    assert!(removed.is_empty());
    Ok(())
}
