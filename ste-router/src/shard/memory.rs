//! [`MemoryShard`]: a single-member etcd in memory, for tests.
//!
//! It answers the requests the router sends to a shard the way etcd does
//! (revisions, history reads, compaction errors, txn compares and ops,
//! `prev_kv`), and lets a test inject the failures the router must survive:
//! a shard that does not answer, an etcd error, a write applied whose
//! answer was lost. Tests of the router's planner and read/write paths run
//! on it in milliseconds instead of against a real etcd.
//!
//! It is test support, but compiled in every build (a plain `pub mod`, no
//! `cfg(test)` or feature) so that both ste-router's own unit tests and
//! other crates' tests (the tests crate, through a dependency on
//! ste-router) can use it. The router itself never constructs one.
//!
//! Not modelled (the router does not send them to shards; such requests
//! get UNIMPLEMENTED): sorting other than ascending by key, min/max
//! revision filters, `ignore_value`/`ignore_lease`, nested txns, compares
//! over a key range. Leases are stored as given, never checked or expired;
//! alarms are never raised.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ste_proto::etcd::etcdserverpb as pb;
use ste_proto::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ste_proto::etcd::etcdserverpb::{request_op, response_op};
use ste_proto::etcd::mvccpb::KeyValue;
use tonic::Status;

use super::ShardClient;
use mvcc::Mvcc;
use validate::{check_compares, check_ops, check_range};

mod mvcc;
#[cfg(test)]
mod tests;
mod validate;

/// The message of the UNAVAILABLE status a call gets when
/// [`MemoryShard::lose_next_answers`] made it apply and then lose its answer.
pub const ANSWER_LOST: &str = "MemoryShard: the request was applied but its answer was lost";

/// An in-memory single-member etcd implementing [`ShardClient`].
///
/// Starts empty at revision 1, so the first write is revision 2, as in etcd.
/// Every response header carries the store revision and the member ID.
/// Cheap to create; share it as `Arc<MemoryShard>` to keep a handle for
/// assertions and fault injection while a [`super::Shard`] uses it.
#[derive(Debug)]
pub struct MemoryShard {
    member_id: u64,
    state: Mutex<State>,
    /// Txns wait for a read permit: [`MemoryShard::hold_txns`] takes the
    /// write side to keep them in flight.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// The number of ops of every Txn answered so far, in order.
    txn_sizes: Mutex<Vec<usize>>,
    /// The number of keys every Range answered so far returned, in order.
    range_sizes: Mutex<Vec<usize>>,
    /// The `count` of every Range answered so far, in order.
    range_counts: Mutex<Vec<i64>>,
}

/// Keeps a [`MemoryShard`]'s Txns waiting (in flight, not applied) until
/// dropped.
pub type TxnHold = tokio::sync::OwnedRwLockWriteGuard<()>;

/// What the lock guards: the key space and the faults still to inject.
#[derive(Debug)]
struct State {
    store: Mvcc,
    faults: VecDeque<Fault>,
}

/// What happens to one upcoming call instead of a normal answer.
#[derive(Debug, Clone)]
enum Fault {
    /// Fail with this status, applying nothing.
    Fail(Status),
    /// Apply the request, then answer UNAVAILABLE ([`ANSWER_LOST`]).
    LoseAnswer,
}

impl Default for MemoryShard {
    fn default() -> Self {
        MemoryShard::new()
    }
}

impl MemoryShard {
    /// The member ID an etcd made by [`MemoryShard::new`] reports.
    pub const MEMBER_ID: u64 = 0x57e0_0000_0000_0001;

    /// An empty etcd (revision 1) with member ID [`MemoryShard::MEMBER_ID`].
    pub fn new() -> Self {
        MemoryShard::with_member_id(Self::MEMBER_ID)
    }

    /// An empty etcd reporting `member_id`: a different ID stands for a
    /// shard that was recreated.
    pub fn with_member_id(member_id: u64) -> Self {
        MemoryShard {
            member_id,
            state: Mutex::new(State {
                store: Mvcc::new(),
                faults: VecDeque::new(),
            }),
            gate: Arc::default(),
            txn_sizes: Mutex::default(),
            range_sizes: Mutex::default(),
            range_counts: Mutex::default(),
        }
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.lock().store.revision()
    }

    /// Writes `key` = `value` around the router (no lease), as another etcd
    /// client would; returns the new revision. Ignores injected faults.
    pub fn put_raw(&self, key: &[u8], value: &[u8]) -> i64 {
        let mut state = self.lock();
        state.store.put(key, value.to_vec(), 0);
        state.store.commit();
        state.store.revision()
    }

    /// Deletes `key` around the router; returns the store revision after it
    /// (unchanged if the key did not exist). Ignores injected faults.
    pub fn delete_raw(&self, key: &[u8]) -> i64 {
        let mut state = self.lock();
        state.store.delete(key, &[]);
        state.store.commit();
        state.store.revision()
    }

    /// Every key that exists now, with its raw value and revisions, in key
    /// order: what the shard holds, for assertions.
    pub fn raw_keys(&self) -> Vec<KeyValue> {
        self.lock().store.all()
    }

    /// Makes each of the next `calls` calls (any method) fail with `status`
    /// without applying anything: UNAVAILABLE for a shard that is down,
    /// an `etcdserver:` message for an error etcd itself answers.
    pub fn fail_next(&self, calls: usize, status: Status) {
        let mut state = self.lock();
        state
            .faults
            .extend(std::iter::repeat_n(status, calls).map(Fault::Fail));
    }

    /// Makes each of the next `calls` calls apply its request and then fail
    /// with UNAVAILABLE ([`ANSWER_LOST`]): the connection broke after etcd
    /// applied the write, so the caller cannot know the outcome.
    pub fn lose_next_answers(&self, calls: usize) {
        let mut state = self.lock();
        state
            .faults
            .extend(std::iter::repeat_n(Fault::LoseAnswer, calls));
    }

    /// Keeps every Txn that arrives from now on waiting, neither applied
    /// nor answered, until the returned guard is dropped: a shard round
    /// trip that lasts as long as the test wants (writes queue behind it).
    pub async fn hold_txns(&self) -> TxnHold {
        self.gate.clone().write_owned().await
    }

    /// How many ops (success branch) each Txn carried, in the order they
    /// were applied: shows the router's group commits.
    pub fn txn_sizes(&self) -> Vec<usize> {
        self.txn_sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many keys each Range call returned, in order: shows how much a
    /// read asked of this shard.
    pub fn range_sizes(&self) -> Vec<usize> {
        self.range_sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `count` of each Range call, in order: how many keys the shard
    /// walked to answer it, as etcd's index walks every key of the range
    /// to count it (`treeIndex.Revisions`), whatever the limit.
    pub fn range_counts(&self) -> Vec<i64> {
        self.range_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one call: consumes the next injected fault, if any, else applies.
    fn call<T>(&self, apply: impl FnOnce(&mut Mvcc) -> Result<T, Status>) -> Result<T, Status> {
        let mut state = self.lock();
        match state.faults.pop_front() {
            Some(Fault::Fail(status)) => Err(status),
            Some(Fault::LoseAnswer) => {
                // The answer, success or error, is what gets lost.
                let _ = apply(&mut state.store);
                Err(Status::unavailable(ANSWER_LOST))
            }
            None => apply(&mut state.store),
        }
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            member_id: self.member_id,
            revision,
            ..Default::default()
        })
    }

    /// etcd's Range at the revision `request.revision` asks for (0: `now`,
    /// which inside a txn includes its earlier writes).
    fn range_in(
        &self,
        store: &Mvcc,
        request: &pb::RangeRequest,
    ) -> Result<pb::RangeResponse, Status> {
        let revision = store.read_revision(request.revision)?;
        let mut kvs = store.range(&request.key, &request.range_end, revision);
        let count = kvs.len() as i64;
        let mut more = false;
        if request.count_only {
            kvs.clear();
        } else if request.limit > 0 && count > request.limit {
            kvs.truncate(request.limit as usize);
            more = true;
        }
        if request.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(pb::RangeResponse {
            header: self.header(store.latest()),
            kvs,
            more,
            count,
        })
    }

    /// etcd's Txn: compares against the current revision, then one branch's
    /// ops in order, all writes at one new revision.
    fn txn_in(
        &self,
        store: &mut Mvcc,
        request: &pb::TxnRequest,
    ) -> Result<pb::TxnResponse, Status> {
        check_compares(&request.compare)?;
        check_ops(store, &request.success)?;
        check_ops(store, &request.failure)?;
        let succeeded = request.compare.iter().all(|c| compare_holds(store, c));
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(range)) => {
                    response_op::Response::ResponseRange(self.range_in(store, range)?)
                }
                Some(request_op::Request::RequestPut(put)) => {
                    let prev = store.put(&put.key, put.value.clone(), put.lease);
                    response_op::Response::ResponsePut(pb::PutResponse {
                        header: self.header(store.latest()),
                        prev_kv: prev.filter(|_| put.prev_kv),
                    })
                }
                Some(request_op::Request::RequestDeleteRange(delete)) => {
                    let prev = store.delete(&delete.key, &delete.range_end);
                    response_op::Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header: self.header(store.latest()),
                        deleted: prev.len() as i64,
                        prev_kvs: if delete.prev_kv { prev } else { Vec::new() },
                    })
                }
                // Refused by check_ops.
                Some(request_op::Request::RequestTxn(_)) | None => continue,
            };
            responses.push(pb::ResponseOp {
                response: Some(response),
            });
        }
        store.commit();
        Ok(pb::TxnResponse {
            header: self.header(store.revision()),
            succeeded,
            responses,
        })
    }
}

/// etcd's compare on one key at the current revision: an absent key has
/// version, create and mod revision 0, and fails every VALUE compare.
fn compare_holds(store: &Mvcc, compare: &pb::Compare) -> bool {
    let kv = store
        .range(&compare.key, &[], store.revision())
        .pop()
        .unwrap_or_default();
    let exists = kv.create_revision != 0;
    // etcd reads the number from the union member that matches the target,
    // and compares with 0 when another member is set.
    let number = |want: Option<&i64>| *want.unwrap_or(&0);
    let union = compare.target_union.as_ref();
    let ordering = match compare.target() {
        CompareTarget::Value => match union {
            Some(TargetUnion::Value(want)) if exists => kv.value.as_ref().cmp(want.as_slice()),
            _ => return false,
        },
        CompareTarget::Version => kv.version.cmp(&number(match union {
            Some(TargetUnion::Version(want)) => Some(want),
            _ => None,
        })),
        CompareTarget::Create => kv.create_revision.cmp(&number(match union {
            Some(TargetUnion::CreateRevision(want)) => Some(want),
            _ => None,
        })),
        CompareTarget::Mod => kv.mod_revision.cmp(&number(match union {
            Some(TargetUnion::ModRevision(want)) => Some(want),
            _ => None,
        })),
        CompareTarget::Lease => kv.lease.cmp(&number(match union {
            Some(TargetUnion::Lease(want)) => Some(want),
            _ => None,
        })),
    };
    match compare.result() {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

#[tonic::async_trait]
impl ShardClient for MemoryShard {
    async fn range(&self, request: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        let response = self.call(|store| {
            check_range(&request)?;
            self.range_in(store, &request)
        })?;
        self.range_sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(response.kvs.len());
        self.range_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(response.count);
        Ok(response)
    }

    async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        let _permit = self.gate.read().await;
        self.txn_sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.success.len());
        self.call(|store| self.txn_in(store, &request))
    }

    async fn compact(
        &self,
        request: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, Status> {
        self.call(|store| {
            store.compact(request.revision)?;
            Ok(pb::CompactionResponse {
                header: self.header(store.revision()),
            })
        })
    }

    async fn status(&self, _: pb::StatusRequest) -> Result<pb::StatusResponse, Status> {
        self.call(|store| {
            Ok(pb::StatusResponse {
                header: self.header(store.revision()),
                version: "memory".into(),
                db_size: store.size(),
                db_size_in_use: store.size(),
                leader: self.member_id,
                ..Default::default()
            })
        })
    }

    async fn alarm(&self, _: pb::AlarmRequest) -> Result<pb::AlarmResponse, Status> {
        self.call(|store| {
            Ok(pb::AlarmResponse {
                header: self.header(store.revision()),
                alarms: Vec::new(),
            })
        })
    }
}
