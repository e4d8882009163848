//! One shard as the router sees it: a client of its etcd, the lock that
//! orders writes to it, its global → shard revision map and its health.
//!
//! - [`ShardClient`] (`client.rs`): the etcd calls the router makes to a
//!   shard, as a trait.
//! - [`grpc::GrpcShardClient`]: that trait over a tonic channel (production).
//! - [`memory::MemoryShard`]: that trait over an in-memory single-member etcd
//!   (unit tests of the router and of the tests crate).

#![warn(missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use ste_core::index::ShardId;
use ste_core::revision::{GlobalRevision, ShardRevision};
use ste_core::revmap::{Location, RevMapError, RevisionMap};
use ste_proto::etcd::etcdserverpb as pb;
use tonic::Status;

use crate::error::{FUTURE_REVISION, StoreError};
use crate::store::write::PendingWrite;

mod call_error;
mod client;
pub mod grpc;
pub mod memory;
pub mod queue;
#[cfg(test)]
mod tests;
pub mod tls;

pub use call_error::{ShardCallError, describe};
pub use client::ShardClient;

/// How the router reaches a shard over gRPC: timeouts and TLS.
#[derive(Debug, Clone)]
pub struct ShardTimeouts {
    /// Longest wait for a TCP (and TLS) connection to the shard.
    pub connect: Duration,
    /// Longest wait for the answer to one call; past it the call fails with
    /// DEADLINE_EXCEEDED and its outcome is uncertain.
    pub request: Duration,
    /// TLS towards shards with https:// URLs (`--shard-ca`,
    /// `--shard-cert`, `--shard-key`); `None`: tonic's TLS with the roots
    /// its features enable and no client certificate.
    pub tls: Option<tls::ShardTls>,
}

/// The router's view of a shard's health.
#[derive(Debug, Clone)]
pub struct Health {
    /// False from a transport failure until a probe succeeds: requests that
    /// need the shard fail fast meanwhile.
    pub healthy: bool,
    /// Why the shard was last marked down or out of sync; empty when fine.
    pub last_error: String,
    /// When `healthy` last changed.
    pub since: Instant,
    /// A write's outcome on this shard is unknown, or the shard changed
    /// behind the router's back: its part of the index must be rebuilt
    /// before the shard serves again.
    pub needs_resync: bool,
}

/// Counts of a shard's group commits (see `store/write.rs`), for metrics:
/// their ratio is the mean number of writes per shard Txn.
#[derive(Debug, Default)]
pub struct GroupCommits {
    txns: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
}

impl GroupCommits {
    /// Counts one Txn carrying `writes` writes.
    pub fn record(&self, writes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.txns.fetch_add(1, Relaxed);
        self.writes.fetch_add(writes as u64, Relaxed);
    }

    /// `(txns, writes)` so far.
    pub fn totals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.txns.load(Relaxed), self.writes.load(Relaxed))
    }
}

/// How long a shard's etcd took to answer the router's `Range` and `Txn`
/// calls, in seconds, from sending the request to having its answer
/// decoded (the hop to the shard included), failed calls too: the
/// `ste_router_shard_request_duration_seconds` histogram. Compared with
/// `ste_router_request_duration_seconds`, it tells a slow shard from a
/// slow router. Clones share their counts.
#[derive(Debug, Clone)]
pub struct CallLatency {
    range: Histogram,
    txn: Histogram,
}

impl Default for CallLatency {
    fn default() -> Self {
        CallLatency {
            range: Histogram::new(crate::metrics::LATENCY_BUCKETS),
            txn: Histogram::new(crate::metrics::LATENCY_BUCKETS),
        }
    }
}

impl CallLatency {
    /// The histograms by gRPC method name (the `method` label).
    pub fn by_method(&self) -> [(&'static str, &Histogram); 2] {
        [("Range", &self.range), ("Txn", &self.txn)]
    }
}

/// A shard's turn to write (see [`Shard::write_turn`]); the turn ends when
/// it is dropped.
pub type WriteTurn = tokio::sync::OwnedMutexGuard<()>;

/// One shard: its identity in the ring, the client of its etcd, the lock
/// that orders writes to it, its revision map and its health.
pub struct Shard {
    /// The shard's number in the router's index.
    pub id: ShardId,
    /// The member name (the ring places keys by it; errors name it).
    pub name: String,
    /// The etcd URL, as configured (`http://` or `https://host:port`).
    pub endpoint: String,
    /// The member's weight in the ring (its relative share of keys).
    pub weight: u32,
    client: Arc<dyn ShardClient>,
    /// See [`Shard::write_turn`].
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Writes waiting for the next group commit (see `store/write.rs`).
    writes: queue::WriteQueue<PendingWrite>,
    /// Write Txns sent by group commits, and the writes they carried.
    commits: GroupCommits,
    /// How long the etcd took to answer Range and Txn calls.
    latency: CallLatency,
    revisions: Mutex<RevisionMap>,
    health: Mutex<Health>,
    /// The etcd member ID seen at the last scan: a different one later
    /// means the shard was recreated empty.
    member_id: std::sync::atomic::AtomicU64,
    /// Woken when the shard newly needs a resync (see
    /// [`Shard::with_resync_signal`]).
    resync_wanted: Arc<tokio::sync::Notify>,
}

impl Shard {
    /// A shard reached over gRPC at `endpoint` (see
    /// [`grpc::GrpcShardClient::connect`]); nothing is connected yet.
    ///
    /// Errors: [`StoreError::InvalidArgument`] naming the endpoint when it is
    /// not a valid URI or its TLS configuration is rejected.
    pub fn new(
        id: ShardId,
        name: String,
        endpoint: String,
        weight: u32,
        timeouts: ShardTimeouts,
    ) -> Result<Self, StoreError> {
        let client = grpc::GrpcShardClient::connect(&endpoint, &timeouts)?;
        Ok(Self::with_client(
            id,
            name,
            endpoint,
            weight,
            Arc::new(client),
        ))
    }

    /// A shard that talks to its etcd through `client` (a
    /// [`memory::MemoryShard`] in tests). Starts healthy, with an empty
    /// revision map and no member ID seen.
    pub fn with_client(
        id: ShardId,
        name: String,
        endpoint: String,
        weight: u32,
        client: Arc<dyn ShardClient>,
    ) -> Self {
        Shard {
            id,
            name,
            endpoint,
            weight,
            client,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            writes: queue::WriteQueue::default(),
            commits: GroupCommits::default(),
            latency: CallLatency::default(),
            revisions: Mutex::new(RevisionMap::new(ShardRevision(0))),
            health: Mutex::new(Health {
                healthy: true,
                last_error: String::new(),
                since: Instant::now(),
                needs_resync: false,
            }),
            member_id: std::sync::atomic::AtomicU64::new(0),
            resync_wanted: Arc::default(),
        }
    }

    /// The shard, waking `signal` whenever it newly needs a resync, so the
    /// loop that resynchronises shards (`control::health`) waits on it and
    /// need not wait for its next tick. Without it, nothing is woken.
    pub fn with_resync_signal(mut self, signal: Arc<tokio::sync::Notify>) -> Self {
        self.resync_wanted = signal;
        self
    }

    /// The etcd member ID seen at the last scan; 0 before the first.
    pub fn member_id(&self) -> u64 {
        self.member_id.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records the etcd member ID the shard answered with (start-up scan).
    pub fn set_member_id(&self, id: u64) {
        self.member_id
            .store(id, std::sync::atomic::Ordering::Relaxed);
    }

    /// A copy of the shard's health as the router sees it now.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits for this shard's turn to write: held from allocating a global
    /// revision until the shard has applied the write (and the index and
    /// revision map know it), so writes reach the shard in global-revision
    /// order, the revision map stays monotonic on both sides, and no other
    /// write, migration batch or resync touches the shard's keys meanwhile.
    /// Several shards' turns are always taken in shard-ID order.
    pub async fn write_turn(&self) -> WriteTurn {
        self.write_lock.clone().lock_owned().await
    }

    /// Fails fast, naming the shard, when requests to it cannot succeed.
    ///
    /// Errors: [`StoreError::ShardUnavailable`] while the shard is marked
    /// down (with the last transport error) or needs a resync.
    pub fn check_available(&self) -> Result<(), StoreError> {
        let health = self.health();
        if health.healthy && !health.needs_resync {
            Ok(())
        } else {
            Err(self.unavailable(if health.needs_resync && health.healthy {
                "resynchronising its keys".into()
            } else {
                health.last_error
            }))
        }
    }

    /// The error a client gets when this shard cannot serve: names the
    /// member and its endpoint, with `reason`.
    pub fn unavailable(&self, reason: String) -> StoreError {
        StoreError::ShardUnavailable {
            member: self.name.clone(),
            endpoint: self.endpoint.clone(),
            reason,
        }
    }

    /// Marks the shard down with `reason` (logged once per outage): requests
    /// fail fast until [`Shard::mark_healthy`].
    pub fn mark_unavailable(&self, reason: &str) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if health.healthy {
            tracing::warn!(member = %self.name, reason, "shard unavailable");
            health.since = Instant::now();
        }
        health.healthy = false;
        health.last_error = reason.to_owned();
    }

    /// Marks the shard's part of the index as untrusted: it refuses
    /// requests until [`Shard::resynced`]. The first mark since the last
    /// resync wakes the resync signal.
    pub fn mark_needs_resync(&self, reason: &str) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        tracing::warn!(member = %self.name, reason, "shard needs a resync");
        let newly = !health.needs_resync;
        health.needs_resync = true;
        health.last_error = reason.to_owned();
        drop(health);
        if newly {
            self.resync_wanted.notify_one();
        }
    }

    /// Marks the shard up (a probe succeeded). Returns true if it was
    /// unhealthy before.
    pub fn mark_healthy(&self) -> bool {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let was_down = !health.healthy;
        if was_down {
            tracing::info!(member = %self.name, "shard available again");
            health.since = Instant::now();
        }
        health.healthy = true;
        was_down
    }

    /// Clears the need for a resync once the shard's keys were rescanned.
    pub fn resynced(&self) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.needs_resync = false;
        health.last_error.clear();
    }

    /// The shard revision that holds exactly the writes with global
    /// revision ≤ `global`.
    pub fn revision_at(&self, global: GlobalRevision) -> ShardRevision {
        self.revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .at(global)
    }

    /// Where the state as of `global` is on this shard: the shard revision
    /// and, inside a group commit, the later writes to take back out (see
    /// [`Location`]).
    pub fn locate(&self, global: GlobalRevision) -> Location {
        self.revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .locate(global)
    }

    /// The group commits sent to this shard so far.
    pub fn commits(&self) -> &GroupCommits {
        &self.commits
    }

    /// How long the shard's etcd has taken to answer Range and Txn calls.
    pub fn call_latency(&self) -> &CallLatency {
        &self.latency
    }

    /// The writes waiting for this shard's next group commit.
    pub fn writes(&self) -> &queue::WriteQueue<PendingWrite> {
        &self.writes
    }

    /// Records that the writes with global revisions `first..=last` (one
    /// Txn) left the shard at `shard`. Callers hold the shard's write turn.
    ///
    /// A shard revision that did not grow means the shard restarted empty
    /// since its last acknowledged write (see [`Shard::refused_record`]).
    pub fn record_batch(&self, first: GlobalRevision, last: GlobalRevision, shard: ShardRevision) {
        let recorded = self
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_batch(first, last, shard);
        if let Err(err) = recorded {
            self.refused_record(err);
        }
    }

    /// Records that the write with global revision `global` is the shard's
    /// revision `shard`. Callers hold the shard's write turn, so both only
    /// grow; a shard revision that did not is handled as in
    /// [`Shard::record_batch`].
    pub fn record_revision(&self, global: GlobalRevision, shard: ShardRevision) {
        let recorded = self
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(global, shard);
        if let Err(err) = recorded {
            self.refused_record(err);
        }
    }

    /// A record the revision map refused. The write turn keeps the router's
    /// own writes in order on both sides, so a shard revision at or below
    /// one the shard already acknowledged can only come from a shard that
    /// lost its data: an etcd restarted on a wiped data dir counts again
    /// from 1 (an agent restarted at once, or its etcd, between two health
    /// probes). Its part of the index is marked untrusted on the spot, so
    /// no read is answered from it before the resync. A global revision out
    /// of order is a bug in the router, not input.
    fn refused_record(&self, err: RevMapError) {
        match err {
            RevMapError::OutOfOrder {
                shard, last_shard, ..
            } if shard <= last_shard => self.mark_needs_resync(&format!(
                "a write came back at shard revision {shard}, not after {last_shard} it had \
                 acknowledged: the shard restarted empty and its keys are lost"
            )),
            err => tracing::error!(member = %self.name, error = %err, "revision map out of order"),
        }
    }

    /// Starts the revision map over (start-up scan, resync).
    pub fn reset_revisions(&self, base: ShardRevision) {
        *self.revisions.lock().unwrap_or_else(|e| e.into_inner()) = RevisionMap::new(base);
    }

    /// Forgets the revision map's entries that a compaction at `global` made
    /// unreachable.
    pub fn compact_revisions(&self, global: GlobalRevision) {
        self.revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .compact(global);
    }

    /// `KV.Range` on the shard. A transport failure marks the shard
    /// unavailable (see [`Shard::client_error`] for what the client sees).
    pub async fn range(
        &self,
        request: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, ShardCallError> {
        let start = Instant::now();
        let result = self.client.range(request).await;
        self.latency.range.observe(start.elapsed().as_secs_f64());
        self.finish(result)
    }

    /// `KV.Txn` on the shard. On a transport failure the shard is marked
    /// unavailable and the txn may or may not have been applied
    /// ([`ShardCallError::is_uncertain`]).
    pub async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, ShardCallError> {
        let start = Instant::now();
        let result = self.client.txn(request).await;
        self.latency.txn.observe(start.elapsed().as_secs_f64());
        self.finish(result)
    }

    /// `KV.Compact` at the shard revision `revision`; `physical` waits until
    /// the shard has removed the history from its database.
    pub async fn compact(
        &self,
        revision: ShardRevision,
        physical: bool,
    ) -> Result<(), ShardCallError> {
        let result = self
            .client
            .compact(pb::CompactionRequest {
                revision: revision.0,
                physical,
            })
            .await;
        self.finish(result).map(|_| ())
    }

    /// `Maintenance.Status` of the shard's etcd: its revision, member ID and
    /// database size in bytes.
    pub async fn status(&self) -> Result<pb::StatusResponse, ShardCallError> {
        let result = self.client.status(pb::StatusRequest {}).await;
        self.finish(result)
    }

    /// The alarms active on the shard (`Maintenance.Alarm` GET).
    pub async fn alarms(&self) -> Result<pb::AlarmResponse, ShardCallError> {
        let result = self
            .client
            .alarm(pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Get as i32,
                member_id: 0,
                alarm: pb::AlarmType::None as i32,
            })
            .await;
        self.finish(result)
    }

    /// Classifies the outcome of one call: a transport failure (the shard
    /// did not answer) marks the shard unavailable until a probe succeeds;
    /// etcd's own answers leave its health alone.
    fn finish<T>(&self, result: Result<T, Status>) -> Result<T, ShardCallError> {
        result.map_err(|status| {
            if ShardCallError::classify_transport(&status) {
                self.mark_unavailable(&describe(&status));
            }
            ShardCallError { status }
        })
    }

    /// Turns a failed call into the error the client sees: etcd's own
    /// answers pass through, transport failures name the shard.
    ///
    /// A shard that says a revision the router asked for is in its future
    /// (etcd's `ErrFutureRev`) has lost writes it acknowledged: the router
    /// only reads a shard at revisions the shard gave it. Like a write that
    /// comes back at an older revision, that marks the shard as restarted
    /// empty, and the client gets the shard's unavailability instead of an
    /// error about a revision it never asked for.
    pub fn client_error(&self, error: ShardCallError) -> StoreError {
        if ShardCallError::classify_transport(&error.status) {
            self.unavailable(describe(&error.status))
        } else if is_future_revision(&error.status) {
            let reason = "the shard has not reached a revision it acknowledged: it restarted \
                          empty and its keys are lost";
            self.mark_needs_resync(reason);
            self.unavailable(reason.into())
        } else {
            StoreError::Shard(error.status)
        }
    }
}

/// etcd's answer to a request at a revision it has not reached
/// (`mvcc.ErrFutureRev`, gRPC OUT_OF_RANGE).
fn is_future_revision(status: &Status) -> bool {
    status.code() == tonic::Code::OutOfRange && status.message() == FUTURE_REVISION
}

impl Shard {
    /// Disarms an alarm on the shard (its own member ID is looked up first,
    /// since etcd disarms per member).
    pub async fn disarm(&self, alarm: i32) -> Result<pb::AlarmResponse, ShardCallError> {
        let active = self.alarms().await?;
        let mut last = pb::AlarmResponse::default();
        for member in active
            .alarms
            .iter()
            .filter(|a| alarm == 0 || a.alarm == alarm)
        {
            let result = self
                .client
                .alarm(pb::AlarmRequest {
                    action: pb::alarm_request::AlarmAction::Deactivate as i32,
                    member_id: member.member_id,
                    alarm: member.alarm,
                })
                .await;
            last = self.finish(result)?;
        }
        Ok(last)
    }
}
