//! Key index benchmarks: `BTreeKeyIndex` against `BeTreeIndex` on workloads
//! shaped like a cluster's pod churn, at 10⁴ … 10⁷ keys.
//!
//! `cargo bench -p ste-core --bench key_index` runs the suite: criterion
//! measures time per operation (per build for the two bulk creates), then
//! two deterministic passes write CSVs for `docs/key-index.md`: memory per
//! key (a counting global allocator) and block transfers per operation in
//! the external-memory model (see `model.rs`).
//!
//! Environment:
//! * `STE_BENCH_QUICK=1`: 10⁴ keys only and short measurements (CI smoke,
//!   well under 2 minutes).
//! * `STE_BENCH_SIZES=10000,100000`: the key counts (default 10⁴–10⁷).
//! * `STE_BENCH_BULK_MAX=1000000`: largest size for the bulk creates, which
//!   rebuild the whole index per sample (default 10⁶).
//! * `STE_BENCH_MODEL_MAX=1000000`: largest size for the memory and
//!   block-transfer passes (default 10⁶).
//! * `STE_BENCH_OUT=DIR`: where the CSVs go (default
//!   `$CARGO_TARGET_DIR/key-index`, else `target/key-index`).

mod alloc;
mod model;
mod ops;
mod workload;

use std::time::Duration;

use criterion::Criterion;
use ste_core::index::KeyIndexKind;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

const KINDS: [KeyIndexKind; 2] = [KeyIndexKind::BTree, KeyIndexKind::BeTree];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    let quick = std::env::var("STE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let sizes: Vec<usize> = match std::env::var("STE_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().replace('_', "").parse().ok())
            .collect(),
        Err(_) if quick => vec![10_000],
        Err(_) => vec![10_000, 100_000, 1_000_000, 10_000_000],
    };
    let bulk_max = env_usize("STE_BENCH_BULK_MAX", 1_000_000);
    let model_max = env_usize("STE_BENCH_MODEL_MAX", 1_000_000);
    let out = std::env::var("STE_BENCH_OUT").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
        format!("{target}/key-index")
    });

    let mut criterion = Criterion::default().sample_size(10);
    criterion = if quick {
        criterion
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(300))
    } else {
        criterion
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
    };
    let mut criterion = criterion.configure_from_args();

    let mut memory = model::Csv::new(
        &out,
        "memory.csv",
        "index,n,bytes_per_key,key_bytes_per_key",
    );
    let mut io = model::Csv::new(
        &out,
        "io.csv",
        "model,workload,n,reads_per_op,writes_per_op,blind_reads_per_op,blind_writes_per_op",
    );
    for &n in &sizes {
        let set = workload::KeySet::new(n);
        if n <= bulk_max {
            ops::bulk_creates(&mut criterion, &set);
        }
        for kind in KINDS {
            let mut index = workload::filled(kind, &set);
            ops::per_op(&mut criterion, kind, index.as_mut(), &set);
        }
        if n <= model_max {
            for kind in KINDS {
                memory.row(&model::memory(kind, &set));
            }
            for row in model::block_transfers(&set) {
                io.row(&row);
            }
        }
    }
    criterion.final_summary();
    eprintln!("key-index CSVs in {out}");
}
