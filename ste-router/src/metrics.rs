//! Request metrics and the `/metrics` endpoint (OpenMetrics text, encoded
//! by `prometheus-client`).
//!
//! Two kinds of numbers, kept apart:
//! - events counted as they happen, owned here by [`Metrics`]: requests by
//!   method and gRPC code, their latency, open watches, fenced members,
//!   completed ring changes;
//! - state read at scrape time, passed in as a plain [`Snapshot`] (revisions,
//!   keys, readiness, ring generation, per-shard health and keys) so it
//!   cannot drift from the store, and so rendering needs no store at all.
//!
//! Names, labels and meanings are documented in docs/router.md. Counters are
//! registered without their `_total` suffix; the encoder appends it, so they
//! are exposed as `ste_router_requests_total` and so on.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::shard::CallLatency;
use crate::store::Store;

/// The `Content-Type` of `/metrics`: what `prometheus-client`'s text
/// encoder produces. Prometheus scrapes it (and prefers it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds, from a loopback round trip to a slow shard;
/// for the router's requests and its calls to shards alike.
pub(crate) const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Labels of `ste_router_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: String,
}

/// Labels of `ste_router_request_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// Labels of `ste_router_shard_request_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MemberMethodLabels {
    member: String,
    method: String,
}

/// Labels of the per-shard gauges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MemberLabels {
    member: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The router's event counters. Cheap to update from any task: every
/// method takes `&self`; the families and counters share their values with
/// the registry built at each scrape.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Open watches; signed so that a stray extra decrement shows as a
    /// clamp to 0 rather than a wrap to 2^64.
    watchers: AtomicI64,
    fenced: Counter,
    ring_changes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            watchers: AtomicI64::new(0),
            fenced: Counter::default(),
            ring_changes: Counter::default(),
        }
    }
}

/// The store's state at one scrape: what `/metrics` shows besides the
/// counters. Plain values (and the shards' latency histograms, which are
/// shared handles), so rendering needs no lock and no store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Current global revision (every write at or below it completed).
    pub revision: i64,
    /// Global compaction point.
    pub compact_revision: i64,
    /// Revision high-water mark persisted in the state store.
    pub reserved_revision: i64,
    /// Allocated revisions not yet completed.
    pub writes_in_flight: u64,
    /// Events in the watch event log.
    pub event_log_events: u64,
    /// Approximate size of the watch event log, in bytes.
    pub event_log_bytes: u64,
    /// Oldest revision a watch can start from.
    pub event_log_oldest_revision: i64,
    /// Open watches.
    pub watchers: u64,
    /// Keys in the index.
    pub keys: u64,
    /// The start-up scan has finished.
    pub ready: bool,
    /// Ring generation.
    pub ring_generation: u64,
    /// One entry per shard of the membership, in its order.
    pub shards: Vec<ShardSnapshot>,
}

/// One shard at one scrape.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    /// The member's name (the `member` label).
    pub member: String,
    /// Usable: answering and no resync pending.
    pub up: bool,
    /// Keys the index places on the shard.
    pub keys: u64,
    /// Write Txns the router's group commits sent to the shard.
    pub write_txns: u64,
    /// Client writes those Txns carried (÷ `write_txns`: writes per Txn).
    pub writes: u64,
    /// How long the shard's etcd took to answer Range and Txn calls.
    pub latency: CallLatency,
}

/// `ste_router_shard_request_duration_seconds{member, method}`: one
/// histogram family over the shards' own histograms, encoded at scrape
/// time (a `Family` can only hold histograms it created itself).
#[derive(Debug)]
struct ShardRequestDurations(Vec<(String, CallLatency)>);

impl Collector for ShardRequestDurations {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(
            "ste_router_shard_request_duration_seconds",
            "How long shards took to answer the router's Range and Txn calls, hop included",
            None,
            MetricType::Histogram,
        )?;
        for (member, latency) in &self.0 {
            for (method, histogram) in latency.by_method() {
                let labels = MemberMethodLabels {
                    member: member.clone(),
                    method: method.to_owned(),
                };
                histogram.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// An `i64` gauge; a count past `i64::MAX` saturates instead of wrapping.
fn gauge(value: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Metrics {
    /// Runs a request handler, recording its gRPC code and latency.
    pub async fn observe<T>(
        &self,
        method: &str,
        handler: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        let start = Instant::now();
        let result = handler.await;
        let code = match &result {
            Ok(_) => "OK".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        self.record(method, &code, start.elapsed().as_secs_f64());
        result
    }

    /// Counts one request of `method` that ended with gRPC `code` (`OK`,
    /// `NotFound`, …) after `seconds`.
    pub fn record(&self, method: &str, code: &str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                code: code.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(seconds);
    }

    /// A watch was opened (`+1`) or closed (`-1`).
    pub fn watchers_changed(&self, delta: i64) {
        self.watchers.fetch_add(delta, Ordering::Relaxed);
    }

    /// A ring change completed: a fence (a lost member removed) or a join,
    /// leave or resume.
    pub fn ring_change_done(&self, fence: bool) {
        if fence {
            self.fenced.inc();
        } else {
            self.ring_changes.inc();
        }
    }

    /// Open watches (never negative).
    pub fn watchers(&self) -> u64 {
        self.watchers.load(Ordering::Relaxed).max(0) as u64
    }

    /// The counters and `snapshot` as OpenMetrics text, ending in `# EOF`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut registry = Registry::default();
        registry.register(
            "ste_router_requests",
            "etcd API requests by method and gRPC code",
            self.requests.clone(),
        );
        registry.register(
            "ste_router_request_duration_seconds",
            "etcd API request latency",
            self.latency.clone(),
        );
        let s = snapshot;
        for (name, help, value) in [
            (
                "ste_router_revision",
                "Current global revision (every write at or below it completed)",
                ConstGauge::new(s.revision),
            ),
            (
                "ste_router_compact_revision",
                "Global compaction point",
                ConstGauge::new(s.compact_revision),
            ),
            (
                "ste_router_reserved_revision",
                "Revision high-water mark persisted in the state store",
                ConstGauge::new(s.reserved_revision),
            ),
            (
                "ste_router_writes_in_flight",
                "Allocated revisions not yet completed",
                gauge(s.writes_in_flight),
            ),
            (
                "ste_router_event_log_events",
                "Events in the watch event log",
                gauge(s.event_log_events),
            ),
            (
                "ste_router_event_log_bytes",
                "Approximate size of the watch event log",
                gauge(s.event_log_bytes),
            ),
            (
                "ste_router_event_log_oldest_revision",
                "Oldest revision a watch can start from",
                ConstGauge::new(s.event_log_oldest_revision),
            ),
            ("ste_router_watchers", "Open watches", gauge(s.watchers)),
            ("ste_router_keys", "Keys in the index", gauge(s.keys)),
            (
                "ste_router_ready",
                "1 once the start-up scan finished",
                ConstGauge::new(i64::from(s.ready)),
            ),
            (
                "ste_router_ring_generation",
                "Ring generation",
                gauge(s.ring_generation),
            ),
        ] {
            registry.register(name, help, value);
        }
        registry.register(
            "ste_router_members_fenced",
            "Members fenced after their shard was lost",
            self.fenced.clone(),
        );
        registry.register(
            "ste_router_ring_changes",
            "Completed joins, leaves and resumes",
            self.ring_changes.clone(),
        );
        let up = Family::<MemberLabels, Gauge>::default();
        let keys = Family::<MemberLabels, Gauge>::default();
        // Built per scrape from the snapshot: each counter is set once.
        let write_txns = Family::<MemberLabels, Counter>::default();
        let writes = Family::<MemberLabels, Counter>::default();
        for shard in &s.shards {
            let labels = MemberLabels {
                member: shard.member.clone(),
            };
            up.get_or_create(&labels).set(i64::from(shard.up));
            keys.get_or_create(&labels)
                .set(i64::try_from(shard.keys).unwrap_or(i64::MAX));
            write_txns.get_or_create(&labels).inc_by(shard.write_txns);
            writes.get_or_create(&labels).inc_by(shard.writes);
        }
        registry.register("ste_router_shard_up", "1 if the shard is usable", up);
        registry.register(
            "ste_router_shard_keys",
            "Keys the index places on the shard",
            keys,
        );
        registry.register(
            "ste_router_shard_write_txns",
            "Write Txns the group commits sent to the shard",
            write_txns,
        );
        registry.register(
            "ste_router_shard_writes",
            "Client writes carried by those Txns (writes per Txn: this / write_txns)",
            writes,
        );
        registry.register_collector(Box::new(ShardRequestDurations(
            s.shards
                .iter()
                .map(|shard| (shard.member.clone(), shard.latency.clone()))
                .collect(),
        )));
        let mut out = String::new();
        // Writing into a String cannot fail.
        encode(&mut out, &registry).expect("encoding metrics into a String");
        out
    }
}

/// What the endpoints read: the store and the request metrics.
type Shared = (Arc<Store>, Arc<Metrics>);

async fn metrics(State((store, metrics)): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics.render(&snapshot(&store, &metrics)),
    )
}

/// 200 once the router serves the etcd API, 503 before.
async fn healthz(State((store, _)): State<Shared>) -> impl IntoResponse {
    if store.is_ready() {
        (axum::http::StatusCode::OK, "ok\n")
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`
/// completes.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    request_metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state((store, request_metrics));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The store's state for one scrape: the only place `/metrics` reads the
/// store.
fn snapshot(store: &Store, metrics: &Metrics) -> Snapshot {
    let stats = store.revisions().stats();
    let counts = store.key_counts();
    let shards = store
        .placement()
        .shards()
        .iter()
        .map(|shard| {
            let health = shard.health();
            let (write_txns, writes) = shard.commits().totals();
            ShardSnapshot {
                member: shard.name.clone(),
                up: health.healthy && !health.needs_resync,
                keys: counts.get(&shard.id).copied().unwrap_or(0) as u64,
                write_txns,
                writes,
                latency: shard.call_latency().clone(),
            }
        })
        .collect();
    Snapshot {
        revision: stats.current.0,
        compact_revision: stats.compacted.0,
        reserved_revision: stats.reserved.0,
        writes_in_flight: stats.in_flight as u64,
        event_log_events: stats.log_events as u64,
        event_log_bytes: stats.log_bytes as u64,
        event_log_oldest_revision: stats.log_oldest.0,
        watchers: metrics.watchers(),
        keys: store.index().len() as u64,
        ready: store.is_ready(),
        ring_generation: u64::from(store.placement().generation()),
        shards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn counters_and_histograms_keep_their_names_and_labels() {
        let metrics = Metrics::default();
        metrics.record("Put", "OK", 0.0003);
        metrics.record("Put", "OK", 2.0);
        metrics.record("Put", "NotFound", 0.01);
        metrics.ring_change_done(true);
        metrics.ring_change_done(false);
        metrics.ring_change_done(false);
        let text = metrics.render(&Snapshot::default());
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            value(
                &text,
                "ste_router_requests_total{method=\"Put\",code=\"OK\"}"
            ),
            Some("2")
        );
        assert_eq!(
            value(
                &text,
                "ste_router_requests_total{method=\"Put\",code=\"NotFound\"}"
            ),
            Some("1")
        );
        assert_eq!(value(&text, "ste_router_members_fenced_total"), Some("1"));
        assert_eq!(value(&text, "ste_router_ring_changes_total"), Some("2"));
        assert_eq!(
            value(
                &text,
                "ste_router_request_duration_seconds_bucket{le=\"0.0005\",method=\"Put\"}"
            )
            .or_else(|| value(
                &text,
                "ste_router_request_duration_seconds_bucket{method=\"Put\",le=\"0.0005\"}"
            )),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "ste_router_request_duration_seconds_count{method=\"Put\"}"
            ),
            Some("3")
        );
    }

    #[test]
    fn the_snapshot_becomes_gauges() {
        let metrics = Metrics::default();
        metrics.watchers_changed(2);
        metrics.watchers_changed(-3);
        assert_eq!(metrics.watchers(), 0, "clamped at 0");
        let node_a_latency = CallLatency::default();
        node_a_latency.by_method()[1].1.observe(0.0003);
        node_a_latency.by_method()[1].1.observe(0.002);
        node_a_latency.by_method()[0].1.observe(0.0004);
        let snapshot = Snapshot {
            revision: 42,
            compact_revision: 7,
            reserved_revision: 10_000,
            writes_in_flight: 3,
            event_log_events: 5,
            event_log_bytes: 512,
            event_log_oldest_revision: 8,
            watchers: 4,
            keys: 9,
            ready: true,
            ring_generation: 2,
            shards: vec![
                ShardSnapshot {
                    member: "node-a".into(),
                    up: true,
                    keys: 6,
                    write_txns: 10,
                    writes: 45,
                    latency: node_a_latency,
                },
                ShardSnapshot {
                    member: "node-b".into(),
                    up: false,
                    keys: 3,
                    ..ShardSnapshot::default()
                },
            ],
        };
        let text = metrics.render(&snapshot);
        for (series, expected) in [
            ("ste_router_revision", "42"),
            ("ste_router_compact_revision", "7"),
            ("ste_router_reserved_revision", "10000"),
            ("ste_router_writes_in_flight", "3"),
            ("ste_router_event_log_events", "5"),
            ("ste_router_event_log_bytes", "512"),
            ("ste_router_event_log_oldest_revision", "8"),
            ("ste_router_watchers", "4"),
            ("ste_router_keys", "9"),
            ("ste_router_ready", "1"),
            ("ste_router_ring_generation", "2"),
            ("ste_router_shard_up{member=\"node-a\"}", "1"),
            ("ste_router_shard_up{member=\"node-b\"}", "0"),
            ("ste_router_shard_keys{member=\"node-a\"}", "6"),
            ("ste_router_shard_write_txns_total{member=\"node-a\"}", "10"),
            ("ste_router_shard_writes_total{member=\"node-a\"}", "45"),
            ("ste_router_shard_keys{member=\"node-b\"}", "3"),
            ("ste_router_members_fenced_total", "0"),
            (
                "ste_router_shard_request_duration_seconds_count{member=\"node-a\",method=\"Txn\"}",
                "2",
            ),
            (
                "ste_router_shard_request_duration_seconds_bucket{le=\"0.0005\",member=\"node-a\",method=\"Txn\"}",
                "1",
            ),
            (
                "ste_router_shard_request_duration_seconds_count{member=\"node-a\",method=\"Range\"}",
                "1",
            ),
            (
                "ste_router_shard_request_duration_seconds_count{member=\"node-b\",method=\"Txn\"}",
                "0",
            ),
        ] {
            assert_eq!(value(&text, series), Some(expected), "{series}:\n{text}");
        }
        assert!(
            text.contains("# TYPE ste_router_shard_up gauge\n"),
            "{text}"
        );
    }
}
