//! The calls the router makes to a shard's etcd, as a trait: the gRPC
//! client in production ([`super::grpc::GrpcShardClient`]), an in-memory
//! etcd in unit tests ([`super::memory::MemoryShard`]).

use ste_proto::etcd::etcdserverpb as pb;
use tonic::Status;

/// The etcd v3 calls the router sends to one shard, and nothing more.
///
/// Each method mirrors the etcd RPC of the same name and answers what a
/// single-member etcd would: the response, or the `tonic::Status` the call
/// ended with. A status is either etcd's own answer (its message starts with
/// `etcdserver:`, e.g. a compacted revision or NOSPACE) or a transport
/// failure (the shard did not answer); [`super::Shard`] tells them apart, so
/// implementations return statuses exactly as etcd and tonic produce them.
///
/// Object-safe: the router holds shards as `Arc<dyn ShardClient>`.
#[tonic::async_trait]
pub trait ShardClient: Send + Sync {
    /// `KV.Range`: the keys of `[key, range_end)` at `revision` (0 = now).
    async fn range(&self, request: pb::RangeRequest) -> Result<pb::RangeResponse, Status>;

    /// `KV.Txn`: the compares, then the success or the failure ops, as one
    /// write at one new revision (no new revision if nothing changed).
    async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, Status>;

    /// `KV.Compact`: drops the history before `revision`.
    async fn compact(
        &self,
        request: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, Status>;

    /// `Maintenance.Status`: the member's revision, ID and database size.
    async fn status(&self, request: pb::StatusRequest) -> Result<pb::StatusResponse, Status>;

    /// `Maintenance.Alarm`: lists, raises or clears alarms (NOSPACE, CORRUPT).
    async fn alarm(&self, request: pb::AlarmRequest) -> Result<pb::AlarmResponse, Status>;
}
