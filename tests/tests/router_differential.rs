//! Differential test: one scripted sequence of the exact etcd request shapes
//! kube-apiserver sends, run against a reference etcd and against the router
//! over three shards; every response is recorded, normalised, and compared
//! after one consistent, monotonic renumbering of revisions.
//!
//! Revisions are the one thing allowed to differ: the router owns its own
//! revision space, so absolute numbers are not part of the contract, only
//! their order. The renumbering is built while walking both recordings in
//! step: every revision a response reveals (header revision of a write or a
//! read, create/mod revision, compact_revision) maps router → etcd, and the
//! map must stay a strictly increasing function. Member IDs, cluster IDs and
//! raft_term are not recorded at all: the router is one logical member of
//! its own cluster, by design. Header revisions of reads are compared too:
//! on both systems they are the current revision, i.e. the last write's.
//!
//! Watch events are compared flattened (how they are batched into responses
//! is not part of the contract). One difference is kept on purpose and
//! checked explicitly: see [`compare::known_difference`].
//!
//! `STE_DIFF_DUMP=1 cargo test ... -- --nocapture` prints both recordings.

// The parts live in router_differential/; this file stays the target's
// root (scripts/test.sh runs every tests/tests/router_*.rs by name).
#[path = "router_differential/compare.rs"]
mod compare;
#[path = "router_differential/outcome.rs"]
mod outcome;
#[path = "router_differential/run.rs"]
mod run;
#[path = "router_differential/script.rs"]
mod script;

use ste_tests::keys::PODS;
use ste_tests::{ShardedRouter, TestEtcd};

use crate::compare::compare;
use crate::script::script;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_answers_kube_apiserver_requests_like_etcd() -> anyhow::Result<()> {
    let (reference, cluster) =
        tokio::try_join!(TestEtcd::start("ref"), ShardedRouter::start(3, &[]))?;
    let (etcd_client, router_client) =
        tokio::try_join!(reference.client(), cluster.router.client())?;
    let (etcd_steps, router_steps) =
        tokio::join!(script("etcd", etcd_client), script("router", router_client));
    if std::env::var_os("STE_DIFF_DUMP").is_some() {
        for (e, r) in etcd_steps.iter().zip(&router_steps) {
            println!(
                "{}\n  etcd:   {:?}\n  router: {:?}",
                e.label, e.outcome, r.outcome
            );
        }
    }
    compare(&etcd_steps, &router_steps);

    // The keys really are spread: every shard holds some.
    for shard in &cluster.shards {
        let held = shard.count_under(PODS).await?;
        assert!(held > 0, "shard {} holds none of the pods", shard.name);
    }
    Ok(())
}
