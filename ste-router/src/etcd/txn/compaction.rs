//! kube-apiserver's compactor (`k8s.io/apiserver/pkg/storage/etcd3/compact.go`):
//! `If(version(compact_rev_key) == V) Then(put compact_rev_key) Else(get
//! compact_rev_key)`: whichever apiserver wins the put compacts, the others
//! read the winner's revision.

use std::sync::Arc;

use ste_proto::etcd::etcdserverpb as pb;
use tonic::Status;

use crate::store::Store;

/// Serves the compactor's conditional put.
pub(super) async fn serve(
    store: &Arc<Store>,
    request: pb::TxnRequest,
) -> Result<pb::TxnResponse, Status> {
    super::conditional_put(store, request).await
}
