//! An unconditional Put (etcdctl put; kube-apiserver writes through Txn).

use std::sync::Arc;
use ste_proto::etcd::etcdserverpb as pb;
use tonic::Status;

use super::header;
use crate::store::Store;
use crate::store::write::{KeyWrite, WriteOp, WriteOutcome};

/// Serves a Put.
///
/// Errors: etcd's validation errors, and the write path's.
pub async fn put(store: &Arc<Store>, request: pb::PutRequest) -> Result<pb::PutResponse, Status> {
    super::validate::put(&request)?;
    let want_prev = request.prev_kv;
    let outcome = store
        .write_key(KeyWrite {
            key: request.key,
            op: WriteOp::Put {
                value: request.value,
                lease: request.lease,
                ignore_value: request.ignore_value,
                ignore_lease: request.ignore_lease,
            },
            compares: Vec::new(),
        })
        .await?;
    match outcome {
        WriteOutcome::Applied { revision, prev } => Ok(pb::PutResponse {
            header: header(store, revision),
            prev_kv: if want_prev { prev } else { None },
        }),
        WriteOutcome::CompareFailed | WriteOutcome::NothingDeleted => Err(Status::internal(
            "ste-router: an unconditional put was not applied",
        )),
    }
}
