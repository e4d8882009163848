//! kube-apiserver's delete (`OptimisticDelete`):
//! `If(mod_revision(K) == R) Then(delete K)`, optionally `Else(get K)`.
//! With R = 0 on an absent key the compare holds and nothing is deleted:
//! like etcd, no revision is used and `deleted` is 0.

use std::sync::Arc;

use ste_proto::etcd::etcdserverpb::{self as pb, request_op};
use tonic::Status;

use super::{delete_response, failed, header, succeeded};
use crate::store::Store;
use crate::store::write::{KeyWrite, WriteOp, WriteOutcome};

/// Serves a delete.
pub(super) async fn serve(
    store: &Arc<Store>,
    request: pb::TxnRequest,
) -> Result<pb::TxnResponse, Status> {
    let Some(request_op::Request::RequestDeleteRange(delete)) = request.success[0].request.clone()
    else {
        return Err(Status::internal(
            "ste-router: a delete shape without its delete",
        ));
    };
    let key = delete.key.clone();
    let outcome = store
        .write_key(KeyWrite {
            key: delete.key,
            op: WriteOp::Delete,
            compares: request.compare,
        })
        .await?;
    match outcome {
        WriteOutcome::Applied { revision, prev } => {
            let prev_kvs = if delete.prev_kv {
                prev.into_iter().collect()
            } else {
                Vec::new()
            };
            Ok(succeeded(
                store,
                revision,
                delete_response(revision, 1, prev_kvs),
            ))
        }
        WriteOutcome::NothingDeleted => {
            let current = store.revisions().current();
            Ok(pb::TxnResponse {
                header: header(store, current),
                ..succeeded(store, current, delete_response(current, 0, Vec::new()))
            })
        }
        WriteOutcome::CompareFailed => failed(store, &key, &request.failure).await,
    }
}
