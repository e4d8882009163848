//! Per-shard translation of global revisions into shard revisions, for
//! historical reads.
//!
//! A client reading "as of global revision G" must see, on each shard, the
//! state after the last write the router made there at or before G. The
//! router records, for every write it applies to a shard, the pair
//! `(global revision, shard revision)`; the shard revision to read at is
//! that of the last pair with global `<= G`.
//!
//! # Invariants
//!
//! * Records are strictly increasing in *both* revisions: the router is the
//!   only writer, so each later write gets a later revision on both sides.
//!   A pair breaking this is refused ([`RevMapError::OutOfOrder`]) and the
//!   map is left unchanged, because accepting it would make `at` answer
//!   with a shard state that is not the one the client's revision saw.
//! * Every record's global revision is above [`RevisionMap::base_through`]
//!   and its shard revision above [`RevisionMap::base`]: global revisions up
//!   to `base_through` all map to `base`, the shard's state before any
//!   record still held (initially, before any write by the router).
//! * [`RevisionMap::compact`] never changes the answer of `at(g)` for `g` at
//!   or above the compaction point.

use std::collections::VecDeque;

use thiserror::Error;

use crate::{GlobalRevision, ShardRevision};

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RevMapError {
    /// The pair is not strictly after the latest mapping in both spaces.
    #[error(
        "revision record (global {global}, shard {shard}) is not after \
         (global {last_global}, shard {last_shard})"
    )]
    OutOfOrder {
        /// The refused global revision.
        global: GlobalRevision,
        /// The refused shard revision.
        shard: ShardRevision,
        /// The latest mapping's global revision (see [`RevisionMap::last`]).
        last_global: GlobalRevision,
        /// The latest mapping's shard revision.
        last_shard: ShardRevision,
    },
}

/// One record: the writes with global revisions `first..=last` all left
/// the shard at `shard` (one write: `first == last`; a group commit: the
/// writes of one shard Txn, which took consecutive global revisions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    first: GlobalRevision,
    last: GlobalRevision,
    shard: ShardRevision,
}

/// Where the state as of a global revision is on a shard: see
/// [`RevisionMap::locate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The shard revision to read at.
    pub shard: ShardRevision,
    /// When the global revision falls inside a group commit: the global
    /// revisions `(from, through)` of that commit's later writes, which
    /// the shard revision includes but the state as of the global revision
    /// must not. Each of those writes changed one key, and its previous
    /// version is the state to show instead.
    pub later_in_batch: Option<(GlobalRevision, GlobalRevision)>,
}

/// Maps global revisions to one shard's revisions (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionMap {
    /// Shard revision for every global revision up to `base_through`, and
    /// for any global revision below the first record.
    base: ShardRevision,
    /// The highest global revision folded into `base` by compaction;
    /// `GlobalRevision::ZERO` until the first compaction. A group commit
    /// that compaction split keeps its record, so its `first` may be at or
    /// below this.
    base_through: GlobalRevision,
    /// Strictly increasing in both revisions, ranges not overlapping.
    records: VecDeque<Record>,
}

impl RevisionMap {
    /// A map with no records: every global revision maps to `base`, the
    /// shard's revision before the router's first write to it.
    pub fn new(base: ShardRevision) -> Self {
        RevisionMap {
            base,
            base_through: GlobalRevision::ZERO,
            records: VecDeque::new(),
        }
    }

    /// Records that the router's write at `global` left the shard at
    /// `shard`. Both must be strictly greater than [`RevisionMap::last`].
    pub fn record(
        &mut self,
        global: GlobalRevision,
        shard: ShardRevision,
    ) -> Result<(), RevMapError> {
        self.record_batch(global, global, shard)
    }

    /// Records that the writes with global revisions `first..=last`, sent
    /// to the shard in one Txn, left it at `shard`. `first` and `shard`
    /// must be strictly greater than [`RevisionMap::last`], and `last` at
    /// least `first`.
    pub fn record_batch(
        &mut self,
        first: GlobalRevision,
        last: GlobalRevision,
        shard: ShardRevision,
    ) -> Result<(), RevMapError> {
        let (last_global, last_shard) = self.last();
        if first <= last_global || shard <= last_shard || last < first {
            return Err(RevMapError::OutOfOrder {
                global: first,
                shard,
                last_global,
                last_shard,
            });
        }
        self.records.push_back(Record { first, last, shard });
        Ok(())
    }

    /// The shard revision holding the state as of `global`: that of the
    /// last record that starts at or below `global`, else the base.
    /// O(log n). Inside a group commit this revision also holds the
    /// commit's later writes: readers that must be exact use
    /// [`RevisionMap::locate`].
    pub fn at(&self, global: GlobalRevision) -> ShardRevision {
        self.locate(global).shard
    }

    /// Where the state as of `global` is: the shard revision of
    /// [`RevisionMap::at`], and, when `global` falls inside a group commit
    /// before its last write, the global revisions of the writes to take
    /// back out. O(log n).
    pub fn locate(&self, global: GlobalRevision) -> Location {
        let after = self.records.partition_point(|r| r.first <= global);
        match after.checked_sub(1).and_then(|i| self.records.get(i)) {
            Some(r) => Location {
                shard: r.shard,
                later_in_batch: (global < r.last).then(|| (global.next(), r.last)),
            },
            None => Location {
                shard: self.base,
                later_in_batch: None,
            },
        }
    }

    /// Forgets the history below `global`: drops every record that ends at
    /// or below it, folding the last one into the base. `locate(g)` is
    /// unchanged for every `g >= global` (a group commit that `global`
    /// falls inside is kept whole); below it, the answer is the base. A
    /// `global` at or below [`RevisionMap::base_through`] is a no-op, so
    /// compaction never moves backwards.
    ///
    /// Later records must have a global revision above `global`.
    pub fn compact(&mut self, global: GlobalRevision) {
        if global <= self.base_through {
            return;
        }
        let dropped = self.records.partition_point(|r| r.last <= global);
        if let Some(last_dropped) = dropped.checked_sub(1).and_then(|i| self.records.get(i)) {
            self.base = last_dropped.shard;
        }
        self.records.drain(..dropped);
        self.base_through = global;
    }

    /// The number of records held (compaction drops some).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The latest mapping: the last record's last global revision and its
    /// shard revision, or `(base_through, base)` when none is held. The
    /// next record must be strictly above it in both.
    pub fn last(&self) -> (GlobalRevision, ShardRevision) {
        match self.records.back() {
            Some(r) => (r.last.max(self.base_through), r.shard),
            None => (self.base_through, self.base),
        }
    }

    /// The shard revision for global revisions before the first record.
    pub fn base(&self) -> ShardRevision {
        self.base
    }

    /// The highest compaction point so far (`GlobalRevision::ZERO` if none).
    pub fn base_through(&self) -> GlobalRevision {
        self.base_through
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn g(n: i64) -> GlobalRevision {
        GlobalRevision(n)
    }
    fn s(n: i64) -> ShardRevision {
        ShardRevision(n)
    }

    /// Base 100; global 10 -> 101, 12 -> 102, 20 -> 110.
    fn sample() -> RevisionMap {
        let mut map = RevisionMap::new(s(100));
        for (global, shard) in [(10, 101), (12, 102), (20, 110)] {
            map.record(g(global), s(shard)).expect("in order");
        }
        map
    }

    #[test]
    fn empty_map_answers_base_everywhere() {
        let map = RevisionMap::new(s(7));
        for n in [i64::MIN, 0, 1, 1000, i64::MAX] {
            assert_eq!(map.at(g(n)), s(7));
        }
        assert!(map.is_empty());
        assert_eq!(map.last(), (g(0), s(7)));
    }

    #[test]
    fn at_answers_the_last_record_at_or_below() {
        let map = sample();
        let want = [
            (0, 100),
            (9, 100),
            (10, 101),
            (11, 101),
            (12, 102),
            (19, 102),
            (20, 110),
            (i64::MAX, 110),
        ];
        for (global, shard) in want {
            assert_eq!(map.at(g(global)), s(shard), "at({global})");
        }
        assert_eq!(map.len(), 3);
        assert_eq!(map.last(), (g(20), s(110)));
    }

    #[test]
    fn out_of_order_records_are_refused_and_change_nothing() {
        let mut map = sample();
        let before = map.clone();
        for (global, shard) in [(20, 111), (19, 111), (21, 110), (21, 50), (5, 5)] {
            assert_eq!(
                map.record(g(global), s(shard)),
                Err(RevMapError::OutOfOrder {
                    global: g(global),
                    shard: s(shard),
                    last_global: g(20),
                    last_shard: s(110),
                })
            );
            assert_eq!(map, before);
        }
        assert_eq!(map.record(g(21), s(111)), Ok(()));
    }

    #[test]
    fn first_record_must_be_above_base() {
        let mut map = RevisionMap::new(s(100));
        assert!(map.record(g(1), s(100)).is_err());
        assert!(map.record(g(0), s(101)).is_err());
        assert_eq!(map.record(g(1), s(101)), Ok(()));
    }

    #[test]
    fn compact_folds_into_base() {
        let mut map = sample();
        map.compact(g(15));
        assert_eq!(map.len(), 1);
        assert_eq!(map.base(), s(102));
        assert_eq!(map.base_through(), g(15));
        assert_eq!(map.at(g(15)), s(102));
        assert_eq!(map.at(g(20)), s(110));
        assert_eq!(map.at(g(3)), s(102), "below the compaction point: base");

        // Compacting exactly at a record drops it too.
        map.compact(g(20));
        assert!(map.is_empty());
        assert_eq!(map.last(), (g(20), s(110)));
        assert_eq!(map.at(g(25)), s(110));

        // New records must be above both the compaction point and base.
        assert!(map.record(g(20), s(111)).is_err());
        assert!(map.record(g(21), s(110)).is_err());
        assert_eq!(map.record(g(21), s(111)), Ok(()));
    }

    #[test]
    fn compact_never_moves_backwards() {
        let mut map = sample();
        map.compact(g(12));
        let after = map.clone();
        map.compact(g(11));
        map.compact(g(12));
        assert_eq!(map, after);
    }

    #[test]
    fn compact_past_every_record_keeps_the_latest_answer() {
        let mut map = sample();
        map.compact(g(1000));
        assert_eq!(map.at(g(1000)), s(110));
        assert_eq!(map.last(), (g(1000), s(110)));
        assert!(map.record(g(999), s(200)).is_err());
    }

    #[test]
    fn a_group_commit_maps_its_revisions_to_one_shard_revision() {
        let mut map = RevisionMap::new(s(100));
        map.record(g(10), s(101)).expect("in order");
        map.record_batch(g(11), g(14), s(102)).expect("in order");
        map.record(g(16), s(103)).expect("in order");
        let loc = |n| map.locate(g(n));
        assert_eq!(
            loc(10),
            Location {
                shard: s(101),
                later_in_batch: None
            }
        );
        assert_eq!(
            loc(11),
            Location {
                shard: s(102),
                later_in_batch: Some((g(12), g(14)))
            }
        );
        assert_eq!(
            loc(13),
            Location {
                shard: s(102),
                later_in_batch: Some((g(14), g(14)))
            }
        );
        assert_eq!(
            loc(14),
            Location {
                shard: s(102),
                later_in_batch: None
            }
        );
        assert_eq!(
            loc(15),
            Location {
                shard: s(102),
                later_in_batch: None
            }
        );
        assert_eq!(loc(16).shard, s(103));
        assert_eq!(map.last(), (g(16), s(103)));
        // Overlapping or backwards batches are refused.
        assert!(map.record_batch(g(16), g(18), s(104)).is_err());
        assert!(map.record_batch(g(18), g(17), s(104)).is_err());
        assert!(map.record_batch(g(17), g(18), s(103)).is_err());
        assert_eq!(map.record_batch(g(17), g(18), s(104)), Ok(()));
    }

    #[test]
    fn compaction_inside_a_group_commit_keeps_it_exact() {
        let mut map = RevisionMap::new(s(100));
        map.record(g(10), s(101)).expect("in order");
        map.record_batch(g(11), g(14), s(102)).expect("in order");
        map.compact(g(12));
        assert_eq!(map.len(), 1, "the batch 12 falls inside is kept");
        assert_eq!(map.base(), s(101));
        assert_eq!(
            map.locate(g(12)),
            Location {
                shard: s(102),
                later_in_batch: Some((g(13), g(14)))
            }
        );
        assert_eq!(map.last(), (g(14), s(102)));
        assert!(map.record(g(14), s(103)).is_err());
        map.compact(g(14));
        assert!(map.is_empty());
        assert_eq!(map.last(), (g(14), s(102)));
        assert_eq!(
            map.locate(g(14)),
            Location {
                shard: s(102),
                later_in_batch: None
            }
        );
    }

    fn records() -> impl Strategy<Value = Vec<(i64, i64)>> {
        // Positive steps keep both sides strictly increasing.
        proptest::collection::vec((1i64..4, 1i64..4), 0..30).prop_map(|steps| {
            let (mut global, mut shard) = (0, 50);
            steps
                .into_iter()
                .map(|(dg, ds)| {
                    global += dg;
                    shard += ds;
                    (global, shard)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn at_matches_a_linear_scan(recs in records(), probe in -2i64..100) {
            let mut map = RevisionMap::new(s(50));
            for &(global, shard) in &recs {
                prop_assert_eq!(map.record(g(global), s(shard)), Ok(()));
            }
            let want = recs.iter().rev().find(|r| r.0 <= probe).map_or(50, |r| r.1);
            prop_assert_eq!(map.at(g(probe)), s(want));
        }

        #[test]
        fn compaction_preserves_answers_at_and_above(
            recs in records(),
            points in proptest::collection::vec(0i64..100, 1..4),
        ) {
            let mut map = RevisionMap::new(s(50));
            for &(global, shard) in &recs {
                prop_assert_eq!(map.record(g(global), s(shard)), Ok(()));
            }
            let reference = map.clone();
            let mut highest = 0;
            for point in points {
                map.compact(g(point));
                highest = highest.max(point);
                for probe in highest..110 {
                    prop_assert_eq!(map.at(g(probe)), reference.at(g(probe)), "at({})", probe);
                }
                prop_assert!(map.records.iter().all(|r| r.last > g(highest)));
            }
        }
    }
}
