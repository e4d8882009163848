//! The sweep: every disk model × client count × target, one target at a
//! time, then the report, the plots and the cross-check.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::report::{self, Measurement};
use crate::target::{self, Disk, Target};
use crate::workload::{self, Workload};
use crate::{Args, sys};

/// The disk models to run: the plain disk, then the passthrough with each
/// added latency (for the persistent targets only).
fn disks(args: &Args) -> Vec<Disk> {
    let mut disks = vec![Disk::Plain];
    disks.extend(args.fsync_delay.iter().map(|d| Disk::Delayed(*d)));
    disks
}

/// Runs the whole sweep and prints the report on stdout.
pub async fn run(
    args: &Args,
    root: &Path,
    bin_dir: PathBuf,
    etcd_version: String,
) -> anyhow::Result<()> {
    let probe_dir = root.join("fsync-probe");
    std::fs::create_dir(&probe_dir)?;
    let disk_fs = sys::mount_of(&probe_dir)?;
    let mut probes = Vec::new();
    for disk in disks(args) {
        if !args.targets.iter().any(|t| t.persistent()) {
            break;
        }
        probes.push((disk, fsync_probe(&bin_dir, &probe_dir, disk, args)?));
    }

    let mut results: Vec<Measurement> = Vec::new();
    let mut descriptions: Vec<(String, String)> = Vec::new();
    let mut n = 0;
    for disk in disks(args) {
        for &clients in &args.concurrency {
            for &target in &args.targets {
                if disk != Disk::Plain && !target.persistent() {
                    continue;
                }
                n += 1;
                let label = format!("{} c={clients} {}", target.name(), disk.label());
                let dir = root.join(format!("{n:02}-{}", target.name()));
                let m = measure(args, target, disk, clients, &dir, &bin_dir, &label).await?;
                let key = format!("{} ({})", target.name(), disk.label());
                if !descriptions.iter().any(|(k, _)| *k == key) {
                    descriptions.push((key, m.describe.clone()));
                }
                results.push(m);
            }
        }
    }

    let cross = if args.cross_check == "none" {
        None
    } else {
        let dir = root.join("cross-check");
        Some(crate::crosscheck::run(args, &dir, &bin_dir).await)
    };

    let machine = sys::machine();
    let mut out = String::new();
    out.push('\n');
    if cfg!(debug_assertions) {
        out.push_str(&crate::debug_warning());
        out.push('\n');
    }
    let pages = args.ops.div_ceil(args.page_size as usize);
    out.push_str(&format!(
        "workload: {} ops per phase, {}-byte values, keys /registry/pods/ns-{{i%{}}}/pod-{{i}}, \
         list = {} of {} (limit {}); clients {:?}\n",
        args.ops,
        args.value_bytes,
        args.namespaces,
        crate::count(args.list_repeats as u64, "full list", "full lists"),
        crate::count(pages as u64, "page", "pages"),
        args.page_size,
        args.concurrency
    ));
    out.push_str(&format!(
        "machine:  {} CPUs ({}), {}, Linux {}; all processes on this machine, loopback only\n",
        machine.cpus, machine.cpu_model, machine.memory, machine.kernel
    ));
    out.push_str(&format!(
        "build:    {} (binaries in {}); etcd {} ({})\n",
        if cfg!(debug_assertions) {
            "DEBUG - numbers not representative"
        } else {
            "release"
        },
        bin_dir.display(),
        etcd_version,
        args.etcd_bin
    ));
    out.push_str(&format!(
        "disk:     {} on {} ({})\n",
        root.display(),
        disk_fs.fs_type,
        disk_fs.source
    ));
    for (disk, (p50, p99)) in &probes {
        out.push_str(&format!(
            "          4 KiB write+fdatasync, {:<12} p50 {} ms, p99 {} ms\n",
            disk.label(),
            report::ms(*p50),
            report::ms(*p99)
        ));
    }
    for (key, describe) in &descriptions {
        out.push_str(&format!("{key:<16} {describe}\n"));
    }
    out.push('\n');
    out.push_str(&report::sweep_tables(&results, &disks(args)));
    out.push_str(&report::advantage_table(&results, &disks(args)));
    out.push_str(&report::cpu_table(&results, machine.cpus));
    out.push_str(&report::router_table(&results));
    out.push_str(&report::failures(&results));
    if let Some(cross) = &cross {
        out.push_str(&cross.render(&results));
    }
    print!("{out}");

    if let Some(dir) = &args.plots {
        let run = format!("{} ops per phase", args.ops);
        for file in crate::plot::write_all(dir, &results, &disks(args), &run)? {
            eprintln!("plot: wrote {}", file.display());
        }
    }
    let failed: Vec<&Measurement> = results
        .iter()
        .filter(|m| m.failure.is_some() && m.target != Target::Kine)
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "{} run(s) failed (see the report above)",
        failed.len()
    );
    Ok(())
}

/// 4 KiB write + fdatasync latency on the disk model `disk`.
fn fsync_probe(
    bin_dir: &Path,
    dir: &Path,
    disk: Disk,
    args: &Args,
) -> anyhow::Result<(Duration, Duration)> {
    match disk {
        Disk::Plain => sys::fdatasync_latency(dir, 200),
        Disk::Delayed(delay) => {
            let backing = dir.join(format!("delay-{}", delay.as_micros()));
            std::fs::create_dir(&backing)?;
            let mount = crate::fsdelay::DelayMount::start(
                bin_dir,
                &backing,
                delay,
                Duration::from(args.ready_timeout),
            )?;
            let count = if delay >= Duration::from_millis(1) {
                50
            } else {
                200
            };
            sys::fdatasync_latency(&mount.mount_point, count)
        }
    }
}

/// Starts `target`, runs the workload with `clients`, stops it.
async fn measure(
    args: &Args,
    target: Target,
    disk: Disk,
    clients: usize,
    dir: &Path,
    bin_dir: &Path,
    label: &str,
) -> anyhow::Result<Measurement> {
    let w = Workload {
        ops: args.ops,
        concurrency: clients,
        value_bytes: args.value_bytes,
        namespaces: args.namespaces,
        list_repeats: args.list_repeats,
        page_size: args.page_size,
        warmup: args.warmup,
    };
    eprintln!("{label}: starting");
    let running = target::start(args, target, disk, dir, bin_dir).await?;
    eprintln!("{label}: serving on {}; running the workload", running.url);
    let client = workload::connect(&running.url).await?;
    let probe = workload::Probe {
        cpu: || running.cpu(),
        router_metrics: running.router_metrics(),
    };
    let outcome = workload::run(&client, &w, probe, |s| progress(label, s)).await;
    drop(client);
    if let Some(e) = &outcome.failure {
        eprintln!("{label}: stopped early: {e:#}");
    }
    let parts = running.parts.iter().map(|p| p.name.clone()).collect();
    let describe = running.describe.clone();
    running.stop().await?;
    eprintln!("{label}: stopped");
    Ok(Measurement {
        target,
        disk,
        clients,
        parts,
        describe,
        phases: outcome.phases,
        failure: outcome.failure.map(|e| format!("{e:#}")),
    })
}

fn progress(label: &str, s: &report::PhaseStats) {
    eprintln!(
        "{label}: {:<6} {:>6} ops in {:>7.2}s  ({:.0} ops/s, p50 {} ms, p99 {} ms)",
        s.phase,
        s.ops(),
        s.wall.as_secs_f64(),
        s.ops_per_sec(),
        report::ms(s.p50()),
        report::ms(s.p99())
    );
}
