//! Running ring changes: one at a time, with progress for `kubectl ste`.
//!
//! A join, leave or resume plans the keys to move, moves them batch by
//! batch (`store/migrate.rs`) and commits the new ring; a fence removes a
//! lost member without moving anything. The data operations live in the
//! store; what is here is the order of the steps, the lock that keeps
//! changes apart and the progress they report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ste_core::migration::{Flow, Plan};
use ste_core::ring::{Member, Ring};
use tokio::sync::mpsc;

use crate::error::{StoreError, StoreResult};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::migrate::{BATCH, records};

/// What kind of ring change runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A member is added; keys it owns move to it.
    Join,
    /// A member is removed; its keys move to their new owners first.
    Leave,
    /// A member whose shard was lost is removed without moving anything:
    /// its keys are gone, watches are cut and clients relist.
    Fence,
    /// A change found half done (at start-up, or keys off their owner) is
    /// finished.
    Resume,
}

impl ChangeKind {
    /// The name `kubectl ste` and the logs use: `join`, `leave`, `fence`,
    /// `resume`.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Join => "join",
            ChangeKind::Leave => "leave",
            ChangeKind::Fence => "fence",
            ChangeKind::Resume => "resume",
        }
    }
}

/// Where a ring change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The plan is made: which keys move where.
    Planned,
    /// Keys are being moved.
    Moving,
    /// Moved; the new ring is committed.
    Done,
}

/// Progress of one ring change, as status and the join/leave streams
/// report it (the admin API maps it to `ste.v1.MigrationProgress`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeProgress {
    /// Where the change is.
    pub phase: Phase,
    /// What kind of change.
    pub kind: ChangeKind,
    /// The member joining, leaving or fenced (empty for a resume).
    pub member: String,
    /// Ring generation before the change.
    pub from_generation: u64,
    /// Ring generation after the change.
    pub to_generation: u64,
    /// Keys the plan moves.
    pub keys_total: u64,
    /// Keys moved so far.
    pub keys_moved: u64,
    /// Key plus value bytes the plan moves.
    pub bytes_total: u64,
    /// Bytes moved so far.
    pub bytes_moved: u64,
    /// Estimated time left (zero when unknown or done).
    pub eta: Duration,
    /// The plan per (from member, to member).
    pub flows: BTreeMap<(String, String), Flow>,
}

impl ChangeProgress {
    fn new(kind: ChangeKind, member: &str, from_generation: u64, to_generation: u64) -> Self {
        ChangeProgress {
            phase: Phase::Planned,
            kind,
            member: member.to_owned(),
            from_generation,
            to_generation,
            keys_total: 0,
            keys_moved: 0,
            bytes_total: 0,
            bytes_moved: 0,
            eta: Duration::ZERO,
            flows: BTreeMap::new(),
        }
    }

    fn planned(mut self, plan: &Plan) -> Self {
        self.keys_total = plan.keys();
        self.bytes_total = plan.bytes();
        self.flows = plan.flows.clone();
        self
    }

    /// Counts a moved batch and re-estimates the time left from the rate
    /// so far (at least one key a second, so the estimate stays finite).
    fn moved(&mut self, keys: u64, bytes: u64, elapsed: Duration) {
        self.keys_moved += keys;
        self.bytes_moved += bytes;
        let rate = self.keys_moved as f64 / elapsed.as_secs_f64().max(0.001);
        let left = self.keys_total.saturating_sub(self.keys_moved) as f64;
        self.eta = Duration::from_secs_f64(left / rate.max(1.0));
    }

    fn done(&mut self) {
        self.phase = Phase::Done;
        self.eta = Duration::ZERO;
        self.keys_moved = self.keys_moved.max(self.keys_total);
    }
}

/// Runs ring changes one at a time and keeps the progress of the one
/// running.
pub struct RingChanges {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// Held for the whole of a change.
    running: tokio::sync::Mutex<()>,
    progress: std::sync::Mutex<Option<ChangeProgress>>,
}

impl RingChanges {
    /// Ring changes over `store`, counted in `metrics`.
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        RingChanges {
            store,
            metrics,
            running: tokio::sync::Mutex::new(()),
            progress: std::sync::Mutex::new(None),
        }
    }

    /// The change running now, if any.
    pub fn progress(&self) -> Option<ChangeProgress> {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True while a change runs.
    pub fn is_running(&self) -> bool {
        self.running.try_lock().is_err()
    }

    /// Records progress for status and streams it. Intermediate updates
    /// are dropped when the client reads slowly; the plan and the end are
    /// always delivered.
    async fn publish(&self, progress: &ChangeProgress, tx: &mpsc::Sender<ChangeProgress>) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) =
            (progress.phase != Phase::Done).then(|| progress.clone());
        if progress.phase == Phase::Moving {
            let _ = tx.try_send(progress.clone());
        } else {
            let _ = tx.send(progress.clone()).await;
        }
    }

    /// Changes the ring to `members` (the whole target membership), moving
    /// keys as needed, and streams progress to `tx`. With `dry_run` only
    /// the plan is sent.
    ///
    /// A fence waits for a running change (which fails fast on the dead
    /// shard); anything else is refused while one runs.
    ///
    /// Errors: `ChangeInProgress`, `NotReady` before the start-up scan,
    /// `InvalidArgument` for a ring the members cannot make or a joining
    /// shard that is not empty, `ShardUnavailable`, or the state store's.
    pub async fn run(
        &self,
        kind: ChangeKind,
        member: &str,
        members: Vec<Member>,
        dry_run: bool,
        tx: mpsc::Sender<ChangeProgress>,
    ) -> StoreResult<()> {
        let _one_change = if kind == ChangeKind::Fence {
            self.running.lock().await
        } else {
            self.running.try_lock().map_err(|_| {
                let running = self
                    .progress()
                    .map(|p| {
                        format!(
                            "{} {}: {} of {} keys moved",
                            p.kind.name(),
                            p.member,
                            p.keys_moved,
                            p.keys_total
                        )
                    })
                    .unwrap_or_else(|| "another ring change".into());
                StoreError::ChangeInProgress(running)
            })?
        };
        let store = &self.store;
        if !store.is_ready() {
            return Err(StoreError::NotReady(
                "scanning shards to rebuild the key index".into(),
            ));
        }
        let placement = store.placement();
        let from_generation = u64::from(placement.generation());
        if kind == ChangeKind::Fence {
            return self.fence(member, members, from_generation, tx).await;
        }
        let target = placement.ring_of(members.clone())?;
        // Resuming onto the committed membership is not a new generation.
        let to_generation = if records(&target) == records(&placement.ring()) {
            from_generation
        } else {
            from_generation + 1
        };
        let target = target.with_generation(to_generation.into());
        let progress = ChangeProgress::new(kind, member, from_generation, to_generation);
        if dry_run {
            let _ = tx.send(progress.planned(&store.plan(&target))).await;
            return Ok(());
        }

        store.admit_new_shards(&members).await?;
        let plan = store.begin_change(&target).await?;
        let mut progress = progress.planned(&plan);
        self.publish(&progress, &tx).await;
        tracing::info!(
            kind = kind.name(),
            member,
            keys = progress.keys_total,
            "ring change started"
        );

        progress.phase = Phase::Moving;
        let started = Instant::now();
        let pause = store.config().migration_pause;
        for batch in plan.batches(BATCH) {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let (keys, bytes) = store.move_batch(&batch, &target).await?;
            progress.moved(keys, bytes, started.elapsed());
            self.publish(&progress, &tx).await;
        }

        store.commit_ring(&target, false).await?;
        self.metrics.ring_change_done(false);
        progress.done();
        self.publish(&progress, &tx).await;
        tracing::info!(
            kind = kind.name(),
            member,
            generation = progress.to_generation,
            "ring change done"
        );
        Ok(())
    }

    /// Removes a lost member: nothing can be moved off it, so its keys are
    /// dropped and every watch is cut. Keys left misplaced by an interrupted
    /// change are then moved by a resume.
    async fn fence(
        &self,
        member: &str,
        members: Vec<Member>,
        from_generation: u64,
        tx: mpsc::Sender<ChangeProgress>,
    ) -> StoreResult<()> {
        let store = &self.store;
        let target: Ring = store
            .placement()
            .ring_of(members)?
            .with_generation((from_generation + 1).into());
        tracing::warn!(
            member,
            generation = from_generation + 1,
            "fencing a lost member: its keys are dropped"
        );
        store.commit_ring(&target, true).await?;
        self.metrics.ring_change_done(true);
        store.mark_if_misplaced().await?;
        let mut progress = ChangeProgress::new(
            ChangeKind::Fence,
            member,
            from_generation,
            from_generation + 1,
        );
        progress.done();
        let _ = tx.send(progress).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_batches_and_estimates_the_rest() {
        let mut progress = ChangeProgress::new(ChangeKind::Join, "c", 1, 2);
        progress.keys_total = 300;
        progress.moved(100, 1_000, Duration::from_secs(1));
        assert_eq!(progress.keys_moved, 100);
        assert_eq!(progress.bytes_moved, 1_000);
        // 100 keys/s, 200 left.
        assert_eq!(progress.eta, Duration::from_secs(2));
        progress.done();
        assert_eq!(progress.phase, Phase::Done);
        assert_eq!(progress.eta, Duration::ZERO);
        assert_eq!(progress.keys_moved, 300);
    }

    #[test]
    fn a_slow_start_keeps_the_estimate_finite() {
        let mut progress = ChangeProgress::new(ChangeKind::Leave, "b", 3, 4);
        progress.keys_total = 10;
        progress.moved(0, 0, Duration::from_secs(60));
        assert_eq!(progress.eta, Duration::from_secs(10));
    }
}
