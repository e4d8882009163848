//! Cluster.MemberList: to its clients the router is a one-member cluster.

use std::sync::Arc;

use ste_proto::etcd::etcdserverpb::{self as pb, cluster_server};
use tonic::{Request, Response, Status};

use super::header;
use crate::store::Store;

pub struct Cluster {
    store: Arc<Store>,
}

impl Cluster {
    pub fn new(store: Arc<Store>) -> Self {
        Cluster { store }
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for Cluster {
    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let store = &self.store;
        let identity = store.identity();
        Ok(Response::new(pb::MemberListResponse {
            header: header(store, store.revisions().current()),
            members: vec![pb::Member {
                id: identity.member_id,
                name: identity.name.clone(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: identity.client_urls.clone(),
                is_learner: false,
            }],
        }))
    }
}
