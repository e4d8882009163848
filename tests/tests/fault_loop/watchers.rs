//! A watcher behaves as client-go's reflector: list, watch from the list's
//! revision + 1, resume from the last event + 1 when the stream breaks,
//! and list again when the watch is canceled (compacted, or cut by a fence
//! or a resync). What it saw is kept per segment (one list and the watch
//! after it) for the checker.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions};
use ste_tests::keys::PODS;
use ste_tests::watch::prefix_from;

use crate::history::History;
use crate::{DEADLINE, MARGIN, connect};

/// One event as a watcher saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub revision: i64,
    pub key: String,
    /// The value put; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// A list at `start - 1` and every event seen after it until the watch
/// was canceled (`end`) or the run ended.
#[derive(Debug, Clone, Default)]
pub struct Segment {
    pub start: i64,
    pub events: Vec<Seen>,
    pub end: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct WatchLog {
    pub segments: Vec<Segment>,
    /// Watches resumed after a broken stream (not a cancel).
    pub resumes: u64,
}

impl WatchLog {
    fn last_revision(&self) -> i64 {
        self.segments
            .last()
            .map(|s| s.events.last().map(|e| e.revision).unwrap_or(s.start - 1))
            .unwrap_or(0)
    }
}

/// Watches until `stop_at` is set and the watcher has seen it.
pub async fn watcher(
    endpoint: String,
    log: Arc<Mutex<WatchLog>>,
    history: Arc<History>,
    stop_at: Arc<AtomicI64>,
) -> anyhow::Result<()> {
    let done = |log: &Mutex<WatchLog>| {
        let stop = stop_at.load(Ordering::Relaxed);
        stop > 0 && log.lock().unwrap().last_revision() >= stop
    };
    let mut client: Option<etcd_client::Client> = None;
    // Where the watch resumes; `None`: list first.
    let mut next: Option<i64> = None;
    while !done(&log) {
        let Some(c) = client.as_mut() else {
            client = connect(&endpoint).await.ok();
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let from = match next {
            Some(from) => from,
            None => {
                let started = Instant::now();
                let list = tokio::time::timeout(
                    DEADLINE + MARGIN,
                    c.get(PODS, Some(GetOptions::new().with_prefix())),
                )
                .await;
                history.request("watcher: list", started.elapsed());
                match list {
                    Ok(Ok(list)) => {
                        let revision = list.header().map(|h| h.revision()).unwrap_or(0);
                        log.lock().unwrap().segments.push(Segment {
                            start: revision + 1,
                            ..Segment::default()
                        });
                        next = Some(revision + 1);
                        revision + 1
                    }
                    _ => {
                        // A list touches every shard: it fails while one is
                        // down. Try again, as a reflector does.
                        client = None;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
        };
        let started = Instant::now();
        let stream = tokio::time::timeout(DEADLINE + MARGIN, prefix_from(c, PODS, from)).await;
        history.request("watcher: watch", started.elapsed());
        let Ok(Ok(mut stream)) = stream else {
            client = None;
            continue;
        };
        loop {
            if done(&log) {
                return Ok(());
            }
            let message =
                match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                    Err(_) => continue,
                    Ok(message) => message,
                };
            match message {
                Ok(Some(response)) if response.canceled() => {
                    let mut log = log.lock().unwrap();
                    if let Some(segment) = log.segments.last_mut() {
                        segment.end = Some(format!(
                            "canceled (compact revision {}): {}",
                            response.compact_revision(),
                            response.cancel_reason()
                        ));
                    }
                    next = None;
                    break;
                }
                Ok(Some(response)) => {
                    let mut log = log.lock().unwrap();
                    let segment = log.segments.last_mut().expect("a list came first");
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        segment.events.push(Seen {
                            revision: kv.mod_revision(),
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            value: (event.event_type() == EventType::Put)
                                .then(|| kv.value().to_vec()),
                        });
                        next = Some(kv.mod_revision() + 1);
                    }
                }
                Ok(None) | Err(_) => {
                    // The stream broke (the router was killed, say):
                    // resume from the next revision, as a reflector does.
                    log.lock().unwrap().resumes += 1;
                    client = None;
                    break;
                }
            }
        }
    }
    Ok(())
}
