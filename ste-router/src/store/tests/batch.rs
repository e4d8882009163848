//! Group commits: writes that queue behind a shard's Txn in flight go out
//! as one Txn; reads, pagination and watch events stay exact at every
//! revision inside a batch; guard failures and lost answers inside a batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ste_core::keyrange::KeyRange;
use ste_core::revision::GlobalRevision;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::error::{StoreError, StoreResult};
use crate::store::Store;
use crate::store::testing::{TestStore, put_op};
use crate::store::write::{KeyWrite, WriteOp, WriteOutcome};

/// Starts a write of `key` in its own task.
fn spawn_write(
    store: &Arc<Store>,
    key: &str,
    op: WriteOp,
) -> JoinHandle<StoreResult<WriteOutcome>> {
    let store = store.clone();
    let write = KeyWrite {
        key: key.into(),
        op,
        compares: Vec::new(),
    };
    tokio::spawn(async move { store.write_key(write).await })
}

/// Polls `done` until it holds; panics naming `what` after 10 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What each write task answered, in task order.
async fn answers(
    tasks: Vec<JoinHandle<StoreResult<WriteOutcome>>>,
) -> Vec<StoreResult<WriteOutcome>> {
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("write task"));
    }
    answers
}

/// The revision an applied write got.
fn applied(outcome: StoreResult<WriteOutcome>) -> GlobalRevision {
    match outcome {
        Ok(WriteOutcome::Applied { revision, .. }) => revision,
        other => panic!("write not applied: {other:?}"),
    }
}

/// Holds shard `name`'s Txns, starts `first` (which takes the write turn
/// and waits at the shard), then queues `queued` behind it; returns the
/// hold and every write's task, `first`'s first.
async fn queue_behind_one(
    t: &TestStore,
    name: &str,
    first: (&str, WriteOp),
    queued: Vec<(&str, WriteOp)>,
) -> (
    crate::shard::memory::TxnHold,
    Vec<JoinHandle<StoreResult<WriteOutcome>>>,
) {
    let memory = t.shard(name);
    let shard = t.store.placement().owner(first.0.as_bytes()).unwrap();
    let hold = memory.hold_txns().await;
    let sent_before = memory.txn_sizes().len();
    let mut tasks = vec![spawn_write(&t.store, first.0, first.1)];
    // The first write is in flight once nothing is queued any more.
    wait_until("the first write to leave the queue", || {
        shard.writes().is_empty()
    })
    .await;
    let count = queued.len();
    for (key, op) in queued {
        tasks.push(spawn_write(&t.store, key, op));
    }
    wait_until("the writes to queue", || shard.writes().len() == count).await;
    assert_eq!(
        memory.txn_sizes().len(),
        sent_before,
        "nothing applied while held"
    );
    (hold, tasks)
}

#[tokio::test]
async fn writes_that_queue_behind_a_txn_in_flight_go_out_together() {
    let t = TestStore::new(&["a"]).await;
    let queued = (0..6).map(|i| format!("/q{i}")).collect::<Vec<_>>();
    let (hold, tasks) = queue_behind_one(
        &t,
        "a",
        ("/first", put_op("1")),
        queued.iter().map(|k| (k.as_str(), put_op(k))).collect(),
    )
    .await;
    drop(hold);
    let revisions: Vec<_> = answers(tasks).await.into_iter().map(applied).collect();
    // --shard-max-txn-ops is 4 in the test store: 1, then 4, then 2.
    assert_eq!(t.shard("a").txn_sizes(), vec![1, 4, 2]);
    let mut sorted = revisions.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "one revision per write");
    assert_eq!(
        sorted.last().unwrap().0 - sorted[0].0,
        6,
        "consecutive, no gap"
    );
    // Every writer reads its own write back.
    for key in &queued {
        assert_eq!(t.get(key).await.as_deref(), Some(key.as_str()));
    }
    assert_eq!(t.store.revisions().current(), *sorted.last().unwrap());
}

/// The keys under "/" as of `revision`, read in one go and in pages of
/// every size, checked against `want` (key → (value, mod_revision)).
async fn check_reads_at(
    t: &TestStore,
    revision: GlobalRevision,
    want: &BTreeMap<String, (String, i64)>,
) {
    let all = KeyRange::prefix(b"/");
    let got = t
        .store
        .read_range(&all, revision, 0, false, false)
        .await
        .unwrap();
    let seen: BTreeMap<String, (String, i64)> = got
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key.clone()).unwrap(),
                (
                    String::from_utf8(kv.value.to_vec()).unwrap(),
                    kv.mod_revision,
                ),
            )
        })
        .collect();
    assert_eq!(&seen, want, "range at {revision}");
    assert_eq!(got.count, want.len() as i64, "count at {revision}");
    let counted = t
        .store
        .read_range(&all, revision, 0, false, true)
        .await
        .unwrap();
    assert_eq!(counted.count, want.len() as i64, "count_only at {revision}");
    // Pinned pagination: each page starts after the last key of the one
    // before, at the same revision, as kube-apiserver pages a list.
    for limit in 1..=want.len().max(1) as i64 {
        let mut keys = Vec::new();
        let mut from = b"/".to_vec();
        loop {
            let range = KeyRange::from_request(&from, &ste_core::keyrange::prefix_end(b"/"));
            let page = t
                .store
                .read_range(&range, revision, limit, false, false)
                .await
                .unwrap();
            assert!(page.kvs.len() as i64 <= limit);
            keys.extend(
                page.kvs
                    .iter()
                    .map(|kv| String::from_utf8(kv.key.clone()).unwrap()),
            );
            if !page.more {
                break;
            }
            from = page.kvs.last().unwrap().key.clone();
            from.push(0);
        }
        assert_eq!(
            keys,
            want.keys().cloned().collect::<Vec<_>>(),
            "pages of {limit} at {revision}"
        );
    }
}

#[tokio::test]
async fn reads_and_pages_at_every_revision_inside_a_batch_are_exact() {
    let t = TestStore::new(&["a"]).await;
    // History, as (revision, key, Some(value) | None for a delete).
    let mut history: Vec<(GlobalRevision, String, Option<String>)> = Vec::new();
    for key in ["/k1", "/k2", "/k3"] {
        history.push((t.put(key, "v0").await, key.into(), Some("v0".into())));
    }
    let start = t.store.revisions().current();
    let writes: Vec<(&str, Option<&str>)> = vec![
        ("/k1", Some("v1")),
        ("/k2", None),
        ("/k4", Some("v1")),
        ("/k3", Some("v1")),
    ];
    let (hold, tasks) = queue_behind_one(
        &t,
        "a",
        ("/k0", put_op("v1")),
        writes
            .iter()
            .map(|(k, v)| (*k, v.map_or(WriteOp::Delete, put_op)))
            .collect(),
    )
    .await;
    drop(hold);
    let keys = std::iter::once(("/k0", Some("v1"))).chain(writes.iter().copied());
    for ((key, value), task) in keys.zip(tasks) {
        let revision = applied(task.await.unwrap());
        history.push((revision, key.into(), value.map(str::to_owned)));
    }
    assert_eq!(
        t.shard("a").txn_sizes().last(),
        Some(&4),
        "the four went out together"
    );
    history.sort();
    let end = t.store.revisions().current();
    for at in start.0..=end.0 {
        let mut want = BTreeMap::new();
        for (revision, key, value) in history.iter().filter(|h| h.0.0 <= at) {
            match value {
                Some(v) => want.insert(key.clone(), (v.clone(), revision.0)),
                None => want.remove(key),
            };
        }
        check_reads_at(&t, GlobalRevision(at), &want).await;
    }
}

#[tokio::test]
async fn a_guard_failure_inside_a_batch_fails_only_the_changed_key() {
    let t = TestStore::new(&["a"]).await;
    t.put("/k1", "v0").await;
    t.put("/k2", "v0").await;
    let k3_before = t.put("/k3", "v0").await;
    // Another etcd client changes /k2 on the shard, behind the router.
    t.shard("a").put_raw(b"/k2", b"not an envelope");
    let (hold, tasks) = queue_behind_one(
        &t,
        "a",
        ("/k0", put_op("v1")),
        vec![
            ("/k1", put_op("v1")),
            ("/k2", put_op("v1")),
            ("/k3", put_op("v1")),
        ],
    )
    .await;
    drop(hold);
    let outcomes = answers(tasks).await;
    let [first, k1, k2, k3]: [_; 4] = outcomes.try_into().unwrap();
    applied(first);
    let k1 = applied(k1);
    assert!(
        matches!(&k2, Err(StoreError::ShardUnavailable { reason, .. }) if reason.contains("outside the router")),
        "the changed key fails: {k2:?}"
    );
    // Once a key changed behind the router the shard's index is not
    // trusted: writes after it fail fast until the resync, as they would
    // have one by one.
    assert!(
        matches!(&k3, Err(StoreError::ShardUnavailable { reason, .. }) if reason.contains("resynchronising")),
        "{k3:?}"
    );
    // The batch of three was refused, then sent again one by one.
    assert_eq!(t.shard("a").txn_sizes()[3..], [1, 3, 1, 1]);
    let raw = t.shard("a").raw_keys();
    let value_of = |key: &[u8]| raw.iter().find(|kv| kv.key == key).unwrap().value.clone();
    assert_eq!(
        value_of(b"/k2"),
        &b"not an envelope"[..],
        "never overwritten"
    );
    assert_eq!(
        crate::store::testing::stored_revision(&value_of(b"/k1")),
        k1
    );
    assert_eq!(
        crate::store::testing::stored_revision(&value_of(b"/k3")),
        k3_before,
        "/k3 keeps the version written before"
    );
}

#[tokio::test]
async fn a_batch_whose_answer_was_lost_is_resolved_by_reading_back() {
    let t = TestStore::new(&["a"]).await;
    t.put("/k1", "v0").await;
    let memory = t.shard("a");
    let (hold, tasks) = queue_behind_one(
        &t,
        "a",
        ("/k0", put_op("v1")),
        vec![
            ("/k1", put_op("v1")),
            ("/k2", put_op("v1")),
            ("/k3", WriteOp::Delete),
        ],
    )
    .await;
    // Let the first Txn through, then hold again: the batch's Txn waits
    // behind the new hold (the gate is fair), and its answer gets lost.
    drop(hold);
    let hold = memory.hold_txns().await;
    memory.lose_next_answers(1);
    drop(hold);
    let outcomes = answers(tasks).await;
    assert!(matches!(outcomes[3], Ok(WriteOutcome::NothingDeleted)));
    let prev = match &outcomes[1] {
        Ok(WriteOutcome::Applied { prev, .. }) => prev.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        prev.unwrap().value,
        &b"v0"[..],
        "prev read back below the batch"
    );
    let k1 = applied(outcomes[1].clone());
    let k2 = applied(outcomes[2].clone());
    assert_eq!(k2.0, k1.0 + 1, "consecutive in one batch");
    // The lost answer marked the shard down until a probe answers.
    t.store.placement().shard_named("a").unwrap().mark_healthy();
    assert_eq!(t.get("/k1").await.as_deref(), Some("v1"));
    assert_eq!(t.get("/k2").await.as_deref(), Some("v1"));
    let events = t.store.revisions().feed().events(k1, k2).unwrap();
    assert_eq!(events.len(), 2, "both events, once");
}

#[tokio::test]
async fn a_batch_the_shard_did_not_apply_fails_every_write_and_leaves_gaps() {
    let t = TestStore::new(&["a"]).await;
    let memory = t.shard("a");
    let (hold, tasks) = queue_behind_one(
        &t,
        "a",
        ("/k0", put_op("v1")),
        vec![("/k1", put_op("v1")), ("/k2", put_op("v1"))],
    )
    .await;
    drop(hold);
    let hold = memory.hold_txns().await;
    memory.fail_next(1, Status::unavailable("connection reset"));
    drop(hold);
    let mut outcomes = answers(tasks).await;
    let first = applied(outcomes.remove(0));
    for outcome in outcomes {
        assert!(
            matches!(outcome, Err(StoreError::ShardUnavailable { .. })),
            "{outcome:?}"
        );
    }
    assert!(memory.raw_keys().iter().all(|kv| kv.key == b"/k0"));
    // The two revisions were abandoned: current moved past them, with no
    // event.
    assert_eq!(t.store.revisions().current().0, first.0 + 2);
    let events = t
        .store
        .revisions()
        .feed()
        .events(first.next(), GlobalRevision(first.0 + 2))
        .unwrap();
    assert!(events.is_empty());
}

#[tokio::test]
async fn watch_events_stay_in_revision_order_across_batches_on_several_shards() {
    let t = TestStore::new(&["a", "b", "c"]).await;
    let start = t.store.revisions().current();
    let mut holds = Vec::new();
    for name in ["a", "b", "c"] {
        holds.push(t.shard(name).hold_txns().await);
    }
    let keys: Vec<String> = (0..40).map(|i| format!("/w{i}")).collect();
    let tasks: Vec<_> = keys
        .iter()
        .map(|k| spawn_write(&t.store, k, put_op(k)))
        .collect();
    // Let every write reach a queue or a shard before releasing.
    let queued = || {
        ["a", "b", "c"]
            .iter()
            .map(|n| {
                t.store
                    .placement()
                    .shard_named(n)
                    .map_or(0, |s| s.writes().len())
            })
            .sum::<usize>()
    };
    wait_until("writes to queue on every shard", || {
        queued() + 3 >= keys.len()
    })
    .await;
    drop(holds);
    let mut revision_of = BTreeMap::new();
    for (key, task) in keys.iter().zip(tasks) {
        revision_of.insert(applied(task.await.unwrap()), key.clone());
    }
    for name in ["a", "b", "c"] {
        assert!(
            t.shard(name).txn_sizes().iter().any(|&n| n > 1),
            "shard {name} committed a group: {:?}",
            t.shard(name).txn_sizes()
        );
    }
    let end = t.store.revisions().current();
    let events = t
        .store
        .revisions()
        .feed()
        .events(start.next(), end)
        .unwrap();
    let seen: Vec<(GlobalRevision, String)> = events
        .iter()
        .map(|e| (e.revision, String::from_utf8(e.key().to_vec()).unwrap()))
        .collect();
    let want: Vec<(GlobalRevision, String)> = revision_of.into_iter().collect();
    assert_eq!(seen, want, "every write once, in revision order");
}
