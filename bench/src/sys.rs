//! Processes, ports, mounts and machine facts.
//!
//! Every child runs in its own process group (a Ctrl-C at the terminal
//! reaches only the bench, which then stops the children in order) and
//! with a parent-death signal (so nothing outlives a bench that was killed
//! with SIGKILL). Dropping a [`Proc`] stops the child: SIGTERM, a grace
//! period, then SIGKILL.

use std::collections::HashSet;
use std::io::Write;
use std::net::{IpAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A child process with its log file. Drop stops it.
pub struct Proc {
    /// Its name in messages.
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    /// How long Drop waits after SIGTERM before SIGKILL.
    drop_grace: Duration,
}

impl Proc {
    /// Spawns `command` with stdout and stderr appended to `log`.
    /// `death_signal` is what the child gets if the bench dies first.
    ///
    /// The parent-death signal fires when the *thread* that forked exits,
    /// so this must be called from the main thread (the bench's main
    /// future runs there), never from a spawned task.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: PathBuf,
        death_signal: Signal,
        drop_grace: Duration,
    ) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(death_signal).map_err(std::io::Error::from)
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
            drop_grace,
        })
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Fails if the process has exited, with the end of its log.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if self.child.is_none() {
            bail!("{} is not running", self.name);
        }
        if let Some(status) = self.exited() {
            bail!(
                "{} exited ({status}); end of its log:\n{}",
                self.name,
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        all[from..]
            .iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        self.signal(Signal::SIGTERM);
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how it exited
    /// (`None` if it had to be killed or was not running).
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.child.as_ref()?;
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "warning: {} did not exit within {grace:?} of SIGTERM; killing it",
            self.name
        );
        self.kill_now();
        None
    }

    /// The blocking form of [`Proc::stop`], for Drop.
    pub fn stop_blocking(&mut self, grace: Duration) {
        if self.child.is_none() {
            return;
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "warning: {} did not exit within {grace:?} of SIGTERM; killing it",
            self.name
        );
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_blocking(self.drop_grace);
    }
}

/// A port that was free on `ip` a moment ago, never handed out twice.
///
/// Drawn at random from 20000-31999, below the kernel's ephemeral range,
/// which outgoing connections also draw from.
pub fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const FIRST: u64 = 20_000;
    const SPAN: u64 = 12_000;
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let mut state = seed();
    for _ in 0..4 * SPAN {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = (FIRST + state % SPAN) as u16;
        if !taken.contains(&port) && TcpListener::bind((ip, port)).is_ok() {
            taken.insert(port);
            return Ok(port);
        }
    }
    bail!("no free port on {ip} in {FIRST}..{}", FIRST + SPAN)
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Its filesystem type (ext4, tmpfs, fuse, ...).
    pub fs_type: String,
    /// Its source (device or name).
    pub source: String,
}

/// Every mount, in mount order.
pub fn mounts() -> anyhow::Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 2 {
            continue;
        }
        out.push(Mount {
            mount_point: PathBuf::from(unescape(left[4])),
            fs_type: right[0].to_owned(),
            source: unescape(right[1]),
        });
    }
    Ok(out)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let code =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path` (the last-mounted one with the longest
/// mount point that is a prefix of it).
pub fn mount_of(path: &Path) -> anyhow::Result<Mount> {
    let path = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    mounts()?
        .into_iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .fold(None::<Mount>, |best, m| match best {
            Some(b) if b.mount_point.as_os_str().len() > m.mount_point.as_os_str().len() => Some(b),
            _ => Some(m),
        })
        .with_context(|| format!("no mount holds {}", path.display()))
}

/// Mounts whose mount point is `dir` or below it.
pub fn mounts_under(dir: &Path) -> Vec<Mount> {
    mounts()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect()
}

/// True if `path` is on a tmpfs, by statfs.
pub fn is_tmpfs(path: &Path) -> anyhow::Result<bool> {
    let fs =
        nix::sys::statfs::statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    Ok(fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Detaches everything mounted at or below `dir` (deepest first).
pub fn unmount_all_under(dir: &Path) {
    for _ in 0..16 {
        let mut found = mounts_under(dir);
        if found.is_empty() {
            return;
        }
        found.sort_by_key(|m| std::cmp::Reverse(m.mount_point.as_os_str().len()));
        for m in found {
            let _ = nix::mount::umount2(&m.mount_point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Facts about the machine the numbers were measured on.
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// The CPU's model name.
    pub cpu_model: String,
    /// Total RAM, e.g. "23.5 GiB RAM".
    pub memory: String,
    /// The kernel release.
    pub kernel: String,
}

/// The machine's facts, from /proc.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| {
            let kib: u64 = l
                .strip_prefix("MemTotal:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB RAM", kib as f64 / (1024.0 * 1024.0)))
        })
        .unwrap_or_else(|| "unknown RAM".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        memory,
        kernel,
    }
}

/// Latency of `count` 4 KiB appends each followed by fdatasync in `dir`
/// (what etcd's WAL does on every write): (p50, p99).
pub fn fdatasync_latency(dir: &Path, count: usize) -> anyhow::Result<(Duration, Duration)> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = vec![0x5a_u8; 4096];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(start.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    samples.sort();
    Ok((
        crate::report::percentile(&samples, 50.0),
        crate::report::percentile(&samples, 99.0),
    ))
}

/// The first line of `<bin> --version`, e.g. "etcd Version: 3.4.23".
pub fn etcd_version(bin: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running `{bin} --version`; is etcd installed?"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("unexpected `{bin} --version` output: {text}"))?;
    Ok(version)
}

/// Runs `bin arg` (a version query) and checks it exits 0: the binary is
/// there and runs.
///
/// Errors: naming `bin` when it cannot be started or fails.
pub fn runs(bin: &str, arg: &str) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg(arg)
        .output()
        .with_context(|| format!("cannot run `{bin} {arg}`"))?;
    anyhow::ensure!(
        out.status.success(),
        "`{bin} {arg}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Clock ticks per second of /proc/<pid>/stat's times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// (parent pid, user + system CPU time) of a process, from /proc/<pid>/stat.
fn stat(pid: &str) -> Option<(u32, Duration)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state ppid ... utime(14) stime(15).
    let (_, rest) = text.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks();
    let nanos = (utime + stime) * 1_000_000_000 / ticks;
    Some((ppid, Duration::from_nanos(nanos)))
}

/// CPU time used so far by this process (all its threads).
pub fn self_cpu() -> Duration {
    stat("self").map(|(_, cpu)| cpu).unwrap_or_default()
}

/// CPU time used so far by the one process `pid` (all its threads, none
/// of its children); zero once it is gone.
pub fn proc_cpu(pid: u32) -> Duration {
    stat(&pid.to_string())
        .map(|(_, cpu)| cpu)
        .unwrap_or_default()
}

/// The live children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let child: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let (ppid, _) = stat(&child.to_string())?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

/// The first line `<bin> <arg>` prints, e.g. kine's version.
pub fn first_line(bin: &str, arg: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg(arg)
        .output()
        .with_context(|| format!("running `{bin} {arg}`"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}
