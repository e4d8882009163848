//! The membership loop: keeps the etcd listener's health in step with the
//! ring, fences members whose shard was lost, resumes an interrupted ring
//! change, and joins registered agents automatically.

use std::sync::Arc;
use std::time::Duration;

use ste_core::ring::Member;
use tokio::sync::mpsc;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::store::Store;
use crate::store::migrate::ChangeKind;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub auto_join: bool,
    pub member_dead_after: Duration,
    pub interval: Duration,
}

const SERVICES: [&str; 3] = ["", "etcdserverpb.KV", "etcdserverpb.Watch"];

pub async fn manage(store: Arc<Store>, health: HealthReporter, policy: Policy) {
    let mut tick = tokio::time::interval(policy.interval);
    let mut serving = None;
    loop {
        tick.tick().await;
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
        if store.change_lock.try_lock().is_err() {
            continue;
        }
        if let Some((member, reason)) = lost_member(&store, policy.member_dead_after) {
            tracing::warn!(%member, %reason, "fencing member");
            let members: Vec<Member> = store
                .membership()
                .placing_ring()
                .members()
                .filter(|m| m.name != member)
                .cloned()
                .collect();
            run(&store, ChangeKind::Fence, &member, members).await;
            store.agents.set_joined(&member, None);
            continue;
        }
        let pending = store.membership().target.clone();
        if let Some(target) = pending {
            let members: Vec<Member> = target.members().cloned().collect();
            run(&store, ChangeKind::Resume, "", members).await;
            continue;
        }
        if policy.auto_join
            && let Some(agent) = joinable(&store, policy.member_dead_after)
        {
            tracing::info!(agent = %agent.name, epoch = agent.epoch, "joining a registered agent");
            let mut members: Vec<Member> = store.membership().ring.members().cloned().collect();
            members.push(
                Member::new(agent.name.clone(), agent.endpoint.clone()).with_weight(agent.weight),
            );
            if run(&store, ChangeKind::Join, &agent.name, members).await {
                store.agents.set_joined(&agent.name, Some(agent.epoch));
            }
        }
    }
}

/// Runs a change to completion, logging its outcome; true if it succeeded.
async fn run(store: &Arc<Store>, kind: ChangeKind, member: &str, members: Vec<Member>) -> bool {
    let (tx, mut rx) = mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let result = store.change_ring(kind, member, members, false, tx).await;
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
fn lost_member(store: &Store, dead_after: Duration) -> Option<(String, String)> {
    let members: Vec<String> = store
        .membership()
        .ring
        .members()
        .map(|m| m.name.clone())
        .collect();
    for name in members {
        if let Some(agent) = store.agents.get(&name)
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
        let shard = store.membership().shards.get(&name).cloned();
        if let Some(shard) = shard {
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

fn joinable(store: &Store, within: Duration) -> Option<crate::store::agents::AgentInfo> {
    let membership = store.membership();
    store.agents.alive(within).into_iter().find(|a| {
        !a.no_join
            && !a.left
            && a.healthy
            && membership.ring.member(&a.name).is_none()
            && membership
                .target
                .as_ref()
                .is_none_or(|t| t.member(&a.name).is_none())
    })
}
