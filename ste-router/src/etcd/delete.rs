//! DeleteRange: one key through the conditional write path, a range of
//! keys (etcdctl del --prefix) under one revision across shards.

use std::sync::Arc;
use ste_core::keyrange::KeyRange;
use ste_proto::etcd::etcdserverpb as pb;
use tonic::Status;

use super::header;
use crate::store::Store;
use crate::store::multi_delete::Victims;
use crate::store::write::{KeyWrite, WriteOp, WriteOutcome};

/// Serves a DeleteRange.
///
/// Errors: etcd's validation errors, and the write paths'.
pub async fn delete_range(
    store: &Arc<Store>,
    request: pb::DeleteRangeRequest,
) -> Result<pb::DeleteRangeResponse, Status> {
    super::validate::key(&request.key)?;
    let range = KeyRange::from_request(&request.key, &request.range_end);
    let (revision, deleted, prevs) = if range.is_single_key() {
        let outcome = store
            .write_key(KeyWrite {
                key: request.key,
                op: WriteOp::Delete,
                compares: Vec::new(),
            })
            .await?;
        match outcome {
            WriteOutcome::Applied { revision, prev } => {
                (Some(revision), 1, prev.into_iter().collect())
            }
            _ => (None, 0, Vec::new()),
        }
    } else {
        let deleted = store.delete_keys(Victims::Range(range)).await?;
        (deleted.revision, deleted.count(), deleted.prev_kvs)
    };
    Ok(pb::DeleteRangeResponse {
        header: header(
            store,
            revision.unwrap_or_else(|| store.revisions().current()),
        ),
        deleted,
        prev_kvs: if request.prev_kv { prevs } else { Vec::new() },
    })
}
