//! A router that cannot be reached, or is not a router: serving and
//! shutdown go on, and the log says what is wrong.

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use ste_tests::procs::free_port;
use ste_tests::{AgentOptions, TestAgent};

use crate::{LOCALHOST, WAIT, router_args, wait_log, wait_metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_router_blocks_neither_serving_nor_shutdown() -> anyhow::Result<()> {
    let nobody = SocketAddr::from((LOCALHOST, free_port(LOCALHOST.into())));
    let mut options = AgentOptions::new("lonely", LOCALHOST);
    options.extra_args = [
        "--router",
        &nobody.to_string(),
        "--heartbeat-interval",
        "100ms",
        "--log",
        "info,etcd=warn,ste_agent::registration=debug",
    ]
    .map(String::from)
    .to_vec();
    let mut agent = TestAgent::start(options).await?;
    // Several retries, one warning.
    wait_log(&agent, "router still unreachable", 5).await?;
    let log = agent.log();
    assert_eq!(
        log.matches("cannot reach the router").count(),
        1,
        "warned once per outage:\n{log}"
    );
    wait_metric(&agent, "ste_agent_ring_registered", 0.0).await?;
    assert!(agent.status().await?.state() == ste_proto::v1::AgentState::Serving);

    agent.signal(Signal::SIGTERM)?;
    let exit = agent.wait_exit(Duration::from_secs(30)).await?;
    let log = agent.log();
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    assert!(
        log.contains("router unreachable; stopping without draining"),
        "{log}"
    );
    assert!(agent.etcd_pids().is_empty());
    assert_eq!(agent.mount_count(), 0);
    Ok(())
}

/// `--router` at a web server: the agent says it is probably not the
/// router, instead of tonic's bare "grpc-status header missing".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_server_at_the_router_address_is_named_as_such() -> anyhow::Result<()> {
    let web = ste_tests::web::https2_not_found().await?;
    let mut options = AgentOptions::new("misdialled", LOCALHOST);
    options.extra_args = router_args(web.addr, &[]);
    let mut agent = TestAgent::start(options).await?;
    wait_log(
        &agent,
        "the server at the --router address answered HTTP 404 without a gRPC status: this is \
         probably not the STE router's admin API (default ports 2490 for agents, 2492 for users); check --router",
        1,
    )
    .await?;
    assert!(
        agent
            .log()
            .contains("--router does not lead to the router's admin API"),
        "{}",
        agent.log()
    );
    agent.signal(Signal::SIGTERM)?;
    assert!(agent.wait_exit(WAIT).await?.success(), "{}", agent.log());
    Ok(())
}
