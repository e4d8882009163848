//! Lease operations on the data: grant (persisted), revoke (the attached
//! keys deleted at one revision) and expiry. The lease table itself is
//! `leases.rs`; the etcd Lease service is `crate::etcd::lease`.

use std::sync::Arc;
use std::time::Duration;

use ste_core::revision::GlobalRevision;

use super::Store;
use super::leases::{MAX_TTL, MIN_TTL};
use super::multi_delete::Victims;
use crate::error::StoreError;
use crate::shutdown::Shutdown;
use crate::state::LeaseRecord;

impl Store {
    /// Grants lease `id` (0: pick a fresh ID) of `ttl` seconds and persists
    /// it, so it survives a router restart. Returns the ID and TTL, which
    /// is at least [`MIN_TTL`] as etcd's is.
    ///
    /// Errors: etcd's `LeaseTtlTooLarge` above [`MAX_TTL`], `LeaseExists`
    /// for an ID in use, or the state store's.
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<(i64, i64), StoreError> {
        if ttl > MAX_TTL {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        let ttl = ttl.max(MIN_TTL);
        let id = if id == 0 { self.leases.new_id() } else { id };
        if !self.leases.insert(id, ttl) {
            return Err(StoreError::LeaseExists);
        }
        if let Err(error) = self
            .state
            .update(|s| s.leases.push(LeaseRecord { id, ttl }))
            .await
        {
            self.leases.remove(id);
            return Err(error);
        }
        Ok((id, ttl))
    }

    /// Revokes a lease: its keys are deleted at one revision, as etcd
    /// deletes them in one Raft entry. Returns that revision, or `None` if
    /// no key was attached.
    ///
    /// Errors: `LeaseNotFound`, or the multi-key delete's (then nothing
    /// was deleted and the lease stays).
    pub async fn lease_revoke(
        self: &Arc<Self>,
        id: i64,
    ) -> Result<Option<GlobalRevision>, StoreError> {
        let deleted = self.delete_keys(Victims::Lease(id)).await?;
        self.state
            .update(|s| s.leases.retain(|l| l.id != id))
            .await?;
        Ok(deleted.revision)
    }

    /// Revokes expired leases every `interval` until `shutdown`.
    pub async fn expire_leases(self: Arc<Self>, interval: Duration, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => return,
            }
            if !self.is_ready() {
                continue;
            }
            for id in self.leases.expired() {
                if let Err(error) = self.lease_revoke(id).await {
                    tracing::warn!(lease = id, %error, "revoking an expired lease failed; will retry");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestStore;

    /// Found by checking the fuzzer's lease grants against etcd: the router
    /// granted a 1 s lease as 1 s (and 0 s as 0, expiring at once), etcd
    /// raises every TTL below its minimum to 2 s.
    #[tokio::test]
    async fn a_ttl_below_etcds_minimum_is_granted_as_the_minimum() {
        let t = TestStore::new(&["a"]).await;
        for (id, asked) in [(7, 1), (8, 0), (9, -5)] {
            assert_eq!(
                t.store.lease_grant(id, asked).await.unwrap(),
                (id, MIN_TTL),
                "TTL {asked}"
            );
            assert_eq!(t.store.leases().info(id).unwrap().granted, MIN_TTL);
        }
        assert_eq!(t.store.lease_grant(10, 3).await.unwrap(), (10, 3));
    }
}
