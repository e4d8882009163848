//! White-box tests of the ring: invariants of the point table and the
//! strictly-greater lookup rule at exact point hashes.

use super::*;

fn ring_of(vnodes: u32, members: &[(&str, u32)]) -> Ring {
    let members = members
        .iter()
        .map(|(n, w)| Member::new(*n, format!("ep-{n}")).with_weight(*w));
    Ring::with_members(vnodes, members).expect("valid ring")
}

/// Checks every invariant listed in the module doc.
fn assert_invariants(ring: &Ring) {
    assert!(ring.members.windows(2).all(|w| w[0].name < w[1].name));
    assert!(
        ring.points.windows(2).all(|w| w[0] < w[1]),
        "sorted, unique"
    );
    for (slot, m) in ring.members.iter().enumerate() {
        let mut vnodes: Vec<u32> = ring
            .points
            .iter()
            .filter(|p| p.slot as usize == slot)
            .map(|p| p.vnode)
            .collect();
        vnodes.sort_unstable();
        let want: Vec<u32> = (0..ring.vnodes * m.weight).collect();
        assert_eq!(vnodes, want, "points of {}", m.name);
    }
    for p in &ring.points {
        let name = &ring.members[p.slot as usize].name;
        assert_eq!(p.hash, point_hash(name, p.vnode));
    }
}

#[test]
fn empty_ring_locates_nothing() {
    let ring = Ring::new(8).expect("ring");
    assert!(ring.is_empty());
    assert_eq!(ring.locate(b"/registry/pods/a/b"), None);
    assert!(ring.replicas(b"/registry/pods/a/b", 3).is_empty());
    assert_eq!(ring.generation(), Generation::ZERO);
}

#[test]
fn vnodes_bounds() {
    assert!(matches!(Ring::new(0), Err(RingError::InvalidVnodes { .. })));
    assert!(Ring::new(MAX_MEMBER_POINTS).is_ok());
    assert!(Ring::new(MAX_MEMBER_POINTS + 1).is_err());
}

#[test]
fn lookup_is_strictly_greater_and_wraps() {
    let ring = ring_of(4, &[("a", 1), ("b", 1)]);
    let n = ring.points.len();
    for i in 0..n {
        let h = ring.points[i].hash;
        // A key hashing exactly onto point i belongs to the *next* point.
        assert_eq!(ring.index_after(h), Some((i + 1) % n));
        if h > 0 && (i == 0 || ring.points[i - 1].hash < h - 1) {
            assert_eq!(ring.index_after(h - 1), Some(i));
        }
    }
    assert_eq!(ring.index_after(u64::MAX), Some(0));
}

#[test]
fn equal_hashes_order_by_name_then_vnode() {
    // Slots follow name order, so the derived order is (hash, name, vnode).
    let a0 = Point {
        hash: 7,
        slot: 0,
        vnode: 3,
    };
    let a1 = Point {
        hash: 7,
        slot: 0,
        vnode: 4,
    };
    let b0 = Point {
        hash: 7,
        slot: 1,
        vnode: 0,
    };
    let mut v = vec![b0, a1, a0];
    v.sort();
    assert_eq!(v, vec![a0, a1, b0]);
}

#[test]
fn invariants_hold_through_changes() {
    let mut ring = ring_of(16, &[("m", 1), ("c", 2)]);
    assert_invariants(&ring);
    ring.add_member(Member::new("a", "")).expect("add first");
    assert_invariants(&ring);
    ring.add_member(Member::new("z", "").with_weight(3))
        .expect("add last");
    assert_invariants(&ring);
    ring.set_weight("c", 5).expect("grow");
    assert_invariants(&ring);
    ring.set_weight("z", 1).expect("shrink");
    assert_invariants(&ring);
    ring.remove_member("m").expect("remove middle");
    assert_invariants(&ring);
    ring.remove_member("a").expect("remove first");
    assert_invariants(&ring);
    assert_eq!(ring.generation(), Generation(2 + 6));
    assert_eq!(ring.point_count(), 16 * (5 + 1));
}

#[test]
fn weight_change_equals_fresh_ring() {
    let mut ring = ring_of(8, &[("a", 1), ("b", 3)]);
    ring.set_weight("b", 2).expect("set");
    ring.set_weight("a", 4).expect("set");
    let fresh = ring_of(8, &[("a", 4), ("b", 2)]);
    assert_eq!(ring.points, fresh.points);
    assert_eq!(ring.members, fresh.members);
}

#[test]
fn refused_changes_leave_ring_untouched() {
    let mut ring = ring_of(8, &[("a", 1)]);
    let before = ring.clone();
    let errs = [
        ring.add_member(Member::new("a", "")),
        ring.add_member(Member::new("", "")),
        ring.add_member(Member::new("x#1", "")),
        ring.add_member(Member::new("x y", "")),
        ring.add_member(Member::new("x", "").with_weight(0)),
        ring.add_member(Member::new("x", "").with_weight(u32::MAX)),
        ring.remove_member("nope"),
        ring.set_weight("nope", 1),
        ring.set_weight("a", 0),
        ring.set_weight("a", MAX_MEMBER_POINTS),
    ];
    assert!(errs.iter().all(Result::is_err), "{errs:?}");
    assert_eq!(ring, before);
}

#[test]
fn error_variants() {
    let mut ring = ring_of(8, &[("a", 1)]);
    assert_eq!(
        ring.add_member(Member::new("a", "")),
        Err(RingError::DuplicateMember("a".into()))
    );
    assert_eq!(
        ring.remove_member("b"),
        Err(RingError::UnknownMember("b".into()))
    );
    assert_eq!(
        ring.set_weight("a", 0),
        Err(RingError::ZeroWeight { name: "a".into() })
    );
    let dup = Ring::with_members(8, [Member::new("a", "1"), Member::new("a", "2")]);
    assert_eq!(dup, Err(RingError::DuplicateMember("a".into())));
}

#[test]
fn generation_restore_and_exhaustion() {
    let ring = ring_of(8, &[("a", 1), ("b", 1)]);
    assert_eq!(ring.generation(), Generation(2));
    let mut ring = ring.with_generation(Generation(u64::MAX));
    let before = ring.clone();
    assert_eq!(
        ring.remove_member("a"),
        Err(RingError::GenerationExhausted(Generation(u64::MAX)))
    );
    assert_eq!(ring, before);
}

#[test]
fn member_lookup_and_listing() {
    let ring = ring_of(8, &[("b", 2), ("a", 1)]);
    let names: Vec<&str> = ring.members().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(ring.member("b").map(|m| m.weight), Some(2));
    assert_eq!(ring.member("b").map(|m| m.endpoint.as_str()), Some("ep-b"));
    assert_eq!(ring.member("c"), None);
    assert_eq!(ring.len(), 2);
    assert_eq!(ring.vnodes(), 8);
}

#[test]
fn debug_is_compact() {
    let ring = ring_of(1024, &[("a", 1)]);
    let s = format!("{ring:?}");
    assert!(s.contains("points: 1024"), "{s}");
    assert!(s.len() < 300, "{s}");
}
