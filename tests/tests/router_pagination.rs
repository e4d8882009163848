//! Paginated lists across shards, pinned at a revision while writers keep
//! changing the keys: exactly what kube-apiserver does for a LIST with
//! `limit` and `continue`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use etcd_client::GetOptions;
use ste_tests::ShardedRouter;
use ste_tests::keys::PODS;

const KEYS: usize = 1_500;
const PAGE: i64 = 100;

/// One page as received: count, (key, mod revision, value) items, more,
/// and the revision the list is pinned at.
type Page = (i64, Vec<(String, i64, String)>, bool, i64);

fn key(i: usize) -> String {
    format!("{PODS}ns-{}/pod-{i:05}", i % 11)
}

/// Keeps creating, updating and deleting keys under the prefix until told
/// to stop; returns the acknowledged writes as (revision, key, value or None).
async fn churn(
    endpoint: String,
    seed: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<(i64, String, Option<String>)>> {
    let mut client = etcd_client::Client::connect([endpoint], None).await?;
    let mut log = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let i = (seed * 7919 + n * 104_729) % (KEYS + 300);
        let k = key(i);
        if n.is_multiple_of(3) {
            let response = client.delete(k.clone(), None).await?;
            if response.deleted() > 0 {
                log.push((
                    response.header().map(|h| h.revision()).unwrap_or_default(),
                    k,
                    None,
                ));
            }
        } else {
            let value = format!("churn-{seed}-{n}");
            let response = client.put(k.clone(), value.clone(), None).await?;
            log.push((
                response.header().map(|h| h.revision()).unwrap_or_default(),
                k,
                Some(value),
            ));
        }
    }
    Ok(log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_are_disjoint_sorted_complete_and_counted_at_a_pinned_revision() -> anyhow::Result<()>
{
    let cluster = ShardedRouter::start(3, &[]).await?;
    let mut client = cluster.router.client().await?;
    let mut writes: Vec<(i64, String, Option<String>)> = Vec::new();
    let loaders: Vec<_> = (0..10)
        .map(|part| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut log = Vec::new();
                for i in (part..KEYS).step_by(10) {
                    let value = format!("initial-{i}");
                    let response = client.put(key(i), value.clone(), None).await?;
                    log.push((
                        response.header().map(|h| h.revision()).unwrap_or_default(),
                        key(i),
                        Some(value),
                    ));
                }
                anyhow::Ok(log)
            })
        })
        .collect();
    for loader in loaders {
        writes.extend(loader.await??);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..4)
        .map(|seed| tokio::spawn(churn(cluster.router.endpoint(), seed, stop.clone())))
        .collect();

    // Page through while the churn goes on, twice, each list at its own
    // pinned revision.
    let mut lists = Vec::new();
    for _ in 0..2 {
        let mut pages: Vec<Page> = Vec::new();
        let mut start = PODS.as_bytes().to_vec();
        let mut pinned = 0;
        loop {
            let mut options = GetOptions::new()
                .with_range(ste_core::keyrange::prefix_end(PODS.as_bytes()))
                .with_limit(PAGE);
            if pinned != 0 {
                options = options.with_revision(pinned);
            }
            let response = client.get(start.clone(), Some(options)).await?;
            if pinned == 0 {
                pinned = response.header().map(|h| h.revision()).unwrap_or_default();
            }
            let items: Vec<(String, i64, String)> = response
                .kvs()
                .iter()
                .map(|kv| {
                    Ok((
                        kv.key_str()?.to_owned(),
                        kv.mod_revision(),
                        kv.value_str()?.to_owned(),
                    ))
                })
                .collect::<Result<_, etcd_client::Error>>()?;
            pages.push((response.count(), items, response.more(), pinned));
            match response.kvs().last() {
                Some(last) if response.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
            // Let the writers move the store on between pages.
            tokio::task::yield_now().await;
        }
        lists.push(pages);
    }
    stop.store(true, Ordering::Relaxed);
    for churner in churners {
        writes.extend(churner.await??);
    }
    writes.sort_by_key(|w| w.0);

    for pages in lists {
        let pinned = pages[0].3;
        // The model: the prefix's content at the pinned revision.
        let mut expected: BTreeMap<String, (i64, String)> = BTreeMap::new();
        for (revision, k, value) in writes.iter().filter(|w| w.0 <= pinned) {
            match value {
                Some(v) => expected.insert(k.clone(), (*revision, v.clone())),
                None => expected.remove(k),
            };
        }
        let mut seen: Vec<(String, i64, String)> = Vec::new();
        for (number, (count, items, more, _)) in pages.iter().enumerate() {
            let first = items.first().map(|i| i.0.clone()).unwrap_or_default();
            let remaining = expected.range(first..).count() as i64;
            assert_eq!(
                *count, remaining,
                "page {number}: count must be the keys from its start at {pinned}"
            );
            assert!(items.len() as i64 <= PAGE);
            assert_eq!(*more, number + 1 < pages.len(), "page {number}: more");
            assert!(
                items.windows(2).all(|w| w[0].0 < w[1].0),
                "page {number} unsorted"
            );
            if let (Some(last_seen), Some(first_here)) = (seen.last(), items.first()) {
                assert!(
                    last_seen.0 < first_here.0,
                    "page {number} overlaps the previous one"
                );
            }
            seen.extend(items.iter().cloned());
        }
        let expected: Vec<(String, i64, String)> = expected
            .into_iter()
            .map(|(k, (rev, v))| (k, rev, v))
            .collect();
        assert_eq!(
            seen.len(),
            expected.len(),
            "list at {pinned}: number of keys"
        );
        assert_eq!(
            seen, expected,
            "list at {pinned}: exactly the keys that existed then"
        );
    }
    Ok(())
}
