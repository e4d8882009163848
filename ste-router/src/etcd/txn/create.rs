//! kube-apiserver's create (`OptimisticPut` with revision 0):
//! `If(mod_revision(K) == 0) Then(put K)`, optionally `Else(get K)`.
//! Succeeds only if K is absent; a failure reads K (AlreadyExists).

use std::sync::Arc;

use ste_proto::etcd::etcdserverpb as pb;
use tonic::Status;

use crate::store::Store;

/// Serves a create.
pub(super) async fn serve(
    store: &Arc<Store>,
    request: pb::TxnRequest,
) -> Result<pb::TxnResponse, Status> {
    super::conditional_put(store, request).await
}
