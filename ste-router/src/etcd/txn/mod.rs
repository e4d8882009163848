//! Txn, laid out by shape (after kine's server package). kube-apiserver
//! sends four shapes, all on one key K (etcd's `client/v3/kubernetes`
//! `OptimisticPut`/`OptimisticDelete` and the apiserver's compactor):
//!
//! | shape      | compare                       | success  | failure   | file            |
//! |------------|-------------------------------|----------|-----------|-----------------|
//! | create     | mod_revision(K) == 0          | put K    | (get K)   | `create.rs`     |
//! | update     | mod_revision(K) == R, R > 0   | put K    | (get K)   | `update.rs`     |
//! | delete     | mod_revision(K) == R          | delete K | (get K)   | `delete.rs`     |
//! | compaction | version(K) == V               | put K    | (get K)   | `compaction.rs` |
//!
//! Anything else goes to `generic.rs`, which serves the general form these
//! are instances of and which also covers etcdctl's single-key
//! transactions: compares on one key K (any target and result), at most
//! one write (put K or delete K) and only in the success branch, and any
//! number of range reads; or read-only transactions on any keys.
//!
//! [`TxnShape::classify`] recognises the shape once; it picks the file that
//! serves the request and the metrics label. Every request is first checked
//! as etcd checks it (`validate.rs`), whatever its shape.

mod compaction;
mod create;
mod delete;
mod generic;
mod update;

use std::sync::Arc;

use ste_core::revision::GlobalRevision;
use ste_proto::etcd::etcdserverpb::{self as pb, compare, request_op, response_op};
use ste_proto::etcd::mvccpb;
use tonic::Status;

use super::{header, nested_header, validate};
use crate::store::Store;
use crate::store::write::{KeyWrite, WriteOp, WriteOutcome};

/// The shape of a Txn: which kube-apiserver request it is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnShape {
    /// Create: put K if absent.
    Create,
    /// Update (GuaranteedUpdate): put K if unchanged since revision R.
    Update,
    /// Delete: delete K if unchanged since revision R.
    Delete,
    /// The compactor's lease: put K if its version is V.
    Compaction,
    /// Any other transaction; `writes` is false for a read-only one.
    Generic {
        /// The success branch has a put or a delete.
        writes: bool,
    },
}

impl TxnShape {
    /// Recognises the shape of `request` (see the module docs). Pure and
    /// total: a request that matches no kube-apiserver shape is `Generic`,
    /// and malformed ones are refused later by validation.
    pub fn classify(request: &pb::TxnRequest) -> TxnShape {
        let writes = request.success.iter().any(|op| {
            matches!(
                op.request,
                Some(
                    request_op::Request::RequestPut(_) | request_op::Request::RequestDeleteRange(_)
                )
            )
        });
        let generic = TxnShape::Generic { writes };
        let [compare] = request.compare.as_slice() else {
            return generic;
        };
        let [write] = request.success.as_slice() else {
            return generic;
        };
        if !compare.range_end.is_empty()
            || compare.result() != pb::compare::CompareResult::Equal
            || !failure_reads_only(&request.failure, &compare.key)
        {
            return generic;
        }
        let key = compare.key.as_slice();
        let put_of_key = matches!(&write.request,
            Some(request_op::Request::RequestPut(put)) if put.key == key);
        let delete_of_key = matches!(&write.request,
            Some(request_op::Request::RequestDeleteRange(delete))
                if delete.key == key && delete.range_end.is_empty());
        match (compare.target(), &compare.target_union) {
            (pb::compare::CompareTarget::Mod, Some(compare::TargetUnion::ModRevision(0)))
                if put_of_key =>
            {
                TxnShape::Create
            }
            (pb::compare::CompareTarget::Mod, Some(compare::TargetUnion::ModRevision(_)))
                if put_of_key =>
            {
                TxnShape::Update
            }
            (pb::compare::CompareTarget::Mod, Some(compare::TargetUnion::ModRevision(_)))
                if delete_of_key =>
            {
                TxnShape::Delete
            }
            (pb::compare::CompareTarget::Version, Some(compare::TargetUnion::Version(_)))
                if put_of_key =>
            {
                TxnShape::Compaction
            }
            _ => generic,
        }
    }

    /// The label of the request metrics (`ste_router_requests_total`).
    pub fn label(self) -> &'static str {
        match self {
            TxnShape::Create => "Txn.create",
            TxnShape::Update => "Txn.update",
            TxnShape::Delete => "Txn.delete",
            TxnShape::Compaction => "Txn.compaction",
            TxnShape::Generic { writes: false } => "Txn.read",
            TxnShape::Generic { writes: true } => "Txn.generic",
        }
    }
}

/// The generic planner's verdict on `request` (see `generic.rs`), for
/// [`super::fuzzing`].
pub(super) fn plan_generic(request: &pb::TxnRequest) -> Result<Option<(usize, KeyWrite)>, Status> {
    generic::plan(request)
}

/// True when `failure` is at most one read of `key` alone.
fn failure_reads_only(failure: &[pb::RequestOp], key: &[u8]) -> bool {
    match failure {
        [] => true,
        [op] => matches!(&op.request,
            Some(request_op::Request::RequestRange(range))
                if range.key == key && range.range_end.is_empty()),
        _ => false,
    }
}

/// Serves `request`, whose shape is `shape` (from [`TxnShape::classify`]).
///
/// Errors: NOT_SERVING before the start-up scan, etcd's validation errors,
/// INVALID_ARGUMENT for a generic transaction the router does not serve,
/// and the write path's errors.
pub async fn serve(
    store: &Arc<Store>,
    shape: TxnShape,
    request: pb::TxnRequest,
) -> Result<pb::TxnResponse, Status> {
    store.check_ready()?;
    validate::txn(&request)?;
    match shape {
        TxnShape::Create => create::serve(store, request).await,
        TxnShape::Update => update::serve(store, request).await,
        TxnShape::Delete => delete::serve(store, request).await,
        TxnShape::Compaction => compaction::serve(store, request).await,
        TxnShape::Generic { .. } => generic::serve(store, request).await,
    }
}

/// Serves a one-key conditional put (create, update, compaction): the put
/// of the success branch, guarded by the request's compares.
async fn conditional_put(
    store: &Arc<Store>,
    mut request: pb::TxnRequest,
) -> Result<pb::TxnResponse, Status> {
    // Taken, not cloned: the value is the request's bulk.
    let put = std::mem::take(&mut request.success)
        .into_iter()
        .next()
        .and_then(|op| op.request);
    let Some(request_op::Request::RequestPut(put)) = put else {
        return Err(Status::internal("ste-router: a put shape without its put"));
    };
    let want_prev = put.prev_kv;
    let key = put.key.clone();
    let outcome = store
        .write_key(KeyWrite {
            key: put.key,
            op: WriteOp::Put {
                value: put.value,
                lease: put.lease,
                ignore_value: put.ignore_value,
                ignore_lease: put.ignore_lease,
            },
            compares: request.compare,
        })
        .await?;
    match outcome {
        WriteOutcome::Applied { revision, prev } => Ok(succeeded(
            store,
            revision,
            response_op::Response::ResponsePut(pb::PutResponse {
                header: nested_header(revision),
                prev_kv: if want_prev { prev } else { None },
            }),
        )),
        WriteOutcome::CompareFailed => failed(store, &key, &request.failure).await,
        WriteOutcome::NothingDeleted => Err(Status::internal(
            "ste-router: a conditional put answered as a delete",
        )),
    }
}

/// The answer to a one-write Txn whose write was applied at `revision`.
/// kube-apiserver takes the object's new resourceVersion from the header,
/// so it carries exactly the write's revision.
fn succeeded(
    store: &Store,
    revision: GlobalRevision,
    written: response_op::Response,
) -> pb::TxnResponse {
    pb::TxnResponse {
        header: header(store, revision),
        succeeded: true,
        responses: vec![pb::ResponseOp {
            response: Some(written),
        }],
    }
}

/// The answer when the compare failed: the failure branch's reads, once
/// the write that made the compare fail is visible to them (kube-apiserver
/// retries its update with the object it reads here).
async fn failed(
    store: &Arc<Store>,
    key: &[u8],
    failure: &[pb::RequestOp],
) -> Result<pb::TxnResponse, Status> {
    if let Some(entry) = store.index().get(key) {
        store.revisions().wait_visible(entry.modified).await;
    }
    generic::respond(store, failure, None, false, None).await
}

/// A DeleteRange answer for a Txn: `deleted` keys at `revision`.
fn delete_response(
    revision: GlobalRevision,
    deleted: i64,
    prev_kvs: Vec<mvccpb::KeyValue>,
) -> response_op::Response {
    response_op::Response::ResponseDeleteRange(pb::DeleteRangeResponse {
        header: nested_header(revision),
        deleted,
        prev_kvs,
    })
}

#[cfg(test)]
mod tests;
