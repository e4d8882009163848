//! Watch invariants under concurrent writes: every watcher sees every
//! acknowledged write exactly once, in strictly increasing revision order,
//! with the right prev_kv; progress answers never run ahead of delivery.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use ste_tests::ShardedRouter;
use ste_tests::keys::PODS;
use ste_tests::kube::{self, Outcome};

const WRITERS: usize = 16;
const OPS_PER_WRITER: usize = 500;
/// Keys each writer mostly keeps to; a few shared keys make conflicts.
const OWN_KEYS: usize = 6;
const SHARED_KEYS: usize = 6;

/// An event as compared: revision, key, value (None: delete), prev value.
type EventRecord = (i64, String, Option<Vec<u8>>, Option<Vec<u8>>);

/// One acknowledged write.
#[derive(Debug, Clone)]
struct Ack {
    revision: i64,
    key: String,
    /// None for a delete.
    value: Option<Vec<u8>>,
}

/// One thing a watcher received.
#[derive(Debug, Clone)]
enum Seen {
    Event {
        revision: i64,
        key: String,
        value: Option<Vec<u8>>,
        prev: Option<Vec<u8>>,
    },
    /// A progress answer claiming everything up to this revision was sent.
    Progress(i64),
}

fn key(i: usize) -> String {
    format!("/registry/pods/ns-{}/pod-{i}", i % 7)
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

async fn writer(
    endpoint: String,
    seed: u64,
    acks: Arc<Mutex<Vec<Ack>>>,
    done_ops: Arc<std::sync::atomic::AtomicUsize>,
) -> anyhow::Result<()> {
    let mut client = etcd_client::Client::connect([endpoint], None).await?;
    let mut random = Lcg(seed);
    // What this writer last knew of each key's revision (may be stale: that
    // gives the conflicts kube-apiserver sees too).
    let mut known: HashMap<String, i64> = HashMap::new();
    for op in 0..OPS_PER_WRITER {
        let k = if random.next(10) == 0 {
            key(random.next(SHARED_KEYS))
        } else {
            key(SHARED_KEYS + seed as usize * OWN_KEYS + random.next(OWN_KEYS))
        };
        let revision = known.get(&k).copied().unwrap_or(0);
        let value = format!("w{seed}-op{op}").into_bytes();
        let write =
            kube::next_write(&mut client, &k, revision, value, || random.next(4) == 0).await?;
        known.insert(k.clone(), write.known_revision());
        if let Outcome::Written(at) = write.outcome {
            acks.lock().unwrap().push(Ack {
                revision: at,
                key: k,
                value: write.value,
            });
        }
        done_ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Collects a watcher's events and, on request, progress answers, until
/// `done` says it has seen enough.
async fn watch(
    mut client: etcd_client::Client,
    start: i64,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(start);
    let stream = client.watch(PODS, Some(options)).await?;
    let (mut sender, mut responses) = stream.split();
    let mut progress = tokio::time::interval(Duration::from_millis(25));
    loop {
        tokio::select! {
            _ = progress.tick() => {
                if *stop.borrow() {
                    return Ok(());
                }
                sender.request_progress().await?;
            }
            message = responses.message() => {
                let Some(response) = message? else { anyhow::bail!("watch stream ended") };
                anyhow::ensure!(!response.canceled(), "watch canceled: {}", response.cancel_reason());
                if response.created() {
                    continue;
                }
                let mut seen = seen.lock().unwrap();
                if response.events().is_empty() {
                    seen.push(Seen::Progress(response.header().map(|h| h.revision()).unwrap_or_default()));
                }
                for event in response.events() {
                    let kv = event.kv().ok_or_else(|| anyhow::anyhow!("event without kv"))?;
                    seen.push(Seen::Event {
                        revision: kv.mod_revision(),
                        key: kv.key_str()?.to_owned(),
                        value: (event.event_type() == EventType::Put).then(|| kv.value().to_vec()),
                        prev: event.prev_kv().map(|p| p.value().to_vec()),
                    });
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_watcher_sees_every_acknowledged_write_once_in_order() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let endpoint = cluster.router.endpoint();
    let acks = Arc::new(Mutex::new(Vec::new()));
    let done_ops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let base = cluster
        .router
        .client()
        .await?
        .status()
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or_default();

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        writers.push(tokio::spawn(writer(
            endpoint.clone(),
            w as u64 + 1,
            acks.clone(),
            done_ops.clone(),
        )));
    }
    // Watchers start at different points in the past: wait for some
    // acknowledged writes, then watch from revisions before them.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut watchers = Vec::new();
    let mut starts = Vec::new();
    for quarter in 0..4 {
        let wanted = quarter * WRITERS * OPS_PER_WRITER / 8;
        ste_tests::eventually("writes to progress", Duration::from_secs(300), || async {
            let n = done_ops.load(std::sync::atomic::Ordering::Relaxed);
            if n >= wanted {
                Ok(())
            } else {
                Err(format!("{n} of {wanted} operations"))
            }
        })
        .await?;
        let start = {
            let acks = acks.lock().unwrap();
            let mut revisions: Vec<i64> = acks.iter().map(|a| a.revision).collect();
            revisions.sort_unstable();
            // Halfway back into what is already written: a past revision.
            revisions
                .get(revisions.len() / 2)
                .copied()
                .unwrap_or(base + 1)
                .max(base + 1)
        };
        starts.push(start);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = etcd_client::Client::connect([endpoint.clone()], None).await?;
        watchers.push((
            start,
            seen.clone(),
            tokio::spawn(watch(client, start, seen, stop_rx.clone())),
        ));
    }
    for writer in writers {
        writer.await??;
    }
    let mut acks = acks.lock().unwrap().clone();
    acks.sort_by_key(|a| a.revision);
    let last = acks.last().map(|a| a.revision).unwrap_or(base);
    assert!(
        acks.len() > WRITERS * OPS_PER_WRITER / 2,
        "too few writes applied: {}",
        acks.len()
    );
    assert!(
        acks.windows(2).all(|w| w[0].revision < w[1].revision),
        "two writes acknowledged at one revision"
    );

    // Wait until each watcher has received the last acknowledged write.
    for (start, seen, _) in &watchers {
        ste_tests::eventually("watchers to catch up", Duration::from_secs(300), || async {
            let seen = seen.lock().unwrap();
            let got = seen
                .iter()
                .any(|s| matches!(s, Seen::Event { revision, .. } if *revision >= last));
            if got {
                Ok(())
            } else {
                Err(format!("watcher from {start}: {} items", seen.len()))
            }
        })
        .await?;
    }
    stop_tx.send(true)?;
    for (_, _, task) in watchers.iter_mut() {
        tokio::time::timeout(Duration::from_secs(30), task).await???;
    }

    // The model: each key's value just before every acknowledged write.
    let mut value_of: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut expected = Vec::new();
    for ack in &acks {
        let prev = value_of.get(&ack.key).cloned();
        match &ack.value {
            Some(v) => value_of.insert(ack.key.clone(), v.clone()),
            None => value_of.remove(&ack.key),
        };
        expected.push((ack.revision, ack.key.clone(), ack.value.clone(), prev));
    }
    for (start, seen, _) in &watchers {
        let seen = seen.lock().unwrap();
        let events: Vec<EventRecord> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Event {
                    revision,
                    key,
                    value,
                    prev,
                } => Some((*revision, key.clone(), value.clone(), prev.clone())),
                Seen::Progress(_) => None,
            })
            .collect();
        let wanted: Vec<_> = expected.iter().filter(|e| e.0 >= *start).cloned().collect();
        assert!(
            events.windows(2).all(|w| w[0].0 < w[1].0),
            "watcher from {start}: revisions not strictly increasing"
        );
        assert_eq!(
            events.len(),
            wanted.len(),
            "watcher from {start}: event count"
        );
        for (got, want) in events.iter().zip(&wanted) {
            assert_eq!(got, want, "watcher from {start}");
        }
        // Progress answers never claim a revision the watcher has not been
        // sent everything up to.
        let mut delivered = 0usize;
        let mut progress_checked = 0;
        for item in seen.iter() {
            match item {
                Seen::Event { .. } => delivered += 1,
                Seen::Progress(claimed) => {
                    let owed = wanted.iter().filter(|e| e.0 <= *claimed).count();
                    assert!(
                        delivered >= owed,
                        "watcher from {start}: progress at {claimed} after {delivered} of {owed} events"
                    );
                    progress_checked += 1;
                }
            }
        }
        assert!(
            progress_checked > 0,
            "watcher from {start} saw no progress answer"
        );
    }
    assert_eq!(starts.len(), 4);
    Ok(())
}
