//! The Calipso aggregator: accepts agent sessions, keeps what they report durable, and (in later
//! layers) links, cliques, history and the API.
//!
//! * [`ca`]: the deployment CA tool.
//! * [`tls`]: server-side mutual TLS with revocation.
//! * [`ingest`]: agent sessions and the sink they deliver into.
//! * [`config`]: the configuration file.
//! * [`quickstart`]: everything on one machine.

pub mod ca;
pub mod config;
pub mod ingest;
pub mod quickstart;
pub mod tls;
