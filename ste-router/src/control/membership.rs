//! The membership loop: keeps the etcd listener's health in step with the
//! ring, fences members whose shard was lost, resumes an interrupted ring
//! change, and joins registered agents automatically.

use std::sync::Arc;
use std::time::Duration;

use ste_core::ring::Member;
use tokio::sync::mpsc;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::Control;
use super::agents::AgentInfo;
use super::ring_change::ChangeKind;
use crate::shutdown::Shutdown;

/// What the membership loop does on its own.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Join registered agents without `ring join` (`--auto-join`).
    pub auto_join: bool,
    /// The heaviest weight an agent is joined with automatically
    /// (`--max-auto-join-weight`): what a node registers is its own word.
    pub max_auto_join_weight: u32,
    /// Fence a member whose shard has not answered for this long.
    pub member_dead_after: Duration,
    /// How often the loop runs.
    pub interval: Duration,
}

/// The health service names of the etcd listener, kept in step with
/// whether the etcd API can serve.
pub const SERVICES: [&str; 3] = ["", "etcdserverpb.KV", "etcdserverpb.Watch"];

/// Runs the membership loop every `policy.interval` until `shutdown`.
pub async fn manage(
    control: Arc<Control>,
    health: HealthReporter,
    policy: Policy,
    mut shutdown: Shutdown,
) {
    let store = control.store().clone();
    let mut tick = tokio::time::interval(policy.interval);
    let mut serving = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let ok = store.check_ready().is_ok();
        if serving != Some(ok) {
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in SERVICES {
                health.set_service_status(service, status).await;
            }
            tracing::info!(serving = ok, "etcd API health");
            serving = Some(ok);
        }
        if control.changes().is_running() {
            continue;
        }
        if let Some((member, reason)) = lost_member(&control, policy.member_dead_after) {
            tracing::warn!(%member, %reason, "fencing member");
            let members: Vec<Member> = store
                .placement()
                .placing_ring()
                .members()
                .filter(|m| m.name != member)
                .cloned()
                .collect();
            run(&control, ChangeKind::Fence, &member, members).await;
            control.agents().set_joined(&member, None);
            control.agents().set_fenced(&member, true);
            continue;
        }
        if let Some(target) = store.placement().target() {
            let members: Vec<Member> = target.members().cloned().collect();
            run(&control, ChangeKind::Resume, "", members).await;
            continue;
        }
        if policy.auto_join
            && let Some(agent) = joinable(&control, policy.member_dead_after)
        {
            tracing::info!(agent = %agent.name, epoch = agent.epoch, "joining a registered agent");
            let weight = agent.weight.min(policy.max_auto_join_weight);
            if weight < agent.weight {
                tracing::warn!(
                    agent = %agent.name,
                    asked = agent.weight,
                    weight,
                    "the agent asked for a heavier weight than --max-auto-join-weight; joining it \
                     at the maximum (an operator may join it heavier with `kubectl ste ring join`)"
                );
            }
            let joining =
                Member::new(agent.name.clone(), agent.endpoint.clone()).with_weight(weight);
            // Only an empty shard can join. A fenced member's shard may
            // still hold keys (written after it came back empty and before
            // the fence, or kept by a shard that was only unreachable);
            // the fence dropped them and announced their loss, so they go.
            if agent.fenced {
                match store.clear_fenced_shard(&joining).await {
                    Ok(0) => {}
                    Ok(keys) => tracing::warn!(
                        agent = %agent.name,
                        keys,
                        "cleared the keys a fenced member left on its shard"
                    ),
                    Err(error) => {
                        tracing::warn!(agent = %agent.name, %error, "clearing a fenced member's shard failed; will retry");
                        continue;
                    }
                }
            }
            let mut members: Vec<Member> = store.placement().ring().members().cloned().collect();
            members.push(joining);
            if run(&control, ChangeKind::Join, &agent.name, members).await {
                control.agents().set_joined(&agent.name, Some(agent.epoch));
                control.agents().set_fenced(&agent.name, false);
            }
        }
    }
}

/// Runs a change to completion, logging its outcome; true if it succeeded.
async fn run(control: &Control, kind: ChangeKind, member: &str, members: Vec<Member>) -> bool {
    let (tx, mut rx) = mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let result = control
        .changes()
        .run(kind, member, members, false, tx)
        .await;
    let _ = drain.await;
    match result {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(kind = kind.name(), member, %error, "ring change failed; will retry");
            false
        }
    }
}

/// A member whose agent reports a new shard epoch, or whose shard has not
/// answered for `dead_after`.
fn lost_member(control: &Control, dead_after: Duration) -> Option<(String, String)> {
    let placement = control.store().placement();
    let members: Vec<String> = placement.ring().members().map(|m| m.name.clone()).collect();
    for name in members {
        if let Some(agent) = control.agents().get(&name)
            && let Some(joined) = agent.joined_epoch
            && agent.epoch != joined
        {
            return Some((
                name,
                format!(
                    "its shard restarted empty (epoch {joined} → {})",
                    agent.epoch
                ),
            ));
        }
        if let Some(shard) = placement.shard_named(&name) {
            let health = shard.health();
            if !health.healthy && health.since.elapsed() >= dead_after {
                return Some((
                    name,
                    format!(
                        "its shard has not answered for {:?}: {}",
                        health.since.elapsed(),
                        health.last_error
                    ),
                ));
            }
        }
    }
    None
}

/// A registered, healthy agent that may join and is in no ring yet: not
/// `--no-join`, not drained away since it registered, not held out by an
/// operator's leave.
fn joinable(control: &Control, within: Duration) -> Option<AgentInfo> {
    let placement = control.store().placement();
    let agents = control.agents();
    agents.alive(within).into_iter().find(|a| {
        !a.no_join
            && !a.left
            && a.healthy
            && !placement.is_member_or_joining(&a.name)
            && !agents.is_held_out(&a.name)
    })
}
