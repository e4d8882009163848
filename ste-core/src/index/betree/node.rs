//! Bε-tree nodes: a leaf, or pivots + children + one message buffer per
//! child.
//!
//! Buffers are kept per child (sorted by key, one message per key) rather
//! than as one buffer per node: routing a message costs one pivot search,
//! a flush takes the fullest child's buffer whole, and a point read looks in
//! exactly one buffer per level.

use super::leaf::Leaf;
use crate::index::IndexEntry;

/// A pending write, newer than everything below the buffer holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Message {
    /// The key written.
    pub(super) key: Box<[u8]>,
    /// `Some(entry)`: upsert `entry` (a whole entry, so the newest message
    /// for a key is its value); `None`: delete.
    pub(super) op: Option<IndexEntry>,
}

/// Node size limits derived from [`BeTreeConfig`](super::BeTreeConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// A leaf holding more keys than this is split.
    pub(super) leaf_max: usize,
    /// A leaf holding fewer keys than this is merged with a sibling.
    pub(super) leaf_min: usize,
    /// An internal node with more children than this is split.
    pub(super) fanout_max: usize,
    /// An internal node with fewer children than this is merged.
    pub(super) fanout_min: usize,
    /// An internal node buffering more messages than this flushes.
    /// Zero makes the tree a plain B+-tree (ε = 1).
    pub(super) buffer_max: usize,
}

/// A node of the tree.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Leaf(Leaf),
    Internal(Internal),
}

/// An internal node.
///
/// Invariants: `children.len() == buffers.len() == pivots.len() + 1 >= 1`;
/// pivots strictly ascending; child `i` (and `buffers[i]`) holds only keys
/// `k` with `pivots[i-1] <= k < pivots[i]`; each buffer is sorted with
/// unique keys; `buffered` is the total buffer length.
#[derive(Debug, Clone)]
pub(super) struct Internal {
    pub(super) pivots: Vec<Box<[u8]>>,
    pub(super) children: Vec<Node>,
    pub(super) buffers: Vec<Vec<Message>>,
    pub(super) buffered: usize,
}

impl Internal {
    /// An internal node over `children` separated by `pivots`, buffers empty.
    pub(super) fn new(pivots: Vec<Box<[u8]>>, children: Vec<Node>) -> Internal {
        let buffers = children.iter().map(|_| Vec::new()).collect();
        Internal {
            pivots,
            children,
            buffers,
            buffered: 0,
        }
    }

    /// Index of the child whose key range holds `key`.
    pub(super) fn child_for(&self, key: &[u8]) -> usize {
        self.pivots.partition_point(|p| &**p <= key)
    }

    /// Adds a batch of messages (sorted, unique keys) to the buffers; a
    /// message replaces an older one for the same key.
    pub(super) fn accept(&mut self, batch: Vec<Message>) {
        if batch.len() == 1 {
            let msg = batch.into_iter().next().expect("one message");
            let i = self.child_for(&msg.key);
            let buffer = &mut self.buffers[i];
            match buffer.binary_search_by(|m| (*m.key).cmp(&msg.key)) {
                Ok(j) => buffer[j] = msg,
                Err(j) => {
                    buffer.insert(j, msg);
                    self.buffered += 1;
                }
            }
            return;
        }
        let mut run = Vec::new();
        let mut current = None;
        for msg in batch {
            let i = self.child_for(&msg.key);
            if current != Some(i) {
                if let Some(c) = current {
                    self.merge_into(c, std::mem::take(&mut run));
                }
                current = Some(i);
            }
            run.push(msg);
        }
        if let Some(c) = current {
            self.merge_into(c, run);
        }
    }

    fn merge_into(&mut self, i: usize, newer: Vec<Message>) {
        let older = std::mem::take(&mut self.buffers[i]);
        self.buffered -= older.len();
        let merged = merge_messages(older, newer);
        self.buffered += merged.len();
        self.buffers[i] = merged;
    }

    /// Cuts the node into `pieces` nodes of near-equal fanout; returns the
    /// pivots separating them and the pieces, in order.
    pub(super) fn split(self, pieces: usize) -> (Vec<Box<[u8]>>, Vec<Node>) {
        let n = self.children.len();
        let mut pivots = self.pivots.into_iter();
        let mut children = self.children.into_iter();
        let mut buffers = self.buffers.into_iter();
        let mut separators = Vec::with_capacity(pieces - 1);
        let mut out = Vec::with_capacity(pieces);
        let mut taken = 0;
        for p in 0..pieces {
            let stop = n * (p + 1) / pieces;
            let count = stop - taken;
            let piece_children: Vec<Node> = children.by_ref().take(count).collect();
            let piece_buffers: Vec<Vec<Message>> = buffers.by_ref().take(count).collect();
            let piece_pivots: Vec<Box<[u8]>> = pivots.by_ref().take(count - 1).collect();
            if p + 1 < pieces {
                separators.push(pivots.next().expect("a pivot between pieces"));
            }
            let buffered = piece_buffers.iter().map(Vec::len).sum();
            out.push(Node::Internal(Internal {
                pivots: piece_pivots,
                children: piece_children,
                buffers: piece_buffers,
                buffered,
            }));
            taken = stop;
        }
        (separators, out)
    }

    /// Appends `right`'s children; `separator` is the pivot between them.
    pub(super) fn append(&mut self, separator: Box<[u8]>, right: Internal) {
        self.pivots.push(separator);
        self.pivots.extend(right.pivots);
        self.children.extend(right.children);
        self.buffers.extend(right.buffers);
        self.buffered += right.buffered;
    }

    /// Size of the node in the external-memory model: pivots with a 2-byte
    /// length, an 8-byte block pointer per child, and each buffered message
    /// as key + length + tag + entry.
    pub(super) fn model_bytes(&self) -> usize {
        let pivots: usize = self.pivots.iter().map(|p| p.len() + 2).sum();
        let messages: usize = self
            .buffers
            .iter()
            .flatten()
            .map(|m| m.key.len() + 3 + std::mem::size_of::<IndexEntry>())
            .sum();
        pivots + 8 * self.children.len() + messages
    }
}

impl Node {
    /// Whether the node must be split under `shape`.
    pub(super) fn pieces_needed(&self, shape: &Shape) -> usize {
        match self {
            Node::Leaf(l) => l.len().div_ceil(shape.leaf_max).max(1),
            Node::Internal(n) => n.children.len().div_ceil(shape.fanout_max).max(1),
        }
    }

    /// Whether the node is small enough to be merged with a sibling.
    pub(super) fn is_underfull(&self, shape: &Shape) -> bool {
        match self {
            Node::Leaf(l) => l.len() < shape.leaf_min,
            Node::Internal(n) => n.children.len() < shape.fanout_min,
        }
    }

    /// Splits into `pieces` nodes; see [`Internal::split`].
    pub(super) fn split(self, pieces: usize) -> (Vec<Box<[u8]>>, Vec<Node>) {
        match self {
            Node::Leaf(l) => {
                let leaves = l.split(pieces);
                let pivots = leaves[1..]
                    .iter()
                    .map(|leaf| Box::<[u8]>::from(leaf.key(0)))
                    .collect();
                (pivots, leaves.into_iter().map(Node::Leaf).collect())
            }
            Node::Internal(n) => n.split(pieces),
        }
    }

    /// Size in the external-memory model, in bytes.
    pub(super) fn model_bytes(&self) -> usize {
        match self {
            Node::Leaf(l) => l.model_bytes(),
            Node::Internal(n) => n.model_bytes(),
        }
    }
}

/// Merges two sorted, key-unique message lists; on equal keys the newer
/// message wins.
pub(super) fn merge_messages(older: Vec<Message>, newer: Vec<Message>) -> Vec<Message> {
    if older.is_empty() {
        return newer;
    }
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let mut older = older.into_iter().peekable();
    for msg in newer {
        while let Some(o) = older.next_if(|o| o.key < msg.key) {
            out.push(o);
        }
        older.next_if(|o| o.key == msg.key);
        out.push(msg);
    }
    out.extend(older);
    out
}

/// Splits a sorted message list by `pivots` into `pivots.len() + 1` lists.
pub(super) fn partition_messages(
    messages: Vec<Message>,
    pivots: &[Box<[u8]>],
) -> Vec<Vec<Message>> {
    let mut out: Vec<Vec<Message>> = (0..=pivots.len()).map(|_| Vec::new()).collect();
    for msg in messages {
        let i = pivots.partition_point(|p| **p <= *msg.key);
        out[i].push(msg);
    }
    out
}
