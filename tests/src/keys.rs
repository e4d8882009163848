//! The key space the router tests write, and counting what a client (the
//! router, or one shard's etcd read directly) holds of it.

use etcd_client::{Client, GetOptions};

/// Where kube-apiserver stores Pods: the prefix most router tests write
/// their keys under and list.
pub const PODS: &str = "/registry/pods/";

/// How many keys `client` holds under `prefix`, by a count-only range (the
/// same request kube-apiserver makes to count objects).
pub async fn count_under(client: &mut Client, prefix: &str) -> anyhow::Result<i64> {
    Ok(client
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?
        .count())
}
