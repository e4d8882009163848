//! The requests the router sends to shards, built in one place: writes,
//! migration batches, multi-key deletes and the start-up scan all use these.
//!
//! Every write to a shard is guarded by [`unchanged`]: the key's shard
//! `mod_revision` must be what the index says (0: absent), so a write that
//! did not go through the router is never overwritten silently; a failed
//! guard makes the router resynchronise the shard.

use ste_core::index::IndexEntry;
use ste_core::revision::ShardRevision;
use ste_proto::etcd::etcdserverpb::{self as pb, compare, request_op, response_op};
use ste_proto::etcd::mvccpb;

/// The guard "`key`'s shard `mod_revision` is `revision`" (etcd's
/// `Compare{MOD, EQUAL}`; revision 0 means the key is absent).
pub fn unchanged(key: &[u8], revision: ShardRevision) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(revision.0)),
        range_end: Vec::new(),
    }
}

/// The guard "`key` is absent on the shard".
pub fn absent(key: &[u8]) -> pb::Compare {
    unchanged(key, ShardRevision(0))
}

/// A put of `value` (an encoded envelope) under `key`; `prev_kv` asks for
/// the version it replaced.
pub fn put(key: Vec<u8>, value: Vec<u8>, prev_kv: bool) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(pb::PutRequest {
            key,
            value,
            prev_kv,
            ..Default::default()
        })),
    }
}

/// A delete of the single key `key`; `prev_kv` asks for the deleted version.
pub fn delete(key: Vec<u8>, prev_kv: bool) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key,
                prev_kv,
                ..Default::default()
            },
        )),
    }
}

/// A Txn deleting every key of the shard (range `\0` to `\0`: all keys).
pub fn delete_everything() -> pb::TxnRequest {
    pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..Default::default()
                },
            )),
        }],
        ..Default::default()
    }
}

/// A read of the single key `key` at the shard's current revision.
pub fn get(key: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(pb::RangeRequest {
            key,
            ..Default::default()
        })),
    }
}

/// A transaction applying `ops` only if every guard holds (no failure
/// branch: a failed guard changes nothing and answers `succeeded: false`).
pub fn guarded(guards: Vec<pb::Compare>, ops: Vec<pb::RequestOp>) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: guards,
        success: ops,
        failure: Vec::new(),
    }
}

/// Deletes `keys` (with their index entries), each only if it is still
/// the version the index has (its shard `mod_revision`): all or none.
pub fn delete_unchanged(keys: &[(Vec<u8>, IndexEntry)], prev_kv: bool) -> pb::TxnRequest {
    guarded(
        keys.iter()
            .map(|(k, e)| unchanged(k, e.shard_modified))
            .collect(),
        keys.iter()
            .map(|(k, _)| delete(k.clone(), prev_kv))
            .collect(),
    )
}

/// The shard revision a response was served at (etcd's header revision;
/// for a write, the revision of the write).
pub fn revision_of(header: Option<&pb::ResponseHeader>) -> ShardRevision {
    ShardRevision(header.map(|h| h.revision).unwrap_or(0))
}

/// The previous versions a shard returned for the puts and deletes of a
/// successful Txn, in op order (ops without one are skipped).
pub fn prev_kvs(response: &pb::TxnResponse) -> Vec<mvccpb::KeyValue> {
    prev_kv_each(response).into_iter().flatten().collect()
}

/// The previous version each put or delete of a successful Txn returned,
/// one per op in op order (`None`: the key was absent, or the op is not a
/// put or delete).
pub fn prev_kv_each(response: &pb::TxnResponse) -> Vec<Option<mvccpb::KeyValue>> {
    response
        .responses
        .iter()
        .map(|r| match &r.response {
            Some(response_op::Response::ResponsePut(put)) => put.prev_kv.clone(),
            Some(response_op::Response::ResponseDeleteRange(del)) => del.prev_kvs.first().cloned(),
            _ => None,
        })
        .collect()
}

/// The key each range read of a Txn found, in op order (`None`: absent).
pub fn got(response: &pb::TxnResponse) -> Vec<Option<mvccpb::KeyValue>> {
    response
        .responses
        .iter()
        .map(|r| match &r.response {
            Some(response_op::Response::ResponseRange(range)) => range.kvs.first().cloned(),
            _ => None,
        })
        .collect()
}

/// A read of `key` (to `range_end`, etcd's encoding) at shard revision
/// `at` (0: now), at most `limit` keys (0: all); `count_only` asks for the
/// count alone.
pub fn range(
    key: Vec<u8>,
    range_end: Vec<u8>,
    limit: i64,
    at: ShardRevision,
    count_only: bool,
) -> pb::RangeRequest {
    pb::RangeRequest {
        key,
        range_end,
        limit,
        revision: at.0,
        count_only,
        ..Default::default()
    }
}

/// A read of the single key `key` at shard revision `at` (0: now).
pub fn get_at(key: &[u8], at: ShardRevision) -> pb::RangeRequest {
    range(key.to_vec(), Vec::new(), 0, at, false)
}

/// A page of the scan: up to `limit` keys from `from` to the end of the
/// keyspace at shard revision `at` (0: now).
pub fn scan_page(from: Vec<u8>, limit: i64, at: ShardRevision) -> pb::RangeRequest {
    pb::RangeRequest {
        key: from,
        range_end: vec![0],
        limit,
        revision: at.0,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_compares_the_shard_mod_revision() {
        let guard = unchanged(b"k", ShardRevision(7));
        assert_eq!(guard.target(), pb::compare::CompareTarget::Mod);
        assert_eq!(guard.result(), pb::compare::CompareResult::Equal);
        assert_eq!(
            guard.target_union,
            Some(compare::TargetUnion::ModRevision(7))
        );
        assert_eq!(
            absent(b"k").target_union,
            Some(compare::TargetUnion::ModRevision(0))
        );
    }

    #[test]
    fn prev_kvs_and_reads_come_back_in_op_order() {
        let kv = |k: &str| mvccpb::KeyValue {
            key: k.into(),
            ..Default::default()
        };
        let response = pb::TxnResponse {
            succeeded: true,
            responses: vec![
                pb::ResponseOp {
                    response: Some(response_op::Response::ResponsePut(pb::PutResponse {
                        prev_kv: Some(kv("a")),
                        ..Default::default()
                    })),
                },
                pb::ResponseOp {
                    response: Some(response_op::Response::ResponseDeleteRange(
                        pb::DeleteRangeResponse {
                            prev_kvs: vec![kv("b")],
                            ..Default::default()
                        },
                    )),
                },
                pb::ResponseOp {
                    response: Some(response_op::Response::ResponseRange(pb::RangeResponse {
                        kvs: vec![kv("c")],
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        let keys: Vec<_> = prev_kvs(&response).into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            got(&response)[2].as_ref().map(|kv| kv.key.clone()),
            Some(b"c".to_vec())
        );
        assert_eq!(got(&response)[0], None);
    }
}
