//! Get (one key) and list (a range, possibly paginated and pinned to a
//! revision) — the same request, so the same code.

use ste_proto::etcd::etcdserverpb as pb;
use tonic::Status;

use super::header;
use crate::store::Store;

/// Serves a Range (a get or a list).
///
/// Errors: etcd's validation errors and the router's refusals
/// (`validate::range`), and the read path's.
pub async fn range(store: &Store, request: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
    super::validate::range(&request)?;
    let (current, result) = store.range(&request).await?;
    Ok(pb::RangeResponse {
        header: header(store, current),
        kvs: result.kvs,
        more: result.more,
        count: result.count,
    })
}
