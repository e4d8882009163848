//! The migration plan of a ring change: which keys move, from which shard
//! to which member, in which batches.
//!
//! A key moves exactly when the shard the index has it on is not its owner
//! in the target ring; every other key stays put. Pure: the router feeds
//! it the index and the target ring and executes the batches.

use std::collections::BTreeMap;

use crate::index::{IndexEntry, ShardId};
use crate::ring::Ring;

/// One key to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The key.
    pub key: Vec<u8>,
    /// The shard holding it now.
    pub from: ShardId,
    /// The member that owns it in the target ring.
    pub to: String,
    /// Key plus value bytes (without the envelope).
    pub bytes: u64,
}

/// The keys moving between one pair of members (for progress and dry runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flow {
    /// Keys moving.
    pub keys: u64,
    /// Key plus value bytes moving.
    pub bytes: u64,
}

/// Every key a ring change moves, and the totals per pair of members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The keys to move, in index (key) order.
    pub moves: Vec<Move>,
    /// Totals by (from member, to member). A key on a shard the plan was
    /// not told the name of counts under the empty name.
    pub flows: BTreeMap<(String, String), Flow>,
}

impl Plan {
    /// Plans the moves for `target`: `entries` is the index (key order),
    /// `names` the member name of each shard.
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a [u8], &'a IndexEntry)>,
        target: &Ring,
        names: &BTreeMap<ShardId, String>,
    ) -> Plan {
        let mut plan = Plan::default();
        for (key, entry) in entries {
            let Some(owner) = target.locate(key) else {
                continue;
            };
            let from = names.get(&entry.shard).cloned().unwrap_or_default();
            if owner.name == from {
                continue;
            }
            let bytes = u64::from(entry.value_size) + key.len() as u64;
            let flow = plan.flows.entry((from, owner.name.clone())).or_default();
            flow.keys += 1;
            flow.bytes += bytes;
            plan.moves.push(Move {
                key: key.to_vec(),
                from: entry.shard,
                to: owner.name.clone(),
                bytes,
            });
        }
        plan
    }

    /// Keys to move.
    pub fn keys(&self) -> u64 {
        self.moves.len() as u64
    }

    /// Bytes to move.
    pub fn bytes(&self) -> u64 {
        self.moves.iter().map(|m| m.bytes).sum()
    }

    /// True when nothing moves.
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }

    /// The moves grouped by (source shard, destination member) and cut into
    /// batches of at most `batch` keys (at least 1), in key order within a
    /// group: each batch moves at one global revision.
    pub fn batches(&self, batch: usize) -> Vec<Batch> {
        let mut groups: BTreeMap<(ShardId, &str), Vec<Vec<u8>>> = BTreeMap::new();
        for m in &self.moves {
            groups
                .entry((m.from, m.to.as_str()))
                .or_default()
                .push(m.key.clone());
        }
        groups
            .into_iter()
            .flat_map(|((from, to), keys)| {
                keys.chunks(batch.max(1))
                    .map(|chunk| Batch {
                        from,
                        to: to.to_owned(),
                        keys: chunk.to_vec(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Keys moved together from one shard to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The source shard.
    pub from: ShardId,
    /// The destination member.
    pub to: String,
    /// The keys, in key order.
    pub keys: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Member;
    use crate::{GlobalRevision, ShardRevision};

    fn entry(shard: u32, value_size: u32) -> IndexEntry {
        IndexEntry {
            shard: ShardId(shard),
            create: GlobalRevision(2),
            modified: GlobalRevision(2),
            version: 1,
            lease: 0,
            value_size,
            shard_modified: ShardRevision(2),
        }
    }

    fn ring(names: &[&str]) -> Ring {
        Ring::with_members(
            64,
            names.iter().map(|n| Member::new(*n, format!("http://{n}"))),
        )
        .unwrap()
    }

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("/registry/pods/ns/pod-{i:04}").into_bytes())
            .collect()
    }

    #[test]
    fn only_keys_whose_owner_changes_move() {
        let from = ring(&["a", "b"]);
        let to = ring(&["a", "b", "c"]);
        let names: BTreeMap<ShardId, String> =
            [(ShardId(0), "a".into()), (ShardId(1), "b".into())].into();
        // Every key starts on its owner in `from`.
        let keys = keys(300);
        let entries: Vec<(Vec<u8>, IndexEntry)> = keys
            .iter()
            .map(|k| {
                let shard = if from.locate(k).unwrap().name == "a" {
                    0
                } else {
                    1
                };
                (k.clone(), entry(shard, 10))
            })
            .collect();
        let plan = Plan::new(entries.iter().map(|(k, e)| (k.as_slice(), e)), &to, &names);
        assert!(!plan.is_empty());
        for m in &plan.moves {
            assert_eq!(m.to, "c", "joining c only moves keys to c");
            assert_eq!(to.locate(&m.key).unwrap().name, "c");
            assert_eq!(m.bytes, 10 + m.key.len() as u64);
        }
        let staying = keys
            .iter()
            .filter(|k| to.locate(k).unwrap().name != "c")
            .count();
        assert_eq!(plan.keys() as usize + staying, keys.len());
        let flowed: u64 = plan.flows.values().map(|f| f.keys).sum();
        assert_eq!(flowed, plan.keys());
        assert_eq!(
            plan.flows.values().map(|f| f.bytes).sum::<u64>(),
            plan.bytes()
        );
        assert!(plan.flows.keys().all(|(_, to)| to == "c"));
    }

    #[test]
    fn a_ring_of_the_same_members_moves_nothing() {
        let r = ring(&["a", "b"]);
        let names: BTreeMap<ShardId, String> =
            [(ShardId(0), "a".into()), (ShardId(1), "b".into())].into();
        let entries: Vec<(Vec<u8>, IndexEntry)> = keys(50)
            .into_iter()
            .map(|k| {
                let shard = if r.locate(&k).unwrap().name == "a" {
                    0
                } else {
                    1
                };
                (k, entry(shard, 1))
            })
            .collect();
        let plan = Plan::new(entries.iter().map(|(k, e)| (k.as_slice(), e)), &r, &names);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn batches_group_by_pair_and_respect_the_size() {
        let plan = Plan {
            moves: (0..5)
                .map(|i| Move {
                    key: vec![b'k', b'0' + i],
                    from: ShardId(u32::from(i % 2)),
                    to: "c".into(),
                    bytes: 1,
                })
                .collect(),
            flows: BTreeMap::new(),
        };
        let batches = plan.batches(2);
        let shape: Vec<(u32, usize)> = batches.iter().map(|b| (b.from.0, b.keys.len())).collect();
        // Shard 0 has k0, k2, k4; shard 1 has k1, k3.
        assert_eq!(shape, vec![(0, 2), (0, 1), (1, 2)]);
        assert_eq!(batches[0].keys, vec![b"k0".to_vec(), b"k2".to_vec()]);
        assert_eq!(plan.batches(0).len(), 5, "a batch size of 0 is taken as 1");
    }
}
