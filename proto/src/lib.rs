//! The vocabulary and the wire protocol shared by `calipso-agent` and `calipso-aggregator`.
//!
//! * [`model`]: objects, links, deterministic ids and attribute values, with the original
//!   Calipso's type names (`vnic`, `vconnector`, `vedge`, `otep`, `host_pnic`, ...).
//! * [`wire`]: the messages an agent session exchanges (`Hello`, `Snapshot`, `Delta` one way;
//!   `Welcome`, `Ack`, `Command`, `Error` the other) and the protocol version.
//! * [`codec`]: the one module that knows the binary encoding of a message.
//! * [`framing`]: length-prefixed frames over any async byte stream, with a size limit checked
//!   before anything is allocated.

pub mod codec;
pub mod framing;
pub mod model;
pub mod tls;
pub mod wire;

pub use model::*;
