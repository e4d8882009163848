//! The read merge: several shards' answers become the one etcd would give.

use super::*;

fn kv(key: &str, value: &str) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: key.into(),
        value: value.into(),
        mod_revision: 2,
        ..Default::default()
    }
}

fn part(keys: &[&str], count: i64) -> ShardPart {
    ShardPart {
        kvs: keys.iter().map(|k| kv(k, "v")).collect(),
        count,
    }
}

fn keys(result: &RangeResult) -> Vec<String> {
    result
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

#[test]
fn keys_come_back_sorted_and_counts_add_up() {
    let result = merge(
        vec![part(&["/b", "/d"], 2), part(&["/a", "/c"], 2)],
        0,
        false,
        false,
    );
    assert_eq!(keys(&result), ["/a", "/b", "/c", "/d"]);
    assert_eq!(result.count, 4);
    assert!(!result.more);
}

#[test]
fn a_limit_keeps_the_first_keys_of_the_union_and_says_more() {
    // Each shard was asked for limit + 1 = 3 keys; its count is the whole range.
    let result = merge(
        vec![part(&["/a", "/c", "/e"], 10), part(&["/b", "/d", "/f"], 7)],
        2,
        false,
        false,
    );
    assert_eq!(keys(&result), ["/a", "/b"]);
    assert_eq!(result.count, 17);
    assert!(result.more);
    let exact = merge(vec![part(&["/a"], 1), part(&["/b"], 1)], 2, false, false);
    assert!(!exact.more, "exactly limit keys: nothing more");
}

#[test]
fn keys_only_drops_values_and_count_only_drops_keys() {
    let result = merge(vec![part(&["/a"], 1), part(&["/b"], 1)], 0, true, false);
    assert!(result.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(result.kvs.len(), 2);
    let counted = merge(vec![part(&[], 5), part(&[], 6)], 0, false, true);
    assert_eq!(
        counted,
        RangeResult {
            kvs: Vec::new(),
            count: 11,
            more: false
        }
    );
}

#[test]
fn no_shard_answers_an_empty_range() {
    assert_eq!(merge(Vec::new(), 10, false, false), RangeResult::default());
}
