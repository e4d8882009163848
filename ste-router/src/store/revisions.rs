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
    /// revision 1 is current and a watch from it sees every event.
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
            let max_bytes = inner.log.max_bytes();
            inner.sequencer = sequencer;
            inner.pending.clear();
            inner.log = EventLog::new(max_bytes, first);
            inner.compacted = if start <= GlobalRevision(1) {
                start
            } else {
                first
            };
        }
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
                // Below the floor: history a cut has ended (see cut_history).
                if event.revision < inner.log.floor() {
                    continue;
                }
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
        {
            let mut inner = self.lock();
            inner.log.compact(cut);
            if inner.compacted < cut {
                inner.compacted = cut;
            }
        }
        self.complete(change, Vec::new());
        self.complete(cut, Vec::new());
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
