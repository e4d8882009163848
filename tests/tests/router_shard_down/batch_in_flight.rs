//! A shard's etcd is killed (SIGKILL) while concurrent writers keep it
//! busy, so the router's group commits to it are in flight when it dies.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::{Context, ensure};
use ste_tests::keys::PODS;
use ste_tests::poll::SLOW;
use ste_tests::{ShardedRouter, eventually, ring};

use crate::router_alive_without_panic;

/// Writers running at once: enough for batches to form on one shard.
const WRITERS: usize = 16;

/// Each write's key and what the router answered: its revision, or the
/// error.
type Answers = Arc<Mutex<Vec<(String, Result<i64, String>)>>>;

/// Keys written to the victim shard (some before the kill, some after).
const KEYS: usize = 150;

/// Every write the router acknowledged reads back afterwards with the
/// revision it was acknowledged at; every write that failed is either
/// absent or exactly what was sent (its outcome was uncertain); no two
/// acknowledged writes share a revision; and the router did commit groups
/// of writes to the shard (so a batch, not one write, was cut off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_killed_with_group_commits_in_flight_loses_no_acknowledged_write()
-> anyhow::Result<()> {
    let mut cluster = ShardedRouter::start(3, &["--shard-timeout", "3s"]).await?;
    let client = cluster.router.client().await?;
    let victim = cluster.shards[0].name.clone();
    let mut admin = cluster.router.admin().await?;
    let mut keys = VecDeque::new();
    for i in 0.. {
        if keys.len() == KEYS {
            break;
        }
        ensure!(i < 20 * KEYS, "{KEYS} keys did not land on {victim}");
        let key = format!("{PODS}default/batch-{i:04}");
        if ring::member_of(&mut admin, &key).await? == victim {
            keys.push_back(key);
        }
    }
    let queue = Arc::new(Mutex::new(keys));
    let results: Answers = Arc::default();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (queue, results, mut client) = (queue.clone(), results.clone(), client.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let Some(key) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let result = client
                    .put(key.as_str(), format!("value of {key}"), None)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.header().map(|h| h.revision()).ok_or("no header".into()));
                results.lock().unwrap().push((key, result));
            }
        }));
    }
    // Kill the shard once writes flow, while they still do.
    eventually("a third of the writes to be answered", SLOW, || {
        let answered = results.lock().unwrap().len();
        std::future::ready(if answered >= KEYS / 3 {
            Ok(())
        } else {
            Err(format!("{answered} answered"))
        })
    })
    .await?;
    cluster.shard(&victim).unwrap().kill();
    for writer in writers {
        writer.await?;
    }
    let text = ste_tests::metrics::scrape(cluster.router.metrics).await?;
    let series_of = |name: &str, labels: &str| {
        ste_tests::metrics::sample(&text, &format!("{name}{labels}")).unwrap_or(0.0)
    };
    let series = |name: &str| series_of(name, &format!("{{member=\"{victim}\"}}"));
    let (txns, writes) = (
        series("ste_router_shard_write_txns_total"),
        series("ste_router_shard_writes_total"),
    );
    eprintln!("group commits to {victim}: {writes} writes in {txns} Txns");
    ensure!(
        writes > txns,
        "the writers' concurrency formed no group commit: {writes} writes in {txns} Txns"
    );
    // Every Txn the router sent the shard was timed, the failed ones too.
    let timed = series_of(
        "ste_router_shard_request_duration_seconds_count",
        &format!("{{member=\"{victim}\",method=\"Txn\"}}"),
    );
    ensure!(
        timed >= txns,
        "{timed} Txn calls timed on {victim}, but {txns} write Txns sent"
    );

    cluster.shard(&victim).unwrap().restart().await?;
    let results = results.lock().unwrap().clone();
    let acknowledged: BTreeMap<&str, i64> = results
        .iter()
        .filter_map(|(k, r)| r.as_ref().ok().map(|rev| (k.as_str(), *rev)))
        .collect();
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(k, _)| k.as_str())
        .collect();
    eprintln!(
        "shard killed mid-batch: {} writes acknowledged, {} failed",
        acknowledged.len(),
        failed.len()
    );
    ensure!(
        !failed.is_empty(),
        "the kill failed no write: it came too late"
    );
    let revisions: BTreeSet<i64> = acknowledged.values().copied().collect();
    ensure!(
        revisions.len() == acknowledged.len(),
        "two acknowledged writes share a revision"
    );
    let fresh = cluster.router.client().await?;
    eventually("every acknowledged write to read back", SLOW, || {
        let mut client = fresh.clone();
        let (acknowledged, failed) = (acknowledged.clone(), failed.clone());
        async move {
            for (key, revision) in acknowledged {
                let response = client
                    .get(key, None)
                    .await
                    .map_err(|e| format!("get {key}: {e}"))?;
                let kv = response
                    .kvs()
                    .first()
                    .ok_or(format!("{key} acknowledged, missing"))?;
                if kv.mod_revision() != revision
                    || kv.value() != format!("value of {key}").as_bytes()
                {
                    return Err(format!(
                        "{key}: read at {}, acknowledged at {revision}",
                        kv.mod_revision()
                    ));
                }
            }
            for key in failed {
                let response = client
                    .get(key, None)
                    .await
                    .map_err(|e| format!("get {key}: {e}"))?;
                if let Some(kv) = response.kvs().first()
                    && kv.value() != format!("value of {key}").as_bytes()
                {
                    return Err(format!("{key} failed, yet holds {:?}", kv.value_str()));
                }
            }
            Ok(())
        }
    })
    .await
    .with_context(|| format!("router log:\n{}", cluster.router.log()))?;
    router_alive_without_panic(&cluster)?;
    Ok(())
}
