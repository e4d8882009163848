//! Request metrics and the `/metrics` endpoint (Prometheus text format).
//! Counters and histograms are kept here; gauges are read from the store
//! at scrape time so they cannot drift.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::store::Store;

/// Latency buckets in seconds, from a loopback round trip to a slow shard.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    total: u64,
    sum: f64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    watchers: std::sync::atomic::AtomicI64,
    fenced: std::sync::atomic::AtomicU64,
    ring_changes: std::sync::atomic::AtomicU64,
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

    pub fn record(&self, method: &str, code: &str, seconds: f64) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((method.to_owned(), code.to_owned()))
            .or_default() += 1;
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let histogram = latency.entry(method.to_owned()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                histogram.counts[i] += 1;
            }
        }
        histogram.total += 1;
        histogram.sum += seconds;
    }

    pub fn watchers_changed(&self, delta: i64) {
        self.watchers
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn ring_change_done(&self, fence: bool) {
        let counter = if fence {
            &self.fenced
        } else {
            &self.ring_changes
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn watchers(&self) -> u64 {
        self.watchers
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(0) as u64
    }

    pub fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP ste_router_requests_total etcd API requests by method and gRPC code.\n",
        );
        out.push_str("# TYPE ste_router_requests_total counter\n");
        for ((method, code), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "ste_router_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP ste_router_request_duration_seconds etcd API request latency.\n");
        out.push_str("# TYPE ste_router_request_duration_seconds histogram\n");
        for (method, h) in self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "ste_router_request_duration_seconds_bucket{{method=\"{method}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "ste_router_request_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                h.total
            );
            let _ = writeln!(
                out,
                "ste_router_request_duration_seconds_sum{{method=\"{method}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "ste_router_request_duration_seconds_count{{method=\"{method}\"}} {}",
                h.total
            );
        }
        let stats = store.revisions().stats();
        let mut gauge = |name: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "ste_router_revision",
            "Current global revision (every write at or below it completed).",
            stats.current.0 as f64,
        );
        gauge(
            "ste_router_compact_revision",
            "Global compaction point.",
            stats.compacted.0 as f64,
        );
        gauge(
            "ste_router_reserved_revision",
            "Revision high-water mark persisted in the state store.",
            stats.reserved.0 as f64,
        );
        gauge(
            "ste_router_writes_in_flight",
            "Allocated revisions not yet completed.",
            stats.in_flight as f64,
        );
        gauge(
            "ste_router_event_log_events",
            "Events in the watch event log.",
            stats.log_events as f64,
        );
        gauge(
            "ste_router_event_log_bytes",
            "Approximate size of the watch event log.",
            stats.log_bytes as f64,
        );
        gauge(
            "ste_router_event_log_oldest_revision",
            "Oldest revision a watch can start from.",
            stats.log_oldest.0 as f64,
        );
        gauge(
            "ste_router_watchers",
            "Open watches.",
            self.watchers() as f64,
        );
        gauge(
            "ste_router_keys",
            "Keys in the index.",
            store.index().len() as f64,
        );
        gauge(
            "ste_router_ready",
            "1 once the start-up scan finished.",
            f64::from(u8::from(store.is_ready())),
        );
        gauge(
            "ste_router_ring_generation",
            "Ring generation.",
            u64::from(store.placement().generation()) as f64,
        );
        for (name, help, counter) in [
            (
                "ste_router_members_fenced_total",
                "Members fenced after their shard was lost.",
                &self.fenced,
            ),
            (
                "ste_router_ring_changes_total",
                "Completed joins, leaves and resumes.",
                &self.ring_changes,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        let counts = store.key_counts();
        out.push_str("# HELP ste_router_shard_up 1 if the shard is usable.\n# TYPE ste_router_shard_up gauge\n");
        let shards = store.placement().shards();
        for shard in &shards {
            let health = shard.health();
            let up = u8::from(health.healthy && !health.needs_resync);
            let _ = writeln!(out, "ste_router_shard_up{{member=\"{}\"}} {up}", shard.name);
        }
        out.push_str("# HELP ste_router_shard_keys Keys the index places on the shard.\n# TYPE ste_router_shard_keys gauge\n");
        for shard in &shards {
            let keys = counts.get(&shard.id).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "ste_router_shard_keys{{member=\"{}\"}} {keys}",
                shard.name
            );
        }
        out
    }
}

type Shared = (Arc<Store>, Arc<Metrics>);

async fn metrics(State((store, metrics)): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(&store),
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

pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    metrics_: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state((store, metrics_));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
