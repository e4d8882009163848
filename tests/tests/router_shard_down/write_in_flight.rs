//! A shard hangs while a write to it is in flight: how long other writes,
//! reads and watches may be held up, and what the stuck write answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use etcd_client::GetOptions;
use nix::sys::signal::Signal;
use ste_proto::v1::MemberHealth;
use ste_tests::keys::PODS;
use ste_tests::poll::SLOW;
use ste_tests::watch::prefix_from;
use ste_tests::{ShardedRouter, eventually};

use crate::{
    HEALTHY_READ_BOUND, MARGIN, Written, check_all, expect_unavailable, key_on, member_health, put,
    router_alive_without_panic,
};

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
    let mut watch = prefix_from(&mut client, PODS, before + 1).await?;
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
