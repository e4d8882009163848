//! Shutdown: Leave before etcd stops on SIGTERM, no drain after the router
//! stopped (SIGQUIT), a drain bounded by its timeout.

use nix::sys::signal::Signal;
use ste_tests::procs::alive;
use ste_tests::{AgentOptions, TestAgent};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::fake_ring::{LeaveMode, fake_router};
use crate::{LOCALHOST, WAIT, router_args, wait_metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_a_member_leaves_before_etcd_stops() -> anyhow::Result<()> {
    let router = fake_router(LeaveMode::Complete).await?;
    let ring = &router.ring;
    let mut options = AgentOptions::new("leaver", LOCALHOST);
    options.extra_args = router_args(router.addr, &[]);
    let mut agent = TestAgent::start(options).await?;
    wait_metric(&agent, "ste_agent_ring_member", 1.0).await?;
    let etcd_pid = agent.status().await?.shard.unwrap_or_default().pid;

    agent.signal(Signal::SIGTERM)?;
    let exit = agent.wait_exit(WAIT).await?;
    let log = agent.log();
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");

    let leaves = ring.calls(|c| c.leaves.clone());
    assert_eq!(leaves.len(), 1, "{leaves:?}; log:\n{log}");
    let leave = &leaves[0];
    assert_eq!(leave.name, "leaver");
    assert!(leave.shard_answered_at_start, "etcd stopped before Leave");
    assert!(
        leave.shard_answered_before_done,
        "etcd stopped before DONE; log:\n{log}"
    );
    assert_eq!(
        leave.agent_health,
        Some(ServingStatus::NotServing as i32),
        "health goes NOT_SERVING before the drain"
    );

    let drained = log.find("drained: left the ring");
    let stopped = log.find("etcd stopped");
    assert!(
        drained.is_some() && stopped.is_some() && drained < stopped,
        "{log}"
    );
    assert!(log.contains("2/2 keys moved"), "{log}");
    assert!(!alive(etcd_pid), "etcd outlived the agent");
    assert!(agent.etcd_pids().is_empty());
    assert_eq!(agent.mount_count(), 0);
    Ok(())
}

/// Lines the agent itself logged at WARN or ERROR (etcd's own lines are
/// relayed at DEBUG and do not show at the default filter).
pub(crate) fn alarms(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

/// `local-cluster.sh down`: the router is stopped first, then the agents get
/// SIGQUIT. No drain is attempted and nothing in the log looks like data
/// loss; etcd stops and the tmpfs is unmounted as on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_after_the_router_stopped_tears_down_without_draining_or_alarm()
-> anyhow::Result<()> {
    let router = fake_router(LeaveMode::Complete).await?;
    let ring = router.ring.clone();
    let mut options = AgentOptions::new("torn-down", LOCALHOST);
    options.extra_args = router_args(router.addr, &[]);
    let mut agent = TestAgent::start(options).await?;
    wait_metric(&agent, "ste_agent_ring_member", 1.0).await?;
    agent
        .etcd()
        .await?
        .put("/registry/pods/default/doomed", "v", None)
        .await?;
    agent
        .wait_status("the key counted", |s| {
            s.shard.as_ref().is_some_and(|sh| sh.key_count == 1)
        })
        .await?;
    let etcd_pid = agent.status().await?.shard.unwrap_or_default().pid;

    router.stop().await;
    agent.signal(Signal::SIGQUIT)?;
    let exit = agent.wait_exit(WAIT).await?;
    let log = agent.log();
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    assert!(ring.calls(|c| c.leaves.is_empty()), "a drain was attempted");
    assert!(
        log.contains(
            "SIGQUIT: stopping without draining (teardown); the shard's 1 key is discarded with it"
        ),
        "{log}"
    );
    assert!(!log.contains("asking the router to drain"), "{log}");
    assert_eq!(alarms(&log), Vec::<&str>::new(), "log:\n{log}");
    assert!(log.contains("agent stopped"), "{log}");
    assert!(!alive(etcd_pid), "etcd outlived the agent");
    assert!(agent.etcd_pids().is_empty());
    assert_eq!(agent.mount_count(), 0, "tmpfs left mounted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_does_not_finish_is_bounded_by_the_drain_timeout() -> anyhow::Result<()> {
    let router = fake_router(LeaveMode::Hang).await?;
    let ring = &router.ring;
    let mut options = AgentOptions::new("stuck", LOCALHOST);
    options.extra_args = router_args(router.addr, &["--drain-timeout", "2s"]);
    let mut agent = TestAgent::start(options).await?;
    wait_metric(&agent, "ste_agent_ring_member", 1.0).await?;

    agent.signal(Signal::SIGTERM)?;
    let exit = agent.wait_exit(WAIT).await?;
    let log = agent.log();
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    assert_eq!(ring.calls(|c| c.leaves.len()), 1, "{log}");
    assert!(
        log.contains("drain did not finish within --drain-timeout"),
        "{log}"
    );
    assert!(agent.etcd_pids().is_empty());
    assert_eq!(agent.mount_count(), 0);
    Ok(())
}
