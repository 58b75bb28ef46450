//! Collectors: one module per source of host state, all behind [`Collector`].
//!
//! A collector can read its whole view once ([`Collector::scan`], used by `discover` and for a
//! first picture) and follow it ([`Collector::follow`]), publishing into the [`Outbox`] under
//! its own name so that it only ever adds, changes or removes the objects it owns.
//!
//! * [`host_facts`]: the host object (OS, kernel, CPU, memory).
//! * [`kernel`]: interfaces, bridges, vxlan, namespaces (rtnetlink, sysfs, ethtool).
//! * [`libvirt`]: instances and their interfaces (domain XML).
//! * [`ovs`]: Open vSwitch through OVSDB: the vedge, tunnel endpoints, VM ports.

mod host_facts;
pub mod kernel;
pub mod libvirt;
pub mod ovs;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use calipso_proto::{Object, ObjectId};
use tokio::sync::watch;

use crate::outbox::Outbox;

pub use host_facts::HostFacts;
pub use kernel::{Kernel, KernelOptions};
pub use libvirt::Libvirt;
pub use ovs::{Ovs, OvsOptions};

#[derive(Debug, thiserror::Error)]
#[error("{collector}: {message}")]
pub struct CollectorError {
    pub collector: &'static str,
    pub message: String,
}

/// A source of host state.
pub trait Collector: Send + 'static {
    /// The name objects are owned under in the outbox, and the name in logs.
    fn name(&self) -> &'static str;

    /// Reads everything this collector covers, once.
    fn scan(&mut self) -> BoxFuture<'_, Result<Vec<Object>, CollectorError>>;

    /// Publishes the current state, then every change, until `shutdown` is cancelled.
    fn follow(
        self: Box<Self>,
        outbox: Outbox,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), CollectorError>>;
}

/// The ids of vNICs the kernel collector found inside named namespaces, by interface name.
///
/// Open vSwitch names its ports by interface name only, and Neutron moves router and DHCP
/// ports (OVS internal ports) into `qrouter-`/`qdhcp-` namespaces, where the kernel collector
/// gives them a namespaced id. The OVS collector looks names up here so that it describes the
/// same object; interfaces in the host namespace need no entry (their id is the default).
#[derive(Debug, Clone, Default)]
pub struct InterfaceDirectory {
    names: Arc<RwLock<HashMap<String, ObjectId>>>,
    version: Arc<watch::Sender<u64>>,
}

impl InterfaceDirectory {
    pub fn lookup(&self, name: &str) -> Option<ObjectId> {
        self.names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Records vNICs published (`name → id`) and ids removed; wakes subscribers on a change.
    pub fn update(
        &self,
        published: impl IntoIterator<Item = (String, ObjectId)>,
        removed: &[ObjectId],
    ) {
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        let before = names.len();
        let mut changed = false;
        names.retain(|_, id| !removed.contains(id));
        for (name, id) in published {
            changed |= names.insert(name, id.clone()).as_ref() != Some(&id);
        }
        if changed || names.len() != before {
            self.version.send_modify(|v| *v += 1);
        }
    }

    /// Fires whenever an entry changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Where collectors learn who they are collecting for.
#[derive(Debug, Clone)]
pub struct Scope {
    pub host: String,
    pub environment: String,
}
