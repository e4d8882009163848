//! What etcd refuses in a request before applying any of it, and what
//! [`super::MemoryShard`] does not model (refused as UNIMPLEMENTED rather
//! than answered wrongly).

use ste_proto::etcd::etcdserverpb as pb;
use ste_proto::etcd::etcdserverpb::request_op;
use tonic::Status;

use super::mvcc::Mvcc;
use crate::error::{DUPLICATE_KEY, KEY_NOT_PROVIDED};

/// Refuses compares over a key range (the router compares single keys).
pub(super) fn check_compares(compares: &[pb::Compare]) -> Result<(), Status> {
    if compares.iter().any(|c| !c.range_end.is_empty()) {
        return Err(Status::unimplemented(
            "MemoryShard: compares over a key range",
        ));
    }
    Ok(())
}

/// Refuses, before anything is applied, what etcd refuses (an empty key, a
/// key put twice or put and deleted in one branch, a range at a compacted
/// or future revision) and what this fake does not model.
pub(super) fn check_ops(store: &Mvcc, ops: &[pb::RequestOp]) -> Result<(), Status> {
    let mut puts: Vec<&[u8]> = Vec::new();
    let mut deletes: Vec<(&[u8], &[u8])> = Vec::new();
    for op in ops {
        let key = match &op.request {
            Some(request_op::Request::RequestRange(range)) => {
                check_range(range)?;
                store.read_revision(range.revision)?;
                &range.key
            }
            Some(request_op::Request::RequestPut(put)) => {
                if put.ignore_value || put.ignore_lease {
                    return Err(Status::unimplemented(
                        "MemoryShard: ignore_value and ignore_lease",
                    ));
                }
                if puts.contains(&put.key.as_slice()) {
                    return Err(Status::invalid_argument(DUPLICATE_KEY));
                }
                puts.push(&put.key);
                &put.key
            }
            Some(request_op::Request::RequestDeleteRange(delete)) => {
                deletes.push((&delete.key, &delete.range_end));
                &delete.key
            }
            Some(request_op::Request::RequestTxn(_)) | None => {
                return Err(Status::unimplemented("MemoryShard: nested or empty ops"));
            }
        };
        if key.is_empty() {
            return Err(Status::invalid_argument(KEY_NOT_PROVIDED));
        }
    }
    let overlaps = |&(key, end): &(&[u8], &[u8])| {
        puts.iter().any(|put| match end {
            [] => *put == key,
            [0] => *put >= key,
            end => *put >= key && *put < end,
        })
    };
    if deletes.iter().any(overlaps) {
        return Err(Status::invalid_argument(DUPLICATE_KEY));
    }
    Ok(())
}

/// Refuses an empty key and the Range options this fake does not model.
pub(super) fn check_range(request: &pb::RangeRequest) -> Result<(), Status> {
    if request.key.is_empty() {
        return Err(Status::invalid_argument(KEY_NOT_PROVIDED));
    }
    let by_key_ascending = request.sort_order() == pb::range_request::SortOrder::None
        || (request.sort_order() == pb::range_request::SortOrder::Ascend
            && request.sort_target() == pb::range_request::SortTarget::Key);
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    if !by_key_ascending || filtered {
        return Err(Status::unimplemented(
            "MemoryShard: sorting other than by key, and revision filters",
        ));
    }
    Ok(())
}
