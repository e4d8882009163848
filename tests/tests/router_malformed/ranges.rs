//! Odd ranges, limits and revisions, and the range options the router does
//! not serve.

use ste_proto::etcd::etcdserverpb as pb;
use tonic::Code;

use crate::pair::{Pair, describe, odd_keys, put, range};

/// Ranges that end before they start, negative limits and revisions,
/// revisions and compactions out of range: answered as etcd answers.
pub(crate) async fn odd_ranges_limits_and_revisions(pair: &mut Pair) {
    for i in 0..5 {
        let key = format!("/registry/pods/odd/p{i}");
        let (e, r) = pair.put(put(key.as_bytes(), b"v")).await;
        pair.both_ok("put for the range cases", &e, &r);
    }
    let (e, r) = pair
        .range(range(b"/registry/pods/odd/p3", b"/registry/pods/odd/p1"))
        .await;
    pair.same_range("range_end before key", &e, &r);
    if let Ok(r) = &r
        && (r.count != 0 || !r.kvs.is_empty())
    {
        pair.fail(
            "range_end before key",
            format!("router returned keys: {r:?}"),
        );
    }
    let (e, r) = pair
        .range(range(b"/registry/pods/odd/p3", b"/registry/pods/odd/p3"))
        .await;
    pair.same_range("range_end equal to key", &e, &r);
    let (e, r) = pair
        .delete(pb::DeleteRangeRequest {
            key: b"/registry/pods/odd/p3".to_vec(),
            range_end: b"/registry/pods/odd/p1".to_vec(),
            ..Default::default()
        })
        .await;
    match (&e, &r) {
        (Ok(e), Ok(r)) if e.deleted == 0 && r.deleted == 0 => {}
        _ => pair.fail(
            "delete with range_end before key",
            format!("etcd {}, router {}", describe(&e), describe(&r)),
        ),
    }
    let odd = odd_keys();
    for limit in [-1, -100, i64::MIN] {
        let (e, r) = pair
            .range(pb::RangeRequest {
                limit,
                ..odd.clone()
            })
            .await;
        pair.same_range(&format!("limit {limit}"), &e, &r);
    }
    let (e, r) = pair
        .range(pb::RangeRequest {
            limit: 2,
            ..odd.clone()
        })
        .await;
    pair.same_range("limit 2 (reference for the negative limits)", &e, &r);
    for revision in [-1, -5, i64::MIN] {
        let (e, r) = pair
            .range(pb::RangeRequest {
                revision,
                ..odd.clone()
            })
            .await;
        pair.same_range(&format!("revision {revision}"), &e, &r);
    }
    let (e, r) = pair
        .range(pb::RangeRequest {
            revision: i64::MAX,
            ..odd.clone()
        })
        .await;
    pair.same_error("revision i64::MAX", &e, &r, true);
    let e = pair
        .etcd
        .compact(pb::CompactionRequest {
            revision: -1,
            physical: false,
        })
        .await;
    let r = pair
        .router
        .compact(pb::CompactionRequest {
            revision: -1,
            physical: false,
        })
        .await;
    pair.same_error("compact at revision -1", &e, &r, true);
    let e = pair
        .etcd
        .compact(pb::CompactionRequest {
            revision: i64::MAX,
            physical: false,
        })
        .await;
    let r = pair
        .router
        .compact(pb::CompactionRequest {
            revision: i64::MAX,
            physical: false,
        })
        .await;
    pair.same_error("compact at revision i64::MAX", &e, &r, true);
}

/// Sorting and revision filters: etcd serves them, the router refuses them
/// saying what it supports.
pub(crate) async fn unserved_range_options(pair: &mut Pair) {
    let (e, r) = pair
        .range(pb::RangeRequest {
            sort_order: pb::range_request::SortOrder::Descend as i32,
            sort_target: pb::range_request::SortTarget::Key as i32,
            ..odd_keys()
        })
        .await;
    pair.router_refuses(
        "range sorted descending",
        &e,
        &r,
        Code::InvalidArgument,
        &["ascending key order"],
    );
    let (e, r) = pair
        .range(pb::RangeRequest {
            min_mod_revision: 2,
            ..odd_keys()
        })
        .await;
    pair.router_refuses(
        "range with min_mod_revision",
        &e,
        &r,
        Code::InvalidArgument,
        &["min/max mod/create revision"],
    );
}
