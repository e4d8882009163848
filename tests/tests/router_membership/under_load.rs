//! Join and leave under load, a router killed mid-join, concurrent changes,
//! and the changes that must be refused or move nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ste_proto::v1::MigrationPhase;
use ste_tests::keys::PODS;
use ste_tests::{ShardedRouter, TestEtcd, ring};

use crate::workload::{KEYS, check, check_watchers, load, watcher, writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_then_leave_under_load() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let endpoint = cluster.router.endpoint();
    let start = cluster
        .router
        .client()
        .await?
        .status()
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or(1)
        + 1;
    let watchers: Vec<_> = (0..3)
        .map(|_| {
            let seen = Arc::new(Mutex::new(Vec::new()));
            tokio::spawn(watcher(endpoint.clone(), start, seen.clone()));
            (start, seen)
        })
        .collect();
    let acks = Arc::new(Mutex::new(load(&endpoint).await?));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|id| tokio::spawn(writer(endpoint.clone(), id, stop.clone(), acks.clone())))
        .collect();

    let fourth = TestEtcd::start("shard-d").await?;
    let mut admin = cluster.router.admin().await?;
    let progress = ring::join(&mut admin, "shard-d", &fourth.url).await?;
    let planned = progress
        .iter()
        .find(|p| p.phase == MigrationPhase::Planned as i32)
        .expect("a plan");
    assert!(
        planned.keys_total > KEYS as u64 / 8,
        "a quarter of the keys should move: {planned:?}"
    );
    assert!(
        planned.flows.iter().all(|f| f.to == "shard-d"),
        "keys only move to the new member: {planned:?}"
    );
    let done = progress.last().expect("done");
    assert_eq!(done.to_generation, done.from_generation + 1);

    let left = ring::leave(&mut admin, "shard-b").await?;
    let planned = left
        .iter()
        .find(|p| p.phase == MigrationPhase::Planned as i32)
        .expect("a plan");
    assert!(
        planned.flows.iter().all(|f| f.from == "shard-b"),
        "only the leaver's keys move: {planned:?}"
    );

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await??;
    }
    let acks = acks.lock().unwrap().clone();
    let last = acks.iter().map(|a| a.0).max().unwrap_or(0);
    for (_, seen) in &watchers {
        ste_tests::eventually("watchers to catch up", Duration::from_secs(120), || async {
            let n = seen.lock().unwrap().last().map(|e| e.0).unwrap_or(0);
            if n >= last {
                Ok(())
            } else {
                Err(format!("at {n} of {last}"))
            }
        })
        .await?;
    }
    check(&cluster, &[&fourth], &acks).await?;
    let b = cluster
        .shards
        .iter()
        .find(|s| s.name == "shard-b")
        .expect("shard-b");
    let on_b = b.count_under(PODS).await?;
    assert_eq!(on_b, 0, "the member that left holds no keys");
    check_watchers(&watchers, &acks);
    let ring_info = admin
        .get_ring(ste_proto::v1::GetRingRequest {})
        .await?
        .into_inner();
    let names: Vec<String> = ring_info.members.iter().map(|m| m.name.clone()).collect();
    assert_eq!(names, ["shard-a", "shard-c", "shard-d"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_router_resumes_an_interrupted_join() -> anyhow::Result<()> {
    let mut cluster = ShardedRouter::start(3, &["--migration-pause", "150ms"]).await?;
    let endpoint = cluster.router.endpoint();
    let acks = load(&endpoint).await?;
    let fourth = TestEtcd::start("shard-d").await?;
    let mut admin = cluster.router.admin().await?;
    let mut stream = admin
        .join(ste_proto::v1::JoinRequest {
            name: "shard-d".into(),
            endpoint: fourth.url.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    // Wait until some keys have moved, then kill the router.
    loop {
        let progress = stream.message().await?.expect("progress before the kill");
        if progress.phase == MigrationPhase::Moving as i32 && progress.keys_moved > 0 {
            break;
        }
    }
    cluster.router.kill9();
    cluster.router.restart().await?;
    // The restarted router resumes the change by itself.
    ste_tests::eventually(
        "the join to be resumed and committed",
        Duration::from_secs(120),
        || async {
            let status = cluster.router.status().await.map_err(|e| e.to_string())?;
            let members: Vec<String> = status.members.iter().map(|m| m.name.clone()).collect();
            if status.migration.is_none() && members.contains(&"shard-d".to_string()) {
                Ok(())
            } else {
                Err(format!(
                    "members {members:?}, migration {:?}",
                    status.migration
                ))
            }
        },
    )
    .await?;
    check(&cluster, &[&fourth], &acks).await?;
    assert!(
        cluster.router.log().contains("interrupted"),
        "{}",
        cluster.router.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ring_changes_never_interleave() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(2, &["--migration-pause", "100ms"]).await?;
    let acks = load(&cluster.router.endpoint()).await?;
    let d = TestEtcd::start("shard-d").await?;
    let e = TestEtcd::start("shard-e").await?;
    let mut admin1 = cluster.router.admin().await?;
    let mut admin2 = cluster.router.admin().await?;
    let (first, second) = tokio::join!(
        ring::join(&mut admin1, "shard-d", &d.url),
        ring::join(&mut admin2, "shard-e", &e.url)
    );
    let refused = [&first, &second].iter().filter(|r| r.is_err()).count();
    assert_eq!(
        refused, 1,
        "exactly one of two simultaneous joins runs: {first:?} / {second:?}"
    );
    let error = first
        .as_ref()
        .err()
        .or(second.as_ref().err())
        .expect("one error")
        .to_string();
    assert!(error.contains("a ring change is in progress"), "{error}");
    check(&cluster, &[&d, &e], &acks).await?;
    // The refused one can go once the first is done.
    let (name, url) = if first.is_err() {
        ("shard-d", &d.url)
    } else {
        ("shard-e", &e.url)
    };
    ring::join(&mut admin1, name, url).await?;
    check(&cluster, &[&d, &e], &acks).await?;
    // The last member cannot leave.
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_member_cannot_leave_and_a_dry_run_moves_nothing() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(1, &[]).await?;
    let mut admin = cluster.router.admin().await?;
    let error = ring::leave(&mut admin, "shard-a")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("last ring member"), "{error}");
    let acks = load(&cluster.router.endpoint()).await?;
    let d = TestEtcd::start("shard-d").await?;
    let plan = admin
        .join(ste_proto::v1::JoinRequest {
            name: "shard-d".into(),
            endpoint: d.url.clone(),
            dry_run: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .message()
        .await?
        .expect("a plan");
    assert_eq!(plan.phase, MigrationPhase::Planned as i32);
    assert!(plan.keys_total > 0 && plan.bytes_total > 0);
    assert_eq!(plan.flows.len(), 1);
    assert_eq!(plan.flows[0].from, "shard-a");
    let on_d = d.count_under(PODS).await?;
    assert_eq!(on_d, 0, "a dry run moves nothing");
    check(&cluster, &[], &acks).await?;
    Ok(())
}
