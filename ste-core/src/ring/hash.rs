//! The two hash functions that define placement.
//!
//! Both are part of the release-stable algorithm described in the
//! [`ring`](crate::ring) module doc: changing either one moves keys between
//! members, so they are pinned by golden vectors computed with an independent
//! implementation (`tests/golden/gen_golden.py`).

use std::fmt::Write as _;

use xxhash_rust::xxh64::xxh64;

/// Seed for every XXH64 call in placement. Fixed forever: a different seed is
/// a different ring.
const SEED: u64 = 0;

/// Hash of an etcd key: XXH64 (seed 0) over the key's raw bytes.
///
/// The key is hashed in full, prefix included (e.g.
/// `/registry/pods/default/web-0`), because that is the byte string every
/// component already has in hand; no parsing means no parsing disagreements.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh64(key, SEED)
}

/// Hash of virtual node `index` of member `name`: XXH64 (seed 0) over the
/// UTF-8 bytes of `format!("{name}#{index}")`.
///
/// Member names may not contain `#` (see [`Member`](crate::ring::Member)), so
/// the string is an injective encoding of `(name, index)`.
pub fn point_hash(name: &str, index: u32) -> u64 {
    PointHasher::default().hash(name, index)
}

/// Reusable buffer for [`point_hash`], so hashing a member's thousands of
/// points does not allocate once per point.
#[derive(Debug, Default)]
pub(crate) struct PointHasher {
    buf: String,
}

impl PointHasher {
    /// Same result as [`point_hash`].
    pub(crate) fn hash(&mut self, name: &str, index: u32) -> u64 {
        self.buf.clear();
        self.buf.push_str(name);
        self.buf.push('#');
        // Writing an integer into a String cannot fail.
        let _ = write!(self.buf, "{index}");
        xxh64(self.buf.as_bytes(), SEED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_hash_matches_format_spec() {
        for (name, i) in [("node-a", 0), ("node-b", 17), ("x", 4_000_000_000)] {
            let spelled = format!("{name}#{i}");
            assert_eq!(point_hash(name, i), xxh64(spelled.as_bytes(), 0));
        }
    }

    #[test]
    fn hasher_reuse_does_not_leak_previous_input() {
        let mut h = PointHasher::default();
        let long = h.hash("a-very-long-member-name", 123_456);
        let short = h.hash("b", 1);
        assert_eq!(short, point_hash("b", 1));
        assert_eq!(long, point_hash("a-very-long-member-name", 123_456));
    }
}
