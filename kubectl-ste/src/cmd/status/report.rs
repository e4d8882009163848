//! The status report: the router's member list joined with each member's
//! agent status, and what needs attention.

use std::time::Duration;

use serde::Serialize;
use ste_proto::v1::{
    AgentState, AgentStatus, MemberHealth, RegisteredAgent, RingMember, RouterStatus,
};

use super::super::migration::MigrationFacts;
use ste_core::units::format_bytes;

use crate::output::human;

/// Usage at or above this share of a limit is flagged.
pub const NEAR_FULL: f64 = 0.90;
/// An agent silent for this long is flagged.
pub const HEARTBEAT_STALE_SECONDS: u64 = 10;
/// An agent behind the ring generation is flagged only once the change is
/// at least this old and the agent has heartbeated at least
/// [`GENERATION_ACK_SECONDS`] after it. An agent reports, in each
/// heartbeat, the generation of the router's previous answer, and answers
/// a new one with an immediate heartbeat; right after a change every agent
/// is therefore one heartbeat behind, which is not a fault.
pub const GENERATION_GRACE_SECONDS: u64 = 5;
/// See [`GENERATION_GRACE_SECONDS`].
pub const GENERATION_ACK_SECONDS: u64 = 2;

/// The whole report, as printed by `-o json|yaml`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The router's own state.
    pub router: RouterFacts,
    /// One entry per ring member, sorted by name.
    pub members: Vec<MemberStatus>,
    /// The summary line.
    pub summary: Summary,
}

/// The router's side.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouterFacts {
    /// How it was reached.
    pub address: String,
    /// Its release.
    pub version: String,
    /// Global revision reads are served at.
    pub revision: i64,
    /// Ring generation.
    pub generation: u64,
    /// Seconds the ring has been at that generation (absent from older
    /// routers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_age_seconds: Option<u64>,
    /// Keys in its index.
    pub keys: u64,
    /// False until the start-up scan is done.
    pub serving: bool,
    /// The ring change in progress.
    pub migration: Option<MigrationFacts>,
    /// Its key index implementation (`btree` or `betree`); empty from a
    /// router too old to say.
    pub key_index: String,
}

/// One ring member.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Member (node) name.
    pub node: String,
    /// Shard etcd URL.
    pub shard: String,
    /// Placement weight.
    pub weight: u32,
    /// The router's view: Healthy or Unavailable.
    pub health: String,
    /// Why the router finds it unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Keys the router's index places here.
    pub keys: u64,
    /// The shard's own revision as the router last saw it.
    pub shard_revision: i64,
    /// The ring generation its agent last saw (registration).
    pub generation: Option<u64>,
    /// The agent really lags behind the ring generation (see
    /// [`agent_lags`]); being one heartbeat behind right after a change
    /// is not lagging.
    pub generation_behind: bool,
    /// The agent's report; absent when not registered or unreachable.
    pub agent: Option<AgentFacts>,
    /// Why `agent` is absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_error: Option<String>,
    /// What needs attention.
    pub warnings: Vec<String>,
}

/// What the member's agent reported.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentFacts {
    /// The registered gRPC address.
    pub address: String,
    /// The agent's release.
    pub version: String,
    /// Starting, Serving, Degraded, Draining, Stopped.
    pub state: String,
    /// Shard epoch.
    pub epoch: u64,
    /// etcd restarts by the supervisor.
    pub restarts: u64,
    /// The agent's last error.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// The shard answered its agent's last probe.
    pub shard_healthy: bool,
    /// etcd release.
    pub etcd_version: String,
    /// etcd alarms (e.g. NOSPACE).
    pub alarms: Vec<String>,
    /// The shard's bbolt file size.
    pub db_size_bytes: u64,
    /// etcd's --quota-backend-bytes.
    pub quota_backend_bytes: u64,
    /// tmpfs bytes in use.
    pub tmpfs_used_bytes: u64,
    /// tmpfs size.
    pub tmpfs_size_bytes: u64,
    /// Node memory in use.
    pub memory_used_bytes: u64,
    /// Node memory.
    pub memory_total_bytes: u64,
    /// When the current epoch's etcd started (Unix seconds).
    pub epoch_started_unix: Option<i64>,
    /// Seconds since then (the AGE column).
    pub age_seconds: Option<u64>,
}

/// The summary line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Ring members.
    pub members: usize,
    /// Keys over all members.
    pub keys: u64,
    /// Max / mean keys per member; absent without keys.
    pub balance: Option<f64>,
    /// The router's revision.
    pub router_revision: i64,
}

fn state_name(state: i32) -> &'static str {
    match AgentState::try_from(state).unwrap_or(AgentState::Unspecified) {
        AgentState::Unspecified => "Unknown",
        AgentState::Starting => "Starting",
        AgentState::Serving => "Serving",
        AgentState::Degraded => "Degraded",
        AgentState::Draining => "Draining",
        AgentState::Stopped => "Stopped",
    }
}

/// `Healthy` / `Unavailable`, the router's view of a member.
pub fn health_name(health: i32) -> &'static str {
    match MemberHealth::try_from(health).unwrap_or(MemberHealth::Unspecified) {
        MemberHealth::Healthy => "Healthy",
        MemberHealth::Unavailable => "Unavailable",
        MemberHealth::Unspecified => "Unknown",
    }
}

fn agent_facts(address: &str, status: &AgentStatus, now: i64) -> AgentFacts {
    let shard = status.shard.clone().unwrap_or_default();
    let tmpfs = status.tmpfs.clone().unwrap_or_default();
    let node = status.node.unwrap_or_default();
    let started = (status.epoch_started_unix > 0).then_some(status.epoch_started_unix);
    AgentFacts {
        address: address.to_owned(),
        version: status.version.clone(),
        state: state_name(status.state).to_owned(),
        epoch: status.epoch,
        restarts: status.restarts,
        last_error: status.last_error.clone(),
        shard_healthy: shard.healthy,
        etcd_version: shard.etcd_version,
        alarms: shard.alarms,
        db_size_bytes: shard.db_size_bytes.max(0) as u64,
        quota_backend_bytes: shard.quota_backend_bytes.max(0) as u64,
        tmpfs_used_bytes: tmpfs.used_bytes,
        tmpfs_size_bytes: tmpfs.size_bytes,
        memory_used_bytes: node
            .memory_total_bytes
            .saturating_sub(node.memory_available_bytes),
        memory_total_bytes: node.memory_total_bytes,
        epoch_started_unix: started,
        age_seconds: started.map(|s| (now - s).max(0) as u64),
    }
}

pub(super) fn share(used: u64, limit: u64) -> Option<f64> {
    (limit > 0).then(|| used as f64 / limit as f64)
}

/// True if the agent really lags behind the router's ring `generation`,
/// which has been current for `age` seconds: it still reports an older
/// generation although the change is [`GENERATION_GRACE_SECONDS`] old and
/// the agent has heartbeated [`GENERATION_ACK_SECONDS`] or more after it
/// (an agent that has not heartbeated since is flagged as silent instead).
/// Without the age (an older router) nothing is flagged.
pub fn agent_lags(registered: &RegisteredAgent, generation: u64, age: Option<u64>) -> bool {
    registered.generation_seen < generation
        && age.is_some_and(|age| {
            age >= GENERATION_GRACE_SECONDS
                && registered.last_heartbeat_seconds_ago + GENERATION_ACK_SECONDS <= age
        })
}

/// What needs attention on one member.
fn warnings(
    member: &RingMember,
    registered: Option<&RegisteredAgent>,
    agent: Option<&AgentFacts>,
    generation: u64,
    generation_age: Option<u64>,
) -> Vec<String> {
    let mut out = Vec::new();
    if member.health != MemberHealth::Healthy as i32 {
        let why = if member.last_error.is_empty() {
            String::new()
        } else {
            format!(": {}", member.last_error)
        };
        out.push(format!("unhealthy: the router cannot use this shard{why}"));
    }
    if let Some(reg) = registered {
        if agent_lags(reg, generation, generation_age) {
            out.push(format!(
                "old generation: the agent still reports ring generation {}, the router has been \
                 at {generation} for {} and heard from the agent since",
                reg.generation_seen,
                human::age(Duration::from_secs(generation_age.unwrap_or_default()))
            ));
        }
        if reg.last_heartbeat_seconds_ago >= HEARTBEAT_STALE_SECONDS {
            out.push(format!(
                "no heartbeat from the agent for {}",
                human::age(Duration::from_secs(reg.last_heartbeat_seconds_ago))
            ));
        }
        if !reg.healthy && agent.is_none() {
            out.push("unhealthy: the agent's last heartbeat reported its shard down".into());
        }
        if let Some(a) = agent
            && a.epoch != reg.epoch
            && reg.epoch != 0
        {
            out.push(format!(
                "new shard epoch {} (the router knows epoch {}): the shard restarted empty",
                a.epoch, reg.epoch
            ));
        }
    }
    if let Some(a) = agent {
        if a.state != "Serving" {
            out.push(format!("unhealthy: agent is {}", a.state));
        } else if !a.shard_healthy {
            out.push("unhealthy: the shard does not answer its agent".into());
        }
        if !a.alarms.is_empty() {
            out.push(format!("etcd alarms: {}", a.alarms.join(", ")));
        }
        if let Some(s) = share(a.tmpfs_used_bytes, a.tmpfs_size_bytes).filter(|s| *s >= NEAR_FULL) {
            out.push(format!(
                "tmpfs {:.0}% full ({} of {})",
                s * 100.0,
                format_bytes(a.tmpfs_used_bytes),
                format_bytes(a.tmpfs_size_bytes)
            ));
        }
        if let Some(s) = share(a.db_size_bytes, a.quota_backend_bytes).filter(|s| *s >= NEAR_FULL) {
            out.push(format!(
                "etcd database at {:.0}% of its quota ({} of {})",
                s * 100.0,
                format_bytes(a.db_size_bytes),
                format_bytes(a.quota_backend_bytes)
            ));
        }
    }
    out
}

/// Max / mean of the members' key counts; `None` without members or keys.
pub fn balance(counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if counts.is_empty() || total == 0 {
        return None;
    }
    let mean = total as f64 / counts.len() as f64;
    counts.iter().max().map(|&max| max as f64 / mean)
}

/// Builds the report from the router's status and each member's agent
/// status (or the reason it is unknown), in member order.
pub fn report(
    address: &str,
    status: &RouterStatus,
    agents: Vec<Option<Result<AgentStatus, String>>>,
    now: i64,
) -> StatusReport {
    let mut members = status.members.clone();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::with_capacity(members.len());
    for (member, agent) in members.iter().zip(agents) {
        let registered = status.agents.iter().find(|a| a.name == member.name);
        let (facts, agent_error) = match (registered, agent) {
            (Some(reg), Some(Ok(s))) => (
                Some(agent_facts(
                    crate::connect::user_facing_address(reg),
                    &s,
                    now,
                )),
                None,
            ),
            (_, Some(Err(why))) => (None, Some(why)),
            (Some(reg), None) if reg.agent_address.is_empty() => (
                None,
                Some("the agent registered without an address".to_owned()),
            ),
            _ => (
                None,
                Some(
                    "no agent registered with the router for this member (start its ste-agent \
                     with --router)"
                        .to_owned(),
                ),
            ),
        };
        rows.push(MemberStatus {
            node: member.name.clone(),
            shard: member.endpoint.clone(),
            weight: member.weight,
            health: health_name(member.health).to_owned(),
            last_error: (!member.last_error.is_empty()).then(|| member.last_error.clone()),
            keys: member.key_count,
            shard_revision: member.shard_revision,
            generation: registered.map(|r| r.generation_seen),
            generation_behind: registered
                .is_some_and(|r| agent_lags(r, status.generation, status.generation_age_seconds)),
            warnings: warnings(
                member,
                registered,
                facts.as_ref(),
                status.generation,
                status.generation_age_seconds,
            ),
            agent: facts,
            agent_error,
        });
    }
    let counts: Vec<u64> = rows.iter().map(|m| m.keys).collect();
    StatusReport {
        router: RouterFacts {
            address: address.to_owned(),
            version: status.version.clone(),
            revision: status.revision,
            generation: status.generation,
            generation_age_seconds: status.generation_age_seconds,
            keys: status.keys,
            serving: status.serving,
            migration: status.migration.as_ref().map(MigrationFacts::from),
            key_index: status.key_index.clone(),
        },
        summary: Summary {
            members: rows.len(),
            keys: counts.iter().sum(),
            balance: balance(&counts),
            router_revision: status.revision,
        },
        members: rows,
    }
}
