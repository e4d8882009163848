//! The shard health loop: probes every shard, marks it available or not,
//! and resynchronises a shard whose state became uncertain or that came
//! back empty.

use std::sync::Arc;
use std::time::Duration;

use crate::shard;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Probes every shard; marks it available or not, and resynchronises a
/// shard whose state became uncertain once it answers again.
///
/// A shard that answers as a different etcd member, or with a revision
/// below one the router already wrote at, has restarted empty (a new
/// epoch): its keys are gone. It is resynchronised like an uncertain shard:
/// its part of the index is rebuilt (empty) and every watch ends with the
/// compacted error, so kube-apiserver relists and controllers recreate
/// the lost pods.
///
/// Runs every `interval`, and at once when a shard newly needs a resync
/// (`resync_wanted`: a request found the shard's data lost, or its outcome
/// uncertain), so the shard refuses requests for no longer than the resync
/// takes.
pub async fn check_shards(
    store: Arc<Store>,
    interval: Duration,
    resync_wanted: Arc<tokio::sync::Notify>,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A probe gets what any request to a shard gets (`--shard-timeout`): a
    // shard that is merely slow to answer while the router is busy (a burst
    // of clients) must not be marked unavailable, which refuses every
    // request for its keys.
    let timeout = store.config().shard_timeouts.request;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = resync_wanted.notified() => {}
            _ = shutdown.wait() => return,
        }
        let shards = store.placement().shards();
        let probes = shards.iter().map(|shard| {
            // Taken before the probe is sent: the shard acknowledged these
            // writes, so its answer must be at least this. A write that
            // completes while the probe is out is not a sign of anything.
            let written_at = shard.revision_at(store.revisions().current());
            async move {
                let answer = tokio::time::timeout(timeout, shard.status()).await;
                (shard, written_at, answer)
            }
        });
        for (shard, written_at, answer) in futures_util::future::join_all(probes).await {
            match answer {
                Ok(Ok(status)) => {
                    shard.mark_healthy();
                    let header = status.header.unwrap_or_default();
                    if shard.member_id() != 0 && header.member_id != shard.member_id() {
                        shard.mark_needs_resync("the shard came back as a new etcd member (it restarted empty): its keys are lost");
                    } else if header.revision < written_at.0 {
                        shard.mark_needs_resync("the shard's revision went backwards (restarted empty): its keys are lost");
                    }
                    if shard.health().needs_resync
                        && let Err(error) = store.resync_shard(shard).await
                    {
                        tracing::warn!(member = %shard.name, %error, "resync failed; will retry");
                    }
                }
                Ok(Err(error)) => shard.mark_unavailable(&shard::describe(&error.status)),
                Err(_) => shard.mark_unavailable("no answer to a status probe"),
            }
        }
    }
}
