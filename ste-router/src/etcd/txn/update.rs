//! kube-apiserver's update (`GuaranteedUpdate` through `OptimisticPut`):
//! `If(mod_revision(K) == R) Then(put K) Else(get K)`. Fails when K changed
//! since R; the failure branch returns K's current value, which
//! kube-apiserver retries the update with.

use std::sync::Arc;

use ste_proto::etcd::etcdserverpb as pb;
use tonic::Status;

use crate::store::Store;

/// Serves an update.
pub(super) async fn serve(
    store: &Arc<Store>,
    request: pb::TxnRequest,
) -> Result<pb::TxnResponse, Status> {
    super::conditional_put(store, request).await
}
