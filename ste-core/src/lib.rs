//! Pure STE logic: no I/O, no async, no clocks.
//!
//! * [`ring`]: the STE placement ring (which shard owns an etcd key).
//! * [`fork`]: decoders for the original prototype's two placement schemes,
//!   for clusters migrating from that fork.
//! * [`keys`]: etcd key layout and Kubernetes name validation.
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

pub mod fork;
pub mod keys;
pub mod ring;

pub use fork::{
    ForkError, ForkPoint, ForkRing, ForkSuffix, fork_point, fork_shard_url, fork_suffix_code,
};
pub use keys::{KeyError, KeyLayout};
pub use ring::{
    DEFAULT_VNODES, Generation, MAX_MEMBER_POINTS, Member, Ring, RingError, key_hash, point_hash,
};
