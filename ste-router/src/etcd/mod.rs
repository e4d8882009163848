//! The etcd v3 API the router serves, laid out by request shape (after
//! kine's server package): find how an update is served in `txn.rs`, a list
//! in `range.rs`, a watch in `watch.rs`.

mod cluster;
mod compact;
mod delete;
#[doc(hidden)]
pub mod fuzzing;
mod kv;
mod lease;
mod maintenance;
mod put;
mod range;
mod txn;
mod validate;
mod watch;

use std::sync::Arc;

use ste_core::revision::GlobalRevision;
use ste_proto::etcd::etcdserverpb as pb;
use ste_proto::etcd::etcdserverpb::cluster_server::ClusterServer;
use ste_proto::etcd::etcdserverpb::kv_server::KvServer;
use ste_proto::etcd::etcdserverpb::lease_server::LeaseServer;
use ste_proto::etcd::etcdserverpb::maintenance_server::MaintenanceServer;
use ste_proto::etcd::etcdserverpb::watch_server::WatchServer;
use tonic::service::Routes;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// The largest answer the etcd API sends, in encoded bytes (64 MiB). etcd
/// itself sends up to 2 GiB (`math.MaxInt32`), but the router assembles an
/// answer in memory from its shards' answers, so it bounds one answer; a
/// larger Range is refused with OUT_OF_RANGE saying to page it.
/// kube-apiserver pages its lists (500 keys for clients, 10,000 for its watch
/// cache), far below this.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

pub use txn::TxnShape;
pub use watch::WatchSettings;

/// The response header etcd puts on every answer.
pub fn header(store: &Store, revision: GlobalRevision) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: store.identity().cluster_id,
        member_id: store.identity().member_id,
        revision: revision.0,
        raft_term: 1,
    })
}

/// The header of a response nested in a Txn: etcd fills in only the
/// revision (cluster, member and term stay zero).
pub fn nested_header(revision: GlobalRevision) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision: revision.0,
        ..Default::default()
    })
}

/// Every etcd service, plus a fallback that answers any other method with
/// UNIMPLEMENTED naming it (tonic's default says nothing).
pub fn routes(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    watch: WatchSettings,
    max_message_bytes: usize,
    shutdown: Shutdown,
) -> Routes {
    let kv = KvServer::new(kv::Kv::new(store.clone(), metrics.clone()))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let watch = WatchServer::new(watch::Watch::new(
        store.clone(),
        metrics,
        watch,
        shutdown.clone(),
    ))
    .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let lease = LeaseServer::new(lease::Lease::new(store.clone(), shutdown));
    let maintenance = MaintenanceServer::new(maintenance::Maintenance::new(store.clone()));
    let cluster = ClusterServer::new(cluster::Cluster::new(store));
    let mut builder = Routes::builder();
    builder
        .add_service(kv)
        .add_service(watch)
        .add_service(lease)
        .add_service(maintenance)
        .add_service(cluster);
    let routes = builder.routes();
    Routes::from(
        routes
            .into_axum_router()
            .fallback(unimplemented)
            .layer(axum::middleware::from_fn(name_unimplemented))
            .layer(axum::middleware::from_fn(size_error_like_etcd)),
    )
}

fn unimplemented_message(path: &str) -> String {
    let method = path.trim_start_matches('/');
    format!(
        "ste-router does not implement {method}: it serves the etcd KV, Watch, Lease, \
         Maintenance.Status/Alarm and Cluster.MemberList calls that kube-apiserver and etcdctl use"
    )
}

async fn unimplemented(uri: axum::http::Uri) -> axum::response::Response {
    tonic::Status::unimplemented(unimplemented_message(uri.path())).into_http()
}

/// A method of a service we serve but did not implement (e.g.
/// Maintenance/Defragment) gets tonic's bare UNIMPLEMENTED; name the call.
async fn name_unimplemented(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let bare = headers.get("grpc-status").is_some_and(|s| s == "12")
        && headers.get("grpc-message").is_none_or(|m| m.is_empty());
    if bare && let Ok(message) = axum::http::HeaderValue::from_str(&unimplemented_message(&path)) {
        headers.insert("grpc-message", message);
    }
    response
}

/// tonic refuses a request message over the decoding limit with OUT_OF_RANGE
/// and its own text; grpc-go, and so etcd, with RESOURCE_EXHAUSTED and
/// "grpc: received message larger than max (N vs. M)". Answer as etcd does.
async fn size_error_like_etcd(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let too_large = tonic::Status::from_header_map(headers)
        .filter(|status| status.code() == tonic::Code::OutOfRange)
        .and_then(|status| decoded_too_large(status.message()));
    if let Some((found, limit)) = too_large {
        let status = tonic::Status::resource_exhausted(format!(
            "grpc: received message larger than max ({found} vs. {limit})"
        ));
        let _ = status.add_header(headers);
    }
    response
}

/// The sizes in tonic's "decoded message length too large" error.
fn decoded_too_large(message: &str) -> Option<(usize, usize)> {
    let rest = message.strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((found.parse().ok()?, limit.parse().ok()?))
}
