//! One-key writes: revisions, compares, guards and lost answers.

use ste_core::revision::GlobalRevision;
use ste_proto::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ste_proto::etcd::etcdserverpb::{self as pb};
use tonic::{Code, Status};

use crate::error::StoreError;
use crate::store::testing::{TestStore, put_op, stored_revision};
use crate::store::write::{KeyWrite, WriteOp, WriteOutcome};

fn mod_is(key: &str, revision: i64) -> pb::Compare {
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.into(),
        target_union: Some(TargetUnion::ModRevision(revision)),
        range_end: Vec::new(),
    }
}

#[tokio::test]
async fn writes_take_consecutive_global_revisions_across_shards() {
    let t = TestStore::new(&["a", "b", "c"]).await;
    let mut last = t.store.revisions().current();
    for i in 0..20 {
        let revision = t.put(&format!("/k{i}"), "v").await;
        assert_eq!(revision, last.next(), "no gaps, no reuse");
        last = revision;
    }
    assert_eq!(t.store.revisions().current(), last);
    assert_eq!(t.store.index().len(), 20);
    // Each key is on its owner, in an envelope carrying its global revision.
    for i in 0..20 {
        let key = format!("/k{i}");
        let on_owner = t.shard(&t.owner(key.as_bytes())).raw_keys();
        let stored = on_owner.iter().find(|kv| kv.key == key.as_bytes()).unwrap();
        assert_eq!(
            stored_revision(&stored.value),
            t.store.index().get(key.as_bytes()).unwrap().modified
        );
    }
}

#[tokio::test]
async fn a_failed_compare_writes_nothing_and_uses_no_revision() {
    let t = TestStore::new(&["a", "b"]).await;
    let created = t.put("/pod", "one").await;
    let before = t.store.revisions().current();
    let outcome = t
        .write("/pod", put_op("two"), vec![mod_is("/pod", created.0 - 1)])
        .await;
    assert!(matches!(outcome, WriteOutcome::CompareFailed));
    assert_eq!(t.store.revisions().current(), before);
    assert_eq!(t.get("/pod").await.as_deref(), Some("one"));

    let outcome = t
        .write("/pod", put_op("two"), vec![mod_is("/pod", created.0)])
        .await;
    let WriteOutcome::Applied { revision, prev } = outcome else {
        panic!("the update applies");
    };
    assert_eq!(revision, before.next());
    assert_eq!(prev.unwrap().value, &b"one"[..]);
    let entry = t.store.index().get(b"/pod").unwrap();
    assert_eq!(
        (entry.create, entry.modified, entry.version),
        (created, revision, 2)
    );
}

#[tokio::test]
async fn deleting_an_absent_key_uses_no_revision() {
    let t = TestStore::new(&["a"]).await;
    let before = t.store.revisions().current();
    assert!(matches!(
        t.write("/none", WriteOp::Delete, Vec::new()).await,
        WriteOutcome::NothingDeleted
    ));
    assert_eq!(t.store.revisions().current(), before);
    t.put("/k", "v").await;
    assert!(matches!(
        t.write("/k", WriteOp::Delete, Vec::new()).await,
        WriteOutcome::Applied { .. }
    ));
    assert!(t.keys_on("a").is_empty());
    assert!(t.store.index().is_empty());
}

#[tokio::test]
async fn every_write_reaches_the_watch_feed_in_order() {
    let t = TestStore::new(&["a", "b", "c"]).await;
    let from = t.store.revisions().current().next();
    for i in 0..10 {
        t.put(&format!("/k{i}"), "v").await;
    }
    t.write("/k3", WriteOp::Delete, Vec::new()).await;
    let events = t
        .store
        .revisions()
        .feed()
        .events(from, t.store.revisions().current())
        .unwrap();
    let revisions: Vec<i64> = events.iter().map(|e| e.revision.0).collect();
    let expected: Vec<i64> = (from.0..from.0 + 11).collect();
    assert_eq!(revisions, expected);
    assert_eq!(events.last().unwrap().key(), b"/k3");
}

#[tokio::test]
async fn a_shard_that_does_not_answer_fails_the_write_and_leaves_a_gap() {
    let t = TestStore::new(&["a"]).await;
    t.put("/k", "v").await;
    t.shard("a").fail_next(
        1,
        Status::invalid_argument("etcdserver: mvcc: database space exceeded"),
    );
    let error = t
        .store
        .write_key(KeyWrite {
            key: b"/k".to_vec(),
            op: put_op("w"),
            compares: Vec::new(),
        })
        .await
        .unwrap_err();
    // etcd's own answer passes through; nothing was written.
    assert!(matches!(error, StoreError::Shard(ref s) if s.message().contains("space exceeded")));
    assert_eq!(t.get("/k").await.as_deref(), Some("v"));
    // The next write works, one revision later than the abandoned one.
    let before = t.store.revisions().current();
    let next = t.put("/k", "x").await;
    assert_eq!(next, GlobalRevision(before.0 + 1));
    assert!(
        t.store
            .placement()
            .shard_named("a")
            .unwrap()
            .check_available()
            .is_ok()
    );
}

#[tokio::test]
async fn a_lost_answer_is_resolved_by_reading_the_key_back() {
    let t = TestStore::new(&["a"]).await;
    t.put("/k", "v1").await;
    t.shard("a").lose_next_answers(1);
    let outcome = t.write("/k", put_op("v2"), Vec::new()).await;
    let WriteOutcome::Applied { prev, .. } = outcome else {
        panic!("the write was applied: the read-back finds it");
    };
    assert_eq!(
        prev.unwrap().value,
        &b"v1"[..],
        "the version before it, read at the revision below"
    );
    // The lost answer marked the shard unavailable until a health probe
    // answers (the router's check_shards loop).
    let shard = t.store.placement().shard_named("a").unwrap();
    assert!(shard.check_available().is_err());
    shard.mark_healthy();
    assert_eq!(t.get("/k").await.as_deref(), Some("v2"));
    assert!(!shard.health().needs_resync, "the outcome was resolved");
}

#[tokio::test]
async fn a_key_changed_around_the_router_is_never_overwritten() {
    let t = TestStore::new(&["a"]).await;
    t.put("/k", "v1").await;
    t.shard("a").put_raw(b"/k", b"written by someone else");
    let error = t
        .store
        .write_key(KeyWrite {
            key: b"/k".to_vec(),
            op: put_op("v2"),
            compares: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(tonic::Status::from(error).code(), Code::Unavailable);
    let raw = t.shard("a").raw_keys();
    assert_eq!(raw[0].value, &b"written by someone else"[..]);
    assert!(
        t.store
            .placement()
            .shard_named("a")
            .unwrap()
            .health()
            .needs_resync
    );
}
