//! One shard of three goes down — its etcd killed, or hung by SIGSTOP —
//! and comes back with its data. While it is down, keys on the other
//! shards are served without delay, everything that needs the lost shard
//! fails promptly with UNAVAILABLE naming it (never a hang, never a partial
//! list), the router stays up and says which member is unavailable. Once
//! the shard is back, everything works again and no key lost its value or
//! its revisions.

// The scenarios live in router_shard_down/; this file stays the
// target's root (scripts/test.sh runs every tests/tests/router_*.rs by
// name) and keeps what both use: the expected keys, the checks, the
// member health read.
#[path = "router_shard_down/batch_in_flight.rs"]
mod batch_in_flight;
#[path = "router_shard_down/outage.rs"]
mod outage;
#[path = "router_shard_down/write_in_flight.rs"]
mod write_in_flight;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use etcd_client::{Client, GetOptions};
use ste_proto::v1::MemberHealth;
use ste_tests::keys::PODS;
use ste_tests::{ShardedRouter, ring};
use tonic::Code;

/// Reads of keys on healthy shards must not notice the outage.
const HEALTHY_READ_BOUND: Duration = Duration::from_secs(1);

/// What a loaded machine may add to the shard timeout.
const MARGIN: Duration = Duration::from_secs(3);

/// What the router said about a key when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    value: String,
    create: i64,
    modified: i64,
    version: i64,
}

/// A key under `PODS` + `name` that the ring places on `member`.
async fn key_on(cluster: &ShardedRouter, member: &str, name: &str) -> anyhow::Result<String> {
    let mut admin = cluster.router.admin().await?;
    let candidates = (0..1000).map(|i| format!("{PODS}{name}-{i}"));
    ring::first_placed_on(&mut admin, member, candidates).await
}

async fn put(client: &mut Client, key: &str, value: &str) -> anyhow::Result<Written> {
    let response = client.put(key, value, None).await?;
    let revision = response.header().context("put without header")?.revision();
    Ok(Written {
        value: value.to_owned(),
        create: revision,
        modified: revision,
        version: 1,
    })
}

/// Expects UNAVAILABLE naming `member`; returns the message.
fn expect_unavailable<T: std::fmt::Debug>(
    result: Result<T, etcd_client::Error>,
    member: &str,
    what: &str,
) -> anyhow::Result<String> {
    match result {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            ensure!(
                status.code() == Code::Unavailable,
                "{what}: expected UNAVAILABLE, got {:?}: {}",
                status.code(),
                status.message()
            );
            ensure!(
                status.message().contains(member),
                "{what}: the UNAVAILABLE message must name the member {member}: {:?}",
                status.message()
            );
            Ok(status.message().to_owned())
        }
        Err(other) => anyhow::bail!("{what}: expected a gRPC UNAVAILABLE, got {other}"),
        Ok(value) => {
            anyhow::bail!("{what}: expected UNAVAILABLE naming {member}, got a success: {value:?}")
        }
    }
}

/// Every key reads back exactly as written, through one get each and one
/// list; returns a description of the first difference.
async fn check_all(
    client: &mut Client,
    expected: &BTreeMap<String, Written>,
) -> Result<(), String> {
    for (key, want) in expected {
        let response = client
            .get(key.as_str(), None)
            .await
            .map_err(|e| format!("get {key}: {e}"))?;
        let kv = response
            .kvs()
            .first()
            .ok_or_else(|| format!("{key} is missing"))?;
        let have = Written {
            value: kv.value_str().unwrap_or_default().to_owned(),
            create: kv.create_revision(),
            modified: kv.mod_revision(),
            version: kv.version(),
        };
        if &have != want {
            return Err(format!("{key}: read {have:?}, written {want:?}"));
        }
    }
    let list = client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("list: {e}"))?;
    let listed: BTreeMap<String, Written> = list
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap_or_default().to_owned(),
                Written {
                    value: kv.value_str().unwrap_or_default().to_owned(),
                    create: kv.create_revision(),
                    modified: kv.mod_revision(),
                    version: kv.version(),
                },
            )
        })
        .collect();
    if &listed != expected || list.count() != expected.len() as i64 || list.more() {
        return Err(format!(
            "list of {} keys (count {}, more {}) differs from the {} written: {listed:?}",
            listed.len(),
            list.count(),
            list.more(),
            expected.len()
        ));
    }
    Ok(())
}

async fn member_health(
    cluster: &ShardedRouter,
) -> anyhow::Result<BTreeMap<String, (MemberHealth, String)>> {
    let status = cluster.router.status().await?;
    Ok(status
        .members
        .into_iter()
        .map(|m| (m.name.clone(), (m.health(), m.last_error)))
        .collect())
}

fn router_alive_without_panic(cluster: &ShardedRouter) -> anyhow::Result<()> {
    let pid = cluster.router.pid().context("router not started")?;
    let log = cluster.router.log();
    ensure!(
        ste_tests::procs::alive(pid),
        "the router process {pid} died; log:\n{log}"
    );
    ensure!(
        !log.contains("panicked"),
        "the router panicked; log:\n{log}"
    );
    Ok(())
}
