//! Reads: point lookups, counts, and range scans (a lazy, in-order walk
//! that overlays each level's pending messages on what lies below them).
//!
//! Child `i`'s stream is `buffers[i]` merged over the child's own stream:
//! a buffered put replaces or adds a key, a buffered delete hides it. Each
//! level yields only live keys, so the overlay above needs no tombstones.
//! Children are opened only when the walk reaches them, so a scan that
//! stops after `limit` keys touches only the nodes holding those keys.

use std::iter::Peekable;
use std::rc::Rc;

use super::io::Io;
use super::node::{Message, Node};
use crate::KeyRange;
use crate::index::IndexEntry;

/// Live keys in ascending order, borrowed from the tree.
pub(super) type Items<'a> = Box<dyn Iterator<Item = (&'a [u8], &'a IndexEntry)> + 'a>;

/// The live entry for `key` in `node`'s subtree: the first message for it
/// on the way down (the newest), else the leaf.
pub(super) fn lookup<'a>(mut node: &'a Node, key: &[u8], io: &Io) -> Option<&'a IndexEntry> {
    loop {
        io.read(node);
        match node {
            Node::Leaf(leaf) => return leaf.search(key).ok().map(|i| leaf.entry(i)),
            Node::Internal(n) => {
                let i = n.child_for(key);
                let buffer = &n.buffers[i];
                if let Ok(j) = buffer.binary_search_by(|m| (*m.key).cmp(key)) {
                    return buffer[j].op.as_ref();
                }
                node = &n.children[i];
            }
        }
    }
}

/// How many live keys of `node`'s subtree lie in `range`, without visiting
/// them one by one: a leaf answers with two binary searches, and a buffered
/// message corrects its child's count by one lookup in that child (a put
/// of a key absent below adds one, a delete of a key live below takes one
/// away). Cost: the leaves in range plus `height` per buffered message.
pub(super) fn count(node: &Node, range: &KeyRange, io: &Io) -> usize {
    io.read(node);
    match node {
        Node::Leaf(leaf) => {
            let from = leaf.lower_bound(range.start());
            let to = range.end().map_or(leaf.len(), |end| leaf.lower_bound(end));
            to.saturating_sub(from)
        }
        Node::Internal(n) => {
            let first = n.child_for(range.start());
            let last = match range.end() {
                Some(end) => n.pivots.partition_point(|p| **p < *end),
                None => n.children.len() - 1,
            };
            let mut total = 0;
            for i in first..=last.max(first) {
                let child = &n.children[i];
                let mut below = count(child, range, io);
                for msg in n.buffers[i].iter().filter(|m| range.contains(&m.key)) {
                    match (&msg.op, lookup(child, &msg.key, io).is_some()) {
                        (Some(_), false) => below += 1,
                        (None, true) => below -= 1,
                        _ => {}
                    }
                }
                total += below;
            }
            total
        }
    }
}

/// The live keys of `node`'s subtree that lie in `range`.
pub(super) fn scan<'a>(node: &'a Node, range: Rc<KeyRange>, io: &'a Io) -> Items<'a> {
    io.read(node);
    match node {
        Node::Leaf(leaf) => {
            let from = leaf.lower_bound(range.start());
            let to = range.end().map_or(leaf.len(), |end| leaf.lower_bound(end));
            Box::new((from..to.max(from)).map(move |i| (leaf.key(i), leaf.entry(i))))
        }
        Node::Internal(n) => {
            let first = n.child_for(range.start());
            let last = match range.end() {
                // The last child whose lower bound is below `end`.
                Some(end) => n.pivots.partition_point(|p| **p < *end),
                None => n.children.len() - 1,
            };
            Box::new((first..=last.max(first)).flat_map(move |i| {
                let buffer = &n.buffers[i];
                let from = buffer.partition_point(|m| *m.key < *range.start());
                let to = range.end().map_or(buffer.len(), |end| {
                    buffer.partition_point(|m| *m.key < *end)
                });
                let below = scan(&n.children[i], Rc::clone(&range), io);
                if from >= to {
                    below
                } else {
                    Box::new(Overlay {
                        messages: buffer[from..to].iter().peekable(),
                        below: below.peekable(),
                    }) as Items<'a>
                }
            }))
        }
    }
}

/// Pending messages merged over the live keys below them.
struct Overlay<'a> {
    messages: Peekable<std::slice::Iter<'a, Message>>,
    below: Peekable<Items<'a>>,
}

impl<'a> Iterator for Overlay<'a> {
    type Item = (&'a [u8], &'a IndexEntry);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(msg) = self.messages.peek() else {
                return self.below.next();
            };
            if let Some((key, _)) = self.below.peek() {
                match (*msg.key).cmp(*key) {
                    std::cmp::Ordering::Greater => return self.below.next(),
                    std::cmp::Ordering::Equal => {
                        self.below.next();
                    }
                    std::cmp::Ordering::Less => {}
                }
            }
            let msg = self.messages.next().expect("peeked");
            if let Some(entry) = &msg.op {
                return Some((&msg.key, entry));
            }
        }
    }
}
