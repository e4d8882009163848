//! Leases, kept by the router: shards never see them, because a shard that
//! expired keys on its own would write without a global revision. Expiry
//! deletes the attached keys at one revision (store/multi_delete.rs).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// etcd's largest lease TTL (9,000,000,000 s).
pub const MAX_TTL: i64 = 9_000_000_000;

/// etcd's smallest lease TTL with its default `--election-timeout` (1000
/// ms) and `--heartbeat-interval` (100 ms): ⌈3/2 × 10 election ticks × 100
/// ms⌉ = 2 s. etcd's lessor grants any shorter TTL (0 and negative ones
/// included) as this, so a lease outlives a leader election.
pub const MIN_TTL: i64 = 2;

#[derive(Debug)]
struct Lease {
    granted_ttl: i64,
    expires: Instant,
    keys: BTreeSet<Vec<u8>>,
}

/// The granted leases and the keys attached to each.
#[derive(Debug, Default)]
pub struct Leases {
    inner: Mutex<HashMap<i64, Lease>>,
}

/// What LeaseTimeToLive reports.
#[derive(Debug, Clone)]
pub struct LeaseInfo {
    /// Seconds left before it expires (rounded up).
    pub remaining: i64,
    /// The TTL it was granted with, in seconds.
    pub granted: i64,
    /// The keys attached to it, in key order.
    pub keys: Vec<Vec<u8>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Lease>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when lease `id` is granted and not expired-and-revoked.
    pub fn exists(&self, id: i64) -> bool {
        self.lock().contains_key(&id)
    }

    /// A fresh lease ID: positive, not in use.
    pub fn new_id(&self) -> i64 {
        use std::hash::{BuildHasher, Hasher};
        let leases = self.lock();
        loop {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(Instant::now().elapsed().as_nanos());
            let id = (hasher.finish() >> 1) as i64;
            if id != 0 && !leases.contains_key(&id) {
                return id;
            }
        }
    }

    /// Adds a lease; false if the ID is taken.
    pub fn insert(&self, id: i64, ttl: i64) -> bool {
        let mut leases = self.lock();
        if leases.contains_key(&id) {
            return false;
        }
        leases.insert(
            id,
            Lease {
                granted_ttl: ttl,
                expires: Instant::now() + Duration::from_secs(ttl.max(0) as u64),
                keys: BTreeSet::new(),
            },
        );
        true
    }

    /// Removes a lease, returning the keys attached to it.
    pub fn remove(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.lock()
            .remove(&id)
            .map(|l| l.keys.into_iter().collect())
    }

    /// The keys attached to a lease, or None if there is no such lease.
    /// The keys attached to lease `id`, or `None` if there is no such lease.
    pub fn keys(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.lock()
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
    }

    /// Attaches `key` to lease `id` (0: no lease; an unknown lease: ignored).
    pub fn attach(&self, id: i64, key: &[u8]) {
        if id == 0 {
            return;
        }
        if let Some(lease) = self.lock().get_mut(&id) {
            lease.keys.insert(key.to_vec());
        }
    }

    /// Detaches `key` from lease `id` (a put with another lease, a delete).
    pub fn detach(&self, id: i64, key: &[u8]) {
        if id == 0 {
            return;
        }
        if let Some(lease) = self.lock().get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// Renews a lease for its full TTL; its TTL, or None if it is gone.
    pub fn keep_alive(&self, id: i64) -> Option<i64> {
        let mut leases = self.lock();
        let lease = leases.get_mut(&id)?;
        lease.expires = Instant::now() + Duration::from_secs(lease.granted_ttl.max(0) as u64);
        Some(lease.granted_ttl)
    }

    /// What LeaseTimeToLive reports for `id`, if it exists.
    pub fn info(&self, id: i64) -> Option<LeaseInfo> {
        let leases = self.lock();
        let lease = leases.get(&id)?;
        let remaining = lease.expires.saturating_duration_since(Instant::now());
        Some(LeaseInfo {
            remaining: remaining.as_secs_f64().ceil() as i64,
            granted: lease.granted_ttl,
            keys: lease.keys.iter().cloned().collect(),
        })
    }

    /// Every lease ID, ascending (LeaseLeases).
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases whose time is up.
    pub fn expired(&self) -> Vec<i64> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_their_lease() {
        let leases = Leases::default();
        let id = leases.new_id();
        assert!(leases.insert(id, 60));
        assert!(!leases.insert(id, 60), "IDs are unique");
        leases.attach(id, b"a");
        leases.attach(id, b"b");
        leases.detach(id, b"a");
        leases.attach(0, b"ignored");
        let info = leases.info(id).unwrap();
        assert_eq!(info.keys, vec![b"b".to_vec()]);
        assert_eq!(info.granted, 60);
        assert!(info.remaining > 0 && info.remaining <= 60);
        assert_eq!(leases.keep_alive(id), Some(60));
        assert!(leases.expired().is_empty());
        assert_eq!(leases.remove(id), Some(vec![b"b".to_vec()]));
        assert!(!leases.exists(id));
    }

    #[test]
    fn zero_ttl_expires_at_once() {
        let leases = Leases::default();
        leases.insert(5, 0);
        assert_eq!(leases.expired(), vec![5]);
    }
}
