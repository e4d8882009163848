//! ste-bench: STE against the etcd it replaces, side by side in one run.
//!
//! Baseline: one etcd as a control plane runs it (data on disk, fsync on).
//! STE: three ste-agent shards (etcd on tmpfs, no fsync) behind ste-router.
//! Both get the same workload: the requests kube-apiserver sends for pods
//! (create, update, get, paginated list, delete), one system at a time, so
//! each has the machine to itself while it is measured.

mod report;
mod sys;
mod workload;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use nix::sys::signal::Signal;
use ste_proto::v1::agent_client::AgentClient;
use ste_proto::v1::{AgentState, GetStatusRequest};

use crate::report::PhaseStats;
use crate::sys::{Proc, free_port};
use crate::workload::Workload;

const BUILD_HINT: &str = "build with cargo build --release --workspace --bins";

#[derive(Debug, Parser)]
#[command(
    name = "ste-bench",
    about = "Benchmark STE (ste-router + 3 tmpfs shards) against one fsync'd on-disk etcd, \
             with kube-apiserver's pod request shapes. Needs root (the agents mount tmpfs)."
)]
struct Args {
    /// Operations per phase (create, update, get, delete): one pod key each.
    #[arg(long, default_value_t = 5000)]
    ops: usize,
    /// Concurrent requests in flight (tasks sharing one client).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Bytes per value (a typical pod object is a few KB).
    #[arg(long, default_value_t = 4000)]
    value_bytes: usize,
    /// Full paginated lists of the whole prefix in the list phase.
    #[arg(long, default_value_t = 10)]
    list_repeats: usize,
    /// Page size (limit) of the paginated lists.
    #[arg(long, default_value_t = 500)]
    page_size: i64,
    /// Namespaces the pods are spread over (/registry/pods/ns-{i % N}/pod-{i}).
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// Unmeasured put+delete pairs before the phases, on another prefix.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Where the temp dir goes: the baseline's data dir must be on disk.
    #[arg(long, default_value = "/var/tmp")]
    work_dir: PathBuf,
    /// tmpfs size of each STE shard (the agent's --tmpfs-size).
    #[arg(long, default_value = "256Mi")]
    tmpfs_size: String,
    /// The etcd binary, for the baseline and the shards.
    #[arg(long, default_value = "etcd")]
    etcd_bin: String,
    /// How long a process may take to start serving.
    #[arg(long, default_value = "60s")]
    ready_timeout: humantime::Duration,
    /// The router's key index (its --key-index): btree or betree.
    #[arg(long, default_value = "btree", value_parser = ["btree", "betree"])]
    key_index: String,
}

/// Everything the report needs besides the numbers.
struct Facts {
    machine: sys::Machine,
    etcd_version: String,
    bin_dir: PathBuf,
    baseline_dir: PathBuf,
    baseline_fs: sys::Mount,
    fdatasync: Option<(Duration, Duration)>,
    shard_fs: String,
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

async fn real_main(args: Args) -> anyhow::Result<()> {
    ensure!(args.ops > 0, "--ops must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(args.list_repeats > 0, "--list-repeats must be at least 1");
    ensure!(args.page_size > 0, "--page-size must be at least 1");
    ensure!(args.namespaces > 0, "--namespaces must be at least 1");
    if cfg!(debug_assertions) {
        eprintln!("{}", debug_warning());
    }
    ensure!(
        nix::unistd::geteuid().is_root(),
        "ste-bench needs root: the STE agents mount their tmpfs (run it with sudo)"
    );
    let bin_dir = std::env::current_exe()
        .context("locating the ste-bench binary")?
        .parent()
        .context("ste-bench binary has no parent dir")?
        .to_path_buf();
    for bin in ["ste-agent", "ste-router"] {
        ensure!(
            bin_dir.join(bin).is_file(),
            "{} not found next to ste-bench in {}: {BUILD_HINT}",
            bin,
            bin_dir.display()
        );
    }
    let etcd_version = sys::etcd_version(&args.etcd_bin)?;

    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let root = tempfile::Builder::new()
        .prefix("ste-bench-")
        .tempdir_in(&args.work_dir)
        .with_context(|| format!("creating a temp dir in {}", args.work_dir.display()))?;
    let root_path = root.path().to_path_buf();
    eprintln!("ste-bench: working in {}", root_path.display());

    let outcome = tokio::select! {
        result = bench(&args, &root_path, bin_dir, etcd_version) => result,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}; cleaned up")),
    };
    // Whatever happened, the processes are stopped by now (the bench
    // future and its kill-on-drop wrappers are gone). Nothing may stay
    // mounted under the temp dir before it is removed.
    let left = sys::mounts_under(&root_path);
    if left.is_empty() {
        eprintln!(
            "cleanup: all processes stopped, no tmpfs left mounted under {}",
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

fn debug_warning() -> String {
    let line = "!".repeat(78);
    format!(
        "{line}\n!! WARNING: this is a DEBUG build. ste-router and ste-agent are unoptimised, so\n\
         !! STE's numbers are far below what it can do. Numbers from this run are NOT\n\
         !! representative: {BUILD_HINT}, then\n\
         !! cargo run --release -p ste-bench\n{line}"
    )
}

async fn bench(
    args: &Args,
    root: &Path,
    bin_dir: PathBuf,
    etcd_version: String,
) -> anyhow::Result<()> {
    let w = Workload {
        ops: args.ops,
        concurrency: args.concurrency,
        value_bytes: args.value_bytes,
        namespaces: args.namespaces,
        list_repeats: args.list_repeats,
        page_size: args.page_size,
        warmup: args.warmup,
    };
    let ready = Duration::from(args.ready_timeout);

    // ---- baseline ----
    let baseline_dir = root.join("etcd-baseline");
    std::fs::create_dir(&baseline_dir)?;
    ensure!(
        !sys::is_tmpfs(&baseline_dir)?,
        "{} is on tmpfs, but the baseline etcd must keep its data on disk as a control \
         plane does: pass --work-dir on a disk filesystem",
        baseline_dir.display()
    );
    let baseline_fs = sys::mount_of(&baseline_dir)?;
    let fdatasync = sys::fdatasync_latency(&baseline_dir, 200)
        .map_err(|e| eprintln!("warning: fdatasync probe failed: {e:#}"))
        .ok();
    eprintln!(
        "baseline: data dir {} is on {} ({}), not tmpfs",
        baseline_dir.display(),
        baseline_fs.fs_type,
        baseline_fs.source
    );
    let baseline_results = {
        let mut etcd = start_baseline(&args.etcd_bin, &baseline_dir, ready).await?;
        let client = workload::connect(&etcd.url).await?;
        eprintln!(
            "baseline: etcd serving on {}; running the workload",
            etcd.url
        );
        let pid = etcd.proc.pid().into_iter().collect::<Vec<_>>();
        let cpu = || vec![sys::tree_cpu(&pid)];
        let results = workload::run(&client, &w, cpu, |s| progress("baseline", s))
            .await
            .context("baseline etcd")?;
        drop(client);
        etcd.proc.ensure_running()?;
        etcd.proc.stop(Duration::from_secs(10)).await;
        eprintln!("baseline: etcd stopped");
        results
    };

    // ---- STE ----
    let mut ste = Ste::start(args, root, &bin_dir, ready).await?;
    let mut shard_fs = Vec::new();
    for agent in &ste.agents {
        ensure!(
            sys::is_tmpfs(&agent.data_dir)?,
            "{}'s data dir {} is not a tmpfs",
            agent.name,
            agent.data_dir.display()
        );
        shard_fs.push(sys::mount_of(&agent.data_dir)?.fs_type);
    }
    shard_fs.dedup();
    let shard_fs = shard_fs.join(", ");
    let client = workload::connect(&ste.router_url).await?;
    eprintln!(
        "ste: router serving on {} in front of {} shards (data dirs on {shard_fs}); running the workload",
        ste.router_url,
        ste.agents.len()
    );
    let router_pid: Vec<u32> = ste
        .router
        .as_ref()
        .and_then(|r| r.pid())
        .into_iter()
        .collect();
    let agent_pids: Vec<u32> = ste.agents.iter().filter_map(|a| a.proc.pid()).collect();
    let cpu = || vec![sys::tree_cpu(&router_pid), sys::tree_cpu(&agent_pids)];
    let ste_results = workload::run(&client, &w, cpu, |s| progress("ste", s))
        .await
        .context("STE (through ste-router)");
    drop(client);
    ste.shutdown().await?;
    let ste_results = ste_results?;

    let facts = Facts {
        machine: sys::machine(),
        etcd_version,
        bin_dir,
        baseline_dir,
        baseline_fs,
        fdatasync,
        shard_fs,
    };
    print!("{}", render(args, &facts, &baseline_results, &ste_results));
    Ok(())
}

fn progress(system: &str, s: &PhaseStats) {
    eprintln!(
        "{system}: {:<6} {:>6} ops in {:>7.2}s  ({:.0} ops/s, p50 {} ms, p99 {} ms)",
        s.phase,
        s.ops(),
        s.wall.as_secs_f64(),
        s.ops_per_sec(),
        report::ms(s.p50()),
        report::ms(s.p99())
    );
}

fn render(args: &Args, f: &Facts, baseline: &[PhaseStats], ste: &[PhaseStats]) -> String {
    let m = &f.machine;
    let mut out = String::new();
    out.push('\n');
    if cfg!(debug_assertions) {
        out.push_str(&debug_warning());
        out.push('\n');
    }
    let pages = args.ops.div_ceil(args.page_size as usize);
    out.push_str(&format!(
        "workload: {} ops per phase, concurrency {}, {}-byte values, keys /registry/pods/ns-{{i%{}}}/pod-{{i}}, \
         list = {} full lists of {} pages (limit {})\n",
        args.ops,
        args.concurrency,
        args.value_bytes,
        args.namespaces,
        args.list_repeats,
        pages,
        args.page_size
    ));
    out.push_str(&format!(
        "machine:  {} CPUs ({}), {}, Linux {}; all processes on this machine, loopback only\n",
        m.cpus, m.cpu_model, m.memory, m.kernel
    ));
    out.push_str(&format!(
        "build:    {} (binaries in {})\n",
        if cfg!(debug_assertions) {
            "DEBUG - numbers not representative"
        } else {
            "release"
        },
        f.bin_dir.display()
    ));
    out.push_str(&format!(
        "etcd:     {} ({})\n",
        f.etcd_version, args.etcd_bin
    ));
    out.push_str(&format!("router:   --key-index {}\n", args.key_index));
    let fsync = match f.fdatasync {
        Some((p50, p99)) => format!(
            "; 4 KiB write+fdatasync p50 {} ms, p99 {} ms",
            report::ms(p50),
            report::ms(p99)
        ),
        None => String::new(),
    };
    out.push_str(&format!(
        "baseline: 1 etcd member, fsync on, data dir {} on {} ({}){fsync}\n",
        f.baseline_dir.display(),
        f.baseline_fs.fs_type,
        f.baseline_fs.source
    ));
    out.push_str(&format!(
        "STE:      ste-router + 3 ste-agent shards (etcd --unsafe-no-fsync, data dirs on {}, {} each)\n\n",
        f.shard_fs, args.tmpfs_size
    ));
    out.push_str(&report::table(baseline, ste));
    out.push_str(&format!(
        "* list: one op = one full paginated list of all {} keys; ops/s = lists/s\n",
        args.ops
    ));
    out.push_str("speedup = STE ops/s / baseline ops/s\n\n");
    out.push_str(&report::cpu_table(
        baseline,
        &["etcd"],
        ste,
        &["router", "shards"],
        m.cpus,
    ));
    out.push_str("shards = the 3 ste-agents and their etcds\n");
    out
}

/// The baseline etcd.
struct Baseline {
    proc: Proc,
    url: String,
}

/// One etcd as kubeadm runs it, minus TLS: data on disk, fsync on (no
/// --unsafe-no-fsync), --snapshot-count=10000, default quota.
async fn start_baseline(bin: &str, dir: &Path, ready: Duration) -> anyhow::Result<Baseline> {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let url = format!("http://{ip}:{}", free_port(ip)?);
    let peer = format!("http://{ip}:{}", free_port(ip)?);
    let mut command = Command::new(bin);
    command
        .arg("--name=baseline")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=baseline={peer}"))
        .arg("--initial-cluster-state=new")
        .arg("--snapshot-count=10000")
        .arg("--logger=zap")
        .arg("--log-outputs=stderr");
    clear_ste_env(&mut command);
    let mut proc = Proc::spawn(
        "baseline etcd",
        command,
        dir.join("etcd.log"),
        Signal::SIGKILL,
        Duration::from_secs(10),
    )?;
    let deadline = Instant::now() + ready;
    loop {
        proc.ensure_running()?;
        let last = match etcd_answers(&url).await {
            Ok(()) => return Ok(Baseline { proc, url }),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "baseline etcd did not answer within {ready:?} (last: {last}); end of its log:\n{}",
                proc.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True once a Range over the pod prefix succeeds (the router answers
/// UNAVAILABLE until its start-up scan is done).
async fn etcd_answers(url: &str) -> anyhow::Result<()> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    let mut client = etcd_client::Client::connect([url], Some(options)).await?;
    client.status().await?;
    client
        .get(
            workload::PREFIX,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await?;
    Ok(())
}

/// STE_* variables of the caller's environment would configure the agents
/// and the router behind the bench's back.
fn clear_ste_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STE_") {
            command.env_remove(key);
        }
    }
}

/// One ste-agent. Drop stops it with SIGTERM (so it unmounts its tmpfs)
/// and then detaches anything still mounted at its data dir.
struct Agent {
    name: String,
    proc: Proc,
    grpc: SocketAddr,
    client_url: String,
    data_dir: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.proc.stop_blocking(Duration::from_secs(30));
        sys::unmount_all_under(&self.data_dir);
    }
}

/// The three agents and the router. Fields drop in order: the router first.
struct Ste {
    router: Option<Proc>,
    router_url: String,
    agents: Vec<Agent>,
}

impl Ste {
    async fn start(
        args: &Args,
        root: &Path,
        bin_dir: &Path,
        ready: Duration,
    ) -> anyhow::Result<Self> {
        let mut ste = Ste {
            router: None,
            router_url: String::new(),
            agents: Vec::new(),
        };
        for (i, name) in ["node-a", "node-b", "node-c"].iter().enumerate() {
            let ip = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
            let ipa = IpAddr::V4(ip);
            let dir = root.join(name);
            std::fs::create_dir(&dir)?;
            let data_dir = dir.join("shard");
            let grpc = SocketAddr::new(ipa, free_port(ipa)?);
            let metrics = SocketAddr::new(ipa, free_port(ipa)?);
            let client_url = format!("http://{ip}:{}", free_port(ipa)?);
            let peer_url = format!("http://{ip}:{}", free_port(ipa)?);
            let mut command = Command::new(bin_dir.join("ste-agent"));
            command
                .arg("--node-name")
                .arg(name)
                .arg("--node-ip")
                .arg(ip.to_string())
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--tmpfs-size")
                .arg(&args.tmpfs_size)
                .arg("--mount")
                .arg("managed")
                .arg("--etcd-bin")
                .arg(&args.etcd_bin)
                .arg("--etcd-client-url")
                .arg(&client_url)
                .arg("--etcd-peer-url")
                .arg(&peer_url)
                .arg("--grpc-listen")
                .arg(grpc.to_string())
                .arg("--metrics-listen")
                .arg(metrics.to_string());
            clear_ste_env(&mut command);
            // If the bench dies, the agent gets SIGTERM: it stops etcd and
            // unmounts its tmpfs by itself.
            let proc = Proc::spawn(
                &format!("ste-agent {name}"),
                command,
                dir.join("agent.log"),
                Signal::SIGTERM,
                Duration::from_secs(30),
            )?;
            ste.agents.push(Agent {
                name: name.to_string(),
                proc,
                grpc,
                client_url,
                data_dir,
            });
        }
        for agent in &mut ste.agents {
            wait_agent_serving(agent, ready).await?;
            eprintln!(
                "ste: {} SERVING (shard {}, tmpfs {} at {})",
                agent.name,
                agent.client_url,
                args.tmpfs_size,
                agent.data_dir.display()
            );
        }

        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let listen = SocketAddr::new(ip, free_port(ip)?);
        let dir = root.join("router");
        std::fs::create_dir(&dir)?;
        let mut command = Command::new(bin_dir.join("ste-router"));
        command
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin-listen")
            .arg(SocketAddr::new(ip, free_port(ip)?).to_string())
            .arg("--metrics-listen")
            .arg(SocketAddr::new(ip, free_port(ip)?).to_string())
            .arg("--state-file")
            .arg(dir.join("router.state"))
            .arg("--key-index")
            .arg(&args.key_index);
        for agent in &ste.agents {
            command
                .arg("--member")
                .arg(format!("{}={}", agent.name, agent.client_url));
        }
        clear_ste_env(&mut command);
        let router = ste.router.insert(Proc::spawn(
            "ste-router",
            command,
            dir.join("router.log"),
            Signal::SIGKILL,
            Duration::from_secs(10),
        )?);
        ste.router_url = format!("http://{listen}");
        let deadline = Instant::now() + ready;
        loop {
            router.ensure_running()?;
            let last = match etcd_answers(&ste.router_url).await {
                Ok(()) => break,
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "ste-router did not serve within {ready:?} (last: {last}); end of its log:\n{}",
                    router.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(ste)
    }

    /// Stops the router, then all agents at once (SIGTERM; each stops its
    /// etcd and unmounts its tmpfs), and checks nothing stays mounted.
    async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(mut router) = self.router.take() {
            router.stop(Duration::from_secs(10)).await;
        }
        for agent in &self.agents {
            agent.proc.terminate();
        }
        let mut problems = Vec::new();
        for agent in &mut self.agents {
            match agent.proc.stop(Duration::from_secs(30)).await {
                Some(status) if status.success() => {}
                Some(status) => problems.push(format!("{} exited with {status}", agent.name)),
                None => problems.push(format!("{} had to be killed", agent.name)),
            }
            if !sys::mounts_under(&agent.data_dir).is_empty() {
                problems.push(format!(
                    "{} left a mount at {}",
                    agent.name,
                    agent.data_dir.display()
                ));
                sys::unmount_all_under(&agent.data_dir);
            }
        }
        ensure!(problems.is_empty(), "stopping STE: {}", problems.join("; "));
        eprintln!("ste: router and agents stopped, agents unmounted their tmpfs");
        Ok(())
    }
}

async fn wait_agent_serving(agent: &mut Agent, ready: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + ready;
    loop {
        agent.proc.ensure_running()?;
        let last = match agent_state(agent.grpc).await {
            Ok(AgentState::Serving) => return Ok(()),
            Ok(state) => format!("state {}", state.as_str_name()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "{} was not SERVING within {ready:?} (last: {last}); end of its log:\n{}",
                agent.name,
                agent.proc.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn agent_state(grpc: SocketAddr) -> anyhow::Result<AgentState> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let status = AgentClient::new(channel)
        .get_status(GetStatusRequest {})
        .await?
        .into_inner();
    Ok(status.state())
}
