//! While a shard is down, a Get of a key the router knows does not exist
//! is answered without it: kube-apiserver's /livez and /readyz read
//! `/registry/health` (a key nobody writes) through the router, and every
//! kube-apiserver reported 500 while the one shard the ring places it on
//! was down (found by the end-to-end tests). Keys that exist on the dead
//! shard, and lists, still fail with UNAVAILABLE.

use std::time::Duration;

use etcd_client::GetOptions;
use ste_tests::keys::PODS;
use ste_tests::{ShardedRouter, ring};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_key_reads_as_absent_while_its_shard_is_down() -> anyhow::Result<()> {
    let mut cluster = ShardedRouter::start(3, &[]).await?;
    let mut client = cluster.router.client().await?;
    let mut admin = cluster.router.admin().await?;
    let mut present = None;
    for i in 0..60 {
        let key = format!("{PODS}default/pod-{i}");
        client.put(key.as_str(), "v", None).await?;
        if present.is_none() && ring::member_of(&mut admin, &key).await? == "shard-b" {
            present = Some(key);
        }
    }
    let present = present.expect("a pod key on shard-b");
    let absent = ring::first_placed_on(
        &mut admin,
        "shard-b",
        (0..200).map(|i| format!("/registry/health-{i}")),
    )
    .await?;

    // Stopped, not killed: its port stays taken, so no other test's etcd
    // can take it and answer as a new epoch of shard-b.
    cluster
        .shard("shard-b")
        .expect("shard-b")
        .signal(nix::sys::signal::Signal::SIGSTOP)?;

    // Once the router knows shard-b is down, the absent key reads as
    // absent (with the current revision), as on a healthy cluster.
    let answer = ste_tests::eventually(
        "a Get of the absent key to succeed",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            let key = absent.clone();
            async move { client.get(key, None).await.map_err(|e| e.to_string()) }
        },
    )
    .await?;
    assert!(answer.kvs().is_empty(), "{answer:?}");
    assert!(answer.header().expect("header").revision() > 1);

    // What is on the dead shard, and lists, still fail: nothing is made up.
    let err = client
        .get(present.as_str(), None)
        .await
        .expect_err("a key on the dead shard");
    assert!(err.to_string().contains("is unavailable"), "{err}");
    let err = client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await
        .expect_err("a list over the dead shard");
    assert!(err.to_string().contains("is unavailable"), "{err}");
    // A read at an explicit revision is not answered from the index.
    let current = answer.header().expect("header").revision();
    let err = client
        .get(
            absent.as_str(),
            Some(GetOptions::new().with_revision(current)),
        )
        .await
        .expect_err("a read at an explicit revision");
    assert!(err.to_string().contains("is unavailable"), "{err}");
    Ok(())
}
