//! The request checks etcd makes before it looks at its data (etcd's
//! `checkPutRequest`, `checkRangeRequest` and `checkTxnRequest` in
//! `server/etcdserver/api/v3rpc/key.go`), in one place, so a malformed
//! request gets etcd's own error whatever path serves it.

use ste_proto::etcd::etcdserverpb::{self as pb, request_op};
use tonic::Status;

use crate::error::{DUPLICATE_KEY, StoreError};

/// A key must be given.
pub fn key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(StoreError::KeyNotProvided.into());
    }
    Ok(())
}

/// A put needs a key, and no value with `ignore_value` nor lease with
/// `ignore_lease`.
pub fn put(put: &pb::PutRequest) -> Result<(), Status> {
    key(&put.key)?;
    if put.ignore_value && !put.value.is_empty() {
        return Err(StoreError::ValueProvided.into());
    }
    if put.ignore_lease && put.lease != 0 {
        return Err(StoreError::LeaseProvided.into());
    }
    Ok(())
}

/// A Range needs a key, like etcd; and the router serves only ascending
/// key order and no min/max revision filters (kube-apiserver uses
/// neither): anything else is refused with INVALID_ARGUMENT saying so.
pub fn range(range: &pb::RangeRequest) -> Result<(), Status> {
    key(&range.key)?;
    let sorted_by_other_than_key = range.sort_target != pb::range_request::SortTarget::Key as i32
        && range.sort_order != pb::range_request::SortOrder::None as i32;
    if sorted_by_other_than_key || range.sort_order == pb::range_request::SortOrder::Descend as i32
    {
        return Err(StoreError::Unsupported(
            "ste-router: Range supports only ascending key order (sort_order NONE or ASCEND by KEY), \
             as kube-apiserver uses"
                .into(),
        )
        .into());
    }
    if range.min_mod_revision != 0
        || range.max_mod_revision != 0
        || range.min_create_revision != 0
        || range.max_create_revision != 0
    {
        return Err(StoreError::Unsupported(
            "ste-router: Range does not support min/max mod/create revision filters".into(),
        )
        .into());
    }
    Ok(())
}

/// Every compare and op of both branches is well formed, and no branch
/// writes one key twice.
pub fn txn(request: &pb::TxnRequest) -> Result<(), Status> {
    for compare in &request.compare {
        key(&compare.key)?;
    }
    for branch in [&request.success, &request.failure] {
        let mut written: Vec<&[u8]> = Vec::new();
        for op in branch {
            let written_key = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    range(r)?;
                    continue;
                }
                Some(request_op::Request::RequestPut(p)) => {
                    put(p)?;
                    &p.key
                }
                Some(request_op::Request::RequestDeleteRange(delete)) => {
                    key(&delete.key)?;
                    &delete.key
                }
                _ => continue,
            };
            if written.contains(&written_key.as_slice()) {
                return Err(Status::invalid_argument(DUPLICATE_KEY));
            }
            written.push(written_key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{KEY_NOT_PROVIDED, LEASE_PROVIDED, VALUE_PROVIDED};

    fn put_op(key: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestPut(pb::PutRequest {
                key: key.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn puts_are_checked_like_etcd() {
        let mut p = pb::PutRequest::default();
        assert_eq!(put(&p).unwrap_err().message(), KEY_NOT_PROVIDED);
        p.key = b"k".to_vec();
        p.ignore_value = true;
        p.value = b"v".to_vec();
        assert_eq!(put(&p).unwrap_err().message(), VALUE_PROVIDED);
        p.value.clear();
        p.ignore_lease = true;
        p.lease = 5;
        assert_eq!(put(&p).unwrap_err().message(), LEASE_PROVIDED);
        p.lease = 0;
        assert!(put(&p).is_ok());
    }

    #[test]
    fn a_branch_may_not_write_a_key_twice_but_two_branches_may() {
        let twice = pb::TxnRequest {
            success: vec![put_op("k"), put_op("k")],
            ..Default::default()
        };
        assert_eq!(txn(&twice).unwrap_err().message(), DUPLICATE_KEY);
        let apart = pb::TxnRequest {
            success: vec![put_op("k")],
            failure: vec![put_op("k")],
            ..Default::default()
        };
        assert!(txn(&apart).is_ok());
        let empty_compare = pb::TxnRequest {
            compare: vec![pb::Compare::default()],
            ..Default::default()
        };
        assert_eq!(txn(&empty_compare).unwrap_err().message(), KEY_NOT_PROVIDED);
    }

    #[test]
    fn ranges_need_a_key_and_ascending_key_order() {
        let mut r = pb::RangeRequest::default();
        assert_eq!(range(&r).unwrap_err().message(), KEY_NOT_PROVIDED);
        r.key = b"/k".to_vec();
        assert!(range(&r).is_ok());
        r.sort_order = pb::range_request::SortOrder::Descend as i32;
        let refused = range(&r).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("ascending key order"));
        r.sort_order = pb::range_request::SortOrder::None as i32;
        r.min_mod_revision = 3;
        assert!(range(&r).unwrap_err().message().contains("min/max"));
        // A range read inside a Txn is checked the same way.
        let in_txn = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(request_op::Request::RequestRange(r)),
            }],
            ..Default::default()
        };
        assert!(txn(&in_txn).unwrap_err().message().contains("min/max"));
    }
}
