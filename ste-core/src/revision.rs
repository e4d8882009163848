//! Revision numbers: the router's global revision space and each shard's own.
//!
//! The router presents one revision space to kube-apiserver (the
//! [`GlobalRevision`]) while every shard is a separate etcd with its own
//! counter (the [`ShardRevision`]). The two are unrelated numbers: a global
//! revision sent to a shard, or a shard revision returned to a client, is a
//! silent consistency bug. They are therefore distinct newtypes with no
//! conversion between them; translating one into the other goes through
//! explicit tables such as [`RevisionMap`](crate::RevisionMap).
//!
//! Both wrap `i64` because etcd's protocol does (`int64 revision`), so the
//! values cross the wire without conversion. The fields are public: the
//! newtype exists to keep the two spaces apart, not to hide the number.
//!
//! ```
//! use ste_core::{GlobalRevision, ShardRevision};
//! fn on_shard(_: ShardRevision) {}
//! on_shard(ShardRevision(5));
//! on_shard(ShardRevision(GlobalRevision(5).0)); // explicit, visible
//! ```
//!
//! ```compile_fail
//! use ste_core::{GlobalRevision, ShardRevision};
//! fn on_shard(_: ShardRevision) {}
//! on_shard(GlobalRevision(5)); // the two spaces do not mix
//! ```
//!
//! ```compile_fail
//! use ste_core::{GlobalRevision, ShardRevision};
//! let _: ShardRevision = GlobalRevision(5).into(); // no `From` either
//! ```

use std::fmt;

/// A revision in the router's single, cluster-wide revision space.
///
/// This is the number kube-apiserver sees in `header.revision`,
/// `create_revision`, `mod_revision` and watch start revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GlobalRevision(pub i64);

impl GlobalRevision {
    /// Revision 0: etcd's "no revision" (e.g. `create_revision` of a missing
    /// key, or "latest" in a range request).
    pub const ZERO: GlobalRevision = GlobalRevision(0);

    /// The revision after this one.
    ///
    /// # Panics
    ///
    /// At `i64::MAX`. At a million writes per second that is 292,000 years
    /// away; code handling revisions read from outside (a persisted mark, a
    /// request) should use [`GlobalRevision::checked_next`] instead.
    #[must_use]
    pub fn next(self) -> GlobalRevision {
        match self.checked_next() {
            Some(next) => next,
            None => panic!("global revision {self} has no successor"),
        }
    }

    /// The revision after this one, or `None` at `i64::MAX`.
    #[must_use]
    pub fn checked_next(self) -> Option<GlobalRevision> {
        self.0.checked_add(1).map(GlobalRevision)
    }
}

impl fmt::Display for GlobalRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A revision of one shard's own etcd, meaningful only on that shard.
///
/// The router uses it for historical reads (`Range` with a revision) and
/// compaction on the shard; it is never shown to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ShardRevision(pub i64);

impl ShardRevision {
    /// Revision 0, as [`GlobalRevision::ZERO`] but on a shard.
    pub const ZERO: ShardRevision = ShardRevision(0);
}

impl fmt::Display for ShardRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_increments() {
        assert_eq!(GlobalRevision::ZERO.next(), GlobalRevision(1));
        assert_eq!(GlobalRevision(41).next(), GlobalRevision(42));
        assert_eq!(GlobalRevision(-1).next(), GlobalRevision::ZERO);
    }

    #[test]
    fn checked_next_stops_at_max() {
        assert_eq!(
            GlobalRevision(i64::MAX - 1).checked_next(),
            Some(GlobalRevision(i64::MAX))
        );
        assert_eq!(GlobalRevision(i64::MAX).checked_next(), None);
    }

    #[test]
    #[should_panic(expected = "has no successor")]
    fn next_panics_at_max() {
        let _ = GlobalRevision(i64::MAX).next();
    }

    #[test]
    fn display_prints_the_bare_number() {
        assert_eq!(GlobalRevision(123).to_string(), "123");
        assert_eq!(ShardRevision(-7).to_string(), "-7");
        assert_eq!(format!("{:>5}", GlobalRevision(9)), "    9");
    }

    #[test]
    fn defaults_are_zero_and_order_is_numeric() {
        assert_eq!(GlobalRevision::default(), GlobalRevision::ZERO);
        assert_eq!(ShardRevision::default(), ShardRevision::ZERO);
        assert!(GlobalRevision(2) < GlobalRevision(10));
        assert!(ShardRevision(-1) < ShardRevision::ZERO);
    }
}
