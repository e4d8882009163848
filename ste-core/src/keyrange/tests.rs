//! Tests of etcd's range table, the normalisation invariants, and
//! `BTreeMap::range` agreeing with `contains`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

#[test]
fn empty_range_end_is_a_single_key() {
    let r = KeyRange::from_request(b"/a/b", b"");
    assert!(r.is_single_key());
    assert!(!r.is_empty());
    assert!(r.contains(b"/a/b"));
    assert!(!r.contains(b"/a/b\0"));
    assert!(!r.contains(b"/a/bc"));
    assert!(!r.contains(b"/a/"));
    assert_eq!(r.start(), b"/a/b");
    assert_eq!(r.end(), Some(&b"/a/b\0"[..]));
    assert_eq!(r, KeyRange::single(b"/a/b"));
}

#[test]
fn nul_range_end_is_every_key_from_start() {
    let r = KeyRange::from_request(b"/m", b"\0");
    assert_eq!(r.end(), None);
    assert!(!r.is_single_key() && !r.is_empty() && !r.is_all());
    assert!(r.contains(b"/m"));
    assert!(r.contains(b"/z"));
    assert!(r.contains(b"\xff\xff"));
    assert!(!r.contains(b"/l"));
    assert!(!r.contains(b"/"));
}

#[test]
fn nul_key_and_nul_range_end_is_all_keys() {
    let r = KeyRange::from_request(b"\0", b"\0");
    assert!(r.is_all());
    assert_eq!(r, KeyRange::all());
    assert_eq!(r.start(), b"");
    for key in [&b""[..], b"\0", b"a", b"\xff"] {
        assert!(r.contains(key), "{key:?}");
    }
}

#[test]
fn half_open_interval_excludes_its_end() {
    let r = KeyRange::from_request(b"b", b"d");
    assert!(r.contains(b"b"));
    assert!(r.contains(b"c\xff\xff"));
    assert!(!r.contains(b"d"));
    assert!(!r.contains(b"a\xff"));
    assert!(!r.is_single_key());
    assert_eq!(r.end(), Some(&b"d"[..]));
}

#[test]
fn end_at_or_below_key_is_empty() {
    for (key, end) in [
        (&b"b"[..], &b"b"[..]),
        (b"b", b"a"),
        (b"ba", b"b"),
        (b"\xff", b"\x01"),
    ] {
        let r = KeyRange::from_request(key, end);
        assert!(r.is_empty(), "{key:?}..{end:?}");
        assert!(!r.contains(key));
        assert!(!r.contains(end));
        assert_eq!(r.start(), key);
        assert_eq!(r.end(), Some(key), "normalised to end == start");
    }
}

#[test]
fn key_nul_is_a_single_key_interval() {
    // [k, k\0) from a request is the same single key as (k, "").
    let r = KeyRange::from_request(b"k", b"k\0");
    assert!(r.is_single_key());
    assert_eq!(r, KeyRange::single(b"k"));
    assert!(!KeyRange::from_request(b"k", b"k\0\0").is_single_key());
    assert!(!KeyRange::from_request(b"k", b"k\x01").is_single_key());
}

#[test]
fn prefix_end_matches_etcd() {
    assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0");
    assert_eq!(prefix_end(b"a"), b"b");
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b"a\xfe\xff\xff"), b"a\xff");
    assert_eq!(prefix_end(b"\x00"), b"\x01");
    assert_eq!(prefix_end(b"\xff"), b"\0");
    assert_eq!(prefix_end(b"\xff\xff\xff"), b"\0");
    assert_eq!(prefix_end(b""), b"\0");
}

#[test]
fn prefix_ranges() {
    let r = KeyRange::prefix(b"/registry/pods/");
    assert!(r.contains(b"/registry/pods/"));
    assert!(r.contains(b"/registry/pods/default/web-0"));
    assert!(!r.contains(b"/registry/pods0"));
    assert!(!r.contains(b"/registry/pods"));
    // No finite end exists past an all-0xff prefix.
    let r = KeyRange::prefix(b"\xff\xff");
    assert_eq!(r.end(), None);
    assert!(r.contains(b"\xff\xff\x00"));
    assert!(!r.contains(b"\xfe"));
    assert!(KeyRange::prefix(b"").is_all());
}

#[test]
fn bounds_with_btreemap_for_every_shape() {
    let keys: [&[u8]; 9] = [
        b"\0",
        b"a",
        b"a\0",
        b"ab",
        b"b",
        b"b\xff",
        b"c",
        b"\xff",
        b"\xff\xff",
    ];
    let map: BTreeMap<Vec<u8>, ()> = keys.iter().map(|k| (k.to_vec(), ())).collect();
    let ranges = [
        KeyRange::from_request(b"a", b""),
        KeyRange::from_request(b"zz", b""),
        KeyRange::from_request(b"a", b"b"),
        KeyRange::from_request(b"b", b"a"),
        KeyRange::from_request(b"b", b"b"),
        KeyRange::from_request(b"b", b"\0"),
        KeyRange::from_request(b"\0", b"\0"),
        KeyRange::prefix(b"a"),
        KeyRange::prefix(b"\xff"),
    ];
    for r in &ranges {
        let got: Vec<&[u8]> = map
            .range::<[u8], _>(r.bounds())
            .map(|(k, _)| k.as_slice())
            .collect();
        let want: Vec<&[u8]> = keys.iter().copied().filter(|k| r.contains(k)).collect();
        assert_eq!(got, want, "{r:?}");
    }
}

#[test]
fn to_request_round_trips_and_uses_etcd_spellings() {
    assert_eq!(KeyRange::single(b"k").to_request(), (b"k".to_vec(), vec![]));
    assert_eq!(KeyRange::all().to_request(), (vec![0], vec![0]));
    assert_eq!(
        KeyRange::from_key(b"k").to_request(),
        (b"k".to_vec(), vec![0])
    );
    assert_eq!(
        KeyRange::from_request(b"a", b"c").to_request(),
        (b"a".to_vec(), b"c".to_vec())
    );
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // A small alphabet with the edge bytes makes collisions and
    // prefix relations common.
    proptest::collection::vec(
        prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(0xfe), Just(0xff)],
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn contains_matches_the_etcd_definition(k in key(), end in key(), probe in key()) {
        let r = KeyRange::from_request(&k, &end);
        let want = if end.is_empty() {
            probe == k
        } else if end == [0] && k == [0] {
            true
        } else if end == [0] {
            probe >= k
        } else {
            probe >= k && probe < end
        };
        prop_assert_eq!(r.contains(&probe), want);
    }

    #[test]
    fn invariants_and_round_trip(k in key(), end in key()) {
        let r = KeyRange::from_request(&k, &end);
        if let Some(e) = r.end() {
            prop_assert!(e >= r.start());
            prop_assert_eq!(r.is_empty(), e == r.start());
        }
        let (k2, end2) = r.to_request();
        prop_assert_eq!(KeyRange::from_request(&k2, &end2), r.clone());
        let probes = [k.clone(), end.clone(), r.start().to_vec()];
        prop_assert!(!r.is_empty() || probes.iter().all(|p| !r.contains(p)));
        prop_assert!(!r.is_single_key() || (r.contains(r.start()) && !r.is_empty()));
    }

    #[test]
    fn up_to_holds_the_ranges_keys_through_last(k in key(), end in key(), last in key(), probe in key()) {
        let r = KeyRange::from_request(&k, &end);
        let part = r.up_to(&last);
        let want = !probe.is_empty() && r.contains(&probe) && probe <= last;
        prop_assert_eq!(part.contains(&probe), want);
        prop_assert!(!part.start().is_empty());
    }

    #[test]
    fn between_is_the_half_open_interval(a in key(), b in key(), probe in key()) {
        let r = KeyRange::between(&a, &b);
        prop_assert_eq!(r.contains(&probe), probe >= a && probe < b);
    }

    #[test]
    fn prefix_range_holds_exactly_the_prefixed_keys(prefix in key(), probe in key()) {
        let r = KeyRange::prefix(&prefix);
        prop_assert_eq!(r.contains(&probe), probe.starts_with(&prefix));
    }

    #[test]
    fn btreemap_range_agrees_with_contains(
        keys in proptest::collection::btree_set(key(), 0..16),
        k in key(),
        end in key(),
    ) {
        let r = KeyRange::from_request(&k, &end);
        let map: BTreeMap<Vec<u8>, ()> = keys.iter().map(|k| (k.clone(), ())).collect();
        let got: Vec<&Vec<u8>> = map.range::<[u8], _>(r.bounds()).map(|(k, _)| k).collect();
        let want: Vec<&Vec<u8>> = keys.iter().filter(|p| r.contains(p)).collect();
        prop_assert_eq!(got, want);
    }
}
