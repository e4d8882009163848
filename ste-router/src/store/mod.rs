//! The router's state and the operations the etcd API is built from.
//!
//! `Store` owns the ring and its shards, the key index, the revision space
//! and the leases. The router is the only writer to the shards: every write
//! is checked against the index, given the next global revision, and sent to
//! the owning shard wrapped in an envelope that carries the global
//! revisions (the durable truth the index is rebuilt from).

pub mod convert;
pub mod leases;
pub mod read;
pub mod revisions;
pub mod scan;
pub mod write;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ste_core::index::{BTreeKeyIndex, KeyIndex, ShardId};
use ste_core::ring::{Member, Ring};

use crate::error::{StoreError, StoreResult};
use crate::shard::{Shard, ShardTimeouts};
use crate::state::StateStore;
use revisions::Revisions;

/// Tunables of the data path.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub vnodes: u32,
    pub max_request_bytes: usize,
    pub event_log_bytes: usize,
    pub revision_block: i64,
    pub shard_timeouts: ShardTimeouts,
}

/// The ring and the shard behind each member.
pub struct Membership {
    pub ring: Ring,
    pub shards: BTreeMap<String, Arc<Shard>>,
}

impl Membership {
    pub fn by_id(&self, id: ShardId) -> Option<&Arc<Shard>> {
        self.shards.values().find(|s| s.id == id)
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
        let mut shards = BTreeMap::new();
        for (i, member) in members.into_iter().enumerate() {
            let shard = Shard::new(
                ShardId(i as u32),
                member.name.clone(),
                member.endpoint.clone(),
                member.weight,
                config.shard_timeouts.clone(),
            )?;
            shards.insert(member.name, Arc::new(shard));
        }
        Ok(Store {
            config,
            membership: RwLock::new(Membership { ring, shards }),
            index: RwLock::new(Box::new(BTreeKeyIndex::new())),
            revisions,
            leases: leases::Leases::default(),
            state,
            metrics: crate::metrics::Metrics::default(),
            identity,
            ready: tokio::sync::watch::channel(false).0,
        })
    }

    pub fn membership(&self) -> std::sync::RwLockReadGuard<'_, Membership> {
        self.membership.read().unwrap_or_else(|e| e.into_inner())
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

    /// The shard the ring assigns `key` to.
    pub fn owner(&self, key: &[u8]) -> StoreResult<Arc<Shard>> {
        let membership = self.membership();
        let member = membership.ring.locate(key).ok_or(StoreError::NoMembers)?;
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
        if self.is_ready() {
            Ok(())
        } else {
            Err(StoreError::NotReady(
                "scanning shards to rebuild the key index".into(),
            ))
        }
    }

    /// Keys per shard, from the index.
    pub fn key_counts(&self) -> BTreeMap<ShardId, usize> {
        self.index().count_by_shard()
    }
}
