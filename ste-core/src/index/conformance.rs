//! Conformance tests for any [`KeyIndex`] implementation.
//!
//! Each check is a generic function over `I: KeyIndex + Default`; the
//! [`key_index_conformance_tests!`] macro turns them into one `#[test]` per
//! check (plus a model-based proptest) for a given type, so a new
//! implementation gets the whole suite with one line:
//!
//! ```ignore
//! conformance::key_index_conformance_tests!(MyIndex);
//! ```

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{IndexEntry, KeyIndex, ShardId};
use crate::{GlobalRevision, KeyRange, ShardRevision};

/// Expands to a module of tests running every conformance check on `$index`.
macro_rules! key_index_conformance_tests {
    ($index:ty) => {
        mod key_index_conformance {
            #[allow(unused_imports)]
            use super::*;
            use $crate::index::conformance as check;

            #[test]
            fn get_insert_remove() {
                check::get_insert_remove::<$index>();
            }
            #[test]
            fn insert_replaces() {
                check::insert_replaces::<$index>();
            }
            #[test]
            fn range_shapes() {
                check::range_shapes::<$index>();
            }
            #[test]
            fn edge_bytes_order() {
                check::edge_bytes_order::<$index>();
            }
            #[test]
            fn count_by_shard_and_remove_shard() {
                check::count_by_shard_and_remove_shard::<$index>();
            }
            #[test]
            fn usable_as_trait_object() {
                check::usable_as_trait_object(Box::new(<$index>::default()));
            }

            ::proptest::proptest! {
                #![proptest_config(::proptest::prelude::ProptestConfig::with_cases(64))]
                #[test]
                fn behaves_like_a_model(ops in check::ops()) {
                    check::behaves_like_a_model::<$index>(&ops)?;
                }
            }
        }
    };
}
pub(crate) use key_index_conformance_tests;

/// An entry whose fields are derived from `n`, so entries are distinguishable.
pub(crate) fn entry(shard: u32, n: i64) -> IndexEntry {
    IndexEntry {
        shard: ShardId(shard),
        create: GlobalRevision(n),
        modified: GlobalRevision(n + 1),
        version: 2,
        lease: n * 10,
        value_size: 100,
        shard_modified: ShardRevision(n + 1000),
    }
}

fn keys_in<I: KeyIndex>(index: &I, range: &KeyRange) -> Vec<Vec<u8>> {
    index.range(range).map(|(k, _)| k.to_vec()).collect()
}

fn filled<I: KeyIndex + Default>(keys: &[&[u8]]) -> I {
    let mut index = I::default();
    for (n, key) in keys.iter().enumerate() {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        index.insert(key.to_vec(), entry(0, n + 1));
    }
    index
}

pub(crate) fn get_insert_remove<I: KeyIndex + Default>() {
    let mut index = I::default();
    assert!(index.is_empty());
    assert_eq!(index.get(b"/a"), None);
    assert_eq!(index.insert(b"/a".to_vec(), entry(1, 1)), None);
    assert_eq!(index.get(b"/a"), Some(&entry(1, 1)));
    assert_eq!(index.get(b"/a\0"), None);
    assert_eq!(index.get(b"/"), None);
    assert_eq!(index.len(), 1);
    assert!(!index.is_empty());
    assert_eq!(index.remove(b"/b"), None);
    assert_eq!(index.remove(b"/a"), Some(entry(1, 1)));
    assert_eq!(index.remove(b"/a"), None);
    assert!(index.is_empty());
}

pub(crate) fn insert_replaces<I: KeyIndex + Default>() {
    let mut index = I::default();
    index.insert(b"k".to_vec(), entry(1, 1));
    assert_eq!(index.insert(b"k".to_vec(), entry(2, 5)), Some(entry(1, 1)));
    assert_eq!(index.get(b"k"), Some(&entry(2, 5)));
    assert_eq!(index.len(), 1);
}

pub(crate) fn range_shapes<I: KeyIndex + Default>() {
    let index: I = filled(&[b"/r/pods/a", b"/r/pods/b", b"/r/pods0", b"/r/svc/x", b"/z"]);
    let cases: [(KeyRange, &[&[u8]]); 8] = [
        (KeyRange::single(b"/r/pods/b"), &[b"/r/pods/b"]),
        (KeyRange::single(b"/r/pods/"), &[]),
        (KeyRange::prefix(b"/r/pods/"), &[b"/r/pods/a", b"/r/pods/b"]),
        (
            KeyRange::from_request(b"/r/pods/b", b"/r/svc/x"),
            &[b"/r/pods/b", b"/r/pods0"],
        ),
        (
            KeyRange::from_request(b"/r/svc/x", b"\0"),
            &[b"/r/svc/x", b"/z"],
        ),
        (KeyRange::from_request(b"/z", b"/a"), &[]),
        (KeyRange::from_request(b"/r/pods/b", b"/r/pods/b"), &[]),
        (
            KeyRange::all(),
            &[b"/r/pods/a", b"/r/pods/b", b"/r/pods0", b"/r/svc/x", b"/z"],
        ),
    ];
    for (range, want) in cases {
        let want: Vec<Vec<u8>> = want.iter().map(|k| k.to_vec()).collect();
        assert_eq!(keys_in(&index, &range), want, "{range:?}");
        assert_eq!(index.count(&range), want.len(), "{range:?}");
    }
    let (key, got) = index
        .range(&KeyRange::single(b"/z"))
        .next()
        .map(|(k, e)| (k.to_vec(), *e))
        .expect("/z is in the index");
    assert_eq!((key.as_slice(), got), (&b"/z"[..], entry(0, 5)));
}

pub(crate) fn edge_bytes_order<I: KeyIndex + Default>() {
    // Byte order, not string order: a prefix sorts first, 0x00 right after
    // it, 0xff last; the empty key is the least of all.
    let keys: [&[u8]; 7] = [b"\xff\xff", b"a\xff", b"a\0", b"a", b"", b"\0", b"b"];
    let index: I = filled(&keys);
    let mut want: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    want.sort();
    assert_eq!(keys_in(&index, &KeyRange::all()), want);
    assert_eq!(
        keys_in(&index, &KeyRange::prefix(b"a")),
        vec![b"a".to_vec(), b"a\0".to_vec(), b"a\xff".to_vec()]
    );
    assert_eq!(
        keys_in(&index, &KeyRange::prefix(b"\xff")),
        vec![b"\xff\xff".to_vec()]
    );
}

pub(crate) fn count_by_shard_and_remove_shard<I: KeyIndex + Default>() {
    let mut index = I::default();
    for (n, key) in [&b"a"[..], b"b", b"c", b"d", b"e"].iter().enumerate() {
        let shard = if n % 2 == 0 { 1 } else { 2 };
        index.insert(key.to_vec(), entry(shard, 1));
    }
    index.insert(b"f".to_vec(), entry(7, 1));
    let want: BTreeMap<ShardId, usize> = [(ShardId(1), 3), (ShardId(2), 2), (ShardId(7), 1)].into();
    assert_eq!(index.count_by_shard(), want);
    assert_eq!(index.remove_shard(ShardId(1)), 3);
    assert_eq!(index.remove_shard(ShardId(1)), 0);
    assert_eq!(index.remove_shard(ShardId(99)), 0);
    assert_eq!(
        keys_in(&index, &KeyRange::all()),
        vec![b"b".to_vec(), b"d".to_vec(), b"f".to_vec()]
    );
    assert_eq!(index.len(), 3);
    let want: BTreeMap<ShardId, usize> = [(ShardId(2), 2), (ShardId(7), 1)].into();
    assert_eq!(index.count_by_shard(), want);
    assert_eq!(I::default().count_by_shard(), BTreeMap::new());
}

pub(crate) fn usable_as_trait_object(mut index: Box<dyn KeyIndex>) {
    index.insert(b"k".to_vec(), entry(3, 1));
    assert_eq!(index.count(&KeyRange::all()), 1);
    assert_eq!(index.remove_shard(ShardId(3)), 1);
    assert!(index.is_empty());
}

/// One step of the model test.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Insert(Vec<u8>, u32, i64),
    Remove(Vec<u8>),
    RemoveShard(u32),
    Check(Vec<u8>, Vec<u8>),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(0u8), Just(b'a'), Just(b'b'), Just(0xff)],
        0..4,
    )
}

pub(crate) fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (key(), 0u32..3, 1i64..100).prop_map(|(k, s, n)| Op::Insert(k, s, n)),
        2 => key().prop_map(Op::Remove),
        1 => (0u32..3).prop_map(Op::RemoveShard),
        2 => (key(), key()).prop_map(|(k, e)| Op::Check(k, e)),
    ];
    proptest::collection::vec(op, 0..40)
}

/// Runs `ops` on `I` and on a sorted `Vec` of pairs, comparing every answer.
pub(crate) fn behaves_like_a_model<I: KeyIndex + Default>(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut index = I::default();
    let mut model: Vec<(Vec<u8>, IndexEntry)> = Vec::new();
    for op in ops {
        match op {
            Op::Insert(key, shard, n) => {
                let e = entry(*shard, *n);
                let old = match model.iter_mut().find(|(k, _)| k == key) {
                    Some(slot) => Some(std::mem::replace(&mut slot.1, e)),
                    None => {
                        model.push((key.clone(), e));
                        None
                    }
                };
                prop_assert_eq!(index.insert(key.clone(), e), old);
            }
            Op::Remove(key) => {
                let old = model
                    .iter()
                    .position(|(k, _)| k == key)
                    .map(|i| model.remove(i).1);
                prop_assert_eq!(index.remove(key), old);
            }
            Op::RemoveShard(shard) => {
                let before = model.len();
                model.retain(|(_, e)| e.shard != ShardId(*shard));
                prop_assert_eq!(index.remove_shard(ShardId(*shard)), before - model.len());
            }
            Op::Check(key, end) => {
                let range = KeyRange::from_request(key, end);
                let mut want: Vec<(Vec<u8>, IndexEntry)> = model
                    .iter()
                    .filter(|(k, _)| range.contains(k))
                    .cloned()
                    .collect();
                want.sort_by(|a, b| a.0.cmp(&b.0));
                let got: Vec<(Vec<u8>, IndexEntry)> =
                    index.range(&range).map(|(k, e)| (k.to_vec(), *e)).collect();
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(index.count(&range), want.len());
                let model_entry = model.iter().find(|(k, _)| k == key).map(|(_, e)| e);
                prop_assert_eq!(index.get(key), model_entry);
            }
        }
        prop_assert_eq!(index.len(), model.len());
        prop_assert_eq!(index.is_empty(), model.is_empty());
    }
    let mut by_shard = BTreeMap::new();
    for (_, e) in &model {
        *by_shard.entry(e.shard).or_insert(0) += 1;
    }
    prop_assert_eq!(index.count_by_shard(), by_shard);
    Ok(())
}
