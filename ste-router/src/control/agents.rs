//! Agents as the router knows them from Register and Heartbeat.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ste_proto::v1 as pb;

/// One agent as its Register and Heartbeat calls describe it.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// The node name (the ring member name once joined).
    pub name: String,
    /// The agent's own gRPC address (`ste.v1.Agent`).
    pub agent_address: String,
    /// Its user-facing gRPC address (`--user-listen`), empty if none.
    pub user_address: String,
    /// Its shard's etcd client URL.
    pub endpoint: String,
    /// The shard's epoch: +1 for every fresh etcd start (empty shard).
    pub epoch: u64,
    /// The ring weight it asks for.
    pub weight: u32,
    /// It asked not to be joined automatically (`--no-join`).
    pub no_join: bool,
    /// Its shard answered the agent's last probe.
    pub healthy: bool,
    /// The ring generation the agent last heard of.
    pub generation_seen: u64,
    /// When the router last heard from it.
    pub last_seen: Instant,
    /// The epoch the agent's shard had when it joined the ring; a different
    /// epoch later means the shard restarted empty.
    pub joined_epoch: Option<u64>,
    /// The agent left the ring (it is draining to stop): never joined again
    /// automatically until it registers anew.
    pub left: bool,
    /// The router fenced its member and has not joined it since: whatever
    /// its shard still holds was dropped from the index and its loss
    /// announced, and is cleared before the agent joins again.
    pub fenced: bool,
}

/// The agents heard from, by name, and the nodes an operator holds out of
/// auto-join.
#[derive(Debug, Default)]
pub struct Agents {
    inner: Mutex<BTreeMap<String, AgentInfo>>,
    held_out: Mutex<BTreeSet<String>>,
}

impl Agents {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, AgentInfo>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a Register call: the agent's address, shard and epoch (a
    /// re-registration keeps the epoch its member joined with).
    pub fn register(&self, request: &pb::RegisterRequest) {
        let mut agents = self.lock();
        let joined_epoch = agents.get(&request.name).and_then(|a| a.joined_epoch);
        let fenced = agents.get(&request.name).is_some_and(|a| a.fenced);
        agents.insert(
            request.name.clone(),
            AgentInfo {
                name: request.name.clone(),
                agent_address: request.agent_address.clone(),
                user_address: request.user_address.clone(),
                endpoint: request.endpoint.clone(),
                epoch: request.epoch,
                weight: request.weight.max(1),
                no_join: request.no_join,
                healthy: true,
                generation_seen: 0,
                last_seen: Instant::now(),
                joined_epoch,
                left: false,
                fenced,
            },
        );
    }

    /// Records a heartbeat; false if the agent is unknown.
    pub fn heartbeat(&self, request: &pb::HeartbeatRequest) -> bool {
        let mut agents = self.lock();
        let Some(agent) = agents.get_mut(&request.name) else {
            return false;
        };
        agent.epoch = request.epoch;
        agent.healthy = request.healthy;
        agent.generation_seen = request.generation_seen;
        agent.last_seen = Instant::now();
        true
    }

    /// The agent named `name`, if it registered.
    pub fn get(&self, name: &str) -> Option<AgentInfo> {
        self.lock().get(name).cloned()
    }

    /// Every registered agent, by name.
    pub fn all(&self) -> Vec<AgentInfo> {
        self.lock().values().cloned().collect()
    }

    /// Records the shard epoch `name` joined the ring with (`None`: not a
    /// member any more).
    pub fn set_joined(&self, name: &str, epoch: Option<u64>) {
        if let Some(agent) = self.lock().get_mut(name) {
            agent.joined_epoch = epoch;
        }
    }

    /// Records that the router fenced (`true`) or joined again (`false`)
    /// the member of agent `name`.
    pub fn set_fenced(&self, name: &str, fenced: bool) {
        if let Some(agent) = self.lock().get_mut(name) {
            agent.fenced = fenced;
        }
    }

    /// The agent asked to leave: keep it out of auto-join.
    pub fn set_left(&self, name: &str) {
        if let Some(agent) = self.lock().get_mut(name) {
            agent.left = true;
            agent.joined_epoch = None;
        }
    }

    /// Holds node `name` out of auto-join, whether or not its agent has
    /// registered (an operator's `ring leave`; [`super::Control::hold_out`]
    /// records it in the router state).
    pub fn hold_out(&self, name: &str) {
        self.held_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
    }

    /// Lets node `name` be joined automatically again (a Join named it).
    pub fn release(&self, name: &str) {
        self.held_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Whether an operator holds node `name` out of auto-join.
    pub fn is_held_out(&self, name: &str) -> bool {
        self.held_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Agents heard from within `within`.
    pub fn alive(&self, within: Duration) -> Vec<AgentInfo> {
        self.lock()
            .values()
            .filter(|a| a.last_seen.elapsed() <= within)
            .cloned()
            .collect()
    }
}
