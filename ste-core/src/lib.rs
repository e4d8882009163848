//! Pure STE logic: no I/O, no async, no clocks.
//!
//! * [`ring`]: the STE placement ring (which shard owns an etcd key).
//! * [`fork`]: decoders for the original prototype's two placement schemes,
//!   for clusters migrating from that fork.
//! * [`keys`]: etcd key layout and Kubernetes name validation.
//!
//! The router's bookkeeping, also pure:
//!
//! * [`revision`]: the global and per-shard revision newtypes.
//! * [`envelope`]: the stable on-shard value format carrying global metadata.
//! * [`keyrange`]: etcd's `(key, range_end)` range semantics.
//! * [`index`]: the in-memory key index (key -> shard and metadata).
//! * [`revmap`]: per-shard global -> shard revision map for historical reads.
//! * [`events`]: the byte-bounded watch event log.
//! * [`sequencer`]: global revision allocation and completion tracking.
//!
//! Shared by the binaries' command lines and output, also pure:
//!
//! * [`units`]: duration flags (`2s`) and byte sizes for people (`1.5Gi`).
//! * [`table`]: kubectl's table layout, used by every table printed.
//!
//! ```
//! use ste_core::{DEFAULT_VNODES, KeyLayout, Member, Ring};
//!
//! let mut ring = Ring::new(DEFAULT_VNODES)?;
//! for (name, ip) in [("node-a", "10.0.0.1"), ("node-b", "10.0.0.2")] {
//!     ring.add_member(Member::new(name, format!("https://{ip}:2379")))?;
//! }
//! let key = KeyLayout::default().pod_key("default", "web-0")?;
//! let owner = ring.locate(key.as_bytes()).expect("ring has members");
//! assert!(owner.name == "node-a" || owner.name == "node-b");
//! assert_eq!(ring.generation().0, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod envelope;
pub mod events;
pub mod fork;
pub mod index;
pub mod keyrange;
pub mod keys;
pub mod migration;
pub mod revision;
pub mod revmap;
pub mod ring;
pub mod sequencer;
pub mod table;
pub mod units;

pub use envelope::{Envelope, EnvelopeError, FORMAT_VERSION, HEADER_LEN, MAGIC};
pub use events::{Compacted, EventLog, EventLogError, LogEvent};
pub use fork::{
    ForkError, ForkPoint, ForkRing, ForkSuffix, fork_point, fork_shard_url, fork_suffix_code,
};
pub use index::{
    BTreeKeyIndex, BeTreeConfig, BeTreeIndex, IndexEntry, KeyIndex, KeyIndexKind, ShardId,
};
pub use keyrange::{KeyRange, prefix_end};
pub use keys::{KeyError, KeyLayout};
pub use revision::{GlobalRevision, ShardRevision};
pub use revmap::{RevMapError, RevisionMap};
pub use ring::{
    DEFAULT_VNODES, Generation, MAX_MEMBER_POINTS, Member, Ring, RingError, key_hash, point_hash,
};
pub use sequencer::{MAX_RESERVATION, NeedsReservation, Sequencer, SequencerError};
