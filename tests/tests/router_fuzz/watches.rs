//! Watch streams: each watch the fuzzer opens is one stream per side, read
//! by a task into a list of [`WatchItem`]s; plus the reference etcd's
//! history (a watch on every key from the start), which says which events
//! each watch must have received by now.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, WatchFilterType, WatchOptions, WatchRequestSender};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::answer::WatchItem;
use crate::request::Keys;

/// How long a watch may take to deliver what it owes (a loaded 2-core
/// machine can be slow; an idle one needs milliseconds).
pub(crate) const WATCH_DEADLINE: Duration = Duration::from_secs(30);

/// One watch stream and everything received on it.
pub(crate) struct Stream {
    sender: WatchRequestSender,
    items: Arc<Mutex<Vec<WatchItem>>>,
    notify: Arc<Notify>,
    /// Items already compared.
    seen: usize,
    task: JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream {
    /// Opens a stream with one watch on `keys`.
    pub(crate) async fn open(
        client: &mut Client,
        keys: &Keys,
        options: WatchOptions,
    ) -> Result<Stream, etcd_client::Error> {
        let stream = client.watch(keys.key(), Some(keys.watch(options))).await?;
        let (sender, mut receiver) = stream.split();
        let items = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(Notify::new());
        let task = tokio::spawn({
            let (items, notify) = (items.clone(), notify.clone());
            async move {
                loop {
                    let message = receiver.message().await;
                    let (new, end) = match message {
                        Ok(Some(message)) => (WatchItem::of(&message), false),
                        other => (
                            vec![WatchItem::Canceled {
                                header: -1,
                                compact_revision: -1,
                                reason: format!("the stream ended: {other:?}"),
                            }],
                            true,
                        ),
                    };
                    items.lock().expect("items").extend(new);
                    notify.notify_waiters();
                    if end {
                        break;
                    }
                }
            }
        });
        Ok(Stream {
            sender,
            items,
            notify,
            seen: 0,
            task,
        })
    }

    /// Waits until `done` holds for everything received, or fails after
    /// `deadline` with what was received.
    pub(crate) async fn wait(
        &self,
        what: &str,
        deadline: Instant,
        done: impl Fn(&[WatchItem]) -> bool,
    ) -> Result<(), String> {
        loop {
            let notified = self.notify.notified();
            if done(&self.items.lock().expect("items")) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!(
                    "timed out waiting for {what}; received: {:?}",
                    self.items()
                ));
            }
        }
    }

    pub(crate) fn items(&self) -> Vec<WatchItem> {
        self.items.lock().expect("items").clone()
    }

    /// The items received since the last call.
    pub(crate) fn take_new(&mut self) -> Vec<WatchItem> {
        let items = self.items();
        if self.seen == usize::MAX {
            return Vec::new();
        }
        let new = items[self.seen.min(items.len())..].to_vec();
        self.seen = items.len();
        new
    }

    /// Stops comparing this stream: whatever it receives from now on is
    /// dropped.
    pub(crate) fn ended(&mut self) {
        self.task.abort();
        self.seen = usize::MAX;
    }

    /// The watch ID of the "created" answer.
    pub(crate) fn watch_id(&self) -> Option<i64> {
        self.items().iter().find_map(|i| match i {
            WatchItem::Created { watch_id, .. } => Some(*watch_id),
            _ => None,
        })
    }

    pub(crate) async fn cancel(&mut self, watch_id: i64) -> Result<(), etcd_client::Error> {
        self.sender.cancel(watch_id).await
    }

    pub(crate) async fn request_progress(&mut self) -> Result<(), etcd_client::Error> {
        self.sender.request_progress().await
    }
}

/// Whether the items hold a "created" answer.
pub(crate) fn created(items: &[WatchItem]) -> bool {
    items.iter().any(|i| matches!(i, WatchItem::Created { .. }))
}

/// Whether the items hold a cancellation.
pub(crate) fn canceled(items: &[WatchItem]) -> bool {
    items
        .iter()
        .any(|i| matches!(i, WatchItem::Canceled { .. }))
}

/// Whether an event of revision `revision` or later arrived.
pub(crate) fn reached(items: &[WatchItem], revision: i64) -> bool {
    items
        .iter()
        .filter_map(WatchItem::event_revision)
        .any(|r| r >= revision)
}

/// The options of a watch, with the side's start revision.
pub(crate) fn options(start: i64, prev_kv: bool, no_put: bool, no_delete: bool) -> WatchOptions {
    let mut options = WatchOptions::new();
    if start != 0 {
        options = options.with_start_revision(start);
    }
    if prev_kv {
        options = options.with_prev_key();
    }
    let mut filters = Vec::new();
    if no_put {
        filters.push(WatchFilterType::NoPut);
    }
    if no_delete {
        filters.push(WatchFilterType::NoDelete);
    }
    if !filters.is_empty() {
        options = options.with_filters(filters);
    }
    options
}

/// One watch of the fuzzer, on both sides.
pub(crate) struct Watch {
    pub(crate) keys: Keys,
    pub(crate) no_put: bool,
    pub(crate) no_delete: bool,
    /// The first revision (etcd's) it may send an event of.
    pub(crate) from: i64,
    /// Set when it starts at the compaction revision (etcd's), see
    /// `differences::WATCH_AT_COMPACTION`.
    pub(crate) at_compaction: Option<i64>,
    /// It starts below the compaction revision: both must cancel it with
    /// the compacted error (etcd may do so up to 100 ms later).
    pub(crate) compacted: bool,
    pub(crate) etcd: Stream,
    pub(crate) router: Stream,
    /// Canceled (by the fuzzer or by compaction): nothing more may come.
    pub(crate) canceled: bool,
    /// Canceled by the fuzzer: the generator leaves it alone.
    pub(crate) closed: bool,
    /// Started at a revision etcd already had: etcd serves it "unsynced"
    /// until its 100 ms loop has sent it the history.
    pub(crate) from_past: bool,
    /// Events etcd has sent it.
    pub(crate) etcd_events: usize,
}

impl Watch {
    /// Whether the generator may cancel it: not canceled by anyone, and
    /// not ended by one of etcd's timing artefacts.
    pub(crate) fn open(&self) -> bool {
        !self.canceled && !self.closed && !self.compacted
    }

    /// Whether the generator may ask it for progress. etcd 3.5+ defers a
    /// progress request while a watcher of the stream is unsynced and
    /// answers it only with the next event sent, maybe never; a watch from
    /// the past is known synced once etcd has sent it an event (history is
    /// sent only by the loop that syncs it).
    pub(crate) fn progressable(&self) -> bool {
        self.open() && (!self.from_past || self.etcd_events > 0)
    }

    /// Whether an event of `key` (a PUT if `put`) is one for this watch.
    pub(crate) fn wants(&self, key: &str, put: bool) -> bool {
        self.keys.contains(key) && if put { !self.no_put } else { !self.no_delete }
    }
}

/// The reference etcd's complete history since the fuzzer started: a
/// watch on every key, (revision, key, is a PUT) per event.
pub(crate) struct History {
    stream: Stream,
    /// The first revision it watches.
    from: i64,
}

impl History {
    pub(crate) async fn open(
        client: &mut Client,
        from: i64,
    ) -> Result<History, etcd_client::Error> {
        let stream = Stream::open(client, &Keys::All, options(from, false, false, false)).await?;
        Ok(History { stream, from })
    }

    /// Waits until the history holds revision `current`.
    pub(crate) async fn reach(&self, current: i64, deadline: Instant) -> Result<(), String> {
        if current < self.from {
            return Ok(());
        }
        self.stream
            .wait("the history to reach the current revision", deadline, |i| {
                reached(i, current)
            })
            .await
    }

    /// The last revision (etcd's) at or after `after` with an event for
    /// `watch`, leaving out DELETE events at `deletes_not_owed_at`.
    pub(crate) fn last_for(
        &self,
        watch: &Watch,
        after: i64,
        deletes_not_owed_at: Option<i64>,
    ) -> Option<i64> {
        self.stream
            .items
            .lock()
            .expect("items")
            .iter()
            .filter_map(|i| match i {
                WatchItem::Event { put, kv, .. }
                    if kv.modified >= after
                        && watch.wants(&kv.key, *put)
                        && (*put || deletes_not_owed_at != Some(kv.modified)) =>
                {
                    Some(kv.modified)
                }
                _ => None,
            })
            .max()
    }
}
