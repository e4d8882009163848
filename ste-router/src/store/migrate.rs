//! Moving keys on a ring change, and committing the new ring. The change
//! itself (one at a time, progress; join, leave, fence, resume) is run by
//! `crate::control::ring_change`; this module is what it does to the data.
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

use std::sync::Arc;

use ste_core::envelope::Envelope;
use ste_core::index::IndexEntry;
use ste_core::migration::{Batch, Plan};
use ste_core::ring::{Member, Ring};

use super::index::IndexChange;
use super::{Store, shard_ops};
use crate::error::{StoreError, StoreResult};
use crate::shard::Shard;
use crate::state::MemberRecord;

/// Keys moved per batch (one global revision, two shard transactions).
pub const BATCH: usize = 100;

/// The members of `ring` as the state store records them.
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
    /// The keys that move if the ring becomes `target`: those the index has
    /// on a shard other than their owner in `target`.
    pub fn plan(&self, target: &Ring) -> Plan {
        let names = self
            .placement
            .shards()
            .iter()
            .map(|s| (s.id, s.name.clone()))
            .collect();
        self.index.plan(target, &names)
    }

    /// Adds the shards of `members` the router does not know yet, after
    /// checking that each answers and is empty. A shard added for the check
    /// is forgotten again if the change is refused: a member that never
    /// joined must not be read by lists, Status or Alarm (found by a
    /// newcomer: `ring join` of a killed agent left its dead shard in every
    /// multi-key read).
    ///
    /// Errors: `ShardUnavailable` for a shard that does not answer,
    /// `InvalidArgument` for one that holds keys.
    pub async fn admit_new_shards(&self, members: &[Member]) -> StoreResult<()> {
        let mut added: Vec<Arc<Shard>> = Vec::new();
        let checked: StoreResult<()> = async {
            for member in members {
                if self.placement.knows(member) {
                    continue;
                }
                let (shard, _) = self.placement.shard_for(member)?;
                added.push(shard.clone());
                let scan = self
                    .scan_shard(&shard)
                    .await
                    .map_err(|e| shard.unavailable(e))?;
                if !scan.entries.is_empty() || !scan.foreign.is_empty() {
                    return Err(StoreError::InvalidArgument(format!(
                        "shard {} ({}) is not empty ({} keys): only an empty shard can join",
                        member.name,
                        member.endpoint,
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
        if checked.is_err() {
            for shard in &added {
                self.placement.forget(shard);
            }
        }
        checked
    }

    /// Deletes every key on the shard of `member`, a member this router
    /// fenced and that is about to join again: the fence dropped its keys
    /// from the index and announced their loss (a revision of its own,
    /// every watch cut), so nothing the shard still holds can be served
    /// again, and it would keep the member out (only an empty shard can
    /// join). A member the placement knows is left alone. Returns how many
    /// keys were deleted.
    ///
    /// Errors: `ShardUnavailable` for a shard that does not answer, or an
    /// error of the shard's delete.
    pub async fn clear_fenced_shard(&self, member: &Member) -> StoreResult<usize> {
        if self.placement.knows(member) {
            return Ok(0);
        }
        let (shard, _) = self.placement.shard_for(member)?;
        let cleared = async {
            let scan = self
                .scan_shard(&shard)
                .await
                .map_err(|e| shard.unavailable(e))?;
            let keys = scan.entries.len() + scan.foreign.len();
            if keys > 0 {
                shard
                    .txn(shard_ops::delete_everything())
                    .await
                    .map_err(|e| shard.client_error(e))?;
            }
            Ok(keys)
        }
        .await;
        // The join admits the shard afresh (and checks it is empty).
        self.placement.forget(&shard);
        cleared
    }

    /// Starts moving to `target`: persists it (a restarted router resumes),
    /// places new keys by it, and returns the plan.
    ///
    /// A write admitted under the old ring may still be on its way to a
    /// shard its key is leaving; its key is not in the index yet, so a plan
    /// made before it lands would leave it behind. Every write is placed
    /// (again, if it waited in a shard's queue) under its shard's write
    /// turn and holds the turn until the index update: taking each turn
    /// once waits for those writes, and writes still queued are placed by
    /// the new target when their turn comes.
    ///
    /// Errors: the state store's, when the target cannot be persisted.
    pub async fn begin_change(&self, target: &Ring) -> StoreResult<Plan> {
        let target_records = records(target);
        self.state
            .update(|s| s.target = Some(target_records.clone()))
            .await?;
        self.placement.set_target(target.clone())?;
        for shard in self.placement.shards() {
            drop(shard.write_turn().await);
        }
        Ok(self.plan(target))
    }

    /// If keys sit off their owner in the committed ring (an interrupted
    /// change), makes the ring its own target again so reads look at every
    /// shard and a resume moves them. True if a change is pending now.
    ///
    /// Errors: the state store's.
    pub async fn mark_if_misplaced(&self) -> StoreResult<bool> {
        if self.placement.change_pending() {
            // A change is pending already (it moves every misplaced key).
            return Ok(true);
        }
        let ring = self.placement.ring();
        if self.plan(&ring).is_empty() {
            return Ok(false);
        }
        let records = records(&ring);
        self.state
            .update(|s| s.target = Some(records.clone()))
            .await?;
        self.placement.set_target(ring)?;
        Ok(true)
    }

    /// Makes `target` the ring: in memory, then in the state store. Reads
    /// below the current revision are refused from then on if a member
    /// left (its shard held some of that history). With `lost`, the keys of
    /// members that left are dropped from the index (their shard is gone)
    /// and history is cut, so every watch ends and clients relist.
    ///
    /// Errors: the state store's.
    pub async fn commit_ring(&self, target: &Ring, lost: bool) -> StoreResult<()> {
        let current = self.revisions.current();
        let removed = self.placement.commit(target.clone(), current);
        if !removed.is_empty() {
            // Reads below this revision would need the removed shards.
            self.revisions.raise_read_floor(current);
        }
        if lost {
            for shard in &removed {
                self.index.remove_shard(shard.id);
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
        if lost {
            self.revisions.cut_history().await?;
        }
        Ok(())
    }

    /// Moves one batch of the plan (see the module docs), skipping keys
    /// that are no longer where the plan found them. Returns how many keys
    /// and bytes moved.
    ///
    /// Errors: a shard that is unavailable or answers unexpectedly (it is
    /// then marked for a resync); nothing is half moved in the index.
    pub async fn move_batch(&self, batch: &Batch, target: &Ring) -> StoreResult<(u64, u64)> {
        let (Some(source), Some(destination)) = (
            self.placement.shard_by_id(batch.from),
            self.placement.shard_named(&batch.to),
        ) else {
            return Ok((0, 0));
        };
        let (source, destination) = (&source, &destination);
        source.check_available()?;
        destination.check_available()?;
        let (first, second) = if source.id < destination.id {
            (source, destination)
        } else {
            (destination, source)
        };
        let _a = first.write_turn().await;
        let _b = second.write_turn().await;

        // Only keys still where the plan found them and still headed there.
        let entries: Vec<(Vec<u8>, IndexEntry)> = self
            .index
            .entries_of(batch.keys.iter().map(Vec::as_slice))
            .into_iter()
            .filter(|(k, entry)| {
                let headed = target.locate(k).is_some_and(|m| m.name == destination.name);
                entry.shard == source.id && headed
            })
            .collect();
        if entries.is_empty() {
            return Ok((0, 0));
        }
        let read = shard_ops::guarded(
            Vec::new(),
            entries
                .iter()
                .map(|(k, _)| shard_ops::get(k.clone()))
                .collect(),
        );
        let read = source.txn(read).await.map_err(|e| source.client_error(e))?;
        let mut values = Vec::with_capacity(entries.len());
        for ((key, entry), stored) in entries.iter().zip(shard_ops::got(&read)) {
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
        let put = shard_ops::guarded(
            entries.iter().map(|(k, _)| shard_ops::absent(k)).collect(),
            entries
                .iter()
                .zip(&values)
                .map(|((k, _), v)| shard_ops::put(k.clone(), v.to_vec(), false))
                .collect(),
        );
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
        let destination_revision = shard_ops::revision_of(put.header.as_ref());
        destination.record_revision(revision, destination_revision);

        let delete = shard_ops::delete_unchanged(&entries, false);
        let deleted = source.txn(delete).await;
        // The destination copies are the keys now, whatever happened on the
        // source: repoint the index before reporting anything.
        let bytes: u64 = entries
            .iter()
            .map(|(key, entry)| u64::from(entry.value_size) + key.len() as u64)
            .sum();
        self.index.apply(entries.iter().map(|(key, entry)| {
            IndexChange::Insert(
                key.clone(),
                IndexEntry {
                    shard: destination.id,
                    shard_modified: destination_revision,
                    ..*entry
                },
            )
        }));
        match deleted {
            Ok(response) if response.succeeded => {
                let source_revision = shard_ops::revision_of(response.header.as_ref());
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
