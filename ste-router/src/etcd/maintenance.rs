//! Maintenance.Status and Alarm, answered for the router as a whole: sizes
//! summed over shards, alarms merged.

use std::sync::Arc;

use futures_util::future::join_all;
use ste_proto::etcd::etcdserverpb::{self as pb, alarm_request, maintenance_server};
use tonic::{Request, Response, Status};

use super::header;
use crate::error::StoreError;
use crate::shard::describe;
use crate::store::Store;

pub struct Maintenance {
    store: Arc<Store>,
}

impl Maintenance {
    pub fn new(store: Arc<Store>) -> Self {
        Maintenance { store }
    }
}

#[tonic::async_trait]
impl maintenance_server::Maintenance for Maintenance {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let store = &self.store;
        let shards = store.placement().shards();
        // A shard known to be down is not asked: a hung one would hold the
        // answer for a whole shard timeout (etcd answers Status locally, and
        // clients give it a short deadline). The health checker probes it.
        let results = join_all(shards.iter().map(|s| async move {
            let health = s.health();
            let result = if health.healthy {
                s.status().await.map_err(|e| describe(&e.status))
            } else {
                Err(health.last_error)
            };
            (s, result)
        }))
        .await;
        let mut response = pb::StatusResponse {
            version: store.identity().etcd_version.clone(),
            leader: store.identity().member_id,
            raft_term: 1,
            ..Default::default()
        };
        for (shard, result) in results {
            match result {
                Ok(status) => {
                    response.db_size += status.db_size;
                    response.db_size_in_use += status.db_size_in_use;
                    response.errors.extend(
                        status
                            .errors
                            .into_iter()
                            .map(|e| format!("{}: {e}", shard.name)),
                    );
                }
                Err(reason) => response.errors.push(format!(
                    "shard {} ({}) unavailable: {reason}",
                    shard.name, shard.endpoint
                )),
            }
        }
        if !store.is_ready() {
            response
                .errors
                .push("ste-router is scanning shards and not serving yet".into());
        }
        let current = store.revisions().current();
        response.header = header(store, current);
        response.raft_index = current.0.max(0) as u64;
        response.raft_applied_index = current.0.max(0) as u64;
        Ok(Response::new(response))
    }

    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let store = &self.store;
        let request = request.into_inner();
        let action = request.action();
        if action == alarm_request::AlarmAction::Activate {
            return Err(StoreError::Unsupported(
                "ste-router: alarms are raised by the shards, not through the router".into(),
            )
            .into());
        }
        let shards = store.placement().shards();
        let calls = shards.iter().map(|shard| {
            let request = pb::AlarmRequest {
                action: request.action,
                member_id: 0,
                alarm: request.alarm,
            };
            async move {
                let result = match action {
                    // Disarming goes to every shard's own member ID.
                    alarm_request::AlarmAction::Deactivate => shard.disarm(request.alarm).await,
                    _ => shard.alarms().await,
                };
                (shard, result)
            }
        });
        let mut alarms = Vec::new();
        for (shard, result) in join_all(calls).await {
            let response = result.map_err(|e| shard.client_error(e))?;
            alarms.extend(response.alarms.into_iter().map(|a| pb::AlarmMember {
                member_id: store.identity().member_id,
                alarm: a.alarm,
            }));
        }
        alarms.dedup_by_key(|a| a.alarm);
        Ok(Response::new(pb::AlarmResponse {
            header: header(store, store.revisions().current()),
            alarms,
        }))
    }
}
