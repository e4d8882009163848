//! Pod-churn-shaped key sets and operation streams, deterministic (a fixed
//! splitmix64 stream, no `rand` dependency).

use ste_core::index::{IndexEntry, KeyIndex, KeyIndexKind, ShardId};
use ste_core::{GlobalRevision, KeyRange, ShardRevision};

/// Namespaces the pods are spread over.
pub const NAMESPACES: u64 = 50;
/// kube-apiserver's LIST page size.
pub const PAGE: usize = 500;

/// splitmix64: a tiny, well-mixed deterministic generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// `/registry/pods/<namespace>/<pod>` for pod number `n`: a ReplicaSet-style
/// name (`<app>-<10 hex>-<5 chars>`), so neighbours share a prefix.
pub fn pod_key(n: u64) -> Vec<u8> {
    let mut rng = Rng::new(n);
    let h = rng.next();
    let ns = h % NAMESPACES;
    let app = (h >> 8) % 40;
    let rs = rng.next() & 0xff_ffff_ffff;
    let pod = rng.next() % 36u64.pow(5);
    format!("/registry/pods/ns-{ns:02}/app-{app:02}-{rs:010x}-{pod:05}").into_bytes()
}

/// Length of `/registry/pods/ns-NN/`, the namespace prefix of a pod key.
pub const NAMESPACE_PREFIX_LEN: usize = 21;

/// An entry for write number `n` (the fields only need to vary).
pub fn entry(n: u64) -> IndexEntry {
    let n = n as i64;
    IndexEntry {
        shard: ShardId((n % 3) as u32),
        create: GlobalRevision(n),
        modified: GlobalRevision(n + 1),
        version: 1,
        lease: 0,
        value_size: 2048,
        shard_modified: ShardRevision(n),
    }
}

/// N distinct pod keys, in creation (random) order, and their sorted order.
pub struct KeySet {
    pub keys: Vec<Vec<u8>>,
    pub sorted: Vec<u32>,
}

impl KeySet {
    pub fn new(n: usize) -> KeySet {
        let keys: Vec<Vec<u8>> = (0..n as u64).map(pod_key).collect();
        let mut sorted: Vec<u32> = (0..n as u32).collect();
        sorted.sort_unstable_by(|&a, &b| keys[a as usize].cmp(&keys[b as usize]));
        sorted.dedup_by(|a, b| keys[*a as usize] == keys[*b as usize]);
        assert_eq!(sorted.len(), n, "pod keys are distinct");
        KeySet { keys, sorted }
    }
}

/// An index of `kind` holding every key of `set`, built in sorted order.
pub fn filled(kind: KeyIndexKind, set: &KeySet) -> Box<dyn KeyIndex> {
    let mut index = kind.build();
    fill(index.as_mut(), set, true);
    index
}

/// Inserts every key of `set`, sorted or in creation order.
pub fn fill(index: &mut dyn KeyIndex, set: &KeySet, sorted: bool) {
    if sorted {
        for &i in &set.sorted {
            index.insert(set.keys[i as usize].clone(), entry(u64::from(i)));
        }
    } else {
        for (i, key) in set.keys.iter().enumerate() {
            index.insert(key.clone(), entry(i as u64));
        }
    }
}

/// A mixed pod-churn step.
#[derive(Debug, Clone, Copy)]
pub enum Churn {
    /// Create a new pod (a key not in the index).
    Create,
    /// Status update of an existing pod.
    Update,
    /// Delete an existing pod.
    Delete,
}

/// Draws a step with the 20/70/10 create/update/delete mix.
pub fn churn(rng: &mut Rng) -> Churn {
    match rng.below(10) {
        0 | 1 => Churn::Create,
        9 => Churn::Delete,
        _ => Churn::Update,
    }
}

/// A `limit` 500 page of `from`'s namespace, starting at `from` (a pod key,
/// as a continue token would): returns how many keys it saw.
pub fn page(index: &dyn KeyIndex, from: &[u8]) -> usize {
    let prefix = &from[..NAMESPACE_PREFIX_LEN];
    let range = KeyRange::from_request(from, &ste_core::prefix_end(prefix));
    index.range(&range).take(PAGE).count()
}

/// The apiserver's object count: every key under `/registry/pods/`.
pub fn count_pods(index: &dyn KeyIndex) -> usize {
    index.count(&KeyRange::prefix(b"/registry/pods/"))
}
