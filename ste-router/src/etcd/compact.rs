//! Compact: raise the global compaction point, then compact each shard at
//! the shard revision that matches it, so shard history and the router's
//! revision maps shrink together.

use futures_util::future::join_all;
use ste_core::revision::GlobalRevision;
use ste_proto::etcd::etcdserverpb as pb;
use tonic::Status;

use super::header;
use crate::error::{COMPACTED, StoreError};
use crate::store::Store;

pub async fn compact(
    store: &Store,
    request: pb::CompactionRequest,
) -> Result<pb::CompactionResponse, Status> {
    store.check_ready()?;
    let revision = GlobalRevision(request.revision);
    if revision > store.revisions().current() {
        return Err(StoreError::FutureRevision.into());
    }
    store.revisions().compact(revision)?;
    let shards = store.placement().shards();
    let calls = shards.iter().map(|shard| async move {
        let shard_revision = shard.revision_at(revision);
        shard.compact_revisions(revision);
        let result = shard.compact(shard_revision, request.physical).await;
        (shard, result)
    });
    for (shard, result) in join_all(calls).await {
        match result {
            Ok(()) => {}
            // Nothing was written to the shard since its last compaction.
            Err(e) if e.status.message() == COMPACTED => {}
            Err(e) => {
                // The global point has moved; the shard keeps some extra
                // history until the next compaction, which is harmless.
                tracing::warn!(member = %shard.name, error = %e.status.message(), "shard compaction failed");
            }
        }
    }
    Ok(pb::CompactionResponse {
        header: header(store, store.revisions().current()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestStore;

    fn at(revision: i64) -> pb::CompactionRequest {
        pb::CompactionRequest {
            revision,
            physical: false,
        }
    }

    /// Found by the differential fuzzer (tests/tests/router_fuzz.rs): a
    /// fresh router refused Compact(1) as compacted. A fresh etcd has no
    /// compaction point, accepts it, and refuses only the second one.
    #[tokio::test]
    async fn compact_at_revision_1_of_a_fresh_store_is_accepted_once() {
        let t = TestStore::new(&["a", "b"]).await;
        assert_eq!(t.store.revisions().current(), GlobalRevision(1));
        compact(&t.store, at(1))
            .await
            .expect("a fresh store accepts Compact(1)");
        let again = compact(&t.store, at(1)).await.unwrap_err();
        assert_eq!(again.message(), COMPACTED);
    }

    /// Found by the differential fuzzer too: etcd's compaction point
    /// starts at -1, so a fresh etcd accepts Compact(0) once (and then
    /// Compact(1)); the router refused it.
    #[tokio::test]
    async fn compact_at_revision_0_of_a_fresh_store_is_accepted_once() {
        let t = TestStore::new(&["a"]).await;
        compact(&t.store, at(0))
            .await
            .expect("a fresh store accepts Compact(0)");
        let again = compact(&t.store, at(0)).await.unwrap_err();
        assert_eq!(again.message(), COMPACTED);
        compact(&t.store, at(1)).await.expect("then Compact(1)");
        assert_eq!(
            t.store.revisions().stats().compacted,
            GlobalRevision(1),
            "status shows the compaction point"
        );
    }
}
