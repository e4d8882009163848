//! Range scans: a lazy, in-order walk, one leaf at a time.
//!
//! The walk keeps the path from the root as a stack of frames. On reaching
//! a leaf it gathers the pending messages for that leaf's key interval from
//! every buffer on the path, newest (nearest the root) winning, into one
//! small sorted list; then it yields the leaf's keys, jumping by binary
//! search from one message's key to the next, so keys that no message
//! touches cost no comparison. A scan that stops after `limit` keys touches
//! only the leaves holding those keys and their ancestors.

use super::io::Io;
use super::leaf::Leaf;
use super::node::{Internal, Message, Node};
use crate::KeyRange;
use crate::index::IndexEntry;

/// An internal node on the current path.
struct Frame<'a> {
    node: &'a Internal,
    /// The child being walked (`next - 1`) and the last child in range.
    next: usize,
    last: usize,
    /// The node's key interval, `None` for unbounded.
    low: Option<&'a [u8]>,
    high: Option<&'a [u8]>,
}

impl<'a> Frame<'a> {
    fn new(
        node: &'a Internal,
        range: &KeyRange,
        low: Option<&'a [u8]>,
        high: Option<&'a [u8]>,
    ) -> Self {
        let first = node.child_for(range.start());
        let last = match range.end() {
            // The last child whose lower bound is below `end`.
            Some(end) => node.pivots.partition_point(|p| **p < *end),
            None => node.children.len() - 1,
        };
        Frame {
            node,
            next: first,
            last: last.max(first),
            low,
            high,
        }
    }

    /// Key interval of child `i`.
    fn child_interval(&self, i: usize) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
        let low = if i == 0 {
            self.low
        } else {
            Some(&*self.node.pivots[i - 1])
        };
        let high = self.node.pivots.get(i).map(|p| &**p).or(self.high);
        (low, high)
    }
}

/// The live keys of a tree in a range, ascending.
pub(super) struct Scan<'a> {
    range: KeyRange,
    io: &'a Io,
    stack: Vec<Frame<'a>>,
    /// The root, while it is a leaf not yet visited.
    root_leaf: Option<&'a Leaf>,
    leaf: Option<&'a Leaf>,
    /// Next leaf position, the end of the range in the leaf, and where the
    /// next message's key would sit.
    pos: usize,
    end: usize,
    stop: usize,
    /// Pending messages for the current leaf, sorted; `messages[m..]` left.
    messages: Vec<&'a Message>,
    m: usize,
    scratch: Vec<&'a Message>,
}

impl<'a> Scan<'a> {
    pub(super) fn new(root: &'a Node, range: &KeyRange, io: &'a Io) -> Scan<'a> {
        io.read(root);
        let mut scan = Scan {
            range: range.clone(),
            io,
            stack: Vec::new(),
            root_leaf: None,
            leaf: None,
            pos: 0,
            end: 0,
            stop: 0,
            messages: Vec::new(),
            m: 0,
            scratch: Vec::new(),
        };
        match root {
            Node::Leaf(leaf) => scan.root_leaf = Some(leaf),
            Node::Internal(n) => scan.stack.push(Frame::new(n, range, None, None)),
        }
        scan
    }

    /// Moves to the next leaf in range; false when there is none.
    fn next_leaf(&mut self) -> bool {
        if let Some(leaf) = self.root_leaf.take() {
            self.enter(leaf, None, None);
            return true;
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return false;
            };
            if top.next > top.last {
                self.stack.pop();
                continue;
            }
            let i = top.next;
            top.next += 1;
            let (low, high) = top.child_interval(i);
            let child = &top.node.children[i];
            self.io.read(child);
            match child {
                Node::Internal(n) => {
                    let frame = Frame::new(n, &self.range, low, high);
                    self.stack.push(frame);
                }
                Node::Leaf(leaf) => {
                    self.enter(leaf, low, high);
                    return true;
                }
            }
        }
    }

    /// Starts yielding `leaf`, whose key interval is `[low, high)`.
    fn enter(&mut self, leaf: &'a Leaf, low: Option<&'a [u8]>, high: Option<&'a [u8]>) {
        let from = match low {
            Some(low) if low > self.range.start() => low,
            _ => self.range.start(),
        };
        let to = match (high, self.range.end()) {
            (Some(h), Some(e)) => Some(h.min(e)),
            (h, e) => h.or(e),
        };
        self.messages.clear();
        self.m = 0;
        // Deepest (oldest) buffers first; each shallower one overrides.
        for frame in self.stack.iter().rev() {
            let buffer = &frame.node.buffers[frame.next - 1];
            let a = buffer.partition_point(|msg| *msg.key < *from);
            let b = to.map_or(buffer.len(), |to| {
                buffer.partition_point(|msg| *msg.key < *to)
            });
            if a < b {
                overlay(&mut self.messages, &buffer[a..b], &mut self.scratch);
            }
        }
        self.leaf = Some(leaf);
        self.pos = leaf.lower_bound(from);
        self.end = to
            .map_or(leaf.len(), |to| leaf.lower_bound(to))
            .max(self.pos);
        self.aim();
    }

    /// Sets `stop` to where the next message's key sits in the leaf.
    fn aim(&mut self) {
        let leaf = self.leaf.expect("in a leaf");
        self.stop = match self.messages.get(self.m) {
            Some(msg) => self.pos + leaf_lower_bound(leaf, self.pos, self.end, &msg.key),
            None => self.end,
        };
    }
}

/// Index, relative to `from`, of the first key of `leaf[from..to]` that is
/// `>= key`.
fn leaf_lower_bound(leaf: &Leaf, from: usize, to: usize, key: &[u8]) -> usize {
    let (mut lo, mut hi) = (from, to);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if leaf.key(mid) < key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo - from
}

/// Merges `newer` (sorted) over `merged` (sorted), newer winning on ties.
fn overlay<'a>(
    merged: &mut Vec<&'a Message>,
    newer: &'a [Message],
    scratch: &mut Vec<&'a Message>,
) {
    scratch.clear();
    let mut older = merged.iter().copied().peekable();
    for msg in newer {
        while let Some(o) = older.next_if(|o| o.key < msg.key) {
            scratch.push(o);
        }
        older.next_if(|o| o.key == msg.key);
        scratch.push(msg);
    }
    scratch.extend(older);
    std::mem::swap(merged, scratch);
}

impl<'a> Iterator for Scan<'a> {
    type Item = (&'a [u8], &'a IndexEntry);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(leaf) = self.leaf else {
                if !self.next_leaf() {
                    return None;
                }
                continue;
            };
            if self.pos < self.stop {
                let i = self.pos;
                self.pos += 1;
                return Some((leaf.key(i), leaf.entry(i)));
            }
            let Some(msg) = self.messages.get(self.m).copied() else {
                self.leaf = None;
                continue;
            };
            // The leaf key at `pos`, if equal, is overridden by the message.
            if self.pos < self.end && leaf.key(self.pos) == &*msg.key {
                self.pos += 1;
            }
            self.m += 1;
            self.aim();
            if let Some(entry) = &msg.op {
                return Some((&msg.key, entry));
            }
        }
    }
}
