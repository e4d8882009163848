//! Process and port helpers: locating the workspace's binaries, free ports,
//! liveness checks and finding processes by command line.

use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;

/// A binary built from this workspace (`cargo build --workspace --bins`).
/// `STE_BIN_DIR` overrides the directory; otherwise it is the target dir
/// the running test binary lives in.
pub fn workspace_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("STE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("current test executable");
            // target/<profile>/deps/<test> → target/<profile>
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("test binary inside target/<profile>/deps")
                .to_path_buf()
        });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first with `cargo build --workspace --bins` \
         (scripts/test.sh does), or set STE_BIN_DIR",
        path.display()
    );
    path
}

/// The repository's root (the directory above `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// A binary of the real counterparts built by `scripts/build-counterparts.sh`
/// into `<repo>/.build/bin`, unless the environment variable `env` names
/// another one.
fn counterpart_bin(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let path = repo_root().join(".build/bin").join(name);
    assert!(
        path.exists(),
        "{} not found: build it with `scripts/build-counterparts.sh {name}` \
         (scripts/test.sh does), or set {env} (e.g. {env}=/usr/bin/{name} for Debian's etcd 3.4)",
        path.display()
    );
    path
}

/// The etcd the tests run: 3.6 from `.build/bin`, or `$STE_ETCD_BIN` (the
/// variable the agent reads for `--etcd-bin` too).
pub fn etcd_bin() -> PathBuf {
    counterpart_bin("etcd", "STE_ETCD_BIN")
}

/// Whether the etcd the tests run can be a TLS shard: from 3.6 its
/// `--client-cert-allowed-hostname` takes the list the agent passes
/// ([`ste_agent::etcd::MIN_TLS_VERSION`]). Debian's etcd 3.4, which
/// scripts/test.sh also runs the router tests on, cannot (the agent refuses
/// it): agents there serve plain HTTP (`--insecure`).
pub fn etcd_serves_tls_shards() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        ste_agent::etcd::binary_version(&etcd_bin())
            .is_none_or(|(major, minor, _)| (major, minor) >= ste_agent::etcd::MIN_TLS_VERSION)
    })
}

/// The etcdctl the tests run: 3.6 from `.build/bin`, or `$STE_ETCDCTL_BIN`.
pub fn etcdctl_bin() -> PathBuf {
    counterpart_bin("etcdctl", "STE_ETCDCTL_BIN")
}

/// The real krew (`kubectl-krew`, v0.4) from `.build/bin`, or `$STE_KREW_BIN`.
pub fn krew_bin() -> PathBuf {
    counterpart_bin("kubectl-krew", "STE_KREW_BIN")
}

/// A Kubernetes binary (kube-apiserver, kube-controller-manager,
/// kube-scheduler, kubectl, kwok) built by `scripts/build-counterparts.sh`
/// into `<repo>/.build/bin`, or from `$STE_KUBE_BIN_DIR`.
pub fn kube_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("STE_KUBE_BIN_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".build/bin"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it with `scripts/build-counterparts.sh` (scripts/test.sh does), \
         or set STE_KUBE_BIN_DIR",
        path.display()
    );
    path
}

/// kwok's Stage files (`<repo>/.build/share/kwok/stages/*.yaml`, next to
/// the binaries of [`kube_bin`]), sorted.
pub fn kwok_stages() -> Vec<PathBuf> {
    let bin = kube_bin("kwok");
    let dir = bin
        .parent()
        .and_then(|b| b.parent())
        .map(|root| root.join("share/kwok/stages"))
        .unwrap_or_default();
    let mut stages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    stages.sort();
    assert!(!stages.is_empty(), "no kwok stages in {}", dir.display());
    stages
}

/// A port that was free on `ip` a moment ago.
///
/// Not the kernel's choice (port 0): that comes from the ephemeral range,
/// which outgoing connections (every etcd client) also draw from, so a port
/// handed to a server a moment later can already be some connection's
/// source port. Ports come instead from 20000-31999, below the ephemeral
/// range, never twice in one test process, starting at a per-process offset
/// so that test binaries running side by side rarely meet.
pub fn free_port(ip: IpAddr) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 7_919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip} in {FIRST}..{}", FIRST + SPAN)
}

/// True while a process with this PID exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// PIDs whose command line contains `needle` (e.g. a unique data dir).
pub fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .filter(|pid| alive(*pid))
        .collect()
}

pub fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}
