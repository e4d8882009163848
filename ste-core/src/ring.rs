//! The STE placement ring: which member (shard) owns an etcd key.
//!
//! # Algorithm (release-stable)
//!
//! Every STE component must place every key identically, across versions, so
//! the algorithm below is a compatibility contract. Changing any step moves
//! keys; it is pinned by golden vectors computed with an independent
//! implementation (`tests/golden/gen_golden.py`).
//!
//! 1. Hash function: **XXH64 with seed 0** over explicit bytes, for points
//!    and keys alike ([`key_hash`], [`point_hash`]).
//! 2. Points: member `m` with weight `w` gets `vnodes * w` points. Point `i`
//!    (0-based, `0 <= i < vnodes * w`) has hash
//!    `xxh64(format!("{m}#{i}").as_bytes(), 0)`.
//! 3. Order: points are sorted by hash. Points with equal hash are ordered
//!    by member name (byte order), then by `i`, so the order is total and
//!    does not depend on insertion order.
//! 4. Key: the full etcd key bytes are hashed, prefix included, e.g.
//!    `/registry/pods/default/web-0`. Keys are `&[u8]` because etcd keys are
//!    bytes.
//! 5. Lookup: the owner is the member of the first point whose hash is
//!    **strictly greater** than the key's hash; if there is none, wrap around
//!    to the first point.
//! 6. Replicas: walk clockwise from the lookup point and collect distinct
//!    members until `n` (or all members) are found. The first is the owner.
//!
//! # Why not the `hashring` crate
//!
//! `hashring` 0.3.6's `get` returns the first point whose hash is `>=` the
//! key hash, not strictly greater, which disagrees with step 5 whenever a key
//! hashes exactly onto a point; and its `get_with_replicas` returns duplicate
//! members when a member's points are adjacent, so "3 replicas" can be 2
//! shards. Both are silent placement disagreements, so the ring is written
//! here, with the contract above.
//!
//! # Invariants
//!
//! * `members` is sorted by name and names are unique; a point's `slot` is
//!   its member's index there. Since slots follow name order, sorting points
//!   by `(hash, slot, vnode)` is exactly the order of step 3.
//! * `points` holds exactly `vnodes * weight` points per member, indices
//!   `0..vnodes * weight`, sorted. Changing a weight keeps the common prefix
//!   of indices, so only the added/removed points move keys.
//! * Every successful membership change increments the generation by one; a
//!   refused change leaves the ring untouched.

mod error;
mod hash;
mod member;
#[cfg(test)]
mod tests;

use std::fmt;

pub use error::RingError;
use hash::PointHasher;
pub use hash::{key_hash, point_hash};
pub use member::{Generation, Member, validate_name};

/// Points per unit of weight used by STE.
///
/// The design said 128, but with `V` random points per member the standard
/// deviation of a member's load is about `1/sqrt(V)` of the mean. Measured
/// max/mean load over 100,000 pod keys with XXH64:
///
/// | members | V = 128 | V = 1024 |
/// |--------:|--------:|---------:|
/// |       3 |   1.086 |    1.044 |
/// |      10 |   1.148 |    1.019 |
/// |      50 |   1.264 |    1.071 |
///
/// V = 128 fails the max/mean <= 1.10 target from 10 members on; V = 1024
/// meets it. Cost: 50 members x 1024 points = 51,200 points of 16 bytes
/// (about 0.8 MB), and lookup stays a binary search.
pub const DEFAULT_VNODES: u32 = 1024;

/// Upper bound on one member's points (`vnodes * weight`). Keeps a typo'd
/// weight from allocating gigabytes; at [`DEFAULT_VNODES`] it allows weights
/// up to 1024.
pub const MAX_MEMBER_POINTS: u32 = 1 << 20;

/// One virtual node. Field order is the sort order (see module invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    hash: u64,
    slot: u32,
    vnode: u32,
}

/// A consistent-hash ring of weighted members with a generation counter.
#[derive(Clone, PartialEq, Eq)]
pub struct Ring {
    vnodes: u32,
    generation: Generation,
    members: Vec<Member>,
    points: Vec<Point>,
}

impl Default for Ring {
    /// An empty ring with [`DEFAULT_VNODES`] at generation 0.
    fn default() -> Self {
        Ring {
            vnodes: DEFAULT_VNODES,
            generation: Generation::ZERO,
            members: Vec::new(),
            points: Vec::new(),
        }
    }
}

impl fmt::Debug for Ring {
    // The points are derived data and number in the tens of thousands.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("vnodes", &self.vnodes)
            .field("generation", &self.generation)
            .field("members", &self.members)
            .field("points", &self.points.len())
            .finish()
    }
}

impl Ring {
    /// An empty ring at generation 0 with `vnodes` points per unit of weight.
    pub fn new(vnodes: u32) -> Result<Ring, RingError> {
        if vnodes == 0 || vnodes > MAX_MEMBER_POINTS {
            return Err(RingError::InvalidVnodes {
                got: vnodes,
                max: MAX_MEMBER_POINTS,
            });
        }
        Ok(Ring {
            vnodes,
            ..Ring::default()
        })
    }

    /// A ring holding `members`, equal (generation included) to
    /// [`Ring::new`] followed by one [`Ring::add_member`] per member, but
    /// sorted once.
    pub fn with_members(
        vnodes: u32,
        members: impl IntoIterator<Item = Member>,
    ) -> Result<Ring, RingError> {
        let mut ring = Ring::new(vnodes)?;
        let mut members: Vec<Member> = members.into_iter().collect();
        for m in &members {
            ring.check_member(m)?;
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = members.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(RingError::DuplicateMember(pair[0].name.clone()));
        }
        let count = u64::try_from(members.len()).unwrap_or(u64::MAX);
        ring.generation = Generation(count);
        let mut hasher = PointHasher::default();
        for (slot, m) in members.iter().enumerate() {
            let slot = slot_of(slot)?;
            ring.push_points(&mut hasher, slot, &m.name, 0..vnodes * m.weight);
        }
        ring.members = members;
        ring.points.sort();
        Ok(ring)
    }

    /// The same ring with its generation set to `generation`, e.g. to
    /// restore a persisted ring whose history is not replayed.
    #[must_use]
    pub fn with_generation(mut self, generation: Generation) -> Ring {
        self.generation = generation;
        self
    }

    /// Points per unit of weight.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// The current membership version.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The members, in name (byte) order.
    pub fn members(&self) -> impl ExactSizeIterator<Item = &Member> + '_ {
        self.members.iter()
    }

    /// The member called `name`, if present.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.slot_by_name(name).ok().map(|i| &self.members[i])
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when the ring has no members (every lookup returns nothing).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Number of points on the ring (sum of `vnodes * weight`).
    pub fn point_count(&self) -> usize {
        self.points.len()
    }

    /// Adds `member`, returning the new generation.
    pub fn add_member(&mut self, member: Member) -> Result<Generation, RingError> {
        self.check_member(&member)?;
        let Err(at) = self.slot_by_name(&member.name) else {
            return Err(RingError::DuplicateMember(member.name));
        };
        let next = self.next_generation()?;
        let slot = slot_of(at)?;
        // Slots at or after the insertion point shift by one. The shift is
        // monotone, so the existing points stay sorted.
        for p in &mut self.points {
            if p.slot >= slot {
                p.slot += 1;
            }
        }
        let count = self.vnodes * member.weight;
        self.push_points(&mut PointHasher::default(), slot, &member.name, 0..count);
        self.members.insert(at, member);
        self.resort();
        self.generation = next;
        Ok(next)
    }

    /// Removes the member called `name`, returning the new generation.
    pub fn remove_member(&mut self, name: &str) -> Result<Generation, RingError> {
        let at = self
            .slot_by_name(name)
            .map_err(|_| RingError::UnknownMember(name.to_owned()))?;
        let next = self.next_generation()?;
        let slot = slot_of(at)?;
        // Removing points and shifting later slots down keeps the order.
        self.points.retain(|p| p.slot != slot);
        for p in &mut self.points {
            if p.slot > slot {
                p.slot -= 1;
            }
        }
        self.members.remove(at);
        self.generation = next;
        Ok(next)
    }

    /// Sets the weight of member `name`, returning the new generation.
    ///
    /// Points `0..vnodes * min(old, new)` are kept, so only keys on the added
    /// or removed points move. Setting the current weight is still a
    /// (no-op) change and bumps the generation, keeping "one call, one
    /// generation" simple for callers.
    pub fn set_weight(&mut self, name: &str, weight: u32) -> Result<Generation, RingError> {
        let at = self
            .slot_by_name(name)
            .map_err(|_| RingError::UnknownMember(name.to_owned()))?;
        self.check_weight(name, weight)?;
        let next = self.next_generation()?;
        let slot = slot_of(at)?;
        let old = self.vnodes * self.members[at].weight;
        let new = self.vnodes * weight;
        if new > old {
            self.push_points(&mut PointHasher::default(), slot, name, old..new);
            self.resort();
        } else {
            self.points.retain(|p| p.slot != slot || p.vnode < new);
        }
        self.members[at].weight = weight;
        self.generation = next;
        Ok(next)
    }

    /// The owner of `key`: the member of the first point whose hash is
    /// strictly greater than [`key_hash`]`(key)`, wrapping. `None` on an
    /// empty ring.
    pub fn locate(&self, key: &[u8]) -> Option<&Member> {
        let start = self.lookup_index(key)?;
        Some(&self.members[self.points[start].slot as usize])
    }

    /// Up to `n` distinct members for `key`, walking clockwise from the
    /// lookup point: `min(n, len())` members, the first being
    /// [`Ring::locate`]'s answer.
    pub fn replicas(&self, key: &[u8], n: usize) -> Vec<&Member> {
        let want = n.min(self.members.len());
        let mut out = Vec::with_capacity(want);
        let Some(start) = self.lookup_index(key) else {
            return out;
        };
        let mut seen = vec![false; self.members.len()];
        let (after, before) = self.points.split_at(start);
        for p in before.iter().chain(after) {
            if out.len() == want {
                break;
            }
            let slot = p.slot as usize;
            if !seen[slot] {
                seen[slot] = true;
                out.push(&self.members[slot]);
            }
        }
        out
    }

    /// Index of the lookup point for `key`, or `None` on an empty ring.
    fn lookup_index(&self, key: &[u8]) -> Option<usize> {
        self.index_after(key_hash(key))
    }

    /// Index of the first point whose hash is strictly greater than `hash`,
    /// wrapping to 0; `None` on an empty ring.
    fn index_after(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|p| p.hash <= hash);
        Some(if i == self.points.len() { 0 } else { i })
    }

    /// Index of `name` in `members`, or where it would be inserted.
    fn slot_by_name(&self, name: &str) -> Result<usize, usize> {
        self.members.binary_search_by(|m| m.name.as_str().cmp(name))
    }

    /// Everything about a member that does not depend on the other members.
    fn check_member(&self, m: &Member) -> Result<(), RingError> {
        member::validate_name(&m.name)?;
        self.check_weight(&m.name, m.weight)
    }

    fn check_weight(&self, name: &str, weight: u32) -> Result<(), RingError> {
        if weight == 0 {
            return Err(RingError::ZeroWeight {
                name: name.to_owned(),
            });
        }
        match self.vnodes.checked_mul(weight) {
            Some(points) if points <= MAX_MEMBER_POINTS => Ok(()),
            _ => Err(RingError::TooManyPoints {
                name: name.to_owned(),
                vnodes: self.vnodes,
                weight,
                max: MAX_MEMBER_POINTS,
            }),
        }
    }

    fn next_generation(&self) -> Result<Generation, RingError> {
        self.generation
            .next()
            .ok_or(RingError::GenerationExhausted(self.generation))
    }

    /// Appends points `vnodes` of the member in `slot`, unsorted.
    fn push_points(
        &mut self,
        hasher: &mut PointHasher,
        slot: u32,
        name: &str,
        vnodes: std::ops::Range<u32>,
    ) {
        self.points.reserve(vnodes.len());
        for vnode in vnodes {
            let hash = hasher.hash(name, vnode);
            self.points.push(Point { hash, slot, vnode });
        }
    }

    /// Restores the sort after appending points. The stable sort detects the
    /// already-sorted prefix as one run, so this is close to a single merge.
    fn resort(&mut self) {
        self.points.sort();
    }
}

/// A member index as a point slot. Unreachable in practice (every member
/// owns at least one 16-byte point), but refused rather than truncated.
fn slot_of(index: usize) -> Result<u32, RingError> {
    u32::try_from(index).map_err(|_| RingError::TooManyMembers)
}
