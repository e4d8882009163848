//! One etcd process: its command line, spawning it so that it can never
//! outlive the agent, and stopping it politely then firmly.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::size::MIB;

/// The WAL preallocates two 64 MiB segments on a fresh member.
pub const WAL_PREALLOCATION: u64 = 2 * 64 * MIB;

/// Smallest tmpfs that fits the WAL plus a usable backend.
pub const MIN_TMPFS_BYTES: u64 = 256 * MIB;

/// The backend quota for a tmpfs of `tmpfs_bytes`.
///
/// Every write lands twice on the tmpfs: in the bbolt db (which the quota
/// bounds) and in the WAL (which the quota does not). Between purges the
/// WAL holds about as many bytes as were written, in 64 MiB segments, plus
/// one preallocated spare segment. Measured on etcd 3.4.23 with a 256 MiB
/// tmpfs, 100 KB values: a quota of 96 MiB (tmpfs minus the WAL's 128 MiB
/// minus a reserve) let the WAL reach 192 MiB and the db 76 MB, the tmpfs
/// filled and etcd died with ENOSPC instead of raising NOSPACE; a quota of
/// 51 MiB raised NOSPACE at 174 of 256 MiB used. So the quota is 40% of what
/// the WAL's preallocation leaves, which keeps db + WAL + spare inside.
pub fn quota_backend_bytes(tmpfs_bytes: u64) -> u64 {
    let usable = tmpfs_bytes.saturating_sub(WAL_PREALLOCATION);
    (usable * 2 / 5) / MIB * MIB
}

/// The most operations one Txn may carry on a shard (etcd's
/// `--max-txn-ops`, passed explicitly): the router's `--shard-max-txn-ops`
/// must not exceed it. etcd's default, 128.
pub const SHARD_MAX_TXN_OPS: u32 = 128;

/// The shard's `--max-request-bytes`: etcd's default 1.5 MiB plus 64 KiB,
/// so that a request the router accepts at its own `--max-request-bytes`
/// (1.5 MiB) still fits on the shard once its value is wrapped in the
/// envelope and the router's fence is added.
pub const SHARD_MAX_REQUEST_BYTES: u64 = 1_572_864 + 64 * 1024;

/// Everything needed to start the shard's etcd.
#[derive(Debug, Clone)]
pub struct EtcdSpec {
    /// The etcd binary, already resolved to a path.
    pub bin: PathBuf,
    /// The member name (the node name).
    pub name: String,
    /// etcd's `--data-dir`, inside the tmpfs; emptied before every start.
    pub data_dir: PathBuf,
    /// `--listen-client-urls` and `--advertise-client-urls`: `https://`
    /// with `tls`, else `http://`.
    pub client_url: String,
    /// TLS and client-certificate authentication on `client_url`; `None`
    /// serves plain HTTP (`--insecure`).
    pub tls: Option<crate::tls::ShardTls>,
    /// `--listen-peer-urls` and `--initial-advertise-peer-urls` (loopback).
    pub peer_url: String,
    /// `--quota-backend-bytes`, in bytes: the backend database may grow to this
    /// before etcd raises NOSPACE.
    pub quota_backend_bytes: u64,
}

impl EtcdSpec {
    /// The flags of a single-member, no-fsync, in-memory shard, with its
    /// TLS flags when it has TLS. `cluster_token` is the start's
    /// `--initial-cluster-token` (see [`cluster_token`]).
    pub fn args(&self, cluster_token: &str) -> Vec<String> {
        let mut args = self.base_args(cluster_token);
        if let Some(tls) = &self.tls {
            args.extend(tls.etcd_args(&self.name));
        }
        args
    }

    fn base_args(&self, cluster_token: &str) -> Vec<String> {
        vec![
            format!("--name={}", self.name),
            format!("--initial-cluster-token={cluster_token}"),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={}", self.client_url),
            format!("--advertise-client-urls={}", self.client_url),
            format!("--listen-peer-urls={}", self.peer_url),
            format!("--initial-advertise-peer-urls={}", self.peer_url),
            format!("--initial-cluster={}={}", self.name, self.peer_url),
            "--initial-cluster-state=new".into(),
            format!("--quota-backend-bytes={}", self.quota_backend_bytes),
            format!("--max-txn-ops={SHARD_MAX_TXN_OPS}"),
            format!("--max-request-bytes={SHARD_MAX_REQUEST_BYTES}"),
            // Transient by design: losing the shard is handled by STE, so
            // paying for fsync buys nothing. Etcd 3.4.23 accepts this flag
            // although its --help does not list it.
            "--unsafe-no-fsync".into(),
            // Snapshot and purge often enough that the WAL stays at a few
            // segments instead of growing with every write since start.
            "--snapshot-count=10000".into(),
            "--max-wals=2".into(),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
        ]
    }
}

/// The `--initial-cluster-token` of a fresh start of `member`'s etcd, at
/// `started`: unique to that start.
///
/// etcd derives its cluster ID and member ID from the peer URLs and this
/// token (`membership.NewMember`), so with etcd's default token every
/// start on the same peer URL is the same member to its clients, although
/// its data dir was wiped. A token of its own gives each start new IDs,
/// which is how the router tells the empty shard of an agent restarted at
/// once (same name, address and epoch number) from the one it wrote to:
/// its health probe compares the member ID in each answer's header with
/// the one it scanned.
pub fn cluster_token(member: &str, started: std::time::SystemTime) -> String {
    let nanos = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("ste-{member}-{nanos}")
}

/// The last lines etcd wrote to stderr, kept to explain an exit.
#[derive(Debug, Clone, Default)]
pub struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    const LINES: usize = 20;

    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == Self::LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The most recent error, fatal or panic line, if etcd logged one.
    pub fn last_error(&self) -> Option<String> {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .rev()
            .find(|l| {
                ["error", "fatal", "panic"]
                    .iter()
                    .any(|level| l.contains(&format!("\"level\":\"{level}\"")))
            })
            .map(|l| summarize_zap_line(l))
    }
}

/// Pulls `msg` and `error` out of a zap JSON line without a JSON parser;
/// falls back to the raw line.
fn summarize_zap_line(line: &str) -> String {
    let field = |name: &str| {
        let start = line.find(&format!("\"{name}\":\""))? + name.len() + 4;
        let end = line[start..].find('"')? + start;
        Some(&line[start..end])
    };
    match (field("msg"), field("error")) {
        (Some(msg), Some(err)) => format!("{msg}: {err}"),
        (Some(msg), None) => msg.to_owned(),
        _ => line.to_owned(),
    }
}

/// A running etcd child.
#[derive(Debug)]
pub struct EtcdProcess {
    child: Child,
    pid: u32,
    log: LogTail,
}

impl EtcdProcess {
    /// Starts etcd. The child gets SIGKILL if the agent dies (parent-death
    /// signal) or drops this value (kill-on-drop), and runs in its own process
    /// group so a Ctrl-C at the terminal reaches only the agent, which then
    /// stops etcd in order.
    ///
    /// The parent-death signal fires when the *thread* that forked exits;
    /// this must therefore be called from a long-lived runtime worker thread,
    /// never from a `spawn_blocking` thread.
    pub fn spawn(spec: &EtcdSpec, member: &str, cluster_token: &str) -> io::Result<Self> {
        let mut command = Command::new(&spec.bin);
        command
            .args(spec.args(cluster_token))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
            });
        }
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or_default();
        let log = LogTail::default();
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            let member = member.to_owned();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "etcd", member = %member, "{line}");
                    log.push(line);
                }
            });
        }
        Ok(EtcdProcess { child, pid, log })
    }

    /// The process ID of the running etcd.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines etcd wrote to stderr, for error messages when it exits.
    pub fn log(&self) -> &LogTail {
        &self.log
    }

    /// Waits for etcd to exit on its own.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM, then SIGKILL if etcd is still running after `grace`.
    pub async fn stop(mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        let pid = Pid::from_raw(self.pid as i32);
        let _ = kill(pid, Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(pid = self.pid, "etcd ignored SIGTERM; killing it");
                self.child.kill().await?;
                self.child.wait().await
            }
        }
    }
}

/// Finds an executable the way a shell would: a path with a slash is used as
/// is, a bare name is looked up on `PATH`.
pub fn resolve_binary(bin: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if bin.components().count() > 1 {
        return is_executable(bin).then(|| bin.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(bin))
        .find(|candidate| is_executable(candidate))
}

/// The etcd release that first takes a list in
/// `--client-cert-allowed-hostname` (etcd PR 18015): a TLS shard must admit
/// both the router's certificate and the agent's own probe, and etcd 3.4 and
/// 3.5 compare against one host name only.
pub const MIN_TLS_VERSION: (u32, u32) = (3, 6);

/// The release of the etcd binary `bin`, from the `etcd Version: X.Y.Z` line
/// of `etcd --version`, as (major, minor, patch); `None` if it cannot be run
/// or says something else.
pub fn binary_version(bin: &Path) -> Option<(u32, u32, u32)> {
    let output = std::process::Command::new(bin)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&output.stdout))
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let version = text
        .lines()
        .find_map(|line| line.strip_prefix("etcd Version:"))?
        .trim();
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    });
    Some((parts.next()??, parts.next()??, parts.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_versions_are_read_from_its_version_output() {
        let text = "etcd Version: 3.6.16\nGit SHA: 1f0f8a0\nGo Version: go1.26.8\n";
        assert_eq!(parse_version(text), Some((3, 6, 16)));
        assert_eq!(
            parse_version("etcd Version: 3.4.23\nGit SHA: Not provided"),
            Some((3, 4, 23))
        );
        assert_eq!(
            parse_version("etcd Version: 3.7.0-alpha.0\n"),
            Some((3, 7, 0))
        );
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn quota_leaves_room_for_the_wal() {
        assert_eq!(quota_backend_bytes(256 * MIB), 51 * MIB);
        assert_eq!(quota_backend_bytes(512 * MIB), 153 * MIB);
        assert_eq!(quota_backend_bytes(1024 * MIB), 358 * MIB);
        assert_eq!(quota_backend_bytes(64 * MIB), 0);
    }

    #[test]
    fn zap_lines_are_summarized() {
        let line = r#"{"level":"fatal","ts":1,"msg":"listen tcp 127.0.0.1:2279: bind failed","error":"address already in use"}"#;
        assert_eq!(
            summarize_zap_line(line),
            "listen tcp 127.0.0.1:2279: bind failed: address already in use"
        );
        assert_eq!(summarize_zap_line("plain"), "plain");
    }

    #[test]
    fn resolves_binaries_on_path_and_by_path() {
        assert!(resolve_binary(Path::new("sh")).is_some());
        assert!(resolve_binary(Path::new("/bin/sh")).is_some());
        assert!(resolve_binary(Path::new("definitely-not-a-binary-ste")).is_none());
        assert!(resolve_binary(Path::new("/nonexistent/etcd")).is_none());
    }
}
