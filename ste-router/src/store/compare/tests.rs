//! Compare evaluation, case by case against what etcd answers.

use ste_core::index::{IndexEntry, ShardId};
use ste_core::revision::{GlobalRevision, ShardRevision};
use ste_proto::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};

use super::*;

fn entry() -> IndexEntry {
    IndexEntry {
        shard: ShardId(0),
        create: GlobalRevision(4),
        modified: GlobalRevision(9),
        version: 3,
        lease: 77,
        value_size: 5,
        shard_modified: ShardRevision(12),
    }
}

fn cmp(target: CompareTarget, result: CompareResult, union: TargetUnion) -> pb::Compare {
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: b"k".to_vec(),
        target_union: Some(union),
        range_end: Vec::new(),
    }
}

#[test]
fn numeric_targets_against_a_live_key() {
    use CompareResult::*;
    use CompareTarget::*;
    let e = entry();
    let cases = [
        (Mod, Equal, TargetUnion::ModRevision(9), true),
        (Mod, Equal, TargetUnion::ModRevision(8), false),
        (Mod, NotEqual, TargetUnion::ModRevision(8), true),
        (Mod, Greater, TargetUnion::ModRevision(8), true),
        (Mod, Less, TargetUnion::ModRevision(9), false),
        (Create, Equal, TargetUnion::CreateRevision(4), true),
        (Version, Greater, TargetUnion::Version(2), true),
        (Version, Less, TargetUnion::Version(3), false),
        (Lease, Equal, TargetUnion::Lease(77), true),
    ];
    for (target, result, union, holds) in cases {
        let c = cmp(target, result, union.clone());
        assert_eq!(
            compare_holds(&c, Some(&e), None),
            holds,
            "{target:?} {result:?} {union:?}"
        );
    }
}

#[test]
fn a_missing_key_has_zero_revisions_and_version() {
    use CompareResult::*;
    use CompareTarget::*;
    // kube-apiserver's create: mod_revision(K) == 0.
    assert!(compare_holds(
        &cmp(Mod, Equal, TargetUnion::ModRevision(0)),
        None,
        None
    ));
    assert!(!compare_holds(
        &cmp(Mod, Equal, TargetUnion::ModRevision(0)),
        Some(&entry()),
        None
    ));
    assert!(compare_holds(
        &cmp(Version, Equal, TargetUnion::Version(0)),
        None,
        None
    ));
    assert!(compare_holds(
        &cmp(Create, Less, TargetUnion::CreateRevision(1)),
        None,
        None
    ));
}

#[test]
fn value_compares_need_the_value_and_fail_on_a_missing_key() {
    use CompareResult::*;
    let value = |result| {
        cmp(
            CompareTarget::Value,
            result,
            TargetUnion::Value(b"bbb".to_vec()),
        )
    };
    assert!(needs_value(&value(Equal)));
    assert!(compare_holds(&value(Equal), Some(&entry()), Some(b"bbb")));
    assert!(compare_holds(&value(Greater), Some(&entry()), Some(b"ccc")));
    assert!(compare_holds(&value(Less), Some(&entry()), Some(b"aaa")));
    assert!(!compare_holds(&value(Equal), Some(&entry()), Some(b"aaa")));
    // etcd: a value compare on a missing key fails, even NOT_EQUAL.
    assert!(!compare_holds(&value(NotEqual), None, None));
    assert!(!needs_value(&cmp(
        CompareTarget::Mod,
        Equal,
        TargetUnion::ModRevision(0)
    )));
}
