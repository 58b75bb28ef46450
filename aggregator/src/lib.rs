//! The Calipso aggregator: accepts agent sessions, keeps what they report durable with its
//! history, and derives links and cliques.
//!
//! * [`api`]: the REST API, OpenAPI and the live stream, over [`service`].
//! * [`ui`]: the web UI (ES modules embedded in the binary), served beside the API.
//! * [`ca`]: the deployment CA tool.
//! * [`tls`]: server-side mutual TLS with revocation.
//! * [`ingest`]: agent sessions and the sinks they deliver into.
//! * [`graph`]: an environment's objects in memory, indexed for the link finders.
//! * [`idset`]: the small sets of ids the indexes are made of.
//! * [`links`]: the link finders and the incremental link set.
//! * [`monitoring`]: status as operators see it: stale objects, clique roll-ups, messages.
//! * [`alerts`]: alert rules, silences, and delivery to webhooks and Alertmanager.
//! * [`metrics`]: Prometheus metrics on a listener of their own.
//! * [`client`]: a client of the API (the `calipso` CLI's).
//! * [`cliques`]: clique types, constraints and the incremental clique engine.
//! * [`engine`]: graph, links and cliques of every environment, updated together.
//! * [`store`]: the durable store (SQLite or PostgreSQL) with history.
//! * [`service`]: what the API does (auth, queries, settings, scans, the live stream).
//! * [`synthetic`]: generated host models for tests and benchmarks.
//! * [`openstack`]: the OpenStack adapter (Keystone, Neutron, the notification bus).
//! * [`config`]: the configuration file.
//! * [`secrets`]: environment secrets sealed at rest.
//! * [`quickstart`]: everything on one machine.

pub mod alerts;
pub mod analysis;
pub mod api;
pub mod ca;
pub mod client;
pub mod cliques;
pub mod config;
pub mod engine;
pub mod graph;
pub mod idset;
pub mod ingest;
mod interner;
pub mod links;
pub mod metrics;
pub mod monitoring;
pub mod openstack;
mod parallel;
pub mod quickstart;
pub mod secrets;
pub mod service;
pub mod sorted_set;
pub mod store;
pub mod synthetic;
pub mod tls;
pub mod ui;
