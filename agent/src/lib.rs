//! The Calipso agent: reads the host's networking from the kernel and the vswitches' own
//! sockets, keeps a model of it, and pushes what changes to the aggregator.
//!
//! * [`collect`]: one module per source, behind the [`collect::Collector`] trait.
//! * [`health`]: the checks the agent runs on what it sees, behind [`health::Check`].
//! * [`outbox`]: the host model, its diff, and the deltas waiting for acknowledgement.
//! * [`uplink`]: the QUIC session to the aggregator (hello, resume, deltas, acks, reconnects).
//! * [`runtime`]: wires them together.
//! * [`process`]: logging and signal handling shared by the daemons.

pub mod backoff;
pub mod collect;
pub mod config;
pub mod health;
pub mod outbox;
pub mod ovsdb;
pub mod process;
pub mod runtime;
pub mod state;
pub mod uplink;

pub use config::AgentConfig;
pub use runtime::Agent;
pub use uplink::{Uplink, UplinkEvent};
