//! Live ring changes: a member joins and another leaves while writers write
//! and watchers watch. Exactly the keys whose owner changes move; nothing is
//! lost, duplicated or renumbered; watchers see every acknowledged write
//! once, in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{GetOptions, WatchOptions};
use ste_proto::v1::MigrationPhase;
use ste_tests::keys::{self, PODS};
use ste_tests::kube::{self, Outcome};
use ste_tests::{ShardedRouter, TestEtcd, ring};

const KEYS: usize = 3_000;

fn key(i: usize) -> String {
    format!("{PODS}ns-{}/pod-{i:05}", i % 13)
}

type Ack = (i64, String, Option<Vec<u8>>);

/// A watcher's start revision and the (revision, key) events it saw.
type Watched = (i64, Arc<Mutex<Vec<(i64, String)>>>);

async fn load(endpoint: &str) -> anyhow::Result<Vec<Ack>> {
    let client = etcd_client::Client::connect([endpoint], None).await?;
    let tasks: Vec<_> = (0..10)
        .map(|part| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in (part..KEYS).step_by(10) {
                    let value = format!("v0-{i}").into_bytes();
                    let response = client.put(key(i), value.clone(), None).await?;
                    acks.push((
                        response.header().map(|h| h.revision()).unwrap_or_default(),
                        key(i),
                        Some(value),
                    ));
                }
                anyhow::Ok(acks)
            })
        })
        .collect();
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await??);
    }
    Ok(acks)
}

/// Updates, deletes and recreates keys of its own slice at a steady pace
/// with kube-apiserver's request shapes until stopped.
async fn writer(
    endpoint: String,
    id: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
) -> anyhow::Result<()> {
    let mut client = etcd_client::Client::connect([endpoint], None).await?;
    let mut known: BTreeMap<String, i64> = BTreeMap::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let k = key((id * 211 + n * 7) % KEYS);
        let revision = match known.get(&k) {
            Some(r) => *r,
            None => {
                let got = client.get(k.clone(), None).await?;
                got.kvs().first().map(|kv| kv.mod_revision()).unwrap_or(0)
            }
        };
        let value = format!("w{id}-{n}").into_bytes();
        let (outcome, written) = if revision == 0 {
            (kube::create(&mut client, &k, &value).await?, Some(value))
        } else if n.is_multiple_of(5) {
            (kube::delete(&mut client, &k, revision).await?, None)
        } else {
            (
                kube::update(&mut client, &k, revision, &value).await?,
                Some(value),
            )
        };
        match outcome {
            Outcome::Written(at) => {
                known.insert(k.clone(), if written.is_some() { at } else { 0 });
                acks.lock().unwrap().push((at, k, written));
            }
            Outcome::Conflict(current) => {
                known.insert(k, current);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn watcher(
    endpoint: String,
    start: i64,
    seen: Arc<Mutex<Vec<(i64, String)>>>,
) -> anyhow::Result<()> {
    let mut client = etcd_client::Client::connect([endpoint], None).await?;
    let mut stream = client
        .watch(
            PODS,
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await?;
    while let Some(response) = stream.message().await? {
        anyhow::ensure!(
            !response.canceled(),
            "watch canceled: {}",
            response.cancel_reason()
        );
        for event in response.events() {
            if let Some(kv) = event.kv() {
                seen.lock()
                    .unwrap()
                    .push((kv.mod_revision(), kv.key_str()?.to_owned()));
            }
        }
    }
    Ok(())
}

/// Checks the data against the model and the placement against the ring.
async fn check(cluster: &ShardedRouter, extra: &[&TestEtcd], acks: &[Ack]) -> anyhow::Result<()> {
    let mut model: BTreeMap<String, (i64, Vec<u8>)> = BTreeMap::new();
    let mut sorted = acks.to_vec();
    sorted.sort_by_key(|a| a.0);
    for (revision, k, value) in &sorted {
        match value {
            Some(v) => model.insert(k.clone(), (*revision, v.clone())),
            None => model.remove(k),
        };
    }
    let mut client = cluster.router.client().await?;
    let listed = client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await?;
    let got: BTreeMap<String, (i64, Vec<u8>)> = listed
        .kvs()
        .iter()
        .map(|kv| {
            Ok((
                kv.key_str()?.to_owned(),
                (kv.mod_revision(), kv.value().to_vec()),
            ))
        })
        .collect::<Result<_, etcd_client::Error>>()?;
    assert_eq!(got.len(), model.len(), "number of keys");
    assert!(
        got == model,
        "every key readable with its acknowledged revision and value"
    );

    // Each key is on exactly the shard Locate names.
    let mut shards = Vec::new();
    for shard in cluster.shards.iter().chain(extra.iter().copied()) {
        shards.push((shard.name.clone(), shard.client().await?));
    }
    let held = ring::keys_per_shard(&shards, PODS).await?;
    let mut admin = cluster.router.admin().await?;
    for k in model.keys() {
        let owner = ring::member_of(&mut admin, k).await?;
        let holders: Vec<&String> = held
            .iter()
            .filter(|(_, keys)| keys.contains(k))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(holders, vec![&owner], "{k} should be only on {owner}");
    }
    let total: usize = held.values().map(BTreeSet::len).sum();
    assert_eq!(total, model.len(), "no stray copies on any shard");
    Ok(())
}

fn check_watchers(watchers: &[Watched], acks: &[Ack]) {
    let mut sorted = acks.to_vec();
    sorted.sort_by_key(|a| a.0);
    for (start, seen) in watchers {
        let expected: Vec<(i64, String)> = sorted
            .iter()
            .filter(|a| a.0 >= *start)
            .map(|a| (a.0, a.1.clone()))
            .collect();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), expected.len(), "watcher from {start}: events");
        assert_eq!(
            seen, expected,
            "watcher from {start}: exactly once, in order"
        );
    }
}

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
