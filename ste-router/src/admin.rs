//! ste.v1.Ring, the admin API for `kubectl ste` and operators.

use std::sync::Arc;

use ste_core::index::ShardId;
use ste_proto::v1::ring_server::Ring;
use ste_proto::v1::{
    GetRingRequest, GetRouterStatusRequest, LocateRequest, Location, MemberHealth, RingInfo,
    RingMember, RouterStatus,
};
use tonic::{Request, Response, Status};

use crate::error::StoreError;
use crate::store::Store;

pub struct RingService {
    store: Arc<Store>,
}

impl RingService {
    pub fn new(store: Arc<Store>) -> Self {
        RingService { store }
    }

    fn members(&self) -> Vec<RingMember> {
        let counts = self.store.key_counts();
        let current = self.store.revisions.current();
        self.store
            .shards()
            .into_iter()
            .map(|shard| {
                let health = shard.health();
                let usable = health.healthy && !health.needs_resync;
                RingMember {
                    name: shard.name.clone(),
                    endpoint: shard.endpoint.clone(),
                    weight: shard.weight,
                    health: if usable {
                        MemberHealth::Healthy
                    } else {
                        MemberHealth::Unavailable
                    }
                    .into(),
                    key_count: counts.get(&shard.id).copied().unwrap_or(0) as u64,
                    last_error: health.last_error,
                    shard_revision: shard.revision_at(current).0,
                }
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Ring for RingService {
    async fn get_ring(
        &self,
        _request: Request<GetRingRequest>,
    ) -> Result<Response<RingInfo>, Status> {
        let (generation, vnodes) = {
            let membership = self.store.membership();
            (
                u64::from(membership.ring.generation()),
                membership.ring.vnodes(),
            )
        };
        Ok(Response::new(RingInfo {
            generation,
            vnodes,
            members: self.members(),
        }))
    }

    async fn locate(&self, request: Request<LocateRequest>) -> Result<Response<Location>, Status> {
        let key = request.into_inner().key;
        if key.is_empty() {
            return Err(StoreError::KeyNotProvided.into());
        }
        let owner = self.store.owner(&key)?;
        let generation = u64::from(self.store.membership().ring.generation());
        let entry = self.store.index().get(&key).cloned();
        let mut location = Location {
            key,
            member: owner.name.clone(),
            endpoint: owner.endpoint.clone(),
            generation,
            ..Default::default()
        };
        if let Some(entry) = entry {
            if entry.shard != owner.id {
                let holder: Option<ShardId> = Some(entry.shard);
                tracing::warn!(?holder, member = %owner.name, "key held by a shard other than its owner");
            }
            location.present = true;
            location.mod_revision = entry.modified.0;
            location.create_revision = entry.create.0;
            location.version = entry.version;
            location.value_size = u64::from(entry.value_size);
        }
        Ok(Response::new(location))
    }

    async fn get_status(
        &self,
        _request: Request<GetRouterStatusRequest>,
    ) -> Result<Response<RouterStatus>, Status> {
        let store = &self.store;
        let stats = store.revisions.stats();
        Ok(Response::new(RouterStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            revision: stats.current.0,
            compact_revision: stats.compacted.0,
            reserved_revision: store.revisions.reserved().0,
            watchers: store.metrics.watchers(),
            event_log_events: stats.log_events as u64,
            event_log_bytes: stats.log_bytes as u64,
            event_log_oldest_revision: stats.log_oldest.0,
            keys: store.index().len() as u64,
            generation: u64::from(store.membership().ring.generation()),
            members: self.members(),
            serving: store.is_ready(),
        }))
    }
}
