//! The global revision space: allocation, completion, the "current"
//! revision served to reads, compaction, and the watch event log, which is
//! fed in revision order as revisions become current.
//!
//! Writes complete out of order across shards. An event of revision G is
//! held back until every revision ≤ G has completed, then appended to the
//! log and published; so the log, and every watcher reading it, sees events
//! in strictly increasing revision order with no holes that could later be
//! filled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ste_core::events::{Compacted, EventLog, LogEvent};
use ste_core::revision::GlobalRevision;
use ste_core::sequencer::Sequencer;
use ste_proto::etcd::mvccpb;
use tokio::sync::watch;

use crate::error::{StoreError, StoreResult};
use crate::state::StateStore;

/// One watch event as logged: the event itself and its revision.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub revision: GlobalRevision,
    pub event: mvccpb::Event,
}

impl StoredEvent {
    pub fn key(&self) -> &[u8] {
        self.event
            .kv
            .as_ref()
            .map(|kv| kv.key.as_slice())
            .unwrap_or_default()
    }
}

impl LogEvent for StoredEvent {
    fn revision(&self) -> GlobalRevision {
        self.revision
    }

    fn size_bytes(&self) -> usize {
        let kv_size = |kv: &Option<mvccpb::KeyValue>| {
            kv.as_ref()
                .map(|kv| kv.key.len() + kv.value.len() + 48)
                .unwrap_or(0)
        };
        64 + kv_size(&self.event.kv) + kv_size(&self.event.prev_kv)
    }
}

struct Inner {
    sequencer: Sequencer,
    /// Events of completed revisions that are not current yet.
    pending: BTreeMap<GlobalRevision, Vec<StoredEvent>>,
    log: EventLog<StoredEvent>,
    compacted: GlobalRevision,
    /// The revision of the last Compact request (not raised by a cut or a
    /// read floor): the one revision whose events are still in the log but
    /// whose prior values etcd could no longer read.
    compact_requested: GlobalRevision,
}

/// Revision bookkeeping shared by every request.
pub struct Revisions {
    inner: Mutex<Inner>,
    current: watch::Sender<GlobalRevision>,
    /// Bumped whenever history is cut: every open watch must end with the
    /// compacted error so its client relists.
    cuts: watch::Sender<u64>,
    state: Arc<StateStore>,
    block: i64,
    reserving: tokio::sync::Mutex<()>,
}

/// Numbers for status and metrics.
#[derive(Debug, Clone, Copy)]
pub struct RevisionStats {
    pub current: GlobalRevision,
    pub compacted: GlobalRevision,
    pub in_flight: usize,
    pub log_events: usize,
    pub log_bytes: usize,
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
                pending: BTreeMap::new(),
                log: EventLog::new(log_bytes, GlobalRevision::ZERO.next()),
                compacted: GlobalRevision::ZERO,
                compact_requested: GlobalRevision::ZERO,
            }),
            current,
            cuts: watch::channel(0).0,
            state,
            block,
            reserving: tokio::sync::Mutex::new(()),
        }
    }

    /// Starts the revision space at `start` (every revision ≤ start is
    /// taken) with `reserved` persisted as the high-water mark. The router
    /// keeps no history from before `start`, so that is also the
    /// compaction point, unless nothing was ever written.
    ///
    /// Nothing was ever written when `start` is revision 1 (etcd's empty
    /// store; the first write is revision 2): then, as on a fresh etcd, a
    /// watch from revision 1 sees every event instead of being compacted.
    pub fn restart_at(&self, start: GlobalRevision, reserved: GlobalRevision) -> StoreResult<()> {
        let sequencer = Sequencer::new(start, reserved.max(start))
            .map_err(|e| StoreError::Internal(format!("cannot start revisions at {start}: {e}")))?;
        let log_floor = if start <= GlobalRevision(1) {
            GlobalRevision(1)
        } else {
            start.next()
        };
        {
            let mut inner = self.lock();
            let max_bytes = inner.log.max_bytes();
            inner.sequencer = sequencer;
            inner.pending.clear();
            inner.log = EventLog::new(max_bytes, log_floor);
            inner.compacted = start;
        }
        self.current.send_replace(start);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every write with a revision ≤ this has completed.
    pub fn current(&self) -> GlobalRevision {
        *self.current.borrow()
    }

    pub fn compacted(&self) -> GlobalRevision {
        self.lock().compacted
    }

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
            let _one_reserver = self.reserving.lock().await;
            if self.lock().sequencer.reserved_through() >= needed {
                continue;
            }
            let through = GlobalRevision(needed.0 + self.block);
            self.state.reserve_revisions(through).await?;
            self.lock()
                .sequencer
                .reserve(through)
                .map_err(|e| StoreError::Internal(format!("revision reservation: {e}")))?;
        }
    }

    /// Marks `revision` finished with the events its write produced (none
    /// for an abandoned revision), publishing every revision that became
    /// current.
    pub fn complete(&self, revision: GlobalRevision, events: Vec<StoredEvent>) {
        let mut inner = self.lock();
        if !events.is_empty() {
            inner.pending.insert(revision, events);
        }
        let advanced = match inner.sequencer.complete(revision) {
            Ok(advanced) => advanced,
            Err(err) => {
                tracing::error!(%revision, error = %err, "revision completed twice");
                return;
            }
        };
        let Some(current) = advanced else { return };
        let ready: Vec<GlobalRevision> = inner.pending.range(..=current).map(|(r, _)| *r).collect();
        for revision in ready {
            for event in inner.pending.remove(&revision).unwrap_or_default() {
                if let Err(err) = inner.log.push(event) {
                    tracing::error!(error = %err, "event log out of order");
                }
            }
        }
        drop(inner);
        self.current.send_replace(current);
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
        inner.compact_requested = revision;
        inner.log.compact(revision);
        Ok(())
    }

    /// The revision of the last Compact request, see
    /// [`Revisions::compact`].
    pub fn compact_requested(&self) -> GlobalRevision {
        self.lock().compact_requested
    }

    /// Ends history with a revision of its own. The index changed in a way
    /// no event describes (a shard lost or resynced), so the change takes
    /// a revision, like a write that produced no events: `cut`, returned.
    /// Every watch ends with the compacted error, and reads and watches
    /// from below `cut` get it too, so clients relist; from `cut` on they
    /// work, as after an etcd compaction at `cut`.
    ///
    /// Without a revision of its own the cut would fall on the current
    /// revision C, whose reads already show the change: a watch from C
    /// (kube-apiserver's compactor watches from the revision its last Get
    /// answered) would have to be refused, forever if nothing is written,
    /// while a watch from C+1 must be refused to a client that read at
    /// C-1 before the change.
    pub async fn cut_history(&self) -> StoreResult<GlobalRevision> {
        let cut = self.allocate().await?;
        self.complete(cut, Vec::new());
        // Every revision below the cut is finished (writes in flight end
        // within the shard timeout) before history ends there.
        self.wait_visible(cut).await;
        {
            let mut inner = self.lock();
            inner.log.compact(cut);
            if inner.compacted < cut {
                inner.compacted = cut;
            }
        }
        self.cuts.send_modify(|n| *n += 1);
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

    pub fn subscribe_cuts(&self) -> watch::Receiver<u64> {
        self.cuts.subscribe()
    }

    /// Events with revision in `[from, through]`, or the compacted error.
    pub fn events(
        &self,
        from: GlobalRevision,
        through: GlobalRevision,
    ) -> Result<Vec<StoredEvent>, Compacted> {
        let inner = self.lock();
        Ok(inner
            .log
            .since(from)?
            .take_while(|e| e.revision <= through)
            .cloned()
            .collect())
    }

    pub fn log_floor(&self) -> GlobalRevision {
        self.lock().log.floor()
    }

    pub fn stats(&self) -> RevisionStats {
        let inner = self.lock();
        RevisionStats {
            current: self.current(),
            compacted: inner.compacted,
            in_flight: inner.sequencer.in_flight(),
            log_events: inner.log.len(),
            log_bytes: inner.log.bytes(),
            log_oldest: inner.log.oldest_available(),
        }
    }

    pub fn reserved(&self) -> GlobalRevision {
        self.lock().sequencer.reserved_through()
    }
}
