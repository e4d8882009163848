//! The Txn classifier (`TxnShape::classify`), etcd's Txn checks
//! (`validate::txn`) and the generic planner (`txn/generic.rs`) of the
//! router, on any `TxnRequest`.
//!
//! Each input is used twice: decoded as a protobuf `TxnRequest` (what the
//! router's gRPC server does with a client's bytes), and read by
//! `arbitrary` into a request built from a few keys, so that compares and
//! writes often name the same key and kube-apiserver's shapes come up.
//!
//! Asserts: nothing panics; a request re-encodes and decodes equal and is
//! classified the same; a request classified as one of kube-apiserver's
//! shapes really has that shape (one compare `mod_revision == 0` or
//! `mod_revision == R` or `version == V`, `=`, no range_end, and one put or
//! single-key delete of the compared key, the failure branch at most a get
//! of it); `Generic { writes }` says whether the success branch writes;
//! every refusal is INVALID_ARGUMENT; the planner's write is the success
//! branch's only write, on the compared key; and every kube-apiserver shape
//! that passes validation is also accepted by the generic planner (the
//! shapes are instances of the generic form, as `txn/mod.rs` says).

use arbitrary::{Arbitrary, Unstructured};
use prost::Message as _;
use ste_core::keyrange::KeyRange;
use ste_proto::etcd::etcdserverpb::{self as pb, compare, request_op};
use ste_router::etcd::TxnShape;
use ste_router::etcd::fuzzing::{plan_generic_txn, validate_txn};
use ste_router::store::write::WriteOp;

/// Runs every property on `data`, both as protobuf and as `arbitrary` input.
pub fn check(data: &[u8]) {
    if let Ok(request) = pb::TxnRequest::decode(data) {
        check_request(&request);
    }
    if let Ok(built) = Txn::arbitrary_take_rest(Unstructured::new(data)) {
        check_request(&built.into_request());
    }
}

/// All the properties of one request.
pub fn check_request(request: &pb::TxnRequest) {
    let shape = TxnShape::classify(request);
    let _ = shape.label();
    let again = pb::TxnRequest::decode(request.encode_to_vec().as_slice())
        .expect("an encoded TxnRequest decodes");
    assert_eq!(&again, request);
    assert_eq!(TxnShape::classify(&again), shape);
    check_shape(request, shape);

    let valid = validate_txn(request);
    if let Err(status) = &valid {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    let plan = plan_generic_txn(request);
    check_plan(request, &plan);
    if valid.is_ok() && !matches!(shape, TxnShape::Generic { .. }) {
        let (position, write) = match plan {
            Ok(Some(planned)) => planned,
            other => panic!("{shape:?} passed validation but the planner said {other:?}"),
        };
        assert_eq!(position, 0);
        assert_eq!(write.key, request.compare[0].key);
        assert_eq!(
            matches!(write.op, WriteOp::Delete),
            shape == TxnShape::Delete
        );
    }
}

fn writes(op: &pb::RequestOp) -> bool {
    matches!(
        op.request,
        Some(request_op::Request::RequestPut(_) | request_op::Request::RequestDeleteRange(_))
    )
}

fn check_shape(request: &pb::TxnRequest, shape: TxnShape) {
    if let TxnShape::Generic { writes: w } = shape {
        assert_eq!(w, request.success.iter().any(writes));
        return;
    }
    let [compare] = request.compare.as_slice() else {
        panic!("{shape:?} with {} compares", request.compare.len());
    };
    let [write] = request.success.as_slice() else {
        panic!("{shape:?} with {} success ops", request.success.len());
    };
    let key = compare.key.as_slice();
    assert!(compare.range_end.is_empty());
    assert_eq!(compare.result(), pb::compare::CompareResult::Equal);
    match request.failure.as_slice() {
        [] => {}
        [op] => assert!(matches!(&op.request,
            Some(request_op::Request::RequestRange(r)) if r.key == key && r.range_end.is_empty())),
        more => panic!("{shape:?} with {} failure ops", more.len()),
    }
    let put_of_key = matches!(&write.request,
        Some(request_op::Request::RequestPut(put)) if put.key == key);
    let delete_of_key = matches!(&write.request,
        Some(request_op::Request::RequestDeleteRange(d)) if d.key == key && d.range_end.is_empty());
    let (target, union) = (compare.target(), &compare.target_union);
    use pb::compare::CompareTarget::{Mod, Version};
    match shape {
        TxnShape::Create => assert!(
            put_of_key && target == Mod && *union == Some(compare::TargetUnion::ModRevision(0))
        ),
        TxnShape::Update => assert!(
            put_of_key
                && target == Mod
                && matches!(union, Some(compare::TargetUnion::ModRevision(r)) if *r != 0)
        ),
        TxnShape::Delete => assert!(
            delete_of_key
                && target == Mod
                && matches!(union, Some(compare::TargetUnion::ModRevision(_)))
        ),
        TxnShape::Compaction => assert!(
            put_of_key
                && target == Version
                && matches!(union, Some(compare::TargetUnion::Version(_)))
        ),
        TxnShape::Generic { .. } => unreachable!(),
    }
}

type Plan = Result<Option<(usize, ste_router::store::write::KeyWrite)>, tonic::Status>;

fn check_plan(request: &pb::TxnRequest, plan: &Plan) {
    let all_ops = || request.success.iter().chain(&request.failure);
    match plan {
        Err(status) => assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}"),
        Ok(planned) => {
            assert!(request.compare.iter().all(|c| c.range_end.is_empty()));
            assert!(all_ops().all(|op| matches!(
                op.request,
                Some(
                    request_op::Request::RequestRange(_)
                        | request_op::Request::RequestPut(_)
                        | request_op::Request::RequestDeleteRange(_)
                )
            )));
            assert!(!request.failure.iter().any(writes));
            let success_writes = request.success.iter().filter(|op| writes(op)).count();
            match planned {
                None => assert_eq!(success_writes, 0),
                Some((position, write)) => {
                    assert_eq!(success_writes, 1);
                    assert!(write.compares.is_empty());
                    assert!(request.compare.iter().all(|c| c.key == write.key));
                    match &request.success[*position].request {
                        Some(request_op::Request::RequestPut(put)) => {
                            assert_eq!(put.key, write.key);
                            assert!(matches!(write.op, WriteOp::Put { .. }));
                        }
                        Some(request_op::Request::RequestDeleteRange(delete)) => {
                            assert_eq!(delete.key, write.key);
                            assert!(matches!(write.op, WriteOp::Delete));
                            assert!(
                                KeyRange::from_request(&delete.key, &delete.range_end)
                                    .is_single_key()
                            );
                        }
                        other => panic!("planned write at {position} is {other:?}"),
                    }
                }
            }
        }
    }
}

/// A key from a small set (so compares and writes meet), or any bytes.
#[derive(Debug, Arbitrary)]
enum Key {
    Empty,
    Pod(u8),
    Raw(Vec<u8>),
}

impl Key {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Key::Empty => Vec::new(),
            Key::Pod(i) => format!("/registry/pods/default/web-{}", i % 3).into_bytes(),
            Key::Raw(raw) => raw.clone(),
        }
    }
}

/// A range_end: none (one key), `\0` (from the key on), the key's
/// successor `key ++ \0` (one key, spelled as a range), or any bytes.
#[derive(Debug, Arbitrary)]
enum RangeEnd {
    None,
    FromKey,
    Successor,
    Raw(Vec<u8>),
}

impl RangeEnd {
    fn bytes(&self, key: &[u8]) -> Vec<u8> {
        match self {
            RangeEnd::None => Vec::new(),
            RangeEnd::FromKey => vec![0],
            RangeEnd::Successor => [key, &[0]].concat(),
            RangeEnd::Raw(raw) => raw.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Target {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
    /// The target field says one thing, the union another (legal on the
    /// wire): target as a raw enum number, union as `Mod`.
    Mismatched(i32, i64),
    NoUnion(i32),
}

#[derive(Debug, Arbitrary)]
struct Compare {
    key: Key,
    range_end: RangeEnd,
    target: Target,
    /// 0..=3 are etcd's EQUAL, GREATER, LESS, NOT_EQUAL; others unknown.
    result: i32,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Get {
        key: Key,
        range_end: RangeEnd,
        limit: i64,
        revision: i64,
        sort_order: i32,
        sort_target: i32,
        count_only: bool,
        keys_only: bool,
        min_mod_revision: i64,
    },
    Put {
        key: Key,
        value: Vec<u8>,
        lease: i64,
        prev_kv: bool,
        ignore_value: bool,
        ignore_lease: bool,
    },
    Delete {
        key: Key,
        range_end: RangeEnd,
        prev_kv: bool,
    },
    /// A nested transaction (etcd allows them; the router refuses them),
    /// one level deep so that building it cannot recurse without bound.
    Txn(Vec<Compare>, Vec<Key>),
    Empty,
}

/// A TxnRequest as `arbitrary` builds it.
#[derive(Debug, Arbitrary)]
pub struct Txn {
    compare: Vec<Compare>,
    success: Vec<Op>,
    failure: Vec<Op>,
}

impl Txn {
    /// The protobuf request.
    pub fn into_request(self) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: self.compare.into_iter().map(Compare::into_pb).collect(),
            success: self.success.into_iter().map(Op::into_pb).collect(),
            failure: self.failure.into_iter().map(Op::into_pb).collect(),
        }
    }
}

impl Compare {
    fn into_pb(self) -> pb::Compare {
        use compare::{CompareTarget as T, TargetUnion as U};
        let key = self.key.bytes();
        let range_end = self.range_end.bytes(&key);
        let (target, union) = match self.target {
            Target::Version(v) => (T::Version as i32, Some(U::Version(v))),
            Target::Create(r) => (T::Create as i32, Some(U::CreateRevision(r))),
            Target::Mod(r) => (T::Mod as i32, Some(U::ModRevision(r))),
            Target::Value(v) => (T::Value as i32, Some(U::Value(v))),
            Target::Lease(l) => (T::Lease as i32, Some(U::Lease(l))),
            Target::Mismatched(t, r) => (t, Some(U::ModRevision(r))),
            Target::NoUnion(t) => (t, None),
        };
        pb::Compare {
            result: self.result,
            target,
            key,
            range_end,
            target_union: union,
        }
    }
}

impl Op {
    fn into_pb(self) -> pb::RequestOp {
        use request_op::Request as R;
        let request = match self {
            Op::Get {
                key,
                range_end,
                limit,
                revision,
                sort_order,
                sort_target,
                count_only,
                keys_only,
                min_mod_revision,
            } => {
                let key = key.bytes();
                Some(R::RequestRange(pb::RangeRequest {
                    range_end: range_end.bytes(&key),
                    key,
                    limit,
                    revision,
                    sort_order,
                    sort_target,
                    count_only,
                    keys_only,
                    min_mod_revision,
                    ..Default::default()
                }))
            }
            Op::Put {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            } => Some(R::RequestPut(pb::PutRequest {
                key: key.bytes(),
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            })),
            Op::Delete {
                key,
                range_end,
                prev_kv,
            } => {
                let key = key.bytes();
                Some(R::RequestDeleteRange(pb::DeleteRangeRequest {
                    range_end: range_end.bytes(&key),
                    key,
                    prev_kv,
                }))
            }
            Op::Txn(compare, puts) => Some(R::RequestTxn(pb::TxnRequest {
                compare: compare.into_iter().map(Compare::into_pb).collect(),
                success: puts
                    .into_iter()
                    .map(|key| pb::RequestOp {
                        request: Some(R::RequestPut(pb::PutRequest {
                            key: key.bytes(),
                            ..Default::default()
                        })),
                    })
                    .collect(),
                failure: Vec::new(),
            })),
            Op::Empty => None,
        };
        pb::RequestOp { request }
    }
}
