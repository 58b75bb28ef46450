//! Facts about physical NICs that rtnetlink does not carry: what the original read with
//! `ls -l /sys/class/net` and `ethtool <if>`. A NIC is physical when sysfs gives it a `device`
//! link (virtual devices have none), or when the configuration declares it one (a lab's fabric
//! veth, a NIC whose driver links no device). Driver, bus address, speed and duplex come from sysfs;
//! auto-negotiation and link modes from ethtool's netlink interface where the kernel has it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ethtool::{EthtoolAttr, EthtoolLinkModeAttr};
use futures::TryStreamExt;

/// Where sysfs and procfs live (tests and containers point them elsewhere).
#[derive(Debug, Clone)]
pub struct SysPaths {
    /// `/sys/class/net`
    pub class_net: PathBuf,
    /// `/proc/net/bonding`
    pub bonding: PathBuf,
    /// Interfaces to report as physical NICs whatever their kind.
    pub declared_physical: BTreeSet<String>,
}

impl Default for SysPaths {
    fn default() -> Self {
        SysPaths {
            class_net: "/sys/class/net".into(),
            bonding: "/proc/net/bonding".into(),
            declared_physical: BTreeSet::new(),
        }
    }
}

/// What ethtool would say about a NIC.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NicFacts {
    pub driver: Option<String>,
    pub bus_info: Option<String>,
    pub speed_mbps: Option<u32>,
    pub duplex: Option<String>,
    pub autoneg: Option<bool>,
    /// Link modes the NIC supports (`1000baseT/Full` …).
    pub link_modes: Vec<String>,
}

impl SysPaths {
    /// Whether the interface is a physical NIC: declared one, or a device-less kind (`kind`
    /// is the rtnetlink kind) backed by a device (a NIC or a VF).
    pub fn is_physical(&self, ifname: &str, kind: Option<&str>) -> bool {
        self.declared_physical.contains(ifname)
            || (kind.is_none() && self.class_net.join(ifname).join("device").exists())
    }

    /// Driver, bus address, speed and duplex from sysfs.
    pub fn nic_facts(&self, ifname: &str) -> NicFacts {
        let dir = self.class_net.join(ifname);
        let link_name = |path: &Path| {
            std::fs::read_link(path)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        };
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .ok()
                .map(|s| s.trim().to_owned())
        };
        NicFacts {
            driver: link_name(&dir.join("device/driver")),
            bus_info: bus_info(&dir.join("device")),
            // The kernel reports -1 (or fails the read) while the link is down.
            speed_mbps: read("speed")
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|s| u32::try_from(s).ok()),
            duplex: read("duplex").filter(|d| d != "unknown"),
            autoneg: None,
            link_modes: Vec::new(),
        }
    }

    /// The raw `/proc/net/bonding/<bond>` text, if the bonding driver exposes it.
    pub fn bonding_text(&self, bond: &str) -> Option<String> {
        std::fs::read_to_string(self.bonding.join(bond)).ok()
    }
}

/// The bus address ethtool reports: the device's own, or for a virtio device the address of
/// the PCI function it sits on (`0000:00:03.0` rather than `virtio2`).
fn bus_info(device: &Path) -> Option<String> {
    let path = std::fs::canonicalize(device).ok()?;
    let name = path.file_name()?.to_string_lossy().into_owned();
    if name.starts_with("virtio") {
        return path
            .parent()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
    }
    Some(name)
}

/// Adds auto-negotiation and link modes from ethtool netlink. Failures (no ethtool netlink in
/// this kernel, a driver without link modes) leave the facts as they are.
pub async fn add_link_modes(
    handle: &mut ethtool::EthtoolHandle,
    ifname: &str,
    facts: &mut NicFacts,
) {
    let messages = match handle.link_mode().get(Some(ifname)).execute().await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await,
        Err(err) => Err(err),
    };
    let messages = match messages {
        Ok(messages) => messages,
        Err(err) => return tracing::debug!(ifname, %err, "no ethtool link modes"),
    };
    for message in messages {
        for attr in message.payload.nlas {
            match attr {
                EthtoolAttr::LinkMode(EthtoolLinkModeAttr::Autoneg(on)) => facts.autoneg = Some(on),
                EthtoolAttr::LinkMode(EthtoolLinkModeAttr::Ours(modes)) => facts.link_modes = modes,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nic_is_physical_by_its_device_link_or_by_declaration() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("eno1/device")).expect("eno1");
        std::fs::create_dir_all(dir.path().join("veth0")).expect("veth0");
        std::fs::create_dir_all(dir.path().join("bond0/device")).expect("bond0");
        let sys = SysPaths {
            class_net: dir.path().to_owned(),
            declared_physical: ["fabric0".to_owned()].into(),
            ..SysPaths::default()
        };
        assert!(sys.is_physical("eno1", None));
        assert!(!sys.is_physical("veth0", None), "no device link");
        assert!(
            !sys.is_physical("bond0", Some("bond")),
            "a kind with its own object type"
        );
        assert!(sys.is_physical("fabric0", Some("veth")), "declared");
    }
}
