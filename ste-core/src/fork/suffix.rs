//! The fork's name-suffix scheme: the shard is spelled in the pod name.
//!
//! Exact algorithm: a shard's code is FNV-1a 64 (offset basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`) of its URL's bytes, reduced
//! mod 36^7 and written in base 36 (`0-9a-z`), most significant digit first,
//! zero-padded to 7 characters. A pod placed on that shard has the code as
//! the last `-`-separated token of its name, e.g. `web-0-1b2wj30`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::ForkError;

/// Length of a suffix code.
pub const SUFFIX_LEN: usize = 7;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// 36^7: the number of distinct codes.
const CODE_SPACE: u64 = 36u64.pow(SUFFIX_LEN as u32);

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// The 7-character code the fork appended to names of pods on `shard_url`.
pub fn fork_suffix_code(shard_url: &str) -> String {
    let mut v = fnv1a64(shard_url.as_bytes()) % CODE_SPACE;
    let mut code = [b'0'; SUFFIX_LEN];
    for slot in code.iter_mut().rev() {
        // v % 36 < 36, so the index is in range.
        *slot = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    code.iter().map(|&b| char::from(b)).collect()
}

fn is_code(token: &str) -> bool {
    token.len() == SUFFIX_LEN
        && token
            .bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

/// Maps pod names to shards by their suffix code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkSuffix {
    /// Code -> shard URL.
    by_code: BTreeMap<String, String>,
}

impl ForkSuffix {
    /// A decoder for `shards` (URLs such as `https://10.0.0.1:2279`).
    /// Repeated URLs are fine; two different URLs with one code are refused,
    /// since their pods could not be told apart.
    pub fn new<S: Into<String>>(
        shards: impl IntoIterator<Item = S>,
    ) -> Result<ForkSuffix, ForkError> {
        let mut by_code = BTreeMap::new();
        for shard in shards {
            let shard: String = shard.into();
            match by_code.entry(fork_suffix_code(&shard)) {
                Entry::Vacant(e) => {
                    e.insert(shard);
                }
                Entry::Occupied(e) if *e.get() == shard => {}
                Entry::Occupied(e) => {
                    return Err(ForkError::SuffixCollision {
                        code: e.key().clone(),
                        first: e.get().clone(),
                        second: shard,
                    });
                }
            }
        }
        Ok(ForkSuffix { by_code })
    }

    /// The shard that pod `pod_name` was placed on.
    pub fn shard_for_pod(&self, pod_name: &str) -> Result<&str, ForkError> {
        let Some((_, suffix)) = pod_name.rsplit_once('-') else {
            return Err(ForkError::NoSuffix {
                pod: pod_name.to_owned(),
            });
        };
        if !is_code(suffix) {
            return Err(ForkError::BadSuffix {
                pod: pod_name.to_owned(),
                suffix: suffix.to_owned(),
            });
        }
        self.by_code
            .get(suffix)
            .map(String::as_str)
            .ok_or_else(|| ForkError::UnknownSuffix {
                pod: pod_name.to_owned(),
                code: suffix.to_owned(),
            })
    }

    /// The shard whose code is `code`, if any.
    pub fn shard_for_code(&self, code: &str) -> Option<&str> {
        self.by_code.get(code).map(String::as_str)
    }
}
