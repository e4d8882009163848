//! One shard killed or hung (SIGSTOP), then back with its data: what
//! fails, how fast, with which message, and that everything reads back
//! as written afterwards.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use etcd_client::{Client, GetOptions};
use nix::sys::signal::Signal;
use ste_proto::v1::MemberHealth;
use ste_tests::keys::PODS;
use ste_tests::poll::SLOW;
use ste_tests::{ShardedRouter, eventually, ring};

use crate::{
    HEALTHY_READ_BOUND, MARGIN, Written, check_all, expect_unavailable, key_on, member_health, put,
    router_alive_without_panic,
};

#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGKILL: the process is gone, connections are refused.
    Killed,
    /// SIGSTOP: the process holds its sockets and answers nothing.
    Hung,
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
