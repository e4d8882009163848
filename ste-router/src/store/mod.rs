//! The data store: the ring's shards, the key index, the revision space
//! and the leases, and the operations the etcd API is built from.
//!
//! The router is the only writer to the shards: every write is checked
//! against the index, given the next global revision, and sent to the
//! shard that holds the key, wrapped in an envelope that carries the global
//! revisions (the durable truth the index is rebuilt from).
//!
//! Each piece of state owns its lock ([`Index`], [`Placement`],
//! [`Revisions`], [`Leases`]); `Store` only puts them together. Control-plane
//! state (agents, the one-change-at-a-time lock, change progress) lives in
//! `crate::control`, not here.
//!
//! Module map: `index` (the key index), `placement` (which shard holds a
//! key), `revisions` (the sequencer and the compaction point), `event_feed`
//! (events → watch log, cuts), `shard_ops` (requests to shards), `write`
//! (one key), `multi_delete` (many keys at one revision), `read` (ranges),
//! `scan` (rebuilding the index), `migrate` (moving keys on a ring change),
//! `leases` and `lease_ops`, `convert` (envelope ↔ client key-value).

pub mod compare;
pub mod convert;
pub mod event_feed;
pub mod index;
pub mod lease_ops;
pub mod leases;
pub mod migrate;
pub mod multi_delete;
pub mod placement;
pub mod read;
pub mod revisions;
pub mod scan;
pub mod shard_ops;
pub mod write;

use std::collections::BTreeMap;
use std::sync::Arc;

use ste_core::index::ShardId;
use ste_core::ring::Member;

use crate::error::{StoreError, StoreResult};
use crate::shard::ShardTimeouts;
use crate::state::StateStore;
pub use index::Index;
pub use leases::Leases;
pub use placement::{Connect, Placement};
pub use revisions::Revisions;

/// Tunables of the data path.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Points per unit of weight on the ring (`--vnodes`).
    pub vnodes: u32,
    /// Pause between migration batches, to bound the load a ring change
    /// puts on the shards.
    pub migration_pause: std::time::Duration,
    /// The largest write request accepted, in bytes (etcd's
    /// `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// The most operations one Txn to a shard may carry: the shards'
    /// `--max-txn-ops` (etcd's default is 128). Multi-key deletes are split
    /// into Txns of at most this many deletes.
    pub shard_max_txn_ops: usize,
    /// Approximate bytes of watch events kept for watches that start in
    /// the past.
    pub event_log_bytes: usize,
    /// Revisions reserved in the state store at a time.
    pub revision_block: i64,
    /// Timeouts (and TLS) towards the shards.
    pub shard_timeouts: ShardTimeouts,
    /// Which key index implementation the store builds.
    pub key_index: ste_core::index::KeyIndexKind,
}

/// How the router presents itself as an etcd member.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The member name (`--name`).
    pub name: String,
    /// The cluster ID in every response header.
    pub cluster_id: u64,
    /// The member ID in every response header.
    pub member_id: u64,
    /// What MemberList reports as the client URLs.
    pub client_urls: Vec<String>,
    /// Version reported in Maintenance.Status.
    pub etcd_version: String,
}

/// The router's data: placement, index, revisions and leases.
pub struct Store {
    config: StoreConfig,
    placement: Placement,
    index: Index,
    revisions: Revisions,
    leases: Leases,
    state: Arc<StateStore>,
    identity: Identity,
    ready: tokio::sync::watch::Sender<bool>,
}

impl Store {
    /// Builds the store for the given members at ring `generation`. Nothing
    /// is contacted yet; [`Store::scan_all`] must run before it serves.
    /// `connect` builds each member's shard (see [`placement::connect_grpc`]).
    ///
    /// Errors: `InvalidArgument` for a member list the ring refuses or a bad
    /// shard endpoint.
    pub fn new(
        config: StoreConfig,
        members: Vec<Member>,
        generation: u64,
        state: Arc<StateStore>,
        identity: Identity,
        connect: Connect,
    ) -> StoreResult<Self> {
        let placement = Placement::new(config.vnodes, members, generation, connect)?;
        let revisions =
            Revisions::new(config.event_log_bytes, config.revision_block, state.clone());
        Ok(Store {
            index: Index::new(config.key_index),
            placement,
            revisions,
            leases: Leases::default(),
            state,
            identity,
            ready: tokio::sync::watch::channel(false).0,
            config,
        })
    }

    /// The tunables the store was built with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Which shard holds which key.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The key index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The global revision space and the watch feed.
    pub fn revisions(&self) -> &Revisions {
        &self.revisions
    }

    /// The leases.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// The persisted router state (members, reservation, leases).
    pub fn state(&self) -> &Arc<StateStore> {
        &self.state
    }

    /// How the router presents itself as an etcd member.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// True once the start-up scan has rebuilt the index.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Marks the start-up scan done: requests are served from now on.
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Changes when the store becomes ready.
    pub fn subscribe_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Refuses requests until the start-up scan has rebuilt the index and
    /// while the ring has no member.
    ///
    /// Errors: `NotReady`, saying which of the two it is.
    pub fn check_ready(&self) -> StoreResult<()> {
        if !self.is_ready() {
            return Err(StoreError::NotReady(
                "scanning shards to rebuild the key index".into(),
            ));
        }
        if !self.placement.has_members() {
            return Err(StoreError::NotReady(
                "the ring has no members yet: waiting for an agent to register and join".into(),
            ));
        }
        Ok(())
    }

    /// Restores a ring change found half done in the state store.
    ///
    /// Errors: `InvalidArgument` for a member list the ring refuses.
    pub fn set_target(&self, members: Vec<Member>) -> StoreResult<()> {
        let generation = self.placement.generation();
        let target = self.placement.ring_of(members)?.with_generation(generation);
        self.placement.set_target(target)
    }

    /// Keys per shard, from the index.
    pub fn key_counts(&self) -> BTreeMap<ShardId, usize> {
        self.index.count_by_shard()
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
