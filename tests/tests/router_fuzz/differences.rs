//! Every way the router's answers may differ from etcd's, in one place,
//! each with where it is documented or why it is not a difference of the
//! router at all. Anything not listed here is a divergence.
//!
//! - Revisions (`renumber.rs`): the router has its own revision space and
//!   may leave gaps (docs/revisions.md, "Writes"), so its revisions are
//!   renumbered onto etcd's by the order of writes before comparing, and
//!   revisions in requests are translated the other way.
//! - HEADER_IDENTITY: member ID, cluster ID and raft_term are not recorded
//!   (`answer.rs`): the router is a one-member cluster of its own
//!   (docs/router.md, "The etcd API it serves": MemberList).
//! - Lease IDs the server chooses (LeaseGrant with ID 0) are random on
//!   both; they are renumbered like revisions (`renumber.rs`).
//! - Requests the router refuses on purpose (docs/router.md, "Range",
//!   "Txn") are never generated (`generate.rs`).
//! - [`LEASE_REMAINING`], [`LEASE_ORDER`], [`WATCH_AT_COMPACTION`],
//!   [`ETCD_UNSYNCED_WATCH_COMPACTED`] and [`ETCD_PROGRESS_DEFERRED`] below.

use crate::answer::{Answer, WatchItem};

/// A lease's remaining TTL depends on when the request arrives, and the
/// two systems are asked a few milliseconds apart: only its sign is
/// compared (-1 unknown lease, 0 expired, positive alive). The granted TTL
/// is compared exactly. Not a difference of the router: timing.
pub(crate) const LEASE_REMAINING: &str = "lease remaining TTL: sign only";

/// etcd lists leases in the order of a Go map (random): LeaseLeases is
/// compared as a set, sorted after renumbering. Not a difference of the
/// router.
pub(crate) const LEASE_ORDER: &str = "LeaseLeases: as a set";

/// A watch from the compaction revision C where C is a delete: etcd's
/// compaction at C removes the tombstone at C after Compact has answered,
/// so etcd's watch either misses that DELETE event or sends it (without
/// prev_kv, as the read at C - 1 is compacted), depending on timing. The
/// router always sends it. The same difference is checked exactly in the
/// scripted differential test (router_differential/compare.rs,
/// `known_difference`); here the router's DELETE events at C are dropped
/// when etcd did not send them.
pub(crate) const WATCH_AT_COMPACTION: &str =
    "watch from the compaction revision itself, a delete's revision";

/// Applies the differences above to both answers (already in etcd's
/// numbers). `at_compaction` is C (etcd's) for a watch that started at the
/// compaction revision.
pub(crate) fn normalise(
    etcd: &mut Answer,
    router: &mut Answer,
    at_compaction: Option<i64>,
) -> Vec<&'static str> {
    let mut applied = Vec::new();
    for answer in [&mut *etcd, &mut *router] {
        if let Answer::LeaseTimeToLive { remaining, .. } = answer {
            *remaining = remaining.signum();
            applied.push(LEASE_REMAINING);
        }
        if let Answer::LeaseLeases { ids, .. } = answer {
            ids.sort_unstable();
            applied.push(LEASE_ORDER);
        }
    }
    if let (Some(c), Answer::Watch(etcd_items), Answer::Watch(router_items)) =
        (at_compaction, &*etcd, router)
    {
        let etcd_has = |key: &str| {
            etcd_items.iter().any(|i| {
                matches!(i, WatchItem::Event { put: false, kv, .. } if kv.modified == c && kv.key == key)
            })
        };
        let before = router_items.len();
        router_items.retain(|i| match i {
            WatchItem::Event { put: false, kv, .. } if kv.modified == c => etcd_has(&kv.key),
            _ => true,
        });
        if router_items.len() != before {
            applied.push(WATCH_AT_COMPACTION);
        }
    }
    applied
}

/// etcd serves a watch from a past revision as "unsynced" until its
/// background loop (every 100 ms) has sent it the history; a compaction
/// past the watch's next revision in that window cancels it with the
/// compacted error, although it was created at a revision that was not
/// compacted. Whether that happens depends on timing; the router, which
/// serves the history from its event log at once, does not cancel. So
/// when etcd alone canceled such a watch (after sending a prefix of the
/// router's events), the watch's comparison ends there. The opposite, the
/// router alone canceling, is a divergence.
pub(crate) const ETCD_UNSYNCED_WATCH_COMPACTED: &str =
    "etcd canceled a watch still catching up when a compaction passed it";

/// Whether `etcd` and `router` (a watch's new items, in etcd's numbers)
/// are [`ETCD_UNSYNCED_WATCH_COMPACTED`]: etcd canceled with a compaction
/// revision above `from` (the watch's first revision), the router did not,
/// and etcd's events are a prefix of the router's.
pub(crate) fn etcd_unsynced_watch_compacted(
    etcd: &[WatchItem],
    router: &[WatchItem],
    from: i64,
) -> bool {
    let Some(WatchItem::Canceled {
        compact_revision, ..
    }) = etcd.last()
    else {
        return false;
    };
    let router_canceled = router
        .iter()
        .any(|i| matches!(i, WatchItem::Canceled { .. }));
    let sent = &etcd[..etcd.len() - 1];
    *compact_revision > from && !router_canceled && router.starts_with(sent)
}

/// etcd 3.5+ answers a progress request only when every watcher of the
/// stream is synced, and otherwise defers it until it next sends that
/// stream an event (`deferredProgress` in etcd's v3rpc/watch.go), which
/// may be never. The fuzzer asks only watches it knows synced
/// (`Watch::progressable`), yet in about one of 10⁴ requests etcd still
/// does not answer; the router, which has no unsynced state, always
/// answers. When etcd has not answered within [`ETCD_PROGRESS_PATIENCE`]
/// and the router has, the watch's comparison ends there (a late answer
/// from etcd would arrive among later events). The router not answering
/// is a divergence.
pub(crate) const ETCD_PROGRESS_DEFERRED: &str =
    "etcd did not answer a progress request (deferred), the router did";

/// How long etcd gets to answer a progress request before
/// [`ETCD_PROGRESS_DEFERRED`] applies.
pub(crate) const ETCD_PROGRESS_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
