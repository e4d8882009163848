//! Between what shards store (envelopes under shard revisions) and what
//! clients see (plain values under global revisions).

use ste_core::envelope::{Envelope, HEADER_LEN};
use ste_core::revision::GlobalRevision;
use ste_proto::etcd::mvccpb;

use crate::error::StoreError;

/// The client's view of a key stored on a shard: the envelope's global
/// revisions and payload. `shard` names the shard for the error message.
///
/// The payload is a slice of the shard's answer (`KeyValue.value` is
/// `bytes::Bytes`, see `proto/build.rs`): no copy and no allocation per
/// key, which matters for a page of a list (hundreds of values).
pub fn client_kv(stored: mvccpb::KeyValue, shard: &str) -> Result<mvccpb::KeyValue, StoreError> {
    let (create, modified, version, lease) = match Envelope::decode(&stored.value) {
        Ok(e) => (e.create, e.modified, e.version, e.lease),
        Err(e) => {
            return Err(StoreError::Internal(format!(
                "shard {shard} holds key {:?} that STE did not write ({e}); \
                 shards must be written only through the router",
                String::from_utf8_lossy(&stored.key)
            )));
        }
    };
    let value = stored.value.slice(HEADER_LEN..);
    Ok(mvccpb::KeyValue {
        create_revision: create.0,
        mod_revision: modified.0,
        version,
        lease,
        value,
        key: stored.key,
    })
}

/// The tombstone a DELETE event carries: the key and the deletion's revision.
pub fn deleted_kv(key: Vec<u8>, revision: GlobalRevision) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key,
        mod_revision: revision.0,
        ..Default::default()
    }
}

/// A PUT watch event for `kv`, with the version it replaced.
pub fn put_event(kv: mvccpb::KeyValue, prev: Option<mvccpb::KeyValue>) -> mvccpb::Event {
    mvccpb::Event {
        r#type: mvccpb::event::EventType::Put as i32,
        kv: Some(kv),
        prev_kv: prev,
    }
}

/// A DELETE watch event for the tombstone `kv`, with the deleted version.
pub fn delete_event(kv: mvccpb::KeyValue, prev: Option<mvccpb::KeyValue>) -> mvccpb::Event {
    mvccpb::Event {
        r#type: mvccpb::event::EventType::Delete as i32,
        kv: Some(kv),
        prev_kv: prev,
    }
}
