//! The plain etcd targets: one persistent member (`etcd1`), a 3-member
//! persistent cluster (`etcd3`) and one bare tmpfs member without fsync
//! (`shard`, the floor STE's shards stand on).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::sys::{self, Proc, free_port};

/// One etcd member to start.
pub struct MemberSpec<'a> {
    /// Member name (`--name`), also the log file's name.
    pub name: &'a str,
    /// Loopback address it listens on.
    pub ip: Ipv4Addr,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// `--unsafe-no-fsync` (the shard) or not (a control plane's etcd).
    pub no_fsync: bool,
}

/// A started etcd member.
pub struct Member {
    /// Member name.
    pub name: String,
    /// Its process.
    pub proc: Proc,
    /// Its client URL.
    pub url: String,
}

/// Starts the members of one cluster (one or three) as kubeadm runs etcd,
/// minus TLS: `--snapshot-count=10000`, default quota, logs next to the
/// data dirs, and waits until every member answers.
pub async fn start_cluster(
    bin: &str,
    specs: &[MemberSpec<'_>],
    log_dir: &Path,
    ready: Duration,
) -> anyhow::Result<Vec<Member>> {
    let mut urls = Vec::new();
    for spec in specs {
        let ip = IpAddr::V4(spec.ip);
        urls.push((
            format!("http://{ip}:{}", free_port(ip)?),
            format!("http://{ip}:{}", free_port(ip)?),
        ));
    }
    let initial = specs
        .iter()
        .zip(&urls)
        .map(|(s, (_, peer))| format!("{}={peer}", s.name))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Vec::new();
    for (spec, (url, peer)) in specs.iter().zip(&urls) {
        let mut command = Command::new(bin);
        command
            .arg(format!("--name={}", spec.name))
            .arg(format!("--data-dir={}", spec.data_dir.display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial}"))
            .arg("--initial-cluster-state=new")
            .arg("--snapshot-count=10000")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr");
        if spec.no_fsync {
            command.arg("--unsafe-no-fsync");
        }
        crate::clear_ste_env(&mut command);
        let proc = Proc::spawn(
            &format!("etcd {}", spec.name),
            command,
            log_dir.join(format!("{}.log", spec.name)),
            Signal::SIGKILL,
            Duration::from_secs(10),
        )?;
        members.push(Member {
            name: spec.name.to_owned(),
            proc,
            url: url.clone(),
        });
    }
    let deadline = Instant::now() + ready;
    for member in &mut members {
        loop {
            member.proc.ensure_running()?;
            let last = match answers(&member.url).await {
                Ok(()) => break,
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "etcd {} did not answer within {ready:?} (last: {last}); end of its log:\n{}",
                    member.name,
                    member.proc.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(members)
}

/// True once a Range over the pod prefix succeeds (the router answers
/// UNAVAILABLE until its start-up scan is done; an etcd member until the
/// cluster has a leader).
pub async fn answers(url: &str) -> anyhow::Result<()> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    let mut client = etcd_client::Client::connect([url], Some(options)).await?;
    client.status().await?;
    client
        .get(
            crate::workload::PREFIX,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await?;
    Ok(())
}

/// The index of the member that is the leader now.
pub async fn leader(members: &[Member]) -> anyhow::Result<usize> {
    for _ in 0..50 {
        for (i, m) in members.iter().enumerate() {
            let mut client = etcd_client::Client::connect([m.url.as_str()], None)
                .await
                .with_context(|| format!("connecting to {}", m.url))?;
            let status = client.status().await?;
            let header = status.header().context("Status without a header")?;
            if status.leader() != 0 && status.leader() == header.member_id() {
                return Ok(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no member of the etcd cluster says it is the leader")
}

/// A tmpfs of `size` mounted at `dir` by the bench; unmounted on drop.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "256Mi", as tmpfs's `size=` takes
    /// it without the "i") at `dir`, which must exist.
    pub fn mount(dir: &Path, size: &str) -> anyhow::Result<Self> {
        let size = size.trim_end_matches('i');
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .with_context(|| format!("mounting a tmpfs at {}", dir.display()))?;
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        sys::unmount_all_under(&self.dir);
    }
}
