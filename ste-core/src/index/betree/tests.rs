//! Tests of [`BeTreeIndex`]: the shared conformance suite on several node
//! shapes, structural invariants, and a long model test against
//! `BTreeMap`.
//!
//! The model tests run 64 cases each by default (quick enough for CI), or
//! `PROPTEST_CASES` when set: `PROPTEST_CASES=10000` for the long run.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::node::{Internal, Node};
use super::*;
use crate::index::conformance::entry;

/// A [`BeTreeIndex`] with tiny nodes, so a handful of keys builds a deep
/// tree with buffers, flushes, splits and merges.
macro_rules! small_index {
    ($name:ident, $entries:expr, $epsilon:expr) => {
        #[derive(Debug)]
        struct $name(BeTreeIndex);

        impl Default for $name {
            fn default() -> Self {
                $name(BeTreeIndex::with_config(BeTreeConfig {
                    node_entries: $entries,
                    epsilon: $epsilon,
                }))
            }
        }

        impl KeyIndex for $name {
            fn get(&self, key: &[u8]) -> Option<&IndexEntry> {
                self.0.get(key)
            }
            fn insert(&mut self, key: Vec<u8>, entry: IndexEntry) -> Option<IndexEntry> {
                self.0.insert(key, entry)
            }
            fn remove(&mut self, key: &[u8]) -> Option<IndexEntry> {
                self.0.remove(key)
            }
            fn range<'a>(
                &'a self,
                range: &KeyRange,
            ) -> Box<dyn Iterator<Item = (&'a [u8], &'a IndexEntry)> + 'a> {
                self.0.range(range)
            }
            fn len(&self) -> usize {
                self.0.len()
            }
            fn remove_shard(&mut self, shard: ShardId) -> usize {
                self.0.remove_shard(shard)
            }
        }
    };
}

small_index!(Tiny, 8, 0.5);
small_index!(TinyBTree, 8, 1.0);

mod default_shape {
    use super::*;
    crate::index::conformance::key_index_conformance_tests!(BeTreeIndex);
}
mod tiny_shape {
    use super::*;
    crate::index::conformance::key_index_conformance_tests!(Tiny);
}
mod tiny_btree_shape {
    use super::*;
    crate::index::conformance::key_index_conformance_tests!(TinyBTree);
}

/// Checks every structural invariant of the tree; returns the live count
/// in its leaves.
fn check_node(
    node: &Node,
    low: Option<&[u8]>,
    high: Option<&[u8]>,
    depth: usize,
    leaf_depth: &mut Option<usize>,
) {
    let within = |k: &[u8]| low.is_none_or(|l| k >= l) && high.is_none_or(|h| k < h);
    match node {
        Node::Leaf(leaf) => {
            assert_eq!(
                *leaf_depth.get_or_insert(depth),
                depth,
                "leaves at one depth"
            );
            for i in 0..leaf.len() {
                assert!(within(leaf.key(i)), "leaf key outside its pivots");
                if i > 0 {
                    assert!(leaf.key(i - 1) < leaf.key(i), "leaf keys ascending");
                }
            }
        }
        Node::Internal(Internal {
            pivots,
            children,
            buffers,
            buffered,
        }) => {
            assert_eq!(children.len(), pivots.len() + 1);
            assert_eq!(children.len(), buffers.len());
            assert_eq!(*buffered, buffers.iter().map(Vec::len).sum::<usize>());
            assert!(pivots.windows(2).all(|w| w[0] < w[1]), "pivots ascending");
            for (i, child) in children.iter().enumerate() {
                let lo = if i == 0 { low } else { Some(&*pivots[i - 1]) };
                let hi = if i == pivots.len() {
                    high
                } else {
                    Some(&*pivots[i])
                };
                assert!(lo.is_none_or(|l| within(l) || Some(l) == low));
                for w in buffers[i].windows(2) {
                    assert!(w[0].key < w[1].key, "buffer sorted and unique");
                }
                for m in &buffers[i] {
                    let k: &[u8] = &m.key;
                    assert!(lo.is_none_or(|l| k >= l) && hi.is_none_or(|h| k < h));
                }
                check_node(child, lo, hi, depth + 1, leaf_depth);
            }
        }
    }
}

fn check_tree(index: &BeTreeIndex) {
    check_node(&index.root, None, None, 0, &mut None);
    if let Node::Internal(root) = &index.root {
        assert!(root.children.len() > 1, "a one-child root is collapsed");
    }
}

#[test]
fn sequential_inserts_grow_then_deletes_shrink() {
    let mut index = Tiny::default();
    for n in 0..2000i64 {
        let key = format!("/registry/pods/ns-{}/pod-{n:05}", n % 7);
        assert_eq!(index.insert(key.into_bytes(), entry(0, n)), None);
    }
    check_tree(&index.0);
    assert!(index.0.height() >= 4, "tiny nodes make a deep tree");
    assert_eq!(index.len(), 2000);
    for n in 0..2000i64 {
        let key = format!("/registry/pods/ns-{}/pod-{n:05}", n % 7);
        assert_eq!(index.remove(key.as_bytes()), Some(entry(0, n)), "{key}");
        if n % 97 == 0 {
            check_tree(&index.0);
        }
    }
    check_tree(&index.0);
    assert!(index.is_empty());
    assert_eq!(index.range(&KeyRange::all()).count(), 0);
}

#[test]
fn io_model_counts_every_operation() {
    let mut index = BeTreeIndex::with_io_model(BeTreeConfig {
        node_entries: 16,
        epsilon: 0.5,
    });
    for n in 0..500i64 {
        index.insert(format!("k{n:04}").into_bytes(), entry(0, n));
    }
    let after_writes = index.io_counts().expect("io model on");
    assert!(after_writes.writes > 0 && after_writes.blind_writes <= after_writes.writes);
    assert!(after_writes.blind_reads <= after_writes.reads);
    assert!(index.get(b"k0007").is_some());
    let after_get = index.io_counts().expect("io model on");
    assert_eq!(after_get.reads - after_writes.reads, index.height() as u64);
    assert_eq!(BeTreeIndex::new().io_counts(), None);
}

#[test]
fn config_shapes() {
    let shape = BeTreeConfig::new().shape();
    assert_eq!(
        (shape.leaf_max, shape.fanout_max, shape.buffer_max),
        (256, 16, 240)
    );
    let btree = BeTreeConfig {
        node_entries: 64,
        epsilon: 1.0,
    }
    .shape();
    assert_eq!((btree.fanout_max, btree.buffer_max), (64, 0));
    let odd = BeTreeConfig {
        node_entries: 0,
        epsilon: f64::NAN,
    }
    .shape();
    assert_eq!((odd.leaf_max, odd.fanout_max, odd.buffer_max), (8, 4, 4));
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Insert(Vec<u8>, u32, i64),
    /// Re-insert the `i % len`-th live key (a status update).
    Update(usize, i64),
    Remove(Vec<u8>),
    /// Remove the `i % len`-th live key.
    RemoveLive(usize),
    RemoveShard(u32),
    /// Compare `range` (first `limit` keys) and `count`.
    Range(Vec<u8>, Vec<u8>, usize),
    Get(Vec<u8>),
    CountByShard,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![Just(0u8), Just(b'/'), Just(b'a'), Just(b'b'), Just(0xff)];
    let tail = proptest::collection::vec(byte, 0..5);
    (0u8..5, tail).prop_map(|(ns, tail)| {
        let mut key = match ns {
            0 => Vec::new(),
            n => format!("/registry/pods/ns{n}/").into_bytes(),
        };
        key.extend(tail);
        key
    })
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), Just(vec![0u8]), key()]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        8 => (key(), 0u32..3, 1i64..1000).prop_map(|(k, s, n)| Op::Insert(k, s, n)),
        4 => (any::<usize>(), 1i64..1000).prop_map(|(i, n)| Op::Update(i, n)),
        2 => key().prop_map(Op::Remove),
        3 => any::<usize>().prop_map(Op::RemoveLive),
        1 => (0u32..4).prop_map(Op::RemoveShard),
        3 => (key(), range_end(), 1usize..40).prop_map(|(k, e, l)| Op::Range(k, e, l)),
        2 => key().prop_map(Op::Get),
        1 => Just(Op::CountByShard),
    ];
    proptest::collection::vec(op, 0..400)
}

fn nth_key(model: &BTreeMap<Vec<u8>, IndexEntry>, i: usize) -> Option<Vec<u8>> {
    (!model.is_empty()).then(|| {
        model
            .keys()
            .nth(i % model.len())
            .cloned()
            .expect("in range")
    })
}

fn run_model<I: KeyIndex>(index: &mut I, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model: BTreeMap<Vec<u8>, IndexEntry> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Insert(k, s, n) => {
                let e = entry(*s, *n);
                prop_assert_eq!(index.insert(k.clone(), e), model.insert(k.clone(), e));
            }
            Op::Update(i, n) => {
                if let Some(k) = nth_key(&model, *i) {
                    let e = entry(model[&k].shard.0, *n);
                    prop_assert_eq!(index.insert(k.clone(), e), model.insert(k, e));
                }
            }
            Op::Remove(k) => prop_assert_eq!(index.remove(k), model.remove(k)),
            Op::RemoveLive(i) => {
                if let Some(k) = nth_key(&model, *i) {
                    prop_assert_eq!(index.remove(&k), model.remove(&k));
                }
            }
            Op::RemoveShard(s) => {
                let before = model.len();
                model.retain(|_, e| e.shard != ShardId(*s));
                prop_assert_eq!(index.remove_shard(ShardId(*s)), before - model.len());
            }
            Op::Range(k, end, limit) => {
                let range = KeyRange::from_request(k, end);
                let want: Vec<(Vec<u8>, IndexEntry)> = model
                    .iter()
                    .filter(|(key, _)| range.contains(key))
                    .map(|(key, e)| (key.clone(), *e))
                    .collect();
                let got: Vec<(Vec<u8>, IndexEntry)> = index
                    .range(&range)
                    .take(*limit)
                    .map(|(key, e)| (key.to_vec(), *e))
                    .collect();
                prop_assert_eq!(&got[..], &want[..want.len().min(*limit)]);
                prop_assert_eq!(index.count(&range), want.len());
            }
            Op::Get(k) => prop_assert_eq!(index.get(k), model.get(k)),
            Op::CountByShard => {
                let mut want = BTreeMap::new();
                for e in model.values() {
                    *want.entry(e.shard).or_insert(0) += 1;
                }
                prop_assert_eq!(index.count_by_shard(), want);
            }
        }
        prop_assert_eq!(index.len(), model.len());
    }
    let all: Vec<(Vec<u8>, IndexEntry)> = index
        .range(&KeyRange::all())
        .map(|(k, e)| (k.to_vec(), *e))
        .collect();
    let want: Vec<(Vec<u8>, IndexEntry)> = model.into_iter().collect();
    prop_assert_eq!(all, want);
    Ok(())
}

/// 64 cases, unless `PROPTEST_CASES` says otherwise.
fn model_config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    config
}

proptest! {
    #![proptest_config(model_config())]

    #[test]
    fn tiny_tree_matches_btreemap(ops in ops()) {
        let mut index = Tiny::default();
        run_model(&mut index, &ops)?;
        check_tree(&index.0);
    }

    #[test]
    fn tiny_btree_shape_matches_btreemap(ops in ops()) {
        let mut index = TinyBTree::default();
        run_model(&mut index, &ops)?;
        check_tree(&index.0);
    }

    #[test]
    fn low_epsilon_tree_matches_btreemap(ops in ops()) {
        let mut index = BeTreeIndex::with_config(BeTreeConfig { node_entries: 12, epsilon: 0.2 });
        run_model(&mut index, &ops)?;
        check_tree(&index);
    }
}
