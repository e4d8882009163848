//! Renders the key index benchmark results: one SVG per workload (time per
//! operation and block transfers per operation against the key count, both
//! indexes), a memory plot, and the tables of `docs/key-index.md`.
//!
//! ```text
//! cargo run -p ste-core --example key_index_report -- \
//!     --criterion $CARGO_TARGET_DIR/criterion \
//!     --data $CARGO_TARGET_DIR/key-index --out docs/key-index
//! ```
//!
//! Reads criterion's `<group>/<index>/<n>/new/estimates.json` (mean) and the
//! bench's `memory.csv` and `io.csv`; writes `time.csv` (ns per operation;
//! a bulk create's build time divided by its key count), copies the two
//! CSVs, writes the SVGs, and prints the Markdown tables on stdout.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

const WORKLOADS: [&str; 8] = [
    "bulk_create_sorted",
    "bulk_create_random",
    "update",
    "delete",
    "mixed",
    "get",
    "scan_page",
    "count",
];
const INDEXES: [&str; 2] = ["btree", "betree"];
const SIZES: [u64; 4] = [10_000, 100_000, 1_000_000, 10_000_000];

type Result<T> = std::result::Result<T, Box<dyn Error>>;
/// (workload, index, n) -> value.
type Table = BTreeMap<(String, String, u64), f64>;

fn arg(args: &[String], flag: &str) -> Result<PathBuf> {
    let at = args
        .iter()
        .position(|a| a == flag)
        .ok_or_else(|| format!("missing {flag} DIR"))?;
    Ok(PathBuf::from(
        args.get(at + 1).ok_or(format!("{flag} needs a value"))?,
    ))
}

/// Criterion's mean estimate in ns per iteration, if the benchmark ran.
fn criterion_mean(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mean = &text[text.find("\"mean\"")?..];
    let value = &mean[mean.find("\"point_estimate\":")? + 17..];
    let end = value.find([',', '}'])?;
    value[..end].trim().parse().ok()
}

fn times(criterion: &Path) -> Table {
    let mut table = Table::new();
    for workload in WORKLOADS {
        for index in INDEXES {
            for n in SIZES {
                let path = criterion.join(format!("{workload}/{index}/{n}/new/estimates.json"));
                if let Some(ns) = criterion_mean(&path) {
                    let per_op = if workload.starts_with("bulk") {
                        ns / n as f64
                    } else {
                        ns
                    };
                    table.insert((workload.into(), index.into(), n), per_op);
                }
            }
        }
    }
    table
}

/// `io.csv` columns `column` (3 = reads, 4 = writes, 5/6 = blind).
fn io(data: &Path, column: usize) -> Result<Table> {
    let mut table = Table::new();
    for line in std::fs::read_to_string(data.join("io.csv"))?
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = line.split(',').collect();
        table.insert(
            (f[1].into(), f[0].into(), f[2].parse()?),
            f[column].parse()?,
        );
    }
    Ok(table)
}

fn memory(data: &Path) -> Result<Table> {
    let mut table = Table::new();
    for line in std::fs::read_to_string(data.join("memory.csv"))?
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = line.split(',').collect();
        table.insert(("memory".into(), f[0].into(), f[1].parse()?), f[2].parse()?);
        table.insert(("key".into(), f[0].into(), f[1].parse()?), f[3].parse()?);
    }
    Ok(table)
}

fn series(table: &Table, workload: &str, index: &str) -> Vec<(f64, f64)> {
    SIZES
        .iter()
        .filter_map(|&n| {
            let v = *table.get(&(workload.to_owned(), index.to_owned(), n))?;
            (v > 0.0).then_some((n as f64, v))
        })
        .collect()
}

fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    table: &Table,
    workload: &str,
    title: &str,
    unit: &str,
) -> Result<()> {
    let all: Vec<f64> = INDEXES
        .iter()
        .flat_map(|i| series(table, workload, i))
        .map(|(_, v)| v)
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let lo = all.iter().copied().fold(f64::MAX, f64::min) / 1.5;
    let hi = all.iter().copied().fold(0.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((5e3f64..2e7f64).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("keys in the index")
        .y_desc(unit)
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .y_label_formatter(&|y| match *y {
            y if y >= 100.0 => format!("{y:.0}"),
            y if y >= 1.0 => format!("{y:.1}"),
            y => format!("{y:.3}"),
        })
        .draw()?;
    for (index, color) in INDEXES.iter().zip([&BLUE, &RED]) {
        let points = series(table, workload, index);
        chart
            .draw_series(LineSeries::new(points.clone(), color))?
            .label(*index)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn markdown(table: &Table, workloads: &[&str], unit: &str) -> String {
    let mut out = format!("| workload | keys | btree {unit} | betree {unit} | betree / btree |\n");
    out.push_str("|---|---:|---:|---:|---:|\n");
    for workload in workloads {
        for n in SIZES {
            let get = |i: &str| {
                table
                    .get(&((*workload).to_owned(), i.to_owned(), n))
                    .copied()
            };
            if let (Some(b), Some(e)) = (get("btree"), get("betree")) {
                let ratio = if b > 0.0 {
                    format!("{:.2}×", e / b)
                } else {
                    "–".into()
                };
                let _ = writeln!(out, "| {workload} | {n} | {b:.3} | {e:.3} | {ratio} |");
            }
        }
    }
    out
}

fn write_csv(path: &Path, header: &str, table: &Table) -> Result<()> {
    let mut text = format!("{header}\n");
    for ((workload, index, n), v) in table {
        let _ = writeln!(text, "{workload},{index},{n},{v:.3}");
    }
    std::fs::write(path, text)?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (criterion, data, out) = (
        arg(&args, "--criterion")?,
        arg(&args, "--data")?,
        arg(&args, "--out")?,
    );
    std::fs::create_dir_all(&out)?;
    let time = times(&criterion);
    let (reads, writes) = (io(&data, 3)?, io(&data, 4)?);
    let (blind_reads, blind_writes) = (io(&data, 5)?, io(&data, 6)?);
    let memory = memory(&data)?;
    write_csv(&out.join("time.csv"), "workload,index,n,ns_per_op", &time)?;
    std::fs::copy(data.join("io.csv"), out.join("io.csv"))?;
    std::fs::copy(data.join("memory.csv"), out.join("memory.csv"))?;
    let mut transfers = Table::new();
    for (k, r) in &reads {
        transfers.insert(k.clone(), r + writes.get(k).copied().unwrap_or(0.0));
    }
    let mut blind = Table::new();
    for (k, r) in &blind_reads {
        blind.insert(k.clone(), r + blind_writes.get(k).copied().unwrap_or(0.0));
    }
    for workload in WORKLOADS {
        let path = out.join(format!("{workload}.svg"));
        let root = SVGBackend::new(&path, (1000, 380)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        panel(
            &left,
            &time,
            workload,
            &format!("{workload}: time"),
            "ns / op",
        )?;
        panel(
            &right,
            &transfers,
            workload,
            &format!("{workload}: 4 KiB block transfers (model)"),
            "reads + writes / op",
        )?;
        root.present()?;
    }
    let path = out.join("memory.svg");
    let root = SVGBackend::new(&path, (500, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    panel(
        &root,
        &memory,
        "memory",
        "heap bytes per key",
        "bytes / key",
    )?;
    root.present()?;

    println!(
        "## Time per operation (ns)\n\n{}",
        markdown(&time, &WORKLOADS, "ns")
    );
    println!(
        "## Block transfers per operation (reads + writes)\n\n{}",
        markdown(&transfers, &WORKLOADS, "blocks")
    );
    println!(
        "## Blind writes: update phase only\n\n{}",
        markdown(&blind, &WORKLOADS[..5], "blocks")
    );
    println!(
        "## Memory (heap bytes per key)\n\n{}",
        markdown(&memory, &["memory", "key"], "B")
    );
    Ok(())
}
