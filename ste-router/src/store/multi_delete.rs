//! Deletes of several keys at once — a ranged DeleteRange (`etcdctl del
//! --prefix`), a lease revoke or expiry — applied at one global revision on
//! every shard or not at all, as etcd applies them in one Raft entry.
//!
//! The keys of one shard go out in Txns of at most `--shard-max-txn-ops`
//! deletes each (etcd refuses larger Txns with "too many operations in txn
//! request"), one shard's chunks one after another, the shards side by side.
//! No client can see a part of the delete while it runs: every shard's write
//! lock is held throughout, reads are served at the shard revisions the
//! router recorded for the current global revision (which do not include
//! the chunks yet), and the index, the revision maps and the watch events
//! change only once every chunk has been applied.
//!
//! If a chunk fails, the chunks already applied are undone: the deleted
//! envelopes are put back byte for byte (same create/mod revisions and
//! version), guarded by "the key is still absent", and the index learns
//! their new shard revisions. The revision is abandoned (a gap), the client
//! is told that nothing was deleted, and watchers see nothing. Only where a
//! chunk's outcome is unknown (the shard did not answer) or the undo itself
//! fails is the shard resynchronised, which cuts every watch so that clients
//! relist — never a silently partial delete.

use std::sync::Arc;

use futures_util::future::join_all;
use ste_core::index::IndexEntry;
use ste_core::keyrange::KeyRange;
use ste_core::revision::{GlobalRevision, ShardRevision};
use ste_proto::etcd::mvccpb;
use tonic::Status;

use super::convert::{client_kv, delete_event, deleted_kv};
use super::event_feed::StoredEvent;
use super::index::IndexChange;
use super::{Store, shard_ops};
use crate::error::{StoreError, StoreResult};
use crate::shard::{Shard, WriteTurn};

/// Which keys a multi-key delete removes.
#[derive(Debug, Clone)]
pub enum Victims {
    /// Every live key in the range (DeleteRange with a `range_end`).
    Range(KeyRange),
    /// Every key attached to this lease (LeaseRevoke, lease expiry); the
    /// lease itself is dropped from memory once its keys are gone.
    Lease(i64),
}

/// What a multi-key delete did.
#[derive(Debug, Default)]
pub struct Deleted {
    /// The revision of the delete; `None` when there was nothing to delete
    /// (like etcd, no revision is used then).
    pub revision: Option<GlobalRevision>,
    /// The deleted keys' last versions, in key order.
    pub prev_kvs: Vec<mvccpb::KeyValue>,
}

impl Deleted {
    /// How many keys were deleted.
    pub fn count(&self) -> i64 {
        self.prev_kvs.len() as i64
    }
}

/// A key to delete with its index entry.
type Victim = (Vec<u8>, IndexEntry);

/// One applied chunk of a shard's deletes.
struct AppliedChunk {
    keys: Vec<Victim>,
    shard_revision: ShardRevision,
    stored_prevs: Vec<mvccpb::KeyValue>,
}

/// How one shard's part of the delete went.
struct ShardPart {
    shard: Arc<Shard>,
    applied: Vec<AppliedChunk>,
    failure: Option<ChunkFailure>,
}

/// Why a chunk was not applied.
struct ChunkFailure {
    error: StoreError,
    /// The shard did not answer: the chunk may still be applied later.
    uncertain: bool,
}

impl Store {
    /// Deletes `victims` at one revision, or nothing (see the module docs).
    ///
    /// Runs in its own task: once a revision is allocated it must be
    /// completed or abandoned even if the client goes away.
    pub async fn delete_keys(self: &Arc<Self>, victims: Victims) -> StoreResult<Deleted> {
        let store = self.clone();
        tokio::spawn(async move { store.delete_keys_detached(victims).await })
            .await
            .map_err(|e| StoreError::Internal(format!("delete task failed: {e}")))?
    }

    async fn delete_keys_detached(&self, victims: Victims) -> StoreResult<Deleted> {
        self.check_ready()?;
        if let Victims::Lease(id) = victims
            && !self.leases.exists(id)
        {
            return Err(StoreError::LeaseNotFound);
        }
        let (shards, guards) = self.lock_all_shards().await?;
        let mut doomed: Vec<Victim> = match &victims {
            Victims::Range(range) => self.index.entries(range),
            Victims::Lease(id) => {
                let keys = self.leases.keys(*id).ok_or(StoreError::LeaseNotFound)?;
                self.index.entries_of(keys.iter().map(Vec::as_slice))
            }
        };
        doomed.sort_by(|a, b| a.0.cmp(&b.0));
        if doomed.is_empty() {
            if let Victims::Lease(id) = victims {
                self.leases.remove(id);
            }
            return Ok(Deleted::default());
        }

        let revision = self.revisions.allocate().await?;
        let chunk = self.config.shard_max_txn_ops.max(1);
        let parts = shards.iter().filter_map(|shard| {
            let keys: Vec<Victim> = doomed
                .iter()
                .filter(|(_, e)| e.shard == shard.id)
                .cloned()
                .collect();
            (!keys.is_empty()).then(|| delete_on_shard(shard.clone(), keys, chunk))
        });
        let parts = join_all(parts).await;

        if parts.iter().any(|p| p.failure.is_some()) {
            return Err(self
                .undo(parts, revision, doomed.len(), chunk, guards)
                .await);
        }

        let mut events = Vec::with_capacity(doomed.len());
        let mut prevs = Vec::with_capacity(doomed.len());
        let mut removed = Vec::with_capacity(doomed.len());
        {
            for part in parts {
                if let Some(last) = part.applied.last() {
                    part.shard.record_revision(revision, last.shard_revision);
                }
                for applied in part.applied {
                    for ((key, entry), stored) in applied.keys.into_iter().zip(applied.stored_prevs)
                    {
                        removed.push(IndexChange::Remove(key.clone()));
                        self.leases.detach(entry.lease, &key);
                        let prev = client_kv(stored, &part.shard.name).ok();
                        if let Some(prev) = &prev {
                            prevs.push(prev.clone());
                        }
                        events.push(StoredEvent {
                            revision,
                            event: delete_event(deleted_kv(key, revision), prev),
                        });
                    }
                }
            }
        }
        self.index.apply(removed);
        if let Victims::Lease(id) = victims {
            self.leases.remove(id);
        }
        events.sort_by(|a, b| a.key().cmp(b.key()));
        self.revisions.complete(revision, events);
        drop(guards);
        self.revisions.wait_visible(revision).await;
        prevs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Deleted {
            revision: Some(revision),
            prev_kvs: prevs,
        })
    }

    /// After a failed chunk: undoes the chunks applied, abandons
    /// `revision`, releases the locks and says what happened.
    async fn undo(
        &self,
        mut parts: Vec<ShardPart>,
        revision: GlobalRevision,
        keys: usize,
        chunk: usize,
        guards: Vec<WriteTurn>,
    ) -> StoreError {
        let partly_applied = parts.iter().any(|p| !p.applied.is_empty());
        let mut undone_everywhere = true;
        let mut first_failure = None;
        for part in &mut parts {
            if let Some(failure) = part.failure.take() {
                if failure.uncertain {
                    part.shard
                        .mark_needs_resync("the outcome of a multi-key delete is unknown");
                    undone_everywhere = false;
                }
                first_failure.get_or_insert(failure.error);
            }
            for applied in &part.applied {
                if !self.undo_chunk(&part.shard, applied, chunk).await {
                    undone_everywhere = false;
                }
            }
        }
        self.revisions.complete(revision, Vec::new());
        drop(guards);
        let status = Status::from(
            first_failure.unwrap_or_else(|| StoreError::Internal("a chunk failed".into())),
        );
        let outcome = match (undone_everywhere, partly_applied) {
            (true, true) => "the part already applied was undone; nothing was deleted",
            (true, false) => "nothing was deleted",
            (false, _) => {
                "its outcome on a shard is unknown, so that shard is being resynchronised \
                 (watches are cut and clients relist)"
            }
        };
        tracing::warn!(%revision, keys, error = %status.message(), outcome, "multi-key delete failed");
        StoreError::Shard(Status::new(
            status.code(),
            format!(
                "{} (ste-router: the delete of {keys} keys failed: {outcome})",
                status.message()
            ),
        ))
    }

    /// Takes every shard's write lock, in a fixed order (by id) so that
    /// concurrent multi-key deletes and migrations cannot deadlock. If the
    /// set of shards changed while waiting (a ring change), starts over.
    pub(super) async fn lock_all_shards(&self) -> StoreResult<(Vec<Arc<Shard>>, Vec<WriteTurn>)> {
        loop {
            let mut ordered = self.placement.shards();
            if ordered.is_empty() {
                return Err(StoreError::NoMembers);
            }
            for shard in &ordered {
                shard.check_available()?;
            }
            ordered.sort_by_key(|s| s.id);
            let mut guards = Vec::with_capacity(ordered.len());
            for shard in &ordered {
                guards.push(shard.write_turn().await);
            }
            let mut now: Vec<_> = self.placement.shards().iter().map(|s| s.id).collect();
            now.sort();
            if now == ordered.iter().map(|s| s.id).collect::<Vec<_>>() {
                for shard in &ordered {
                    shard.check_available()?;
                }
                return Ok((ordered, guards));
            }
        }
    }

    /// Puts back the envelopes one applied chunk deleted, byte for byte,
    /// each only if its key is still absent. Updates the index's shard
    /// revisions (the global metadata is unchanged). False if the undo
    /// failed: the shard is then marked for a resync.
    async fn undo_chunk(&self, shard: &Shard, applied: &AppliedChunk, chunk: usize) -> bool {
        for (keys, stored) in applied
            .keys
            .chunks(chunk)
            .zip(applied.stored_prevs.chunks(chunk))
        {
            let request = shard_ops::guarded(
                keys.iter().map(|(k, _)| shard_ops::absent(k)).collect(),
                stored
                    .iter()
                    .map(|kv| shard_ops::put(kv.key.clone(), kv.value.to_vec(), true))
                    .collect(),
            );
            match shard.txn(request).await {
                Ok(response) if response.succeeded => {
                    let restored_at = shard_ops::revision_of(response.header.as_ref());
                    self.index.apply(keys.iter().map(|(key, entry)| {
                        IndexChange::Insert(
                            key.clone(),
                            IndexEntry {
                                shard_modified: restored_at,
                                ..*entry
                            },
                        )
                    }));
                }
                outcome => {
                    let why = match outcome {
                        Ok(_) => "a key reappeared on the shard outside the router".to_owned(),
                        Err(error) => crate::shard::describe(&error.status),
                    };
                    tracing::error!(member = %shard.name, error = %why, "undoing a failed multi-key delete failed");
                    shard.mark_needs_resync("a failed multi-key delete could not be undone");
                    return false;
                }
            }
        }
        true
    }
}

/// Deletes `keys` from one shard in chunks of at most `chunk` deletes, each
/// guarded by the shard mod revisions the index holds. Stops at the first
/// chunk that fails.
async fn delete_on_shard(shard: Arc<Shard>, keys: Vec<Victim>, chunk: usize) -> ShardPart {
    let mut part = ShardPart {
        shard,
        applied: Vec::new(),
        failure: None,
    };
    for batch in keys.chunks(chunk) {
        let request = shard_ops::delete_unchanged(batch, true);
        match part.shard.txn(request).await {
            Ok(response) if response.succeeded => part.applied.push(AppliedChunk {
                keys: batch.to_vec(),
                shard_revision: shard_ops::revision_of(response.header.as_ref()),
                stored_prevs: shard_ops::prev_kvs(&response),
            }),
            Ok(_) => {
                part.shard.mark_needs_resync(
                    "keys changed on the shard without going through the router",
                );
                part.failure = Some(ChunkFailure {
                    error: part.shard.unavailable(
                        "keys changed on the shard outside the router; resynchronising".into(),
                    ),
                    uncertain: false,
                });
                break;
            }
            Err(error) => {
                let uncertain = error.is_uncertain();
                part.failure = Some(ChunkFailure {
                    error: part.shard.client_error(error),
                    uncertain,
                });
                break;
            }
        }
    }
    part
}
