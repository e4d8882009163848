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
                Some(request_op::Request::RequestRange(range)) => {
                    key(&range.key)?;
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
}
