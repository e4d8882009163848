//! The read merge: several shards' answers become the one etcd would give.

use super::*;

fn kv(key: &str, value: &str) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: key.into(),
        value: value.as_bytes().to_vec().into(),
        mod_revision: 2,
        ..Default::default()
    }
}

fn part(keys: &[&str], count: i64) -> ShardPart {
    ShardPart {
        kvs: keys.iter().map(|k| kv(k, "v")).collect(),
        count,
        cut: None,
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
    )
    .unwrap();
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
    )
    .unwrap();
    assert_eq!(keys(&result), ["/a", "/b"]);
    assert_eq!(result.count, 17);
    assert!(result.more);
    let exact = merge(vec![part(&["/a"], 1), part(&["/b"], 1)], 2, false, false).unwrap();
    assert!(!exact.more, "exactly limit keys: nothing more");
}

#[test]
fn keys_only_drops_values_and_count_only_drops_keys() {
    let result = merge(vec![part(&["/a"], 1), part(&["/b"], 1)], 0, true, false).unwrap();
    assert!(result.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(result.kvs.len(), 2);
    let counted = merge(vec![part(&[], 5), part(&[], 6)], 0, false, true).unwrap();
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
    assert_eq!(
        merge(Vec::new(), 10, false, false).unwrap(),
        RangeResult::default()
    );
}

/// A part cut by its limit after `keys` (the shard has more).
fn cut_part(keys: &[&str], count: i64) -> ShardPart {
    ShardPart {
        cut: keys.last().map(|k| k.as_bytes().to_vec()),
        ..part(keys, count)
    }
}

#[test]
fn a_planned_page_is_exact_up_to_the_first_cut() {
    // Shard 1 was asked for 2 keys and had more; shard 2 gave all it has.
    let result = merge(
        vec![cut_part(&["/a", "/c"], 5), part(&["/b", "/d", "/e"], 3)],
        3,
        false,
        false,
    )
    .unwrap();
    assert_eq!(keys(&result), ["/a", "/b", "/c"]);
    assert!(result.more);
    assert_eq!(result.count, 8);
    // Exactly `limit` keys up to the cut: still a page, with more after.
    let result = merge(
        vec![cut_part(&["/a", "/c"], 5), part(&["/b"], 1)],
        3,
        false,
        false,
    )
    .unwrap();
    assert_eq!(keys(&result), ["/a", "/b", "/c"]);
    assert!(result.more);
}

#[test]
fn answers_that_do_not_cover_the_page_ask_for_more() {
    // Shard 1 stopped at /b; what shard 2 holds after /b is unknown there.
    assert_eq!(
        merge(
            vec![cut_part(&["/b"], 9), part(&["/a", "/c", "/d"], 3)],
            3,
            false,
            false
        ),
        None
    );
}
