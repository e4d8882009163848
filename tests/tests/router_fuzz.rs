//! Model-based differential fuzzer: seeded random sequences of etcd
//! requests (Put, kube-apiserver's Txn shapes and the general single-key
//! Txn, DeleteRange, Range with limit/revision/count_only/keys_only and
//! every range_end form, Compact, Watch create/cancel/progress, lease
//! grant/revoke/keep-alive/time-to-live/list) sent one at a time to the
//! router over three shards and to one real etcd; every answer is compared
//! after renumbering the router's revisions and lease IDs onto etcd's, and
//! every watch's events are compared as they arrive. The differences that
//! are allowed are listed in one place: `router_fuzz/differences.rs`.
//!
//! Environment:
//! - `STE_DIFF_REQUESTS`: requests per sequence (default 2000);
//! - `STE_DIFF_SEED`: the first sequence's seed (default: random, printed);
//! - `STE_DIFF_SEQUENCES`: sequences to run, with seeds seed, seed + 1, ...
//!   (default 1), each against a fresh etcd and router;
//! - `STE_DIFF_TRACE`: set to print every request with its step number.
//!
//! A divergence fails with the seed, the step, the request and both
//! answers, and the variables that replay it. Replay is exact unless one of
//! etcd's timing artefacts (differences.rs) changed which watches stay
//! open. The long run (10⁵ requests; the release router first, the test
//! starts the binary next to it): `cargo build --release -p ste-router
//! --bins && STE_DIFF_REQUESTS=25000 STE_DIFF_SEQUENCES=4 cargo test
//! --release -p ste-tests --test router_fuzz -- --nocapture`.

#[path = "router_fuzz/answer.rs"]
mod answer;
#[path = "router_fuzz/differences.rs"]
mod differences;
#[path = "router_fuzz/generate.rs"]
mod generate;
#[path = "router_fuzz/model.rs"]
mod model;
#[path = "router_fuzz/renumber.rs"]
mod renumber;
#[path = "router_fuzz/request.rs"]
mod request;
#[path = "router_fuzz/sequence.rs"]
mod sequence;
#[path = "router_fuzz/watches.rs"]
mod watches;

use std::time::Instant;

use ste_tests::{ShardedRouter, TestEtcd};

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
        Err(_) => default,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_answers_random_request_sequences_like_etcd() -> anyhow::Result<()> {
    let requests = env_number("STE_DIFF_REQUESTS", 2000) as usize;
    let sequences = env_number("STE_DIFF_SEQUENCES", 1);
    let first_seed = env_number("STE_DIFF_SEED", fastrand::u64(..));
    let started = Instant::now();
    let mut total = 0;
    for seed in (0..sequences).map(|i| first_seed.wrapping_add(i)) {
        println!("router_fuzz: seed {seed}, {requests} requests (STE_DIFF_SEED={seed} replays it)");
        let sequence_started = Instant::now();
        // A generous shard timeout: on a loaded machine a shard's status
        // probe can take over the default 2 s, and the router would then
        // (rightly) answer UNAVAILABLE; that is not what this test is about.
        let (reference, cluster) = tokio::try_join!(
            TestEtcd::start("ref"),
            ShardedRouter::start(3, &["--shard-timeout", "20s"])
        )?;
        let (etcd, router) = tokio::try_join!(reference.client(), cluster.router.client())?;
        match sequence::run(seed, requests, etcd, router).await {
            Ok(counts) => {
                total += counts.requests;
                println!(
                    "router_fuzz: seed {seed}: {} requests in {:.1?}, all alike\n  by kind {:?}\n  etcd's answers {:?}\n  normalised {:?}",
                    counts.requests,
                    sequence_started.elapsed(),
                    counts.by_kind,
                    counts.outcomes,
                    counts.normalised
                );
            }
            Err(sequence::Divergence(report)) => {
                panic!("router differs from etcd: {report}")
            }
        }
    }
    println!(
        "router_fuzz: {total} requests in {sequences} sequences, {:.1?}",
        started.elapsed()
    );
    Ok(())
}
