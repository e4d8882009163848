//! Bε-tree leaves: live keys, sorted, stored back to back in one byte arena.
//!
//! A leaf is three parallel vectors instead of one `Vec<u8>` per key: the
//! key bytes concatenated in key order, each key's end offset, and the
//! entries. That saves the per-key allocation (a 24-byte `Vec` header plus
//! allocator overhead) that `BTreeMap<Vec<u8>, _>` pays, and keeps every key
//! a contiguous slice, which [`KeyIndex::range`](crate::KeyIndex::range)
//! must hand out by reference. (Front coding would save the shared
//! `/registry/pods/<namespace>/` bytes too, but a front-coded key is not a
//! contiguous slice; see `docs/key-index.md`.)
//!
//! Leaves are rewritten whole when a batch of messages arrives
//! ([`Leaf::apply`]), which is the Bε-tree's point: one leaf rewrite per
//! batch, not per write.

use std::cmp::Ordering;

use super::node::Message;
use crate::index::IndexEntry;

/// Sorted live keys and their entries.
///
/// Invariant: `ends.len() == entries.len()`, `ends` is non-decreasing and
/// ends at `bytes.len()`, and the keys it delimits are strictly ascending.
#[derive(Debug, Clone, Default)]
pub(super) struct Leaf {
    bytes: Vec<u8>,
    ends: Vec<u32>,
    entries: Vec<IndexEntry>,
}

impl Leaf {
    /// Number of keys.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The `i`-th key in ascending order.
    pub(super) fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    /// The `i`-th key's entry.
    pub(super) fn entry(&self, i: usize) -> &IndexEntry {
        &self.entries[i]
    }

    /// Position of `key`, or where it would be inserted.
    pub(super) fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Index of the first key `>= key`.
    pub(super) fn lower_bound(&self, key: &[u8]) -> usize {
        match self.search(key) {
            Ok(i) | Err(i) => i,
        }
    }

    fn with_capacity(keys: usize, key_bytes: usize) -> Leaf {
        Leaf {
            bytes: Vec::with_capacity(key_bytes),
            ends: Vec::with_capacity(keys),
            entries: Vec::with_capacity(keys),
        }
    }

    /// Appends a key greater than every key already held.
    pub(super) fn push(&mut self, key: &[u8], entry: IndexEntry) {
        debug_assert!(self.len() == 0 || self.key(self.len() - 1) < key);
        self.bytes.extend_from_slice(key);
        // Node sizes are bounded far below 4 GiB of key bytes per leaf.
        self.ends
            .push(u32::try_from(self.bytes.len()).expect("leaf arena < 4 GiB"));
        self.entries.push(entry);
    }

    /// Applies a batch of messages (sorted by key, keys unique): a put
    /// inserts or replaces, a delete removes the key if present.
    pub(super) fn apply(&mut self, batch: Vec<Message>) {
        let incoming: usize = batch.iter().map(|m| m.key.len()).sum();
        let mut out = Leaf::with_capacity(self.len() + batch.len(), self.bytes.len() + incoming);
        let mut i = 0;
        for msg in batch {
            while i < self.len() && self.key(i) < &*msg.key {
                out.push(self.key(i), self.entries[i]);
                i += 1;
            }
            if i < self.len() && self.key(i) == &*msg.key {
                i += 1;
            }
            if let Some(entry) = msg.op {
                out.push(&msg.key, entry);
            }
        }
        while i < self.len() {
            out.push(self.key(i), self.entries[i]);
            i += 1;
        }
        out.shrink_if_loose();
        *self = out;
    }

    /// Gives back capacity when deletes left more than an eighth unused.
    fn shrink_if_loose(&mut self) {
        if self.bytes.capacity() - self.bytes.len() > self.bytes.capacity() / 8 {
            self.bytes.shrink_to_fit();
        }
        if self.entries.capacity() - self.entries.len() > self.entries.capacity() / 8 {
            self.ends.shrink_to_fit();
            self.entries.shrink_to_fit();
        }
    }

    /// Cuts the leaf into `pieces` leaves of near-equal length, in order.
    pub(super) fn split(self, pieces: usize) -> Vec<Leaf> {
        let n = self.len();
        let mut out = Vec::with_capacity(pieces);
        let mut i = 0;
        for p in 0..pieces {
            let stop = n * (p + 1) / pieces;
            let bytes_from = if i == 0 { 0 } else { self.ends[i - 1] as usize };
            let bytes_to = if stop == 0 {
                0
            } else {
                self.ends[stop - 1] as usize
            };
            let mut leaf = Leaf::with_capacity(stop - i, bytes_to - bytes_from);
            for j in i..stop {
                leaf.push(self.key(j), self.entries[j]);
            }
            out.push(leaf);
            i = stop;
        }
        out
    }

    /// Appends every key of `right`, all greater than every key here.
    pub(super) fn append(&mut self, right: Leaf) {
        for j in 0..right.len() {
            self.push(right.key(j), right.entries[j]);
        }
    }

    /// Keeps only the keys whose entry satisfies `keep`; returns how many
    /// were dropped.
    pub(super) fn retain(&mut self, keep: impl Fn(&IndexEntry) -> bool) -> usize {
        let mut out = Leaf::with_capacity(self.len(), self.bytes.len());
        for j in 0..self.len() {
            if keep(&self.entries[j]) {
                out.push(self.key(j), self.entries[j]);
            }
        }
        let dropped = self.len() - out.len();
        out.shrink_if_loose();
        *self = out;
        dropped
    }

    /// Size of the leaf serialised as one node of the external-memory model:
    /// each key with a 2-byte length, plus the entries (see `io`).
    pub(super) fn model_bytes(&self) -> usize {
        self.bytes.len() + self.len() * (2 + std::mem::size_of::<IndexEntry>())
    }
}
