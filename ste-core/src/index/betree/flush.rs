//! Flushing: moving buffered messages one level down, in batches, and
//! keeping node sizes within [`Shape`] as they move.
//!
//! A node whose buffers hold more than `buffer_max` messages sends the
//! fullest child's whole buffer down. With `B` = `leaf_max` and fanout
//! `F = B^ε`, that batch holds at least `(B - F) / F ≈ B^(1-ε)` messages, so
//! one child read + write is shared by that many writes: the source of the
//! Bε-tree's `O(log_B N / B^(1-ε))` amortised insert cost.

use super::io::Io;
use super::node::{Internal, Message, Node, Shape, partition_messages};

impl Internal {
    /// Flushes until at most `shape.buffer_max` messages are buffered.
    /// The node's own child count may change (children split or merge).
    pub(super) fn flush(&mut self, shape: &Shape, io: &Io) {
        while self.buffered > shape.buffer_max {
            let fullest = (0..self.buffers.len())
                .max_by_key(|&i| self.buffers[i].len())
                .expect("an internal node has a child");
            let batch = std::mem::take(&mut self.buffers[fullest]);
            self.buffered -= batch.len();
            self.push_down(fullest, batch, shape, io);
        }
    }

    /// Applies `batch` (sorted, unique keys, all within child `i`'s range)
    /// to child `i`, then restores the child's shape. `buffers[i]` must be
    /// empty: the batch is everything pending for that child.
    pub(super) fn push_down(&mut self, i: usize, batch: Vec<Message>, shape: &Shape, io: &Io) {
        debug_assert!(self.buffers[i].is_empty());
        let child = &mut self.children[i];
        io.read(child);
        match child {
            Node::Leaf(leaf) => {
                leaf.apply(batch);
                io.write(child);
            }
            Node::Internal(node) => {
                node.accept(batch);
                node.flush(shape, io);
                if shape.buffer_max > 0 {
                    // With no buffers (ε = 1) messages only pass through.
                    io.write(child);
                }
            }
        }
        self.fix_child(i, shape, io);
    }

    /// Splits child `i` if it is too big, or merges it with a neighbour if
    /// it is too small. Marks every node it changes as written.
    fn fix_child(&mut self, i: usize, shape: &Shape, io: &Io) {
        if self.children[i].pieces_needed(shape) > 1 {
            self.split_child(i, shape, io);
        } else if self.children[i].is_underfull(shape) && self.children.len() > 1 {
            let left = if i + 1 < self.children.len() {
                i
            } else {
                i - 1
            };
            self.merge_children(left, shape, io);
        }
    }

    /// Replaces child `i` by the pieces it splits into.
    fn split_child(&mut self, i: usize, shape: &Shape, io: &Io) {
        let pieces = self.children[i].pieces_needed(shape);
        let placeholder = Node::Leaf(Default::default());
        let child = std::mem::replace(&mut self.children[i], placeholder);
        let (separators, nodes) = child.split(pieces);
        let buffer = std::mem::take(&mut self.buffers[i]);
        let buffers = partition_messages(buffer, &separators);
        let count = nodes.len();
        self.children.splice(i..=i, nodes);
        self.buffers.splice(i..=i, buffers);
        self.pivots.splice(i..i, separators);
        for node in &self.children[i..i + count] {
            io.write(node);
        }
    }

    /// Merges children `left` and `left + 1` (and their buffers), then
    /// splits the result again if it came out too big.
    fn merge_children(&mut self, left: usize, shape: &Shape, io: &Io) {
        let right = self.children.remove(left + 1);
        let right_buffer = self.buffers.remove(left + 1);
        let separator = self.pivots.remove(left);
        io.read(&right);
        self.buffers[left].extend(right_buffer);
        match (&mut self.children[left], right) {
            (Node::Leaf(l), Node::Leaf(r)) => l.append(r),
            (Node::Internal(l), Node::Internal(r)) => {
                l.append(separator, r);
                l.flush(shape, io);
            }
            _ => unreachable!("siblings are at the same depth"),
        }
        if self.children[left].pieces_needed(shape) > 1 {
            self.split_child(left, shape, io);
        } else {
            io.write(&self.children[left]);
        }
    }
}
