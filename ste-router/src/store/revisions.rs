//! The global revision space: allocation from the sequencer, completion,
//! the "current" revision served to reads, the reservation persisted in the
//! state store, and the compaction point reads are checked against.
//!
//! A completed write's events go to the [`EventFeed`], which publishes them
//! in revision order as revisions become current (see `event_feed.rs`).

use std::sync::{Arc, Mutex};

use ste_core::revision::GlobalRevision;
use ste_core::sequencer::Sequencer;
use tokio::sync::watch;

use super::event_feed::{EventFeed, StoredEvent};
use crate::error::{StoreError, StoreResult};
use crate::state::StateStore;

struct Inner {
    sequencer: Sequencer,
    /// Reads below this revision are refused as compacted, and so is a
    /// Compact at or below it. [`NEVER_COMPACTED`] until the first
    /// compaction of a fresh revision space.
    compacted: GlobalRevision,
}

/// The compaction point of a revision space never compacted: etcd's
/// `compactMainRev` starts at -1, so its first Compact may name any
/// revision from 0 to the current one (Compact(0) included, once).
const NEVER_COMPACTED: GlobalRevision = GlobalRevision(-1);

/// Revision bookkeeping shared by every request.
pub struct Revisions {
    inner: Mutex<Inner>,
    current: watch::Sender<GlobalRevision>,
    feed: EventFeed,
    state: Arc<StateStore>,
    block: i64,
    reserving: tokio::sync::Mutex<()>,
}

/// Figures of the revision space, for status and metrics.
#[derive(Debug, Clone, Copy)]
pub struct RevisionStats {
    /// Every write at or below it has completed.
    pub current: GlobalRevision,
    /// Reads below it are refused as compacted.
    pub compacted: GlobalRevision,
    /// Revisions handed out and not completed yet.
    pub in_flight: usize,
    /// The high-water mark persisted in the state store: no router hands
    /// out a revision above it without persisting a higher one first.
    pub reserved: GlobalRevision,
    /// Events in the watch event log.
    pub log_events: usize,
    /// Approximate bytes of the event log.
    pub log_bytes: usize,
    /// The oldest revision a watch can start from.
    pub log_oldest: GlobalRevision,
}

impl Revisions {
    /// An empty revision space; [`Revisions::restart_at`] sets where it
    /// starts once the shards have been scanned.
    pub fn new(log_bytes: usize, block: i64, state: Arc<StateStore>) -> Self {
        let (current, _) = watch::channel(GlobalRevision::ZERO);
        Revisions {
            inner: Mutex::new(Inner {
                sequencer: Sequencer::new(GlobalRevision::ZERO, GlobalRevision::ZERO)
                    .expect("zero start and reservation are valid"),
                compacted: NEVER_COMPACTED,
            }),
            current,
            feed: EventFeed::new(log_bytes),
            state,
            block,
            reserving: tokio::sync::Mutex::new(()),
        }
    }

    /// Starts the revision space after `start` (every revision ≤ start may
    /// have been handed out by an earlier router) with `reserved` persisted
    /// as the high-water mark.
    ///
    /// The router keeps no history from before it started, so the first
    /// revision it serves, F = start + 1, is an empty revision and the
    /// compaction point: reads at F and watches from F are served (a client
    /// that read at F watches from F, as kube-apiserver's compactor does,
    /// and etcd serves a watch from its compaction revision), and a client
    /// that holds an earlier state, ≤ start, is refused as compacted and
    /// relists. Were F = start, a watch from start could come from a client
    /// holding start − 1 while the earlier router wrote at start.
    ///
    /// Nothing was ever written when `start` is revision 1 (etcd's empty
    /// store; the first write is revision 2): then, as on a fresh etcd,
    /// revision 1 is current, a watch from it sees every event, and nothing
    /// is compacted (Compact(0) and Compact(1) are accepted).
    pub fn restart_at(&self, start: GlobalRevision, reserved: GlobalRevision) -> StoreResult<()> {
        let cannot = |e: &dyn std::fmt::Display| {
            StoreError::Internal(format!("cannot start revisions after {start}: {e}"))
        };
        let mut sequencer = Sequencer::new(start, reserved.max(start)).map_err(|e| cannot(&e))?;
        let first = if start <= GlobalRevision(1) {
            GlobalRevision(1)
        } else {
            let first = sequencer
                .allocate()
                .map_err(|_| cannot(&"no revision reserved above it"))?;
            sequencer.complete(first).map_err(|e| cannot(&e))?;
            first
        };
        {
            let mut inner = self.lock();
            inner.sequencer = sequencer;
            inner.compacted = if start <= GlobalRevision(1) {
                NEVER_COMPACTED
            } else {
                first
            };
        }
        self.feed.restart(first);
        self.current.send_replace(first);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every write with a revision ≤ this has completed.
    pub fn current(&self) -> GlobalRevision {
        *self.current.borrow()
    }

    /// The highest revision handed out to a write (current or still in
    /// flight).
    pub fn allocated(&self) -> GlobalRevision {
        self.lock().sequencer.last_allocated()
    }

    /// Reads below this revision are refused as compacted.
    pub fn compacted(&self) -> GlobalRevision {
        self.lock().compacted
    }

    /// Changes whenever the current revision moves forward.
    pub fn subscribe(&self) -> watch::Receiver<GlobalRevision> {
        self.current.subscribe()
    }

    /// The next revision for a write that will be applied. Crossing the
    /// reserved mark first persists a new mark a block higher.
    pub async fn allocate(&self) -> StoreResult<GlobalRevision> {
        loop {
            let needed = match self.lock().sequencer.allocate() {
                Ok(revision) => return Ok(revision),
                Err(needs) => needs.through,
            };
            self.reserve_through(needed).await?;
        }
    }

    /// `count` consecutive revisions for the writes of one shard Txn (a
    /// group commit), as `(first, last)`; see [`Revisions::allocate`].
    pub async fn allocate_many(
        &self,
        count: usize,
    ) -> StoreResult<(GlobalRevision, GlobalRevision)> {
        loop {
            let needed = match self.lock().sequencer.allocate_many(count) {
                Ok(revisions) => return Ok(revisions),
                Err(needs) => needs.through,
            };
            self.reserve_through(needed).await?;
        }
    }

    /// Persists a reservation a block above `needed` unless one already
    /// covers it (one reserver at a time).
    async fn reserve_through(&self, needed: GlobalRevision) -> StoreResult<()> {
        let _one_reserver = self.reserving.lock().await;
        if self.lock().sequencer.reserved_through() >= needed {
            return Ok(());
        }
        let through = GlobalRevision(needed.0 + self.block);
        self.state.reserve_revisions(through).await?;
        self.lock()
            .sequencer
            .reserve(through)
            .map_err(|e| StoreError::Internal(format!("revision reservation: {e}")))
    }

    /// Marks several revisions finished at once, each with its events:
    /// like [`Revisions::complete`] for each, except that no reader can
    /// see some of them current and not the others. A group commit's
    /// revisions complete this way, so the current revision never falls
    /// inside one (a read at the current revision never needs
    /// [`ste_core::revmap::Location::later_in_batch`]).
    pub fn complete_many(&self, completed: Vec<(GlobalRevision, Vec<StoredEvent>)>) {
        let revisions: Vec<GlobalRevision> = completed.iter().map(|(r, _)| *r).collect();
        for (revision, events) in completed {
            self.feed.hold(revision, events);
        }
        let mut advanced = None;
        {
            let mut inner = self.lock();
            for revision in revisions {
                match inner.sequencer.complete(revision) {
                    Ok(Some(current)) => advanced = Some(current),
                    Ok(None) => {}
                    Err(err) => {
                        tracing::error!(%revision, error = %err, "revision completed twice");
                    }
                }
            }
        }
        let Some(current) = advanced else { return };
        self.feed.publish_through(current);
        self.current.send_if_modified(|announced| {
            let newer = current > *announced;
            if newer {
                *announced = current;
            }
            newer
        });
    }

    /// Marks `revision` finished with the events its write produced (none
    /// for an abandoned revision), publishing every revision that became
    /// current.
    ///
    /// Order matters: the events are held before the sequencer learns of
    /// the completion, and published before the new current revision is
    /// announced, so a watcher woken by "current is G" finds every event
    /// ≤ G in the log. Two completions racing may announce out of order;
    /// the current revision only ever moves forward.
    pub fn complete(&self, revision: GlobalRevision, events: Vec<StoredEvent>) {
        self.complete_many(vec![(revision, events)]);
    }

    /// Waits until `revision` is current, so a client that was told about
    /// it can read it back.
    pub async fn wait_visible(&self, revision: GlobalRevision) {
        let mut rx = self.current.subscribe();
        let _ = rx.wait_for(|current| *current >= revision).await;
    }

    /// Checks a read revision the way etcd does: 0 means current.
    pub fn resolve_read(&self, requested: i64) -> StoreResult<GlobalRevision> {
        let current = self.current();
        if requested <= 0 {
            return Ok(current);
        }
        let requested = GlobalRevision(requested);
        if requested > current {
            return Err(StoreError::FutureRevision);
        }
        if requested < self.compacted() {
            return Err(StoreError::Compacted);
        }
        Ok(requested)
    }

    /// Compacts the event log and raises the compaction point.
    pub fn compact(&self, revision: GlobalRevision) -> StoreResult<()> {
        let mut inner = self.lock();
        if revision <= inner.compacted {
            return Err(StoreError::Compacted);
        }
        inner.compacted = revision;
        drop(inner);
        self.feed.compact(revision);
        Ok(())
    }

    /// Ends history with revisions of its own: every open watch ends with
    /// the compacted error and clients relist. Used when the index changed
    /// in a way no event describes (a shard lost or resynced).
    ///
    /// The change gets a fresh revision C (a write with no events), and
    /// the cut is the next revision after it, R > C, with no events either:
    /// R becomes the compaction point and the oldest revision a watch may
    /// start from. So
    /// - the state after the change is never served under a revision that
    ///   also named the state before it: kube-apiserver's watch cache
    ///   relists after the compacted error, and had the revision stayed, it
    ///   would relist at the old revision and its own watchers (the
    ///   controllers' informers) would resume from there without error and
    ///   never learn that keys were dropped. Now they get "too old resource
    ///   version" and relist too;
    /// - a watch from C (its client holds the state before the change) is
    ///   refused, and a watch from R (its client holds the state after it,
    ///   e.g. one that read at R: kube-apiserver's compactor reads and then
    ///   watches from the read's revision) is served, exactly as etcd
    ///   serves a watch from its compaction revision.
    ///
    /// Writes still in flight below R complete as usual, but their events
    /// are not logged: they belong to the history the cut ended. Until they
    /// complete, R is allocated but not current, so a relist at the current
    /// revision may be followed by one more compacted error.
    pub async fn cut_history(&self) -> StoreResult<GlobalRevision> {
        let change = self.allocate().await?;
        let cut = self.allocate().await?;
        self.feed.truncate(cut);
        self.raise_read_floor(cut);
        self.complete(change, Vec::new());
        self.complete(cut, Vec::new());
        self.feed.announce_cut();
        Ok(cut)
    }

    /// Refuses reads below `revision` with the compacted error, without
    /// touching the event log (watches go on): used when a shard that held
    /// older history left the ring.
    pub fn raise_read_floor(&self, revision: GlobalRevision) {
        let mut inner = self.lock();
        if inner.compacted < revision {
            inner.compacted = revision;
        }
    }

    /// The watch feed fed by [`Revisions::complete`].
    pub fn feed(&self) -> &EventFeed {
        &self.feed
    }

    /// Figures for status and metrics.
    pub fn stats(&self) -> RevisionStats {
        let log = self.feed.stats();
        let inner = self.lock();
        RevisionStats {
            current: self.current(),
            compacted: inner.compacted.max(GlobalRevision::ZERO),
            in_flight: inner.sequencer.in_flight(),
            reserved: inner.sequencer.reserved_through(),
            log_events: log.events,
            log_bytes: log.bytes,
            log_oldest: log.oldest,
        }
    }

    /// The reservation high-water mark (see [`RevisionStats::reserved`]).
    pub fn reserved(&self) -> GlobalRevision {
        self.lock().sequencer.reserved_through()
    }
}
