//! The router's key index behind its own lock.
//!
//! After etcd's `treeIndex` (`server/mvcc/index.go`), the index owns its
//! lock and callers use methods; no guard leaves this module, so no caller
//! can hold the lock across an await or take it twice. Every method takes
//! the lock for exactly one step; a caller that needs several changes to
//! appear together (a migration batch repointed, a multi-key delete
//! applied) passes them in one call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ste_core::index::{IndexEntry, KeyIndex, KeyIndexKind, ShardId};
use ste_core::keyrange::KeyRange;
use ste_core::migration::Plan;
use ste_core::ring::Ring;

/// The key index (where every live key is and its global metadata), safe
/// to share between requests.
pub struct Index {
    inner: RwLock<Box<dyn KeyIndex>>,
    /// Bumped each time the write lock is taken: an unchanged value means
    /// an unchanged index.
    changes: AtomicU64,
    /// Recent range counts, so that the pages of one list count only the
    /// keys between one page and the next (see [`Index::page_plan`]).
    counts: Mutex<Vec<CountMemo>>,
}

/// How many recent counts [`Index`] remembers: one per list being paged
/// through at once, about.
const COUNT_MEMOS: usize = 16;

/// A range count remembered, valid while the index is unchanged.
struct CountMemo {
    changes: u64,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    count: usize,
}

/// How a page of a range read is spread over the shards, from the index
/// at one moment (see [`Index::page_plan`]).
#[derive(Debug, Default, PartialEq)]
pub struct PagePlan {
    /// Live keys in the whole range.
    pub count: usize,
    /// Of the page's keys (the range's first `limit`), how many each shard
    /// holds. Shards holding none are absent.
    pub shares: BTreeMap<ShardId, usize>,
    /// The page's last key, when the range holds at least `limit` keys;
    /// `None` when the page is the whole range.
    pub last: Option<Vec<u8>>,
}

/// One change to the index, applied with others by [`Index::apply`].
#[derive(Debug, Clone)]
pub enum IndexChange {
    /// Sets the key's entry (a put, a moved key, a restored key).
    Insert(Vec<u8>, IndexEntry),
    /// Removes the key (a delete).
    Remove(Vec<u8>),
}

impl Index {
    /// An empty index of the given implementation.
    pub fn new(kind: KeyIndexKind) -> Self {
        Index {
            inner: RwLock::new(kind.build()),
            changes: AtomicU64::new(0),
            counts: Mutex::new(Vec::new()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Box<dyn KeyIndex>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Box<dyn KeyIndex>> {
        let guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        self.changes.fetch_add(1, Ordering::Release);
        guard
    }

    /// The entry of `key`, if it is live.
    pub fn get(&self, key: &[u8]) -> Option<IndexEntry> {
        self.read().get(key).copied()
    }

    /// The shard holding `key`, if it is live.
    pub fn shard_of(&self, key: &[u8]) -> Option<ShardId> {
        self.read().get(key).map(|e| e.shard)
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live keys per shard.
    pub fn count_by_shard(&self) -> BTreeMap<ShardId, usize> {
        self.read().count_by_shard()
    }

    /// The live keys in `range` with their entries, in key order (a copy:
    /// the lock is released before the caller looks at them).
    pub fn entries(&self, range: &KeyRange) -> Vec<(Vec<u8>, IndexEntry)> {
        self.read()
            .range(range)
            .map(|(k, e)| (k.to_vec(), *e))
            .collect()
    }

    /// How many live keys `range` holds.
    pub fn count(&self, range: &KeyRange) -> usize {
        let index = self.read();
        self.count_remembered(&**index, range)
    }

    /// The plan of a page of `limit` keys (at least 1) of `range`, and the
    /// range's count, from one state of the index.
    ///
    /// Counting a range walks its keys, as etcd's index does for every
    /// page (`treeIndex.Revisions` counts the whole range to fill in
    /// `count`). The index remembers its last few counts while it is
    /// unchanged, so the next page of the same list counts only the keys
    /// between the two pages' starts.
    pub fn page_plan(&self, range: &KeyRange, limit: usize) -> PagePlan {
        let index = self.read();
        let mut plan = PagePlan::default();
        let mut taken = 0;
        for (key, entry) in index.range(range).take(limit.max(1)) {
            *plan.shares.entry(entry.shard).or_default() += 1;
            taken += 1;
            if taken == limit {
                plan.last = Some(key.to_vec());
            }
        }
        plan.count = if plan.last.is_some() {
            self.count_remembered(&**index, range)
        } else {
            taken
        };
        plan
    }

    /// `range`'s count, from a remembered count of a range with the same
    /// end and an earlier start when the index has not changed since,
    /// minus the keys between the two starts. Called with the read lock
    /// held, so the index cannot change meanwhile.
    fn count_remembered(&self, index: &dyn KeyIndex, range: &KeyRange) -> usize {
        let changes = self.changes.load(Ordering::Acquire);
        let mut memos = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        memos.retain(|m| m.changes == changes);
        let earlier = memos
            .iter()
            .enumerate()
            .filter(|(_, m)| m.end.as_deref() == range.end() && m.start.as_slice() <= range.start())
            .max_by(|(_, a), (_, b)| a.start.cmp(&b.start))
            .map(|(i, _)| i);
        let count = match earlier {
            Some(i) => {
                let memo = memos.swap_remove(i);
                memo.count - index.count(&KeyRange::between(&memo.start, range.start()))
            }
            None => index.count(range),
        };
        if memos.len() >= COUNT_MEMOS {
            memos.remove(0);
        }
        memos.push(CountMemo {
            changes,
            start: range.start().to_vec(),
            end: range.end().map(<[u8]>::to_vec),
            count,
        });
        count
    }

    /// The entries of `keys` that are live, in the order given.
    pub fn entries_of<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<(Vec<u8>, IndexEntry)> {
        let index = self.read();
        keys.into_iter()
            .filter_map(|k| index.get(k).map(|e| (k.to_vec(), *e)))
            .collect()
    }

    /// Sets `key`'s entry, returning the previous one.
    pub fn insert(&self, key: Vec<u8>, entry: IndexEntry) -> Option<IndexEntry> {
        self.write().insert(key, entry)
    }

    /// Removes `key`, returning its entry if it was live.
    pub fn remove(&self, key: &[u8]) -> Option<IndexEntry> {
        self.write().remove(key)
    }

    /// Applies `changes` in order under one lock: readers see all or none.
    pub fn apply(&self, changes: impl IntoIterator<Item = IndexChange>) {
        let mut index = self.write();
        for change in changes {
            match change {
                IndexChange::Insert(key, entry) => {
                    index.insert(key, entry);
                }
                IndexChange::Remove(key) => {
                    index.remove(&key);
                }
            }
        }
    }

    /// The moves that make the index match `target` (see
    /// [`Plan::new`]); `names` gives each shard's member name.
    pub fn plan(&self, target: &Ring, names: &BTreeMap<ShardId, String>) -> Plan {
        let index = self.read();
        Plan::new(index.range(&KeyRange::all()), target, names)
    }

    /// Drops every key held by `shard` (a lost member, or before its keys
    /// are reloaded by a scan). Returns how many.
    pub fn remove_shard(&self, shard: ShardId) -> usize {
        self.write().remove_shard(shard)
    }

    /// Replaces `shard`'s keys with `entries` under one lock, resolving a
    /// key found on two shards with `keep_existing(key, existing, found)`:
    /// true keeps the entry already indexed. Returns the entries that lost
    /// (`(key, loser)`), whichever shard they are on.
    pub fn reload_shard(
        &self,
        shard: ShardId,
        entries: Vec<(Vec<u8>, IndexEntry)>,
        mut keep_existing: impl FnMut(&[u8], &IndexEntry, &IndexEntry) -> bool,
    ) -> Vec<(Vec<u8>, IndexEntry)> {
        let mut index = self.write();
        index.remove_shard(shard);
        let mut losers = Vec::new();
        for (key, entry) in entries {
            if let Some(existing) = index.get(&key).copied() {
                if keep_existing(&key, &existing, &entry) {
                    losers.push((key, entry));
                    continue;
                }
                losers.push((key.clone(), existing));
            }
            index.insert(key, entry);
        }
        losers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ste_core::revision::{GlobalRevision, ShardRevision};

    fn entry(shard: u32, modified: i64) -> IndexEntry {
        IndexEntry {
            shard: ShardId(shard),
            create: GlobalRevision(modified),
            modified: GlobalRevision(modified),
            version: 1,
            lease: 0,
            value_size: 3,
            shard_modified: ShardRevision(modified),
        }
    }

    #[test]
    fn apply_changes_together() {
        let index = Index::new(KeyIndexKind::BTree);
        index.insert(b"a".to_vec(), entry(0, 2));
        index.apply([
            IndexChange::Remove(b"a".to_vec()),
            IndexChange::Insert(b"b".to_vec(), entry(1, 3)),
        ]);
        assert_eq!(index.get(b"a"), None);
        assert_eq!(index.shard_of(b"b"), Some(ShardId(1)));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn page_plans_count_right_from_remembered_counts_and_after_changes() {
        let index = Index::new(KeyIndexKind::BTree);
        for i in 0..100u32 {
            index.insert(format!("/p/{i:03}").into_bytes(), entry(i % 3, 1));
        }
        let plan = index.page_plan(&KeyRange::prefix(b"/p/"), 10);
        assert_eq!(plan.count, 100);
        assert_eq!(plan.last.as_deref(), Some(&b"/p/009"[..]));
        assert_eq!(plan.shares.values().sum::<usize>(), 10);
        assert_eq!(plan.shares[&ShardId(0)], 4, "0, 3, 6, 9");
        // Later pages of the same list count from the remembered count.
        let end = ste_core::keyrange::prefix_end(b"/p/");
        let page_from = |start: &str| KeyRange::between(start.as_bytes(), &end);
        assert_eq!(index.page_plan(&page_from("/p/010"), 10).count, 90);
        assert_eq!(index.page_plan(&page_from("/p/050"), 10).count, 50);
        index.remove(b"/p/070");
        index.insert(b"/p/0999".to_vec(), entry(0, 2));
        assert_eq!(index.page_plan(&page_from("/p/060"), 10).count, 40);
        assert_eq!(index.count(&page_from("/p/090")), 11);
        let tail = index.page_plan(&page_from("/p/095"), 10);
        assert_eq!((tail.count, tail.last), (6, None), "fewer than a page left");
    }

    #[test]
    fn reload_keeps_the_chosen_copy_and_returns_the_other() {
        let index = Index::new(KeyIndexKind::BTree);
        index.insert(b"k".to_vec(), entry(0, 5));
        index.insert(b"old".to_vec(), entry(1, 1));
        let losers =
            index.reload_shard(ShardId(1), vec![(b"k".to_vec(), entry(1, 7))], |_, e, f| {
                e.modified > f.modified
            });
        // Shard 1's earlier keys are gone, the newer copy of k won.
        assert_eq!(index.get(b"old"), None);
        assert_eq!(index.shard_of(b"k"), Some(ShardId(1)));
        assert_eq!(losers, vec![(b"k".to_vec(), entry(0, 5))]);
    }
}
