//! Writes that cannot apply: put options that contradict the key's state,
//! requests over the size limits, and transactions kube-apiserver never
//! sends.

use ste_proto::etcd::etcdserverpb::{self as pb, request_op};
use tonic::Code;

use crate::pair::{Pair, get, get_op, mod_equals, put, put_op};
use crate::{ETCD_GRPC_OVERHEAD, ETCD_MAX_REQUEST, ROUTER_GRPC_OVERHEAD, ROUTER_MAX_REQUEST};

/// ignore_value and ignore_lease where they cannot apply, a lease that does
/// not exist: refused as etcd refuses them.
pub(crate) async fn put_options_that_cannot_apply(pair: &mut Pair) {
    let missing = b"/registry/pods/odd/missing".as_slice();
    let (e, r) = pair
        .put(pb::PutRequest {
            ignore_value: true,
            ..put(missing, b"")
        })
        .await;
    pair.same_error("ignore_value on a missing key", &e, &r, true);
    let (e, r) = pair
        .put(pb::PutRequest {
            ignore_value: true,
            ..put(missing, b"v")
        })
        .await;
    pair.same_error("ignore_value with a value", &e, &r, true);
    let (e, r) = pair
        .put(pb::PutRequest {
            ignore_lease: true,
            lease: 5,
            ..put(missing, b"v")
        })
        .await;
    pair.same_error("ignore_lease with a lease", &e, &r, true);
    let (e, r) = pair
        .put(pb::PutRequest {
            lease: 0x7e57,
            ..put(missing, b"v")
        })
        .await;
    pair.same_error("put with a lease that does not exist", &e, &r, true);
}

/// Requests over `--max-request-bytes`, and over it plus the gRPC overhead.
pub(crate) async fn too_large(pair: &mut Pair) {
    // Two regimes, compared like for like: a request over the limit but
    // within the gRPC overhead is refused by the server with etcd's
    // INVALID_ARGUMENT "request is too large" (etcd: 1.5 MiB + 1 KiB; the
    // router at --max-request-bytes 1024: 4 KiB); a message beyond the
    // overhead too is refused by the gRPC transport with RESOURCE_EXHAUSTED
    // (etcd: 2 MiB; the router, like etcd: 1 KiB + 512 KiB + 1 KiB).
    let e = pair
        .etcd
        .put(put(
            b"/registry/pods/big",
            &vec![b'x'; ETCD_MAX_REQUEST + 1024],
        ))
        .await;
    let r = pair
        .router
        .put(put(b"/registry/pods/big", &vec![b'x'; 4 * 1024]))
        .await;
    pair.same_error("value over --max-request-bytes", &e, &r, true);
    let big_txn = |size: usize| pb::TxnRequest {
        compare: vec![mod_equals(b"/registry/pods/big", 0)],
        success: vec![put_op(b"/registry/pods/big", &vec![b'x'; size])],
        failure: vec![],
    };
    let e = pair.etcd.txn(big_txn(ETCD_MAX_REQUEST + 1024)).await;
    let r = pair.router.txn(big_txn(4 * 1024)).await;
    pair.same_error(
        "create txn with a value over --max-request-bytes",
        &e,
        &r,
        true,
    );
    // Beyond the overhead too: the gRPC transport refuses the message.
    let e = pair
        .etcd
        .put(put(
            b"/registry/pods/big",
            &vec![b'x'; ETCD_MAX_REQUEST + ETCD_GRPC_OVERHEAD],
        ))
        .await;
    let r = pair
        .router
        .put(put(
            b"/registry/pods/big",
            &vec![b'x'; ROUTER_MAX_REQUEST + ROUTER_GRPC_OVERHEAD + 1024],
        ))
        .await;
    pair.same_error(
        "message over --max-request-bytes plus gRPC overhead",
        &e,
        &r,
        false,
    );
    if let Err(r) = &r
        && !r
            .message()
            .starts_with("grpc: received message larger than max (")
    {
        pair.fail(
            "message over --max-request-bytes plus gRPC overhead",
            format!("router's message is not grpc-go's: {:?}", r.message()),
        );
    }
    // The connection is still usable afterwards.
    let (e, r) = pair.range(get(b"/registry/pods/odd/p0")).await;
    pair.same_range("get after refusing large requests", &e, &r);
}

/// Transactions of shapes kube-apiserver never sends: the router refuses
/// them saying what it supports (or as etcd does, where etcd refuses).
pub(crate) async fn transactions_kube_never_sends(pair: &mut Pair) {
    let two_keys = pb::TxnRequest {
        compare: vec![
            mod_equals(b"/registry/pods/t/a", 0),
            mod_equals(b"/registry/pods/t/b", 0),
        ],
        success: vec![
            put_op(b"/registry/pods/t/a", b"a"),
            put_op(b"/registry/pods/t/b", b"b"),
        ],
        failure: vec![],
    };
    let (e, r) = pair.txn(two_keys).await;
    pair.router_refuses(
        "txn comparing and writing two keys",
        &e,
        &r,
        Code::InvalidArgument,
        &["supports", "one key"],
    );
    let write_other_key = pb::TxnRequest {
        compare: vec![mod_equals(b"/registry/pods/t/c", 0)],
        success: vec![put_op(b"/registry/pods/t/d", b"d")],
        failure: vec![],
    };
    let (e, r) = pair.txn(write_other_key).await;
    pair.router_refuses(
        "txn comparing one key and writing another",
        &e,
        &r,
        Code::InvalidArgument,
        &["supports", "different keys"],
    );
    let write_in_else = pb::TxnRequest {
        compare: vec![mod_equals(b"/registry/pods/t/e", 12345)],
        success: vec![get_op(b"/registry/pods/t/e")],
        failure: vec![put_op(b"/registry/pods/t/e", b"e")],
    };
    let (e, r) = pair.txn(write_in_else).await;
    pair.router_refuses(
        "txn writing in the failure branch",
        &e,
        &r,
        Code::InvalidArgument,
        &["supports", "failure branch"],
    );
    let range_delete = pb::TxnRequest {
        compare: vec![],
        success: vec![pb::RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: b"/registry/pods/odd/".to_vec(),
                    range_end: b"/registry/pods/odd0".to_vec(),
                    ..Default::default()
                },
            )),
        }],
        failure: vec![],
    };
    let (e, r) = pair.txn(range_delete).await;
    pair.router_refuses(
        "txn deleting a range",
        &e,
        &r,
        Code::InvalidArgument,
        &["supports", "range of keys"],
    );
    // Two writes of one key: etcd refuses them too.
    let duplicate = pb::TxnRequest {
        compare: vec![mod_equals(b"/registry/pods/t/f", 0)],
        success: vec![
            put_op(b"/registry/pods/t/f", b"1"),
            put_op(b"/registry/pods/t/f", b"2"),
        ],
        failure: vec![],
    };
    let (e, r) = pair.txn(duplicate).await;
    pair.same_error("txn putting one key twice", &e, &r, true);
}
