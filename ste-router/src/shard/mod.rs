//! One shard as the router sees it: a gRPC channel to its etcd, the lock
//! that orders writes to it, its global → shard revision map and its health.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ste_core::index::ShardId;
use ste_core::revision::{GlobalRevision, ShardRevision};
use ste_core::revmap::RevisionMap;
use ste_proto::etcd::etcdserverpb as pb;
use ste_proto::etcd::etcdserverpb::kv_client::KvClient;
use ste_proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::StoreError;

/// Timeouts towards a shard.
#[derive(Debug, Clone)]
pub struct ShardTimeouts {
    pub connect: Duration,
    pub request: Duration,
    /// TLS towards shards with https:// URLs.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The router's view of a shard's health.
#[derive(Debug, Clone)]
pub struct Health {
    pub healthy: bool,
    pub last_error: String,
    pub since: Instant,
    /// A write's outcome on this shard is unknown, or the shard changed
    /// behind the router's back: its part of the index must be rebuilt
    /// before the shard serves again.
    pub needs_resync: bool,
}

pub struct Shard {
    pub id: ShardId,
    pub name: String,
    pub endpoint: String,
    pub weight: u32,
    kv: KvClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
    /// Held from allocating a global revision until the shard has applied
    /// the write, so writes reach the shard in global-revision order and the
    /// revision map stays monotonic on both sides.
    pub write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    revisions: Mutex<RevisionMap>,
    health: Mutex<Health>,
    /// The etcd member ID seen at the last scan: a different one later
    /// means the shard was recreated empty.
    member_id: std::sync::atomic::AtomicU64,
}

/// A failed call to a shard, classified by what it means for a write.
#[derive(Debug)]
pub struct ShardCallError {
    pub status: Status,
}

impl ShardCallError {
    /// True when the request may or may not have been applied: the
    /// connection broke or the deadline passed after sending.
    pub fn is_uncertain(&self) -> bool {
        matches!(
            self.status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
        )
    }
}

impl Shard {
    pub fn new(
        id: ShardId,
        name: String,
        endpoint: String,
        weight: u32,
        timeouts: ShardTimeouts,
    ) -> Result<Self, StoreError> {
        let bad = |e: &dyn std::fmt::Display| {
            StoreError::InvalidArgument(format!("bad shard endpoint {endpoint:?}: {e}"))
        };
        let mut channel = Endpoint::from_shared(endpoint.clone()).map_err(|e| bad(&e))?;
        if endpoint.starts_with("https://") {
            let tls = timeouts
                .tls
                .clone()
                .unwrap_or_default()
                .with_enabled_roots();
            channel = channel.tls_config(tls).map_err(|e| bad(&e))?;
        }
        let channel = channel
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        let max = 64 << 20;
        Ok(Shard {
            id,
            name,
            endpoint,
            weight,
            kv: KvClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            maintenance: MaintenanceClient::new(channel),
            write_lock: std::sync::Arc::new(tokio::sync::Mutex::new(())),
            revisions: Mutex::new(RevisionMap::new(ShardRevision(0))),
            health: Mutex::new(Health {
                healthy: true,
                last_error: String::new(),
                since: Instant::now(),
                needs_resync: false,
            }),
            member_id: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn member_id(&self) -> u64 {
        self.member_id.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_member_id(&self, id: u64) {
        self.member_id
            .store(id, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fails fast, naming the shard, when requests to it cannot succeed.
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

    pub fn unavailable(&self, reason: String) -> StoreError {
        StoreError::ShardUnavailable {
            member: self.name.clone(),
            endpoint: self.endpoint.clone(),
            reason,
        }
    }

    pub fn mark_unavailable(&self, reason: &str) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if health.healthy {
            tracing::warn!(member = %self.name, reason, "shard unavailable");
            health.since = Instant::now();
        }
        health.healthy = false;
        health.last_error = reason.to_owned();
    }

    pub fn mark_needs_resync(&self, reason: &str) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        tracing::warn!(member = %self.name, reason, "shard needs a resync");
        health.needs_resync = true;
        health.last_error = reason.to_owned();
    }

    /// Returns true if the shard was unhealthy before.
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

    /// Records that the write with global revision `global` is the shard's
    /// revision `shard`. Callers hold `write_lock`, so both only grow.
    pub fn record_revision(&self, global: GlobalRevision, shard: ShardRevision) {
        if let Err(err) = self
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(global, shard)
        {
            // Only possible if writes bypassed write_lock: a bug, not input.
            tracing::error!(member = %self.name, %global, %shard, error = %err, "revision map out of order");
        }
    }

    /// Starts the revision map over (start-up scan, resync).
    pub fn reset_revisions(&self, base: ShardRevision) {
        *self.revisions.lock().unwrap_or_else(|e| e.into_inner()) = RevisionMap::new(base);
    }

    pub fn compact_revisions(&self, global: GlobalRevision) {
        self.revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .compact(global);
    }

    pub async fn range(
        &self,
        request: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, ShardCallError> {
        let result = self.kv.clone().range(request).await;
        self.finish(result)
    }

    pub async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, ShardCallError> {
        let result = self.kv.clone().txn(request).await;
        self.finish(result)
    }

    pub async fn compact(
        &self,
        revision: ShardRevision,
        physical: bool,
    ) -> Result<(), ShardCallError> {
        let result = self
            .kv
            .clone()
            .compact(pb::CompactionRequest {
                revision: revision.0,
                physical,
            })
            .await;
        self.finish(result).map(|_| ())
    }

    pub async fn status(&self) -> Result<pb::StatusResponse, ShardCallError> {
        let result = self.maintenance.clone().status(pb::StatusRequest {}).await;
        self.finish(result)
    }

    pub async fn alarms(&self) -> Result<pb::AlarmResponse, ShardCallError> {
        let result = self
            .maintenance
            .clone()
            .alarm(pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Get as i32,
                member_id: 0,
                alarm: pb::AlarmType::None as i32,
            })
            .await;
        self.finish(result)
    }

    fn finish<T>(&self, result: Result<tonic::Response<T>, Status>) -> Result<T, ShardCallError> {
        match result {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => {
                // The shard did not answer: fail fast until a probe succeeds.
                if ShardCallError::classify_transport(&status) {
                    self.mark_unavailable(&describe(&status));
                }
                Err(ShardCallError { status })
            }
        }
    }

    /// Turns a failed call into the error the client sees: etcd's own
    /// answers pass through, transport failures name the shard.
    pub fn client_error(&self, error: ShardCallError) -> StoreError {
        if ShardCallError::classify_transport(&error.status) {
            self.unavailable(describe(&error.status))
        } else {
            StoreError::Shard(error.status)
        }
    }
}

impl ShardCallError {
    /// A transport-level failure (the shard did not answer), as opposed to
    /// an answer from etcd.
    pub fn classify_transport(status: &Status) -> bool {
        matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
        ) && !status.message().starts_with("etcdserver:")
    }
}

/// A one-line description of a failed call, with the transport's cause.
pub fn describe(status: &Status) -> String {
    let mut text = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    };
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
                .maintenance
                .clone()
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
