//! Point lookups and counts. Range scans are in [`scan`](super::scan).
//!
//! Child `i`'s stream is `buffers[i]` merged over the child's own stream:
//! a buffered put replaces or adds a key, a buffered delete hides it. Each
//! level yields only live keys, so the overlay above needs no tombstones.
//! Children are opened only when the walk reaches them, so a scan that
//! stops after `limit` keys touches only the nodes holding those keys.

use super::io::Io;
use super::node::Node;
use crate::KeyRange;
use crate::index::IndexEntry;

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
