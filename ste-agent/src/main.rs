//! `ste-agent`: parses the flags (clap; each also from an `STE_*` variable)
//! into a [`Config`] and hands it to [`ste_agent::run`] on the shared
//! start-up ([`ste_main`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ste_agent::config::{self, Config, MountMode, RouterConfig};
use ste_agent::size::ByteSize;
use ste_agent::supervisor::Backoff;
use ste_agent::tls::ShardTls;
use ste_core::units::{parse_duration, parse_nonzero_duration};

/// STE node agent: mounts a tmpfs, runs an in-memory etcd shard on it,
/// supervises it and reports its status over gRPC (ste.v1.Agent).
///
/// Signals: SIGTERM or SIGINT drains, then stops: with --router the router
/// first moves this shard's keys to the other members (bounded by
/// --drain-timeout; an ERROR is logged if that fails, because the keys are
/// lost). SIGQUIT stops without draining: the teardown of a whole cluster
/// (scripts/local-cluster.sh down sends it after stopping the router); the
/// shard's keys are discarded with it. Either way etcd is stopped and a
/// managed tmpfs unmounted before the agent exits 0.
#[derive(Debug, Parser)]
#[command(name = "ste-agent", version)]
struct Cli {
    /// Kubernetes node name; also the etcd member name. Default: the hostname.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// The node's IP, used for the default --etcd-client-url.
    /// Default: the first non-loopback IPv4 address.
    #[arg(long, env = "NODE_IP")]
    node_ip: Option<IpAddr>,
    /// Directory that is (or becomes) the tmpfs holding the shard.
    #[arg(long, env = "STE_DATA_DIR", default_value = "/var/lib/ste/shard")]
    data_dir: PathBuf,
    /// Size of the tmpfs (managed mode), e.g. 512Mi, 1Gi. At least 256Mi.
    #[arg(long, env = "STE_TMPFS_SIZE", default_value = "512Mi")]
    tmpfs_size: ByteSize,
    /// managed: the agent mounts the tmpfs (needs root); external: the data
    /// dir must already be a tmpfs.
    #[arg(long, env = "STE_MOUNT", value_enum, default_value = "managed")]
    mount: MountMode,
    /// etcd binary: a path, or a name looked up on PATH.
    #[arg(long, env = "STE_ETCD_BIN", default_value = "etcd")]
    etcd_bin: PathBuf,
    /// URL etcd serves clients (the router) on. Default: https://<node-ip>:2279
    /// (http:// with --insecure).
    #[arg(long, env = "STE_ETCD_CLIENT_URL")]
    etcd_client_url: Option<String>,
    /// The shard's certificate (PEM), etcd's --cert-file: serving certificate
    /// for the node's IP and, with SAN DNS:<node-name> and clientAuth, the
    /// agent's own client certificate towards its shard (deploy/pki.sh
    /// --shard NODE=IP makes one). etcd rereads it at every handshake.
    #[arg(long, env = "STE_ETCD_CERT_FILE",
          requires_all = ["etcd_key_file", "etcd_trusted_ca_file"])]
    etcd_cert_file: Option<PathBuf>,
    /// The private key of --etcd-cert-file (PEM), etcd's --key-file.
    #[arg(long, env = "STE_ETCD_KEY_FILE", requires = "etcd_cert_file")]
    etcd_key_file: Option<PathBuf>,
    /// CA (PEM) that client certificates must be signed by, etcd's
    /// --trusted-ca-file (--client-cert-auth is always on with TLS).
    #[arg(long, env = "STE_ETCD_TRUSTED_CA_FILE", requires = "etcd_cert_file")]
    etcd_trusted_ca_file: Option<PathBuf>,
    /// SAN host names of the client certificates the shard accepts (etcd's
    /// --client-cert-allowed-hostname, comma-separated): the router's
    /// --shard-cert. The node name is always added (the agent's own probe).
    #[arg(long, env = "STE_ETCD_CLIENT_CERT_ALLOWED_HOSTNAME", value_delimiter = ',',
          default_value = ste_agent::tls::DEFAULT_ALLOWED_CLIENT)]
    etcd_client_cert_allowed_hostname: Vec<String>,
    /// Serve the shard's etcd and the agent's API over plain HTTP without
    /// authentication (logs a warning): anyone who reaches the ports can
    /// read and rewrite Pods. For a throw-away cluster only. (TLS files
    /// given for either still switch TLS on for it.)
    #[arg(long, env = "STE_INSECURE", value_parser = clap::builder::FalseyValueParser::new())]
    insecure: bool,
    /// etcd's peer URL, on loopback. Default: http://127.0.0.1:2280
    /// (http://<node-ip>:2280 when the node IP is a loopback address).
    #[arg(long, env = "STE_ETCD_PEER_URL")]
    etcd_peer_url: Option<String>,
    /// Address of the gRPC API (ste.v1.Agent, health, reflection).
    #[arg(long, env = "STE_GRPC_LISTEN", default_value = "0.0.0.0:2290")]
    grpc_listen: SocketAddr,
    /// Address of the same API for users (kubectl ste): TLS with a client
    /// certificate or a bearer token (checked by TokenReview). Advertised to
    /// the router with an unspecified IP replaced by the node IP.
    #[arg(long, env = "STE_USER_LISTEN", default_value = "0.0.0.0:2292")]
    user_listen: SocketAddr,
    /// The node's certificate (PEM): CN=system:node:NODE, O=system:nodes,
    /// SANs the node IP and name. It serves --grpc-listen and --user-listen
    /// and is presented to the router. deploy/pki.sh's shard-NODE.crt.
    #[arg(long, env = "STE_TLS_CERT_FILE", requires_all = ["tls_private_key_file", "client_ca_file"])]
    tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, env = "STE_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// CAs (PEM bundle) whose client certificates the API accepts: the STE
    /// CA and Kubernetes' client CA (users). Subject CN is the user, O the
    /// groups.
    #[arg(long, env = "STE_CLIENT_CA_FILE", requires = "tls_cert_file")]
    client_ca_file: Option<PathBuf>,
    /// CA (PEM) of the router's admin certificate: --router is dialled over
    /// TLS, presenting --tls-cert-file.
    #[arg(long, env = "STE_ROUTER_CA_FILE", requires = "tls_cert_file")]
    router_ca_file: Option<PathBuf>,
    /// kubeconfig of the Kubernetes API that reviews bearer tokens
    /// (TokenReview). Default: the pod's service account when in a pod.
    #[arg(long, env = "STE_AUTHENTICATION_KUBECONFIG")]
    authentication_kubeconfig: Option<PathBuf>,
    /// kubeconfig of the Kubernetes API that authorises users
    /// (SubjectAccessReview on rings.ste.io, verb get). Default: the pod's
    /// service account when in a pod; without either, any client
    /// certificate of --client-ca-file may read.
    #[arg(long, env = "STE_AUTHORIZATION_KUBECONFIG")]
    authorization_kubeconfig: Option<PathBuf>,
    /// Address of the HTTP /metrics and /healthz endpoints.
    #[arg(long, env = "STE_METRICS_LISTEN", default_value = "0.0.0.0:2291")]
    metrics_listen: SocketAddr,
    /// Key prefix whose keys are counted in status (key_count).
    #[arg(long, env = "STE_KEY_PREFIX", default_value = "/registry/pods/")]
    key_prefix: String,
    /// How often the shard is probed.
    #[arg(long, env = "STE_PROBE_INTERVAL", default_value = "1s", value_parser = parse_nonzero_duration)]
    probe_interval: Duration,
    /// Kill and restart etcd when it runs but has not answered for this long.
    #[arg(long, env = "STE_ETCD_HANG_TIMEOUT", default_value = "30s", value_parser = parse_nonzero_duration)]
    etcd_hang_timeout: Duration,
    /// How long etcd gets to exit after SIGTERM before SIGKILL.
    #[arg(long, env = "STE_STOP_GRACE", default_value = "10s", value_parser = parse_duration)]
    stop_grace: Duration,
    /// First delay before restarting a failed etcd; doubles up to --restart-backoff-max.
    #[arg(long, env = "STE_RESTART_BACKOFF", default_value = "1s", value_parser = parse_nonzero_duration)]
    restart_backoff: Duration,
    /// Cap of the restart delay.
    #[arg(long, env = "STE_RESTART_BACKOFF_MAX", default_value = "30s", value_parser = parse_nonzero_duration)]
    restart_backoff_max: Duration,
    /// ste-router's admin gRPC address (HOST:PORT, e.g. 127.0.0.1:2490): the
    /// agent registers there once its shard serves, heartbeats, and asks to
    /// be drained on shutdown. Without it the agent runs standalone.
    #[arg(long, env = "STE_ROUTER")]
    router: Option<String>,
    /// Register, but ask the router not to join this shard to the ring
    /// automatically (the original prototype's `no-shard` node label).
    #[arg(long, env = "STE_NO_JOIN", value_parser = clap::builder::FalseyValueParser::new())]
    no_join: bool,
    /// Placement weight asked of the router: the shard gets weight × vnodes
    /// ring points.
    #[arg(long, env = "STE_WEIGHT", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    weight: u32,
    /// The agent's gRPC address given to the router (HOST:PORT). Default:
    /// --grpc-listen, with an unspecified IP (0.0.0.0) replaced by the node IP.
    #[arg(long, env = "STE_ADVERTISE_ADDRESS")]
    advertise_address: Option<String>,
    /// How often the agent heartbeats to the router (and retries while the
    /// router is unreachable).
    #[arg(long, env = "STE_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = parse_nonzero_duration)]
    heartbeat_interval: Duration,
    /// On shutdown, how long the router may take to move this shard's keys
    /// off it before the agent stops etcd anyway.
    #[arg(long, env = "STE_DRAIN_TIMEOUT", default_value = "120s", value_parser = parse_nonzero_duration)]
    drain_timeout: Duration,
    /// Log filter (tracing EnvFilter syntax), e.g. info or ste_agent=debug,etcd=debug.
    #[arg(long, env = "STE_LOG", default_value = "info")]
    log: String,
}

impl Cli {
    fn into_config(self) -> Config {
        let node_ip = self.node_ip.unwrap_or_else(config::default_node_ip);
        let node_name = self.node_name.unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        });
        // An empty STE_ROUTER (e.g. from a template) means standalone.
        let given = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        let router = given(self.router).map(|address| RouterConfig {
            address,
            advertise_address: given(self.advertise_address)
                .unwrap_or_else(|| config::default_advertise_address(self.grpc_listen, node_ip)),
            ca_file: self.router_ca_file,
            identity: self
                .tls_cert_file
                .clone()
                .zip(self.tls_private_key_file.clone()),
            user_address: config::default_advertise_address(self.user_listen, node_ip),
            weight: self.weight,
            no_join: self.no_join,
            heartbeat_interval: self.heartbeat_interval,
            drain_timeout: self.drain_timeout,
        });
        let shard_tls = match (
            self.etcd_cert_file,
            self.etcd_key_file,
            self.etcd_trusted_ca_file,
        ) {
            (Some(cert_file), Some(key_file), Some(trusted_ca_file)) => Some(ShardTls {
                cert_file,
                key_file,
                trusted_ca_file,
                allowed_hostnames: self.etcd_client_cert_allowed_hostname,
            }),
            // clap refuses a partial set, so here none was given: plain
            // HTTP with --insecure, else Config::validate's NoShardTls.
            _ => None,
        };
        let scheme = if shard_tls.is_some() { "https" } else { "http" };
        Config {
            node_name,
            data_dir: self.data_dir,
            tmpfs_size: self.tmpfs_size,
            mount: self.mount,
            etcd_bin: self.etcd_bin,
            etcd_client_url: self
                .etcd_client_url
                .unwrap_or_else(|| format!("{scheme}://{}", SocketAddr::new(node_ip, 2279))),
            shard_tls,
            insecure: self.insecure,
            etcd_peer_url: self
                .etcd_peer_url
                .unwrap_or_else(|| config::default_peer_url(node_ip)),
            grpc_listen: self.grpc_listen,
            user_listen: self.user_listen,
            api_tls: match (
                self.tls_cert_file,
                self.tls_private_key_file,
                self.client_ca_file,
            ) {
                (Some(cert), Some(key), Some(client_ca)) => Some(ste_auth::tls::ServerFiles {
                    cert,
                    key,
                    client_ca,
                }),
                _ => None,
            },
            authentication_kubeconfig: self.authentication_kubeconfig,
            authorization_kubeconfig: self.authorization_kubeconfig,
            metrics_listen: self.metrics_listen,
            key_prefix: self.key_prefix,
            probe_interval: self.probe_interval,
            hang_timeout: self.etcd_hang_timeout,
            stop_grace: self.stop_grace,
            backoff: Backoff {
                initial: self.restart_backoff,
                max: self.restart_backoff_max.max(self.restart_backoff),
                ..Backoff::default()
            },
            router,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ste_main::init_logging(&cli.log);
    // Two workers: the agent runs on every node beside the workload.
    ste_main::block_on(
        ste_main::Workers::Fixed(2),
        ste_agent::run(cli.into_config()),
    )
}
