//! The systems the bench measures, started one at a time, each with the
//! machine to itself: the native control plane's 3-member etcd, kine on
//! SQLite, one bare tmpfs etcd (the floor), one persistent etcd, and STE.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use nix::sys::signal::Signal;

use crate::Args;
use crate::etcd::{self, Member, MemberSpec, Tmpfs};
use crate::fsdelay::DelayMount;
use crate::ste::Ste;
use crate::sys::{self, Proc, free_port};

/// One system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// 3-member etcd, data on disk, fsync on: the native control plane.
    Etcd3,
    /// kine on SQLite on disk, what k3s runs instead of etcd.
    Kine,
    /// One bare etcd on tmpfs with --unsafe-no-fsync: the floor.
    Shard,
    /// One etcd, data on disk, fsync on.
    Etcd1,
    /// ste-router in front of ste-agent shards (three unless --ste-shards).
    Ste,
}

impl Target {
    /// Every target, in the order they run.
    pub const ALL: [Target; 5] = [
        Target::Etcd3,
        Target::Kine,
        Target::Shard,
        Target::Etcd1,
        Target::Ste,
    ];

    /// Its name in flags, tables and plots.
    pub fn name(self) -> &'static str {
        match self {
            Target::Etcd3 => "etcd3",
            Target::Kine => "kine",
            Target::Shard => "shard",
            Target::Etcd1 => "etcd1",
            Target::Ste => "ste",
        }
    }

    /// True if it writes to disk with fsync, so the disk model applies.
    pub fn persistent(self) -> bool {
        matches!(self, Target::Etcd3 | Target::Kine | Target::Etcd1)
    }
}

/// A process (or group) whose CPU time the report shows per operation.
pub struct Part {
    /// Its column name: router, etcd-a, m1, kine, ...
    pub name: String,
    /// Its process ids (their CPU is summed; children not included).
    pub pids: Vec<u32>,
}

/// A started target. Dropping it stops everything it started.
pub struct Running {
    /// The endpoint the workload talks to.
    pub url: String,
    /// One line saying what runs and where its data lives.
    pub describe: String,
    /// The processes whose CPU the report breaks down.
    pub parts: Vec<Part>,
    // Drop order: processes first, then the mounts they used.
    members: Vec<Member>,
    kine: Option<Proc>,
    ste: Option<Ste>,
    _tmpfs: Option<Tmpfs>,
    delay_mounts: Vec<DelayMount>,
}

/// Where a persistent target's data goes: straight on the disk, or
/// through an `ste-fsync-delay` mount that adds `Duration` to each fsync.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Disk {
    /// The work dir's own filesystem.
    Plain,
    /// Through the FUSE passthrough, with this much added to each fsync.
    Delayed(Duration),
}

impl Disk {
    /// "plain" or "fuse+2ms".
    pub fn label(self) -> String {
        match self {
            Disk::Plain => "plain".into(),
            Disk::Delayed(d) => format!("fuse+{}", humantime::format_duration(d)),
        }
    }
}

/// Starts `target` in a fresh directory `dir`.
pub async fn start(
    args: &Args,
    target: Target,
    disk: Disk,
    dir: &Path,
    bin_dir: &Path,
) -> anyhow::Result<Running> {
    let ready = Duration::from(args.ready_timeout);
    std::fs::create_dir_all(dir)?;
    let mut running = Running {
        url: String::new(),
        describe: String::new(),
        parts: Vec::new(),
        members: Vec::new(),
        kine: None,
        ste: None,
        _tmpfs: None,
        delay_mounts: Vec::new(),
    };
    // A persistent process's data dir: on disk, or on its own delay mount
    // (one per process, as each member of a real cluster has its own disk).
    let data_dir = |running: &mut Running, name: &str| -> anyhow::Result<PathBuf> {
        let plain = dir.join(name);
        std::fs::create_dir_all(&plain)?;
        ensure!(
            !sys::is_tmpfs(&plain)?,
            "{} is on tmpfs, but {} must keep its data on disk: pass --work-dir on a disk filesystem",
            plain.display(),
            target.name()
        );
        match disk {
            Disk::Plain => Ok(plain),
            Disk::Delayed(delay) => {
                let mount = DelayMount::start(bin_dir, &plain, delay, ready)?;
                let path = mount.mount_point.clone();
                running.delay_mounts.push(mount);
                Ok(path)
            }
        }
    };
    match target {
        Target::Etcd3 | Target::Etcd1 => {
            let names: &[&str] = if target == Target::Etcd3 {
                &["m1", "m2", "m3"]
            } else {
                &["etcd"]
            };
            let mut specs = Vec::new();
            for (i, name) in names.iter().enumerate() {
                specs.push(MemberSpec {
                    name,
                    ip: Ipv4Addr::new(127, 0, 1, 1 + i as u8),
                    data_dir: data_dir(&mut running, name)?.join("data"),
                    no_fsync: false,
                });
            }
            running.members = etcd::start_cluster(&args.etcd_bin, &specs, dir, ready).await?;
            let leader = etcd::leader(&running.members).await?;
            running.url = running.members[leader].url.clone();
            let fs = sys::mount_of(dir)?;
            running.describe = if target == Target::Etcd3 {
                format!(
                    "3 persistent etcd members, fsync on, data on {} ({}){}; the client talks to the leader only ({})",
                    fs.fs_type,
                    fs.source,
                    delay_note(disk),
                    running.members[leader].name
                )
            } else {
                format!(
                    "one persistent etcd, fsync on, data on {} ({}){}",
                    fs.fs_type,
                    fs.source,
                    delay_note(disk)
                )
            };
        }
        Target::Shard => {
            let data = dir.join("tmpfs");
            std::fs::create_dir_all(&data)?;
            running._tmpfs = Some(Tmpfs::mount(&data, &args.tmpfs_size)?);
            let specs = [MemberSpec {
                name: "shard",
                ip: Ipv4Addr::new(127, 0, 1, 9),
                data_dir: data.join("data"),
                no_fsync: true,
            }];
            running.members = etcd::start_cluster(&args.etcd_bin, &specs, dir, ready).await?;
            running.url = running.members[0].url.clone();
            running.describe = format!(
                "one etcd with --unsafe-no-fsync on a {} tmpfs mounted by the bench",
                args.tmpfs_size
            );
        }
        Target::Kine => {
            let data = data_dir(&mut running, "kine")?;
            let ip = std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 1, 8));
            let listen = format!("{ip}:{}", free_port(ip)?);
            let mut command = Command::new(&args.kine_bin);
            // kine's default endpoint: SQLite at ./db/state.db with the
            // parameters k3s uses (WAL, synchronous=NORMAL).
            command
                .current_dir(&data)
                .arg(format!("--listen-address={listen}"));
            crate::clear_ste_env(&mut command);
            let proc = running.kine.insert(Proc::spawn(
                "kine",
                command,
                dir.join("kine.log"),
                Signal::SIGKILL,
                Duration::from_secs(10),
            )?);
            running.url = format!("http://{listen}");
            wait_answers(proc, &running.url, ready).await?;
            let fs = sys::mount_of(dir)?;
            running.describe = format!(
                "{} with its default SQLite DSN (WAL, synchronous=NORMAL) in {} on {} ({}){}",
                sys::first_line(&args.kine_bin, "--version").unwrap_or_default(),
                data.display(),
                fs.fs_type,
                fs.source,
                delay_note(disk)
            );
        }
        Target::Ste => {
            let ste = running
                .ste
                .insert(Ste::start(args, dir, bin_dir, ready).await?);
            for agent in &ste.agents {
                ensure!(
                    sys::is_tmpfs(&agent.data_dir)?,
                    "{}'s data dir {} is not a tmpfs",
                    agent.name,
                    agent.data_dir.display()
                );
            }
            running.url = ste.router_url.clone();
            let threads = args
                .router_worker_threads
                .map(|n| format!(" --worker-threads {n}"))
                .unwrap_or_default();
            running.describe = format!(
                "ste-router --key-index {}{threads} + {} (etcd --unsafe-no-fsync on a {} tmpfs{})",
                args.key_index,
                crate::count(args.ste_shards, "ste-agent shard", "ste-agent shards"),
                args.tmpfs_size,
                if args.ste_shards == 1 { "" } else { " each" }
            );
        }
    }
    running.parts = parts(&running);
    Ok(running)
}

fn delay_note(disk: Disk) -> String {
    match disk {
        Disk::Plain => String::new(),
        Disk::Delayed(d) => format!(
            ", through ste-fsync-delay (+{} per fsync)",
            humantime::format_duration(d)
        ),
    }
}

async fn wait_answers(proc: &mut Proc, url: &str, ready: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + ready;
    loop {
        proc.ensure_running()?;
        let last = match etcd::answers(url).await {
            Ok(()) => return Ok(()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer within {ready:?} (last: {last}); end of its log:\n{}",
                proc.name,
                proc.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The processes to account CPU to, one column each.
fn parts(r: &Running) -> Vec<Part> {
    let mut parts = Vec::new();
    for m in &r.members {
        parts.push(Part {
            name: m.name.clone(),
            pids: m.proc.pid().into_iter().collect(),
        });
    }
    if let Some(kine) = &r.kine {
        parts.push(Part {
            name: "kine".into(),
            pids: kine.pid().into_iter().collect(),
        });
    }
    if let Some(ste) = &r.ste {
        parts.push(Part {
            name: "router".into(),
            pids: ste
                .router
                .as_ref()
                .and_then(|p| p.pid())
                .into_iter()
                .collect(),
        });
        let mut agents = Vec::new();
        for agent in &ste.agents {
            let Some(pid) = agent.proc.pid() else {
                continue;
            };
            agents.push(pid);
            let suffix = agent.name.trim_start_matches("node-");
            parts.push(Part {
                name: format!("etcd-{suffix}"),
                pids: sys::children(pid),
            });
        }
        parts.push(Part {
            name: "agents".into(),
            pids: agents,
        });
    }
    for (i, m) in r.delay_mounts.iter().enumerate() {
        parts.push(Part {
            name: format!("fuse{}", i + 1),
            pids: m.pid().into_iter().collect(),
        });
    }
    parts
}

impl Running {
    /// The STE router's `/metrics` address; `None` for other targets.
    pub fn router_metrics(&self) -> Option<std::net::SocketAddr> {
        self.ste.as_ref().and_then(|ste| ste.router_metrics)
    }

    /// CPU used so far by each part, in `parts` order.
    pub fn cpu(&self) -> Vec<Duration> {
        self.parts
            .iter()
            .map(|p| p.pids.iter().map(|pid| sys::proc_cpu(*pid)).sum())
            .collect()
    }

    /// Stops everything, checking that STE's agents unmounted their tmpfs.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            m.proc.ensure_running().context("before stopping it")?;
        }
        if let Some(mut ste) = self.ste.take() {
            ste.shutdown().await?;
        }
        for m in &mut self.members {
            m.proc.stop(Duration::from_secs(10)).await;
        }
        if let Some(mut kine) = self.kine.take() {
            kine.stop(Duration::from_secs(10)).await;
        }
        Ok(())
    }
}
