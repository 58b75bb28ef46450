//! Collectors: one module per source of host state, all behind [`Collector`].
//!
//! A collector can read its whole view once ([`Collector::scan`], used by `discover` and for a
//! first picture) and follow it ([`Collector::follow`]), publishing into the [`Outbox`] under
//! its own name so that it only ever adds, changes or removes the objects it owns.
//!
//! * [`host_facts`]: the host object (OS, kernel, CPU, memory).
//! * [`kernel`]: interfaces, bridges, vxlan, namespaces (rtnetlink, sysfs, ethtool).
//! * [`libvirt`]: instances and their interfaces (domain XML).

mod host_facts;
pub mod kernel;
pub mod libvirt;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use calipso_proto::Object;

use crate::outbox::Outbox;

pub use host_facts::HostFacts;
pub use kernel::{Kernel, KernelOptions};
pub use libvirt::Libvirt;

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

/// Where collectors learn who they are collecting for.
#[derive(Debug, Clone)]
pub struct Scope {
    pub host: String,
    pub environment: String,
}
