//! Keys etcd accepts that are easy to get wrong: bytes that are not UTF-8,
//! and the empty key (which etcd refuses everywhere).

use ste_proto::etcd::etcdserverpb::{self as pb, request_op};

use crate::pair::{Pair, describe, get, get_op, mod_equals, put, put_op, range};

/// Keys that are not UTF-8 are valid etcd keys: written, read, updated
/// the way kube-apiserver does, ranged over and deleted.
pub(crate) async fn non_utf8_keys(pair: &mut Pair) {
    let bad = b"/registry/pods/\xff\xfe/x\xff".as_slice();
    let plain_bad = [0xffu8, 0xfe].as_slice();
    for key in [bad, plain_bad, b"/registry/pods/nul\x00inside".as_slice()] {
        let case = format!("non-UTF-8 key {key:?}");
        let (e, r) = pair.put(put(key, b"v1")).await;
        pair.both_ok(&format!("{case}: put"), &e, &r);
        let (e, r) = pair.range(get(key)).await;
        pair.same_range(&format!("{case}: get"), &e, &r);
        if let Ok(r) = &r
            && r.kvs.first().map(|kv| kv.value.as_ref()) != Some(&b"v1"[..])
        {
            pair.fail(&case, format!("router does not read back the value: {r:?}"));
        }
        // kube-apiserver's update shape on it.
        let e_rev = e
            .as_ref()
            .ok()
            .and_then(|e| e.kvs.first())
            .map(|kv| kv.mod_revision)
            .unwrap_or(0);
        let r_rev = r
            .as_ref()
            .ok()
            .and_then(|r| r.kvs.first())
            .map(|kv| kv.mod_revision)
            .unwrap_or(0);
        let update = |rev| pb::TxnRequest {
            compare: vec![mod_equals(key, rev)],
            success: vec![put_op(key, b"v2")],
            failure: vec![get_op(key)],
        };
        let e = pair
            .etcd
            .txn(update(e_rev))
            .await
            .map(|r| r.into_inner().succeeded);
        let r = pair
            .router
            .txn(update(r_rev))
            .await
            .map(|r| r.into_inner().succeeded);
        if e.as_ref().ok() != Some(&true) || r.as_ref().ok() != Some(&true) {
            pair.fail(
                &format!("{case}: update txn"),
                format!("etcd {}, router {}", describe(&e), describe(&r)),
            );
        }
    }
    // A range starting at 0xff holds both byte keys; the router's merge
    // across shards keeps byte order.
    let (e, r) = pair.range(range(b"\xff", b"\x00")).await;
    pair.same_range("range from 0xff to the end", &e, &r);
    let (e, r) = pair
        .range(range(b"/registry/pods/", b"/registry/pods0"))
        .await;
    pair.same_range("range over keys with 0xff and NUL bytes", &e, &r);
    let (e, r) = pair
        .delete(pb::DeleteRangeRequest {
            key: plain_bad.to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .await;
    match (&e, &r) {
        (Ok(e), Ok(r))
            if e.deleted == 1
                && r.deleted == 1
                && r.prev_kvs.len() == 1
                && r.prev_kvs[0].value == b"v2"[..] => {}
        _ => pair.fail(
            "delete a non-UTF-8 key",
            format!("etcd {}, router {}", describe(&e), describe(&r)),
        ),
    }
}

/// An empty key, wherever a request can carry one: refused as etcd does.
pub(crate) async fn empty_keys(pair: &mut Pair) {
    let (e, r) = pair.put(put(b"", b"v")).await;
    pair.same_error("put with an empty key", &e, &r, true);
    let (e, r) = pair.range(get(b"")).await;
    pair.same_error("get with an empty key", &e, &r, true);
    let (e, r) = pair.range(range(b"", b"/z")).await;
    pair.same_error("range with an empty key and a range_end", &e, &r, true);
    let (e, r) = pair.delete(pb::DeleteRangeRequest::default()).await;
    pair.same_error("delete with an empty key", &e, &r, true);
    let (e, r) = pair
        .txn(pb::TxnRequest {
            compare: vec![mod_equals(b"/registry/pods/a", 0)],
            success: vec![put_op(b"", b"v")],
            failure: vec![],
        })
        .await;
    pair.same_error("txn putting an empty key", &e, &r, true);
    let (e, r) = pair
        .txn(pb::TxnRequest {
            compare: vec![mod_equals(b"", 0)],
            success: vec![put_op(b"/registry/pods/a", b"v")],
            failure: vec![],
        })
        .await;
    pair.same_error("txn comparing an empty key", &e, &r, true);
    let (e, r) = pair
        .txn(pb::TxnRequest {
            compare: vec![mod_equals(b"/registry/pods/a", 7)],
            success: vec![put_op(b"/registry/pods/a", b"v")],
            failure: vec![get_op(b"")],
        })
        .await;
    pair.same_error(
        "txn reading an empty key in the failure branch",
        &e,
        &r,
        true,
    );
    let (e, r) = pair
        .txn(pb::TxnRequest {
            compare: vec![mod_equals(b"/registry/pods/a", 0)],
            success: vec![pb::RequestOp {
                request: Some(request_op::Request::RequestPut(pb::PutRequest {
                    ignore_value: true,
                    ..put(b"/registry/pods/a", b"v")
                })),
            }],
            failure: vec![],
        })
        .await;
    pair.same_error("txn put with ignore_value and a value", &e, &r, true);
}
