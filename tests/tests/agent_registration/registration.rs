//! Register once serving, heartbeats, registering again after a new epoch,
//! when forgotten, and when the router comes up (again).

use std::net::SocketAddr;

use nix::sys::signal::Signal;
use ste_tests::procs::{alive, free_port, sigkill};
use ste_tests::{AgentOptions, TestAgent};

use crate::fake_ring::{FakeRing, LeaveMode, Served, fake_router};
use crate::{LOCALHOST, WAIT, router_args, wait_calls, wait_log, wait_metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_once_serving_and_heartbeats_with_no_join_and_weight() -> anyhow::Result<()> {
    let router = fake_router(LeaveMode::Complete).await?;
    let mut options = AgentOptions::new("opted-out", LOCALHOST);
    options.extra_args = router_args(router.addr, &["--no-join", "--weight", "3"]);
    let mut agent = TestAgent::start(options).await?;
    let ring = &router.ring;

    let register = wait_calls(&agent, ring, "a Register", |c| c.registers.first().cloned()).await?;
    assert_eq!(register.name, "opted-out");
    assert_eq!(
        register.agent_address,
        agent.addrs.grpc.to_string(),
        "an explicit --grpc-listen IP is advertised as is"
    );
    assert_eq!(register.endpoint, agent.addrs.client_url);
    assert_eq!(register.epoch, 1);
    assert_eq!(register.weight, 3);
    assert!(register.no_join);

    let beats = wait_calls(&agent, ring, "3 heartbeats", |c| {
        (c.heartbeats.len() >= 3).then(|| c.heartbeats.clone())
    })
    .await?;
    for (beat, registered) in &beats {
        assert_eq!(beat.name, "opted-out");
        assert_eq!(beat.epoch, 1);
        assert!(registered);
    }
    assert!(beats.iter().any(|(b, _)| b.healthy), "{beats:?}");
    assert_eq!(beats.last().map(|(b, _)| b.generation_seen), Some(5));
    assert_eq!(ring.calls(|c| c.registers.len()), 1, "registered once");

    wait_metric(&agent, "ste_agent_ring_registered", 1.0).await?;
    wait_metric(&agent, "ste_agent_ring_generation", 5.0).await?;
    wait_metric(&agent, "ste_agent_ring_member", 0.0).await?;

    // Not a member: nothing to drain.
    agent.signal(Signal::SIGTERM)?;
    let exit = agent.wait_exit(WAIT).await?;
    assert!(exit.success(), "exit {exit:?}; log:\n{}", agent.log());
    assert!(ring.calls(|c| c.leaves.is_empty()));
    assert!(
        agent.log().contains("not a ring member; nothing to drain"),
        "{}",
        agent.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_again_after_a_new_epoch_and_when_forgotten() -> anyhow::Result<()> {
    let router = fake_router(LeaveMode::Complete).await?;
    let ring = &router.ring;
    let mut options = AgentOptions::new("phoenix", LOCALHOST);
    // A long restart backoff keeps the dead epoch visible to heartbeats.
    options.extra_args = router_args(router.addr, &["--restart-backoff", "2s"]);
    let agent = TestAgent::start(options).await?;
    wait_calls(&agent, ring, "Register of epoch 1", |c| {
        c.registers.iter().find(|r| r.epoch == 1).cloned()
    })
    .await?;
    wait_metric(&agent, "ste_agent_ring_member", 1.0).await?;

    let pid = agent.status().await?.shard.unwrap_or_default().pid;
    assert!(pid > 0 && alive(pid));
    sigkill(pid);
    let second = wait_calls(&agent, ring, "Register of epoch 2", |c| {
        c.registers.iter().find(|r| r.epoch == 2).cloned()
    })
    .await?;
    assert_eq!(second.name, "phoenix");
    assert_eq!(second.endpoint, agent.addrs.client_url);
    let status = agent.status().await?;
    assert_eq!(status.epoch, 2);
    // While etcd was down the router heard an unhealthy heartbeat.
    assert!(
        ring.calls(|c| c.heartbeats.iter().any(|(b, _)| !b.healthy)),
        "{:?}",
        ring.calls(|c| c.heartbeats.clone())
    );
    assert_eq!(
        ring.calls(|c| c.registers.len()),
        2,
        "one Register per epoch"
    );

    // The router forgets the agent: the next heartbeat says so, and the agent
    // registers again (same epoch) straight away.
    ring.forget("phoenix");
    wait_calls(&agent, ring, "Register after being forgotten", |c| {
        (c.registers.len() >= 3).then_some(())
    })
    .await?;
    let (registers, beats_before) = ring.calls(|c| (c.registers.clone(), c.heartbeats.len()));
    assert_eq!(registers[2].epoch, 2);
    assert!(ring.calls(|c| c.heartbeats.iter().any(|(_, registered)| !registered)));
    wait_calls(&agent, ring, "a heartbeat after registering again", |c| {
        c.heartbeats[beats_before..]
            .iter()
            .find(|(b, registered)| *registered && b.epoch == 2)
            .cloned()
    })
    .await?;
    assert!(agent.log().contains("registering again"), "{}", agent.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_when_the_router_comes_up_and_again_after_it_restarts() -> anyhow::Result<()> {
    let addr = SocketAddr::from((LOCALHOST, free_port(LOCALHOST.into())));
    let mut options = AgentOptions::new("patient", LOCALHOST);
    options.extra_args = router_args(addr, &[]);
    let agent = TestAgent::start(options).await?;
    wait_log(&agent, "cannot reach the router", 1).await?;

    let first = Served::start(FakeRing::new(5, LeaveMode::Complete), addr).await?;
    wait_calls(&agent, &first.ring, "Register", |c| {
        c.registers.first().cloned()
    })
    .await?;
    wait_metric(&agent, "ste_agent_ring_registered", 1.0).await?;
    wait_log(&agent, "router reachable again", 1).await?;

    // The router restarts with no memory of the agent.
    first.stop().await;
    let second = Served::start(FakeRing::new(9, LeaveMode::Complete), addr).await?;
    let register = wait_calls(&agent, &second.ring, "Register at the new router", |c| {
        c.registers.first().cloned()
    })
    .await?;
    assert_eq!(register.epoch, 1, "same shard, same epoch");
    wait_metric(&agent, "ste_agent_ring_generation", 9.0).await?;
    // It learned of the restart from a heartbeat answered `registered: false`.
    let beats = second.ring.calls(|c| c.heartbeats.clone());
    assert!(
        beats
            .first()
            .is_some_and(|(b, registered)| !registered && b.epoch == 1),
        "{beats:?}"
    );
    assert!(agent.log().contains("registering again"), "{}", agent.log());
    Ok(())
}
