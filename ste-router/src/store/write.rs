//! Writes, committed per shard in groups. Every write to a key:
//!
//! 1. joins the queue of the shard that holds the key, and waits until it
//!    is answered or gets the shard's write turn; whoever gets the turn
//!    takes the queue's head as one batch (a key at most once, bounded by
//!    the shard's `--max-txn-ops` and `--max-request-bytes`) — so while one
//!    Txn is in flight the next one fills, and a busy shard gets many
//!    writes per round trip instead of one;
//! 2. under the turn, evaluates each write's compares against the key
//!    index (writes whose compares fail, or deletes of absent keys, are
//!    answered at once and use no revision);
//! 3. allocates consecutive global revisions for the rest, one each;
//! 4. sends the shard one Txn: every key guarded by the shard's own mod
//!    revision of it, every value inside an envelope with its global
//!    revisions;
//! 5. records the batch's global revisions → its one shard revision,
//!    updates the index, completes all the revisions at once with their
//!    watch events (so the current revision never falls inside a batch),
//!    and releases the turn;
//! 6. each writer waits until its revision is current, so the client can
//!    read it back.
//!
//! A read at a global revision inside a batch reads the batch's shard
//! revision and takes the batch's later writes back out (see
//! `store/read.rs`).
//!
//! If a guard fails (a key changed on the shard behind the router), the
//! batch is abandoned and its writes are sent again one by one, so only
//! the changed key fails and its shard is resynchronised. If the shard's
//! answer is lost, the outcome is resolved by reading the keys back; if
//! that fails too, the revisions are abandoned (gaps), the shard is marked
//! for a resync and watches are cut when it returns — never a silently
//! missing event.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use ste_core::envelope::Envelope;
use ste_core::index::IndexEntry;
use ste_core::revision::{GlobalRevision, ShardRevision};
use ste_proto::etcd::etcdserverpb as pb;
use ste_proto::etcd::mvccpb;
use tokio::sync::oneshot;
use tonic::Code;

use super::Store;
use super::compare::compare_holds;
use super::convert::{client_kv, delete_event, deleted_kv, put_event};
use super::event_feed::StoredEvent;
use super::index::IndexChange;
use super::shard_ops;
use crate::error::{StoreError, StoreResult};
use crate::shard::queue::Queued;
use crate::shard::{Shard, WriteTurn};

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

/// How a one-key write ended (errors aside).
#[derive(Debug, Clone)]
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

/// The longest a write's outcome is looked for after its answer was lost.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes a write adds to a shard Txn besides its key and value: the
/// envelope header, the guard and the protobuf framing (approximate).
const PER_WRITE_OVERHEAD: usize = 96;

/// A write waiting in its shard's queue, with the way to answer its
/// writer.
pub struct PendingWrite {
    write: KeyWrite,
    reply: oneshot::Sender<Reply>,
}

/// What a queued write's writer is told.
enum Reply {
    /// The write ended (see [`WriteOutcome`]) or failed.
    Done(StoreResult<WriteOutcome>),
    /// A ring change moved the key to another shard while the write
    /// waited: the writer queues it there.
    Moved(KeyWrite),
}

impl Queued for PendingWrite {
    fn key(&self) -> &[u8] {
        &self.write.key
    }

    fn bytes(&self) -> usize {
        let value = match &self.write.op {
            WriteOp::Put { value, .. } => value.len(),
            WriteOp::Delete => 0,
        };
        2 * self.write.key.len() + value + PER_WRITE_OVERHEAD
    }
}

impl PendingWrite {
    fn answer(self, result: StoreResult<WriteOutcome>) {
        // A writer that went away no longer needs the answer.
        let _ = self.reply.send(Reply::Done(result));
    }
}

/// What a prepared write does to its key.
enum Change {
    Put { payload: Vec<u8>, lease: i64 },
    Delete,
}

/// A write whose compares held, ready to go into a batch.
struct Prepared {
    key: Vec<u8>,
    reply: oneshot::Sender<Reply>,
    /// The key's index entry before the write.
    entry: Option<IndexEntry>,
    change: Change,
}

impl Prepared {
    /// The key's create revision and version once a put applies at
    /// `revision`, by etcd's mvcc rules: a new key is created there at
    /// version 1; an existing one keeps its create revision and counts one
    /// more version.
    fn created_and_version(&self, revision: GlobalRevision) -> (GlobalRevision, i64) {
        self.entry
            .as_ref()
            .map_or((revision, 1), |e| (e.create, e.version + 1))
    }

    fn answer(self, result: StoreResult<WriteOutcome>) {
        let _ = self.reply.send(Reply::Done(result));
    }

    fn is_delete(&self) -> bool {
        matches!(self.change, Change::Delete)
    }
}

/// What reading a batch's keys back after a lost answer told.
enum Resolution {
    /// The batch was applied at `shard_revision`; `prevs` are the keys'
    /// versions before it, in batch order.
    Applied {
        shard_revision: ShardRevision,
        prevs: Vec<Option<mvccpb::KeyValue>>,
    },
    NotApplied,
    Unknown,
}

/// How sending a batch ended, for the caller.
enum Sent {
    /// Every write was answered.
    Answered,
    /// A guard failed: the revisions were abandoned, and these writes are
    /// to be sent again one by one.
    Retry(Vec<Prepared>),
}

impl Store {
    /// Applies one conditional write (Put, Txn branch, single-key delete).
    ///
    /// The write runs in its own task: once a revision is allocated it must
    /// complete (or be abandoned) even if the client goes away, or every
    /// later revision would wait for it forever — and a writer holding its
    /// shard's turn commits the other writers' writes too.
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
        let mut write = write;
        let outcome = loop {
            let shard = self.placement.holder(&write.key, &self.index)?;
            shard.check_available()?;
            let (reply, mut answer) = oneshot::channel();
            shard.writes().push(PendingWrite { write, reply });
            let reply = loop {
                tokio::select! {
                    biased;
                    reply = &mut answer => break reply,
                    turn = shard.write_turn() => self.commit_queued(&shard, turn).await,
                }
            };
            match reply {
                Ok(Reply::Done(result)) => break result?,
                Ok(Reply::Moved(back)) => write = back,
                Err(_) => {
                    return Err(StoreError::Internal(
                        "a queued write was dropped without an answer".into(),
                    ));
                }
            }
        };
        if let WriteOutcome::Applied { revision, .. } = &outcome {
            self.revisions.wait_visible(*revision).await;
        }
        Ok(outcome)
    }

    /// With the shard's write turn: sends the queue's next batch, and
    /// answers every write in it.
    async fn commit_queued(&self, shard: &Arc<Shard>, _turn: WriteTurn) {
        // A quarter of headroom under the shards' request limit (taken
        // to be the router's own) for what the byte estimate misses; a
        // batch refused as too large is sent again one write at a time.
        let batch = shard.writes().take_batch(
            self.config.shard_max_txn_ops.max(1),
            self.config.max_request_bytes / 4 * 3,
        );
        let mut prepared = Vec::with_capacity(batch.len());
        for pending in batch {
            // A ring change may have moved the key while it waited.
            match self.placement.holder(&pending.write.key, &self.index) {
                Ok(holder) if holder.id == shard.id => {}
                Ok(_) => {
                    let _ = pending.reply.send(Reply::Moved(pending.write));
                    continue;
                }
                Err(error) => {
                    pending.answer(Err(error));
                    continue;
                }
            }
            if let Err(error) = shard.check_available() {
                pending.answer(Err(error));
                continue;
            }
            if let Some(ready) = self.prepare(shard, pending).await {
                prepared.push(ready);
            }
        }
        if prepared.is_empty() {
            return;
        }
        if let Sent::Retry(writes) = self.send_batch(shard, prepared).await {
            for write in writes {
                if let Err(error) = shard.check_available() {
                    write.answer(Err(error));
                    continue;
                }
                // A batch of one never asks for a retry.
                let _ = self.send_batch(shard, vec![write]).await;
            }
        }
    }

    /// Evaluates a queued write's compares (under the write turn); answers
    /// it at once when it will not apply.
    async fn prepare(&self, shard: &Shard, pending: PendingWrite) -> Option<Prepared> {
        let PendingWrite { write, reply } = pending;
        let key = write.key.clone();
        match self.evaluate(shard, write).await {
            Ok((entry, change)) => Some(Prepared {
                key,
                reply,
                entry,
                change,
            }),
            Err(answer) => {
                let _ = reply.send(Reply::Done(answer));
                None
            }
        }
    }

    /// The write's index entry and change when its compares hold; else
    /// its answer (compare failed, nothing to delete, or an error).
    async fn evaluate(
        &self,
        shard: &Shard,
        write: KeyWrite,
    ) -> Result<(Option<IndexEntry>, Change), StoreResult<WriteOutcome>> {
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
            self.read_value_locked(shard, &write.key)
                .await
                .map_err(Err)?
        } else {
            None
        };
        if !write
            .compares
            .iter()
            .all(|c| compare_holds(c, entry.as_ref(), current_value.as_deref()))
        {
            return Err(Ok(WriteOutcome::CompareFailed));
        }
        let change = match write.op {
            WriteOp::Delete if entry.is_none() => return Err(Ok(WriteOutcome::NothingDeleted)),
            WriteOp::Delete => Change::Delete,
            WriteOp::Put {
                value,
                lease,
                ignore_value,
                ignore_lease,
            } => {
                let payload = if ignore_value {
                    current_value
                } else {
                    Some(value)
                };
                let lease = if ignore_lease {
                    entry.as_ref().map(|e| e.lease)
                } else {
                    Some(lease)
                };
                match (payload, lease) {
                    (Some(payload), Some(lease)) => Change::Put { payload, lease },
                    _ => return Err(Err(StoreError::KeyNotFound)),
                }
            }
        };
        Ok((entry, change))
    }

    /// Sends `writes` (distinct keys, compares held) to the shard as one
    /// Txn at consecutive global revisions, and answers them.
    async fn send_batch(&self, shard: &Shard, writes: Vec<Prepared>) -> Sent {
        let (first, last) = match self.revisions.allocate_many(writes.len()).await {
            Ok(revisions) => revisions,
            Err(error) => {
                for write in writes {
                    write.answer(Err(error.clone()));
                }
                return Sent::Answered;
            }
        };
        let revision_of = |i: usize| GlobalRevision(first.0 + i as i64);
        let mut guards = Vec::with_capacity(writes.len());
        let mut ops = Vec::with_capacity(writes.len());
        for (i, write) in writes.iter().enumerate() {
            let shard_modified = write
                .entry
                .as_ref()
                .map(|e| e.shard_modified)
                .unwrap_or_default();
            guards.push(shard_ops::unchanged(&write.key, shard_modified));
            ops.push(match &write.change {
                Change::Put { payload, lease } => {
                    let revision = revision_of(i);
                    let (create, version) = write.created_and_version(revision);
                    let envelope = Envelope {
                        create,
                        modified: revision,
                        version,
                        lease: *lease,
                        payload,
                    }
                    .encode();
                    shard_ops::put(write.key.clone(), envelope, true)
                }
                Change::Delete => shard_ops::delete(write.key.clone(), true),
            });
        }
        let abandon = || {
            self.revisions.complete_many(
                (first.0..=last.0)
                    .map(|r| (GlobalRevision(r), Vec::new()))
                    .collect(),
            );
        };
        shard.commits().record(writes.len());
        match shard.txn(shard_ops::guarded(guards, ops)).await {
            Ok(response) if response.succeeded => {
                let shard_revision = shard_ops::revision_of(response.header.as_ref());
                let prevs = shard_ops::prev_kv_each(&response);
                self.apply_batch(shard, writes, first, shard_revision, prevs);
            }
            Ok(_) if writes.len() > 1 => {
                abandon();
                return Sent::Retry(writes);
            }
            Ok(_) => {
                abandon();
                shard.mark_needs_resync(
                    "a key changed on the shard without going through the router",
                );
                for write in writes {
                    let error = shard.unavailable(format!(
                        "key {:?} changed on the shard outside the router; resynchronising",
                        String::from_utf8_lossy(&write.key)
                    ));
                    write.answer(Err(error));
                }
            }
            Err(error) if error.is_uncertain() => {
                match self.resolve_uncertain(shard, &writes, first).await {
                    Resolution::Applied {
                        shard_revision,
                        prevs,
                    } => self.apply_batch(shard, writes, first, shard_revision, prevs),
                    Resolution::NotApplied => {
                        abandon();
                        let error = shard.client_error(error);
                        for write in writes {
                            write.answer(Err(error.clone()));
                        }
                    }
                    Resolution::Unknown => {
                        abandon();
                        shard.mark_needs_resync("the outcome of a write is unknown");
                        let error = shard.client_error(error);
                        for write in writes {
                            write.answer(Err(error.clone()));
                        }
                    }
                }
            }
            // The batch itself was refused (too many operations, too
            // large): each write on its own is within the limits.
            Err(error) if writes.len() > 1 && error.status.code() == Code::InvalidArgument => {
                abandon();
                return Sent::Retry(writes);
            }
            Err(error) => {
                // etcd answered (e.g. NOSPACE): nothing was applied.
                abandon();
                let error = shard.client_error(error);
                for write in writes {
                    write.answer(Err(error.clone()));
                }
            }
        }
        Sent::Answered
    }

    /// A batch the shard applied at `shard_revision`: the revision map,
    /// index, leases and watch events learn it, then its writers.
    fn apply_batch(
        &self,
        shard: &Shard,
        writes: Vec<Prepared>,
        first: GlobalRevision,
        shard_revision: ShardRevision,
        prevs: Vec<Option<mvccpb::KeyValue>>,
    ) {
        let last = GlobalRevision(first.0 + writes.len() as i64 - 1);
        let mut changes = Vec::with_capacity(writes.len());
        let mut completed = Vec::with_capacity(writes.len());
        let mut answers = Vec::with_capacity(writes.len());
        let mut prevs = prevs.into_iter();
        for (i, write) in writes.into_iter().enumerate() {
            let revision = GlobalRevision(first.0 + i as i64);
            let prev = prevs
                .next()
                .flatten()
                .and_then(|stored| client_kv(stored, &shard.name).ok());
            let (create, version) = write.created_and_version(revision);
            let Prepared {
                key,
                reply,
                entry,
                change,
            } = write;
            let old_lease = entry.as_ref().map_or(0, |e| e.lease);
            let event = match change {
                Change::Put { payload, lease } => {
                    changes.push(IndexChange::Insert(
                        key.clone(),
                        IndexEntry {
                            shard: shard.id,
                            create,
                            modified: revision,
                            version,
                            lease,
                            value_size: payload.len() as u32,
                            shard_modified: shard_revision,
                        },
                    ));
                    if old_lease != lease {
                        self.leases.detach(old_lease, &key);
                    }
                    self.leases.attach(lease, &key);
                    let kv = mvccpb::KeyValue {
                        key,
                        create_revision: create.0,
                        mod_revision: revision.0,
                        version,
                        value: payload.into(),
                        lease,
                    };
                    put_event(kv, prev.clone())
                }
                Change::Delete => {
                    self.leases.detach(old_lease, &key);
                    changes.push(IndexChange::Remove(key.clone()));
                    delete_event(deleted_kv(key, revision), prev.clone())
                }
            };
            completed.push((revision, vec![StoredEvent { revision, event }]));
            answers.push((reply, WriteOutcome::Applied { revision, prev }));
        }
        shard.record_batch(first, last, shard_revision);
        self.index.apply(changes);
        self.revisions.complete_many(completed);
        for (reply, outcome) in answers {
            let _ = reply.send(Reply::Done(Ok(outcome)));
        }
    }

    /// The shard's latest value of `key` (payload only), under the write turn.
    async fn read_value_locked(&self, shard: &Shard, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let response = shard
            .range(shard_ops::get_at(key, ShardRevision(0)))
            .await
            .map_err(|e| shard.client_error(e))?;
        match response.kvs.into_iter().next() {
            Some(stored) => Ok(Some(client_kv(stored, &shard.name)?.value.to_vec())),
            None => Ok(None),
        }
    }

    /// After a lost answer: did the batch whose first write has global
    /// revision `first` reach the shard? Under the write turn nothing else
    /// wrote to the shard since, and a Txn applies all or nothing, so the
    /// keys' current state tells, and their versions before it are those
    /// at the shard revision just below.
    ///
    /// The shard just failed to answer, and every later revision waits for
    /// these: each read-back gets [`RESOLVE_TIMEOUT`], not another full
    /// request timeout (a hung shard would otherwise hold all writes for
    /// twice `--shard-timeout`). Unanswered, the outcome stays unknown and
    /// the shard is resynchronised when it answers again.
    async fn resolve_uncertain(
        &self,
        shard: &Shard,
        writes: &[Prepared],
        first: GlobalRevision,
    ) -> Resolution {
        let bound = self.config.shard_timeouts.request.min(RESOLVE_TIMEOUT);
        let read = |key: &[u8], at: i64| {
            let call = shard.range(shard_ops::get_at(key, ShardRevision(at)));
            async move {
                match tokio::time::timeout(bound, call).await {
                    Ok(Ok(response)) => Some(response),
                    _ => None,
                }
            }
        };
        let now = join_all(writes.iter().map(|w| read(&w.key, 0))).await;
        let Some(now) = now.into_iter().collect::<Option<Vec<_>>>() else {
            return Resolution::Unknown;
        };
        let mut applied_at = None;
        let mut applied = 0;
        for (i, (write, now)) in writes.iter().zip(&now).enumerate() {
            let revision = GlobalRevision(first.0 + i as i64);
            let here = match (now.kvs.first(), write.is_delete()) {
                (Some(kv), false) => Envelope::decode(&kv.value)
                    .ok()
                    .filter(|e| e.modified == revision)
                    .map(|_| kv.mod_revision),
                (None, true) => Some(now.header.as_ref().map_or(0, |h| h.revision)),
                _ => None,
            };
            let Some(here) = here else { continue };
            applied += 1;
            // Deletes leave nothing to date them: their reads' header
            // revision is the shard's latest, which is the batch's if it
            // applied (nothing else wrote since). Puts date it exactly.
            if !write.is_delete() || applied_at.is_none() {
                applied_at = Some(here);
            }
        }
        if applied == 0 {
            return Resolution::NotApplied;
        }
        let Some(applied_at) = applied_at.filter(|_| applied == writes.len()) else {
            return Resolution::Unknown;
        };
        let before = join_all(writes.iter().map(|w| read(&w.key, applied_at - 1))).await;
        let Some(before) = before.into_iter().collect::<Option<Vec<_>>>() else {
            return Resolution::Unknown;
        };
        Resolution::Applied {
            shard_revision: ShardRevision(applied_at),
            prevs: before
                .into_iter()
                .map(|r| r.kvs.into_iter().next())
                .collect(),
        }
    }
}
