//! The general Txn the router serves: compares on one key K (any target
//! and result), at most one write (put K or delete K) and only in the
//! success branch, and any number of range reads; or a read-only
//! transaction on any keys (etcdctl's transactions, and kube-apiserver's
//! shapes when a field differs from what `mod.rs` recognises). Everything
//! else is refused with INVALID_ARGUMENT saying what is supported.

use std::sync::Arc;
use ste_core::keyrange::KeyRange;
use ste_core::revision::GlobalRevision;
use ste_proto::etcd::etcdserverpb::{self as pb, request_op, response_op};
use tonic::Status;

use super::{header, nested_header};
use crate::error::StoreError;
use crate::store::Store;
use crate::store::compare::{compare_holds, needs_value};
use crate::store::write::{KeyWrite, WriteOp, WriteOutcome};

const SUPPORTED: &str = "ste-router supports transactions whose compares are on one key, \
     with at most one write (a put or a single-key delete of that key) in the success branch \
     and any range reads, as kube-apiserver and etcdctl send; or read-only transactions";

fn invalid(detail: &str) -> Status {
    StoreError::InvalidArgument(format!("{SUPPORTED}; {detail}")).into()
}

/// [`plan`] for the unit tests.
#[cfg(test)]
pub(super) fn plan_for_tests(
    request: &pb::TxnRequest,
) -> Result<Option<(usize, KeyWrite)>, Status> {
    plan(request)
}

/// The one write of the success branch, if any, checked against the rules.
pub(super) fn plan(request: &pb::TxnRequest) -> Result<Option<(usize, KeyWrite)>, Status> {
    if request.compare.iter().any(|c| !c.range_end.is_empty()) {
        return Err(invalid("a compare has a range_end"));
    }
    let mut write = None;
    for (branch_name, branch) in [("success", &request.success), ("failure", &request.failure)] {
        for (position, op) in branch.iter().enumerate() {
            let found = match &op.request {
                Some(request_op::Request::RequestRange(_)) => None,
                Some(request_op::Request::RequestPut(put)) => Some(KeyWrite {
                    key: put.key.clone(),
                    op: WriteOp::Put {
                        value: put.value.clone(),
                        lease: put.lease,
                        ignore_value: put.ignore_value,
                        ignore_lease: put.ignore_lease,
                    },
                    compares: Vec::new(),
                }),
                Some(request_op::Request::RequestDeleteRange(delete)) => {
                    if !KeyRange::from_request(&delete.key, &delete.range_end).is_single_key() {
                        return Err(invalid("a delete in a transaction covers a range of keys"));
                    }
                    Some(KeyWrite {
                        key: delete.key.clone(),
                        op: WriteOp::Delete,
                        compares: Vec::new(),
                    })
                }
                Some(request_op::Request::RequestTxn(_)) => {
                    return Err(invalid("nested transactions"));
                }
                None => return Err(invalid("an empty operation")),
            };
            let Some(found) = found else { continue };
            if branch_name == "failure" {
                return Err(invalid("a write in the failure branch"));
            }
            if write.is_some() {
                return Err(invalid("more than one write"));
            }
            write = Some((position, found));
        }
    }
    if let Some((_, w)) = &write
        && request.compare.iter().any(|c| c.key != w.key)
    {
        return Err(invalid("the compares and the write are on different keys"));
    }
    Ok(write)
}

/// Serves a generic transaction (validated already).
pub(super) async fn serve(
    store: &Arc<Store>,
    request: pb::TxnRequest,
) -> Result<pb::TxnResponse, Status> {
    match plan(&request)? {
        Some((position, mut write)) => {
            let key = write.key.clone();
            write.compares = request.compare.clone();
            match store.write_key(write).await? {
                WriteOutcome::Applied { revision, prev } => {
                    let written = match &request.success[position].request {
                        Some(request_op::Request::RequestPut(put)) => {
                            response_op::Response::ResponsePut(pb::PutResponse {
                                header: nested_header(revision),
                                prev_kv: if put.prev_kv { prev } else { None },
                            })
                        }
                        Some(request_op::Request::RequestDeleteRange(del)) => {
                            response_op::Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                                header: nested_header(revision),
                                deleted: 1,
                                prev_kvs: if del.prev_kv {
                                    prev.into_iter().collect()
                                } else {
                                    Vec::new()
                                },
                            })
                        }
                        _ => {
                            return Err(Status::internal(
                                "ste-router: planned write is not a write",
                            ));
                        }
                    };
                    respond(
                        store,
                        &request.success,
                        Some((position, written)),
                        true,
                        Some(revision),
                    )
                    .await
                }
                WriteOutcome::NothingDeleted => {
                    let current = store.revisions().current();
                    let written =
                        response_op::Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                            header: nested_header(current),
                            deleted: 0,
                            prev_kvs: Vec::new(),
                        });
                    respond(
                        store,
                        &request.success,
                        Some((position, written)),
                        true,
                        None,
                    )
                    .await
                }
                WriteOutcome::CompareFailed => super::failed(store, &key, &request.failure).await,
            }
        }
        None => {
            let mut values = Vec::new();
            for compare in &request.compare {
                values.push(if needs_value(compare) {
                    store.get_current(&compare.key).await?.map(|kv| kv.value)
                } else {
                    None
                });
            }
            let index = store.index();
            let succeeded = request
                .compare
                .iter()
                .zip(&values)
                .all(|(c, v)| compare_holds(c, index.get(&c.key).as_ref(), v.as_deref()));
            let branch = if succeeded {
                &request.success
            } else {
                &request.failure
            };
            respond(store, branch, None, succeeded, None).await
        }
    }
}

/// Builds the Txn response: the write's answer at its position, and every
/// range read served as within one etcd transaction: a read after the
/// write at the write's revision (`at`: it sees the write and nothing
/// later), a read before it at the revision before (the transaction's
/// start: it does not see the write), and every read at the current
/// revision when nothing was written. The nested headers carry the
/// revision each read was served at, as etcd's do (kube-apiserver takes
/// the object's new resourceVersion from the write's).
pub(super) async fn respond(
    store: &Arc<Store>,
    branch: &[pb::RequestOp],
    written: Option<(usize, response_op::Response)>,
    succeeded: bool,
    at: Option<ste_core::revision::GlobalRevision>,
) -> Result<pb::TxnResponse, Status> {
    let mut written = written;
    let write_position = written.as_ref().map(|(position, _)| *position);
    let mut responses = Vec::with_capacity(branch.len());
    for (position, op) in branch.iter().enumerate() {
        let response = match &op.request {
            Some(request_op::Request::RequestRange(range)) => {
                let mut range = range.clone();
                // etcd's storeTxnWrite.Range reads at the transaction's
                // start revision until the transaction has changed a key.
                let read_at = at.map(|at| match write_position {
                    Some(write) if position < write => GlobalRevision(at.0 - 1),
                    _ => at,
                });
                if let (Some(read_at), 0) = (read_at, range.revision) {
                    range.revision = read_at.0;
                }
                let (current, result) = store.range(&range).await?;
                response_op::Response::ResponseRange(pb::RangeResponse {
                    header: nested_header(read_at.unwrap_or(current)),
                    kvs: result.kvs,
                    more: result.more,
                    count: result.count,
                })
            }
            _ => match written.take() {
                Some((at, response)) if at == position => response,
                _ => {
                    return Err(Status::internal(
                        "ste-router: transaction response out of step",
                    ));
                }
            },
        };
        responses.push(pb::ResponseOp {
            response: Some(response),
        });
    }
    Ok(pb::TxnResponse {
        header: header(store, at.unwrap_or_else(|| store.revisions().current())),
        succeeded,
        responses,
    })
}
