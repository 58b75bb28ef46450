//! Prometheus metrics: what the aggregator takes in and how fast it stores it, counted as it
//! happens, and what it holds (objects by status, links by state, agents, the committer's
//! queue), read from the engine when scraped. Served in the OpenMetrics text format on a
//! listener of its own (`[metrics] listen`, loopback by default: like every exporter it answers
//! without a token, and it shows counts, never objects or secrets).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;

use crate::ingest::DurableSink;
use crate::monitoring::effective_level;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `snapshot`, `delta`, `cloud` or `admin`.
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `sent`, `retried`, `failed`, `dropped` or `silenced`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    environment: String,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    environment: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    state: &'static str,
}

/// Every metric, registered once per process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests the committer applied, by kind.
    pub applied: Family<KindLabel, Counter>,
    /// Requests it refused (a delta naming another host's object, a bad cloud write …).
    pub refused: Family<KindLabel, Counter>,
    /// Object, link and clique versions stored.
    pub versions: Counter,
    /// Groups committed to the store, and how long each commit took.
    pub commit_seconds: Histogram,
    /// Commits the store refused (the engine is then reloaded).
    pub commit_failures: Counter,
    /// Alerts, by what became of them.
    pub alerts: Family<OutcomeLabel, Counter>,
    objects: Family<ObjectLabels, Gauge>,
    links: Family<LinkLabels, Gauge>,
    agents: Family<AgentLabels, Gauge>,
    queue: Gauge,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("calipso");
        let applied = Family::<KindLabel, Counter>::default();
        let refused = Family::<KindLabel, Counter>::default();
        let versions = Counter::default();
        // 100 µs to about 13 s.
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let commit_failures = Counter::default();
        let alerts = Family::<OutcomeLabel, Counter>::default();
        let objects = Family::<ObjectLabels, Gauge>::default();
        let links = Family::<LinkLabels, Gauge>::default();
        let agents = Family::<AgentLabels, Gauge>::default();
        let queue = Gauge::default();
        registry.register(
            "ingest_applied",
            "Agent snapshots and deltas, cloud writes and operators' changes applied",
            applied.clone(),
        );
        registry.register(
            "ingest_refused",
            "Requests refused whole, with a message naming the problem",
            refused.clone(),
        );
        registry.register(
            "versions_stored",
            "Object, link and clique versions written to the store",
            versions.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time to write one group of changes to the store",
            commit_seconds.clone(),
        );
        registry.register(
            "commit_failures",
            "Commits the store refused (the engine was reloaded from the store)",
            commit_failures.clone(),
        );
        registry.register(
            "alerts",
            "Alerts by outcome: sent, retried (an attempt failed), failed (given up), dropped \
             (queue full), silenced",
            alerts.clone(),
        );
        registry.register(
            "objects",
            "Objects held, by environment and status (a disconnected host's are unknown)",
            objects.clone(),
        );
        registry.register(
            "links",
            "Links held, by environment and state",
            links.clone(),
        );
        registry.register("agents", "Agents known, by session state", agents.clone());
        registry.register(
            "commit_queue_depth",
            "Requests waiting for the committer",
            queue.clone(),
        );
        Metrics {
            registry,
            applied,
            refused,
            versions,
            commit_seconds,
            commit_failures,
            alerts,
            objects,
            links,
            agents,
            queue,
        }
    }

    /// The text a scrape returns: counters as counted, the held state read now.
    pub fn render(&self, sink: &DurableSink) -> String {
        self.objects.clear();
        self.links.clear();
        self.agents.clear();
        {
            let engine = sink.engine();
            for env in engine.environments() {
                let environment = env.config.name.clone();
                let mut by_status: FxHashMap<&'static str, i64> = FxHashMap::default();
                for node in env.graph.nodes() {
                    *by_status.entry(effective_level(node).as_str()).or_default() += 1;
                }
                for (status, count) in by_status {
                    let labels = ObjectLabels {
                        environment: environment.clone(),
                        status,
                    };
                    self.objects.get_or_create(&labels).set(count);
                }
                let mut by_state: FxHashMap<&'static str, i64> = FxHashMap::default();
                for link in env.links.links() {
                    *by_state.entry(link.state.as_str()).or_default() += 1;
                }
                for (state, count) in by_state {
                    let labels = LinkLabels {
                        environment: environment.clone(),
                        state,
                    };
                    self.links.get_or_create(&labels).set(count);
                }
            }
        }
        for agent in sink.agents() {
            let labels = AgentLabels {
                state: agent.state.as_str(),
            };
            self.agents.get_or_create(&labels).inc();
        }
        self.queue
            .set(i64::try_from(sink.queue_depth()).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Serves `GET /metrics` on `listen` until `shutdown`; returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    sink: Arc<DurableSink>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    use axum::http::header::CONTENT_TYPE;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let sink = sink.clone();
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics().render(&sink),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let stopped = shutdown.cancelled_owned();
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(%err, "the metrics listener stopped");
        }
    });
    Ok(local)
}
