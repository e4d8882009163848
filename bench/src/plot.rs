//! SVG plots of a sweep: create latency (p50) against clients per target,
//! and create throughput against the added fsync latency.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::report::{Measurement, find};
use crate::target::{Disk, Target};

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(214, 39, 40),
];

fn color(t: Target) -> RGBColor {
    let i = Target::ALL.iter().position(|x| *x == t).unwrap_or(0);
    COLORS[i]
}

/// Writes every plot the results allow into `dir`; returns the files.
/// `run` names the run in each caption (e.g. "5000 ops per phase").
pub fn write_all(
    dir: &Path,
    results: &[Measurement],
    disks: &[Disk],
    run: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    let latency = dir.join("latency-vs-clients.svg");
    latency_vs_clients(&latency, results, run).map_err(|e| anyhow::anyhow!("{e}"))?;
    files.push(latency);
    if disks.len() > 1 {
        let throughput = dir.join("throughput-vs-fsync-delay.svg");
        throughput_vs_delay(&throughput, results, disks, run)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        files.push(throughput);
    }
    Ok(files)
}

fn targets(results: &[Measurement]) -> Vec<Target> {
    Target::ALL
        .into_iter()
        .filter(|t| results.iter().any(|m| m.target == *t))
        .collect()
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn latency_vs_clients(path: &Path, results: &[Measurement], run: &str) -> PlotResult {
    let mut series = Vec::new();
    for t in targets(results) {
        let mut points: Vec<(f64, f64)> = results
            .iter()
            .filter(|m| m.target == t && m.disk == Disk::Plain)
            .filter_map(|m| {
                let s = m.phase("create")?;
                Some(((m.clients as f64).log2(), s.p50().as_secs_f64() * 1e3))
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push((t, points));
    }
    let max_x = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(1.0, f64::max);
    let max_y = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(0.1, f64::max);
    // x is log2(clients), so the ticks fall on 1, 2, 4, 8, ...
    let ticks = max_x.ceil() as usize + 1;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("create Txn p50 latency vs clients (plain disk; {run})"),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2..max_x + 0.3, 0.0..max_y * 1.15)?;
    chart
        .configure_mesh()
        .x_labels(ticks)
        .x_label_formatter(&|x| format!("{}", 2f64.powf(*x).round()))
        .x_desc("concurrent clients (log scale)")
        .y_desc("p50 latency (ms)")
        .draw()?;
    draw_lines(&mut chart, series, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

fn throughput_vs_delay(
    path: &Path,
    results: &[Measurement],
    disks: &[Disk],
    run: &str,
) -> PlotResult {
    let clients = results.iter().map(|m| m.clients).max().unwrap_or(1);
    let delay_ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut series = Vec::new();
    for t in targets(results) {
        let mut points = Vec::new();
        for &disk in disks {
            let Disk::Delayed(d) = disk else { continue };
            if let Some(s) = find(results, t, disk, clients).and_then(|m| m.phase("create")) {
                points.push((delay_ms(d), s.ops_per_sec()));
            }
        }
        series.push((t, points));
    }
    let max_x = disks
        .iter()
        .filter_map(|d| match d {
            Disk::Delayed(d) => Some(delay_ms(*d)),
            Disk::Plain => None,
        })
        .fold(1.0, f64::max);
    let max_y = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption =
        format!("create Txn throughput vs added fsync latency ({clients} clients; {run})");
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_x * 1.05, 0.0..max_y * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("added fsync latency (ms), through the ste-fsync-delay passthrough")
        .y_desc("ops/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    draw_lines(&mut chart, series, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// Draws one line per target in its color, and the legend at `legend`.
fn draw_lines<'a, 'b: 'a>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    series: Vec<(Target, Vec<(f64, f64)>)>,
    legend: SeriesLabelPosition,
) -> PlotResult {
    for (t, points) in series {
        let c = color(t);
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))?
            .label(t.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(legend)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::PhaseStats;

    fn measurement(target: Target, disk: Disk, clients: usize, ms: u64) -> Measurement {
        Measurement {
            target,
            disk,
            clients,
            parts: Vec::new(),
            describe: String::new(),
            phases: vec![PhaseStats::new(
                "create",
                vec![Duration::from_millis(ms); 10],
                Duration::from_millis(10 * ms),
            )],
            failure: None,
        }
    }

    #[test]
    fn writes_both_svgs_with_a_line_per_target() {
        let delayed = Disk::Delayed(Duration::from_millis(2));
        let results = [
            measurement(Target::Etcd3, Disk::Plain, 1, 1),
            measurement(Target::Etcd3, Disk::Plain, 16, 4),
            measurement(Target::Etcd3, delayed, 16, 8),
            measurement(Target::Ste, Disk::Plain, 1, 1),
            measurement(Target::Ste, Disk::Plain, 16, 2),
        ];
        let dir = tempfile::tempdir().expect("temp dir");
        let files =
            write_all(dir.path(), &results, &[Disk::Plain, delayed], "10 ops").expect("plots");
        assert_eq!(files.len(), 2);
        for file in files {
            let svg = std::fs::read_to_string(&file).expect("read svg");
            assert!(svg.starts_with("<svg"), "{}", file.display());
            assert!(svg.contains("etcd3") && svg.contains("ste"), "{svg}");
            assert!(svg.contains("<polyline"), "{svg}");
        }
    }
}
