//! Writes. Every write to a key:
//!
//! 1. takes the owning shard's write lock (writes reach a shard in global
//!    revision order, and no other write to the key can interleave);
//! 2. evaluates the client's compares against the key index;
//! 3. allocates the next global revision only if the write will apply;
//! 4. sends the shard a Txn guarded by the shard's own mod revision of the
//!    key, putting the value inside an envelope with the global revisions;
//! 5. records global → shard revision, updates the index, completes the
//!    revision with its watch event, and releases the lock;
//! 6. waits until the revision is current, so the client can read it back.
//!
//! If the shard's answer is lost, the outcome is resolved by reading the
//! key back; if that fails too, the revision is abandoned (a gap), the shard
//! is marked for a resync and watches are cut when it returns — never a
//! silently missing event.

use std::sync::Arc;
use std::time::Duration;

use ste_core::envelope::Envelope;
use ste_core::index::IndexEntry;
use ste_core::revision::{GlobalRevision, ShardRevision};
use ste_proto::etcd::etcdserverpb as pb;
use ste_proto::etcd::mvccpb;

use super::Store;
use super::compare::compare_holds;
use super::convert::{client_kv, delete_event, deleted_kv, put_event};
use super::event_feed::StoredEvent;
use super::shard_ops;
use crate::error::{StoreError, StoreResult};
use crate::shard::Shard;

/// What a one-key write does.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// etcd's PutRequest (validated by the API layer).
    Put {
        /// The client's value.
        value: Vec<u8>,
        /// The lease to attach, 0 for none.
        lease: i64,
        /// Keep the current value (etcd's `ignore_value`).
        ignore_value: bool,
        /// Keep the current lease (etcd's `ignore_lease`).
        ignore_lease: bool,
    },
    /// Delete the key.
    Delete,
}

/// A write to one key, applied only if every compare holds.
#[derive(Debug, Clone)]
pub struct KeyWrite {
    /// The key written.
    pub key: Vec<u8>,
    /// The write.
    pub op: WriteOp,
    /// The client's compares, all on `key` (none: unconditional).
    pub compares: Vec<pb::Compare>,
}

/// The longest a write's outcome is looked for after its answer was lost.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// What reading a key back after a lost answer told.
enum Resolution {
    Applied {
        shard_revision: ShardRevision,
        prev: Option<mvccpb::KeyValue>,
    },
    NotApplied,
    Unknown,
}

/// How a one-key write ended (errors aside).
#[derive(Debug)]
pub enum WriteOutcome {
    /// Written at `revision`, visible to reads now.
    Applied {
        /// The write's global revision.
        revision: GlobalRevision,
        /// The version it replaced or deleted, as clients see it.
        prev: Option<mvccpb::KeyValue>,
    },
    /// A compare did not hold; nothing was written.
    CompareFailed,
    /// The compares held but the key to delete does not exist: like etcd,
    /// no revision is used.
    NothingDeleted,
}

impl Store {
    /// Applies one conditional write (Put, Txn branch, single-key delete).
    ///
    /// The write runs in its own task: once a revision is allocated it must
    /// complete (or be abandoned) even if the client goes away, or every
    /// later revision would wait for it forever.
    pub async fn write_key(self: &Arc<Self>, write: KeyWrite) -> StoreResult<WriteOutcome> {
        let store = self.clone();
        tokio::spawn(async move { store.write_key_detached(write).await })
            .await
            .map_err(|e| StoreError::Internal(format!("write task failed: {e}")))?
    }

    async fn write_key_detached(&self, write: KeyWrite) -> StoreResult<WriteOutcome> {
        // The request was validated by the API layer (etcd's checks);
        // what is left depends on the store's state.
        self.check_ready()?;
        if let WriteOp::Put { lease, .. } = &write.op
            && *lease != 0
            && !self.leases.exists(*lease)
        {
            return Err(StoreError::LeaseNotFound);
        }
        let outcome = loop {
            let shard = self.placement.holder(&write.key, &self.index)?;
            shard.check_available()?;
            let _ordered = shard.write_turn().await;
            // A ring change may have moved the key while we waited.
            if self.placement.holder(&write.key, &self.index)?.id != shard.id {
                continue;
            }
            shard.check_available()?;
            break self.write_locked(&shard, write).await?;
        };
        if let WriteOutcome::Applied { revision, .. } = &outcome {
            self.revisions.wait_visible(*revision).await;
        }
        Ok(outcome)
    }

    async fn write_locked(&self, shard: &Arc<Shard>, write: KeyWrite) -> StoreResult<WriteOutcome> {
        let entry = self.index.get(&write.key);
        let needs_value = write
            .compares
            .iter()
            .any(|c| c.target() == pb::compare::CompareTarget::Value)
            || matches!(
                write.op,
                WriteOp::Put {
                    ignore_value: true,
                    ..
                }
            );
        let current_value = if needs_value && entry.is_some() {
            self.read_value_locked(shard, &write.key).await?
        } else {
            None
        };
        if !write
            .compares
            .iter()
            .all(|c| compare_holds(c, entry.as_ref(), current_value.as_deref()))
        {
            return Ok(WriteOutcome::CompareFailed);
        }
        let (shard_op, new_lease, payload) = match &write.op {
            WriteOp::Delete if entry.is_none() => return Ok(WriteOutcome::NothingDeleted),
            WriteOp::Delete => (None, 0, Vec::new()),
            WriteOp::Put {
                value,
                lease,
                ignore_value,
                ignore_lease,
            } => {
                let payload = if *ignore_value {
                    current_value.clone().ok_or(StoreError::KeyNotFound)?
                } else {
                    value.clone()
                };
                let lease = if *ignore_lease {
                    entry
                        .as_ref()
                        .map(|e| e.lease)
                        .ok_or(StoreError::KeyNotFound)?
                } else {
                    *lease
                };
                (Some(()), lease, payload)
            }
        };

        let revision = self.revisions.allocate().await?;
        let create = entry.as_ref().map(|e| e.create).unwrap_or(revision);
        let version = entry.as_ref().map(|e| e.version + 1).unwrap_or(1);
        let op = match shard_op {
            Some(()) => {
                let envelope = Envelope {
                    create,
                    modified: revision,
                    version,
                    lease: new_lease,
                    payload: &payload,
                }
                .encode();
                shard_ops::put(write.key.clone(), envelope, true)
            }
            None => shard_ops::delete(write.key.clone(), true),
        };
        let shard_modified = entry.map(|e| e.shard_modified).unwrap_or_default();
        let request = shard_ops::guarded(
            vec![shard_ops::unchanged(&write.key, shard_modified)],
            vec![op],
        );
        let applied = match shard.txn(request).await {
            Ok(response) if response.succeeded => {
                let shard_revision = shard_ops::revision_of(response.header.as_ref());
                Some((
                    shard_revision,
                    shard_ops::prev_kvs(&response).into_iter().next(),
                ))
            }
            Ok(_) => {
                self.revisions.complete(revision, Vec::new());
                shard.mark_needs_resync(
                    "a key changed on the shard without going through the router",
                );
                return Err(shard.unavailable(format!(
                    "key {:?} changed on the shard outside the router; resynchronising",
                    String::from_utf8_lossy(&write.key)
                )));
            }
            Err(error) if error.is_uncertain() => {
                let is_delete = matches!(write.op, WriteOp::Delete);
                match self
                    .resolve_uncertain(shard, &write.key, revision, is_delete)
                    .await
                {
                    Resolution::Applied {
                        shard_revision,
                        prev,
                    } => Some((shard_revision, prev)),
                    Resolution::NotApplied => {
                        self.revisions.complete(revision, Vec::new());
                        return Err(shard.client_error(error));
                    }
                    Resolution::Unknown => {
                        self.revisions.complete(revision, Vec::new());
                        shard.mark_needs_resync("the outcome of a write is unknown");
                        return Err(shard.client_error(error));
                    }
                }
            }
            Err(error) => {
                // etcd answered (e.g. NOSPACE): nothing was applied.
                self.revisions.complete(revision, Vec::new());
                return Err(shard.client_error(error));
            }
        };
        let Some((shard_revision, stored_prev)) = applied else {
            self.revisions.complete(revision, Vec::new());
            return Err(StoreError::Internal("write not applied".into()));
        };
        let prev = match stored_prev {
            Some(stored) => client_kv(stored, &shard.name).ok(),
            None => None,
        };
        shard.record_revision(revision, shard_revision);
        let event = match &write.op {
            WriteOp::Put { .. } => {
                let kv = mvccpb::KeyValue {
                    key: write.key.clone(),
                    create_revision: create.0,
                    mod_revision: revision.0,
                    version,
                    value: payload.clone(),
                    lease: new_lease,
                };
                self.index.insert(
                    write.key.clone(),
                    IndexEntry {
                        shard: shard.id,
                        create,
                        modified: revision,
                        version,
                        lease: new_lease,
                        value_size: payload.len() as u32,
                        shard_modified: shard_revision,
                    },
                );
                let old_lease = entry.as_ref().map(|e| e.lease).unwrap_or(0);
                if old_lease != new_lease {
                    self.leases.detach(old_lease, &write.key);
                }
                self.leases.attach(new_lease, &write.key);
                put_event(kv, prev.clone())
            }
            WriteOp::Delete => {
                self.index.remove(&write.key);
                if let Some(e) = &entry {
                    self.leases.detach(e.lease, &write.key);
                }
                delete_event(deleted_kv(write.key.clone(), revision), prev.clone())
            }
        };
        self.revisions
            .complete(revision, vec![StoredEvent { revision, event }]);
        Ok(WriteOutcome::Applied { revision, prev })
    }

    /// The shard's latest value of `key` (payload only), under the write lock.
    async fn read_value_locked(&self, shard: &Shard, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let response = shard
            .range(shard_ops::get_at(key, ShardRevision(0)))
            .await
            .map_err(|e| shard.client_error(e))?;
        match response.kvs.into_iter().next() {
            Some(stored) => Ok(Some(client_kv(stored, &shard.name)?.value)),
            None => Ok(None),
        }
    }

    /// After a lost answer: did the write with `revision` reach the shard?
    /// Under the write lock nothing else wrote to the shard since, so the
    /// key's current state tells, and the version before it is the one at
    /// the shard revision just below.
    ///
    /// The shard just failed to answer, and every later revision waits for
    /// this one: the read-back gets [`RESOLVE_TIMEOUT`], not another full
    /// request timeout (a hung shard would otherwise hold all writes for
    /// twice `--shard-timeout`). Unanswered, the outcome stays unknown and
    /// the shard is resynchronised when it answers again.
    async fn resolve_uncertain(
        &self,
        shard: &Shard,
        key: &[u8],
        revision: GlobalRevision,
        is_delete: bool,
    ) -> Resolution {
        let bound = self.config.shard_timeouts.request.min(RESOLVE_TIMEOUT);
        let read = |at: i64| {
            let call = shard.range(shard_ops::get_at(key, ShardRevision(at)));
            async move {
                match tokio::time::timeout(bound, call).await {
                    Ok(Ok(response)) => Some(response),
                    _ => None,
                }
            }
        };
        let Some(now) = read(0).await else {
            return Resolution::Unknown;
        };
        let applied_at = match (now.kvs.first(), is_delete) {
            (Some(kv), false) => Envelope::decode(&kv.value)
                .ok()
                .filter(|e| e.modified == revision)
                .map(|_| kv.mod_revision),
            (None, true) => now.header.as_ref().map(|h| h.revision),
            _ => None,
        };
        let Some(applied_at) = applied_at else {
            return Resolution::NotApplied;
        };
        let Some(before) = read(applied_at - 1).await else {
            return Resolution::Unknown;
        };
        Resolution::Applied {
            shard_revision: ShardRevision(applied_at),
            prev: before.kvs.into_iter().next(),
        }
    }
}
