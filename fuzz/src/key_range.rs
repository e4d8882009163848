//! etcd's key-range semantics (`ste_core::keyrange`), through which every
//! Range, DeleteRange, Watch and Txn read of the router turns a request's
//! `key` and `range_end` into the keys it names, and the router's Range
//! checks (`validate::range`). Inputs are read both as a protobuf
//! `RangeRequest` and by `arbitrary` (fields plus probe keys).
//!
//! Asserts, for any `key`/`range_end` and probe keys: `contains` agrees
//! with a direct reading of etcd's rules (one key; `\0` from the key on;
//! `\0`/`\0` everything; `[key, range_end)`; nothing when
//! `range_end <= key`); the interval is never inverted and `bounds()`
//! selects from a `BTreeMap` exactly the keys `contains` says (no panic on
//! any range); `is_empty`/`is_single_key`/`is_all` are true to their
//! names on the probes; `to_request` round-trips; `prefix(p)` holds exactly
//! the keys starting with `p`; and a Range with that key is refused by the
//! router's checks exactly when the key is empty.

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use ste_core::keyrange::{KeyRange, prefix_end};
use ste_proto::etcd::etcdserverpb as pb;
use ste_router::etcd::fuzzing::validate_range;

/// One fuzz input: the request's fields and keys to probe them with.
#[derive(Debug, Arbitrary)]
pub struct Input {
    /// The request's `key`.
    pub key: Vec<u8>,
    /// The request's `range_end`.
    pub range_end: Vec<u8>,
    /// Keys to ask `contains` about (more are derived from the two above).
    pub probes: Vec<Vec<u8>>,
}

/// Runs every property on `data`, decoded as a protobuf `RangeRequest`
/// (the fields a client sends), and read by `arbitrary` as an [`Input`].
pub fn check(data: &[u8]) {
    if let Ok(request) = <pb::RangeRequest as prost::Message>::decode(data) {
        check_input(&Input {
            key: request.key,
            range_end: request.range_end,
            probes: Vec::new(),
        });
    }
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        check_input(&input);
    }
}

/// What etcd's rules say about `probe` for a request's fields.
fn etcd_contains(key: &[u8], range_end: &[u8], probe: &[u8]) -> bool {
    match range_end {
        [] => probe == key,
        [0] if key == [0] => true,
        [0] => probe >= key,
        end => key <= probe && probe < end,
    }
}

/// Keys next to the interesting points of the request.
fn probes(input: &Input) -> Vec<Vec<u8>> {
    let mut probes = input.probes.clone();
    for base in [&input.key, &input.range_end] {
        probes.push(base.clone());
        probes.push([base.as_slice(), &[0]].concat());
        probes.push([base.as_slice(), &[0xff]].concat());
        if let Some((_, shorter)) = base.split_last() {
            probes.push(shorter.to_vec());
        }
        probes.push(prefix_end(base));
    }
    probes.extend([Vec::new(), vec![0], vec![0xff]]);
    probes
}

/// All the properties of one input.
pub fn check_input(input: &Input) {
    let (key, range_end) = (input.key.as_slice(), input.range_end.as_slice());
    let range = KeyRange::from_request(key, range_end);
    if let Some(end) = range.end() {
        assert!(end >= range.start(), "inverted {range:?}");
        assert_eq!(range.is_empty(), end == range.start());
    }
    let probes = probes(input);
    let mut map = BTreeMap::new();
    for probe in &probes {
        let inside = range.contains(probe);
        assert_eq!(
            inside,
            etcd_contains(key, range_end, probe),
            "{range:?} contains {probe:?}"
        );
        if inside {
            assert!(!range.is_empty());
            if range.is_single_key() {
                assert_eq!(probe.as_slice(), range.start());
            }
        }
        map.insert(probe.clone(), inside);
    }
    let selected: Vec<&Vec<u8>> = map
        .range::<[u8], _>(range.bounds())
        .map(|(k, _)| k)
        .collect();
    let expected: Vec<&Vec<u8>> = map
        .iter()
        .filter(|(_, in_)| **in_)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(selected, expected, "bounds() of {range:?}");
    if range.is_single_key() {
        assert!(range.contains(range.start()));
    }
    if range.is_all() {
        assert!(probes.iter().all(|p| range.contains(p)));
    }
    let (k, e) = range.to_request();
    assert_eq!(
        KeyRange::from_request(&k, &e),
        range,
        "to_request {k:?} {e:?}"
    );

    let prefixed = KeyRange::prefix(key);
    for probe in &probes {
        assert_eq!(
            prefixed.contains(probe),
            probe.starts_with(key),
            "prefix {key:?} and {probe:?}"
        );
    }

    let request = pb::RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..Default::default()
    };
    match validate_range(&request) {
        Ok(()) => assert!(!key.is_empty()),
        Err(status) => {
            assert!(key.is_empty());
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
    }
}
