//! Ranges across shards: merge, pagination pinned to a revision, counts.

use ste_core::keyrange::KeyRange;
use ste_proto::etcd::etcdserverpb as pb;

use crate::store::multi_delete::Victims;
use crate::store::testing::TestStore;

fn list(prefix: &str, limit: i64, revision: i64) -> pb::RangeRequest {
    let range = KeyRange::prefix(prefix.as_bytes());
    let (key, range_end) = range.to_request();
    pb::RangeRequest {
        key,
        range_end,
        limit,
        revision,
        ..Default::default()
    }
}

fn keys(kvs: &[ste_proto::etcd::mvccpb::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

#[tokio::test]
async fn a_paginated_list_pinned_to_a_revision_is_exact() {
    let t = TestStore::new(&["a", "b", "c"]).await;
    for i in 0..30 {
        t.put(&format!("/pods/p{i:02}"), "v").await;
    }
    let (at, first) = t.store.range(&list("/pods/", 10, 0)).await.unwrap();
    assert_eq!(first.count, 30);
    assert!(first.more);
    assert_eq!(keys(&first.kvs)[0], "/pods/p00");
    // Writes after the first page do not show in the pinned next pages.
    t.put("/pods/p05a", "late").await;
    t.write(
        "/pods/p20",
        crate::store::write::WriteOp::Delete,
        Vec::new(),
    )
    .await;
    let mut all = keys(&first.kvs);
    let mut next = format!("{}\0", all.last().unwrap());
    loop {
        let mut request = list("/pods/", 10, at.0);
        request.key = next.clone().into_bytes();
        let (_, page) = t.store.range(&request).await.unwrap();
        all.extend(keys(&page.kvs));
        if !page.more {
            break;
        }
        next = format!("{}\0", all.last().unwrap());
    }
    let expected: Vec<String> = (0..30).map(|i| format!("/pods/p{i:02}")).collect();
    assert_eq!(all, expected);
    let (_, now) = t.store.range(&list("/pods/", 0, 0)).await.unwrap();
    assert_eq!(now.count, 30, "one added, one deleted");
}

#[tokio::test]
async fn a_multi_key_delete_is_one_revision_across_shards() {
    let t = TestStore::new(&["a", "b", "c"]).await;
    for i in 0..12 {
        t.put(&format!("/ns/k{i:02}"), "v").await;
    }
    t.put("/other", "stays").await;
    let deleted = t
        .store
        .delete_keys(Victims::Range(KeyRange::prefix(b"/ns/")))
        .await
        .unwrap();
    let revision = deleted.revision.unwrap();
    assert_eq!(deleted.count(), 12);
    assert_eq!(t.store.revisions().current(), revision);
    let events = t
        .store
        .revisions()
        .feed()
        .events(revision, revision)
        .unwrap();
    assert_eq!(events.len(), 12);
    assert!(events.iter().all(|e| e.revision == revision));
    assert_eq!(t.store.index().len(), 1);
    // Chunks of at most --shard-max-txn-ops (4 here) reached every shard.
    for name in ["a", "b", "c"] {
        assert!(t.keys_on(name).iter().all(|k| k == b"/other"));
    }
    // The keys are still readable at the revision before.
    let (_, before) = t
        .store
        .range(&list("/ns/", 0, revision.0 - 1))
        .await
        .unwrap();
    assert_eq!(before.count, 12);
}

/// Keys every shard of `t` returned so far, in total.
fn keys_read(t: &TestStore) -> usize {
    ["a", "b", "c"]
        .iter()
        .map(|n| t.shard(n).range_sizes().iter().sum::<usize>())
        .sum()
}

#[tokio::test]
async fn a_page_is_planned_from_the_index_so_the_shards_read_about_one_page() {
    let t = TestStore::new(&["a", "b", "c"]).await;
    for i in 0..300 {
        t.put(&format!("/pods/p{i:03}"), "v").await;
    }
    let before = keys_read(&t);
    let (at, page) = t.store.range(&list("/pods/", 50, 0)).await.unwrap();
    assert_eq!(
        keys(&page.kvs),
        (0..50)
            .map(|i| format!("/pods/p{i:03}"))
            .collect::<Vec<_>>()
    );
    assert!(page.more);
    assert_eq!(page.count, 300);
    // The page's 50 keys, each from its shard; asking each shard for 51
    // would read 153.
    assert_eq!(keys_read(&t) - before, 50);

    // Churn after the page's revision: the index's plan misses, and the
    // pinned next page is still exact (read again the plain way).
    for i in 50..120 {
        t.write(
            &format!("/pods/p{i:03}"),
            crate::store::write::WriteOp::Delete,
            Vec::new(),
        )
        .await;
    }
    let mut from = b"/pods/p049\0".to_vec();
    let end = ste_core::keyrange::prefix_end(b"/pods/");
    let mut rest = Vec::new();
    loop {
        let request = pb::RangeRequest {
            key: from.clone(),
            range_end: end.clone(),
            limit: 50,
            revision: at.0,
            ..Default::default()
        };
        let (_, page) = t.store.range(&request).await.unwrap();
        assert_eq!(
            page.count,
            300 - 50 - rest.len() as i64,
            "count at the pinned revision"
        );
        rest.extend(keys(&page.kvs));
        if !page.more {
            break;
        }
        from = page.kvs.last().unwrap().key.clone();
        from.push(0);
    }
    assert_eq!(
        rest,
        (50..300)
            .map(|i| format!("/pods/p{i:03}"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn count_only_is_answered_by_the_index() {
    let t = TestStore::new(&["a", "b", "c"]).await;
    for i in 0..40 {
        t.put(&format!("/pods/p{i:02}"), "v").await;
    }
    let before = keys_read(&t);
    let calls_before = range_calls(&t);
    let mut request = list("/pods/", 0, 0);
    request.count_only = true;
    let (_, counted) = t.store.range(&request).await.unwrap();
    assert_eq!(counted.count, 40);
    assert!(counted.kvs.is_empty());
    assert_eq!(range_calls(&t), calls_before, "no shard was asked");
    assert_eq!(keys_read(&t), before);
    // At an older revision the event log takes the count back: no shard
    // asked either.
    request.revision = t.store.revisions().current().0 - 5;
    let (_, counted) = t.store.range(&request).await.unwrap();
    assert_eq!(counted.count, 35);
    t.write(
        "/pods/p00",
        crate::store::write::WriteOp::Delete,
        Vec::new(),
    )
    .await;
    let (_, counted) = t.store.range(&request).await.unwrap();
    assert_eq!(counted.count, 35, "a delete since does not count");
    assert_eq!(range_calls(&t), calls_before, "no shard was asked");
}

/// Range calls every shard of `t` answered so far, in total.
fn range_calls(t: &TestStore) -> usize {
    ["a", "b", "c"]
        .iter()
        .map(|n| t.shard(n).range_sizes().len())
        .sum()
}

/// Keys every shard of `t` counted so far (walked, for etcd), in total.
fn keys_counted(t: &TestStore) -> i64 {
    ["a", "b", "c"]
        .iter()
        .map(|n| t.shard(n).range_counts().iter().sum::<i64>())
        .sum()
}

/// Every page of `prefix` at `revision` (0: the first at the current one,
/// the rest pinned to it), each page's (count, more), and the keys.
async fn list_pages(
    t: &TestStore,
    prefix: &str,
    limit: i64,
    revision: i64,
) -> (Vec<(i64, bool)>, Vec<String>) {
    let mut request = list(prefix, limit, revision);
    let (mut pages, mut all) = (Vec::new(), Vec::new());
    loop {
        let (at, page) = t.store.range(&request).await.unwrap();
        pages.push((page.count, page.more));
        all.extend(keys(&page.kvs));
        if !page.more {
            return (pages, all);
        }
        request.revision = if revision > 0 { revision } else { at.0 };
        request.key = page.kvs.last().unwrap().key.clone();
        request.key.push(0);
    }
}

#[tokio::test]
async fn a_full_list_reads_and_counts_each_key_once_on_the_shards() {
    let t = TestStore::new(&["a", "b", "c"]).await;
    for i in 0..300 {
        t.put(&format!("/pods/p{i:03}"), "v").await;
    }
    t.put("/pods0", "after the prefix").await;
    let (read, counted) = (keys_read(&t), keys_counted(&t));
    let (pages, all) = list_pages(&t, "/pods/", 50, 0).await;
    assert_eq!(all.len(), 300);
    let expected: Vec<_> = (0..6).map(|i| (300 - 50 * i, i < 5)).collect();
    assert_eq!(
        pages, expected,
        "each page's count and more, as etcd gives them"
    );
    assert_eq!(keys_read(&t) - read, 300);
    // Each shard was asked only up to the page's last key: asked to the
    // prefix's end, the shards would count 300 + 250 + ... + 50 = 1050.
    assert_eq!(keys_counted(&t) - counted, 300);
}

#[tokio::test]
async fn pinned_pages_at_every_revision_match_a_model_after_creates_and_deletes() {
    let t = TestStore::new(&["a", "b", "c"]).await;
    let mut live = std::collections::BTreeSet::new();
    let mut history = Vec::new();
    // A seeded mix of creates, updates and deletes over 40 keys, the live
    // set remembered at each revision.
    let mut seed = 0x5eed_u64;
    for _ in 0..160 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = format!("/pods/p{:02}", (seed >> 33) % 40);
        let revision = if live.contains(&key) && (seed >> 20).is_multiple_of(3) {
            live.remove(&key);
            match t
                .write(&key, crate::store::write::WriteOp::Delete, Vec::new())
                .await
            {
                crate::store::write::WriteOutcome::Applied { revision, .. } => revision,
                other => panic!("delete of a live key: {other:?}"),
            }
        } else {
            live.insert(key.clone());
            t.put(&key, "v").await
        };
        history.push((revision.0, live.iter().cloned().collect::<Vec<_>>()));
    }
    let calls = range_calls(&t);
    let mut pages_read = 0;
    for (revision, expected) in &history {
        let mut count_only = list("/pods/", 0, *revision);
        count_only.count_only = true;
        let (_, counted) = t.store.range(&count_only).await.unwrap();
        assert_eq!(
            counted.count,
            expected.len() as i64,
            "count_only at {revision}"
        );
        for limit in [1, 3, 7, 50] {
            let (pages, all) = list_pages(&t, "/pods/", limit, *revision).await;
            assert_eq!(
                &all, expected,
                "the keys at revision {revision}, pages of {limit}"
            );
            let total = expected.len() as i64;
            for (i, (count, more)) in pages.iter().enumerate() {
                let before = (i as i64 * limit).min(total);
                assert_eq!(*count, total - before, "count of page {i} at {revision}");
                assert_eq!(
                    *more,
                    total - before > limit,
                    "more of page {i} at {revision}"
                );
            }
            pages_read += pages.len();
        }
    }
    // Planned pages ask the shards at most once each per page; a page
    // read again the plain way would ask them twice.
    assert!(range_calls(&t) - calls <= 3 * pages_read);
}
