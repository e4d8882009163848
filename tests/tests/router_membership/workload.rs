//! The load a ring change runs under, and the checks after it: KEYS keys
//! written first, writers doing kube-apiserver's create/update/delete,
//! watchers from several revisions; then every acknowledged write read back
//! on exactly the shard Locate names, and seen once, in order, by every
//! watcher.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::GetOptions;
use ste_tests::keys::PODS;
use ste_tests::kube::{self, Outcome};
use ste_tests::watch::prefix_from;
use ste_tests::{ShardedRouter, TestEtcd, ring};

pub(crate) const KEYS: usize = 3_000;

pub(crate) fn key(i: usize) -> String {
    format!("{PODS}ns-{}/pod-{i:05}", i % 13)
}

pub(crate) type Ack = (i64, String, Option<Vec<u8>>);

/// A watcher's start revision and the (revision, key) events it saw.
pub(crate) type Watched = (i64, Arc<Mutex<Vec<(i64, String)>>>);

pub(crate) async fn load(endpoint: &str) -> anyhow::Result<Vec<Ack>> {
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
pub(crate) async fn writer(
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
        let write =
            kube::next_write(&mut client, &k, revision, value, || n.is_multiple_of(5)).await?;
        known.insert(k.clone(), write.known_revision());
        if let Outcome::Written(at) = write.outcome {
            acks.lock().unwrap().push((at, k, write.value));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

pub(crate) async fn watcher(
    endpoint: String,
    start: i64,
    seen: Arc<Mutex<Vec<(i64, String)>>>,
) -> anyhow::Result<()> {
    let mut client = etcd_client::Client::connect([endpoint], None).await?;
    let mut stream = prefix_from(&mut client, PODS, start).await?;
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
pub(crate) async fn check(
    cluster: &ShardedRouter,
    extra: &[&TestEtcd],
    acks: &[Ack],
) -> anyhow::Result<()> {
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

pub(crate) fn check_watchers(watchers: &[Watched], acks: &[Ack]) {
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
