//! A cross-check with etcd's own benchmark: `etcdctl check perf` (the
//! benchmark built into etcdctl; the separate `tools/benchmark` module is
//! not served by the Go module proxy reachable here) against a fresh bare
//! tmpfs shard, printed beside ste-bench's figures for the same target.

use std::path::Path;
use std::time::Duration;

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

/// The shard's tmpfs for the cross-check: `check perf` writes for 60 s as
/// fast as the shard takes it (at 7,000 writes/s about 1 GB of WAL and
/// database), far more than a run of the workload.
const TMPFS: &str = "3Gi";

/// How long `etcdctl check perf` may take (its 60 s, the clean-up of its
/// keys, a margin) before it is killed.
const TIMEOUT: Duration = Duration::from_secs(240);

/// Starts a bare shard in `dir`, runs `etcdctl check perf` against it. A
/// failure is reported in the verdict, not as an error: the sweep's
/// results stand without it.
pub async fn run(args: &Args, dir: &Path, bin_dir: &Path) -> CrossCheck {
    let (clients, cap) = match args.cross_check.as_str() {
        "s" => (50, 150),
        "m" => (200, 1000),
        "l" => (500, 8000),
        _ => (1000, 15000),
    };
    let mut check = CrossCheck {
        load: args.cross_check.clone(),
        clients,
        cap,
        throughput: None,
        verdict: String::new(),
    };
    eprintln!(
        "cross-check: etcdctl check perf --load {} against a fresh shard on a {TMPFS} tmpfs (60 s)",
        args.cross_check
    );
    match check_perf(args, dir, bin_dir).await {
        Ok(text) => {
            let verdict: Vec<&str> = text
                .lines()
                .map(|l| l.rsplit('\r').next().unwrap_or(l).trim())
                .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
                .collect();
            check.throughput = verdict.iter().find_map(|l| throughput(l));
            check.verdict = if verdict.is_empty() {
                format!("no verdict; its output ended: {}", text.trim())
            } else {
                verdict.join("; ")
            };
        }
        Err(e) => check.verdict = format!("did not complete: {e:#}"),
    }
    check
}

async fn check_perf(args: &Args, dir: &Path, bin_dir: &Path) -> anyhow::Result<String> {
    let mut shard_args = args.clone();
    shard_args.tmpfs_size = TMPFS.into();
    let running = target::start(&shard_args, Target::Shard, Disk::Plain, dir, bin_dir).await?;
    let output = tokio::process::Command::new(&args.etcdctl_bin)
        .arg(format!("--endpoints={}", running.url))
        .arg("check")
        .arg("perf")
        .arg(format!("--load={}", args.cross_check))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(TIMEOUT, output).await;
    running.stop().await?;
    let out = out
        .map_err(|_| anyhow::anyhow!("etcdctl check perf took over {TIMEOUT:?}; killed it"))?
        .with_context(|| format!("running `{} check perf`", args.etcdctl_bin))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// The figure in "PASS: Throughput is 7984 writes/s" or in "FAIL:
/// Throughput too low: 5848 writes/s" (below 90% of the load's cap).
fn throughput(line: &str) -> Option<f64> {
    let rest = line.split_once("Throughput")?.1;
    rest.split_whitespace()
        .find_map(|word| word.trim_end_matches(':').parse().ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_from_pass_and_fail_lines() {
        assert_eq!(throughput("PASS: Throughput is 148 writes/s"), Some(148.0));
        assert_eq!(
            throughput("FAIL: Throughput too low: 5848 writes/s"),
            Some(5848.0)
        );
        assert_eq!(throughput("PASS: Stddev is 0.086349s"), None);
    }
}
