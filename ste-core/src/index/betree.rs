//! [`BeTreeIndex`]: the key index as a Bε-tree (a "fractal tree").
//!
//! A Bε-tree is a B+-tree whose internal nodes also hold a buffer of
//! pending writes ([`node::Message`]: upsert or delete). A write lands in
//! the root's buffer; when a buffer overflows, the messages for the child
//! with the most of them move down one level in one batch (see [`flush`]),
//! so a leaf is rewritten once per batch rather than once per write. Reads
//! take the newest message on their path, else the leaf.
//!
//! With leaves of `B` keys and fanout `F = B^ε` (the rest of an internal
//! node is buffer), in the external-memory model with `B`-sized blocks:
//!
//! | operation    | B-tree (ε = 1)        | Bε-tree                         |
//! |--------------|-----------------------|---------------------------------|
//! | blind write  | `O(log_B N)`          | `O(log_B N / (ε B^(1-ε)))`      |
//! | point read   | `O(log_B N)`          | `O(log_B N / ε)`                |
//! | scan of k    | `O(log_B N + k / B)`  | `O(log_B N / ε + k / B)`        |
//!
//! [`KeyIndex::insert`] and [`KeyIndex::remove`] return the previous entry,
//! so here every write is a point read followed by a blind write; the
//! trade-off that this buys is measured in `docs/key-index.md`.
//!
//! Leaves keep their keys in one byte arena ([`leaf`]), which is where the
//! memory saving over `BTreeMap<Vec<u8>, _>` comes from.

mod flush;
mod io;
mod iter;
mod leaf;
mod node;
mod scan;

#[cfg(test)]
mod tests;

pub use io::{BLOCK_BYTES, IoCounts};

use self::io::{Io, Phase};
use self::leaf::Leaf;
use self::node::{Internal, Message, Node, Shape};
use super::{IndexEntry, KeyIndex, ShardId};
use crate::KeyRange;

/// Node size and ε of a [`BeTreeIndex`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeTreeConfig {
    /// `B`: the most keys a leaf holds, and the most messages plus children
    /// an internal node holds (at least 8). Default [`BeTreeConfig::DEFAULT_NODE_ENTRIES`].
    pub node_entries: usize,
    /// ε in `(0, 1]`: an internal node has up to `B^ε` children (at least
    /// 4) and buffers up to `B - B^ε` messages. ε = 1 leaves no room for
    /// buffers: the tree is then a plain B+-tree. Default
    /// [`BeTreeConfig::DEFAULT_EPSILON`].
    pub epsilon: f64,
}

impl BeTreeConfig {
    /// Default `B`, in keys per leaf. With pod keys of ~40–60 bytes and
    /// 48-byte entries a leaf is ~24 KiB: large enough that per-node
    /// overhead is small and a `limit` 500 page spans 2–3 leaves, small
    /// enough that rewriting a leaf per flush stays cheap.
    pub const DEFAULT_NODE_ENTRIES: usize = 256;
    /// Default ε: the textbook balance (fanout `√B` = 16, buffers of 240).
    pub const DEFAULT_EPSILON: f64 = 0.5;

    /// The default configuration.
    pub const fn new() -> BeTreeConfig {
        BeTreeConfig {
            node_entries: Self::DEFAULT_NODE_ENTRIES,
            epsilon: Self::DEFAULT_EPSILON,
        }
    }

    /// The node limits this configuration implies; `B` is raised to 8 and
    /// ε clamped into `(0, 1]` so every configuration gives a valid tree.
    fn shape(&self) -> Shape {
        let b = self.node_entries.max(8);
        let epsilon = if self.epsilon.is_finite() {
            self.epsilon.clamp(0.01, 1.0)
        } else {
            Self::DEFAULT_EPSILON
        };
        // `b` is small, so the float round trip is exact enough.
        let fanout = ((b as f64).powf(epsilon).round() as usize).clamp(4, b);
        Shape {
            leaf_max: b,
            leaf_min: b / 4,
            fanout_max: fanout,
            fanout_min: (fanout / 4).max(2),
            buffer_max: b - fanout,
        }
    }
}

impl Default for BeTreeConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// [`KeyIndex`] as a Bε-tree; see the module documentation.
#[derive(Debug)]
pub struct BeTreeIndex {
    root: Node,
    shape: Shape,
    config: BeTreeConfig,
    len: usize,
    io: Io,
}

impl Default for BeTreeIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl BeTreeIndex {
    /// An empty index with the default configuration.
    pub fn new() -> Self {
        Self::with_config(BeTreeConfig::new())
    }

    /// An empty index with the given node size and ε.
    pub fn with_config(config: BeTreeConfig) -> Self {
        BeTreeIndex {
            root: Node::Leaf(Leaf::default()),
            shape: config.shape(),
            config,
            len: 0,
            io: Io::default(),
        }
    }

    /// An empty index that counts block transfers in the external-memory
    /// model (see [`IoCounts`]). Slower: for measurement only.
    pub fn with_io_model(config: BeTreeConfig) -> Self {
        BeTreeIndex {
            io: Io::on(),
            ..Self::with_config(config)
        }
    }

    /// The configuration the index was built with.
    pub fn config(&self) -> BeTreeConfig {
        self.config
    }

    /// Block transfers so far, when built by [`BeTreeIndex::with_io_model`].
    pub fn io_counts(&self) -> Option<IoCounts> {
        self.io.counts()
    }

    /// Levels from the root to the leaves (1 for a lone leaf).
    pub fn height(&self) -> usize {
        let mut node = &self.root;
        let mut height = 1;
        while let Node::Internal(n) = node {
            node = &n.children[0];
            height += 1;
        }
        height
    }

    fn lookup(&self, key: &[u8]) -> Option<&IndexEntry> {
        iter::lookup(&self.root, key, &self.io)
    }

    /// Sends one message into the root and restores the root's shape.
    fn push(&mut self, msg: Message) {
        self.io.begin(Phase::Update);
        self.io.read(&self.root);
        match &mut self.root {
            Node::Leaf(leaf) => leaf.apply(vec![msg]),
            Node::Internal(root) => {
                root.accept(vec![msg]);
                root.flush(&self.shape, &self.io);
            }
        }
        if !matches!(self.root, Node::Internal(_)) || self.shape.buffer_max > 0 {
            self.io.write(&self.root);
        }
        self.fix_root();
        self.io.end();
    }

    /// Grows the tree while the root is too big; shrinks it while the root
    /// is an internal node with a single child.
    fn fix_root(&mut self) {
        loop {
            let pieces = self.root.pieces_needed(&self.shape);
            if pieces > 1 {
                let old = std::mem::replace(&mut self.root, Node::Leaf(Leaf::default()));
                let (pivots, children) = old.split(pieces);
                for child in &children {
                    self.io.write(child);
                }
                self.root = Node::Internal(Internal::new(pivots, children));
                self.io.write(&self.root);
                continue;
            }
            let Node::Internal(root) = &mut self.root else {
                return;
            };
            if root.children.len() > 1 {
                return;
            }
            if root.buffered > 0 {
                let batch = std::mem::take(&mut root.buffers[0]);
                root.buffered = 0;
                root.push_down(0, batch, &self.shape, &self.io);
                continue;
            }
            let child = root.children.pop().expect("one child");
            self.root = child;
        }
    }

    /// Rebuilds the tree from sorted, unique live entries, with nodes about
    /// three quarters full and empty buffers.
    fn bulk_load(&mut self, items: Vec<(Vec<u8>, IndexEntry)>) {
        let per_leaf = (self.shape.leaf_max * 3 / 4).max(1);
        let mut level: Vec<(Box<[u8]>, Node)> = Vec::new();
        for chunk in items.chunks(per_leaf) {
            let mut leaf = Leaf::default();
            for (key, entry) in chunk {
                leaf.push(key, *entry);
            }
            level.push((chunk[0].0.clone().into_boxed_slice(), Node::Leaf(leaf)));
        }
        self.len = items.len();
        let per_node = (self.shape.fanout_max * 3 / 4).max(2);
        while level.len() > 1 {
            let mut next = Vec::new();
            let mut rest = level.into_iter().peekable();
            while rest.peek().is_some() {
                let group: Vec<(Box<[u8]>, Node)> = rest.by_ref().take(per_node).collect();
                let low = group[0].0.clone();
                let (mut pivots, children): (Vec<_>, Vec<_>) = group.into_iter().unzip();
                pivots.remove(0);
                next.push((low, Node::Internal(Internal::new(pivots, children))));
            }
            level = next;
        }
        self.root = level
            .pop()
            .map_or_else(|| Node::Leaf(Leaf::default()), |(_, node)| node);
    }
}

impl KeyIndex for BeTreeIndex {
    fn get(&self, key: &[u8]) -> Option<&IndexEntry> {
        self.io.begin(Phase::Lookup);
        let found = self.lookup(key);
        self.io.end();
        found
    }

    fn insert(&mut self, key: Vec<u8>, entry: IndexEntry) -> Option<IndexEntry> {
        self.io.begin(Phase::Lookup);
        let previous = self.lookup(&key).copied();
        if previous.is_none() {
            self.len += 1;
        }
        self.push(Message {
            key: key.into_boxed_slice(),
            op: Some(entry),
        });
        previous
    }

    fn remove(&mut self, key: &[u8]) -> Option<IndexEntry> {
        self.io.begin(Phase::Lookup);
        let previous = self.lookup(key).copied();
        if previous.is_some() {
            self.len -= 1;
            self.push(Message {
                key: key.into(),
                op: None,
            });
        } else {
            self.io.end();
        }
        previous
    }

    fn range<'a>(
        &'a self,
        range: &KeyRange,
    ) -> Box<dyn Iterator<Item = (&'a [u8], &'a IndexEntry)> + 'a> {
        if range.is_empty() {
            return Box::new(std::iter::empty());
        }
        Box::new(scan::Scan::new(&self.root, range, &self.io))
    }

    fn count(&self, range: &KeyRange) -> usize {
        if range.is_empty() {
            return 0;
        }
        self.io.begin(Phase::Lookup);
        let count = iter::count(&self.root, range, &self.io);
        self.io.end();
        count
    }

    fn len(&self) -> usize {
        self.len
    }

    fn remove_shard(&mut self, shard: ShardId) -> usize {
        if let Node::Leaf(leaf) = &mut self.root {
            let dropped = leaf.retain(|e| e.shard != shard);
            self.len -= dropped;
            return dropped;
        }
        let kept: Vec<(Vec<u8>, IndexEntry)> = self
            .range(&KeyRange::all())
            .filter(|(_, e)| e.shard != shard)
            .map(|(k, e)| (k.to_vec(), *e))
            .collect();
        let dropped = self.len - kept.len();
        self.bulk_load(kept);
        dropped
    }
}
