//! An OVSDB client (RFC 7047) written for the agent: there is no mature crate for it.
//!
//! * [`split`]: JSON texts out of a byte stream, in linear time, with a size limit.
//! * [`client`]: JSON-RPC requests, responses, `echo` and notifications.
//! * [`datum`]: OVSDB atoms, sets and maps, and `update2` diffs.
//! * [`db`]: the schema's column kinds and a copy of the monitored tables.
//! * [`tls`]: SSL to ovsdb-server, as Open vSwitch does it.

pub mod client;
pub mod datum;
pub mod db;
pub mod split;
pub mod tls;

pub use client::{Client, Endpoint, Event, OvsdbError};
pub use db::{Row, Schema, Tables, Touched};
pub use tls::SslFiles;
