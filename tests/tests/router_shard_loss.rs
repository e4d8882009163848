//! A shard that comes back empty (a new epoch: its etcd restarted on a
//! wiped tmpfs) lost its keys. The router notices, drops them from its
//! index and ends every watch with the compacted error, so kube-apiserver
//! relists and the controllers recreate the lost pods.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{GetOptions, WatchOptions};
use ste_tests::keys::PODS;
use ste_tests::watch::{first_answer, prefix_from, until_canceled};
use ste_tests::{ShardedRouter, ring};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_shard_is_resynchronised_and_watches_are_cut() -> anyhow::Result<()> {
    let mut cluster = ShardedRouter::start(3, &[]).await?;
    let mut client = cluster.router.client().await?;
    let (on_lost_shard, elsewhere) = put_pods(&cluster, "shard-b").await?;
    let mut watch = client
        .watch(PODS, Some(WatchOptions::new().with_prefix()))
        .await?;
    let created = watch.message().await?.expect("created");
    assert!(created.created());
    let before = client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await?
        .header()
        .expect("header")
        .revision();

    cluster
        .shard("shard-b")
        .expect("shard-b")
        .restart_empty()
        .await?;

    // The watch ends with the compacted error.
    let canceled = until_canceled(&mut watch, Duration::from_secs(60)).await?;
    assert!(canceled.compact_revision() > 0, "{canceled:?}");

    // The loss has a revision of its own: what a client saw up to `before`
    // is history, and resuming from it is refused. (Had the revision
    // stayed, kube-apiserver's watch cache would relist at `before` and
    // the controllers watching it would resume from there and never learn
    // that pods are gone.)
    let after = client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await?
        .header()
        .expect("header")
        .revision();
    assert!(
        after > before,
        "revision {after} after the loss, {before} before"
    );
    let mut resumed = prefix_from(&mut client, PODS, before + 1).await?;
    let refused = first_answer(&mut resumed, Duration::from_secs(30)).await?;
    assert!(
        refused.canceled() && refused.compact_revision() > before,
        "a watch resuming after revision {before} must be refused as compacted: {refused:?}"
    );
    // A client that read at the new revision may watch from it (as
    // kube-apiserver's compactor does: read, then watch from the read's
    // revision) and sees what follows.
    let mut fresh = prefix_from(&mut client, PODS, after).await?;
    let recreated_key = "/registry/pods/ns-0/after-the-loss";
    client.put(recreated_key, "v", None).await?;
    let seen = first_answer(&mut fresh, Duration::from_secs(30)).await?;
    anyhow::ensure!(
        !seen.canceled(),
        "a watch from revision {after} was refused: {seen:?}"
    );
    assert_eq!(
        seen.events()[0].kv().expect("kv").key_str()?,
        recreated_key,
        "{seen:?}"
    );
    client.delete(recreated_key, None).await?;
    let old_read = client
        .get(
            PODS,
            Some(GetOptions::new().with_prefix().with_revision(before)),
        )
        .await;
    assert!(
        old_read
            .as_ref()
            .is_err_and(|e| e.to_string().contains("compacted")),
        "a read at revision {before} must be refused as compacted: {old_read:?}"
    );

    // The index no longer has the lost keys; the others are intact.
    assert_eq!(listed_pods(&mut client).await?, elsewhere);
    // A lost pod can be created again (as its controller would).
    let lost = on_lost_shard.iter().next().expect("a lost key").clone();
    let created = ste_tests::kube::create(&mut client, &lost, b"recreated").await?;
    assert!(
        matches!(created, ste_tests::kube::Outcome::Written(_)),
        "{created:?}"
    );
    assert_eq!(
        client.get(lost.as_str(), None).await?.kvs()[0].value(),
        b"recreated"
    );
    let log = cluster.router.log();
    assert!(log.contains("its keys are lost"), "{log}");
    Ok(())
}

/// A watch from `revision`, and its first message after the created one
/// that has events or cancels it (etcd sends the compacted error after
/// `created`).
async fn watch_from(
    client: &mut etcd_client::Client,
    key: &str,
    revision: i64,
    then: Option<&str>,
) -> anyhow::Result<etcd_client::WatchResponse> {
    let mut stream = client
        .watch(key, Some(WatchOptions::new().with_start_revision(revision)))
        .await?;
    if let Some(value) = then {
        client.put(key, value, None).await?;
    }
    first_answer(&mut stream, Duration::from_secs(10)).await
}

/// Found by kube-apiserver: its compactor reads `compact_rev_key` and
/// watches it from the revision that Get answered, once a second until it
/// works. The cut used to fall on that current revision and refuse a watch
/// from it, so after a lost shard the compactor (and nothing else) failed
/// every second for as long as no Pod was written. The cut now takes a
/// revision of its own: a watch from the revision a read answered after
/// the cut works; one from before the cut is still compacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cut_a_watch_from_the_revision_a_get_answered_works() -> anyhow::Result<()> {
    let mut cluster = ShardedRouter::start(3, &[]).await?;
    let mut client = cluster.router.client().await?;
    for i in 0..30 {
        client
            .put(format!("/registry/pods/ns/pod-{i}"), "v", None)
            .await?;
    }
    client.put("compact_rev_key", "0", None).await?;
    let before_cut = client
        .get("compact_rev_key", None)
        .await?
        .header()
        .expect("header")
        .revision();
    let mut watch = client
        .watch(PODS, Some(WatchOptions::new().with_prefix()))
        .await?;
    assert!(watch.message().await?.is_some_and(|m| m.created()));

    cluster
        .shard("shard-b")
        .expect("shard-b")
        .restart_empty()
        .await?;
    until_canceled(&mut watch, Duration::from_secs(60)).await?;

    // What kube-apiserver's compactor does: Get, then watch from the
    // revision of that answer.
    let read = client
        .get("compact_rev_key", None)
        .await?
        .header()
        .expect("header")
        .revision();
    assert!(
        read > before_cut,
        "the cut took a revision: {read} > {before_cut}"
    );
    let first = watch_from(&mut client, "compact_rev_key", read, Some("1")).await?;
    assert!(
        !first.canceled() && first.events()[0].kv().is_some_and(|kv| kv.value() == b"1"),
        "a watch from the revision a Get answered after the cut: {first:?}"
    );

    // History before the cut is gone: a watch from there relists.
    let refused = watch_from(&mut client, "compact_rev_key", before_cut, None).await?;
    assert!(
        refused.canceled() && refused.compact_revision() >= read,
        "{refused:?}"
    );
    Ok(())
}

/// A shard that restarts empty between two health probes (an agent that
/// crashed and was restarted at once comes back under the same name and
/// address). The first write that lands on it passes its guard — a create
/// of a key the empty shard lacks — and comes back at a shard revision below
/// one the router already recorded. That alone proves the loss. The router
/// must not answer from an index that still lists the lost keys: until the
/// shard is resynchronised it refuses them as unavailable, and it
/// resynchronises at once, without waiting for the next probe (here an hour
/// away). Afterwards the lost keys are gone and the write that revealed the
/// loss is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_lands_on_an_emptied_shard_reveals_the_loss() -> anyhow::Result<()> {
    let mut cluster = ShardedRouter::start(3, &["--health-interval", "1h"]).await?;
    let mut client = cluster.router.client().await?;
    let mut admin = cluster.router.admin().await?;
    let (lost, elsewhere) = put_pods(&cluster, "shard-b").await?;
    let lost_key = lost.first().expect("a lost key").clone();

    cluster
        .shard("shard-b")
        .expect("shard-b")
        .restart_empty()
        .await?;

    let fresh = ring::first_placed_on(
        &mut admin,
        "shard-b",
        (0..1000).map(|i| format!("/registry/pods/ns-new/pod-{i}")),
    )
    .await?;
    client.put(fresh.as_str(), "after", None).await?;

    // Refused (UNAVAILABLE) while the resync runs, then absent: never the
    // lost value, never another error.
    let found = ste_tests::eventually(
        "a lost key to read as absent",
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            let key = lost_key.clone();
            async move {
                match client.get(key, None).await {
                    Ok(response) => Ok(response.kvs().len()),
                    Err(error) if unavailable(&error) => Err(error.to_string()),
                    Err(error) => panic!("a lost key's read failed otherwise: {error:?}"),
                }
            }
        },
    )
    .await?;
    assert_eq!(found, 0, "a lost key must not be served");
    let mut expected = elsewhere;
    expected.insert(fresh.clone());
    assert_eq!(listed_pods(&mut client).await?, expected);
    assert_eq!(
        client.get(fresh.as_str(), None).await?.kvs()[0].value(),
        b"after"
    );
    let log = cluster.router.log();
    assert!(log.contains("a write came back at shard revision"), "{log}");
    assert!(log.contains("shard resynchronised"), "{log}");
    Ok(())
}

/// The router's answer for a shard it cannot serve (gRPC UNAVAILABLE).
fn unavailable(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status) if status.code() == tonic::Code::Unavailable)
}

/// Writes 40 pods through the router and splits their keys into those
/// placed on `member` and the others; neither part is empty.
async fn put_pods(
    cluster: &ShardedRouter,
    member: &str,
) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
    let mut client = cluster.router.client().await?;
    let mut admin = cluster.router.admin().await?;
    let (mut on_member, mut elsewhere) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..40 {
        let key = format!("/registry/pods/ns-{}/pod-{i}", i % 3);
        client.put(key.clone(), "v", None).await?;
        if ring::member_of(&mut admin, &key).await? == member {
            on_member.insert(key);
        } else {
            elsewhere.insert(key);
        }
    }
    anyhow::ensure!(!on_member.is_empty() && !elsewhere.is_empty());
    Ok((on_member, elsewhere))
}

/// Every key under the pods prefix that a list through the router returns.
async fn listed_pods(client: &mut etcd_client::Client) -> anyhow::Result<BTreeSet<String>> {
    Ok(client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await?
        .kvs()
        .iter()
        .map(|kv| kv.key_str().map(str::to_owned))
        .collect::<Result<_, _>>()?)
}
