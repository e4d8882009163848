//! ste-bench: STE against the stores it replaces, side by side in one run.
//!
//! Targets: the native control plane's 3-member persistent etcd, kine on
//! SQLite, one bare tmpfs etcd without fsync (the floor), one persistent
//! etcd, and STE (ste-router + three ste-agent shards). All get the same
//! workload, the requests kube-apiserver sends for pods (create, update,
//! get, paginated list, delete), one target at a time, so each has the
//! machine to itself while it is measured; swept over client counts and,
//! for the persistent targets, over an added fsync latency (a FUSE
//! passthrough, `ste-fsync-delay`).

mod crosscheck;
mod etcd;
mod fsdelay;
mod plot;
mod report;
mod router_metrics;
mod ste;
mod sweep;
mod sys;
mod target;
mod workload;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;

use crate::target::Target;

/// How to get the counterparts the documented runs use.
const COUNTERPARTS_HINT: &str = "scripts/build-counterparts.sh etcd etcdctl kine && \
     export PATH=$PWD/.build/bin:$PATH";

const BUILD_HINT: &str = "build with cargo build --release -p ste-bench -p ste-router -p ste-agent";

/// The command line (every run of the sweep shares it).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ste-bench",
    about = "Benchmark STE (ste-router + tmpfs shards, 3 by default) against a 3-member persistent etcd, \
             kine, a bare tmpfs etcd and one persistent etcd, with kube-apiserver's pod request \
             shapes. Needs root (tmpfs and FUSE mounts)."
)]
pub struct Args {
    /// Operations per phase (create, update, get, delete): one pod key each.
    #[arg(long, default_value_t = 5000)]
    pub ops: usize,
    /// Client counts to sweep: concurrent requests in flight (tasks sharing
    /// one client), e.g. 1,4,16,64.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub concurrency: Vec<usize>,
    /// Targets to run, in this order: etcd3, kine, shard, etcd1, ste.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "etcd3,kine,shard,etcd1,ste"
    )]
    pub targets: Vec<Target>,
    /// Added fsync latencies to sweep for the persistent targets (etcd3,
    /// kine, etcd1), through the ste-fsync-delay FUSE passthrough, e.g.
    /// 0,1ms,2ms,5ms (0 = the passthrough alone). Every target also runs on
    /// the plain disk. Empty: plain disk only.
    #[arg(long, value_delimiter = ',', value_parser = humantime::parse_duration)]
    pub fsync_delay: Vec<Duration>,
    /// The kine binary (kine target).
    #[arg(long, default_value = "kine")]
    pub kine_bin: String,
    /// The etcdctl binary (the cross-check with `etcdctl check perf`).
    #[arg(long, default_value = "etcdctl")]
    pub etcdctl_bin: String,
    /// Cross-check against etcd's own benchmark in etcdctl: `check perf
    /// --load LOAD` (s, m, l or xl; 60 s each) on the bare shard, printed
    /// beside ste-bench's own figure. none: skip it.
    /// xl (1000 clients, capped at 15,000 writes/s) is the one whose cap is
    /// above what a bare shard does on a small machine.
    #[arg(long, default_value = "xl", value_parser = ["none", "s", "m", "l", "xl"])]
    pub cross_check: String,
    /// Write SVG plots (latency vs clients, throughput vs added fsync
    /// latency) into this directory.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Bytes per value (a typical pod object is a few KB).
    #[arg(long, default_value_t = 4000)]
    pub value_bytes: usize,
    /// Full paginated lists of the whole prefix in the list phase.
    #[arg(long, default_value_t = 10)]
    pub list_repeats: usize,
    /// Page size (limit) of the paginated lists.
    #[arg(long, default_value_t = 500)]
    pub page_size: i64,
    /// Namespaces the pods are spread over (/registry/pods/ns-{i % N}/pod-{i}).
    #[arg(long, default_value_t = 50)]
    pub namespaces: usize,
    /// Unmeasured put+delete pairs before the phases, on another prefix.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Where the temp dir goes: the persistent targets' data must be on disk.
    #[arg(long, default_value = "/var/tmp")]
    pub work_dir: PathBuf,
    /// tmpfs size of each STE shard (the agent's --tmpfs-size) and of the
    /// bare shard, e.g. 1Gi. auto: room inside the agent's backend quota
    /// for the two versions of each key that --ops and --value-bytes write,
    /// for each shard's share of the keys, at least 256Mi.
    #[arg(long, default_value = "auto")]
    pub tmpfs_size: String,
    /// The etcd binary, for every etcd target and STE's shards.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: String,
    /// How long a process may take to start serving.
    #[arg(long, default_value = "60s")]
    pub ready_timeout: humantime::Duration,
    /// The router's key index (its --key-index): btree or betree.
    #[arg(long, default_value = "btree", value_parser = ["btree", "betree"])]
    pub key_index: String,
    /// Shards (ste-agents) behind the router, 1 to 8: node-a, node-b, ...
    /// on 127.0.0.2, 127.0.0.3, ... One shard with many clients measures a
    /// shard's ceiling through the router.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub ste_shards: u8,
    /// The router's worker threads (its --worker-threads), 1 to 1024.
    /// Default: the router's own, one per CPU.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub router_worker_threads: Option<u32>,
}

/// What `--tmpfs-size auto` picks for `ops` pods of `value_bytes`: a
/// tmpfs whose shard keeps every version the workload writes inside its
/// backend quota.
///
/// The workload leaves two versions of each key (create, update) and
/// nothing compacts them. A stored version takes about its value plus
/// 512 bytes (key, envelope, bbolt's page header), and bbolt's pages
/// about double that (a 4 KB value overflows into two 4 KiB pages). A
/// shard is given half again its even share of the keys, for the ring's
/// imbalance (half the keys of three shards), and never more than all.
/// The agent's quota is 40% of the tmpfs above the WAL's 128 MiB
/// preallocation (`ste_agent::etcd::quota_backend_bytes`), so the tmpfs
/// is 128 MiB plus 2.5 times that, rounded up to 64 MiB, at least 256 MiB
/// (the agent's minimum). The bare shard gets the same size: its db
/// (twice a shard's) and its WAL fit too. Examples: 5,000 × 4 KB → 256Mi;
/// 20,000 × 4 KB → 576Mi; 150,000 × 2 KB → 1984Mi.
fn auto_tmpfs_size(ops: usize, value_bytes: usize, shards: u8) -> String {
    const MIB: u64 = 1 << 20;
    let keys = (ops as u64 * 3 / (2 * u64::from(shards.max(1)))).min(ops as u64);
    let per_shard = keys * 2 * (value_bytes as u64 + 512) * 2;
    let bytes = 128 * MIB + per_shard * 5 / 2;
    let mib = bytes.div_ceil(64 * MIB) * 64;
    format!("{}Mi", mib.max(256))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let code = match real_main(args).await {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("ste-bench: error: {err:#}");
            1
        }
    };
    std::process::exit(code);
}

async fn real_main(mut args: Args) -> anyhow::Result<()> {
    ensure!(args.ops > 0, "--ops must be at least 1");
    if args.tmpfs_size == "auto" {
        args.tmpfs_size = auto_tmpfs_size(args.ops, args.value_bytes, args.ste_shards);
    }
    ensure!(
        !args.concurrency.is_empty() && args.concurrency.iter().all(|c| *c > 0),
        "--concurrency: every client count must be at least 1"
    );
    ensure!(!args.targets.is_empty(), "--targets: name at least one");
    ensure!(args.list_repeats > 0, "--list-repeats must be at least 1");
    ensure!(args.page_size > 0, "--page-size must be at least 1");
    ensure!(args.namespaces > 0, "--namespaces must be at least 1");
    if cfg!(debug_assertions) {
        eprintln!("{}", debug_warning());
    }
    ensure!(
        nix::unistd::geteuid().is_root(),
        "ste-bench needs root: it mounts tmpfs and FUSE, and the STE agents mount their tmpfs \
         (run it with sudo)"
    );
    let bin_dir = std::env::current_exe()
        .context("locating the ste-bench binary")?
        .parent()
        .context("ste-bench binary has no parent dir")?
        .to_path_buf();
    let mut needed = vec!["ste-agent", "ste-router"];
    if !args.fsync_delay.is_empty() {
        needed.push("ste-fsync-delay");
    }
    for bin in needed {
        ensure!(
            bin_dir.join(bin).is_file(),
            "{} not found next to ste-bench in {}: {BUILD_HINT}",
            bin,
            bin_dir.display()
        );
    }
    let etcd_version = sys::etcd_version(&args.etcd_bin)?;
    if !etcd_version.starts_with("3.6") {
        eprintln!(
            "ste-bench: note: {} is etcd {etcd_version}; the documented runs use etcd 3.6 from \
             .build/bin ({COUNTERPARTS_HINT})",
            args.etcd_bin
        );
    }
    // Every binary a target needs is checked before anything runs, not
    // when its turn comes.
    if args.targets.contains(&Target::Kine) {
        sys::runs(&args.kine_bin, "--version").with_context(|| {
            format!("the kine target needs kine: {COUNTERPARTS_HINT}, or pass --kine-bin")
        })?;
    }
    if args.cross_check != "none" {
        sys::runs(&args.etcdctl_bin, "version").with_context(|| {
            format!(
                "the cross-check needs etcdctl: {COUNTERPARTS_HINT}, or pass --etcdctl-bin \
                 (--cross-check none skips it)"
            )
        })?;
    }
    ensure!(
        args.work_dir.is_dir(),
        "--work-dir {} is not a directory",
        args.work_dir.display()
    );
    let root = tempfile::Builder::new()
        .prefix("ste-bench-")
        .tempdir_in(&args.work_dir)
        .with_context(|| format!("creating a temp dir in {}", args.work_dir.display()))?;
    let root_path = root.path().to_path_buf();
    eprintln!("ste-bench: working in {}", root_path.display());

    let outcome = tokio::select! {
        result = sweep::run(&args, &root_path, bin_dir, etcd_version) => result,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}; cleaned up")),
    };
    // Whatever happened, the processes are stopped by now (the sweep
    // future and its kill-on-drop wrappers are gone). Nothing may stay
    // mounted under the temp dir before it is removed.
    let left = sys::mounts_under(&root_path);
    if left.is_empty() {
        eprintln!(
            "cleanup: all processes stopped, nothing left mounted under {}",
            root_path.display()
        );
    } else {
        eprintln!(
            "cleanup: warning: {} mount(s) left under {} ({}); detaching them",
            left.len(),
            root_path.display(),
            left.iter()
                .map(|m| m.mount_point.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        sys::unmount_all_under(&root_path);
    }
    root.close()
        .with_context(|| format!("removing {}", root_path.display()))?;
    eprintln!("cleanup: removed {}", root_path.display());
    outcome
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

/// The loud warning a debug build prints.
pub fn debug_warning() -> String {
    let line = "!".repeat(78);
    format!(
        "{line}\n!! WARNING: this is a DEBUG build. ste-router and ste-agent are unoptimised, so\n\
         !! STE's numbers are far below what it can do. Numbers from this run are NOT\n\
         !! representative: {BUILD_HINT}, then\n\
         !! cargo run --release -p ste-bench\n{line}"
    )
}

/// `n` and the noun, singular for exactly one: `1 full list`, `3 pages`.
pub fn count(n: impl Into<u64>, singular: &str, plural: &str) -> String {
    match n.into() {
        1 => format!("1 {singular}"),
        n => format!("{n} {plural}"),
    }
}

/// STE_* variables of the caller's environment would configure the agents
/// and the router behind the bench's back.
pub fn clear_ste_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STE_") {
            command.env_remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{auto_tmpfs_size, count};

    #[test]
    fn count_is_singular_for_exactly_one() {
        assert_eq!(count(1u8, "page", "pages"), "1 page");
        assert_eq!(count(0u8, "page", "pages"), "0 pages");
        assert_eq!(count(3u64, "full list", "full lists"), "3 full lists");
    }

    #[test]
    fn auto_tmpfs_grows_with_the_workload_from_the_agents_minimum() {
        assert_eq!(auto_tmpfs_size(1, 100, 3), "256Mi");
        assert_eq!(auto_tmpfs_size(5_000, 4_000, 3), "256Mi");
        assert_eq!(auto_tmpfs_size(20_000, 4_000, 3), "576Mi");
        assert_eq!(auto_tmpfs_size(150_000, 2_000, 3), "1984Mi");
        // One shard holds every key; two, three quarters of them.
        assert_eq!(auto_tmpfs_size(20_000, 4_000, 1), "1024Mi");
        assert_eq!(auto_tmpfs_size(20_000, 4_000, 2), "832Mi");
    }
}
