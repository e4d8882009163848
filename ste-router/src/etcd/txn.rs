//! Txn. kube-apiserver sends four shapes, all on one key K:
//!
//! | shape      | compare                   | success   | failure  |
//! |------------|---------------------------|-----------|----------|
//! | create     | mod_revision(K) == 0      | put K     | (get K)  |
//! | update     | mod_revision(K) == R      | put K     | get K    |
//! | delete     | mod_revision(K) == R      | delete K  | get K    |
//! | compaction | version(compact_rev_key) == V | put K | get K    |
//!
//! The router serves the general form these are instances of, which also
//! covers etcdctl's single-key transactions: compares on one key K (any
//! target and result), at most one write (put K or delete K) and only in
//! the success branch, and any number of range reads. A Txn without writes
//! may compare and read any keys. Everything else is refused with
//! INVALID_ARGUMENT saying what is supported.

use std::sync::Arc;
use ste_core::keyrange::KeyRange;
use ste_proto::etcd::etcdserverpb::{self as pb, request_op, response_op};
use tonic::Status;

use super::{header, nested_header};
use crate::error::{DUPLICATE_KEY, StoreError};
use crate::store::Store;
use crate::store::write::{KeyWrite, WriteOp, WriteOutcome, compare_holds};

const SUPPORTED: &str = "ste-router supports transactions whose compares are on one key, \
     with at most one write (a put or a single-key delete of that key) in the success branch \
     and any range reads, as kube-apiserver and etcdctl send; or read-only transactions";

/// A metrics label naming the shape.
pub fn shape_name(request: &pb::TxnRequest) -> &'static str {
    let write = request.success.iter().find_map(|op| match &op.request {
        Some(request_op::Request::RequestPut(_)) => Some("put"),
        Some(request_op::Request::RequestDeleteRange(_)) => Some("delete"),
        _ => None,
    });
    let compare = request.compare.first();
    match (write, compare) {
        (None, _) => "Txn.read",
        (Some("delete"), _) => "Txn.delete",
        (Some(_), Some(c)) if c.target() == pb::compare::CompareTarget::Version => "Txn.compaction",
        (Some(_), Some(c))
            if matches!(
                c.target_union,
                Some(pb::compare::TargetUnion::ModRevision(0))
            ) =>
        {
            "Txn.create"
        }
        (Some(_), Some(_)) => "Txn.update",
        (Some(_), None) => "Txn.put",
    }
}

fn invalid(detail: &str) -> Status {
    StoreError::InvalidArgument(format!("{SUPPORTED}; {detail}")).into()
}

/// The checks etcd makes before it evaluates a transaction (its
/// `checkTxnRequest`), so that a malformed request gets etcd's own error
/// even when its shape is one the router does not serve.
fn check_like_etcd(request: &pb::TxnRequest) -> Result<(), Status> {
    if request.compare.iter().any(|c| c.key.is_empty()) {
        return Err(StoreError::KeyNotProvided.into());
    }
    for branch in [&request.success, &request.failure] {
        let mut written: Vec<&[u8]> = Vec::new();
        for op in branch {
            let key = match &op.request {
                Some(request_op::Request::RequestRange(range)) => {
                    if range.key.is_empty() {
                        return Err(StoreError::KeyNotProvided.into());
                    }
                    continue;
                }
                Some(request_op::Request::RequestPut(put)) => {
                    if put.key.is_empty() {
                        return Err(StoreError::KeyNotProvided.into());
                    }
                    if put.ignore_value && !put.value.is_empty() {
                        return Err(StoreError::ValueProvided.into());
                    }
                    if put.ignore_lease && put.lease != 0 {
                        return Err(StoreError::LeaseProvided.into());
                    }
                    &put.key
                }
                Some(request_op::Request::RequestDeleteRange(delete)) => {
                    if delete.key.is_empty() {
                        return Err(StoreError::KeyNotProvided.into());
                    }
                    &delete.key
                }
                _ => continue,
            };
            if written.contains(&key.as_slice()) {
                return Err(Status::invalid_argument(DUPLICATE_KEY));
            }
            written.push(key);
        }
    }
    Ok(())
}

/// The one write of the success branch, if any, checked against the rules.
fn plan(request: &pb::TxnRequest) -> Result<Option<(usize, KeyWrite)>, Status> {
    check_like_etcd(request)?;
    for compare in &request.compare {
        if !compare.range_end.is_empty() {
            return Err(invalid("a compare has a range_end"));
        }
        if compare.key.is_empty() {
            return Err(StoreError::KeyNotProvided.into());
        }
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

pub async fn txn(store: &Arc<Store>, request: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
    store.check_ready()?;
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
                    let current = store.revisions.current();
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
                WriteOutcome::CompareFailed => {
                    // The failure branch reads the key; make sure the write
                    // that made the compare fail is visible to it.
                    let modified = store.index().get(&key).map(|e| e.modified);
                    if let Some(modified) = modified {
                        store.revisions.wait_visible(modified).await;
                    }
                    respond(store, &request.failure, None, false, None).await
                }
            }
        }
        None => {
            let mut values = Vec::new();
            for compare in &request.compare {
                let needs_value = compare.target() == pb::compare::CompareTarget::Value;
                values.push(if needs_value {
                    store.get_current(&compare.key).await?.map(|kv| kv.value)
                } else {
                    None
                });
            }
            let succeeded = {
                let index = store.index();
                request
                    .compare
                    .iter()
                    .zip(&values)
                    .all(|(c, v)| compare_holds(c, index.get(&c.key), v.as_deref()))
            };
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
/// range read served at the write's revision (`at`, so the reads see the
/// write and nothing later, as within one etcd transaction) or at the
/// current revision when nothing was written. kube-apiserver takes the
/// object's new resourceVersion from these headers, so with a write they
/// carry exactly its revision.
async fn respond(
    store: &Arc<Store>,
    branch: &[pb::RequestOp],
    written: Option<(usize, response_op::Response)>,
    succeeded: bool,
    at: Option<ste_core::revision::GlobalRevision>,
) -> Result<pb::TxnResponse, Status> {
    let mut written = written;
    let mut responses = Vec::with_capacity(branch.len());
    for (position, op) in branch.iter().enumerate() {
        let response = match &op.request {
            Some(request_op::Request::RequestRange(range)) => {
                let mut range = range.clone();
                if let (Some(at), 0) = (at, range.revision) {
                    range.revision = at.0;
                }
                let (current, result) = store.range(&range).await?;
                response_op::Response::ResponseRange(pb::RangeResponse {
                    header: nested_header(at.unwrap_or(current)),
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
        header: header(store, at.unwrap_or_else(|| store.revisions.current())),
        succeeded,
        responses,
    })
}
