//! Placement: which shard holds a key now, and which shard a new key goes
//! to. The one place that decides it; everything else asks here.
//!
//! The ring is the committed membership. During a ring change `target` is
//! the ring being moved to: new keys go to their owner in the target, keys
//! not moved yet stay where the index says (a key stays on its shard until
//! a migration batch moves it), and the shard table holds the shards of
//! both rings. A read of one key can go to its owner only when the ring has
//! been stable since the revision read (see [`Placement::shards_for`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ste_core::index::ShardId;
use ste_core::keyrange::KeyRange;
use ste_core::revision::GlobalRevision;
use ste_core::ring::{Generation, Member, Ring};

use super::index::Index;
use crate::error::{StoreError, StoreResult};
use crate::shard::{Shard, ShardTimeouts};

/// Builds the [`Shard`] for a ring member (a gRPC client for real shards,
/// an in-memory one in unit tests). Called once per member and endpoint.
pub type Connect = Arc<dyn Fn(ShardId, &Member) -> StoreResult<Arc<Shard>> + Send + Sync>;

/// The [`Connect`] of a running router: a lazy gRPC channel per shard,
/// each waking `resync_wanted` when it needs a resync.
pub fn connect_grpc(timeouts: ShardTimeouts, resync_wanted: Arc<tokio::sync::Notify>) -> Connect {
    Arc::new(move |id, member| {
        Ok(Arc::new(
            Shard::new(
                id,
                member.name.clone(),
                member.endpoint.clone(),
                member.weight,
                timeouts.clone(),
            )?
            .with_resync_signal(resync_wanted.clone()),
        ))
    })
}

struct State {
    ring: Ring,
    target: Option<Ring>,
    shards: BTreeMap<String, Arc<Shard>>,
    next_id: u32,
    /// The revision at which the last ring change finished.
    stable_since: GlobalRevision,
}

/// The ring, the pending target ring and the shard behind each member.
pub struct Placement {
    state: RwLock<State>,
    vnodes: u32,
    connect: Connect,
}

impl Placement {
    /// The placement for `members` at ring `generation` (0: the ring's
    /// first). Shards are created (not contacted) for every member.
    ///
    /// Errors: `InvalidArgument` for a member list the ring refuses
    /// (duplicate names, zero weight) or a bad shard endpoint.
    pub fn new(
        vnodes: u32,
        members: Vec<Member>,
        generation: u64,
        connect: Connect,
    ) -> StoreResult<Self> {
        let placement = Placement {
            state: RwLock::new(State {
                ring: Ring::new(vnodes).map_err(|e| StoreError::InvalidArgument(e.to_string()))?,
                target: None,
                shards: BTreeMap::new(),
                next_id: 0,
                stable_since: GlobalRevision::ZERO,
            }),
            vnodes,
            connect,
        };
        let mut ring = placement.ring_of(members.clone())?;
        if generation > 0 {
            ring = ring.with_generation(generation.into());
        }
        placement.write().ring = ring;
        for member in &members {
            placement.shard_for(member)?;
        }
        Ok(placement)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A ring of `members` with this router's `--vnodes` (generation 0).
    ///
    /// Errors: `InvalidArgument` when the ring refuses the member list.
    pub fn ring_of(&self, members: Vec<Member>) -> StoreResult<Ring> {
        Ring::with_members(self.vnodes, members)
            .map_err(|e| StoreError::InvalidArgument(e.to_string()))
    }

    /// The committed ring.
    pub fn ring(&self) -> Ring {
        self.read().ring.clone()
    }

    /// The ring being moved to, while a change is pending.
    pub fn target(&self) -> Option<Ring> {
        self.read().target.clone()
    }

    /// The ring new keys are placed by: the target during a change, else
    /// the committed ring.
    pub fn placing_ring(&self) -> Ring {
        let state = self.read();
        state.target.clone().unwrap_or_else(|| state.ring.clone())
    }

    /// The committed ring's generation.
    pub fn generation(&self) -> Generation {
        self.read().ring.generation()
    }

    /// True when `name` is a member of the committed ring.
    pub fn is_member(&self, name: &str) -> bool {
        self.read().ring.member(name).is_some()
    }

    /// True when `name` is a member of the committed ring or of the target.
    pub fn is_member_or_joining(&self, name: &str) -> bool {
        let state = self.read();
        state.ring.member(name).is_some()
            || state
                .target
                .as_ref()
                .is_some_and(|t| t.member(name).is_some())
    }

    /// True when some ring (committed or target) has a member: otherwise
    /// there is nowhere to put a key.
    pub fn has_members(&self) -> bool {
        let state = self.read();
        !state.ring.is_empty() || state.target.is_some()
    }

    /// True while a ring change is pending.
    pub fn change_pending(&self) -> bool {
        self.read().target.is_some()
    }

    /// Every shard (of the committed ring and of the target), by name.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.read().shards.values().cloned().collect()
    }

    /// The shards of the committed ring's members, in member order.
    pub fn member_shards(&self) -> Vec<Arc<Shard>> {
        let state = self.read();
        state
            .ring
            .members()
            .filter_map(|m| state.shards.get(&m.name).cloned())
            .collect()
    }

    /// The shard with ID `id`, if it is in the table.
    pub fn shard_by_id(&self, id: ShardId) -> Option<Arc<Shard>> {
        self.read().shards.values().find(|s| s.id == id).cloned()
    }

    /// The shard of member `name`, if it is in the table.
    pub fn shard_named(&self, name: &str) -> Option<Arc<Shard>> {
        self.read().shards.get(name).cloned()
    }

    /// True when the table has a shard for `member` at its endpoint.
    pub fn knows(&self, member: &Member) -> bool {
        self.read()
            .shards
            .get(&member.name)
            .is_some_and(|s| s.endpoint == member.endpoint)
    }

    /// The shard the placing ring assigns `key` to (the target ring during
    /// a change).
    ///
    /// Errors: `NoMembers` when no ring has a member.
    pub fn owner(&self, key: &[u8]) -> StoreResult<Arc<Shard>> {
        let state = self.read();
        let ring = state.target.as_ref().unwrap_or(&state.ring);
        let member = ring.locate(key).ok_or(StoreError::NoMembers)?;
        state.shards.get(&member.name).cloned().ok_or_else(|| {
            StoreError::Internal(format!("ring member {} has no shard", member.name))
        })
    }

    /// The member the committed ring assigns `key` to.
    pub fn committed_owner(&self, key: &[u8]) -> Option<String> {
        self.read().ring.locate(key).map(|m| m.name.clone())
    }

    /// The member the placing ring assigns `key` to.
    pub fn placing_owner(&self, key: &[u8]) -> Option<String> {
        let state = self.read();
        let ring = state.target.as_ref().unwrap_or(&state.ring);
        ring.locate(key).map(|m| m.name.clone())
    }

    /// The shard that holds `key` now: where the index says, else (a new
    /// key) its owner.
    pub fn holder(&self, key: &[u8], index: &Index) -> StoreResult<Arc<Shard>> {
        match index.shard_of(key).and_then(|id| self.shard_by_id(id)) {
            Some(shard) => Ok(shard),
            None => self.owner(key),
        }
    }

    /// True when no change is pending and none finished after `revision`:
    /// then every key that existed at `revision` is on its owner.
    pub fn is_stable_since(&self, revision: GlobalRevision) -> bool {
        let state = self.read();
        state.target.is_none() && revision >= state.stable_since
    }

    /// The shards that can hold keys of `range` at `revision`: the owner
    /// for a single key when the ring has been stable since then, else all
    /// of them (during or before a ring change a key may sit on another
    /// shard).
    ///
    /// Errors: `NoMembers` when there is no shard.
    pub fn shards_for(
        &self,
        range: &KeyRange,
        revision: GlobalRevision,
    ) -> StoreResult<Vec<Arc<Shard>>> {
        if range.is_single_key() && self.is_stable_since(revision) {
            return Ok(vec![self.owner(range.start())?]);
        }
        let shards = self.shards();
        if shards.is_empty() {
            return Err(StoreError::NoMembers);
        }
        Ok(shards)
    }

    /// The shard for `member`, creating it (with a fresh ID) if it is new
    /// or its endpoint changed. The flag is true when it was created.
    ///
    /// Errors: `InvalidArgument` for a bad endpoint.
    pub fn shard_for(&self, member: &Member) -> StoreResult<(Arc<Shard>, bool)> {
        let mut state = self.write();
        if let Some(shard) = state.shards.get(&member.name)
            && shard.endpoint == member.endpoint
        {
            return Ok((shard.clone(), false));
        }
        let shard = (self.connect)(ShardId(state.next_id), member)?;
        state.next_id += 1;
        state.shards.insert(member.name.clone(), shard.clone());
        Ok((shard, true))
    }

    /// Drops `shard` from the table if it is still the one there (a shard
    /// added to check a join that was then refused).
    pub fn forget(&self, shard: &Arc<Shard>) {
        let mut state = self.write();
        if state
            .shards
            .get(&shard.name)
            .is_some_and(|s| Arc::ptr_eq(s, shard))
        {
            state.shards.remove(&shard.name);
        }
    }

    /// Sets the pending target ring, creating shards for its members.
    ///
    /// Errors: `InvalidArgument` for a bad endpoint.
    pub fn set_target(&self, target: Ring) -> StoreResult<()> {
        for member in target.members() {
            self.shard_for(member)?;
        }
        self.write().target = Some(target);
        Ok(())
    }

    /// Makes `target` the committed ring as of revision `at`, ends the
    /// pending change and drops the shards of members that left, returning
    /// them.
    pub fn commit(&self, target: Ring, at: GlobalRevision) -> Vec<Arc<Shard>> {
        let mut state = self.write();
        let gone: Vec<String> = state
            .shards
            .keys()
            .filter(|name| target.member(name).is_none())
            .cloned()
            .collect();
        state.ring = target;
        state.target = None;
        state.stable_since = at;
        gone.iter()
            .filter_map(|name| state.shards.remove(name))
            .collect()
    }
}

#[cfg(test)]
mod tests;
