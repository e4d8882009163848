//! The versioned key space of [`super::MemoryShard`]: etcd's MVCC in
//! miniature. Every write is a new store revision, each key keeps its
//! history (values and tombstones) until a compaction drops what no read
//! can reach any more.

use std::collections::BTreeMap;
use std::ops::Bound;

use ste_proto::etcd::mvccpb::KeyValue;
use tonic::Status;

use crate::error::{COMPACTED, FUTURE_REVISION};

/// One version of a key: its value from `revision` on, or (`None`) its
/// deletion at `revision`.
#[derive(Debug, Clone)]
struct Version {
    revision: i64,
    kv: Option<KeyValue>,
}

/// The keys, their histories and the store revision.
///
/// Writes go to the pending revision (`revision + 1`) until [`Mvcc::commit`],
/// so all writes of one txn share one revision as in etcd, and reads at
/// [`Mvcc::latest`] see the txn's earlier writes.
#[derive(Debug)]
pub(super) struct Mvcc {
    /// Each key's versions, oldest first; revisions strictly increase.
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    /// The last committed revision; 1 for an empty store, as in etcd.
    revision: i64,
    /// The revision of the last compaction; 0 if none.
    compacted: i64,
    /// Whether anything was written at `revision + 1` since the last commit.
    pending: bool,
}

impl Mvcc {
    pub(super) fn new() -> Self {
        Mvcc {
            keys: BTreeMap::new(),
            revision: 1,
            compacted: 0,
            pending: false,
        }
    }

    /// The last committed revision.
    pub(super) fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision that includes uncommitted writes.
    pub(super) fn latest(&self) -> i64 {
        self.revision + i64::from(self.pending)
    }

    /// The revision a read asking for `requested` sees (0 or less: now);
    /// etcd's errors for a compacted or a future revision.
    pub(super) fn read_revision(&self, requested: i64) -> Result<i64, Status> {
        if requested <= 0 {
            Ok(self.latest())
        } else if requested > self.revision {
            Err(Status::out_of_range(FUTURE_REVISION))
        } else if requested < self.compacted {
            Err(Status::out_of_range(COMPACTED))
        } else {
            Ok(requested)
        }
    }

    /// The keys of `[key, range_end)` that exist at `revision`, in key order
    /// (`range_end` empty: `key` alone; `"\0"`: `key` and every key after).
    pub(super) fn range(&self, key: &[u8], range_end: &[u8], revision: i64) -> Vec<KeyValue> {
        span(key, range_end)
            .into_iter()
            .flat_map(|bounds| self.keys.range::<[u8], _>(bounds))
            .filter_map(|(_, history)| at(history, revision).cloned())
            .collect()
    }

    /// Every key that exists now, in key order.
    pub(super) fn all(&self) -> Vec<KeyValue> {
        let latest = self.latest();
        self.keys
            .values()
            .filter_map(|history| at(history, latest).cloned())
            .collect()
    }

    /// Writes `key` = `value` at the pending revision; returns the previous
    /// version if the key existed (its create revision carries over and
    /// its version counts on, as in etcd).
    pub(super) fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Option<KeyValue> {
        let revision = self.revision + 1;
        let history = self.keys.entry(key.to_vec()).or_default();
        let prev = history.last().and_then(|v| v.kv.clone());
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(0, |p| p.version) + 1,
            value: value.into(),
            lease,
        };
        history.push(Version {
            revision,
            kv: Some(kv),
        });
        self.pending = true;
        prev
    }

    /// Deletes the existing keys of `[key, range_end)` at the pending
    /// revision; returns them as they were, in key order.
    pub(super) fn delete(&mut self, key: &[u8], range_end: &[u8]) -> Vec<KeyValue> {
        let revision = self.revision + 1;
        let doomed = self.range(key, range_end, self.latest());
        for kv in &doomed {
            if let Some(history) = self.keys.get_mut(&kv.key) {
                history.push(Version { revision, kv: None });
            }
        }
        self.pending |= !doomed.is_empty();
        doomed
    }

    /// Makes the pending writes the new revision (none written: no change).
    pub(super) fn commit(&mut self) {
        self.revision = self.latest();
        self.pending = false;
    }

    /// Drops the history no read at `revision` or later can see: per key,
    /// every version older than the one live at `revision`, and that one
    /// too if it is a deletion. Errors as etcd's: `revision` at or below the
    /// last compaction, or above the current revision.
    pub(super) fn compact(&mut self, revision: i64) -> Result<(), Status> {
        if revision <= self.compacted {
            return Err(Status::out_of_range(COMPACTED));
        }
        if revision > self.revision {
            return Err(Status::out_of_range(FUTURE_REVISION));
        }
        for history in self.keys.values_mut() {
            if let Some(live) = history.iter().rposition(|v| v.revision <= revision) {
                history.drain(..live);
                if history[0].kv.is_none() {
                    history.remove(0);
                }
            }
        }
        self.keys.retain(|_, history| !history.is_empty());
        self.compacted = revision;
        Ok(())
    }

    /// Bytes of keys and values held, history included: the stand-in for
    /// etcd's database size.
    pub(super) fn size(&self) -> i64 {
        let bytes: usize = self
            .keys
            .iter()
            .map(|(key, history)| {
                history
                    .iter()
                    .map(|v| key.len() + v.kv.as_ref().map_or(0, |kv| kv.value.len()))
                    .sum::<usize>()
            })
            .sum();
        bytes as i64
    }
}

/// The version of a key live at `revision`, if the key existed then.
fn at(history: &[Version], revision: i64) -> Option<&KeyValue> {
    history
        .iter()
        .rev()
        .find(|v| v.revision <= revision)
        .and_then(|v| v.kv.as_ref())
}

/// A key interval as `BTreeMap::range` bounds.
type Span<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// etcd's interval for `key`/`range_end` as map bounds; `None` when empty.
fn span<'a>(key: &'a [u8], range_end: &'a [u8]) -> Option<Span<'a>> {
    match range_end {
        [] => Some((Bound::Included(key), Bound::Included(key))),
        [0] => Some((Bound::Included(key), Bound::Unbounded)),
        end if end > key => Some((Bound::Included(key), Bound::Excluded(end))),
        _ => None,
    }
}
