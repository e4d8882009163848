//! A cross-check with etcd's own benchmark: `etcdctl check perf` (the
//! benchmark built into etcdctl; the separate `tools/benchmark` module is
//! not served by the Go module proxy reachable here) against a fresh bare
//! tmpfs shard, printed beside ste-bench's figures for the same target.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::Args;
use crate::report::{Measurement, rate};
use crate::target::{self, Disk, Target};

/// What `etcdctl check perf` reported.
pub struct CrossCheck {
    /// `--load`.
    pub load: String,
    /// Its clients and its rate cap for that load (from etcdctl's source).
    pub clients: usize,
    /// The rate it tries to sustain (writes/s).
    pub cap: usize,
    /// Its throughput line, e.g. "Throughput is 7984 writes/s".
    pub throughput: Option<f64>,
    /// Its whole verdict (PASS/FAIL lines).
    pub verdict: String,
}

/// Starts a bare shard in `dir`, runs `etcdctl check perf` against it.
pub async fn run(args: &Args, dir: &Path, bin_dir: &Path) -> anyhow::Result<CrossCheck> {
    let (clients, cap) = match args.cross_check.as_str() {
        "s" => (50, 150),
        "m" => (200, 1000),
        "xl" => (1000, 15000),
        _ => (500, 8000),
    };
    eprintln!(
        "cross-check: etcdctl check perf --load {} against a fresh shard (60 s)",
        args.cross_check
    );
    let running = target::start(args, Target::Shard, Disk::Plain, dir, bin_dir).await?;
    let url = running.url.clone();
    let load = args.cross_check.clone();
    let etcdctl = args.etcdctl_bin.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&etcdctl)
            .arg(format!("--endpoints={url}"))
            .arg("check")
            .arg("perf")
            .arg(format!("--load={load}"))
            .output()
            .with_context(|| format!("running `{etcdctl} check perf`"))
    })
    .await??;
    running.stop().await?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let verdict: Vec<&str> = text
        .lines()
        .map(|l| l.rsplit('\r').next().unwrap_or(l).trim())
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
        .collect();
    let throughput = verdict.iter().find_map(|l| {
        let rest = l.split_once("Throughput is ")?.1;
        rest.split_whitespace().next()?.parse().ok()
    });
    Ok(CrossCheck {
        load: args.cross_check.clone(),
        clients,
        cap,
        throughput,
        verdict: if verdict.is_empty() {
            format!("no verdict; its output ended: {}", text.trim())
        } else {
            verdict.join("; ")
        },
    })
}

impl CrossCheck {
    /// The two figures side by side.
    pub fn render(&self, results: &[Measurement]) -> String {
        let ours = results
            .iter()
            .filter(|m| m.target == Target::Shard && m.disk == Disk::Plain)
            .filter_map(|m| Some((m.clients, m.phase("create")?.ops_per_sec())))
            .max_by_key(|(c, _)| *c);
        let mut out = String::from("cross-check with etcd's own benchmark, bare tmpfs shard:\n");
        out.push_str(&format!(
            "  etcdctl check perf --load {}: {} ({} clients, capped at {} writes/s, 60 s of Puts, 256-byte keys, 1 KiB values)\n",
            self.load,
            self.throughput
                .map(|t| format!("{} writes/s", rate(t)))
                .unwrap_or_else(|| "no throughput".into()),
            self.clients,
            self.cap
        ));
        out.push_str(&format!("  its verdict: {}\n", self.verdict));
        match ours {
            Some((c, r)) => out.push_str(&format!(
                "  ste-bench create Txns on the shard at {c} clients: {} ops/s\n\n",
                rate(r)
            )),
            None => out.push_str("  ste-bench did not run the shard target\n\n"),
        }
        out
    }
}
