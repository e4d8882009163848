//! SIGTERM with clients connected: the router ends its watches and lease
//! keep-alives with UNAVAILABLE (as etcd's clients see a member stop, so
//! they reconnect and resume) and exits at once, instead of holding its
//! graceful shutdown open for the streams until a deadline.

use std::time::{Duration, Instant};

use etcd_client::WatchOptions;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ste_tests::ShardedRouter;
use ste_tests::keys::PODS;
use ste_tests::procs::alive;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_watches_and_keep_alives_and_the_router_exits() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(2, &[]).await?;
    let mut client = cluster.router.client().await?;
    let mut watch = client
        .watch(PODS, Some(WatchOptions::new().with_prefix()))
        .await?;
    assert!(watch.message().await?.expect("created").created());
    let lease = client.lease_grant(60, None).await?.id();
    let (mut keeper, mut keep_alives) = client.lease_keep_alive(lease).await?;
    keeper.keep_alive().await?;
    assert!(keep_alives.message().await?.is_some());

    let pid = cluster.router.pid().expect("the router runs");
    let sent = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM)?;

    let ended = tokio::time::timeout(Duration::from_secs(30), watch.message()).await?;
    let status = ended.expect_err("the watch ends with an error, not a clean end");
    assert!(
        status.to_string().contains("Unavailable") || status.to_string().contains("shutting down"),
        "{status}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(30), keep_alives.message()).await?;
    assert!(ended.is_err(), "{ended:?}");

    // Exited (a zombie until the fixture reaps it). Before, the graceful
    // shutdown waited 5 s for the open streams; the router now exits in
    // tens of milliseconds (the bound leaves room for a loaded machine and
    // the 50 ms poll).
    ste_tests::eventually("the router to exit", Duration::from_secs(10), || async {
        if alive(pid) {
            Err("still running".to_string())
        } else {
            Ok(())
        }
    })
    .await?;
    let took = sent.elapsed();
    eprintln!("the router exited {took:?} after SIGTERM");
    assert!(
        took < Duration::from_secs(1),
        "the router took {took:?} to exit after SIGTERM with a watch open"
    );
    let log = cluster.router.log();
    assert!(log.contains("router stopped"), "{log}");
    Ok(())
}
