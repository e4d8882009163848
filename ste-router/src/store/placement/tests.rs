//! Placement decisions, with shards that are never contacted (their gRPC
//! channels are lazy).

use std::time::Duration;

use ste_core::index::{IndexEntry, KeyIndexKind};
use ste_core::revision::ShardRevision;

use super::*;

fn member(name: &str) -> Member {
    // Port 9 (discard) on loopback: nothing is ever sent there.
    Member::new(name, format!("http://127.0.0.1:9/{name}"))
}

fn placement(names: &[&str]) -> Placement {
    let connect = connect_grpc(
        ShardTimeouts {
            connect: Duration::from_millis(10),
            request: Duration::from_millis(10),
            tls: None,
        },
        Arc::default(),
    );
    Placement::new(64, names.iter().map(|n| member(n)).collect(), 0, connect).unwrap()
}

/// A key the `from` ring places on `a` and the `to` ring on `b`.
fn key_moving(from: &Ring, to: &Ring, a: &str, b: &str) -> Vec<u8> {
    (0..10_000)
        .map(|i| format!("/registry/pods/default/p{i}").into_bytes())
        .find(|k| {
            from.locate(k).is_some_and(|m| m.name == a) && to.locate(k).is_some_and(|m| m.name == b)
        })
        .expect("some key moves from a to b")
}

fn entry(shard: ShardId) -> IndexEntry {
    IndexEntry {
        shard,
        create: GlobalRevision(2),
        modified: GlobalRevision(2),
        version: 1,
        lease: 0,
        value_size: 1,
        shard_modified: ShardRevision(2),
    }
}

#[tokio::test]
async fn a_stable_ring_reads_one_key_from_its_owner_only() {
    let placement = placement(&["a", "b"]);
    let key = b"/registry/pods/default/web-1";
    let shards = placement
        .shards_for(&KeyRange::single(key), GlobalRevision(5))
        .unwrap();
    assert_eq!(shards.len(), 1);
    assert_eq!(Some(shards[0].name.clone()), placement.committed_owner(key));
    let all = placement
        .shards_for(&KeyRange::prefix(b"/registry/pods/"), GlobalRevision(5))
        .unwrap();
    assert_eq!(all.len(), 2);
}

#[tokio::test]
async fn during_a_change_new_keys_go_to_the_target_and_old_ones_stay() {
    let placement = placement(&["a"]);
    let ring = placement.ring();
    let target = placement.ring_of(vec![member("a"), member("b")]).unwrap();
    let key = key_moving(&ring, &target, "a", "b");
    placement.set_target(target).unwrap();
    assert!(placement.change_pending());
    assert!(placement.is_member_or_joining("b"));
    assert!(!placement.is_member("b"));

    // A new key: its owner in the target.
    let index = Index::new(KeyIndexKind::BTree);
    assert_eq!(placement.holder(&key, &index).unwrap().name, "b");
    // A key not moved yet: where the index says.
    let a = placement.shard_named("a").unwrap();
    index.insert(key.clone(), entry(a.id));
    assert_eq!(placement.holder(&key, &index).unwrap().name, "a");
    // One-key reads look at every shard while the change is pending.
    let shards = placement
        .shards_for(&KeyRange::single(&key), GlobalRevision(9))
        .unwrap();
    assert_eq!(shards.len(), 2);
}

#[tokio::test]
async fn after_a_commit_older_reads_still_look_everywhere() {
    let placement = placement(&["a"]);
    let target = placement
        .ring_of(vec![member("a"), member("b")])
        .unwrap()
        .with_generation(Generation(1));
    placement.set_target(target.clone()).unwrap();
    let removed = placement.commit(target, GlobalRevision(10));
    assert!(removed.is_empty());
    assert_eq!(placement.generation(), Generation(1));
    let key = b"k";
    assert_eq!(
        placement
            .shards_for(&KeyRange::single(key), GlobalRevision(9))
            .unwrap()
            .len(),
        2,
        "a read below the commit may find the key on its old shard"
    );
    assert_eq!(
        placement
            .shards_for(&KeyRange::single(key), GlobalRevision(10))
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_commit_drops_the_shards_of_members_that_left() {
    let placement = placement(&["a", "b"]);
    let target = placement.ring_of(vec![member("a")]).unwrap();
    let removed = placement.commit(target, GlobalRevision(3));
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].name, "b");
    assert!(placement.shard_named("b").is_none());
    assert_eq!(placement.shards().len(), 1);
}

#[tokio::test]
async fn a_refused_join_forgets_only_its_own_shard() {
    let placement = placement(&["a"]);
    let (shard, created) = placement.shard_for(&member("b")).unwrap();
    assert!(created);
    let (again, created_again) = placement.shard_for(&member("b")).unwrap();
    assert!(!created_again);
    assert!(Arc::ptr_eq(&shard, &again));
    placement.forget(&shard);
    assert!(placement.shard_named("b").is_none());
    assert!(placement.shard_named("a").is_some());
}

#[tokio::test]
async fn an_empty_ring_has_no_owner() {
    let placement = placement(&[]);
    assert!(!placement.has_members());
    assert!(matches!(placement.owner(b"k"), Err(StoreError::NoMembers)));
    assert!(matches!(
        placement.shards_for(&KeyRange::prefix(b"/"), GlobalRevision(1)),
        Err(StoreError::NoMembers)
    ));
}
