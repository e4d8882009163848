//! Property tests of the ring's consistency guarantees: membership changes
//! move only the keys they must, replicas are distinct, and the generation
//! counts successful changes exactly.

use std::collections::BTreeMap;

use proptest::prelude::*;
use ste_core::{Generation, Member, Ring};

/// Small vnode counts keep debug-mode runs fast; the properties hold for any.
const VNODES: u32 = 32;

fn keys(seed: u32) -> Vec<String> {
    (0..400)
        .map(|k| format!("/registry/pods/ns-{seed}/pod-{k}"))
        .collect()
}

fn members() -> impl Strategy<Value = BTreeMap<String, u32>> {
    proptest::collection::btree_map("[a-z0-9-]{1,6}", 1u32..=3, 1..7)
}

fn ring_of(members: &BTreeMap<String, u32>) -> Ring {
    let members = members
        .iter()
        .map(|(n, w)| Member::new(n.clone(), "").with_weight(*w));
    Ring::with_members(VNODES, members).expect("valid ring")
}

fn owners(ring: &Ring, keys: &[String]) -> Vec<Option<String>> {
    keys.iter()
        .map(|k| ring.locate(k.as_bytes()).map(|m| m.name.clone()))
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Add(String, u32),
    Remove(String),
    SetWeight(String, u32),
}

fn op() -> impl Strategy<Value = Op> {
    // A tiny name pool makes duplicates and unknown names common, and
    // weight 0 makes refusals common.
    let name = "[abc]";
    prop_oneof![
        (name, 0u32..3).prop_map(|(n, w)| Op::Add(n, w)),
        name.prop_map(Op::Remove),
        (name, 0u32..3).prop_map(|(n, w)| Op::SetWeight(n, w)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn adding_moves_keys_only_to_the_new_member(
        existing in members(), new in "[A-Z]{1,6}", weight in 1u32..=3, seed in any::<u32>(),
    ) {
        let keys = keys(seed);
        let mut ring = ring_of(&existing);
        let before = owners(&ring, &keys);
        ring.add_member(Member::new(new.clone(), "").with_weight(weight)).expect("add");
        let after = owners(&ring, &keys);
        for ((b, a), k) in before.iter().zip(&after).zip(&keys) {
            if b != a {
                prop_assert_eq!(a.as_deref(), Some(new.as_str()), "key {} moved", k);
            }
        }
    }

    #[test]
    fn removing_moves_only_the_removed_members_keys(
        existing in members(), pick in any::<prop::sample::Index>(), seed in any::<u32>(),
    ) {
        let keys = keys(seed);
        let mut ring = ring_of(&existing);
        let names: Vec<&String> = existing.keys().collect();
        let gone = names[pick.index(names.len())].clone();
        let before = owners(&ring, &keys);
        ring.remove_member(&gone).expect("remove");
        let after = owners(&ring, &keys);
        for ((b, a), k) in before.iter().zip(&after).zip(&keys) {
            if b != a {
                prop_assert_eq!(b.as_deref(), Some(gone.as_str()), "key {} moved", k);
            }
            prop_assert_ne!(a.as_deref(), Some(gone.as_str()));
        }
    }

    #[test]
    fn reweighting_moves_keys_only_to_or_from_that_member(
        existing in members(), pick in any::<prop::sample::Index>(),
        weight in 1u32..=4, seed in any::<u32>(),
    ) {
        let keys = keys(seed);
        let mut ring = ring_of(&existing);
        let names: Vec<&String> = existing.keys().collect();
        let name = names[pick.index(names.len())].clone();
        let old = existing[&name];
        let before = owners(&ring, &keys);
        ring.set_weight(&name, weight).expect("set weight");
        let after = owners(&ring, &keys);
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                // Growing only gains keys, shrinking only loses them.
                let moved_side = if weight > old { a } else { b };
                prop_assert_eq!(moved_side.as_deref(), Some(name.as_str()));
            }
        }
    }

    #[test]
    fn replicas_are_distinct_and_start_at_the_owner(
        existing in members(), n in 0usize..10, seed in any::<u32>(),
    ) {
        let ring = ring_of(&existing);
        for key in keys(seed).iter().take(100) {
            let reps = ring.replicas(key.as_bytes(), n);
            prop_assert_eq!(reps.len(), n.min(ring.len()));
            let mut names: Vec<&str> = reps.iter().map(|m| m.name.as_str()).collect();
            if let Some(first) = names.first() {
                prop_assert_eq!(Some(*first), ring.locate(key.as_bytes()).map(|m| m.name.as_str()));
            }
            names.sort_unstable();
            names.dedup();
            prop_assert_eq!(names.len(), reps.len(), "duplicate replica for {}", key);
        }
    }

    #[test]
    fn generation_counts_successful_changes(
        ops in proptest::collection::vec(op(), 0..24), start in 0u64..1000,
    ) {
        let mut ring = Ring::new(4).expect("ring").with_generation(Generation(start));
        let mut expected = start;
        for op in &ops {
            let before = ring.clone();
            let result = match op {
                Op::Add(n, w) => ring.add_member(Member::new(n.clone(), "").with_weight(*w)),
                Op::Remove(n) => ring.remove_member(n),
                Op::SetWeight(n, w) => ring.set_weight(n, *w),
            };
            match result {
                Ok(g) => {
                    expected += 1;
                    prop_assert_eq!(g, Generation(expected));
                }
                Err(_) => prop_assert_eq!(&ring, &before),
            }
            prop_assert_eq!(ring.generation(), Generation(expected));
        }
        // History does not matter, only the final membership.
        let fresh = Ring::with_members(4, ring.members().cloned())
            .expect("ring")
            .with_generation(ring.generation());
        prop_assert_eq!(fresh, ring);
    }
}
