//! The agent's validated configuration and the start-up checks that must
//! fail before anything is mounted or started.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::etcd::{self, MIN_TMPFS_BYTES};
use crate::size::ByteSize;
use crate::supervisor::Backoff;

/// Who provides the tmpfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MountMode {
    /// The agent mounts (and later unmounts) a tmpfs at the data dir. Needs root.
    Managed,
    /// The data dir already is a tmpfs (e.g. emptyDir medium: Memory).
    External,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub data_dir: PathBuf,
    pub tmpfs_size: ByteSize,
    pub mount: MountMode,
    pub etcd_bin: PathBuf,
    pub etcd_client_url: String,
    pub etcd_peer_url: String,
    pub grpc_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub key_prefix: String,
    pub probe_interval: Duration,
    pub hang_timeout: Duration,
    pub stop_grace: Duration,
    pub backoff: Backoff,
}

/// A start-up failure; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "etcd binary {0:?} not found or not executable: install etcd \
         (apt-get install etcd-server) or point --etcd-bin at it"
    )]
    EtcdNotFound(PathBuf),
    #[error(
        "--mount managed mounts a tmpfs and needs root (CAP_SYS_ADMIN): run the agent as root, \
         or mount a tmpfs yourself and use --mount external"
    )]
    NotRoot,
    #[error(
        "tmpfs size {size} is below the minimum of 256Mi: etcd preallocates 128Mi of WAL; \
         use --tmpfs-size 256Mi or more"
    )]
    TmpfsTooSmall { size: ByteSize },
    #[error(
        "{flag} {addr} is already in use: stop whatever listens there or choose another {flag}"
    )]
    PortInUse {
        flag: &'static str,
        addr: SocketAddr,
    },
    #[error("cannot listen on {flag} {addr}")]
    Listen {
        flag: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{flag} {url:?} is not a usable URL: write http://HOST:PORT with a literal IP address \
         or a resolvable host name"
    )]
    BadUrl { flag: &'static str, url: String },
    #[error("--key-prefix {0:?} must start with '/'")]
    BadPrefix(String),
    #[error("--node-name must not be empty")]
    EmptyNodeName,
}

impl Config {
    /// Checks that need no side effects. Listener binding and mounting
    /// happen afterwards, in this order, so a bad flag changes nothing.
    pub fn validate(&self) -> Result<PathBuf, ConfigError> {
        if self.node_name.trim().is_empty() {
            return Err(ConfigError::EmptyNodeName);
        }
        if self.mount == MountMode::Managed && self.tmpfs_size.0 < MIN_TMPFS_BYTES {
            return Err(ConfigError::TmpfsTooSmall {
                size: self.tmpfs_size,
            });
        }
        if !self.key_prefix.starts_with('/') {
            return Err(ConfigError::BadPrefix(self.key_prefix.clone()));
        }
        url_socket_addr("--etcd-client-url", &self.etcd_client_url)?;
        url_socket_addr("--etcd-peer-url", &self.etcd_peer_url)?;
        let bin = etcd::resolve_binary(&self.etcd_bin)
            .ok_or_else(|| ConfigError::EtcdNotFound(self.etcd_bin.clone()))?;
        if self.mount == MountMode::Managed && !nix::unistd::geteuid().is_root() {
            return Err(ConfigError::NotRoot);
        }
        Ok(bin)
    }

    /// Fails early when etcd's own ports are taken: etcd would only log it
    /// and exit, and the supervisor would restart it forever.
    pub fn check_etcd_ports(&self) -> Result<(), ConfigError> {
        for (flag, url) in [
            ("--etcd-client-url", &self.etcd_client_url),
            ("--etcd-peer-url", &self.etcd_peer_url),
        ] {
            let addr = url_socket_addr(flag, url)?;
            bind_check(flag, addr)?;
        }
        Ok(())
    }
}

/// Binds and immediately releases `addr` to learn whether it is free.
fn bind_check(flag: &'static str, addr: SocketAddr) -> Result<(), ConfigError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| listen_error(flag, addr, source))
}

pub fn listen_error(flag: &'static str, addr: SocketAddr, source: std::io::Error) -> ConfigError {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        ConfigError::PortInUse { flag, addr }
    } else {
        ConfigError::Listen { flag, addr, source }
    }
}

/// `http://HOST:PORT[/]` → a socket address.
pub fn url_socket_addr(flag: &'static str, url: &str) -> Result<SocketAddr, ConfigError> {
    let bad = || ConfigError::BadUrl {
        flag,
        url: url.to_owned(),
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let host_port = rest.trim_end_matches('/');
    if host_port.contains('/') {
        return Err(bad());
    }
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(bad)
}

/// The node's address for the default etcd client URL: the first
/// non-loopback IPv4 address of an interface that is up, else 127.0.0.1.
pub fn default_node_ip() -> IpAddr {
    use nix::net::if_::InterfaceFlags;
    nix::ifaddrs::getifaddrs()
        .ok()
        .and_then(|addrs| {
            addrs
                .filter(|a| {
                    a.flags.contains(InterfaceFlags::IFF_UP)
                        && !a.flags.contains(InterfaceFlags::IFF_LOOPBACK)
                })
                .find_map(|a| a.address?.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())))
        })
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// etcd's peer URL stays on loopback: a shard has one member and no peers.
/// A node IP that is itself a loopback address (127.0.0.x, as in the local
/// cluster) is used so several agents on one host do not collide.
pub fn default_peer_url(node_ip: IpAddr) -> String {
    let host = if node_ip.is_loopback() {
        node_ip
    } else {
        IpAddr::from([127, 0, 0, 1])
    };
    format!("http://{host}:2280")
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e}: write e.g. 500ms, 2s or 1m"))
}
