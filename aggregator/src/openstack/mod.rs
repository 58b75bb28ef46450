//! The OpenStack adapter: what only the cloud's control plane knows — regions, Nova
//! availability zones, Keystone projects, Neutron networks with their subnets, and Neutron
//! ports — read from the REST APIs and kept
//! current from the notification bus (oslo.messaging over AMQP). No database reads, no SSH.
//!
//! * [`settings`]: an environment's `OpenStack` and `AMQP` configuration, checked.
//! * [`rest`]: Keystone v3 authentication and catalog (regions), projects, Nova's availability
//!   zones, Neutron's networks, subnets and ports.
//! * [`bus`]: the queue bound to the services' notification exchanges.
//! * [`notifications`]: notification bodies → [`documents::CloudEvent`]s.
//! * [`documents`]: the documents of one cloud → inventory objects.
//! * [`source`]: one task per environment, and the supervisor that runs them.
//!
//! The objects are the control plane's ([`crate::ingest::validate::CONTROL_PLANE_TYPES`]):
//! they belong to no host, so an agent's snapshot never removes them and the adapter never
//! touches a host's model. Agents name them by the same ids (a tap's `iface-id` is its Neutron
//! port), which is how the link finders join the two views.

pub mod bus;
pub mod documents;
pub mod notifications;
pub mod rest;
pub mod settings;
pub mod source;

pub use settings::{OpenStackSettings, SettingsError};
pub use source::supervise;
