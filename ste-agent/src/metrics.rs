//! `/metrics` in the Prometheus text exposition format, rendered from the
//! status snapshot on every scrape (no metric registry to keep in sync).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::status::Status;

pub fn render(status: &Status) -> String {
    let s = status.snapshot();
    let node = escape(&status.identity.node_name);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{node=\"{node}\"}} {value}");
    };
    let up = if s.shard.healthy { 1.0 } else { 0.0 };
    metric(
        "ste_agent_shard_up",
        "gauge",
        "1 if the etcd shard answered its last health probe.",
        up,
    );
    metric(
        "ste_agent_serving",
        "gauge",
        "1 if the agent reports SERVING on grpc.health.v1.",
        f64::from(u8::from(s.is_serving())),
    );
    metric(
        "ste_agent_shard_epoch",
        "gauge",
        "Shard epoch: +1 for every fresh etcd start.",
        s.epoch as f64,
    );
    metric(
        "ste_agent_etcd_restarts_total",
        "counter",
        "etcd restarts by the supervisor.",
        s.restarts as f64,
    );
    metric(
        "ste_agent_shard_revision",
        "gauge",
        "The shard's own etcd revision.",
        s.shard.revision as f64,
    );
    metric(
        "ste_agent_shard_db_size_bytes",
        "gauge",
        "Size of the shard's backend database.",
        s.shard.db_size_bytes as f64,
    );
    metric(
        "ste_agent_shard_quota_bytes",
        "gauge",
        "The shard's backend quota (--quota-backend-bytes).",
        status.identity.quota_backend_bytes as f64,
    );
    metric(
        "ste_agent_shard_keys",
        "gauge",
        "Keys under the configured prefix on the shard.",
        s.shard.key_count as f64,
    );
    metric(
        "ste_agent_shard_alarms",
        "gauge",
        "Active etcd alarms (e.g. NOSPACE) on the shard.",
        s.shard.alarms.len() as f64,
    );
    metric(
        "ste_agent_tmpfs_size_bytes",
        "gauge",
        "Size of the shard's tmpfs.",
        s.tmpfs.size_bytes as f64,
    );
    metric(
        "ste_agent_tmpfs_used_bytes",
        "gauge",
        "Bytes used on the shard's tmpfs.",
        s.tmpfs.used_bytes as f64,
    );
    metric(
        "ste_agent_ring_registered",
        "gauge",
        "1 if the router knows this agent (--router; last Register/Heartbeat answer).",
        f64::from(u8::from(s.ring.registered)),
    );
    metric(
        "ste_agent_ring_member",
        "gauge",
        "1 if the router last said this agent's shard is a ring member.",
        f64::from(u8::from(s.ring.member)),
    );
    metric(
        "ste_agent_ring_generation",
        "gauge",
        "Ring generation from the router's last answer (0 before any).",
        s.ring.generation_seen as f64,
    );
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&status),
    )
}

/// 200 while serving, 503 otherwise: for HTTP-only probes and load balancers.
async fn healthz(State(status): State<Arc<Status>>) -> impl IntoResponse {
    if status.snapshot().is_serving() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
    }
}

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
