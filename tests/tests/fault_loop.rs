//! The fault loop (Jepsen-style, bounded in time, loopback only): a router
//! with three real agents on real tmpfs, writers doing kube-apiserver's
//! create/update/delete Txns on Pod keys, watchers that resume and relist
//! as a reflector does, and a seeded nemesis that `kill -9`s the router, a
//! shard's etcd or an agent, SIGSTOPs a shard past `--shard-timeout`,
//! drains an agent out of the ring and back, and fills a tmpfs to ENOSPC.
//! After the last fault is healed, a checker holds the history against
//! the promises of docs/faults.md (see docs/fault-loop.md):
//!
//! - every acknowledged write is readable with its revision, except on a
//!   member that was fenced or whose shard came back empty (those keys are
//!   lost by design);
//! - acknowledged revisions strictly increase, per writer and across
//!   router restarts, and no two writes share one;
//! - every watcher saw each event once, in order, with no gap, or was cut
//!   (compacted / canceled) and relisted;
//! - no request outlived its deadline by more than a margin;
//! - the router's RSS stayed under a bound derived from its flags.
//!
//! `STE_FAULT_SEED` replays a nemesis schedule, `STE_FAULT_SECONDS` sets
//! how long the faults run (default 60), `STE_FAULT_RUNS` how many runs in
//! a row (default 1).

#[path = "fault_loop/checker.rs"]
mod checker;
#[path = "fault_loop/history.rs"]
mod history;
#[path = "fault_loop/nemesis.rs"]
mod nemesis;
#[path = "fault_loop/watchers.rs"]
mod watchers;
#[path = "fault_loop/writers.rs"]
mod writers;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ste_tests::{AgentOptions, TestAgent, TestRouter};

use history::History;

/// The deadline every client request carries (etcdctl's default
/// `--command-timeout`; above `--shard-timeout` plus the 1 s read-back
/// that docs/faults.md says a write may wait).
pub const DEADLINE: Duration = Duration::from_secs(5);
/// How far past its deadline a request may take before it counts as hung:
/// the client's own timer firing late on a loaded 2-core machine.
pub const MARGIN: Duration = Duration::from_secs(3);
/// The router's `--shard-timeout`.
pub const SHARD_TIMEOUT: Duration = Duration::from_secs(2);
/// The router's `--event-log-bytes`.
pub const EVENT_LOG_BYTES: u64 = 8 << 20;
/// The router's RSS bound beyond its event log: code, runtime, gRPC
/// buffers and an index of a few hundred keys (a debug build measures
/// about 30-40 MiB here).
pub const RSS_BASE_BYTES: u64 = 128 << 20;
/// Writers, each owning `KEYS_PER_WRITER` Pod keys of its own.
pub const WRITERS: usize = 6;
pub const KEYS_PER_WRITER: usize = 24;
pub const WATCHERS: usize = 3;

/// A small seeded generator (splitmix64): the nemesis schedule replays
/// from the seed alone.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A duration between `low` and `high`, in milliseconds steps.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = (high - low).as_millis() as u64;
        low + Duration::from_millis(self.below(span + 1))
    }
}

/// The Pod key `i` of writer `writer`.
pub fn pod_key(writer: usize, i: usize) -> String {
    format!("/registry/pods/fault-{writer}/pod-{i:03}")
}

/// Every key the writers write, in writer order.
pub fn all_keys() -> Vec<String> {
    (0..WRITERS)
        .flat_map(|w| (0..KEYS_PER_WRITER).map(move |i| pod_key(w, i)))
        .collect()
}

/// A client of `endpoint` whose every request carries [`DEADLINE`].
pub async fn connect(endpoint: &str) -> anyhow::Result<etcd_client::Client> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(DEADLINE);
    let connect = etcd_client::Client::connect([endpoint], Some(options));
    Ok(tokio::time::timeout(DEADLINE, connect).await??)
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

/// Samples the router's VmRSS every 200 ms while `stop` is false; the
/// router's pid is read from `pid` (the nemesis updates it on a restart).
async fn sample_rss(pid: Arc<AtomicU32>, max: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let pid = pid.load(Ordering::Relaxed);
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            max.fetch_max(kb * 1024, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Copies the router's and the agents' logs out of their temp dirs
/// (removed on drop) to `$TMPDIR/ste-fault-loop-<seed>/` for a failed run.
fn keep_logs(seed: u64, router: &TestRouter, agents: &[TestAgent]) {
    let dir = std::env::temp_dir().join(format!("ste-fault-loop-{seed:#x}"));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("router.log"), router.log());
    for agent in agents {
        let _ = std::fs::write(
            dir.join(format!("{}.log", agent.options.node_name)),
            agent.log(),
        );
    }
    eprintln!("logs kept in {}", dir.display());
}

/// One run of the loop with `seed` for `seconds`; returns its report, or
/// fails with the report and every violation.
async fn run(seed: u64, seconds: u64) -> anyhow::Result<String> {
    let started = Instant::now();
    let router_args = [
        "--shard-timeout".to_string(),
        format!("{}s", SHARD_TIMEOUT.as_secs()),
        "--member-dead-after".into(),
        "10s".into(),
        "--event-log-bytes".into(),
        EVENT_LOG_BYTES.to_string(),
    ];
    let args: Vec<&str> = router_args.iter().map(String::as_str).collect();
    let mut router = TestRouter::spawn_new(&[], &args)?;
    let mut agents: Vec<TestAgent> = ["node-a", "node-b", "node-c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            TestAgent::spawn_new(AgentOptions::registering_with(name, 2 + i as u8, &router))
        })
        .collect::<anyhow::Result<_>>()?;
    nemesis::settle(&router, &agents).await?;

    let history = Arc::new(History::new(started));
    let stop_writers = Arc::new(AtomicBool::new(false));
    let endpoint = router.endpoint();
    let writer_tasks: Vec<_> = (0..WRITERS)
        .map(|id| {
            tokio::spawn(writers::writer(
                endpoint.clone(),
                id,
                seed ^ (id as u64 + 1).wrapping_mul(0x51_7CC1),
                history.clone(),
                stop_writers.clone(),
            ))
        })
        .collect();
    let stop_at = Arc::new(AtomicI64::new(0));
    let watcher_tasks: Vec<_> = (0..WATCHERS)
        .map(|id| {
            let log = Arc::new(Mutex::new(watchers::WatchLog::default()));
            let task = tokio::spawn(watchers::watcher(
                endpoint.clone(),
                log.clone(),
                history.clone(),
                stop_at.clone(),
            ));
            (id, log, task)
        })
        .collect();
    let router_pid = Arc::new(AtomicU32::new(router.pid().unwrap_or(0)));
    let max_rss = Arc::new(AtomicU64::new(0));
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_rss(
        router_pid.clone(),
        max_rss.clone(),
        stop_sampler.clone(),
    ));

    let mut nemesis = nemesis::Nemesis::new(seed, history.clone(), router_pid);
    let faults = nemesis
        .run(&mut router, &mut agents, Duration::from_secs(seconds))
        .await;
    if faults.is_err() {
        keep_logs(seed, &router, &agents);
    }

    stop_writers.store(true, Ordering::Relaxed);
    for task in writer_tasks {
        task.await??;
    }
    if faults.is_ok() {
        nemesis.finish(&router).await?;
    }
    let sentinel = nemesis::sentinel(&router, &history).await?;
    stop_at.store(sentinel, Ordering::Relaxed);
    let mut watch_logs = Vec::new();
    for (id, log, task) in watcher_tasks {
        match tokio::time::timeout(Duration::from_secs(120), task).await {
            Ok(joined) => joined??,
            Err(_) => history.violation(format!(
                "watcher {id} did not reach the final revision {sentinel} within 120 s"
            )),
        }
        watch_logs.push((id, log.lock().unwrap().clone()));
    }
    stop_sampler.store(true, Ordering::Relaxed);
    sampler.await?;
    let faults = faults?;

    let checked = checker::check(&router, &history, &watch_logs).await?;
    let max_rss = max_rss.load(Ordering::Relaxed);
    let rss_bound = EVENT_LOG_BYTES + RSS_BASE_BYTES;
    if max_rss > rss_bound {
        history.violation(format!(
            "router RSS reached {} MiB, above the bound {} MiB",
            max_rss >> 20,
            rss_bound >> 20
        ));
    }
    let report = checker::report(
        seed,
        started.elapsed(),
        &faults,
        &history,
        &checked,
        &watch_logs,
        (max_rss, rss_bound),
    );
    let violations = history.violations();
    if !violations.is_empty() {
        keep_logs(seed, &router, &agents);
        anyhow::bail!(
            "{report}\n{} violation(s):\n{}\nrouter log (last 60 lines):\n{}",
            violations.len(),
            violations.join("\n"),
            ste_tests::control_plane::process::tail(&router.log(), 60)
        );
    }
    Ok(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_nemesis() -> anyhow::Result<()> {
    let seconds = env_u64("STE_FAULT_SECONDS").unwrap_or(60);
    let runs = env_u64("STE_FAULT_RUNS").unwrap_or(1);
    let first_seed = env_u64("STE_FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    for i in 0..runs {
        let seed = first_seed.wrapping_add(i);
        eprintln!(
            "fault loop run {}/{runs}: STE_FAULT_SEED={seed:#x} STE_FAULT_SECONDS={seconds}",
            i + 1
        );
        let report = run(seed, seconds)
            .await
            .map_err(|e| e.context(format!("replay with STE_FAULT_SEED={seed:#x}")))?;
        println!("{report}");
    }
    Ok(())
}
