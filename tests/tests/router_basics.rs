//! The router through a real etcd client: the basic calls and where keys
//! land.

use std::time::Duration;

use etcd_client::GetOptions;
use ste_tests::keys::PODS;
use ste_tests::{ShardedRouter, ring, watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_shards_and_read_back_with_global_revisions() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let mut client = cluster.router.client().await?;
    let mut revisions = Vec::new();
    for i in 0..60 {
        let response = client
            .put(
                format!("/registry/pods/default/pod-{i:02}"),
                format!("v{i}"),
                None,
            )
            .await?;
        revisions.push(response.header().map(|h| h.revision()).unwrap_or_default());
    }
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions increase: {revisions:?}"
    );

    let all = client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(all.count(), 60);
    assert_eq!(all.kvs().len(), 60);
    for (i, kv) in all.kvs().iter().enumerate() {
        assert_eq!(kv.key_str()?, format!("/registry/pods/default/pod-{i:02}"));
        assert_eq!(kv.value_str()?, format!("v{i}"));
        assert_eq!(kv.mod_revision(), revisions[i]);
        assert_eq!(kv.create_revision(), revisions[i]);
        assert_eq!(kv.version(), 1);
    }

    // Every key is on exactly the shard Locate names, and nowhere else.
    let mut admin = cluster.router.admin().await?;
    let mut per_shard = std::collections::BTreeMap::new();
    for kv in all.kvs() {
        let location = ring::locate(&mut admin, kv.key_str()?).await?;
        assert!(location.present);
        assert_eq!(location.mod_revision, kv.mod_revision());
        *per_shard.entry(location.member.clone()).or_insert(0) += 1;
        for shard in &cluster.shards {
            let held = shard.client().await?.get(kv.key(), None).await?.count();
            assert_eq!(
                held == 1,
                shard.name == location.member,
                "{} on {}",
                kv.key_str()?,
                shard.name
            );
        }
    }
    assert_eq!(
        per_shard.len(),
        3,
        "60 keys use all 3 shards: {per_shard:?}"
    );
    Ok(())
}

/// `--worker-threads 1`: one thread serves everything, so nothing in the
/// router may wait on a worker for another task (concurrent writes that
/// share a shard's turn, a watch streaming them, the health probes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_serves_concurrent_writes_and_a_watch() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &["--worker-threads", "1"]).await?;
    let log = cluster.router.log();
    assert!(
        log.split_whitespace()
            .any(|field| field == "worker_threads=1"),
        "the router says it runs one worker thread:\n{log}"
    );

    let mut client = cluster.router.client().await?;
    // From the revision after this one, so the watch hears every write
    // however late the router registers it.
    let now = client
        .get(PODS, None)
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or_default();
    let mut stream = watch::prefix_from(&mut client, PODS, now + 1).await?;
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..64 {
        let mut client = client.clone();
        writes.spawn(async move {
            client
                .put(format!("/registry/pods/default/pod-{i:02}"), "v", None)
                .await
        });
    }
    let mut revisions = Vec::new();
    while let Some(put) = writes.join_next().await {
        revisions.push(put??.header().map(|h| h.revision()).unwrap_or_default());
    }
    let mut sorted = revisions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 64, "64 writes, 64 revisions: {revisions:?}");

    let mut seen = Vec::new();
    while seen.len() < 64 {
        let response = watch::first_answer(&mut stream, Duration::from_secs(30)).await?;
        assert!(!response.canceled(), "the watch was canceled: {response:?}");
        seen.extend(
            response
                .events()
                .iter()
                .filter_map(|e| e.kv())
                .map(|kv| kv.mod_revision()),
        );
    }
    assert_eq!(
        seen, sorted,
        "the watch hears every write once, in revision order"
    );
    Ok(())
}
