//! The nemesis: one fault at a time, chosen and timed from the seed, each
//! healed and the cluster settled before the next. Around every fault it
//! notes which member held which key and reads the router's log for a
//! member it fenced or a shard it found empty, so the checker knows which
//! acknowledged writes docs/faults.md allows to be lost.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ste_proto::v1::{AgentState, MemberHealth};
use ste_tests::procs::sigkill;
use ste_tests::{TestAgent, TestRouter, eventually, ring};

use crate::history::{History, Loss, Outcome, Restart, Write};
use crate::{Rng, SHARD_TIMEOUT, all_keys, connect};

/// The faults, in the order the brief lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// `kill -9` the router, start it again on the same state file.
    RouterKill,
    /// `kill -9` a shard's etcd; its agent starts a new (empty) epoch.
    EtcdKill,
    /// `kill -9` an agent (its etcd dies with it), start it again.
    AgentKill,
    /// SIGSTOP a shard's etcd for longer than `--shard-timeout`, then
    /// SIGCONT.
    ShardStop,
    /// SIGTERM an agent (it drains: the member leaves the ring), start it
    /// again (it joins).
    LeaveJoin,
    /// Fill the agent's tmpfs until ENOSPC, hold, free it.
    NoSpace,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::RouterKill,
        FaultKind::EtcdKill,
        FaultKind::AgentKill,
        FaultKind::ShardStop,
        FaultKind::LeaveJoin,
        FaultKind::NoSpace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::RouterKill => "router-kill",
            FaultKind::EtcdKill => "etcd-kill",
            FaultKind::AgentKill => "agent-kill",
            FaultKind::ShardStop => "shard-stop",
            FaultKind::LeaveJoin => "leave-join",
            FaultKind::NoSpace => "nospace",
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub victim: String,
    /// When it started, from the start of the run.
    pub at: Duration,
    /// From injection until the cluster had settled again.
    pub healed_after: Duration,
    /// Members the router fenced or found empty meanwhile.
    pub lost: BTreeSet<String>,
}

pub struct Nemesis {
    rng: Rng,
    /// The placement after the last fault settled, and how much of the
    /// router's log had been read then.
    last: Option<(BTreeMap<String, String>, usize, Instant)>,
    history: Arc<History>,
    router_pid: Arc<AtomicU32>,
    keys: Vec<String>,
}

impl Nemesis {
    pub fn new(seed: u64, history: Arc<History>, router_pid: Arc<AtomicU32>) -> Self {
        Nemesis {
            rng: Rng::new(seed),
            last: None,
            history,
            router_pid,
            keys: all_keys(),
        }
    }

    /// Injects faults for `duration`, each healed and settled before the
    /// next, then reads the log once more for a late fence.
    pub async fn run(
        &mut self,
        router: &mut TestRouter,
        agents: &mut [TestAgent],
        duration: Duration,
    ) -> anyhow::Result<Vec<Fault>> {
        let end = Instant::now() + duration;
        let mut faults = Vec::new();
        // Each fault's window: from before the placement `owners` was
        // read (the last settle) until its own settle.
        let mut since = Instant::now();
        let mut owners = self.owners(router).await?;
        let mut log_offset = router.log().len();
        while Instant::now() < end {
            tokio::time::sleep(
                self.rng
                    .between(Duration::from_millis(500), Duration::from_secs(3)),
            )
            .await;
            let kind = FaultKind::ALL[self.rng.below(FaultKind::ALL.len() as u64) as usize];
            let victim = self.rng.below(agents.len() as u64) as usize;
            let at = self.history.started.elapsed();
            let injected = Instant::now();
            eprintln!(
                "  {:>6.1}s {} {}",
                at.as_secs_f64(),
                kind.name(),
                agents[victim].options.node_name
            );
            self.inject(kind, router, &mut agents[victim]).await?;
            settle(router, agents).await?;
            // The placement now, before the log is read: a fence logged
            // from here on was placed by `owners` or by `now`.
            let next_since = Instant::now();
            let now = self.owners(router).await?;
            let lost = self
                .losses(router, [&owners, &now], since, &mut log_offset)
                .await?;
            faults.push(Fault {
                kind,
                victim: match kind {
                    FaultKind::RouterKill => "router".into(),
                    _ => agents[victim].options.node_name.clone(),
                },
                at,
                healed_after: injected.elapsed(),
                lost,
            });
            owners = now;
            since = next_since;
        }
        self.last = Some((owners, log_offset, since));
        Ok(faults)
    }

    /// Reads the router's log once more after the run, for a member fenced
    /// after the last fault settled.
    pub async fn finish(&mut self, router: &TestRouter) -> anyhow::Result<()> {
        if let Some((owners, mut offset, since)) = self.last.take() {
            let now = self.owners(router).await?;
            self.losses(router, [&owners, &now], since, &mut offset)
                .await?;
        }
        Ok(())
    }

    /// Reads the router's log since `offset` for a member it fenced or
    /// whose shard came back empty, and records the keys either placement
    /// of `owners` (before the fault, after it) put on it as lost up to
    /// the current revision.
    async fn losses(
        &self,
        router: &TestRouter,
        owners: [&BTreeMap<String, String>; 2],
        since: Instant,
        offset: &mut usize,
    ) -> anyhow::Result<BTreeSet<String>> {
        let log = router.log();
        let lost = lost_members(&log[(*offset).min(log.len())..]);
        *offset = log.len();
        if !lost.is_empty() {
            let up_to = read_revision(router).await?;
            for member in &lost {
                let keys = owners
                    .iter()
                    .flat_map(|o| o.iter())
                    .filter(|(_, m)| *m == member)
                    .map(|(k, _)| k.clone())
                    .collect();
                self.history.loss(Loss {
                    member: member.clone(),
                    keys,
                    since,
                    up_to,
                });
            }
        }
        Ok(lost)
    }

    /// The member each key is placed on now (the ring is stable: no fault
    /// runs).
    async fn owners(&self, router: &TestRouter) -> anyhow::Result<BTreeMap<String, String>> {
        let mut admin = router.admin().await?;
        let mut owners = BTreeMap::new();
        for key in &self.keys {
            owners.insert(key.clone(), ring::member_of(&mut admin, key).await?);
        }
        Ok(owners)
    }

    async fn inject(
        &mut self,
        kind: FaultKind,
        router: &mut TestRouter,
        agent: &mut TestAgent,
    ) -> anyhow::Result<()> {
        match kind {
            FaultKind::RouterKill => {
                router.kill9();
                let acked_before = self.history.max_acked();
                tokio::time::sleep(
                    self.rng
                        .between(Duration::from_millis(100), Duration::from_millis(1500)),
                )
                .await;
                router.restart().await?;
                self.router_pid
                    .store(router.pid().unwrap_or(0), Ordering::Relaxed);
                let read_after = read_revision(router).await?;
                self.history.restart(Restart {
                    acked_before,
                    read_after,
                });
            }
            FaultKind::EtcdKill => {
                for pid in agent.etcd_pids() {
                    sigkill(pid);
                }
            }
            FaultKind::AgentKill => {
                agent.signal(Signal::SIGKILL)?;
                agent.wait_exit(Duration::from_secs(30)).await?;
                tokio::time::sleep(
                    self.rng
                        .between(Duration::from_millis(100), Duration::from_secs(1)),
                )
                .await;
                agent.respawn()?;
            }
            FaultKind::ShardStop => {
                let pids = agent.etcd_pids();
                for pid in &pids {
                    let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGSTOP);
                }
                tokio::time::sleep(
                    SHARD_TIMEOUT
                        + self
                            .rng
                            .between(Duration::from_millis(500), Duration::from_millis(2500)),
                )
                .await;
                for pid in &pids {
                    let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGCONT);
                }
            }
            FaultKind::LeaveJoin => {
                agent.signal(Signal::SIGTERM)?;
                let exit = agent.wait_exit(Duration::from_secs(180)).await?;
                if !exit.success() {
                    self.history.violation(format!(
                        "{} did not drain on SIGTERM: {exit}; log:\n{}",
                        agent.options.node_name,
                        ste_tests::control_plane::process::tail(&agent.log(), 30)
                    ));
                }
                tokio::time::sleep(
                    self.rng
                        .between(Duration::from_millis(100), Duration::from_secs(2)),
                )
                .await;
                agent.respawn()?;
            }
            FaultKind::NoSpace => {
                let filler = agent.data_dir().join("fault-loop-filler");
                fill(&filler)?;
                tokio::time::sleep(
                    self.rng
                        .between(Duration::from_secs(1), Duration::from_secs(3)),
                )
                .await;
                std::fs::remove_file(&filler)?;
            }
        }
        Ok(())
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &std::path::Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Members named by the router's "fencing member" and "its keys are
/// lost" log lines in `log`.
pub fn lost_members(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains("fencing member") || l.contains("its keys are lost"))
        .filter_map(|l| {
            let rest = &l[l.find("member=")? + "member=".len()..];
            Some(rest.split_whitespace().next()?.to_owned())
        })
        .collect()
}

/// How long the settled state must hold: a few of the router's health
/// and membership ticks (200 ms), so that a fence it is about to make
/// (its status does not show the epoch a member joined with) comes first.
const SETTLED_FOR: Duration = Duration::from_secs(1);

/// Waits until every agent serves, the router serves with all of them as
/// healthy members, knows each one's current shard epoch, and no ring
/// change runs, and that has held for [`SETTLED_FOR`].
pub async fn settle(router: &TestRouter, agents: &[TestAgent]) -> anyhow::Result<()> {
    for agent in agents {
        agent.wait_serving().await?;
    }
    let since = std::sync::Mutex::new(None::<Instant>);
    let result = eventually(
        "the cluster to settle",
        Duration::from_secs(180),
        || async {
            let settled = settled(router, agents).await;
            let mut since = since.lock().unwrap();
            match settled {
                Ok(()) if since.get_or_insert_with(Instant::now).elapsed() >= SETTLED_FOR => Ok(()),
                Ok(()) => Err("settled, holding".into()),
                Err(e) => {
                    *since = None;
                    Err(e)
                }
            }
        },
    )
    .await;
    result.map_err(|e| {
        e.context(format!(
            "router log (last 60 lines):\n{}",
            ste_tests::control_plane::process::tail(&router.log(), 60)
        ))
    })
}

/// One look at whether the cluster is settled (see [`settle`]).
async fn settled(router: &TestRouter, agents: &[TestAgent]) -> Result<(), String> {
    // Each agent's epoch now: the router must have seen it (an etcd
    // that died moments ago shows up as a new epoch here first).
    let mut epochs = BTreeMap::new();
    for agent in agents {
        let status = agent.status().await.map_err(|e| e.to_string())?;
        if status.state() != AgentState::Serving {
            return Err(format!(
                "{} is {:?}",
                agent.options.node_name,
                status.state()
            ));
        }
        epochs.insert(agent.options.node_name.clone(), status.epoch);
    }
    let status = router.status().await.map_err(|e| e.to_string())?;
    let members: BTreeMap<&str, bool> = status
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.health() == MemberHealth::Healthy))
        .collect();
    let current = status.agents.iter().all(|a| {
        a.member
            && epochs.get(&a.name) == Some(&a.epoch)
            && members.get(a.name.as_str()) == Some(&true)
    });
    if status.serving
        && status.migration.is_none()
        && members.len() == agents.len()
        && status.agents.len() == agents.len()
        && current
    {
        Ok(())
    } else {
        Err(format!(
            "serving {}, migration {:?}, members {members:?}, agents {:?}, epochs {epochs:?}",
            status.serving,
            status.migration.map(|m| m.phase),
            status
                .agents
                .iter()
                .map(|a| (&a.name, a.member, a.epoch))
                .collect::<Vec<_>>()
        ))
    }
}

/// The router's current revision, from the header of a read through its
/// etcd API.
pub async fn read_revision(router: &TestRouter) -> anyhow::Result<i64> {
    let endpoint = router.endpoint();
    eventually("a read through the router", Duration::from_secs(60), || {
        let endpoint = endpoint.clone();
        async move {
            let mut client = connect(&endpoint).await.map_err(|e| e.to_string())?;
            let read = client
                .get(crate::pod_key(0, 0), None)
                .await
                .map_err(|e| e.to_string())?;
            read.header()
                .map(|h| h.revision())
                .ok_or_else(|| "no header".to_string())
        }
    })
    .await
}

/// The final write after every fault is healed: watchers stop once they
/// have seen it. Returns its revision.
pub async fn sentinel(router: &TestRouter, history: &History) -> anyhow::Result<i64> {
    let endpoint = router.endpoint();
    let key = "/registry/pods/zz-fault-loop/sentinel";
    let revision = eventually("the sentinel write", Duration::from_secs(60), || {
        let endpoint = endpoint.clone();
        async move {
            let mut client = connect(&endpoint).await.map_err(|e| e.to_string())?;
            let put = client
                .put(key, "end", None)
                .await
                .map_err(|e| e.to_string())?;
            put.header()
                .map(|h| h.revision())
                .ok_or_else(|| "no header".to_string())
        }
    })
    .await?;
    history.write(Write {
        writer: usize::MAX,
        seq: 0,
        key: key.into(),
        value: Some(b"end".to_vec()),
        guard: 0,
        answered: Instant::now(),
        outcome: Outcome::Acked(revision),
    });
    Ok(revision)
}
