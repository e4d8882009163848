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

/// One key-value as tests compare them across systems (router and etcd,
/// router and etcdctl's JSON): text key and value, and the metadata etcd
/// returns with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key (lossy UTF-8).
    pub key: String,
    /// The value (lossy UTF-8).
    pub value: String,
    /// `create_revision`.
    pub create: i64,
    /// `mod_revision`.
    pub modified: i64,
    /// `version`.
    pub version: i64,
    /// The attached lease, 0 for none.
    pub lease: i64,
}

impl Kv {
    /// The same from an etcd client's answer.
    pub fn of(kv: &etcd_client::KeyValue) -> Kv {
        Kv {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            create: kv.create_revision(),
            modified: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }
}
