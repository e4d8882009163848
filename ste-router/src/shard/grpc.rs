//! [`ShardClient`] over gRPC: the router's connection to a real shard etcd.

use std::time::Duration;

use ste_proto::etcd::etcdserverpb as pb;
use ste_proto::etcd::etcdserverpb::kv_client::KvClient;
use ste_proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use super::{ShardClient, ShardTimeouts};
use crate::error::StoreError;

/// Largest message either way, in bytes: a page of a start-up scan or a
/// migration chunk can exceed tonic's 4 MiB default.
const MAX_MESSAGE: usize = 64 << 20;

/// HTTP/2 keep-alive ping interval: a shard that vanished without closing
/// the connection is noticed within this plus [`KEEP_ALIVE_TIMEOUT`].
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a keep-alive ping may go unanswered before the connection is
/// dropped.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A lazily connected gRPC channel to one shard's etcd, with its KV and
/// Maintenance clients.
#[derive(Debug, Clone)]
pub struct GrpcShardClient {
    kv: KvClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
}

impl GrpcShardClient {
    /// Sets up (but does not open) a channel to `endpoint` (`http://` or
    /// `https://host:port`): connect and per-request timeouts from
    /// `timeouts`, TLS with the system roots plus `timeouts.tls` for
    /// `https://`, TCP_NODELAY, HTTP/2 keep-alive, 64 MiB messages.
    ///
    /// Errors: [`StoreError::InvalidArgument`] naming the endpoint when it is
    /// not a valid URI or the TLS configuration is rejected. An unreachable
    /// shard is not an error here: calls fail later with UNAVAILABLE.
    pub fn connect(endpoint: &str, timeouts: &ShardTimeouts) -> Result<Self, StoreError> {
        let bad = |e: &dyn std::fmt::Display| {
            StoreError::InvalidArgument(format!("bad shard endpoint {endpoint:?}: {e}"))
        };
        let https = endpoint.strip_prefix("https://");
        let own_tls = https.zip(timeouts.tls.clone());
        // With the router's own TLS connector tonic must not add its TLS:
        // it sees the plain form of the URL, the connector does the TLS.
        let uri = match own_tls {
            Some((rest, _)) => format!("http://{rest}"),
            None => endpoint.to_owned(),
        };
        let mut channel = Endpoint::from_shared(uri).map_err(|e| bad(&e))?;
        if https.is_some() && own_tls.is_none() {
            let tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            channel = channel.tls_config(tls).map_err(|e| bad(&e))?;
        }
        let channel = channel
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
        let channel = match own_tls {
            Some((_, tls)) => {
                channel.connect_with_connector_lazy(tower::service_fn(move |uri: http::Uri| {
                    let tls = tls.clone();
                    async move {
                        let host = uri.host().unwrap_or_default().to_owned();
                        let port = uri.port_u16().unwrap_or(443);
                        let stream = tls.connect(&host, port).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
            }
            None => channel.connect_lazy(),
        };
        Ok(GrpcShardClient {
            kv: KvClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            maintenance: MaintenanceClient::new(channel),
        })
    }
}

#[tonic::async_trait]
impl ShardClient for GrpcShardClient {
    async fn range(&self, request: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        Ok(self.kv.clone().range(request).await?.into_inner())
    }

    async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        Ok(self.kv.clone().txn(request).await?.into_inner())
    }

    async fn compact(
        &self,
        request: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, Status> {
        Ok(self.kv.clone().compact(request).await?.into_inner())
    }

    async fn status(&self, request: pb::StatusRequest) -> Result<pb::StatusResponse, Status> {
        Ok(self.maintenance.clone().status(request).await?.into_inner())
    }

    async fn alarm(&self, request: pb::AlarmRequest) -> Result<pb::AlarmResponse, Status> {
        Ok(self.maintenance.clone().alarm(request).await?.into_inner())
    }
}
