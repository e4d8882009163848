//! The router's state and the operations the etcd API is built from.
//!
//! `Store` owns the ring and its shards, the key index, the revision space
//! and the leases. The router is the only writer to the shards: every write
//! is checked against the index, given the next global revision, and sent to
//! the owning shard wrapped in an envelope that carries the global
//! revisions (the durable truth the index is rebuilt from).

pub mod agents;
pub mod convert;
pub mod leases;
pub mod migrate;
pub mod multi_delete;
pub mod read;
pub mod revisions;
pub mod scan;
pub mod write;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ste_core::index::{KeyIndex, ShardId};
use ste_core::ring::{Member, Ring};

use crate::error::{StoreError, StoreResult};
use crate::shard::{Shard, ShardTimeouts};
use crate::state::StateStore;
use revisions::Revisions;

/// Tunables of the data path.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub vnodes: u32,
    /// Pause between migration batches, to bound the load a ring change
    /// puts on the shards.
    pub migration_pause: std::time::Duration,
    pub max_request_bytes: usize,
    /// The most operations one Txn to a shard may carry: the shards'
    /// `--max-txn-ops` (etcd's default is 128). Multi-key deletes are split
    /// into Txns of at most this many deletes.
    pub shard_max_txn_ops: usize,
    pub event_log_bytes: usize,
    pub revision_block: i64,
    pub shard_timeouts: ShardTimeouts,
    /// Which key index implementation the store builds.
    pub key_index: ste_core::index::KeyIndexKind,
}

/// The ring and the shard behind each member.
///
/// During a ring change `target` is the ring being moved to: keys the index
/// has not moved yet stay where they are, new keys go to their owner in the
/// target, and `shards` holds the shards of both rings.
pub struct Membership {
    pub ring: Ring,
    pub target: Option<Ring>,
    pub shards: BTreeMap<String, Arc<Shard>>,
    next_id: u32,
    /// The revision at which the last ring change finished. A single-key
    /// read at an older revision, or during a change, may find its key on
    /// any shard, so it reads them all.
    pub stable_since: ste_core::revision::GlobalRevision,
}

impl Membership {
    pub fn by_id(&self, id: ShardId) -> Option<&Arc<Shard>> {
        self.shards.values().find(|s| s.id == id)
    }

    /// The ring new keys are placed by: the target during a change.
    pub fn placing_ring(&self) -> &Ring {
        self.target.as_ref().unwrap_or(&self.ring)
    }

    /// The shard for `member`, creating it (with a fresh ID) if it is new.
    pub fn shard_for(
        &mut self,
        member: &Member,
        timeouts: &ShardTimeouts,
    ) -> StoreResult<Arc<Shard>> {
        if let Some(shard) = self.shards.get(&member.name)
            && shard.endpoint == member.endpoint
        {
            return Ok(shard.clone());
        }
        let shard = Arc::new(Shard::new(
            ShardId(self.next_id),
            member.name.clone(),
            member.endpoint.clone(),
            member.weight,
            timeouts.clone(),
        )?);
        self.next_id += 1;
        self.shards.insert(member.name.clone(), shard.clone());
        Ok(shard)
    }
}

pub struct Store {
    pub config: StoreConfig,
    membership: RwLock<Membership>,
    index: RwLock<Box<dyn KeyIndex>>,
    pub revisions: Revisions,
    pub leases: leases::Leases,
    pub state: Arc<StateStore>,
    pub metrics: crate::metrics::Metrics,
    /// The router's identity in etcd response headers.
    pub identity: Identity,
    ready: tokio::sync::watch::Sender<bool>,
    /// Held for the whole of a ring change: one at a time.
    pub change_lock: tokio::sync::Mutex<()>,
    /// Progress of the ring change in progress, for status.
    pub migration: std::sync::Mutex<Option<ste_proto::v1::MigrationProgress>>,
    pub agents: agents::Agents,
}

/// How the router presents itself as an etcd member.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub cluster_id: u64,
    pub member_id: u64,
    pub client_urls: Vec<String>,
    /// Version reported in Maintenance.Status.
    pub etcd_version: String,
}

impl Store {
    /// Builds the store for the given members. Nothing is contacted yet;
    /// [`scan::scan_all`] must run before the store serves.
    pub fn new(
        config: StoreConfig,
        members: Vec<Member>,
        generation: u64,
        state: Arc<StateStore>,
        revisions: Revisions,
        identity: Identity,
    ) -> StoreResult<Self> {
        let mut ring = Ring::with_members(config.vnodes, members.clone())
            .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        if generation > 0 {
            ring = ring.with_generation(generation.into());
        }
        let mut membership = Membership {
            ring,
            target: None,
            shards: BTreeMap::new(),
            next_id: 0,
            stable_since: ste_core::revision::GlobalRevision::ZERO,
        };
        for member in &members {
            membership.shard_for(member, &config.shard_timeouts)?;
        }
        let key_index = config.key_index;
        Ok(Store {
            config,
            membership: RwLock::new(membership),
            index: RwLock::new(key_index.build()),
            revisions,
            leases: leases::Leases::default(),
            state,
            metrics: crate::metrics::Metrics::default(),
            identity,
            ready: tokio::sync::watch::channel(false).0,
            change_lock: tokio::sync::Mutex::new(()),
            migration: std::sync::Mutex::new(None),
            agents: agents::Agents::default(),
        })
    }

    pub fn membership(&self) -> std::sync::RwLockReadGuard<'_, Membership> {
        self.membership.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn membership_mut(&self) -> std::sync::RwLockWriteGuard<'_, Membership> {
        self.membership.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Box<dyn KeyIndex>> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Box<dyn KeyIndex>> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.membership().shards.values().cloned().collect()
    }

    pub fn shard_by_id(&self, id: ShardId) -> Option<Arc<Shard>> {
        self.membership().by_id(id).cloned()
    }

    /// The shard the ring assigns `key` to (the target ring during a change).
    pub fn owner(&self, key: &[u8]) -> StoreResult<Arc<Shard>> {
        let membership = self.membership();
        let member = membership
            .placing_ring()
            .locate(key)
            .ok_or(StoreError::NoMembers)?;
        membership.shards.get(&member.name).cloned().ok_or_else(|| {
            StoreError::Internal(format!("ring member {} has no shard", member.name))
        })
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    pub fn subscribe_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Refuses requests until the start-up scan has rebuilt the index.
    pub fn check_ready(&self) -> StoreResult<()> {
        if !self.is_ready() {
            return Err(StoreError::NotReady(
                "scanning shards to rebuild the key index".into(),
            ));
        }
        let empty = {
            let membership = self.membership();
            membership.ring.is_empty() && membership.target.is_none()
        };
        if empty {
            return Err(StoreError::NotReady(
                "the ring has no members yet: waiting for an agent to register and join".into(),
            ));
        }
        Ok(())
    }

    /// The shard that holds `key` now: where the index says, else (a new
    /// key) its owner.
    pub fn holder(&self, key: &[u8]) -> StoreResult<Arc<Shard>> {
        let held = self.index().get(key).map(|e| e.shard);
        match held.and_then(|id| self.shard_by_id(id)) {
            Some(shard) => Ok(shard),
            None => self.owner(key),
        }
    }

    /// Restores a ring change found half done in the state store.
    pub fn set_target(&self, members: Vec<Member>) -> StoreResult<()> {
        let generation = self.membership().ring.generation();
        let target = Ring::with_members(self.config.vnodes, members.clone())
            .map_err(|e| StoreError::InvalidArgument(e.to_string()))?
            .with_generation(generation);
        let mut membership = self.membership_mut();
        for member in &members {
            membership.shard_for(member, &self.config.shard_timeouts)?;
        }
        membership.target = Some(target);
        Ok(())
    }

    /// Keys per shard, from the index.
    pub fn key_counts(&self) -> BTreeMap<ShardId, usize> {
        self.index().count_by_shard()
    }
}
