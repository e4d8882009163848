//! The shared fixture of STE's integration tests: real ste-agent processes
//! with real tmpfs mounts and real etcd, on loopback addresses and free
//! ports, torn down completely on drop (processes killed, mounts removed,
//! temp dirs deleted) even when a test panics.

pub mod agent;
pub mod answers;
pub mod cluster;
pub mod control_plane;
pub mod etcd;
pub mod keys;
pub mod krew;
pub mod kube;
pub mod metrics;
pub mod pki;
pub mod plugin;
pub mod poll;
pub mod procs;
pub mod reflection;
pub mod ring;
pub mod router;
pub mod watch;
pub mod web;

pub use agent::{AgentOptions, TestAgent};
pub use cluster::TestCluster;
pub use control_plane::ControlPlane;
pub use etcd::TestEtcd;
pub use poll::eventually;
pub use router::{ShardedRouter, TestRouter};
