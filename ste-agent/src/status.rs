//! The agent's shared, mutable view of itself. The supervisor and the probe
//! write it; the gRPC service and `/metrics` read snapshots of it.

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ste_proto::v1 as pb;
use tokio::sync::watch;

use crate::mount::Usage;

pub use pb::AgentState;

/// What the last probe of the shard found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardProbe {
    /// The shard answered the last probe (status, alarms and key count).
    pub healthy: bool,
    /// The etcd server version it reported, e.g. `3.5.17`; empty before any answer.
    pub etcd_version: String,
    /// The shard's own etcd revision (not the router's global revision).
    pub revision: i64,
    /// Size of the shard's backend database file, in bytes.
    pub db_size_bytes: i64,
    /// Keys under `--key-prefix` on the shard.
    pub key_count: i64,
    /// Active etcd alarms by name (`NOSPACE`, `CORRUPT`); empty when none.
    pub alarms: Vec<String>,
}

/// Host resource usage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeUsage {
    /// Physical memory of the node, in bytes.
    pub memory_total_bytes: u64,
    /// Memory available for new allocations without swapping, in bytes.
    pub memory_available_bytes: u64,
    /// CPU usage of the whole node over the last probe interval, 0–100.
    pub cpu_usage_percent: f32,
}

/// The agent's standing with ste-router, from its last Register and
/// Heartbeat answers. All empty/zero when the agent runs standalone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RingLink {
    /// The router's admin address (`--router`); empty when standalone.
    pub router: String,
    /// The router knows this agent (last Register succeeded and no
    /// Heartbeat since said otherwise).
    pub registered: bool,
    /// The router last said this agent's shard is a ring member.
    pub member: bool,
    /// The ring generation from the router's last answer.
    pub generation_seen: u64,
    /// Why the last call to the router failed; empty once one succeeds.
    pub last_router_error: String,
}

/// Everything that changes while the agent runs.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Where the agent is in its life cycle; `Serving` only after a probe
    /// succeeded in the current epoch.
    pub state: AgentState,
    /// Shard epoch: 0 before the first start, +1 for every fresh etcd start
    /// (each start wipes the data dir, so keys never cross epochs).
    pub epoch: u64,
    /// Times etcd exited or was killed as hung since the agent started, each
    /// followed by a restart (the first start does not count).
    pub restarts: u64,
    /// Why the agent last degraded or failed; empty until something went wrong.
    pub last_error: String,
    /// When the current epoch's etcd was started, in seconds since the Unix
    /// epoch; 0 before the first start.
    pub epoch_started_unix: i64,
    /// PID of the running etcd, 0 while none runs.
    pub pid: u32,
    /// What the last probe in this epoch found.
    pub shard: ShardProbe,
    /// Size and use of the tmpfs, from the last probe.
    pub tmpfs: Usage,
    /// The data dir is a mounted tmpfs, as of the last probe.
    pub tmpfs_mounted: bool,
    /// The node's memory and CPU, from the last probe.
    pub node: NodeUsage,
    /// The agent's standing with the router.
    pub ring: RingLink,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            state: AgentState::Starting,
            epoch: 0,
            restarts: 0,
            last_error: String::new(),
            epoch_started_unix: 0,
            pid: 0,
            shard: ShardProbe::default(),
            tmpfs: Usage::default(),
            tmpfs_mounted: false,
            node: NodeUsage::default(),
            ring: RingLink::default(),
        }
    }
}

impl Snapshot {
    /// Serving for grpc.health.v1 means: etcd answers and its tmpfs is there.
    pub fn is_serving(&self) -> bool {
        self.state == AgentState::Serving && self.shard.healthy && self.tmpfs_mounted
    }
}

/// Facts fixed at start-up.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Kubernetes node name; also the etcd member name.
    pub node_name: String,
    /// etcd's client URL, what the router dials (`--etcd-client-url`).
    pub endpoint: String,
    /// The data dir that holds the tmpfs.
    pub tmpfs_path: String,
    /// The agent mounted the tmpfs (and unmounts it on exit).
    pub tmpfs_managed: bool,
    /// The backend quota etcd is started with (`--quota-backend-bytes`), in bytes.
    pub quota_backend_bytes: i64,
    /// When the agent started, for the uptime.
    pub started: Instant,
}

/// The live status, guarded by a mutex held only to copy or update fields.
#[derive(Debug)]
pub struct Status {
    /// The facts that never change; read without the lock.
    pub identity: Identity,
    inner: Mutex<Snapshot>,
    /// Ticks after every update, for tasks that wait for a state.
    changed: watch::Sender<()>,
}

impl Status {
    /// A status in state `Starting`, epoch 0, with nothing probed yet.
    pub fn new(identity: Identity) -> Self {
        Status {
            identity,
            inner: Mutex::new(Snapshot::default()),
            changed: watch::Sender::new(()),
        }
    }

    /// A receiver that sees a change after every [`Status::update`].
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// A copy of the current values. The lock is held only for the copy, so a
    /// reader never blocks the probe or the supervisor for longer.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies `change` under the lock and wakes every [`Status::subscribe`]r;
    /// returns what `change` returns. Keep `change` short and free of `.await`:
    /// it runs with the lock held.
    pub fn update<R>(&self, change: impl FnOnce(&mut Snapshot) -> R) -> R {
        let result = change(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_replace(());
        result
    }

    /// The `ste.v1.AgentStatus` message for the current snapshot.
    pub fn to_proto(&self) -> pb::AgentStatus {
        let s = self.snapshot();
        let id = &self.identity;
        pb::AgentStatus {
            node_name: id.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            state: s.state.into(),
            epoch: s.epoch,
            restarts: s.restarts,
            last_error: s.last_error,
            shard: Some(pb::ShardStatus {
                endpoint: id.endpoint.clone(),
                healthy: s.shard.healthy,
                etcd_version: s.shard.etcd_version,
                revision: s.shard.revision,
                db_size_bytes: s.shard.db_size_bytes,
                key_count: s.shard.key_count,
                alarms: s.shard.alarms,
                quota_backend_bytes: id.quota_backend_bytes,
                pid: s.pid,
            }),
            tmpfs: Some(pb::TmpfsStatus {
                path: id.tmpfs_path.clone(),
                size_bytes: s.tmpfs.size_bytes,
                used_bytes: s.tmpfs.used_bytes,
                managed: id.tmpfs_managed,
                mounted: s.tmpfs_mounted,
            }),
            node: Some(pb::NodeStatus {
                memory_total_bytes: s.node.memory_total_bytes,
                memory_available_bytes: s.node.memory_available_bytes,
                cpu_usage_percent: s.node.cpu_usage_percent,
            }),
            uptime_seconds: id.started.elapsed().as_secs(),
            epoch_started_unix: s.epoch_started_unix,
        }
    }
}

/// The wall-clock time in whole seconds since the Unix epoch; 0 if the clock
/// is before 1970.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
