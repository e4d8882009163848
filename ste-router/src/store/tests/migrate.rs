//! Ring changes on memory shards: keys move live, exactly the planned ones.

use tokio::sync::mpsc;

use crate::control::ring_change::{ChangeKind, Phase, RingChanges};
use crate::metrics::Metrics;
use crate::store::testing::{TestStore, member};

#[tokio::test]
async fn a_join_moves_exactly_the_keys_the_new_member_owns() {
    let t = TestStore::new(&["a", "b"]).await;
    for i in 0..200 {
        t.put(&format!("/pods/p{i:03}"), "v").await;
    }
    let changes = RingChanges::new(t.store.clone(), std::sync::Arc::new(Metrics::default()));
    let members = vec![member("a"), member("b"), member("c")];
    let target = t.store.placement().ring_of(members.clone()).unwrap();
    let plan = t.store.plan(&target);
    assert!(!plan.is_empty());

    let (tx, mut rx) = mpsc::channel(1_000);
    changes
        .run(ChangeKind::Join, "c", members, false, tx)
        .await
        .unwrap();
    let mut last = None;
    while let Ok(progress) = rx.try_recv() {
        last = Some(progress);
    }
    let done = last.unwrap();
    assert_eq!(done.phase, Phase::Done);
    assert_eq!(done.keys_moved, plan.keys());
    assert_eq!(done.to_generation, done.from_generation + 1);

    assert!(t.store.placement().is_member("c"));
    assert_eq!(t.keys_on("c").len() as u64, plan.keys());
    // Every key is on its owner, once, and reads as before.
    let total: usize = ["a", "b", "c"].iter().map(|n| t.keys_on(n).len()).sum();
    assert_eq!(total, 200);
    for i in (0..200).step_by(17) {
        let key = format!("/pods/p{i:03}");
        assert!(
            t.keys_on(&t.owner(key.as_bytes()))
                .contains(&key.clone().into_bytes())
        );
        assert_eq!(t.get(&key).await.as_deref(), Some("v"));
    }
    assert!(changes.progress().is_none(), "nothing runs any more");
}

#[tokio::test]
async fn a_dry_run_plans_without_moving() {
    let t = TestStore::new(&["a", "b"]).await;
    for i in 0..50 {
        t.put(&format!("/k{i}"), "v").await;
    }
    let changes = RingChanges::new(t.store.clone(), std::sync::Arc::new(Metrics::default()));
    let (tx, mut rx) = mpsc::channel(10);
    changes
        .run(ChangeKind::Leave, "b", vec![member("a")], true, tx)
        .await
        .unwrap();
    let planned = rx.recv().await.unwrap();
    assert_eq!(planned.phase, Phase::Planned);
    assert_eq!(planned.keys_total as usize, t.keys_on("b").len());
    assert!(t.store.placement().is_member("b"));
}

#[tokio::test]
async fn a_join_of_a_shard_that_holds_keys_is_refused_and_forgotten() {
    let t = TestStore::new(&["a"]).await;
    t.shard("c").put_raw(b"/left-over", b"x");
    let changes = RingChanges::new(t.store.clone(), std::sync::Arc::new(Metrics::default()));
    let (tx, _rx) = mpsc::channel(10);
    let error = changes
        .run(
            ChangeKind::Join,
            "c",
            vec![member("a"), member("c")],
            false,
            tx,
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("is not empty"), "{error}");
    assert!(t.store.placement().shard_named("c").is_none());
    assert!(!t.store.placement().change_pending());
}
