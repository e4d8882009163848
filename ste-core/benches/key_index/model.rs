//! The deterministic passes: memory per key and block transfers per
//! operation, written as CSV rows.
//!
//! Block transfers: both indexes are modelled by `BeTreeIndex` with its
//! external-memory accounting on and nodes of ~4 KiB (`B` = 40 keys of a
//! ~45-byte pod key + 48-byte entry): at ε = 1 that tree has no buffers and
//! *is* a B+-tree with 4 KiB nodes, the model of `BTreeMap` (std's nodes are
//! smaller, but a block-sized B-tree is the DAM optimum and the textbook
//! baseline); at ε = 0.5 it is the Bε-tree with the same block size.

use std::hint::black_box;
use std::io::Write;

use ste_core::index::{BeTreeConfig, BeTreeIndex, KeyIndex, KeyIndexKind};

use crate::workload::{self, Churn, KeySet, Rng};

/// Keys per node of the block-transfer models (≈ 4 KiB nodes).
const MODEL_NODE_ENTRIES: usize = 40;
/// Operations measured per workload in the block-transfer pass.
const MODEL_OPS: usize = 2_000;

/// Append-only CSV file with a header.
pub struct Csv(std::fs::File);

impl Csv {
    pub fn new(dir: &str, name: &str, header: &str) -> Csv {
        std::fs::create_dir_all(dir).expect("create the CSV directory");
        let path = format!("{dir}/{name}");
        let fresh = !std::path::Path::new(&path).exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open the CSV");
        if fresh {
            writeln!(file, "{header}").expect("write the CSV");
        }
        Csv(file)
    }

    pub fn row(&mut self, row: &str) {
        writeln!(self.0, "{row}").expect("write the CSV");
    }
}

/// Heap bytes per key of an index of `kind` built from `set` in creation
/// (random) order, and the raw key bytes per key for comparison.
pub fn memory(kind: KeyIndexKind, set: &KeySet) -> String {
    let n = set.keys.len();
    let before = crate::alloc::live();
    let mut index = kind.build();
    workload::fill(index.as_mut(), set, false);
    let used = crate::alloc::live().saturating_sub(before);
    drop(black_box(index));
    let key_bytes: usize = set.keys.iter().map(Vec::len).sum();
    format!(
        "{},{n},{:.1},{:.1}",
        kind.name(),
        used as f64 / n as f64,
        key_bytes as f64 / n as f64
    )
}

fn io_model(epsilon: f64) -> BeTreeIndex {
    BeTreeIndex::with_io_model(BeTreeConfig {
        node_entries: MODEL_NODE_ENTRIES,
        epsilon,
    })
}

/// Per-op transfers of `run` (which performs `ops` operations).
fn measure(index: &mut BeTreeIndex, ops: usize, run: impl FnOnce(&mut BeTreeIndex)) -> [f64; 4] {
    let before = index.io_counts().expect("io model on");
    run(index);
    let after = index.io_counts().expect("io model on");
    let per = |a: u64, b: u64| (a - b) as f64 / ops as f64;
    [
        per(after.reads, before.reads),
        per(after.writes, before.writes),
        per(after.blind_reads, before.blind_reads),
        per(after.blind_writes, before.blind_writes),
    ]
}

/// Block transfers per operation of every workload, for both models.
pub fn block_transfers(set: &KeySet) -> Vec<String> {
    let n = set.keys.len();
    let mut rows = Vec::new();
    for (name, epsilon) in [("btree", 1.0), ("betree", 0.5)] {
        let mut row = |workload: &str, v: [f64; 4]| {
            rows.push(format!(
                "{name},{workload},{n},{:.3},{:.3},{:.3},{:.3}",
                v[0], v[1], v[2], v[3]
            ));
        };
        let mut sorted = io_model(epsilon);
        row(
            "bulk_create_sorted",
            measure(&mut sorted, n, |i| workload::fill(i, set, true)),
        );
        drop(sorted);
        let mut index = io_model(epsilon);
        row(
            "bulk_create_random",
            measure(&mut index, n, |i| workload::fill(i, set, false)),
        );
        let mut rng = Rng::new(7);
        let picks: Vec<usize> = (0..MODEL_OPS).map(|_| rng.below(n)).collect();
        row(
            "update",
            measure(&mut index, MODEL_OPS, |i| {
                for (j, &p) in picks.iter().enumerate() {
                    i.insert(set.keys[p].clone(), workload::entry(j as u64));
                }
            }),
        );
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let victims = &order[..MODEL_OPS.min(n)];
        row(
            "delete",
            measure(&mut index, victims.len(), |i| {
                for &v in victims {
                    i.remove(&set.keys[v]);
                }
            }),
        );
        for &v in victims {
            index.insert(set.keys[v].clone(), workload::entry(v as u64));
        }
        row(
            "mixed",
            measure(&mut index, MODEL_OPS, |i| {
                for (j, &p) in picks.iter().enumerate() {
                    match workload::churn(&mut rng) {
                        Churn::Create => {
                            i.insert(workload::pod_key((n + j) as u64), workload::entry(j as u64));
                        }
                        Churn::Update => {
                            i.insert(set.keys[p].clone(), workload::entry(j as u64));
                        }
                        Churn::Delete => {
                            i.remove(&set.keys[p]);
                        }
                    }
                }
            }),
        );
        // Fresh keys for the reads: the writes above left messages for
        // `picks` high in the buffers, where a lookup would find them early.
        let mut read_rng = Rng::new(11);
        let picks: Vec<usize> = (0..MODEL_OPS).map(|_| read_rng.below(n)).collect();
        row(
            "get",
            measure(&mut index, MODEL_OPS, |i| {
                for &p in &picks {
                    black_box(i.get(&set.keys[p]));
                }
            }),
        );
        row(
            "scan_page",
            measure(&mut index, MODEL_OPS, |i| {
                for &p in &picks {
                    black_box(workload::page(i, &set.keys[p]));
                }
            }),
        );
        let counts = 5;
        row(
            "count",
            measure(&mut index, counts, |i| {
                for _ in 0..counts {
                    black_box(workload::count_pods(i));
                }
            }),
        );
    }
    rows
}
