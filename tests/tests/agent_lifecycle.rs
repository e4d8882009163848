//! ste-agent against real etcd and real tmpfs mounts: serving, crash
//! recovery, shutdown, stale mounts.

use std::net::Ipv4Addr;
use std::time::Duration;

use nix::sys::signal::Signal;
use ste_agent::mount::mounts_at;
use ste_proto::v1::AgentState;
use ste_tests::procs::{alive, sigkill};
use ste_tests::{AgentOptions, TestAgent, TestCluster, eventually};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_serve_their_shards_on_tmpfs() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    for (i, agent) in cluster.agents.iter().enumerate() {
        // The tmpfs is mounted once, with the requested size and options.
        let mounts = mounts_at(&agent.data_dir())?;
        assert_eq!(mounts.len(), 1, "{mounts:?}");
        assert_eq!(mounts[0].fs_type, "tmpfs");
        assert!(
            mounts[0].super_options.contains("size=262144k"),
            "{mounts:?}"
        );
        assert!(mounts[0].super_options.contains("mode=700"), "{mounts:?}");
        assert_eq!(
            agent.addrs.grpc.ip().to_string(),
            format!("127.0.0.{}", 2 + i)
        );

        let key = format!("/registry/pods/default/web-{i}");
        let mut etcd = agent.etcd().await?;
        etcd.put(key.as_str(), "pod-bytes", None).await?;
        let got = etcd.get(key.as_str(), None).await?;
        assert_eq!(got.kvs()[0].value(), b"pod-bytes");
        // Outside the prefix: stored, but not counted.
        etcd.put("/registry/nodes/n1", "x", None).await?;

        // Both writes probed: revision 3 (etcd starts at 1), one key counted.
        let status = agent
            .wait_status("both writes probed", |s| {
                s.shard
                    .as_ref()
                    .is_some_and(|sh| sh.key_count == 1 && sh.revision >= 3)
            })
            .await?;
        let shard = status.shard.clone().unwrap_or_default();
        let tmpfs = status.tmpfs.clone().unwrap_or_default();
        assert_eq!(status.node_name, agent.options.node_name);
        assert_eq!(status.epoch, 1);
        assert_eq!(status.restarts, 0);
        assert!(shard.healthy);
        assert_eq!(shard.endpoint, agent.addrs.client_url);
        assert!(shard.etcd_version.starts_with("3."), "{shard:?}");
        assert!(shard.revision >= 3, "{shard:?}");
        assert!(shard.db_size_bytes > 0);
        assert_eq!(tmpfs.size_bytes, 256 << 20);
        assert!(tmpfs.used_bytes > 0 && tmpfs.managed && tmpfs.mounted);
        let node = status.node.unwrap_or_default();
        assert!(node.memory_total_bytes >= node.memory_available_bytes);
        assert!(node.memory_available_bytes > 0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_etcd_restarts_empty_in_a_new_epoch() -> anyhow::Result<()> {
    let agent = TestAgent::start(AgentOptions::new("crashy", LOCALHOST)).await?;
    let mut etcd = agent.etcd().await?;
    etcd.put("/registry/pods/default/lost", "v", None).await?;
    let before = agent
        .wait_status("key counted", |s| {
            s.shard.as_ref().is_some_and(|sh| sh.key_count == 1)
        })
        .await?;
    let pid = before.shard.as_ref().map(|s| s.pid).unwrap_or_default();
    assert!(pid > 0 && alive(pid));

    sigkill(pid);
    // The default restart backoff (1 s) keeps DEGRADED visible for a while.
    let degraded = agent
        .wait_status("DEGRADED", |s| s.state() == AgentState::Degraded)
        .await?;
    assert!(!degraded.shard.unwrap_or_default().healthy);
    assert!(
        degraded.last_error.contains("etcd exited"),
        "{}",
        degraded.last_error
    );

    let after = agent
        .wait_status("SERVING in the next epoch", |s| {
            s.state() == AgentState::Serving && s.epoch == before.epoch + 1
        })
        .await?;
    assert_eq!(after.restarts, before.restarts + 1);
    assert_eq!(after.shard.unwrap_or_default().key_count, 0);
    let mut etcd = agent.etcd().await?;
    let got = etcd
        .get(
            "/registry/pods/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    assert!(
        got.kvs().is_empty(),
        "a new epoch starts from an empty shard"
    );
    assert_eq!(agent.mount_count(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_etcd_unmounts_and_exits_zero() -> anyhow::Result<()> {
    let mut agent = TestAgent::start(AgentOptions::new("polite", LOCALHOST)).await?;
    let etcd_pid = agent.status().await?.shard.unwrap_or_default().pid;
    assert!(alive(etcd_pid));
    assert_eq!(agent.mount_count(), 1);

    let sent = std::time::Instant::now();
    agent.signal(Signal::SIGTERM)?;
    let exit = agent.wait_exit(Duration::from_secs(30)).await?;
    let took = sent.elapsed();
    eprintln!("the agent exited {took:?} after SIGTERM");
    assert!(exit.success(), "exit {exit:?}; log:\n{}", agent.log());
    // etcd stopped, tmpfs unmounted: tens of milliseconds (the bound leaves
    // room for a loaded machine and the 50 ms poll).
    assert!(
        took < Duration::from_secs(1),
        "the agent took {took:?} to exit after SIGTERM; log:\n{}",
        agent.log()
    );
    assert!(!alive(etcd_pid), "etcd outlived the agent");
    assert!(agent.etcd_pids().is_empty());
    assert_eq!(agent.mount_count(), 0, "tmpfs left mounted");
    let log = agent.log();
    assert!(
        log.contains("shutting down") && log.contains("agent stopped"),
        "{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_also_shuts_down_cleanly() -> anyhow::Result<()> {
    let mut agent = TestAgent::start(AgentOptions::new("ctrl-c", LOCALHOST)).await?;
    agent.signal(Signal::SIGINT)?;
    let exit = agent.wait_exit(Duration::from_secs(30)).await?;
    assert!(exit.success(), "exit {exit:?}; log:\n{}", agent.log());
    assert!(agent.etcd_pids().is_empty());
    assert_eq!(agent.mount_count(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_takes_etcd_along_and_its_tmpfs_is_reused() -> anyhow::Result<()> {
    let mut agent = TestAgent::start(AgentOptions::new("phoenix", LOCALHOST)).await?;
    let written = agent
        .etcd()
        .await?
        .put("/registry/pods/a/b", "v", None)
        .await?;
    let member_before = written.header().expect("header").member_id();
    let etcd_pid = agent.status().await?.shard.unwrap_or_default().pid;

    agent.signal(Signal::SIGKILL)?;
    agent.wait_exit(Duration::from_secs(10)).await?;
    eventually(
        "etcd to die with its agent",
        Duration::from_secs(10),
        || async {
            if alive(etcd_pid) {
                Err(format!("etcd {etcd_pid} still alive"))
            } else {
                Ok(())
            }
        },
    )
    .await?;
    assert_eq!(
        agent.mount_count(),
        1,
        "the crashed run's tmpfs stays behind"
    );

    agent.respawn()?;
    let status = agent.wait_serving().await?;
    assert_eq!(agent.mount_count(), 1, "reused, not stacked");
    assert_eq!(status.epoch, 1);
    assert_eq!(
        status.shard.unwrap_or_default().key_count,
        0,
        "wiped on reuse"
    );
    assert!(agent.log().contains("reusing a tmpfs"));
    // Same name, address and epoch number, but another etcd member: a
    // client that knew the old one (the router) can tell the empty shard
    // from the one it wrote to.
    let member_after = agent
        .etcd()
        .await?
        .status()
        .await?
        .header()
        .expect("header")
        .member_id();
    assert_ne!(member_after, member_before, "a fresh start is a new member");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_tmpfs_of_another_size_is_resized_not_stacked() -> anyhow::Result<()> {
    let mut options = AgentOptions::new("resize", LOCALHOST);
    let mut agent = TestAgent::start(options.clone()).await?;
    agent.signal(Signal::SIGKILL)?;
    agent.wait_exit(Duration::from_secs(10)).await?;

    options.tmpfs_size = "300Mi".into();
    agent.options = options;
    agent.respawn()?;
    let status = agent.wait_serving().await?;
    assert_eq!(agent.mount_count(), 1);
    assert_eq!(status.tmpfs.unwrap_or_default().size_bytes, 300 << 20);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_etcd_is_killed_and_restarted() -> anyhow::Result<()> {
    let mut options = AgentOptions::new("frozen", LOCALHOST);
    options.extra_args = vec!["--etcd-hang-timeout".into(), "2s".into()];
    let agent = TestAgent::start(options).await?;
    let pid = agent.status().await?.shard.unwrap_or_default().pid;
    // A stopped process keeps its sockets open but never answers.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGSTOP)?;
    let after = agent
        .wait_status("a new epoch after the hang", |s| {
            s.state() == AgentState::Serving && s.epoch == 2
        })
        .await?;
    assert_eq!(after.restarts, 1);
    assert!(!alive(pid), "the hung etcd was not killed");
    assert!(
        after.last_error.contains("stopped answering"),
        "{}",
        after.last_error
    );
    Ok(())
}
