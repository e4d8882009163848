//! Start-up: the router rebuilds its index from the shards before it
//! serves, says NOT_SERVING meanwhile, and reports keys that sit on a shard
//! the ring does not assign them to.

use std::time::Duration;

use ste_tests::{TestEtcd, TestRouter};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health(router: &TestRouter) -> anyhow::Result<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(router.endpoint())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_serve_until_every_shard_is_scanned() -> anyhow::Result<()> {
    let a = TestEtcd::start("shard-a").await?;
    let mut b = TestEtcd::start("shard-b").await?;
    b.client()
        .await?
        .put("/registry/pods/x/y", "not through the router", None)
        .await?;
    b.kill();

    let router = TestRouter::spawn_new(&[("shard-a", &a.url), ("shard-b", &b.url)], &[])?;
    ste_tests::eventually(
        "the etcd listener to answer health checks",
        Duration::from_secs(60),
        || async { health(&router).await.map_err(|e| e.to_string()) },
    )
    .await?;
    // Shard b is down, so the scan cannot finish: no answers yet.
    assert_eq!(health(&router).await?, ServingStatus::NotServing);
    let mut client = router.client().await?;
    let error = client
        .get("/registry/pods/a/b", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("not serving yet"), "{error}");
    let status = router.status().await?;
    assert!(!status.serving);

    b.restart().await?;
    router.wait_ready().await?;
    assert_eq!(health(&router).await?, ServingStatus::Serving);
    client.put("/registry/pods/a/b", "v", None).await?;
    assert_eq!(
        client.get("/registry/pods/a/b", None).await?.kvs()[0].value(),
        b"v"
    );
    // The value written around the router is reported and ignored.
    assert!(
        router.log().contains("without an STE envelope"),
        "{}",
        router.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_the_wrong_shard_are_reported_at_start() -> anyhow::Result<()> {
    let a = TestEtcd::start("shard-a").await?;
    let b = TestEtcd::start("shard-b").await?;
    let mut first = TestRouter::start(&[("shard-a", &a.url), ("shard-b", &b.url)], &[]).await?;
    let mut client = first.client().await?;
    for i in 0..20 {
        client
            .put(format!("/registry/pods/ns/pod-{i}"), "v", None)
            .await?;
    }
    first.kill9();
    // The same shards under swapped names: every key now sits on a shard
    // the ring assigns it away from, as after an interrupted migration.
    let second = TestRouter::start(&[("shard-a", &b.url), ("shard-b", &a.url)], &[]).await?;
    let log = second.log();
    assert!(log.contains("the ring assigns elsewhere"), "{log}");
    let reported: usize = log
        .lines()
        .filter(|l| l.contains("the ring assigns elsewhere"))
        .filter_map(|l| {
            l.split("keys=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert_eq!(reported, 20, "{log}");
    Ok(())
}

/// Each port's reflection lists exactly what that port serves: the etcd API
/// on --listen, ste.v1.Ring on --admin-listen (the descriptor sets define
/// both, and the agent's ste.v1.Agent too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_exactly_what_each_port_serves() -> anyhow::Result<()> {
    let shard = TestEtcd::start("shard-a").await?;
    let router = TestRouter::start(&[("shard-a", &shard.url)], &[]).await?;
    let (v1, v1alpha) =
        ste_tests::reflection::listed_services(ste_tests::reflection::plain(router.listen).await?)
            .await?;
    assert_eq!(
        v1,
        [
            "etcdserverpb.Cluster",
            "etcdserverpb.KV",
            "etcdserverpb.Lease",
            "etcdserverpb.Maintenance",
            "etcdserverpb.Watch",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ],
        "etcd port, v1"
    );
    assert_eq!(v1alpha, v1, "etcd port, v1alpha");
    let (v1, v1alpha) = ste_tests::reflection::listed_services(
        ste_tests::pki::ste().admin_channel(router.admin).await?,
    )
    .await?;
    assert_eq!(
        v1,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "ste.v1.Ring",
        ],
        "admin port, v1"
    );
    assert_eq!(v1alpha, v1, "admin port, v1alpha");
    Ok(())
}
