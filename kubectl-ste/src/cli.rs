//! The command line, as clap parses it. `main.rs` parses; [`crate::run`]
//! turns it into a [`crate::session::Session`] and runs the command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// kubectl ste: inspect and operate STE, the sharded in-memory store of
/// Kubernetes pods.
///
/// The router's user API (TLS, port 2492) is reached at --router, else
/// STE_ROUTER, else the address in the kubeconfig context's extension
/// ste.io/router (address: HOST:PORT), else through a port-forward to the
/// router pod (label app.kubernetes.io/name=ste-router in kube-system). The
/// STE CA comes from that extension (certificate-authority), STE_ROUTER_CA
/// or the ConfigMap kube-system/ste-ca; the credentials are the kubeconfig
/// user's.
#[derive(Debug, Parser)]
#[command(name = "kubectl ste", bin_name = "kubectl ste", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, with kubectl's names.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, a colon-separated
    /// list, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of the pods given to `where` (default: the context's
    /// namespace, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// All namespaces. Not meaningful for `where` (a pod is named in one
    /// namespace) and refused there; the other commands are cluster-wide.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Output format: table, wide, json or yaml.
    #[arg(short = 'o', long, global = true, value_name = "FORMAT")]
    pub output: Option<String>,
    /// Don't print headers (and the summary line) in table output.
    #[arg(long, global = true)]
    pub no_headers: bool,
    /// How long a single request may take, e.g. 5s, 1m; 0 waits forever.
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s")]
    pub request_timeout: String,
    /// The router's user address, HOST:PORT (TLS; http://HOST:PORT for a
    /// router run with --insecure) (env STE_ROUTER). Without either, the
    /// kubeconfig context's extension ste.io/router names it, else the
    /// router pod is port-forwarded through the Kubernetes API.
    #[arg(long, global = true, value_name = "ADDR")]
    pub router: Option<String>,
    /// Colour: auto (when writing to a terminal and NO_COLOR is unset),
    /// always or never.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// When the stream is a terminal and NO_COLOR is unset.
    Auto,
    /// Always, even into pipes.
    Always,
    /// Never.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One row per ring member: shard, agent state, epoch, keys, sizes.
    Status,
    /// Where pods are stored: TYPE/NAME (pod/NAME, pods/NAME, po/NAME), or
    /// TYPE NAME..., or NAME...
    Where(WhereArgs),
    /// Show or change the placement ring.
    #[command(subcommand)]
    Ring(RingCommand),
    /// Plugin, router and agent versions, and the skew between them.
    Version(VersionArgs),
}

/// `where`.
#[derive(Debug, Args)]
pub struct WhereArgs {
    /// pod/NAME..., pod NAME..., or NAME...
    #[arg(value_name = "TYPE/NAME")]
    pub args: Vec<String>,
    /// Whose placement: the STE router's ring (asks the router), or the
    /// original prototype's MD5 ring or name-suffix scheme (computed from
    /// the Kubernetes node list).
    #[arg(long, value_enum, default_value_t = Placement::Router)]
    pub placement: Placement,
    /// kube-apiserver's --etcd-prefix (STE placement only; the prototype
    /// used no prefix).
    #[arg(long, default_value = ste_core::keys::DEFAULT_PREFIX, value_name = "PREFIX")]
    pub etcd_prefix: String,
}

/// `where --placement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    /// The STE ring, as the router places keys now.
    Router,
    /// The original prototype's one-MD5-point-per-node ring.
    ForkRing,
    /// The original prototype's shard code in the pod name's last token.
    ForkSuffix,
}

/// `ring …`.
#[derive(Debug, Subcommand)]
pub enum RingCommand {
    /// Generation, virtual nodes, members with weight and key share, and
    /// registered agents that are not members.
    Show,
    /// Add a node's shard to the ring and move its share of the keys to it;
    /// returns when the move is done (--wait=false: once it started).
    Join(JoinArgs),
    /// Move every key off a member and remove it from the ring; returns
    /// when the move is done (--wait=false: once it started).
    Leave(LeaveArgs),
}

/// What `ring join` and `ring leave` share: how long to follow the move.
/// Like `kubectl drain` and `kubectl delete`, they wait by default.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Only show the plan; nothing moves.
    #[arg(long)]
    pub dry_run: bool,
    /// Follow the move until every key is on its new shard (progress on
    /// stderr). --wait=false returns as soon as the router has accepted
    /// the change and started the move (it runs on in the router).
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub wait: bool,
    /// Give up waiting after this long, e.g. 90s, 10m (the move itself
    /// continues in the router). Default: wait until it is done. Not
    /// allowed with --wait=false.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

/// `ring join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The node (a registered agent's node name, or any name with --endpoint).
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Placement weight: the member gets weight × vnodes ring points
    /// (default: the weight the agent registered with, else 1). At least 1,
    /// as the agent's own --weight.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub weight: Option<u32>,
    /// Join an unregistered shard directly by its etcd client URL.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `ring leave`.
#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// The member to remove.
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Don't ask for confirmation (required when stdin is not a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only the plugin's version; contact nothing.
    #[arg(long)]
    pub client: bool,
}
