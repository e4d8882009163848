//! Golden vectors for the STE ring, computed by an independent Python
//! implementation (`tests/golden/gen_golden.py` -> `golden/ring_vectors.txt`).
//! A failure here means placement changed: every deployed component would
//! disagree with this build about where keys live.

use ste_core::{DEFAULT_VNODES, Member, Ring, key_hash, point_hash};

const VECTORS: &str = include_str!("golden/ring_vectors.txt");

fn parse_hex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn parse_ring(fields: &[&str]) -> Ring {
    let vnodes: u32 = fields[0].parse().expect("vnodes");
    let members = fields[1..].iter().map(|spec| {
        let (name, weight) = spec.split_once(':').expect("name:weight");
        Member::new(name, format!("https://{name}:2379")).with_weight(weight.parse().expect("w"))
    });
    Ring::with_members(vnodes, members).expect("valid ring")
}

#[test]
fn vectors_from_independent_implementation() {
    let mut ring: Option<Ring> = None;
    let mut checked = 0;
    for line in VECTORS.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[0] {
            "key_hash" => {
                let want: u64 = fields[2].parse().expect("u64");
                assert_eq!(key_hash(&parse_hex(fields[1])), want, "{line}");
            }
            "point_hash" => {
                let i: u32 = fields[2].parse().expect("index");
                let want: u64 = fields[3].parse().expect("u64");
                assert_eq!(point_hash(fields[1], i), want, "{line}");
            }
            "ring" => ring = Some(parse_ring(&fields[1..])),
            "owner" => {
                let r = ring.as_ref().expect("ring before owner");
                let got = r.locate(fields[1].as_bytes()).map(|m| m.name.as_str());
                assert_eq!(got, Some(fields[2]), "{line}");
            }
            "replicas" => {
                let r = ring.as_ref().expect("ring before replicas");
                let n: usize = fields[2].parse().expect("n");
                let got: Vec<&str> = r
                    .replicas(fields[1].as_bytes(), n)
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect();
                let want: Vec<&str> = fields[3].split(',').collect();
                assert_eq!(got, want, "{line}");
            }
            other => panic!("unknown vector kind {other:?}"),
        }
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} vectors checked");
}

/// A few vectors spelled out, so the contract is visible without the file.
#[test]
fn pinned_examples() {
    assert_eq!(point_hash("node-a", 0), 15_640_147_382_563_605_800);
    assert_eq!(key_hash(b""), 17_241_709_254_077_376_921);
    assert_eq!(
        key_hash(b"/registry/pods/default/web-0"),
        4_789_377_197_036_317_935
    );
    let ring = Ring::with_members(
        DEFAULT_VNODES,
        ["node-a", "node-b", "node-c"].map(|n| Member::new(n, "")),
    )
    .expect("ring");
    let owner = |k: &str| ring.locate(k.as_bytes()).map(|m| m.name.clone());
    assert_eq!(
        owner("/registry/pods/default/web-0").as_deref(),
        Some("node-c")
    );
    assert_eq!(
        owner("/registry/pods/default/web-1").as_deref(),
        Some("node-a")
    );
    assert_eq!(
        owner("/registry/pods/default/web-2").as_deref(),
        Some("node-b")
    );
}

/// Insertion order must not matter: the ring is defined by its members.
#[test]
fn construction_order_does_not_matter() {
    let names = ["node-c", "node-a", "node-b"];
    let bulk = Ring::with_members(64, names.map(|n| Member::new(n, ""))).expect("ring");
    let mut incremental = Ring::new(64).expect("ring");
    for n in names.iter().rev() {
        incremental.add_member(Member::new(*n, "")).expect("add");
    }
    assert_eq!(bulk, incremental);
}
