//! Rebuilding the key index from the shards: at start-up (all shards in
//! parallel) and after a shard's state became uncertain (one shard).
//!
//! The envelopes on the shards are the durable truth; the index, the
//! revision maps and the revision counter are derived from them.

use std::sync::Arc;

use super::{Store, shard_ops};
use crate::error::StoreResult;
use crate::shard::{Shard, describe};
use futures_util::future::join_all;
use ste_core::envelope::Envelope;
use ste_core::index::IndexEntry;
use ste_core::revision::{GlobalRevision, ShardRevision};

const PAGE: i64 = 1_000;

/// A copy of a key to delete: on this shard, at this shard mod revision.
type StaleCopy = (Arc<Shard>, Vec<u8>, ShardRevision);

/// What scanning one shard found.
#[derive(Debug, Default)]
pub struct ShardScan {
    /// Every key with an STE envelope, as index entries, in key order.
    pub entries: Vec<(Vec<u8>, IndexEntry)>,
    /// The shard revision the scan read at.
    pub revision: ShardRevision,
    /// The highest global revision in any envelope found.
    pub max_modified: GlobalRevision,
    /// Keys the current ring assigns to another member: left by an
    /// interrupted migration.
    pub misplaced: Vec<Vec<u8>>,
    /// Keys without an STE envelope: written around the router.
    pub foreign: Vec<Vec<u8>>,
    /// The shard's etcd member ID.
    pub member_id: u64,
}

impl Store {
    /// Reads every key of `shard` at one shard revision.
    pub async fn scan_shard(&self, shard: &Shard) -> Result<ShardScan, String> {
        let mut scan = ShardScan::default();
        let mut key = vec![0u8];
        let mut pinned = 0;
        loop {
            let response = shard
                .range(shard_ops::scan_page(
                    key.clone(),
                    PAGE,
                    ShardRevision(pinned),
                ))
                .await
                .map_err(|e| describe(&e.status))?;
            if pinned == 0 {
                let header = response.header.unwrap_or_default();
                pinned = header.revision;
                scan.revision = ShardRevision(pinned);
                scan.member_id = header.member_id;
            }
            let last = response.kvs.last().map(|kv| kv.key.clone());
            for kv in response.kvs {
                match Envelope::decode(&kv.value) {
                    Ok(envelope) => {
                        scan.max_modified = scan.max_modified.max(envelope.modified);
                        let owner = self.placement.committed_owner(&kv.key);
                        if owner.as_deref() != Some(shard.name.as_str()) {
                            scan.misplaced.push(kv.key.clone());
                        }
                        scan.entries.push((
                            kv.key.clone(),
                            IndexEntry {
                                shard: shard.id,
                                create: envelope.create,
                                modified: envelope.modified,
                                version: envelope.version,
                                lease: envelope.lease,
                                value_size: envelope.payload.len() as u32,
                                shard_modified: ShardRevision(kv.mod_revision),
                            },
                        ));
                    }
                    Err(_) => scan.foreign.push(kv.key),
                }
            }
            match last {
                Some(mut next) if response.more => {
                    next.push(0);
                    key = next;
                }
                _ => break,
            }
        }
        Ok(scan)
    }

    /// Scans every shard in parallel, retrying a shard that does not answer
    /// until it does, and loads the index. Returns the highest global
    /// revision found in any envelope.
    pub async fn scan_all(&self, retry: std::time::Duration) -> GlobalRevision {
        let shards = self.placement.shards();
        let scans = shards.iter().map(|shard| async move {
            loop {
                match self.scan_shard(shard).await {
                    Ok(scan) => return (shard.clone(), scan),
                    Err(error) => {
                        tracing::warn!(member = %shard.name, %error, "shard scan failed; retrying");
                        tokio::time::sleep(retry).await;
                    }
                }
            }
        });
        let mut max = GlobalRevision::ZERO;
        let mut stale = Vec::new();
        for (shard, scan) in join_all(scans).await {
            let (found, copies) = self.load_scan(&shard, scan);
            max = max.max(found);
            stale.extend(copies);
        }
        // Nothing is served yet, so no lock is needed to drop stale copies.
        for (shard, key, revision) in stale {
            self.delete_stale_copy(&shard, &key, revision).await;
        }
        max
    }

    /// Deletes a copy of a key left on `shard` by an interrupted migration,
    /// only if it is still the copy we saw (guarded by its mod revision).
    async fn delete_stale_copy(&self, shard: &Arc<Shard>, key: &[u8], revision: ShardRevision) {
        let request = shard_ops::guarded(
            vec![shard_ops::unchanged(key, revision)],
            vec![shard_ops::delete(key.to_vec(), false)],
        );
        match shard.txn(request).await {
            Ok(_) => {
                tracing::info!(member = %shard.name, key = %String::from_utf8_lossy(key), "stale copy removed")
            }
            Err(e) => {
                tracing::warn!(member = %shard.name, error = %describe(&e.status), "could not remove a stale copy")
            }
        }
    }

    /// Puts one shard's scan into the index and resets its revision map.
    ///
    /// A key found on two shards (a migration copied it and died before
    /// deleting the source) keeps the newer copy, or for the same write the
    /// copy on its owner; the other copies are returned (shard, key, shard
    /// mod revision) to be deleted, since lists read every shard.
    fn load_scan(&self, shard: &Arc<Shard>, scan: ShardScan) -> (GlobalRevision, Vec<StaleCopy>) {
        if !scan.misplaced.is_empty() {
            tracing::warn!(
                member = %shard.name,
                keys = scan.misplaced.len(),
                first = %String::from_utf8_lossy(&scan.misplaced[0]),
                "keys on a shard that the ring assigns elsewhere (an interrupted migration?)"
            );
        }
        if !scan.foreign.is_empty() {
            tracing::warn!(
                member = %shard.name,
                keys = scan.foreign.len(),
                first = %String::from_utf8_lossy(&scan.foreign[0]),
                "keys without an STE envelope on a shard (written around the router); ignored"
            );
        }
        tracing::info!(member = %shard.name, keys = scan.entries.len(), shard_revision = %scan.revision, "shard scanned");
        shard.reset_revisions(scan.revision);
        shard.set_member_id(scan.member_id);
        shard.mark_healthy();
        let leased: Vec<(Vec<u8>, i64)> = scan
            .entries
            .iter()
            .filter(|(_, e)| e.lease != 0)
            .map(|(k, e)| (k.clone(), e.lease))
            .collect();
        // Of two copies of one write, the one on its owner stays.
        let losers = self
            .index
            .reload_shard(shard.id, scan.entries, |key, existing, found| {
                existing.modified > found.modified
                    || (existing.modified == found.modified
                        && self.placement.placing_owner(key).as_deref()
                            != Some(shard.name.as_str()))
            });
        for (key, lease) in leased {
            if self.index.shard_of(&key) == Some(shard.id) {
                self.leases.attach(lease, &key);
            }
        }
        let stale: Vec<StaleCopy> = losers
            .into_iter()
            .filter_map(|(key, loser)| {
                let holder = if loser.shard == shard.id {
                    Some(shard.clone())
                } else {
                    self.placement.shard_by_id(loser.shard)
                };
                holder.map(|h| (h, key, loser.shard_modified))
            })
            .collect();
        if !stale.is_empty() {
            tracing::warn!(member = %shard.name, copies = stale.len(), "keys found on two shards; keeping one copy of each");
        }
        (scan.max_modified, stale)
    }

    /// Rebuilds one shard's part of the index after its state became
    /// uncertain. History is cut: every watch ends with the compacted error
    /// and clients relist, since no event can describe what changed.
    pub async fn resync_shard(&self, shard: &Arc<Shard>) -> StoreResult<()> {
        let ordered = shard.write_turn().await;
        let scan = self
            .scan_shard(shard)
            .await
            .map_err(|e| shard.unavailable(e))?;
        let (_, stale) = self.load_scan(shard, scan);
        for (holder, key, revision) in &stale {
            if holder.id == shard.id {
                self.delete_stale_copy(holder, key, *revision).await;
            }
        }
        drop(ordered);
        // Copies on other shards: under their own lock, one at a time, so
        // the lock order never inverts.
        for (holder, key, revision) in &stale {
            if holder.id != shard.id {
                let _theirs = holder.write_turn().await;
                self.delete_stale_copy(holder, key, *revision).await;
            }
        }
        let cut = self.revisions.cut_history().await?;
        shard.resynced();
        tracing::warn!(member = %shard.name, revision = %cut, "shard resynchronised; watches cut");
        Ok(())
    }
}
