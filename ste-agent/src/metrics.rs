//! `/metrics` (OpenMetrics text, encoded by `prometheus-client`) and
//! `/healthz`, on `--metrics-listen`.
//!
//! Every value is read from one [`Status`] snapshot at scrape time: the
//! agent keeps no metric registry of its own that could drift from what its
//! gRPC status reports. Every series carries the label `node="<node-name>"`.
//! Counters are exposed with the OpenMetrics `_total` suffix
//! (`ste_agent_etcd_restarts_total`; its `# TYPE` line names the family,
//! `ste_agent_etcd_restarts`).

use std::borrow::Cow;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::status::Status;

/// The `Content-Type` of `/metrics`: what `prometheus-client`'s text
/// encoder produces. Prometheus scrapes it (and prefers it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Saturates instead of wrapping: a gauge is an `i64`, and a value past
/// `i64::MAX` (never seen in practice) should read as huge, not negative.
fn gauge(value: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// `value` escaped for a label in the text format (`\\`, `\"`, `\n`).
/// prometheus-client 0.24 writes label values verbatim
/// (prometheus/client_rust#151), and `--node-name` is free text: one quote
/// in it would make Prometheus reject the whole scrape.
fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics of `status` as OpenMetrics text, ending in `# EOF`. Names,
/// help and meaning are documented in docs/agent.md.
pub fn render(status: &Status) -> String {
    let s = status.snapshot();
    let node = (
        Cow::Borrowed("node"),
        Cow::Owned(escape_label_value(&status.identity.node_name)),
    );
    let mut registry = Registry::with_labels(std::iter::once(node));
    let flag = |on: bool| ConstGauge::new(i64::from(on));
    registry.register(
        "ste_agent_shard_up",
        "1 if the etcd shard answered its last health probe",
        flag(s.shard.healthy),
    );
    registry.register(
        "ste_agent_serving",
        "1 if the agent reports SERVING on grpc.health.v1",
        flag(s.is_serving()),
    );
    registry.register(
        "ste_agent_shard_epoch",
        "Shard epoch: +1 for every fresh etcd start",
        gauge(s.epoch),
    );
    // Registered without `_total`: the encoder appends it to counters.
    registry.register(
        "ste_agent_etcd_restarts",
        "etcd restarts by the supervisor",
        ConstCounter::new(s.restarts),
    );
    registry.register(
        "ste_agent_shard_revision",
        "The shard's own etcd revision",
        ConstGauge::new(s.shard.revision),
    );
    registry.register(
        "ste_agent_shard_db_size_bytes",
        "Size of the shard's backend database",
        ConstGauge::new(s.shard.db_size_bytes),
    );
    registry.register(
        "ste_agent_shard_quota_bytes",
        "The shard's backend quota (--quota-backend-bytes)",
        ConstGauge::new(status.identity.quota_backend_bytes),
    );
    registry.register(
        "ste_agent_shard_keys",
        "Keys under the configured prefix on the shard",
        ConstGauge::new(s.shard.key_count),
    );
    registry.register(
        "ste_agent_shard_alarms",
        "Active etcd alarms (e.g. NOSPACE) on the shard",
        gauge(s.shard.alarms.len() as u64),
    );
    registry.register(
        "ste_agent_tmpfs_size_bytes",
        "Size of the shard's tmpfs",
        gauge(s.tmpfs.size_bytes),
    );
    registry.register(
        "ste_agent_tmpfs_used_bytes",
        "Bytes used on the shard's tmpfs",
        gauge(s.tmpfs.used_bytes),
    );
    registry.register(
        "ste_agent_ring_registered",
        "1 if the router knows this agent (--router; last Register/Heartbeat answer)",
        flag(s.ring.registered),
    );
    registry.register(
        "ste_agent_ring_member",
        "1 if the router last said this agent's shard is a ring member",
        flag(s.ring.member),
    );
    registry.register(
        "ste_agent_ring_generation",
        "Ring generation from the router's last answer (0 before any)",
        gauge(s.ring.generation_seen),
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    encode(&mut out, &registry).expect("encoding metrics into a String");
    out
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&status))
}

/// 200 while serving, 503 otherwise: for HTTP-only probes and load balancers.
async fn healthz(State(status): State<Arc<Status>>) -> impl IntoResponse {
    if status.snapshot().is_serving() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`
/// completes, then finishes the requests in progress and returns.
///
/// # Errors
///
/// An I/O error of the listener (accepting connections failed for good).
pub async fn serve(
    listener: TcpListener,
    status: Arc<Status>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(status);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::status::Identity;

    fn status() -> Status {
        Status::new(Identity {
            node_name: "node-\"a\"".into(),
            endpoint: "http://127.0.0.1:2279".into(),
            tmpfs_path: "/var/lib/ste/shard".into(),
            tmpfs_managed: true,
            quota_backend_bytes: 1 << 30,
            started: Instant::now(),
        })
    }

    #[test]
    fn every_series_is_labelled_with_the_node_and_counters_end_in_total() {
        let text = render(&status());
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE ste_agent_etcd_restarts counter\n"),
            "{text}"
        );
        assert!(
            text.contains("ste_agent_etcd_restarts_total{node=\"node-\\\"a\\\"\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("ste_agent_shard_quota_bytes{node=\"node-\\\"a\\\"\"} 1073741824\n"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("{node=\"node-\\\"a\\\"\"} "), "{line}");
        }
    }

    #[test]
    fn every_documented_metric_is_exposed() {
        let text = render(&status());
        for name in [
            "ste_agent_shard_up",
            "ste_agent_serving",
            "ste_agent_shard_epoch",
            "ste_agent_etcd_restarts_total",
            "ste_agent_shard_revision",
            "ste_agent_shard_db_size_bytes",
            "ste_agent_shard_quota_bytes",
            "ste_agent_shard_keys",
            "ste_agent_shard_alarms",
            "ste_agent_tmpfs_size_bytes",
            "ste_agent_tmpfs_used_bytes",
            "ste_agent_ring_registered",
            "ste_agent_ring_member",
            "ste_agent_ring_generation",
        ] {
            assert!(
                text.contains(&format!("\n{name}{{")),
                "{name} missing:\n{text}"
            );
        }
    }
}
