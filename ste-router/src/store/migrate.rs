//! Ring changes: join, leave, and fencing a lost member.
//!
//! A change computes the target ring and moves exactly the keys whose owner
//! differs between the index (where a key is) and the target (where it
//! belongs), in batches, live. One batch, between one source and one
//! destination shard:
//!
//! 1. takes both shards' write locks (in shard-ID order), so no write to
//!    those keys interleaves;
//! 2. reads the keys' stored bytes on the source (checking they are what
//!    the index expects);
//! 3. allocates one global revision G for the batch: a revision without
//!    watch events (the keys did not change for clients);
//! 4. puts the unchanged envelope bytes on the destination, then deletes
//!    them on the source, and records G on both shards' revision maps;
//!    so a read at a revision below G finds the keys on the source and at G
//!    or above on the destination: lists, counts and pinned pagination stay
//!    exact, and revisions of moved keys do not change;
//! 5. repoints the index and completes G.
//!
//! Only one change runs at a time. The target members are written to the
//! state store before any key moves and the new ring only when all have
//! moved; a router restarted in between finds the keys wherever they are
//! (the scan) and resumes the change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ste_core::envelope::Envelope;
use ste_core::index::{IndexEntry, ShardId};
use ste_core::revision::ShardRevision;
use ste_core::ring::{Member, Ring};
use ste_proto::etcd::etcdserverpb::{self as pb, compare, request_op, response_op};
use ste_proto::v1::{MigrationFlow, MigrationPhase, MigrationProgress};
use tokio::sync::mpsc;

use super::Store;
use crate::error::{StoreError, StoreResult};
use crate::shard::Shard;
use crate::state::MemberRecord;

/// Keys moved per batch (one global revision, two shard transactions).
const BATCH: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Join,
    Leave,
    /// A member whose shard was lost: removed without moving anything.
    Fence,
    /// A change found half done at start-up.
    Resume,
}

impl ChangeKind {
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Join => "join",
            ChangeKind::Leave => "leave",
            ChangeKind::Fence => "fence",
            ChangeKind::Resume => "resume",
        }
    }
}

/// Keys to move: (key, from shard, to member name, value size).
struct Plan {
    moves: Vec<(Vec<u8>, ShardId, String, u64)>,
    flows: BTreeMap<(String, String), (u64, u64)>,
}

pub fn records(ring: &Ring) -> Vec<MemberRecord> {
    ring.members()
        .map(|m| MemberRecord {
            name: m.name.clone(),
            endpoint: m.endpoint.clone(),
            weight: m.weight,
        })
        .collect()
}

impl Store {
    /// What is running now, for status.
    pub fn migration_progress(&self) -> Option<MigrationProgress> {
        self.migration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records progress for status and streams it. Intermediate updates
    /// are dropped when the client reads slowly; the plan and the end are
    /// always delivered.
    async fn publish(
        &self,
        progress: &MigrationProgress,
        tx: &mpsc::Sender<Result<MigrationProgress, tonic::Status>>,
    ) {
        let moving = progress.phase == MigrationPhase::Moving as i32;
        *self.migration.lock().unwrap_or_else(|e| e.into_inner()) =
            (progress.phase != MigrationPhase::Done as i32).then(|| progress.clone());
        if moving {
            let _ = tx.try_send(Ok(progress.clone()));
        } else {
            let _ = tx.send(Ok(progress.clone())).await;
        }
    }

    fn plan(&self, target: &Ring) -> Plan {
        let membership = self.membership();
        let name_of: BTreeMap<ShardId, String> = membership
            .shards
            .values()
            .map(|s| (s.id, s.name.clone()))
            .collect();
        let mut plan = Plan {
            moves: Vec::new(),
            flows: BTreeMap::new(),
        };
        let index = self.index();
        for (key, entry) in index.range(&ste_core::keyrange::KeyRange::all()) {
            let Some(owner) = target.locate(key) else {
                continue;
            };
            let from = name_of.get(&entry.shard).cloned().unwrap_or_default();
            if owner.name != from {
                let size = u64::from(entry.value_size) + key.len() as u64;
                let flow = plan.flows.entry((from, owner.name.clone())).or_default();
                flow.0 += 1;
                flow.1 += size;
                plan.moves
                    .push((key.to_vec(), entry.shard, owner.name.clone(), size));
            }
        }
        plan
    }

    /// Changes the ring to `members` (the whole target membership), moving
    /// keys as needed, and streams progress to `tx`.
    pub async fn change_ring(
        self: &Arc<Self>,
        kind: ChangeKind,
        member: &str,
        members: Vec<Member>,
        dry_run: bool,
        tx: mpsc::Sender<Result<MigrationProgress, tonic::Status>>,
    ) -> StoreResult<()> {
        // A fence waits for a running change (which fails fast on the dead
        // shard); anything else is refused while one runs.
        let _one_change = if kind == ChangeKind::Fence {
            self.change_lock.lock().await
        } else {
            self.change_lock.try_lock().map_err(|_| {
                let running = self
                    .migration_progress()
                    .map(|p| {
                        format!(
                            "{} {}: {} of {} keys moved",
                            p.kind, p.member, p.keys_moved, p.keys_total
                        )
                    })
                    .unwrap_or_else(|| "another ring change".into());
                StoreError::ChangeInProgress(running)
            })?
        };
        if !self.is_ready() {
            return Err(StoreError::NotReady(
                "scanning shards to rebuild the key index".into(),
            ));
        }
        if kind == ChangeKind::Fence {
            return self.fence_locked(member, members, tx).await;
        }
        let from_generation = u64::from(self.membership().ring.generation());
        let mut target = Ring::with_members(self.config.vnodes, members.clone())
            .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        // Resuming onto the committed membership is not a new generation.
        let same_members = records(&target) == records(&self.membership().ring);
        let to_generation = if same_members {
            from_generation
        } else {
            from_generation + 1
        };
        target = target.with_generation(to_generation.into());
        let mut progress = MigrationProgress {
            phase: MigrationPhase::Planned as i32,
            kind: kind.name().into(),
            member: member.into(),
            from_generation,
            to_generation,
            ..Default::default()
        };
        if dry_run {
            let plan = self.plan(&target);
            fill_plan(&mut progress, &plan);
            let _ = tx.send(Ok(progress)).await;
            return Ok(());
        }

        // Shards of new members must answer and be empty. A shard added for
        // this check leaves again if the change is refused: a member that
        // never joined must not be read by lists, Status or Alarm (found by
        // a newcomer: `ring join` of a killed agent left its dead shard in
        // every multi-key read).
        let mut new_shards: Vec<Arc<Shard>> = Vec::new();
        let checked: StoreResult<()> = async {
            for m in &members {
                let known = self
                    .membership()
                    .shards
                    .get(&m.name)
                    .is_some_and(|s| s.endpoint == m.endpoint);
                if known {
                    continue;
                }
                let shard = self
                    .membership_mut()
                    .shard_for(m, &self.config.shard_timeouts)?;
                new_shards.push(shard.clone());
                let scan = self
                    .scan_shard(&shard)
                    .await
                    .map_err(|e| shard.unavailable(e))?;
                if !scan.entries.is_empty() || !scan.foreign.is_empty() {
                    return Err(StoreError::InvalidArgument(format!(
                        "shard {} ({}) is not empty ({} keys): only an empty shard can join",
                        m.name,
                        m.endpoint,
                        scan.entries.len() + scan.foreign.len()
                    )));
                }
                shard.reset_revisions(scan.revision);
                shard.set_member_id(scan.member_id);
                shard.mark_healthy();
            }
            Ok(())
        }
        .await;
        if let Err(err) = checked {
            let mut membership = self.membership_mut();
            for shard in &new_shards {
                if membership
                    .shards
                    .get(&shard.name)
                    .is_some_and(|s| Arc::ptr_eq(s, shard))
                {
                    membership.shards.remove(&shard.name);
                }
            }
            return Err(err);
        }

        let target_records = records(&target);
        self.state
            .update(|s| s.target = Some(target_records.clone()))
            .await?;
        self.membership_mut().target = Some(target.clone());
        // New keys are placed by the target from now on, but a write that
        // was admitted under the old ring may still be on its way to a
        // shard the key is leaving; its key is not in the index yet, so a
        // plan made now would leave it behind. Every write holds its shard's
        // write lock from the placement check to the index update: taking
        // each lock once waits for those writes.
        let shards: Vec<Arc<Shard>> = self.membership().shards.values().cloned().collect();
        for shard in shards {
            drop(shard.write_lock.lock().await);
        }
        let plan = self.plan(&target);
        fill_plan(&mut progress, &plan);
        self.publish(&progress, &tx).await;
        tracing::info!(
            kind = kind.name(),
            member,
            keys = progress.keys_total,
            "ring change started"
        );

        progress.phase = MigrationPhase::Moving as i32;
        let started = Instant::now();
        let mut batches: BTreeMap<(ShardId, String), Vec<Vec<u8>>> = BTreeMap::new();
        for (key, from, to, _) in plan.moves {
            batches.entry((from, to)).or_default().push(key);
        }
        for ((from, to), keys) in batches {
            let (Some(source), Some(destination)) = (
                self.shard_by_id(from),
                self.membership().shards.get(&to).cloned(),
            ) else {
                continue;
            };
            for chunk in keys.chunks(BATCH) {
                if !self.config.migration_pause.is_zero() {
                    tokio::time::sleep(self.config.migration_pause).await;
                }
                let (moved, bytes) = self
                    .move_batch(&source, &destination, chunk, &target)
                    .await?;
                progress.keys_moved += moved;
                progress.bytes_moved += bytes;
                let rate = progress.keys_moved as f64 / started.elapsed().as_secs_f64().max(0.001);
                progress.eta_seconds = (progress.keys_total.saturating_sub(progress.keys_moved))
                    as f64
                    / rate.max(1.0);
                self.publish(&progress, &tx).await;
            }
        }

        self.commit(&target, kind).await?;
        self.metrics.ring_change_done(false);
        progress.phase = MigrationPhase::Done as i32;
        progress.eta_seconds = 0.0;
        progress.keys_moved = progress.keys_moved.max(progress.keys_total);
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
    async fn fence_locked(
        self: &Arc<Self>,
        member: &str,
        members: Vec<Member>,
        tx: mpsc::Sender<Result<MigrationProgress, tonic::Status>>,
    ) -> StoreResult<()> {
        let from_generation = u64::from(self.membership().ring.generation());
        let target = Ring::with_members(self.config.vnodes, members)
            .map_err(|e| StoreError::InvalidArgument(e.to_string()))?
            .with_generation((from_generation + 1).into());
        tracing::warn!(
            member,
            generation = from_generation + 1,
            "fencing a lost member: its keys are dropped"
        );
        self.commit(&target, ChangeKind::Fence).await?;
        self.metrics.ring_change_done(true);
        self.mark_if_misplaced().await?;
        let _ = tx
            .send(Ok(MigrationProgress {
                phase: MigrationPhase::Done as i32,
                kind: ChangeKind::Fence.name().into(),
                member: member.into(),
                from_generation,
                to_generation: from_generation + 1,
                ..Default::default()
            }))
            .await;
        Ok(())
    }

    /// If keys sit off their owner in the committed ring (an interrupted
    /// change), makes the ring its own target again so reads look at every
    /// shard and a resume moves them.
    pub async fn mark_if_misplaced(&self) -> StoreResult<bool> {
        if self.membership().target.is_some() {
            // A change is pending already (it moves every misplaced key).
            return Ok(true);
        }
        let ring = self.membership().ring.clone();
        if self.plan(&ring).moves.is_empty() {
            return Ok(false);
        }
        let records = records(&ring);
        self.state
            .update(|s| s.target = Some(records.clone()))
            .await?;
        self.membership_mut().target = Some(ring);
        Ok(true)
    }

    /// Makes `target` the ring: in memory, then in the state store.
    async fn commit(&self, target: &Ring, kind: ChangeKind) -> StoreResult<()> {
        let current = self.revisions.current();
        let removed: Vec<Arc<Shard>> = {
            let mut membership = self.membership_mut();
            membership.ring = target.clone();
            membership.target = None;
            membership.stable_since = current;
            let gone: Vec<String> = membership
                .shards
                .keys()
                .filter(|name| target.member(name).is_none())
                .cloned()
                .collect();
            gone.iter()
                .filter_map(|name| membership.shards.remove(name))
                .collect()
        };
        if !removed.is_empty() {
            // Reads below this revision would need the removed shards.
            self.revisions.raise_read_floor(current);
        }
        if kind == ChangeKind::Fence {
            let mut index = self.index_mut();
            for shard in &removed {
                index.remove_shard(shard.id);
            }
        }
        let records = records(target);
        let generation = u64::from(target.generation());
        self.state
            .update(|s| {
                s.members = records.clone();
                s.generation = generation;
                s.target = None;
            })
            .await?;
        if kind == ChangeKind::Fence {
            self.revisions.cut_history().await?;
        }
        Ok(())
    }

    /// Moves up to one batch of keys from `source` to `destination`.
    /// Returns how many keys and bytes moved.
    async fn move_batch(
        &self,
        source: &Arc<Shard>,
        destination: &Arc<Shard>,
        keys: &[Vec<u8>],
        target: &Ring,
    ) -> StoreResult<(u64, u64)> {
        source.check_available()?;
        destination.check_available()?;
        let (first, second) = if source.id < destination.id {
            (source, destination)
        } else {
            (destination, source)
        };
        let _a = first.write_lock.lock().await;
        let _b = second.write_lock.lock().await;

        // Only keys still where the plan found them and still headed there.
        let entries: Vec<(Vec<u8>, IndexEntry)> = {
            let index = self.index();
            keys.iter()
                .filter_map(|k| {
                    let entry = *index.get(k)?;
                    let headed = target.locate(k).is_some_and(|m| m.name == destination.name);
                    (entry.shard == source.id && headed).then(|| (k.clone(), entry))
                })
                .collect()
        };
        if entries.is_empty() {
            return Ok((0, 0));
        }
        let read = pb::TxnRequest {
            compare: Vec::new(),
            success: entries
                .iter()
                .map(|(k, _)| pb::RequestOp {
                    request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                        key: k.clone(),
                        ..Default::default()
                    })),
                })
                .collect(),
            failure: Vec::new(),
        };
        let read = source.txn(read).await.map_err(|e| source.client_error(e))?;
        let mut values = Vec::with_capacity(entries.len());
        for ((key, entry), response) in entries.iter().zip(&read.responses) {
            let stored = match &response.response {
                Some(response_op::Response::ResponseRange(range)) => range.kvs.first().cloned(),
                _ => None,
            };
            let Some(stored) = stored.filter(|kv| kv.mod_revision == entry.shard_modified.0) else {
                source.mark_needs_resync(
                    "a key changed on the shard outside the router during a migration",
                );
                return Err(source.unavailable(format!(
                    "key {:?} is not as the router wrote it; resynchronising",
                    String::from_utf8_lossy(key)
                )));
            };
            if Envelope::decode(&stored.value).is_err() {
                return Err(StoreError::Internal(format!(
                    "key {:?} on {} has no STE envelope",
                    String::from_utf8_lossy(key),
                    source.name
                )));
            }
            values.push(stored.value);
        }

        let revision = self.revisions.allocate().await?;
        let put = pb::TxnRequest {
            compare: entries.iter().map(|(k, _)| mod_is(k, 0)).collect(),
            success: entries
                .iter()
                .zip(&values)
                .map(|((k, _), v)| pb::RequestOp {
                    request: Some(request_op::Request::RequestPut(pb::PutRequest {
                        key: k.clone(),
                        value: v.clone(),
                        ..Default::default()
                    })),
                })
                .collect(),
            failure: Vec::new(),
        };
        let put = match destination.txn(put).await {
            Ok(response) if response.succeeded => response,
            Ok(_) => {
                self.revisions.complete(revision, Vec::new());
                destination.mark_needs_resync("a migration found keys already on the destination");
                return Err(destination.unavailable(
                    "holds keys the router did not put there; resynchronising".into(),
                ));
            }
            Err(error) => {
                self.revisions.complete(revision, Vec::new());
                if error.is_uncertain() {
                    destination.mark_needs_resync("the outcome of a migration batch is unknown");
                }
                return Err(destination.client_error(error));
            }
        };
        let destination_revision =
            ShardRevision(put.header.map(|h| h.revision).unwrap_or_default());
        destination.record_revision(revision, destination_revision);

        let delete = pb::TxnRequest {
            compare: entries
                .iter()
                .map(|(k, e)| mod_is(k, e.shard_modified.0))
                .collect(),
            success: entries
                .iter()
                .map(|(k, _)| pb::RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        pb::DeleteRangeRequest {
                            key: k.clone(),
                            ..Default::default()
                        },
                    )),
                })
                .collect(),
            failure: Vec::new(),
        };
        let deleted = source.txn(delete).await;
        // The destination copies are the keys now, whatever happened on the
        // source: repoint the index before reporting anything.
        let mut bytes = 0u64;
        {
            let mut index = self.index_mut();
            for (key, entry) in &entries {
                bytes += u64::from(entry.value_size) + key.len() as u64;
                index.insert(
                    key.clone(),
                    IndexEntry {
                        shard: destination.id,
                        shard_modified: destination_revision,
                        ..*entry
                    },
                );
            }
        }
        match deleted {
            Ok(response) if response.succeeded => {
                let source_revision =
                    ShardRevision(response.header.map(|h| h.revision).unwrap_or_default());
                source.record_revision(revision, source_revision);
                self.revisions.complete(revision, Vec::new());
                Ok((entries.len() as u64, bytes))
            }
            other => {
                // Copies left on the source are found as misplaced keys by the
                // resync and deleted then.
                self.revisions.complete(revision, Vec::new());
                source.mark_needs_resync("a migration could not delete moved keys from the source");
                let reason = match other {
                    Err(e) => crate::shard::describe(&e.status),
                    Ok(_) => "keys changed on the source during a migration".into(),
                };
                Err(source.unavailable(reason))
            }
        }
    }
}

fn mod_is(key: &[u8], revision: i64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
        range_end: Vec::new(),
    }
}

fn fill_plan(progress: &mut MigrationProgress, plan: &Plan) {
    progress.keys_total = plan.moves.len() as u64;
    progress.bytes_total = plan.moves.iter().map(|m| m.3).sum();
    progress.flows = plan
        .flows
        .iter()
        .map(|((from, to), (keys, bytes))| MigrationFlow {
            from: from.clone(),
            to: to.clone(),
            keys: *keys,
            bytes: *bytes,
        })
        .collect();
}
