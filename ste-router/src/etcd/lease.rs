//! Lease: granted, renewed and expired by the router (the lease table is
//! `store/leases.rs`, grant/revoke/expiry `store/lease_ops.rs`).

use std::sync::Arc;

use ste_proto::etcd::etcdserverpb::{self as pb, lease_server};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::header;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// The Lease service; its keep-alive streams end with UNAVAILABLE when the
/// router stops.
pub struct Lease {
    store: Arc<Store>,
    shutdown: Shutdown,
}

impl Lease {
    /// The service over `store`; streams end when `shutdown` is set.
    pub fn new(store: Arc<Store>, shutdown: Shutdown) -> Self {
        Lease { store, shutdown }
    }
}

#[tonic::async_trait]
impl lease_server::Lease for Lease {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let store = &self.store;
        store.check_ready()?;
        let request = request.into_inner();
        let (id, ttl) = store.lease_grant(request.id, request.ttl).await?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: header(store, store.revisions().current()),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let store = &self.store;
        store.check_ready()?;
        let revision = store.lease_revoke(request.into_inner().id).await?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: header(
                store,
                revision.unwrap_or_else(|| store.revisions().current()),
            ),
        }))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let store = self.store.clone();
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    request = requests.message() => match request {
                        Ok(Some(request)) => request,
                        Ok(None) | Err(_) => break,
                    },
                    _ = shutdown.wait() => {
                        let _ = tx.send(Err(super::watch::shutting_down())).await;
                        break;
                    }
                };
                // An unknown lease answers TTL 0, as etcd does: the client
                // then knows the lease has expired.
                let ttl = store.leases().keep_alive(request.id).unwrap_or(0);
                let response = pb::LeaseKeepAliveResponse {
                    header: header(&store, store.revisions().current()),
                    id: request.id,
                    ttl,
                };
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let store = &self.store;
        let request = request.into_inner();
        let header = header(store, store.revisions().current());
        let response = match store.leases().info(request.id) {
            Some(info) => pb::LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: info.remaining,
                granted_ttl: info.granted,
                keys: if request.keys { info.keys } else { Vec::new() },
            },
            // etcd answers -1 for a lease that does not exist.
            None => pb::LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: -1,
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let store = &self.store;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: header(store, store.revisions().current()),
            leases: store
                .leases()
                .ids()
                .into_iter()
                .map(|id| pb::LeaseStatus { id })
                .collect(),
        }))
    }
}
