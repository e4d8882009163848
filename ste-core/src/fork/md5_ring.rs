//! The fork's MD5 ring: one point per shard.
//!
//! Exact algorithm:
//!
//! * A point is the MD5 digest of some bytes, read as two little-endian
//!   signed 64-bit integers, `high` = bytes `0..8` and `low` = bytes
//!   `8..16`, compared as the tuple `(high, low)` (signed!).
//! * Shard `s` has exactly one point: MD5 of the UTF-8 bytes `"<s>-0"`.
//! * A key is hashed the same way, over its bytes, without the `-0`. The fork
//!   hashed `/pods/<namespace>/<name>` (no `/registry`), see
//!   [`KeyLayout::fork`].
//! * The owner is the shard of the first point strictly greater than the
//!   key's, wrapping to the first point.

use std::collections::BTreeSet;

use md5::{Digest, Md5};

use super::ForkError;
use crate::keys::KeyLayout;

/// A position on the fork's ring. Field order is comparison order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ForkPoint {
    /// Digest bytes `0..8`, little-endian, signed.
    pub high: i64,
    /// Digest bytes `8..16`, little-endian, signed.
    pub low: i64,
}

/// The fork's position for `bytes`: MD5, split into two little-endian `i64`.
pub fn fork_point(bytes: &[u8]) -> ForkPoint {
    let digest = Md5::digest(bytes);
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&digest[..8]);
    low.copy_from_slice(&digest[8..]);
    ForkPoint {
        high: i64::from_le_bytes(high),
        low: i64::from_le_bytes(low),
    }
}

/// The fork's ring over a set of shard URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkRing {
    /// Sorted by point, then URL; one entry per distinct shard. (The URL
    /// tie-break only matters on an MD5 collision, but keeps order total.)
    points: Vec<(ForkPoint, String)>,
}

impl ForkRing {
    /// The ring of `shards` (URLs such as `https://10.0.0.1:2279`).
    /// Duplicates are ignored: the fork's point depends only on the URL.
    pub fn new<S: Into<String>>(shards: impl IntoIterator<Item = S>) -> ForkRing {
        let unique: BTreeSet<String> = shards.into_iter().map(Into::into).collect();
        let mut points: Vec<(ForkPoint, String)> = unique
            .into_iter()
            .map(|s| (fork_point(format!("{s}-0").as_bytes()), s))
            .collect();
        points.sort();
        ForkRing { points }
    }

    /// The ring of the shards on `node_ips`, named via
    /// [`fork_shard_url`](super::fork_shard_url).
    pub fn from_node_ips<'a>(node_ips: impl IntoIterator<Item = &'a str>) -> ForkRing {
        ForkRing::new(node_ips.into_iter().map(super::fork_shard_url))
    }

    /// The shard URLs, in ring order.
    pub fn shards(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.points.iter().map(|(_, s)| s.as_str())
    }

    /// Number of distinct shards.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when there are no shards.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The shard owning the raw key `key` (already in the fork's layout), or
    /// `None` on an empty ring.
    pub fn locate(&self, key: &[u8]) -> Option<&str> {
        let k = fork_point(key);
        let i = self.points.partition_point(|(p, _)| *p <= k);
        let (_, shard) = self.points.get(i).or_else(|| self.points.first())?;
        Some(shard)
    }

    /// The shard owning pod `namespace/name`, hashing the fork's key
    /// `/pods/<namespace>/<name>`.
    pub fn locate_pod(&self, namespace: &str, name: &str) -> Result<&str, ForkError> {
        let key = KeyLayout::fork().pod_key(namespace, name)?;
        self.locate(key.as_bytes()).ok_or(ForkError::EmptyRing)
    }
}
