//! The criterion-timed workloads.
//!
//! Per-operation workloads run on an index already holding the N keys and
//! leave it holding them: writes are timed in chunks, and whatever a chunk
//! changed (deleted keys, created pods) is undone untimed before the next.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use ste_core::index::{KeyIndex, KeyIndexKind};

use crate::workload::{self, Churn, KeySet, Rng};

/// Operations timed between two untimed clean-ups.
const CHUNK: usize = 4_096;

/// Bulk create of all N keys into an empty index, sorted and in random
/// (creation) order; criterion reports time per build.
pub fn bulk_creates(c: &mut Criterion, set: &KeySet) {
    let n = set.keys.len();
    for (name, sorted) in [("bulk_create_sorted", true), ("bulk_create_random", false)] {
        let mut group = c.benchmark_group(name);
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Elements(n as u64));
        for kind in crate::KINDS {
            group.bench_function(BenchmarkId::new(kind.name(), n), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut index = kind.build();
                        let keys: Vec<Vec<u8>> = if sorted {
                            set.sorted
                                .iter()
                                .map(|&i| set.keys[i as usize].clone())
                                .collect()
                        } else {
                            set.keys.clone()
                        };
                        let start = Instant::now();
                        for (j, key) in keys.into_iter().enumerate() {
                            index.insert(key, workload::entry(j as u64));
                        }
                        total += start.elapsed();
                        drop(black_box(index));
                    }
                    total
                });
            });
        }
        group.finish();
    }
}

/// Runs `iters` operations in chunks: `prepare` builds a chunk's input
/// (untimed), `run` does it (timed), `undo` restores the index (untimed).
fn chunked<T>(
    iters: u64,
    index: &mut dyn KeyIndex,
    mut prepare: impl FnMut(usize) -> T,
    mut run: impl FnMut(&mut dyn KeyIndex, &mut T),
    mut undo: impl FnMut(&mut dyn KeyIndex, T),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let len = left.min(CHUNK);
        let mut input = prepare(len);
        let start = Instant::now();
        run(index, &mut input);
        total += start.elapsed();
        undo(index, input);
        left -= len;
    }
    total
}

/// Every per-operation workload on `index` (holding all of `set`).
pub fn per_op(c: &mut Criterion, kind: KeyIndexKind, index: &mut dyn KeyIndex, set: &KeySet) {
    let n = set.keys.len();
    let id = BenchmarkId::new(kind.name(), n);
    let mut rng = Rng::new(42);
    let mut writes = n as u64;
    let mut pick = move || rng.below(n);

    let mut group = c.benchmark_group("update");
    group.bench_function(id.clone(), |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                index,
                |len| {
                    (0..len)
                        .map(|_| set.keys[pick()].clone())
                        .collect::<Vec<_>>()
                },
                |index, keys| {
                    for key in keys.drain(..) {
                        writes += 1;
                        black_box(index.insert(key, workload::entry(writes)));
                    }
                },
                |_, _| {},
            )
        });
    });
    group.finish();

    let mut group = c.benchmark_group("delete");
    group.bench_function(id.clone(), |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                index,
                |len| {
                    let mut picks: Vec<usize> = (0..len.min(n)).map(|_| pick()).collect();
                    picks.sort_unstable();
                    picks.dedup();
                    while picks.len() < len {
                        // Small N: repeat keys; a repeat deletes nothing.
                        picks.push(pick());
                    }
                    picks
                },
                |index, picks| {
                    for &p in picks.iter() {
                        black_box(index.remove(&set.keys[p]));
                    }
                },
                |index, picks| {
                    for p in picks {
                        index.insert(set.keys[p].clone(), workload::entry(p as u64));
                    }
                },
            )
        });
    });
    group.finish();

    let mut group = c.benchmark_group("mixed");
    let mut churn_rng = Rng::new(9);
    let mut fresh = n as u64;
    group.bench_function(id.clone(), |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                index,
                |len| {
                    (0..len)
                        .map(|_| {
                            let step = workload::churn(&mut churn_rng);
                            let key = match step {
                                Churn::Create => {
                                    fresh += 1;
                                    workload::pod_key(fresh)
                                }
                                _ => set.keys[pick()].clone(),
                            };
                            (step, key, None)
                        })
                        .collect::<Vec<_>>()
                },
                |index, steps| {
                    for (step, key, old) in steps.iter_mut() {
                        writes += 1;
                        match step {
                            Churn::Create | Churn::Update => {
                                *old = index.insert(key.clone(), workload::entry(writes));
                            }
                            Churn::Delete => *old = index.remove(key),
                        }
                    }
                },
                |index, steps| {
                    for (step, key, old) in steps.into_iter().rev() {
                        match (step, old) {
                            (Churn::Create, None) => {
                                index.remove(&key);
                            }
                            (_, Some(entry)) => {
                                index.insert(key, entry);
                            }
                            _ => {}
                        }
                    }
                },
            )
        });
    });
    group.finish();

    let mut group = c.benchmark_group("get");
    group.bench_function(id.clone(), |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                index,
                |len| (0..len).map(|_| pick()).collect::<Vec<_>>(),
                |index, picks| {
                    for &p in picks.iter() {
                        black_box(index.get(&set.keys[p]));
                    }
                },
                |_, _| {},
            )
        });
    });
    group.finish();

    let mut group = c.benchmark_group("scan_page");
    group.bench_function(id.clone(), |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                index,
                |len| (0..len).map(|_| pick()).collect::<Vec<_>>(),
                |index, picks| {
                    for &p in picks.iter() {
                        black_box(workload::page(index, &set.keys[p]));
                    }
                },
                |_, _| {},
            )
        });
    });
    group.finish();

    let mut group = c.benchmark_group("count");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(id, |b| {
        b.iter(|| black_box(workload::count_pods(index)));
    });
    group.finish();
}
