//! Pins [`MemoryShard`] to etcd's answers for the requests the router sends.

use tonic::Code;

use super::*;
use crate::error::{COMPACTED, DUPLICATE_KEY, FUTURE_REVISION};

fn put(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            prev_kv: true,
            ..Default::default()
        })),
    }
}

fn delete(key: &str, range_end: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                prev_kv: true,
            },
        )),
    }
}

fn get(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(pb::RangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn compare(key: &str, result: CompareResult, union: TargetUnion) -> pb::Compare {
    let target = match union {
        TargetUnion::Version(_) => CompareTarget::Version,
        TargetUnion::CreateRevision(_) => CompareTarget::Create,
        TargetUnion::ModRevision(_) => CompareTarget::Mod,
        TargetUnion::Value(_) => CompareTarget::Value,
        TargetUnion::Lease(_) => CompareTarget::Lease,
    };
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(union),
        range_end: Vec::new(),
    }
}

fn txn(compare: Vec<pb::Compare>, success: Vec<pb::RequestOp>) -> pb::TxnRequest {
    pb::TxnRequest {
        compare,
        success,
        failure: vec![get("failure")],
    }
}

async fn write(shard: &MemoryShard, ops: Vec<pb::RequestOp>) -> pb::TxnResponse {
    shard.txn(txn(Vec::new(), ops)).await.expect("txn")
}

async fn range(
    shard: &MemoryShard,
    request: pb::RangeRequest,
) -> Result<pb::RangeResponse, Status> {
    shard.range(request).await
}

fn at(key: &str, revision: i64) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.into(),
        revision,
        ..Default::default()
    }
}

fn values(response: &pb::RangeResponse) -> Vec<String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    response
        .kvs
        .iter()
        .map(|kv| format!("{}={}", text(&kv.key), text(&kv.value)))
        .collect()
}

fn revision(response: &pb::TxnResponse) -> i64 {
    response.header.as_ref().expect("header").revision
}

#[tokio::test]
async fn first_write_is_revision_two_and_keys_count_versions() {
    let shard = MemoryShard::new();
    assert_eq!(shard.revision(), 1);
    assert_eq!(revision(&write(&shard, vec![put("a", "1")]).await), 2);
    assert_eq!(revision(&write(&shard, vec![put("a", "2")]).await), 3);
    let kv = &shard.raw_keys()[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));

    write(&shard, vec![delete("a", "")]).await;
    write(&shard, vec![put("a", "3")]).await;
    let kv = &shard.raw_keys()[0];
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (5, 5, 1),
        "a key created again starts over"
    );
}

#[tokio::test]
async fn reads_at_older_revisions_see_history_and_headers_say_now() {
    let shard = MemoryShard::new();
    write(&shard, vec![put("a", "1")]).await;
    write(&shard, vec![put("a", "2")]).await;
    write(&shard, vec![delete("a", "")]).await;
    for (rev, want) in [(2, vec!["a=1"]), (3, vec!["a=2"]), (4, vec![]), (0, vec![])] {
        let response = range(&shard, at("a", rev)).await.expect("range");
        assert_eq!(values(&response), want, "at revision {rev}");
        let header = response.header.expect("header");
        assert_eq!(
            (header.revision, header.member_id),
            (4, MemoryShard::MEMBER_ID)
        );
    }
    let future = range(&shard, at("a", 5)).await.expect_err("future");
    assert_eq!(
        (future.code(), future.message()),
        (Code::OutOfRange, FUTURE_REVISION)
    );
}

#[tokio::test]
async fn range_end_limit_count_and_keys_only() {
    let shard = MemoryShard::new();
    write(&shard, vec![put("a", "1"), put("b", "2"), put("c", "3")]).await;
    let span = |key: &str, range_end: &str| pb::RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        ..Default::default()
    };
    let cases = [
        (span("a", "c"), vec!["a=1", "b=2"], 2, false),
        (span("b", "\0"), vec!["b=2", "c=3"], 2, false),
        (span("\0", "\0"), vec!["a=1", "b=2", "c=3"], 3, false),
        (span("b", ""), vec!["b=2"], 1, false),
        (span("c", "a"), vec![], 0, false),
        (
            pb::RangeRequest {
                limit: 2,
                ..span("a", "\0")
            },
            vec!["a=1", "b=2"],
            3,
            true,
        ),
        (
            pb::RangeRequest {
                limit: 3,
                ..span("a", "\0")
            },
            vec!["a=1", "b=2", "c=3"],
            3,
            false,
        ),
        (
            pb::RangeRequest {
                count_only: true,
                ..span("a", "\0")
            },
            vec![],
            3,
            false,
        ),
        (
            pb::RangeRequest {
                keys_only: true,
                ..span("a", "b")
            },
            vec!["a="],
            1,
            false,
        ),
    ];
    for (request, kvs, count, more) in cases {
        let response = range(&shard, request.clone()).await.expect("range");
        assert_eq!(
            (values(&response), response.count, response.more),
            (kvs.iter().map(|s| s.to_string()).collect(), count, more),
            "{request:?}"
        );
    }
    let empty = range(&shard, span("", "")).await.expect_err("empty key");
    assert_eq!(empty.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn compares_follow_etcd_on_present_and_absent_keys() {
    use CompareResult::{Equal, Greater, Less, NotEqual};
    use TargetUnion::{CreateRevision, ModRevision, Value, Version};
    let shard = MemoryShard::new();
    write(&shard, vec![put("k", "v1")]).await;
    write(&shard, vec![put("k", "v2")]).await; // k: create 2, mod 3, version 2
    let cases = [
        ("k", Equal, ModRevision(3), true),
        ("k", Equal, ModRevision(2), false),
        ("k", NotEqual, ModRevision(2), true),
        ("k", Greater, CreateRevision(1), true),
        ("k", Less, CreateRevision(2), false),
        ("k", Equal, Version(2), true),
        ("k", Greater, Version(2), false),
        ("k", Equal, Value(b"v2".to_vec()), true),
        ("k", Less, Value(b"v3".to_vec()), true),
        ("absent", Equal, ModRevision(0), true),
        ("absent", Equal, CreateRevision(0), true),
        ("absent", Equal, Version(0), true),
        ("absent", NotEqual, Value(b"x".to_vec()), false),
    ];
    for (key, result, union, holds) in cases {
        let described = format!("{key} {result:?} {union:?}");
        let before = shard.revision();
        let response = shard
            .txn(txn(vec![compare(key, result, union)], vec![get("k")]))
            .await
            .expect("txn");
        assert_eq!(response.succeeded, holds, "{described}");
        assert_eq!(
            revision(&response),
            before,
            "a read-only txn writes nothing"
        );
    }
}

#[tokio::test]
async fn txn_writes_one_revision_and_returns_prev_kvs() {
    let shard = MemoryShard::new();
    write(&shard, vec![put("a", "old")]).await;
    let response = write(
        &shard,
        vec![
            put("a", "new"),
            put("b", "1"),
            get("a"),
            delete("absent", ""),
        ],
    )
    .await;
    assert_eq!(revision(&response), 3, "one txn, one revision");
    let [put_a, put_b, read, deleted] = &response.responses[..] else {
        panic!("four responses: {response:?}");
    };
    let Some(response_op::Response::ResponsePut(put_a)) = &put_a.response else {
        panic!("put: {put_a:?}")
    };
    assert_eq!(
        put_a.prev_kv.as_ref().map(|kv| kv.value.as_ref()),
        Some(&b"old"[..])
    );
    let Some(response_op::Response::ResponsePut(put_b)) = &put_b.response else {
        panic!("put: {put_b:?}")
    };
    assert_eq!(put_b.prev_kv, None, "a new key has no previous version");
    let Some(response_op::Response::ResponseRange(read)) = &read.response else {
        panic!("range: {read:?}")
    };
    assert_eq!(
        values(read),
        ["a=new"],
        "a txn's reads see its earlier writes"
    );
    let Some(response_op::Response::ResponseDeleteRange(deleted)) = &deleted.response else {
        panic!("delete: {deleted:?}")
    };
    assert_eq!(deleted.deleted, 0);

    let response = write(&shard, vec![delete("a", "\0")]).await;
    let Some(response_op::Response::ResponseDeleteRange(deleted)) = &response.responses[0].response
    else {
        panic!("delete: {response:?}")
    };
    assert_eq!(deleted.deleted, 2);
    let prev: Vec<_> = deleted.prev_kvs.iter().map(|kv| kv.mod_revision).collect();
    assert_eq!(prev, [3, 3]);
    assert!(shard.raw_keys().is_empty());

    let nothing = write(&shard, vec![delete("a", "\0")]).await;
    assert_eq!(revision(&nothing), 4, "deleting nothing writes nothing");
}

#[tokio::test]
async fn a_failed_compare_runs_the_failure_branch() {
    let shard = MemoryShard::new();
    let request = pb::TxnRequest {
        compare: vec![compare(
            "k",
            CompareResult::Equal,
            TargetUnion::ModRevision(7),
        )],
        success: vec![put("k", "success")],
        failure: vec![put("k", "failure")],
    };
    let response = shard.txn(request).await.expect("txn");
    assert!(!response.succeeded);
    assert_eq!(shard.raw_keys()[0].value, &b"failure"[..]);
}

#[tokio::test]
async fn duplicate_keys_in_one_txn_are_refused_before_applying() {
    let shard = MemoryShard::new();
    for ops in [
        vec![put("a", "1"), put("a", "2")],
        vec![put("b", "1"), delete("a", "c")],
    ] {
        let error = shard.txn(txn(Vec::new(), ops)).await.expect_err("refused");
        assert_eq!(
            (error.code(), error.message()),
            (Code::InvalidArgument, DUPLICATE_KEY)
        );
    }
    assert_eq!(shard.revision(), 1);
}

#[tokio::test]
async fn compaction_drops_history_and_refuses_as_etcd() {
    let shard = MemoryShard::new();
    for value in ["1", "2", "3"] {
        write(&shard, vec![put("a", value)]).await; // revisions 2, 3, 4
    }
    write(&shard, vec![put("gone", "x")]).await;
    write(&shard, vec![delete("gone", "")]).await; // revision 6
    let size = shard
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .db_size;

    let compact = |revision| {
        shard.compact(pb::CompactionRequest {
            revision,
            physical: true,
        })
    };
    compact(3).await.expect("compact");
    let old = range(&shard, at("a", 2)).await.expect_err("compacted");
    assert_eq!((old.code(), old.message()), (Code::OutOfRange, COMPACTED));
    let kept = range(&shard, at("a", 3))
        .await
        .expect("at the compaction point");
    assert_eq!(values(&kept), ["a=2"]);

    let again = compact(3).await.expect_err("compacted");
    assert_eq!(
        (again.code(), again.message()),
        (Code::OutOfRange, COMPACTED)
    );
    let future = compact(7).await.expect_err("future");
    assert_eq!(
        (future.code(), future.message()),
        (Code::OutOfRange, FUTURE_REVISION)
    );

    compact(6).await.expect("compact");
    let smaller = shard
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .db_size;
    assert!(
        smaller < size,
        "history and tombstones are gone: {smaller} < {size}"
    );
    assert_eq!(
        values(&range(&shard, at("a", 6)).await.expect("range")),
        ["a=3"]
    );
}

#[tokio::test]
async fn injected_failures_apply_nothing_and_lost_answers_apply() {
    let shard = MemoryShard::new();
    shard.fail_next(2, Status::unavailable("connection refused"));
    for _ in 0..2 {
        let error = shard
            .txn(txn(Vec::new(), vec![put("a", "1")]))
            .await
            .expect_err("injected");
        assert_eq!(
            (error.code(), error.message()),
            (Code::Unavailable, "connection refused")
        );
    }
    assert!(shard.raw_keys().is_empty(), "a failed call applies nothing");

    shard.lose_next_answers(1);
    let error = shard
        .txn(txn(Vec::new(), vec![put("a", "1")]))
        .await
        .expect_err("answer lost");
    assert_eq!(
        (error.code(), error.message()),
        (Code::Unavailable, ANSWER_LOST)
    );
    assert_eq!(
        shard.raw_keys()[0].value,
        &b"1"[..],
        "the write was applied"
    );
    assert_eq!(shard.revision(), 2);
    write(&shard, vec![put("a", "2")]).await;
}

#[tokio::test]
async fn raw_writes_go_around_and_status_and_alarms_answer() {
    let shard = MemoryShard::with_member_id(7);
    assert_eq!(shard.put_raw(b"x", b"raw"), 2);
    assert_eq!(shard.delete_raw(b"missing"), 2);
    assert_eq!(shard.put_raw(b"y", b"raw"), 3);
    assert_eq!(shard.delete_raw(b"y"), 4);
    let keys: Vec<_> = shard.raw_keys().into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, [b"x".to_vec()]);

    let status = shard.status(pb::StatusRequest {}).await.expect("status");
    let header = status.header.expect("header");
    assert_eq!(
        (header.revision, header.member_id, status.leader),
        (4, 7, 7)
    );
    assert!(status.db_size > 0);
    let alarms = shard
        .alarm(pb::AlarmRequest::default())
        .await
        .expect("alarm");
    assert!(alarms.alarms.is_empty());
}

/// The start-up scan's shape: pages of `limit` from "\0", pinned at the
/// first page's revision, each next page from the last key + "\0".
#[tokio::test]
async fn a_paged_scan_pinned_at_one_revision_ignores_later_writes() {
    let shard = MemoryShard::new();
    write(&shard, vec![put("a", "1"), put("b", "2"), put("c", "3")]).await;
    let (mut key, mut pinned, mut seen) = (vec![0u8], 0, Vec::new());
    loop {
        let page = range(
            &shard,
            pb::RangeRequest {
                key: key.clone(),
                range_end: vec![0],
                limit: 2,
                revision: pinned,
                ..Default::default()
            },
        )
        .await
        .expect("page");
        if pinned == 0 {
            pinned = page.header.as_ref().expect("header").revision;
            shard.put_raw(b"aa", b"late");
            shard.delete_raw(b"c");
        }
        seen.extend(values(&page));
        match page.kvs.last() {
            Some(last) if page.more => key = [last.key.as_slice(), &[0]].concat(),
            _ => break,
        }
    }
    assert_eq!(seen, ["a=1", "b=2", "c=3"]);
}
