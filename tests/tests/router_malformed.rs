//! Malformed and unusual requests: each is sent, byte for byte, to a
//! reference etcd and to the router. Where etcd refuses, the router must
//! refuse with the same gRPC code (and etcd's message where etcd's is a
//! stable "etcdserver: ..." text). Where etcd accepts, the router must either
//! answer the same way or refuse with INVALID_ARGUMENT / UNIMPLEMENTED and a
//! message that says what it supports.
//!
//! Requests go through the raw generated gRPC clients (not etcd-client's
//! builders) so that negative limits, empty keys and odd range ends reach
//! the servers exactly as written.
//!
//! One cluster serves every case, in order (later cases read keys earlier
//! ones wrote); each case is a function in router_malformed/, by the kind
//! of request, and a difference is recorded rather than fatal so that one
//! run lists them all.

// The cases live in router_malformed/; this file stays the target's root
// (scripts/test.sh runs every tests/tests/router_*.rs by name).
#[path = "router_malformed/keys.rs"]
mod keys;
#[path = "router_malformed/pair.rs"]
mod pair;
#[path = "router_malformed/ranges.rs"]
mod ranges;
#[path = "router_malformed/unimplemented.rs"]
mod unimplemented;
#[path = "router_malformed/watches.rs"]
mod watches;
#[path = "router_malformed/writes.rs"]
mod writes;

use ste_tests::{ShardedRouter, TestEtcd};

use crate::pair::{Pair, kv_client};

/// The router runs with this `--max-request-bytes`.
const ROUTER_MAX_REQUEST: usize = 1024;
/// etcd's default `--max-request-bytes` (1.5 MiB) …
const ETCD_MAX_REQUEST: usize = 3 << 19;
/// … and the gRPC overhead both allow on top of it before the transport
/// itself refuses the message (512 KiB for both).
const ETCD_GRPC_OVERHEAD: usize = 512 * 1024;
const ROUTER_GRPC_OVERHEAD: usize = 512 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_etcds_answers() -> anyhow::Result<()> {
    let max = ROUTER_MAX_REQUEST.to_string();
    let router_args = ["--max-request-bytes", max.as_str()];
    let (reference, cluster) = tokio::try_join!(
        TestEtcd::start("ref"),
        ShardedRouter::start(3, &router_args)
    )?;
    let mut pair = Pair {
        etcd: kv_client(&reference.url).await?,
        router: kv_client(&cluster.router.endpoint()).await?,
        failures: Vec::new(),
    };
    keys::non_utf8_keys(&mut pair).await;
    keys::empty_keys(&mut pair).await;
    ranges::odd_ranges_limits_and_revisions(&mut pair).await;
    writes::put_options_that_cannot_apply(&mut pair).await;
    writes::too_large(&mut pair).await;
    writes::transactions_kube_never_sends(&mut pair).await;
    ranges::unserved_range_options(&mut pair).await;
    let mut etcd = reference.client().await?;
    let mut router = cluster.router.client().await?;
    watches::odd_watches(&mut pair, &mut etcd, &mut router).await?;
    unimplemented::maintenance_and_membership_calls(&mut pair, &mut etcd, &mut router).await;

    assert!(
        pair.failures.is_empty(),
        "the router differs from etcd on malformed input:\n{}\nrouter log:\n{}",
        pair.failures.join("\n"),
        cluster.router.log()
    );
    Ok(())
}
