use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ste_core::units::{parse_duration, parse_nonzero_duration};
use ste_router::config::{Config, MemberFlag};

/// mimalloc instead of glibc's malloc: under load the router allocates a
/// few small buffers per request (protobuf messages, HTTP/2 frames), and a
/// profile of 32 concurrent writers put about a quarter of its CPU in
/// glibc's malloc and free (issue 14's closing note has the numbers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// STE router: serves the etcd v3 API to kube-apiserver and shards the
/// keys over the in-memory etcd shards of the ring, with one global
/// revision space.
#[derive(Debug, Parser)]
#[command(name = "ste-router", version)]
struct Cli {
    /// Address of the etcd v3 API (what kube-apiserver's
    /// --etcd-servers-overrides points at).
    #[arg(long, env = "STE_LISTEN", default_value = "127.0.0.1:2479")]
    listen: SocketAddr,
    /// Address of the ste.v1 admin API for agents (and users with a client
    /// certificate): TLS that refuses clients without a certificate of
    /// --client-ca-file.
    #[arg(long, env = "STE_ADMIN_LISTEN", default_value = "127.0.0.1:2490")]
    admin_listen: SocketAddr,
    /// Address of the ste.v1 admin API for users (kubectl ste): TLS with a
    /// client certificate or a bearer token (checked by TokenReview).
    #[arg(long, env = "STE_USER_LISTEN", default_value = "127.0.0.1:2492")]
    user_listen: SocketAddr,
    /// Serving certificate (PEM) of --admin-listen and --user-listen.
    #[arg(long, env = "STE_TLS_CERT_FILE", requires_all = ["tls_private_key_file", "client_ca_file"])]
    tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, env = "STE_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// CAs (PEM bundle) whose client certificates --admin-listen and
    /// --user-listen accept: the STE CA (agents) and Kubernetes' client CA
    /// (users). Subject CN is the user, O the groups.
    #[arg(long, env = "STE_CLIENT_CA_FILE", requires = "tls_cert_file")]
    client_ca_file: Option<PathBuf>,
    /// Serve --admin-listen and --user-listen as plain HTTP without
    /// authentication (anyone who reaches them can move or drop every Pod).
    #[arg(long, env = "STE_INSECURE")]
    insecure: bool,
    /// kubeconfig of the Kubernetes API that reviews bearer tokens
    /// (TokenReview). Default: the pod's service account when in a pod;
    /// without either, tokens are refused.
    #[arg(long, env = "STE_AUTHENTICATION_KUBECONFIG")]
    authentication_kubeconfig: Option<PathBuf>,
    /// kubeconfig of the Kubernetes API that authorises users
    /// (SubjectAccessReview on rings.ste.io: get, update). Default: the
    /// pod's service account when in a pod; without either, any client
    /// certificate of --client-ca-file may do everything.
    #[arg(long, env = "STE_AUTHORIZATION_KUBECONFIG")]
    authorization_kubeconfig: Option<PathBuf>,
    /// Address of the HTTP /metrics endpoint.
    #[arg(long, env = "STE_METRICS_LISTEN", default_value = "127.0.0.1:2491")]
    metrics_listen: SocketAddr,
    /// Client URL reported in Cluster.MemberList. Default: http://<--listen>.
    #[arg(long, env = "STE_ADVERTISE_CLIENT_URL")]
    advertise_client_url: Option<String>,
    /// A ring member NAME=ETCD_URL (repeatable), e.g. node-a=http://127.0.0.2:2279.
    /// Without any, the members recorded in the state file are used.
    #[arg(long = "member", env = "STE_MEMBERS", value_delimiter = ',')]
    members: Vec<MemberFlag>,
    /// Virtual nodes per unit of member weight.
    #[arg(long, env = "STE_VNODES", default_value_t = ste_core::ring::DEFAULT_VNODES, value_parser = clap::value_parser!(u32).range(1..))]
    vnodes: u32,
    /// State file: ring and revision high-water mark (fsync'd on change).
    #[arg(
        long,
        env = "STE_STATE_FILE",
        default_value = "/var/lib/ste/router.state"
    )]
    state_file: PathBuf,
    /// Bytes of watch events kept in memory; watches starting before them
    /// get the compacted error and relist.
    #[arg(long, env = "STE_EVENT_LOG_BYTES", default_value_t = 64 << 20)]
    event_log_bytes: usize,
    /// Largest write request accepted, as etcd's --max-request-bytes (default
    /// 1.5 MiB): a larger Put, Txn, DeleteRange or Compact gets
    /// INVALID_ARGUMENT "etcdserver: request is too large".
    #[arg(long, env = "STE_MAX_REQUEST_BYTES", default_value_t = 1_572_864, value_parser = clap::value_parser!(u64).range(1..))]
    max_request_bytes: u64,
    /// Largest gRPC message accepted at all; a larger one gets gRPC's
    /// RESOURCE_EXHAUSTED. Default: --max-request-bytes + 512 KiB, etcd's
    /// allowance for gRPC overhead (2 MiB with the defaults).
    #[arg(long, env = "STE_MAX_RECV_BYTES")]
    max_recv_bytes: Option<usize>,
    /// The shards' --max-txn-ops (etcd's default 128; the agent passes it to
    /// its etcd): multi-key deletes are sent in Txns of at most this many
    /// operations.
    #[arg(long, env = "STE_SHARD_MAX_TXN_OPS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    shard_max_txn_ops: u32,
    /// Revisions reserved per state-file write.
    #[arg(long, env = "STE_REVISION_BLOCK", default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..))]
    revision_block: i64,
    /// Timeout to connect to a shard.
    #[arg(long, env = "STE_SHARD_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_nonzero_duration)]
    shard_connect_timeout: Duration,
    /// Timeout of one request to a shard.
    /// While a write to a shard is in flight, later revisions wait for it:
    /// keep this short (shards are in-memory etcds on the cluster network).
    #[arg(long, env = "STE_SHARD_TIMEOUT", default_value = "2s", value_parser = parse_nonzero_duration)]
    shard_timeout: Duration,
    /// How often shards are probed.
    #[arg(long, env = "STE_HEALTH_INTERVAL", default_value = "1s", value_parser = parse_nonzero_duration)]
    health_interval: Duration,
    /// Progress notifications to watchers that asked for them (etcd: 10m).
    #[arg(long, env = "STE_PROGRESS_NOTIFY_INTERVAL", default_value = "10m", value_parser = parse_nonzero_duration)]
    progress_notify_interval: Duration,
    /// The etcd version reported by Maintenance.Status; kube-apiserver
    /// enables watch progress requests from 3.5.13.
    #[arg(long, env = "STE_REPORTED_ETCD_VERSION", default_value = "3.5.13")]
    reported_etcd_version: String,
    /// Name in Cluster.MemberList.
    #[arg(long, env = "STE_NAME", default_value = "ste-router")]
    name: String,
    /// Serve the etcd API over TLS with this certificate (PEM).
    #[arg(long, env = "STE_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, env = "STE_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM) on --listen.
    #[arg(long, env = "STE_CLIENT_CA", requires = "cert")]
    client_ca: Option<PathBuf>,
    /// CA (PEM) that signed the shards' certificates (https:// member URLs).
    #[arg(long, env = "STE_SHARD_CA")]
    shard_ca: Option<PathBuf>,
    /// Client certificate (PEM) the router presents to the shards.
    #[arg(long, env = "STE_SHARD_CERT", requires = "shard_key")]
    shard_cert: Option<PathBuf>,
    /// The private key of --shard-cert (PEM).
    #[arg(long, env = "STE_SHARD_KEY", requires = "shard_cert")]
    shard_key: Option<PathBuf>,
    /// Join registered, healthy agents automatically (those started with
    /// --no-join only register).
    #[arg(long, env = "STE_AUTO_JOIN", default_value_t = true, action = clap::ArgAction::Set)]
    auto_join: bool,
    /// The heaviest weight an agent is joined with automatically: the
    /// weight an agent registers is its node's word, and a compromised node
    /// must not draw the ring onto itself. An operator may join heavier
    /// with `kubectl ste ring join NODE --weight N`.
    #[arg(long, env = "STE_MAX_AUTO_JOIN_WEIGHT", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    max_auto_join_weight: u32,
    /// A member whose shard has not answered for this long is fenced: removed
    /// from the ring, its keys dropped, every watch cut.
    #[arg(long, env = "STE_MEMBER_DEAD_AFTER", default_value = "30s", value_parser = parse_nonzero_duration)]
    member_dead_after: Duration,
    /// Pause between migration batches (100 keys each) during a join or
    /// leave, to limit the extra load on the shards.
    #[arg(long, env = "STE_MIGRATION_PAUSE", default_value = "0s", value_parser = parse_duration)]
    migration_pause: Duration,
    /// Keep ring and revision high-water mark in this etcd (e.g. the
    /// control plane's; comma-separated URLs) instead of --state-file, so the
    /// router can move between control-plane nodes.
    #[arg(long, env = "STE_STATE_ETCD", value_delimiter = ',')]
    state_etcd: Vec<String>,
    /// CA (PEM) that signed the --state-etcd servers' certificates (https://
    /// URLs), as kube-apiserver's --etcd-cafile (kubeadm:
    /// /etc/kubernetes/pki/etcd/ca.crt).
    #[arg(long, env = "STE_STATE_ETCD_CAFILE")]
    state_etcd_cafile: Option<PathBuf>,
    /// Client certificate (PEM) presented to --state-etcd, as kube-apiserver's
    /// --etcd-certfile (kubeadm: /etc/kubernetes/pki/apiserver-etcd-client.crt).
    #[arg(long, env = "STE_STATE_ETCD_CERTFILE", requires = "state_etcd_keyfile")]
    state_etcd_certfile: Option<PathBuf>,
    /// The private key of --state-etcd-certfile (PEM), as kube-apiserver's
    /// --etcd-keyfile.
    #[arg(long, env = "STE_STATE_ETCD_KEYFILE", requires = "state_etcd_certfile")]
    state_etcd_keyfile: Option<PathBuf>,
    /// The key that holds the state in --state-etcd.
    #[arg(long, env = "STE_STATE_ETCD_KEY", default_value = "/ste/router/state")]
    state_etcd_key: String,
    /// Key index implementation: btree (std BTreeMap, fastest writes) or
    /// betree (Bε-tree, ~35% less memory per key). See docs/key-index.md.
    #[arg(long, env = "STE_KEY_INDEX", default_value_t = ste_core::index::KeyIndexKind::default())]
    key_index: ste_core::index::KeyIndexKind,
    /// Threads that serve requests (the async runtime's workers). Default:
    /// one per CPU the router may use. On a small machine shared with other
    /// busy processes, fewer cost less CPU per request (one thread: a
    /// fifth less on 2 CPUs, at the same throughput; docs/benchmark.md).
    /// At most 1024: each thread reserves its stack, and a mistyped huge
    /// number would exhaust memory or the process's thread limit.
    #[arg(long, env = "STE_WORKER_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    worker_threads: Option<u32>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "STE_LOG", default_value = "info")]
    log: String,
}

/// What etcd adds to --max-request-bytes for its gRPC receive limit
/// (`grpcOverheadBytes` in etcd's server).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Raises the soft limit on open files to the hard limit, as Go's runtime
/// does for etcd and kube-apiserver (Go 1.19 and later): each client
/// connection and each shard channel holds a descriptor, and the soft limit a
/// shell or service manager often leaves (1024) would refuse clients long
/// before the router runs out of anything else. Returns the limit in force.
fn raise_open_files_limit() -> nix::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ste_main::init_logging(&cli.log);
    match raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
    }
    let config = Config {
        advertise_client_url: cli
            .advertise_client_url
            .unwrap_or_else(|| format!("http://{}", cli.listen)),
        name: cli.name,
        listen: cli.listen,
        admin_listen: cli.admin_listen,
        user_listen: cli.user_listen,
        api: ste_router::config::ApiSecurity {
            tls: match (
                cli.tls_cert_file,
                cli.tls_private_key_file,
                cli.client_ca_file,
            ) {
                (Some(cert), Some(key), Some(client_ca)) => Some(ste_auth::tls::ServerFiles {
                    cert,
                    key,
                    client_ca,
                }),
                _ => None,
            },
            insecure: cli.insecure,
            authentication_kubeconfig: cli.authentication_kubeconfig,
            authorization_kubeconfig: cli.authorization_kubeconfig,
        },
        metrics_listen: cli.metrics_listen,
        members: cli.members,
        vnodes: cli.vnodes,
        state_file: cli.state_file,
        event_log_bytes: cli.event_log_bytes,
        max_request_bytes: cli.max_request_bytes as usize,
        max_recv_bytes: cli
            .max_recv_bytes
            .unwrap_or(cli.max_request_bytes as usize + GRPC_OVERHEAD_BYTES),
        shard_max_txn_ops: cli.shard_max_txn_ops as usize,
        revision_block: cli.revision_block.max(1),
        shard_connect_timeout: cli.shard_connect_timeout,
        shard_timeout: cli.shard_timeout,
        health_interval: cli.health_interval,
        progress_notify_interval: cli.progress_notify_interval,
        etcd_version: cli.reported_etcd_version,
        auto_join: cli.auto_join,
        max_auto_join_weight: cli.max_auto_join_weight,
        state_etcd: cli.state_etcd,
        state_etcd_key: cli.state_etcd_key,
        migration_pause: cli.migration_pause,
        member_dead_after: cli.member_dead_after,
        key_index: cli.key_index,
        tls: ste_router::config::TlsFiles {
            cert: cli.cert,
            key: cli.key,
            client_ca: cli.client_ca,
            shard_ca: cli.shard_ca,
            shard_cert: cli.shard_cert,
            shard_key: cli.shard_key,
            state_etcd_ca: cli.state_etcd_cafile,
            state_etcd_cert: cli.state_etcd_certfile,
            state_etcd_key: cli.state_etcd_keyfile,
        },
    };
    let workers = match cli.worker_threads {
        Some(n) => ste_main::Workers::Fixed(n as usize),
        None => ste_main::Workers::Cores,
    };
    ste_main::block_on(workers, ste_router::run(config))
}
