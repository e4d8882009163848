//! Helpers for ring changes through the router's admin API, and for
//! checking where keys physically are.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::GetOptions;
use ste_proto::v1::ring_client::RingClient;
use ste_proto::v1::{
    JoinRequest, LeaveRequest, LocateRequest, Location, MigrationPhase, MigrationProgress,
};
use tonic::transport::Channel;

/// Runs a Join to completion; returns every progress message.
pub async fn join(
    admin: &mut RingClient<Channel>,
    name: &str,
    endpoint: &str,
) -> anyhow::Result<Vec<MigrationProgress>> {
    let stream = admin
        .join(JoinRequest {
            name: name.into(),
            endpoint: endpoint.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    collect(stream).await
}

pub async fn leave(
    admin: &mut RingClient<Channel>,
    name: &str,
) -> anyhow::Result<Vec<MigrationProgress>> {
    let stream = admin
        .leave(LeaveRequest {
            name: name.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    collect(stream).await
}

async fn collect(
    mut stream: tonic::Streaming<MigrationProgress>,
) -> anyhow::Result<Vec<MigrationProgress>> {
    let mut all = Vec::new();
    while let Some(progress) = stream.message().await? {
        let done = progress.phase == MigrationPhase::Done as i32;
        all.push(progress);
        if done {
            return Ok(all);
        }
    }
    anyhow::bail!("the ring change ended without DONE: {all:?}")
}

/// Keys under `prefix` held by each shard, read from the shards directly.
pub async fn keys_per_shard(
    shards: &[(String, etcd_client::Client)],
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut out = BTreeMap::new();
    for (name, client) in shards {
        let mut client = client.clone();
        let response = client
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        let keys = response
            .kvs()
            .iter()
            .map(|kv| kv.key_str().map(str::to_owned))
            .collect::<Result<BTreeSet<_>, _>>()?;
        out.insert(name.clone(), keys);
    }
    Ok(out)
}

/// Where the router places `key` now (its admin Locate): the member, and
/// whether and at which revision the key exists.
pub async fn locate(admin: &mut RingClient<Channel>, key: &str) -> anyhow::Result<Location> {
    Ok(admin
        .locate(LocateRequest {
            key: key.as_bytes().to_vec(),
        })
        .await?
        .into_inner())
}

/// The member the router places `key` on now.
pub async fn member_of(admin: &mut RingClient<Channel>, key: &str) -> anyhow::Result<String> {
    Ok(locate(admin, key).await?.member)
}

/// The first of `candidates` that the router places on `member`: a key a
/// test can aim at one shard.
pub async fn first_placed_on(
    admin: &mut RingClient<Channel>,
    member: &str,
    candidates: impl IntoIterator<Item = String>,
) -> anyhow::Result<String> {
    let mut tried = 0;
    for key in candidates {
        if member_of(admin, &key).await? == member {
            return Ok(key);
        }
        tried += 1;
    }
    anyhow::bail!("none of {tried} candidate keys is placed on {member}")
}
