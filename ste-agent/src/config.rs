//! The agent's validated configuration and the start-up checks that must
//! fail before anything is mounted or started.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::etcd::{self, MIN_TMPFS_BYTES};
use crate::size::ByteSize;
use crate::supervisor::Backoff;
use crate::tls::ShardTls;

/// `sudo ` unless the agent runs as root: commands in messages run as
/// written.
fn root_prefix() -> &'static str {
    if nix::unistd::geteuid().is_root() {
        ""
    } else {
        "sudo "
    }
}

/// Who provides the tmpfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MountMode {
    /// The agent mounts (and later unmounts) a tmpfs at the data dir. Needs root.
    Managed,
    /// The data dir already is a tmpfs (e.g. emptyDir medium: Memory).
    External,
}

/// The agent's whole configuration, built from the command line by `main.rs`.
/// [`Config::validate`] checks it before anything is mounted or started.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kubernetes node name; also the etcd member name and the `node` label of
    /// every metric. Must not be empty.
    pub node_name: String,
    /// Directory that is (managed) or must already be (external) the tmpfs
    /// holding the shard. Wiped at every fresh etcd start.
    pub data_dir: PathBuf,
    /// Size of the tmpfs the agent mounts, in bytes; at least 256 MiB in
    /// managed mode (etcd preallocates 128 MiB of WAL). Unused in external mode.
    pub tmpfs_size: ByteSize,
    /// Whether the agent mounts the tmpfs itself or finds it mounted.
    pub mount: MountMode,
    /// The etcd binary: a path, or a name looked up on `PATH`.
    pub etcd_bin: PathBuf,
    /// URL etcd serves clients on (`https://HOST:PORT`, `http://` with
    /// `insecure`): what the router dials.
    pub etcd_client_url: String,
    /// TLS and client-certificate authentication on the client URL; `None`
    /// only together with `insecure`.
    pub shard_tls: Option<ShardTls>,
    /// `--insecure`: the shard serves plain HTTP without authentication.
    /// Without it, `shard_tls` is required.
    pub insecure: bool,
    /// etcd's peer URL (`http://HOST:PORT`); on loopback, a shard has no peers.
    pub etcd_peer_url: String,
    /// Address of the agent's gRPC API (`ste.v1.Agent`, health, reflection)
    /// for machines and certificate users: TLS that refuses clients without
    /// a certificate of `--client-ca-file`.
    pub grpc_listen: SocketAddr,
    /// Address of the same API for users (`--user-listen`): TLS with a
    /// client certificate or a bearer token.
    pub user_listen: SocketAddr,
    /// `--tls-cert-file`, `--tls-private-key-file`, `--client-ca-file`: TLS
    /// of both API ports. The certificate is the node's identity
    /// (`CN=system:node:NODE`, `O=system:nodes`), also presented to the
    /// router. `None` only with `insecure`.
    pub api_tls: Option<ste_auth::tls::ServerFiles>,
    /// `--authentication-kubeconfig`: the API for TokenReview.
    pub authentication_kubeconfig: Option<PathBuf>,
    /// `--authorization-kubeconfig`: the API for SubjectAccessReview.
    pub authorization_kubeconfig: Option<PathBuf>,
    /// Address of the HTTP `/metrics` and `/healthz` endpoints.
    pub metrics_listen: SocketAddr,
    /// Keys under this prefix are counted in the status (`key_count`); starts
    /// with `/`.
    pub key_prefix: String,
    /// How often the shard is probed (health, revision, size, key count).
    pub probe_interval: Duration,
    /// etcd is killed and restarted when it runs but has not answered a probe
    /// for this long.
    pub hang_timeout: Duration,
    /// How long etcd gets to exit after SIGTERM before it is sent SIGKILL.
    pub stop_grace: Duration,
    /// Delays between restarts of an etcd that exited.
    pub backoff: Backoff,
    /// Registration with the router; `None` runs the agent standalone.
    pub router: Option<RouterConfig>,
}

/// How the agent announces itself to ste-router (`--router` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// The router's admin gRPC address as given, `HOST:PORT`,
    /// `https://HOST:PORT` or `http://HOST:PORT`.
    pub address: String,
    /// `--router-ca-file`: the CA of the router's admin certificate; with it
    /// a bare `HOST:PORT` is dialled over TLS.
    pub ca_file: Option<PathBuf>,
    /// The client certificate and key presented to the router (the node's
    /// `--tls-cert-file` and `--tls-private-key-file`).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The agent's gRPC address as the router should dial it (`HOST:PORT`).
    pub advertise_address: String,
    /// The agent's user-facing gRPC address (`--user-listen`) as users dial
    /// it (`HOST:PORT`); empty when the agent has none.
    pub user_address: String,
    /// Placement weight asked for.
    pub weight: u32,
    /// Register, but ask not to be joined to the ring automatically.
    pub no_join: bool,
    /// How often the agent heartbeats to the router, and retries while the
    /// router is unreachable. Longer than zero.
    pub heartbeat_interval: Duration,
    /// Bound on the whole Leave (drain) at shutdown.
    pub drain_timeout: Duration,
}

impl RouterConfig {
    /// The router's address as a URI tonic can dial: `https://` when a
    /// router CA is given, else `http://`, unless the address has a scheme.
    pub fn uri(&self) -> String {
        if self.ca_file.is_some() && !self.address.contains("://") {
            format!("https://{}", self.address.trim_end_matches('/'))
        } else {
            router_uri(&self.address)
        }
    }

    /// The TLS towards the router, read from the files now (a rotated node
    /// certificate is used from the next connection on); `None` without
    /// `--router-ca-file`.
    ///
    /// Errors: a file that cannot be read, naming its flag.
    pub fn tls(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        let Some(ca) = &self.ca_file else {
            return Ok(None);
        };
        ste_auth::tls::client_config(
            ("--router-ca-file", ca),
            self.identity.as_ref().map(|(cert, key)| {
                [
                    ("--tls-cert-file", cert.as_path()),
                    ("--tls-private-key-file", key.as_path()),
                ]
            }),
        )
        .map(Some)
    }
}

/// A start-up failure; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--etcd-bin` (the path given) is neither an executable file nor found
    /// on `PATH`.
    #[error(
        "etcd binary {0:?} not found or not executable: install etcd \
         ({sudo}apt-get install etcd-server) or point --etcd-bin at it",
        sudo = root_prefix()
    )]
    EtcdNotFound(PathBuf),
    /// The shard has TLS but the etcd binary is older than
    /// [`etcd::MIN_TLS_VERSION`].
    #[error(
        "{} is etcd {}.{}.{}: a TLS shard needs etcd 3.6 or newer, whose \
         --client-cert-allowed-hostname takes a list (the router and this node's own probe); \
         use etcd 3.6 (--etcd-bin), or --insecure to serve plain HTTP without authentication",
        bin.display(), version.0, version.1, version.2
    )]
    EtcdTooOldForTls {
        /// The etcd binary found.
        bin: PathBuf,
        /// Its release, (major, minor, patch).
        version: (u32, u32, u32),
    },
    /// Managed mode needs root (CAP_SYS_ADMIN) to mount the tmpfs.
    #[error(
        "--mount managed mounts a tmpfs and needs root (CAP_SYS_ADMIN): run the agent as root, \
         or mount a tmpfs yourself and use --mount external"
    )]
    NotRoot,
    /// `--tmpfs-size` is below 256 MiB, too small for etcd's preallocated WAL.
    #[error(
        "tmpfs size {size} is below the minimum of 256Mi: etcd preallocates 128Mi of WAL; \
         use --tmpfs-size 256Mi or more"
    )]
    TmpfsTooSmall {
        /// The size given.
        size: ByteSize,
    },
    /// Another process listens on an address the agent or its etcd needs.
    #[error(
        "{flag} {addr} is already in use: stop whatever listens there or choose another {flag}"
    )]
    PortInUse {
        /// The flag that gave the address, e.g. `--grpc-listen`.
        flag: &'static str,
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Listening on an address failed for another reason than it being taken.
    #[error("cannot listen on {flag} {addr}")]
    Listen {
        /// The flag that gave the address.
        flag: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// An etcd URL flag is not `SCHEME://HOST:PORT` with a resolvable host
    /// and the scheme the shard's security asks for (`https` with TLS,
    /// `http` with `--insecure` and for the loopback peer URL).
    #[error(
        "{flag} {url:?} is not a usable URL: write {scheme}://HOST:PORT with a literal IP address \
         or a resolvable host name"
    )]
    BadUrl {
        /// The flag that gave the URL.
        flag: &'static str,
        /// The URL as given.
        url: String,
        /// The scheme expected.
        scheme: &'static str,
    },
    /// Neither the API's TLS files nor `--insecure` were given.
    #[error(
        "the agent's API (--grpc-listen, --user-listen) needs TLS: give --tls-cert-file, \
         --tls-private-key-file (the node's certificate, CN=system:node:NODE, O=system:nodes; \
         deploy/pki.sh --shard NODE=IP makes it) and --client-ca-file, or --insecure to serve \
         plain HTTP without authentication"
    )]
    NoApiTls,
    /// A TLS file of the API or towards the router is not usable.
    #[error("{0}")]
    ApiTls(String),
    /// `https://` in `--router` without `--router-ca-file`, or `http://`
    /// with it.
    #[error(
        "--router {0:?} and --router-ca-file disagree: https:// needs --router-ca-file, \
         http:// (a router run --insecure) takes none"
    )]
    RouterScheme(String),
    /// Neither the shard's TLS files nor `--insecure` were given.
    #[error(
        "the shard's etcd needs TLS with client-certificate authentication: give \
         --etcd-cert-file, --etcd-key-file and --etcd-trusted-ca-file (deploy/pki.sh \
         --shard NODE=IP makes them), or --insecure to serve plain HTTP without authentication"
    )]
    NoShardTls,
    /// A file of the shard's TLS cannot be read.
    #[error("{flag} {}: cannot read it", path.display())]
    TlsFile {
        /// The flag that gave the file.
        flag: &'static str,
        /// The file as given.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// `--etcd-client-cert-allowed-hostname` is empty or has an empty or
    /// blank name.
    #[error(
        "--etcd-client-cert-allowed-hostname {0:?} must list SAN host names separated by commas, \
         e.g. ste-router"
    )]
    BadAllowedClient(String),
    /// `--key-prefix` does not start with `/`.
    #[error("--key-prefix {0:?} must start with '/'")]
    BadPrefix(String),
    /// `--node-name` (or the hostname it defaults to) is empty.
    #[error("--node-name must not be empty")]
    EmptyNodeName,
    /// `--router` or `--advertise-address` is not a usable `HOST:PORT`.
    #[error(
        "{flag} {addr:?} is not a usable address: write HOST:PORT \
         (e.g. 127.0.0.1:2490{example})"
    )]
    BadAddress {
        /// The flag that gave the address.
        flag: &'static str,
        /// The address as given.
        addr: String,
        /// More examples for this flag, appended to the message's `e.g.`.
        example: &'static str,
    },
    /// `--weight 0` would give the shard no ring points.
    #[error("--weight must be at least 1")]
    ZeroWeight,
    /// `--heartbeat-interval 0s` would heartbeat in a busy loop.
    #[error("--heartbeat-interval must be longer than 0s")]
    ZeroHeartbeat,
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
        match (&self.shard_tls, self.insecure) {
            (Some(tls), _) => tls.validate()?,
            (None, true) => {}
            (None, false) => return Err(ConfigError::NoShardTls),
        }
        match (&self.api_tls, self.insecure) {
            (Some(files), _) => {
                files
                    .server_config(ste_auth::Door::Users)
                    .map_err(|e| ConfigError::ApiTls(e.to_string()))?;
            }
            (None, true) => {}
            (None, false) => return Err(ConfigError::NoApiTls),
        }
        url_socket_addr(
            "--etcd-client-url",
            &self.etcd_client_url,
            self.client_scheme(),
        )?;
        url_socket_addr("--etcd-peer-url", &self.etcd_peer_url, "http")?;
        if let Some(router) = &self.router {
            router.validate()?;
        }
        let bin = etcd::resolve_binary(&self.etcd_bin)
            .ok_or_else(|| ConfigError::EtcdNotFound(self.etcd_bin.clone()))?;
        if self.shard_tls.is_some()
            && let Some(version @ (major, minor, _)) = etcd::binary_version(&bin)
            && (major, minor) < etcd::MIN_TLS_VERSION
        {
            return Err(ConfigError::EtcdTooOldForTls { bin, version });
        }
        if self.mount == MountMode::Managed && !nix::unistd::geteuid().is_root() {
            return Err(ConfigError::NotRoot);
        }
        Ok(bin)
    }

    /// Fails early when etcd's own ports are taken: etcd would only log it
    /// and exit, and the supervisor would restart it forever.
    pub fn check_etcd_ports(&self) -> Result<(), ConfigError> {
        for (flag, url, scheme) in [
            (
                "--etcd-client-url",
                &self.etcd_client_url,
                self.client_scheme(),
            ),
            ("--etcd-peer-url", &self.etcd_peer_url, "http"),
        ] {
            let addr = url_socket_addr(flag, url, scheme)?;
            bind_check(flag, addr)?;
        }
        Ok(())
    }

    /// The client URL's scheme: `https`, or `http` when the shard has no TLS.
    pub fn client_scheme(&self) -> &'static str {
        if self.shard_tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

impl RouterConfig {
    /// Checks the router flags: both addresses are `HOST:PORT` (the router's
    /// may be an `http://` URL), the weight is at least 1 and the heartbeat
    /// interval is not zero.
    ///
    /// # Errors
    ///
    /// [`ConfigError::BadAddress`], [`ConfigError::ZeroWeight`] or
    /// [`ConfigError::ZeroHeartbeat`], naming the flag to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let https = self.address.starts_with("https://");
        if (https && self.ca_file.is_none())
            || (self.address.starts_with("http://") && self.ca_file.is_some())
        {
            return Err(ConfigError::RouterScheme(self.address.clone()));
        }
        self.tls().map_err(|e| ConfigError::ApiTls(e.to_string()))?;
        let address = self
            .address
            .strip_prefix("http://")
            .or_else(|| self.address.strip_prefix("https://"))
            .unwrap_or(&self.address)
            .trim_end_matches('/');
        if !is_host_port(address)
            || tonic::transport::Endpoint::from_shared(router_uri(&self.address)).is_err()
        {
            return Err(ConfigError::BadAddress {
                flag: "--router",
                addr: self.address.clone(),
                example: " or http://ste-router.kube-system:2490",
            });
        }
        if !is_host_port(&self.advertise_address) {
            return Err(ConfigError::BadAddress {
                flag: "--advertise-address",
                addr: self.advertise_address.clone(),
                example: "",
            });
        }
        if self.weight == 0 {
            return Err(ConfigError::ZeroWeight);
        }
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::ZeroHeartbeat);
        }
        Ok(())
    }
}

/// `HOST:PORT` with a non-empty host (a name, an IPv4 address or a
/// bracketed IPv6 address) and a non-zero port.
fn is_host_port(text: &str) -> bool {
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty() && !host.contains(['/', '[', ']', ':', ' ']) && !host.starts_with('-')
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// `HOST:PORT` (or an `http://` URL) → the URI tonic dials.
pub fn router_uri(address: &str) -> String {
    let address = address.trim_end_matches('/');
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

/// The address the router dials the agent at, when `--advertise-address`
/// is not given: the gRPC listen address, with an unspecified IP
/// (0.0.0.0 or ::) replaced by the node's IP.
pub fn default_advertise_address(grpc_listen: SocketAddr, node_ip: IpAddr) -> String {
    let ip = if grpc_listen.ip().is_unspecified() {
        node_ip
    } else {
        grpc_listen.ip()
    };
    SocketAddr::new(ip, grpc_listen.port()).to_string()
}

/// Binds and immediately releases `addr` to learn whether it is free.
fn bind_check(flag: &'static str, addr: SocketAddr) -> Result<(), ConfigError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| listen_error(flag, addr, source))
}

/// The error for a failed bind of `addr` (given as `flag`):
/// [`ConfigError::PortInUse`] when the address is taken, so the message
/// says to stop the other process or choose another address, else
/// [`ConfigError::Listen`] with the OS error as its source.
pub fn listen_error(flag: &'static str, addr: SocketAddr, source: std::io::Error) -> ConfigError {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        ConfigError::PortInUse { flag, addr }
    } else {
        ConfigError::Listen { flag, addr, source }
    }
}

/// `SCHEME://HOST:PORT[/]` → a socket address.
///
/// # Errors
///
/// [`ConfigError::BadUrl`] when the scheme is not `scheme`, there is a
/// path, or the host does not resolve.
pub fn url_socket_addr(
    flag: &'static str,
    url: &str,
    scheme: &'static str,
) -> Result<SocketAddr, ConfigError> {
    let bad = || ConfigError::BadUrl {
        flag,
        url: url.to_owned(),
        scheme,
    };
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(bad)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn router(address: &str, advertise: &str) -> RouterConfig {
        RouterConfig {
            address: address.into(),
            advertise_address: advertise.into(),
            ca_file: None,
            identity: None,
            user_address: String::new(),
            weight: 1,
            no_join: false,
            heartbeat_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(120),
        }
    }

    #[test]
    fn advertise_address_replaces_an_unspecified_ip_by_the_node_ip() {
        let node: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(
            default_advertise_address("0.0.0.0:2290".parse().unwrap(), node),
            "10.0.0.7:2290"
        );
        assert_eq!(
            default_advertise_address("[::]:2290".parse().unwrap(), node),
            "10.0.0.7:2290"
        );
        assert_eq!(
            default_advertise_address("127.0.0.3:4000".parse().unwrap(), node),
            "127.0.0.3:4000"
        );
        let v6: IpAddr = "fd00::7".parse().unwrap();
        assert_eq!(
            default_advertise_address("0.0.0.0:2290".parse().unwrap(), v6),
            "[fd00::7]:2290"
        );
    }

    #[test]
    fn router_address_becomes_an_http_uri() {
        assert_eq!(router_uri("127.0.0.1:2490"), "http://127.0.0.1:2490");
        assert_eq!(
            router_uri("ste-router.kube-system:2490"),
            "http://ste-router.kube-system:2490"
        );
        assert_eq!(router_uri("http://10.0.0.1:2490/"), "http://10.0.0.1:2490");
    }

    #[test]
    fn router_flags_are_validated() {
        assert!(router("127.0.0.1:2490", "10.0.0.7:2290").validate().is_ok());
        assert!(
            router("http://router:2490", "node-a:2290")
                .validate()
                .is_ok()
        );
        assert!(router("[::1]:2490", "[fd00::7]:2290").validate().is_ok());
        for bad in [
            "127.0.0.1",
            "router",
            ":2490",
            "router:0",
            "router:http",
            "a b:1",
        ] {
            let err = router(bad, "10.0.0.7:2290").validate().unwrap_err();
            assert!(err.to_string().contains("--router"), "{bad}: {err}");
        }
        for bad in ["10.0.0.7", "0.0.0.0", "host:99999", "http://h:1"] {
            let err = router("127.0.0.1:2490", bad).validate().unwrap_err();
            assert!(
                err.to_string().contains("--advertise-address"),
                "{bad}: {err}"
            );
        }
        let mut zero = router("127.0.0.1:2490", "10.0.0.7:2290");
        zero.weight = 0;
        assert!(matches!(zero.validate(), Err(ConfigError::ZeroWeight)));
        zero.weight = 1;
        zero.heartbeat_interval = Duration::ZERO;
        assert!(matches!(zero.validate(), Err(ConfigError::ZeroHeartbeat)));
    }
}
