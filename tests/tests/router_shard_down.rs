//! One shard of three goes down — its etcd killed, or hung by SIGSTOP —
//! and comes back with its data. While it is down, keys on the other
//! shards are served without delay, everything that needs the lost shard
//! fails promptly with UNAVAILABLE naming it (never a hang, never a partial
//! list), the router stays up and says which member is unavailable. Once
//! the shard is back, everything works again and no key lost its value or
//! its revisions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use etcd_client::{Client, GetOptions};
use nix::sys::signal::Signal;
use ste_proto::v1::MemberHealth;
use ste_tests::keys::PODS;
use ste_tests::poll::SLOW;
use ste_tests::{ShardedRouter, eventually, ring};
use tonic::Code;

/// Reads of keys on healthy shards must not notice the outage.
const HEALTHY_READ_BOUND: Duration = Duration::from_secs(1);
/// What a loaded machine may add to the shard timeout.
const MARGIN: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGKILL: the process is gone, connections are refused.
    Killed,
    /// SIGSTOP: the process holds its sockets and answers nothing.
    Hung,
}

/// What the router said about a key when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    value: String,
    create: i64,
    modified: i64,
    version: i64,
}

/// A key under `PODS` + `name` that the ring places on `member`.
async fn key_on(cluster: &ShardedRouter, member: &str, name: &str) -> anyhow::Result<String> {
    let mut admin = cluster.router.admin().await?;
    let candidates = (0..1000).map(|i| format!("{PODS}{name}-{i}"));
    ring::first_placed_on(&mut admin, member, candidates).await
}

async fn put(client: &mut Client, key: &str, value: &str) -> anyhow::Result<Written> {
    let response = client.put(key, value, None).await?;
    let revision = response.header().context("put without header")?.revision();
    Ok(Written {
        value: value.to_owned(),
        create: revision,
        modified: revision,
        version: 1,
    })
}

/// Expects UNAVAILABLE naming `member`; returns the message.
fn expect_unavailable<T: std::fmt::Debug>(
    result: Result<T, etcd_client::Error>,
    member: &str,
    what: &str,
) -> anyhow::Result<String> {
    match result {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            ensure!(
                status.code() == Code::Unavailable,
                "{what}: expected UNAVAILABLE, got {:?}: {}",
                status.code(),
                status.message()
            );
            ensure!(
                status.message().contains(member),
                "{what}: the UNAVAILABLE message must name the member {member}: {:?}",
                status.message()
            );
            Ok(status.message().to_owned())
        }
        Err(other) => anyhow::bail!("{what}: expected a gRPC UNAVAILABLE, got {other}"),
        Ok(value) => {
            anyhow::bail!("{what}: expected UNAVAILABLE naming {member}, got a success: {value:?}")
        }
    }
}

/// Every key reads back exactly as written, through one get each and one
/// list; returns a description of the first difference.
async fn check_all(
    client: &mut Client,
    expected: &BTreeMap<String, Written>,
) -> Result<(), String> {
    for (key, want) in expected {
        let response = client
            .get(key.as_str(), None)
            .await
            .map_err(|e| format!("get {key}: {e}"))?;
        let kv = response
            .kvs()
            .first()
            .ok_or_else(|| format!("{key} is missing"))?;
        let have = Written {
            value: kv.value_str().unwrap_or_default().to_owned(),
            create: kv.create_revision(),
            modified: kv.mod_revision(),
            version: kv.version(),
        };
        if &have != want {
            return Err(format!("{key}: read {have:?}, written {want:?}"));
        }
    }
    let list = client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("list: {e}"))?;
    let listed: BTreeMap<String, Written> = list
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap_or_default().to_owned(),
                Written {
                    value: kv.value_str().unwrap_or_default().to_owned(),
                    create: kv.create_revision(),
                    modified: kv.mod_revision(),
                    version: kv.version(),
                },
            )
        })
        .collect();
    if &listed != expected || list.count() != expected.len() as i64 || list.more() {
        return Err(format!(
            "list of {} keys (count {}, more {}) differs from the {} written: {listed:?}",
            listed.len(),
            list.count(),
            list.more(),
            expected.len()
        ));
    }
    Ok(())
}

async fn member_health(
    cluster: &ShardedRouter,
) -> anyhow::Result<BTreeMap<String, (MemberHealth, String)>> {
    let status = cluster.router.status().await?;
    Ok(status
        .members
        .into_iter()
        .map(|m| (m.name.clone(), (m.health(), m.last_error)))
        .collect())
}

fn router_alive_without_panic(cluster: &ShardedRouter) -> anyhow::Result<()> {
    let pid = cluster.router.pid().context("router not started")?;
    let log = cluster.router.log();
    ensure!(
        ste_tests::procs::alive(pid),
        "the router process {pid} died; log:\n{log}"
    );
    ensure!(
        !log.contains("panicked"),
        "the router panicked; log:\n{log}"
    );
    Ok(())
}

async fn shard_outage(outage: Outage) -> anyhow::Result<()> {
    // A killed shard refuses connections: that must not depend on a short
    // timeout. A hung one answers nothing: the timeout is what ends a call.
    let (shard_timeout, flags): (Duration, &[&str]) = match outage {
        Outage::Killed => (Duration::from_secs(5), &["--shard-timeout", "5s"]),
        Outage::Hung => (Duration::from_secs(2), &["--shard-timeout", "2s"]),
    };
    let mut cluster = ShardedRouter::start(3, flags).await?;
    let mut client = cluster.router.client().await?;
    let names: Vec<String> = cluster.shards.iter().map(|s| s.name.clone()).collect();

    // Keys until every shard holds at least two.
    let mut expected: BTreeMap<String, Written> = BTreeMap::new();
    let mut by_member: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        let enough = names
            .iter()
            .all(|n| by_member.get(n).is_some_and(|keys| keys.len() >= 2));
        if enough && expected.len() >= 12 {
            break;
        }
        ensure!(i < 500, "500 keys did not reach every shard: {by_member:?}");
        let key = format!("{PODS}default/pod-{i:03}");
        let written = put(&mut client, &key, &format!("value-{i}")).await?;
        by_member
            .entry(ring::member_of(&mut cluster.router.admin().await?, &key).await?)
            .or_default()
            .push(key.clone());
        expected.insert(key, written);
    }
    // One key updated, so versions and create != mod are checked too.
    let updated_key = by_member[&names[1]][1].clone();
    let response = client.put(updated_key.as_str(), "updated", None).await?;
    let entry = expected.get_mut(&updated_key).unwrap();
    entry.value = "updated".into();
    entry.modified = response.header().context("header")?.revision();
    entry.version = 2;
    check_all(&mut client, &expected)
        .await
        .map_err(anyhow::Error::msg)
        .context("before the outage")?;

    let victim = names[1].clone();
    let survivors: Vec<String> = names.iter().filter(|n| **n != victim).cloned().collect();
    let dead_key = by_member[&victim][0].clone();
    // New keys for writes during the outage, one on each side.
    let new_dead_key = key_on(&cluster, &victim, "default/during-outage").await?;
    let new_live_key = key_on(&cluster, &survivors[0], "default/during-outage-live").await?;

    match outage {
        Outage::Killed => cluster.shard(&victim).unwrap().kill(),
        Outage::Hung => cluster.shard(&victim).unwrap().signal(Signal::SIGSTOP)?,
    }
    let down_at = Instant::now();

    // Keys on the other shards: served as before, and fast — right away,
    // before the router has noticed anything.
    let read_healthy = |client: &mut Client, stage: &'static str| {
        let mut client = client.clone();
        let keys: Vec<(String, Written)> = survivors
            .iter()
            .flat_map(|m| by_member[m].iter())
            .map(|k| (k.clone(), expected[k].clone()))
            .collect();
        async move {
            for (key, want) in keys {
                let started = Instant::now();
                let response = client
                    .get(key.as_str(), None)
                    .await
                    .with_context(|| format!("{stage}: get {key} on a healthy shard"))?;
                let took = started.elapsed();
                ensure!(
                    took < HEALTHY_READ_BOUND,
                    "{stage}: a get of {key} on a healthy shard took {took:?}; \
                     a dead shard must not slow down the others (bound {HEALTHY_READ_BOUND:?})"
                );
                let kv = response
                    .kvs()
                    .first()
                    .with_context(|| format!("{stage}: {key} missing"))?;
                ensure!(
                    kv.value_str()? == want.value && kv.mod_revision() == want.modified,
                    "{stage}: {key} read {:?}@{}, written {want:?}",
                    kv.value_str(),
                    kv.mod_revision()
                );
            }
            anyhow::Ok(())
        }
    };
    read_healthy(&mut client, "just after the outage began").await?;

    // A key on the dead shard: UNAVAILABLE naming it, promptly.
    let started = Instant::now();
    let result = client.get(dead_key.as_str(), None).await;
    let took = started.elapsed();
    let message = expect_unavailable(result, &victim, "get of a key on the dead shard")?;
    ensure!(
        took < shard_timeout + MARGIN,
        "a get on the dead shard took {took:?} (shard timeout {shard_timeout:?}): it must fail \
         promptly, not hang ({message})"
    );
    // Now the router knows: a second one fails fast.
    let started = Instant::now();
    let result = client.get(dead_key.as_str(), None).await;
    let took = started.elapsed();
    expect_unavailable(result, &victim, "second get of a key on the dead shard")?;
    ensure!(
        took < HEALTHY_READ_BOUND,
        "once the shard is known to be down, a get on it must fail fast; took {took:?}"
    );
    read_healthy(&mut client, "after the router noticed").await?;

    // Maintenance.Status (etcdctl endpoint status; kube-apiserver's version
    // check) still answers, at once, and says which member is down.
    let started = Instant::now();
    let status = client
        .status()
        .await
        .context("Maintenance.Status during the outage")?;
    let took = started.elapsed();
    ensure!(
        took < HEALTHY_READ_BOUND,
        "Maintenance.Status took {took:?} with a shard known to be down (bound \
         {HEALTHY_READ_BOUND:?}): it must not wait for the dead shard"
    );
    ensure!(
        status.errors().iter().any(|e| e.contains(&victim)),
        "Status errors name the member {victim}: {:?}",
        status.errors()
    );
    let version: Vec<u64> = status
        .version()
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    ensure!(
        version >= vec![3, 5, 13],
        "version {:?} ≥ 3.5.13 during the outage",
        status.version()
    );
    ensure!(status.db_size() > 0, "db size of the live shards");

    // Lists over every shard: UNAVAILABLE, never a partial answer.
    for (what, options) in [
        ("list", GetOptions::new().with_prefix()),
        (
            "paginated list",
            GetOptions::new().with_prefix().with_limit(2),
        ),
        ("count", GetOptions::new().with_prefix().with_count_only()),
        (
            "keys-only list",
            GetOptions::new().with_prefix().with_keys_only(),
        ),
    ] {
        let started = Instant::now();
        let result = client.get(PODS, Some(options)).await;
        let took = started.elapsed();
        expect_unavailable(result.map(|r| (r.count(), r.kvs().len())), &victim, what)?;
        ensure!(took < shard_timeout + MARGIN, "{what} took {took:?}");
    }

    // A write to the dead shard fails; a write to a healthy one works.
    let started = Instant::now();
    let result = client.put(new_dead_key.as_str(), "lost", None).await;
    let took = started.elapsed();
    expect_unavailable(result, &victim, "put to a key on the dead shard")?;
    ensure!(
        took < 2 * shard_timeout + MARGIN,
        "a put to the dead shard took {took:?}: it must fail, not hang"
    );
    let result = client.put(dead_key.as_str(), "lost", None).await;
    expect_unavailable(result, &victim, "put to an existing key on the dead shard")?;
    let written = put(&mut client, &new_live_key, "written during the outage")
        .await
        .context("a put to a healthy shard during the outage")?;
    expected.insert(new_live_key.clone(), written);

    // The router is alive and says which member is down.
    router_alive_without_panic(&cluster)?;
    let health = eventually(
        "Ring/GetStatus to show the member unavailable",
        SLOW,
        || async {
            let health = member_health(&cluster).await.map_err(|e| e.to_string())?;
            match health.get(&victim) {
                Some((MemberHealth::Unavailable, error)) if !error.is_empty() => Ok(health),
                other => Err(format!("{victim}: {other:?}")),
            }
        },
    )
    .await?;
    for name in &survivors {
        assert_eq!(
            health[name].0,
            MemberHealth::Healthy,
            "{name} is healthy during {victim}'s outage: {health:?}"
        );
    }
    eprintln!(
        "{outage:?}: {victim} down for {:?}; router said: {message}",
        down_at.elapsed()
    );

    // Back, with the same data (the same epoch).
    match outage {
        Outage::Killed => cluster.shard(&victim).unwrap().restart().await?,
        Outage::Hung => cluster.shard(&victim).unwrap().signal(Signal::SIGCONT)?,
    }
    let back_at = Instant::now();
    let mut fresh = cluster.router.client().await?;
    eventually(
        "every key readable and the list complete again",
        SLOW,
        || {
            let mut client = fresh.clone();
            let expected = expected.clone();
            async move { check_all(&mut client, &expected).await }
        },
    )
    .await
    .with_context(|| format!("router log:\n{}", cluster.router.log()))?;
    eprintln!(
        "{outage:?}: {victim} served again {:?} after it came back",
        back_at.elapsed()
    );

    // The write that failed during the outage never happened.
    let response = fresh.get(new_dead_key.as_str(), None).await?;
    assert_eq!(
        response.count(),
        0,
        "the put refused during the outage is absent"
    );

    // New writes to every shard, including the one that was down.
    let mut last = 0;
    for name in &names {
        let key = key_on(&cluster, name, &format!("default/after-{name}")).await?;
        let written = put(&mut fresh, &key, "after")
            .await
            .with_context(|| format!("put to {name} after recovery"))?;
        ensure!(written.modified > last, "revisions keep increasing");
        last = written.modified;
        expected.insert(key, written);
    }
    let response = fresh.put(dead_key.as_str(), "updated after", None).await?;
    let entry = expected.get_mut(&dead_key).unwrap();
    entry.value = "updated after".into();
    entry.modified = response.header().context("header")?.revision();
    entry.version += 1;
    check_all(&mut fresh, &expected)
        .await
        .map_err(anyhow::Error::msg)
        .context("after new writes")?;

    // The shard itself still holds its keys.
    let held = cluster.shard(&victim).unwrap().count_under(PODS).await?;
    let placed = expected
        .keys()
        .filter(|k| by_member[&victim].contains(k) || k.contains(&format!("after-{victim}")))
        .count();
    assert_eq!(held as usize, placed, "{victim} holds its keys");

    let health = member_health(&cluster).await?;
    assert!(
        health.values().all(|(h, _)| *h == MemberHealth::Healthy),
        "every member healthy again: {health:?}"
    );
    router_alive_without_panic(&cluster)?;
    // No write's outcome was in doubt and the shard came back with its
    // data: nothing to resynchronise, no watch to cut.
    let log = cluster.router.log();
    ensure!(
        !log.contains("needs a resync"),
        "the shard came back with its data, yet was resynchronised:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_shard_fails_fast_and_recovers_on_restart() -> anyhow::Result<()> {
    shard_outage(Outage::Killed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_shard_fails_within_the_shard_timeout_and_recovers_on_sigcont() -> anyhow::Result<()> {
    shard_outage(Outage::Hung).await
}

/// A shard hangs while a write to it is in flight: the write's outcome is
/// unknown. That write fails with UNAVAILABLE within about one shard
/// timeout; a write to a healthy shard, which must wait for the revision
/// before it, is held up no longer than that; reads never wait. Watches
/// never silently miss an event: they get every event or are ended with a
/// compaction (so clients relist). After SIGCONT the router resynchronises
/// the shard and all keys read back as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_shard_with_a_write_in_flight_delays_others_at_most_one_shard_timeout()
-> anyhow::Result<()> {
    let shard_timeout = Duration::from_secs(4);
    let mut cluster = ShardedRouter::start(3, &["--shard-timeout", "4s"]).await?;
    let mut client = cluster.router.client().await?;
    let names: Vec<String> = cluster.shards.iter().map(|s| s.name.clone()).collect();
    let victim = names[2].clone();
    let mut expected: BTreeMap<String, Written> = BTreeMap::new();
    let mut healthy_keys = Vec::new();
    for name in &names {
        for i in 0..3 {
            let key = key_on(&cluster, name, &format!("default/{name}-{i}")).await?;
            expected.insert(
                key.clone(),
                put(&mut client, &key, &format!("{name}-{i}")).await?,
            );
            if *name != victim {
                healthy_keys.push(key);
            }
        }
    }
    let before = client
        .get("any", None)
        .await?
        .header()
        .context("header")?
        .revision();
    let mut watch = client
        .watch(
            PODS,
            Some(
                etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(before + 1),
            ),
        )
        .await?;
    let created = watch.message().await?.context("watch stream ended")?;
    ensure!(created.created(), "watch created: {created:?}");
    let (watch_events_tx, mut watch_events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(response)) = watch.message().await {
            let canceled = response.canceled().then_some(response.compact_revision());
            let events: Vec<(String, i64)> = response
                .events()
                .iter()
                .filter_map(|e| e.kv())
                .map(|kv| {
                    (
                        kv.key_str().unwrap_or_default().to_owned(),
                        kv.mod_revision(),
                    )
                })
                .collect();
            if watch_events_tx.send((events, canceled)).is_err() || canceled.is_some() {
                break;
            }
        }
    });

    let in_flight_key = key_on(&cluster, &victim, "default/in-flight").await?;
    let live_key = key_on(&cluster, &names[0], "default/live-during-hang").await?;
    ensure!(
        cluster.router.writes_in_flight().await? == 0.0,
        "no write in flight yet"
    );

    cluster.shard(&victim).unwrap().signal(Signal::SIGSTOP)?;

    // A write to the hung shard: its revision is allocated and it waits.
    let mut stuck_client = client.clone();
    let stuck_key = in_flight_key.clone();
    let stuck = tokio::spawn(async move {
        let started = Instant::now();
        let result = stuck_client
            .put(stuck_key.as_str(), "in-flight", None)
            .await;
        (result, started.elapsed())
    });
    eventually(
        "the write to the hung shard to be in flight",
        SLOW,
        || async {
            match cluster.router.writes_in_flight().await {
                Ok(0.0) => Err("0 in flight".to_string()),
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    // A write to a healthy shard: applied at once, but visible only once
    // the revision before it is settled.
    let mut live_client = client.clone();
    let live_key_clone = live_key.clone();
    let live = tokio::spawn(async move {
        let started = Instant::now();
        let result = live_client
            .put(live_key_clone.as_str(), "during the hang", None)
            .await;
        (result, started.elapsed())
    });
    // It is applied on its shard at once (the router then holds it back
    // until the revision before it is settled).
    let live_shard = cluster.shards[0].client().await?;
    eventually(
        "the write to the healthy shard to reach its shard",
        SLOW,
        || {
            let mut shard = live_shard.clone();
            let key = live_key.clone();
            async move {
                match shard.get(key.as_str(), None).await {
                    Ok(response) if response.count() == 1 => Ok(()),
                    Ok(_) => Err("not there yet".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await?;
    // Reads do not wait for either.
    for key in &healthy_keys {
        let started = Instant::now();
        let response = client.get(key.as_str(), None).await?;
        let took = started.elapsed();
        ensure!(
            took < HEALTHY_READ_BOUND,
            "a get of {key} on a healthy shard took {took:?} while a write to the hung shard \
             was in flight (bound {HEALTHY_READ_BOUND:?})"
        );
        ensure!(response.kvs().first().map(|kv| kv.mod_revision()) == Some(expected[key].modified));
    }

    let (result, took) = stuck.await?;
    let message = expect_unavailable(result, &victim, "the write in flight to the hung shard")?;
    ensure!(
        took < shard_timeout + MARGIN,
        "the write to the hung shard failed after {took:?}: more than one shard timeout \
         ({shard_timeout:?}) + {MARGIN:?} ({message})"
    );
    let (result, took) = live.await?;
    let response = result.context("the write to a healthy shard during the hang")?;
    ensure!(
        took < shard_timeout + MARGIN,
        "a write to a healthy shard was held up {took:?} by the hung shard: more than one \
         shard timeout ({shard_timeout:?}) + {MARGIN:?}"
    );
    let live_revision = response.header().context("header")?.revision();
    expected.insert(
        live_key.clone(),
        Written {
            value: "during the hang".into(),
            create: live_revision,
            modified: live_revision,
            version: 1,
        },
    );
    eprintln!("hung shard: in-flight write failed after the timeout; others waited {took:?}");

    // The router is up, names the member, and fails fast from now on.
    router_alive_without_panic(&cluster)?;
    let started = Instant::now();
    let result = client
        .get(
            expected
                .keys()
                .find(|k| k.contains(&victim))
                .unwrap()
                .as_str(),
            None,
        )
        .await;
    expect_unavailable(result, &victim, "get on the hung shard")?;
    ensure!(
        started.elapsed() < HEALTHY_READ_BOUND,
        "took {:?}",
        started.elapsed()
    );
    let result = client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await;
    expect_unavailable(result.map(|r| r.count()), &victim, "list during the hang")?;
    let health = member_health(&cluster).await?;
    ensure!(health[&victim].0 == MemberHealth::Unavailable, "{health:?}");

    cluster.shard(&victim).unwrap().signal(Signal::SIGCONT)?;
    let mut fresh = cluster.router.client().await?;
    // The write's outcome was unknown: it may or may not have been
    // applied; either way the router must agree with the shard.
    let in_flight = eventually(
        "every key readable and the list complete again",
        SLOW,
        || {
            let mut client = fresh.clone();
            let mut expected = expected.clone();
            let in_flight_key = in_flight_key.clone();
            async move {
                let response = client
                    .get(in_flight_key.as_str(), None)
                    .await
                    .map_err(|e| format!("get {in_flight_key}: {e}"))?;
                let in_flight = response.kvs().first().map(|kv| Written {
                    value: kv.value_str().unwrap_or_default().to_owned(),
                    create: kv.create_revision(),
                    modified: kv.mod_revision(),
                    version: kv.version(),
                });
                if let Some(written) = &in_flight {
                    expected.insert(in_flight_key.clone(), written.clone());
                }
                check_all(&mut client, &expected).await?;
                Ok(in_flight)
            }
        },
    )
    .await
    .with_context(|| format!("router log:\n{}", cluster.router.log()))?;
    if let Some(written) = &in_flight {
        assert_eq!(
            (written.value.as_str(), written.version),
            ("in-flight", 1),
            "the in-flight write, if applied, is exactly what was sent"
        );
        assert!(
            written.modified > before && written.modified < live_revision,
            "{written:?}"
        );
        expected.insert(in_flight_key.clone(), written.clone());
    }
    eprintln!(
        "hung shard: the in-flight write was applied: {}",
        in_flight.is_some()
    );

    // New writes everywhere, including the shard that hung.
    let mut after_revisions = Vec::new();
    for name in &names {
        let key = key_on(&cluster, name, &format!("default/after-{name}")).await?;
        let written = put(&mut fresh, &key, "after")
            .await
            .with_context(|| format!("put to {name}"))?;
        after_revisions.push((key.clone(), written.modified));
        expected.insert(key, written);
    }
    check_all(&mut fresh, &expected)
        .await
        .map_err(anyhow::Error::msg)?;

    // The watch: every event in revision order, the write to the healthy
    // shard among them; and either the writes after the recovery too, or a
    // compaction that tells the client to relist. Never a silent gap.
    let mut seen: Vec<(String, i64)> = Vec::new();
    let outcome = eventually(
        "the watch to deliver or be ended with a compaction",
        SLOW,
        || {
            while let Ok((events, canceled)) = watch_events.try_recv() {
                seen.extend(events);
                if let Some(compact_revision) = canceled {
                    return std::future::ready(Ok(Some(compact_revision)));
                }
            }
            let all_delivered = after_revisions
                .iter()
                .all(|(key, rev)| seen.iter().any(|(k, r)| k == key && r == rev));
            std::future::ready(if all_delivered {
                Ok(None)
            } else {
                Err(format!("watch saw {seen:?}"))
            })
        },
    )
    .await?;
    ensure!(
        seen.windows(2).all(|w| w[0].1 <= w[1].1),
        "watch events in revision order: {seen:?}"
    );
    let got_live = seen
        .iter()
        .any(|(k, r)| *k == live_key && *r == live_revision);
    match outcome {
        // Still open: it got everything, the write made during the hang too.
        None => ensure!(
            got_live,
            "the watch got the write to the healthy shard made during the hang: {seen:?}"
        ),
        // Ended: the compact revision covers whatever it did not get.
        Some(compact_revision) => {
            ensure!(
                got_live || compact_revision > live_revision,
                "the watch neither got the write made during the hang (revision \
                 {live_revision}) nor was told it is compacted past it ({compact_revision}): {seen:?}"
            );
            ensure!(
                seen.iter().all(|(_, r)| *r < compact_revision),
                "events at or after the compact revision {compact_revision}: {seen:?}"
            );
            eprintln!(
                "hung shard: the watch was ended with compact revision {compact_revision} after {seen:?}"
            );
        }
    }
    let health = member_health(&cluster).await?;
    assert!(
        health.values().all(|(h, _)| *h == MemberHealth::Healthy),
        "every member healthy again: {health:?}"
    );
    router_alive_without_panic(&cluster)?;
    Ok(())
}
