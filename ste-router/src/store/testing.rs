//! A [`Store`] over in-memory shards ([`MemoryShard`]) for unit tests: the
//! write, read, delete, scan and migration paths run in milliseconds, and a
//! test reaches each shard to inject faults or look at what it holds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ste_core::envelope::Envelope;
use ste_core::index::KeyIndexKind;
use ste_core::revision::GlobalRevision;
use ste_core::ring::Member;
use ste_proto::etcd::etcdserverpb as pb;

use super::write::{KeyWrite, WriteOp, WriteOutcome};
use super::{Identity, Store, StoreConfig};
use crate::shard::memory::MemoryShard;
use crate::shard::{Shard, ShardTimeouts};
use crate::state::StateStore;

/// A ready store over memory shards named by the test.
pub struct TestStore {
    /// The store under test.
    pub store: Arc<Store>,
    shards: Arc<Mutex<BTreeMap<String, Arc<MemoryShard>>>>,
}

/// A member whose memory shard the fixture creates on first use.
pub fn member(name: &str) -> Member {
    Member::new(name, format!("memory://{name}"))
}

impl TestStore {
    /// A scanned, ready store whose ring has `names` as members.
    pub async fn new(names: &[&str]) -> TestStore {
        let shards: Arc<Mutex<BTreeMap<String, Arc<MemoryShard>>>> = Arc::default();
        let connect = {
            let shards = shards.clone();
            Arc::new(move |id, member: &Member| {
                let memory = shards
                    .lock()
                    .unwrap()
                    .entry(member.name.clone())
                    .or_insert_with(|| Arc::new(MemoryShard::new()))
                    .clone();
                Ok(Arc::new(Shard::with_client(
                    id,
                    member.name.clone(),
                    member.endpoint.clone(),
                    member.weight,
                    memory,
                )))
            })
        };
        let config = StoreConfig {
            vnodes: 64,
            migration_pause: Duration::ZERO,
            max_request_bytes: 1 << 20,
            shard_max_txn_ops: 4,
            event_log_bytes: 1 << 20,
            revision_block: 1_000,
            shard_timeouts: ShardTimeouts {
                connect: Duration::from_millis(100),
                request: Duration::from_millis(100),
                tls: None,
            },
            key_index: KeyIndexKind::BTree,
        };
        let identity = Identity {
            name: "test".into(),
            cluster_id: 1,
            member_id: 2,
            client_urls: Vec::new(),
            etcd_version: "3.6.0".into(),
        };
        let store = Store::new(
            config,
            names.iter().map(|n| member(n)).collect(),
            0,
            Arc::new(StateStore::in_memory()),
            identity,
            connect,
        )
        .expect("a store over memory shards");
        let store = Arc::new(store);
        let found = store.scan_all(Duration::from_millis(10)).await;
        let start = found.max(GlobalRevision(1));
        store
            .revisions()
            .restart_at(start, GlobalRevision(start.0 + 1_000))
            .unwrap();
        store.mark_if_misplaced().await.unwrap();
        store.set_ready();
        TestStore { store, shards }
    }

    /// The memory shard behind member `name` (created if new).
    pub fn shard(&self, name: &str) -> Arc<MemoryShard> {
        self.shards
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(MemoryShard::new()))
            .clone()
    }

    /// Keys member `name`'s shard holds.
    pub fn keys_on(&self, name: &str) -> Vec<Vec<u8>> {
        self.shard(name)
            .raw_keys()
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    }

    /// The member the ring places `key` on.
    pub fn owner(&self, key: &[u8]) -> String {
        self.store.placement().owner(key).unwrap().name.clone()
    }

    /// Puts `value` under `key` unconditionally; its revision.
    pub async fn put(&self, key: &str, value: &str) -> GlobalRevision {
        match self.write(key, put_op(value), Vec::new()).await {
            WriteOutcome::Applied { revision, .. } => revision,
            other => panic!("put {key}: {other:?}"),
        }
    }

    /// Applies one conditional write and returns its outcome.
    pub async fn write(&self, key: &str, op: WriteOp, compares: Vec<pb::Compare>) -> WriteOutcome {
        self.store
            .write_key(KeyWrite {
                key: key.into(),
                op,
                compares,
            })
            .await
            .unwrap_or_else(|e| panic!("write {key}: {e}"))
    }

    /// The value of `key` now, as a client reads it.
    pub async fn get(&self, key: &str) -> Option<String> {
        self.store
            .get_current(key.as_bytes())
            .await
            .unwrap()
            .map(|kv| String::from_utf8(kv.value.to_vec()).unwrap())
    }
}

/// A plain put of `value`.
pub fn put_op(value: &str) -> WriteOp {
    WriteOp::Put {
        value: value.into(),
        lease: 0,
        ignore_value: false,
        ignore_lease: false,
    }
}

/// The global mod revision of a stored (enveloped) value.
pub fn stored_revision(value: &[u8]) -> GlobalRevision {
    Envelope::decode(value).unwrap().modified
}
