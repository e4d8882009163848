//! etcdserverpb.KV: a thin dispatcher; each request kind has its own file.

use std::sync::Arc;

use ste_proto::etcd::etcdserverpb as pb;
use ste_proto::etcd::etcdserverpb::kv_server;
use tonic::{Request, Response, Status};

use super::txn::TxnShape;
use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::store::Store;

/// Refuses a write request larger than `--max-request-bytes`, as etcd
/// refuses one whose Raft entry would be (etcd measures the request inside
/// its Raft envelope, a few bytes more; Range is not a Raft entry and is
/// not limited).
fn check_size<T: prost::Message>(store: &Store, request: &Request<T>) -> Result<(), Status> {
    if request.get_ref().encoded_len() > store.config().max_request_bytes {
        return Err(StoreError::TooLarge.into());
    }
    Ok(())
}

/// Refuses an answer over [`super::MAX_RESPONSE_BYTES`] with a message that
/// says what to do, rather than the transport's bare "encoded message length
/// too large" (both OUT_OF_RANGE).
fn check_response_size(response: &pb::RangeResponse) -> Result<(), Status> {
    let size = prost::Message::encoded_len(response);
    if size > super::MAX_RESPONSE_BYTES {
        return Err(Status::out_of_range(format!(
            "ste-router: the answer is {} bytes, over the router's limit of {} bytes for one \
             response; ask for fewer keys at a time (a Range with limit)",
            size,
            super::MAX_RESPONSE_BYTES
        )));
    }
    Ok(())
}

/// The KV service.
pub struct Kv {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

impl Kv {
    /// The service over `store`, recording each request in `metrics`.
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        Kv { store, metrics }
    }
}

#[tonic::async_trait]
impl kv_server::Kv for Kv {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let store = &self.store;
        let method = if request.get_ref().range_end.is_empty() {
            "Range.get"
        } else {
            "Range.list"
        };
        let answer = async {
            let response = super::range::range(store, request.into_inner()).await?;
            check_response_size(&response)?;
            Ok(response)
        };
        self.metrics
            .observe(method, answer)
            .await
            .map(Response::new)
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let store = &self.store;
        check_size(store, &request)?;
        self.metrics
            .observe("Put", super::put::put(store, request.into_inner()))
            .await
            .map(Response::new)
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let store = &self.store;
        check_size(store, &request)?;
        self.metrics
            .observe(
                "DeleteRange",
                super::delete::delete_range(store, request.into_inner()),
            )
            .await
            .map(Response::new)
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let store = &self.store;
        check_size(store, &request)?;
        let request = request.into_inner();
        let shape = TxnShape::classify(&request);
        self.metrics
            .observe(shape.label(), super::txn::serve(store, shape, request))
            .await
            .map(Response::new)
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let store = &self.store;
        check_size(store, &request)?;
        self.metrics
            .observe(
                "Compact",
                super::compact::compact(store, request.into_inner()),
            )
            .await
            .map(Response::new)
    }
}
