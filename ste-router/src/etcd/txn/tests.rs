//! The Txn classifier, case by case: kube-apiserver's four shapes as
//! etcd's `client/v3/kubernetes` and the compactor send them, and what
//! falls back to the generic path.

use ste_proto::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};

use super::*;

const K: &[u8] = b"/registry/pods/default/web-1";

fn compare(target: CompareTarget, union: TargetUnion) -> pb::Compare {
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: K.to_vec(),
        target_union: Some(union),
        range_end: Vec::new(),
    }
}

fn mod_is(revision: i64) -> pb::Compare {
    compare(CompareTarget::Mod, TargetUnion::ModRevision(revision))
}

fn op(request: request_op::Request) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request),
    }
}

fn put(key: &[u8]) -> pb::RequestOp {
    op(request_op::Request::RequestPut(pb::PutRequest {
        key: key.to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }))
}

fn delete(key: &[u8]) -> pb::RequestOp {
    op(request_op::Request::RequestDeleteRange(
        pb::DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        },
    ))
}

fn get(key: &[u8]) -> pb::RequestOp {
    op(request_op::Request::RequestRange(pb::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }))
}

fn txn(
    compare: Vec<pb::Compare>,
    success: Vec<pb::RequestOp>,
    failure: Vec<pb::RequestOp>,
) -> pb::TxnRequest {
    pb::TxnRequest {
        compare,
        success,
        failure,
    }
}

#[test]
fn kube_apiserver_shapes_are_recognised() {
    let cases = [
        (txn(vec![mod_is(0)], vec![put(K)], vec![]), TxnShape::Create),
        (
            txn(vec![mod_is(0)], vec![put(K)], vec![get(K)]),
            TxnShape::Create,
        ),
        (
            txn(vec![mod_is(7)], vec![put(K)], vec![get(K)]),
            TxnShape::Update,
        ),
        (
            txn(vec![mod_is(7)], vec![delete(K)], vec![get(K)]),
            TxnShape::Delete,
        ),
        (
            txn(vec![mod_is(7)], vec![delete(K)], vec![]),
            TxnShape::Delete,
        ),
        (
            txn(
                vec![compare(CompareTarget::Version, TargetUnion::Version(3))],
                vec![put(K)],
                vec![get(K)],
            ),
            TxnShape::Compaction,
        ),
    ];
    for (request, shape) in cases {
        assert_eq!(TxnShape::classify(&request), shape, "{request:?}");
    }
}

#[test]
fn everything_else_is_generic() {
    let mut not_equal = mod_is(7);
    not_equal.result = CompareResult::NotEqual as i32;
    let mut ranged_compare = mod_is(7);
    ranged_compare.range_end = b"\0".to_vec();
    let ranged_delete = op(request_op::Request::RequestDeleteRange(
        pb::DeleteRangeRequest {
            key: K.to_vec(),
            range_end: b"/registry/pods/default/web-2".to_vec(),
            ..Default::default()
        },
    ));
    let writes = TxnShape::Generic { writes: true };
    let reads = TxnShape::Generic { writes: false };
    let cases = [
        // No compare: etcdctl's `txn` with only a put.
        (txn(vec![], vec![put(K)], vec![]), writes),
        (txn(vec![not_equal], vec![put(K)], vec![]), writes),
        (txn(vec![ranged_compare], vec![put(K)], vec![]), writes),
        (txn(vec![mod_is(7)], vec![ranged_delete], vec![]), writes),
        // The write is on another key than the compare.
        (txn(vec![mod_is(0)], vec![put(b"other")], vec![]), writes),
        // More than one op in a branch.
        (txn(vec![mod_is(0)], vec![put(K), get(K)], vec![]), writes),
        (
            txn(vec![mod_is(0)], vec![put(K)], vec![get(K), get(K)]),
            writes,
        ),
        // The failure branch reads another key.
        (
            txn(vec![mod_is(0)], vec![put(K)], vec![get(b"other")]),
            writes,
        ),
        // Read-only.
        (txn(vec![mod_is(7)], vec![get(K)], vec![get(K)]), reads),
        (txn(vec![], vec![], vec![]), reads),
    ];
    for (request, shape) in cases {
        assert_eq!(TxnShape::classify(&request), shape, "{request:?}");
    }
}

#[test]
fn labels_name_the_shape() {
    assert_eq!(TxnShape::Create.label(), "Txn.create");
    assert_eq!(TxnShape::Update.label(), "Txn.update");
    assert_eq!(TxnShape::Delete.label(), "Txn.delete");
    assert_eq!(TxnShape::Compaction.label(), "Txn.compaction");
    assert_eq!(TxnShape::Generic { writes: false }.label(), "Txn.read");
    assert_eq!(TxnShape::Generic { writes: true }.label(), "Txn.generic");
}

#[test]
fn the_generic_plan_finds_the_one_write_or_refuses() {
    let planned = generic::plan_for_tests(&txn(vec![mod_is(0)], vec![get(K), put(K)], vec![]))
        .unwrap()
        .unwrap();
    assert_eq!(planned.0, 1, "the write's position in the success branch");
    assert_eq!(planned.1.key, K);
    assert!(
        generic::plan_for_tests(&txn(vec![], vec![get(K)], vec![get(b"x")]))
            .unwrap()
            .is_none()
    );
    let refusals = [
        txn(vec![], vec![put(K), put(b"x")], vec![]),
        txn(vec![], vec![], vec![put(K)]),
        txn(vec![mod_is(0)], vec![put(b"x")], vec![]),
        txn(
            vec![],
            vec![op(request_op::Request::RequestTxn(
                pb::TxnRequest::default(),
            ))],
            vec![],
        ),
    ];
    for request in refusals {
        let status = generic::plan_for_tests(&request).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{request:?}");
        assert!(
            status.message().contains("ste-router supports"),
            "{}",
            status.message()
        );
    }
}

mod served {
    //! Each shape served on memory shards: the response kube-apiserver
    //! reads its resourceVersion and conflicts from.

    use super::*;
    use crate::store::testing::TestStore;

    async fn run(t: &TestStore, request: pb::TxnRequest) -> pb::TxnResponse {
        let shape = TxnShape::classify(&request);
        serve(&t.store, shape, request).await.unwrap()
    }

    fn put_response(response: &pb::TxnResponse) -> &pb::PutResponse {
        match &response.responses[0].response {
            Some(response_op::Response::ResponsePut(put)) => put,
            other => panic!("not a put answer: {other:?}"),
        }
    }

    fn range_response(response: &pb::TxnResponse) -> &pb::RangeResponse {
        match &response.responses[0].response {
            Some(response_op::Response::ResponseRange(range)) => range,
            other => panic!("not a range answer: {other:?}"),
        }
    }

    #[tokio::test]
    async fn create_then_create_again_conflicts_with_the_stored_object() {
        let t = TestStore::new(&["a", "b"]).await;
        let created = run(&t, txn(vec![mod_is(0)], vec![put(K)], vec![get(K)])).await;
        assert!(created.succeeded);
        let revision = created.header.as_ref().unwrap().revision;
        assert_eq!(
            put_response(&created).header.as_ref().unwrap().revision,
            revision,
            "the nested header carries the write's revision"
        );
        let again = run(&t, txn(vec![mod_is(0)], vec![put(K)], vec![get(K)])).await;
        assert!(!again.succeeded);
        let existing = &range_response(&again).kvs[0];
        assert_eq!(existing.mod_revision, revision);
        assert_eq!(existing.value, &b"v"[..]);
    }

    #[tokio::test]
    async fn update_applies_at_the_expected_revision_only() {
        let t = TestStore::new(&["a", "b"]).await;
        let created = t.put(std::str::from_utf8(K).unwrap(), "one").await;
        let stale = run(
            &t,
            txn(vec![mod_is(created.0 - 1)], vec![put(K)], vec![get(K)]),
        )
        .await;
        assert!(!stale.succeeded);
        assert_eq!(range_response(&stale).kvs[0].mod_revision, created.0);
        let updated = run(&t, txn(vec![mod_is(created.0)], vec![put(K)], vec![get(K)])).await;
        assert!(updated.succeeded);
        assert_eq!(updated.header.unwrap().revision, created.0 + 1);
        assert_eq!(
            t.get(std::str::from_utf8(K).unwrap()).await.as_deref(),
            Some("v")
        );
    }

    #[tokio::test]
    async fn delete_answers_deleted_or_conflict() {
        let t = TestStore::new(&["a"]).await;
        let created = t.put(std::str::from_utf8(K).unwrap(), "one").await;
        let mut with_prev = delete(K);
        if let Some(request_op::Request::RequestDeleteRange(d)) = &mut with_prev.request {
            d.prev_kv = true;
        }
        let wrong = run(
            &t,
            txn(
                vec![mod_is(created.0 + 5)],
                vec![with_prev.clone()],
                vec![get(K)],
            ),
        )
        .await;
        assert!(!wrong.succeeded);
        let deleted = run(
            &t,
            txn(vec![mod_is(created.0)], vec![with_prev], vec![get(K)]),
        )
        .await;
        assert!(deleted.succeeded);
        match &deleted.responses[0].response {
            Some(response_op::Response::ResponseDeleteRange(d)) => {
                assert_eq!(d.deleted, 1);
                assert_eq!(d.prev_kvs[0].value, &b"one"[..]);
            }
            other => panic!("not a delete answer: {other:?}"),
        }
        // mod_revision 0 on an absent key holds; nothing to delete, no revision.
        let before = t.store.revisions().current();
        let nothing = run(&t, txn(vec![mod_is(0)], vec![delete(K)], vec![])).await;
        assert!(nothing.succeeded);
        assert_eq!(nothing.header.unwrap().revision, before.0);
        assert_eq!(t.store.revisions().current(), before);
    }

    #[tokio::test]
    async fn the_compactor_lease_goes_to_one_writer() {
        let t = TestStore::new(&["a", "b"]).await;
        let version_is = |v| compare(CompareTarget::Version, TargetUnion::Version(v));
        let first = run(&t, txn(vec![version_is(0)], vec![put(K)], vec![get(K)])).await;
        assert!(first.succeeded);
        let second = run(&t, txn(vec![version_is(0)], vec![put(K)], vec![get(K)])).await;
        assert!(!second.succeeded, "the other apiserver lost the race");
        assert_eq!(range_response(&second).kvs[0].version, 1);
        let next = run(&t, txn(vec![version_is(1)], vec![put(K)], vec![get(K)])).await;
        assert!(next.succeeded);
    }

    /// Found by the differential fuzzer (tests/tests/router_fuzz.rs): the
    /// router served every read of a writing Txn at the write's revision,
    /// so a read before the write saw it; etcd reads at the transaction's
    /// start until it has changed a key.
    #[tokio::test]
    async fn a_txn_read_before_its_write_does_not_see_it() {
        let t = TestStore::new(&["a", "b"]).await;
        let created = t.put(std::str::from_utf8(K).unwrap(), "one").await;
        let answer = run(
            &t,
            txn(
                vec![mod_is(created.0)],
                vec![get(K), put(K), get(K)],
                vec![],
            ),
        )
        .await;
        assert!(answer.succeeded);
        let written = answer.header.unwrap().revision;
        let reads: Vec<(i64, Vec<u8>)> = [0, 2]
            .iter()
            .map(|&i| match &answer.responses[i].response {
                Some(response_op::Response::ResponseRange(r)) => {
                    (r.header.as_ref().unwrap().revision, r.kvs[0].value.to_vec())
                }
                other => panic!("not a range answer: {other:?}"),
            })
            .collect();
        assert_eq!(
            reads,
            [(written - 1, b"one".to_vec()), (written, b"v".to_vec())],
            "the read before the put sees the old value at the revision before; the read after sees the put"
        );
    }

    #[tokio::test]
    async fn a_generic_read_only_txn_evaluates_compares_on_any_keys() {
        let t = TestStore::new(&["a", "b", "c"]).await;
        t.put("/x", "1").await;
        let request = pb::TxnRequest {
            compare: vec![pb::Compare {
                key: b"/x".to_vec(),
                ..mod_is(0)
            }],
            success: vec![get(b"/x")],
            failure: vec![get(b"/x"), get(b"/y")],
        };
        let answer = run(&t, request).await;
        assert!(!answer.succeeded, "/x exists");
        assert_eq!(answer.responses.len(), 2);
    }
}
