//! Reads and writes while keys move: lists stay exact, a create in flight
//! when a leave starts is moved too, a refused join changes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::GetOptions;
use ste_proto::v1::MigrationPhase;
use ste_tests::keys::{self, PODS};
use ste_tests::kube::{self, Outcome};
use ste_tests::{ShardedRouter, TestEtcd, ring};

use crate::workload::{check, key, load};

/// All keys under the prefix as one paginated list pinned at the first
/// page's revision (kube-apiserver's way), checking each page's count.
async fn paged_list(
    client: &mut etcd_client::Client,
    at: i64,
) -> anyhow::Result<(i64, Vec<String>)> {
    let mut start = PODS.as_bytes().to_vec();
    let mut pinned = at;
    let mut keys: Vec<String> = Vec::new();
    loop {
        let mut options = GetOptions::new()
            .with_range(ste_core::keyrange::prefix_end(PODS.as_bytes()))
            .with_limit(100)
            .with_keys_only();
        if pinned != 0 {
            options = options.with_revision(pinned);
        }
        let page = client.get(start.clone(), Some(options)).await?;
        if pinned == 0 {
            pinned = page.header().map(|h| h.revision()).unwrap_or_default();
        }
        let remaining = page.count() as usize;
        let first_len = keys.len();
        for kv in page.kvs() {
            keys.push(kv.key_str()?.to_owned());
        }
        anyhow::ensure!(
            remaining >= keys.len() - first_len,
            "page count {remaining} below its {} keys",
            keys.len() - first_len
        );
        match page.kvs().last() {
            Some(last) if page.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return Ok((pinned, keys)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_stay_exact_while_keys_move() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &["--migration-pause", "40ms"]).await?;
    let acks = load(&cluster.router.endpoint()).await?;
    let expected: Vec<String> = acks
        .iter()
        .map(|a| a.1.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut client = cluster.router.client().await?;
    let (before, listed) = paged_list(&mut client, 0).await?;
    assert_eq!(listed, expected);

    let d = TestEtcd::start("shard-d").await?;
    let mut admin = cluster.router.admin().await?;
    let join = tokio::spawn({
        let url = d.url.clone();
        async move { ring::join(&mut admin, "shard-d", &url).await }
    });
    let mut lists_during = 0;
    while !join.is_finished() {
        // Now, and pinned at the revision from before the join: both exact.
        let (_, now) = paged_list(&mut client, 0).await?;
        assert_eq!(
            now, expected,
            "a list during the move shows a key twice or misses one"
        );
        let (_, then) = paged_list(&mut client, before).await?;
        assert_eq!(
            then, expected,
            "a historical list during the move is not exact"
        );
        let count = keys::count_under(&mut client, PODS).await?;
        assert_eq!(count as usize, expected.len());
        lists_during += 1;
    }
    let progress = join.await??;
    assert!(
        progress
            .iter()
            .any(|p| p.phase == MigrationPhase::Moving as i32)
    );
    assert!(lists_during > 0);
    let (_, after) = paged_list(&mut client, before).await?;
    assert_eq!(
        after, expected,
        "a list at the pre-join revision after the move"
    );
    check(&cluster, &[&d], &acks).await?;
    Ok(())
}

/// Found by the end-to-end test (kube_e2e, ring leave while a Deployment
/// scales up): a create routed to the leaving member before the change
/// started, still in flight when the plan was made, landed on the leaver
/// after the plan and was never moved. After the leave its key sat on the
/// departed shard, the index pointed at a shard no longer in the ring, and
/// the next write of it (the scheduler binding the Pod) failed its fence
/// on the new owner, which was then resynchronised again and again. The
/// plan is now made only after every write admitted under the old ring has
/// finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_in_flight_when_a_leave_starts_is_moved_too() -> anyhow::Result<()> {
    let mut cluster = ShardedRouter::start(3, &[]).await?;
    let mut client = cluster.router.client().await?;
    let mut admin = cluster.router.admin().await?;
    for i in 0..30 {
        client.put(key(i), "v", None).await?;
    }
    // A new key the leaver owns.
    let new_key = ring::first_placed_on(&mut admin, "shard-c", (1_000..2_000).map(key)).await?;

    // The create holds shard-c's write lock, its request stuck in the
    // stopped etcd (shorter than --shard-timeout), when the leave starts.
    cluster
        .shard("shard-c")
        .expect("shard-c")
        .signal(nix::sys::signal::Signal::SIGSTOP)?;
    let create = {
        let mut client = client.clone();
        let key = new_key.clone();
        tokio::spawn(async move { kube::create(&mut client, &key, b"created").await })
    };
    let router = &cluster.router;
    let in_flight = ste_tests::eventually(
        "the create in flight",
        Duration::from_secs(10),
        || async move {
            match router.writes_in_flight().await.map_err(|e| e.to_string())? {
                n if n >= 1.0 => Ok(()),
                n => Err(format!("{n} writes in flight")),
            }
        },
    )
    .await;
    let leave = {
        let mut admin = cluster.router.admin().await?;
        tokio::spawn(async move { ring::leave(&mut admin, "shard-c").await })
    };
    // The leave has set its target ring once a new key is placed elsewhere.
    let started = ste_tests::eventually("the leave to start", Duration::from_secs(10), || {
        let mut admin = admin.clone();
        let key = new_key.clone();
        async move {
            let member = ring::member_of(&mut admin, &key)
                .await
                .map_err(|e| e.to_string())?;
            if member == "shard-c" {
                Err("still placed on shard-c".into())
            } else {
                Ok(())
            }
        }
    })
    .await;
    cluster
        .shard("shard-c")
        .expect("shard-c")
        .signal(nix::sys::signal::Signal::SIGCONT)?;
    in_flight?;
    started?;
    let created = create.await??;
    assert!(matches!(created, Outcome::Written(_)), "{created:?}");
    leave.await??;

    let got = client.get(new_key.as_str(), None).await?;
    assert_eq!(
        got.kvs().first().map(|kv| kv.value()),
        Some(&b"created"[..]),
        "the key created during the leave is readable"
    );
    let left = cluster
        .shard("shard-c")
        .expect("shard-c")
        .count_under(PODS)
        .await?;
    assert_eq!(left, 0, "no key left behind on the shard that left");
    Ok(())
}

/// Found by a newcomer in the local cluster: `kubectl ste ring join` of a
/// killed agent failed (its shard does not answer), but the dead shard was
/// left among the router's shards, so every list, Status and Alarm went to
/// it and failed from then on. A refused join changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_of_a_dead_shard_leaves_reads_working() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(2, &[]).await?;
    let mut client = cluster.router.client().await?;
    let mut admin = cluster.router.admin().await?;
    for i in 0..10 {
        client.put(key(i), "v", None).await?;
    }
    let mut dead = TestEtcd::start("shard-x").await?;
    let url = dead.url.clone();
    dead.kill();

    let refused = ring::join(&mut admin, "shard-x", &url).await;
    assert!(
        refused.is_err(),
        "a join of a dead shard succeeded: {refused:?}"
    );

    let listed = client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(listed.kvs().len(), 10);
    client.status().await?;
    client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await?;
    let ring = admin
        .get_ring(ste_proto::v1::GetRingRequest {})
        .await?
        .into_inner();
    assert_eq!(ring.members.len(), 2, "{ring:?}");
    Ok(())
}
