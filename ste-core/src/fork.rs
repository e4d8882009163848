//! Decoders for the original prototype's two placement schemes.
//!
//! Clusters created by the original fork placed pods with one of two
//! schemes, reproduced here bit for bit so that STE can find where such a
//! cluster put each pod (e.g. to migrate it onto the [`Ring`](crate::Ring)).
//! They are *decoders*: new placements use the STE ring, never these.
//!
//! * [`ForkRing`]: a consistent-hash ring with a single MD5 point per shard.
//! * [`ForkSuffix`]: the shard is encoded in the pod name's last
//!   `-`-separated token, a 7-character base-36 FNV-1a code of the shard URL
//!   ([`fork_suffix_code`]).
//!
//! In both, a shard is named by its URL, `https://<node-ip>:2279`
//! ([`fork_shard_url`]).

mod md5_ring;
mod suffix;

use thiserror::Error;

use crate::keys::KeyError;

pub use md5_ring::{ForkPoint, ForkRing, fork_point};
pub use suffix::{ForkSuffix, SUFFIX_LEN, fork_suffix_code};

/// The port the fork's shards listened on.
pub const FORK_SHARD_PORT: u16 = 2279;

/// The fork's name for the shard on `node_ip`: `https://<node_ip>:2279`.
///
/// `node_ip` is used verbatim (an IPv6 address is not bracketed), because
/// the result must equal the fork's string byte for byte to hash the same.
pub fn fork_shard_url(node_ip: &str) -> String {
    format!("https://{node_ip}:{FORK_SHARD_PORT}")
}

/// A fork placement could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ForkError {
    /// The ring has no shards, so nothing owns any key.
    #[error("the fork ring has no shards")]
    EmptyRing,

    /// The namespace or pod name is not valid, so no key can be built.
    #[error(transparent)]
    Key(#[from] KeyError),

    /// The pod name has no `-`, so it carries no suffix code.
    #[error("pod name {pod:?} has no '-'-separated shard suffix")]
    NoSuffix {
        /// The pod name.
        pod: String,
    },

    /// The last `-`-separated token is not a suffix code.
    #[error("pod name {pod:?}: suffix {suffix:?} is not {SUFFIX_LEN} characters of [0-9a-z]")]
    BadSuffix {
        /// The pod name.
        pod: String,
        /// Its last `-`-separated token.
        suffix: String,
    },

    /// The suffix is well-formed but no known shard has that code.
    #[error("pod name {pod:?}: no shard has suffix code {code:?}")]
    UnknownSuffix {
        /// The pod name.
        pod: String,
        /// The suffix code.
        code: String,
    },

    /// Two shards share a suffix code, so their pods cannot be told apart.
    #[error("shards {first:?} and {second:?} share suffix code {code:?}")]
    SuffixCollision {
        /// The shared code.
        code: String,
        /// One shard URL.
        first: String,
        /// The other shard URL.
        second: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_url_shape() {
        assert_eq!(fork_shard_url("10.0.0.1"), "https://10.0.0.1:2279");
    }
}
