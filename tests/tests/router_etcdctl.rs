//! The real `etcdctl` (ETCDCTL_API=3) through the router: every command an
//! operator would reach for, checked on exit status and output, with keys
//! spread over three shards.

// The tests live in router_etcdctl/, by command family; this file stays the
// target's root (scripts/test.sh runs every tests/tests/router_*.rs by name)
// and keeps the cluster checks they share.
#[path = "router_etcdctl/cluster.rs"]
mod cluster;
#[path = "router_etcdctl/etcdctl.rs"]
mod etcdctl;
#[path = "router_etcdctl/kv.rs"]
mod kv;
#[path = "router_etcdctl/watch.rs"]
mod watch;

use std::collections::BTreeMap;

use ste_tests::{ShardedRouter, ring};

/// No shard failed in these tests: the router must not have panicked, nor
/// resynchronised a shard (which cuts every watch, making every client
/// relist).
fn assert_router_quiet(cluster: &ShardedRouter) {
    let log = cluster.router.log();
    assert!(!log.contains("panicked"), "the router panicked:\n{log}");
    assert!(
        !log.contains("needs a resync"),
        "the router resynchronised a shard although none failed:\n{log}"
    );
}

/// The member the router places each key on.
async fn placement(
    cluster: &ShardedRouter,
    keys: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut admin = cluster.router.admin().await?;
    let mut placed = BTreeMap::new();
    for key in keys {
        placed.insert(key.clone(), ring::member_of(&mut admin, key).await?);
    }
    Ok(placed)
}

/// Keys under `prefix` that each shard holds, read from the shards directly.
async fn held_by_shards(
    cluster: &ShardedRouter,
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut held = BTreeMap::new();
    for shard in &cluster.shards {
        let count = shard.count_under(prefix).await?;
        held.insert(shard.name.clone(), count);
    }
    Ok(held)
}
