//! The router's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// An initial ring member from `--member NAME=URL`.
/// One `--member NAME=URL` flag: a ring member given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFlag {
    /// The member (node) name.
    pub name: String,
    /// Its shard's etcd client URL.
    pub endpoint: String,
}

impl std::str::FromStr for MemberFlag {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, endpoint) = text.split_once('=').ok_or_else(|| {
            format!("{text:?}: write NAME=URL, e.g. node-a=http://127.0.0.2:2279")
        })?;
        if name.is_empty() {
            return Err(format!("{text:?}: the member name is empty"));
        }
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "{text:?}: the URL must start with http:// or https://"
            ));
        }
        Ok(MemberFlag {
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
        })
    }
}

/// Everything the router runs with, from its flags (see `main.rs` for each
/// flag's environment variable and default, and `docs/router.md`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The member name the router reports as an etcd member (`--name`).
    pub name: String,
    /// The etcd API listener (`--listen`).
    pub listen: SocketAddr,
    /// The `ste.v1.Ring` admin listener (`--admin-listen`).
    pub admin_listen: SocketAddr,
    /// The `/metrics` and `/healthz` listener (`--metrics-listen`).
    pub metrics_listen: SocketAddr,
    /// The client URL MemberList reports (`--advertise-client-url`).
    pub advertise_client_url: String,
    /// Static ring members (`--member`); empty: from the state store.
    pub members: Vec<MemberFlag>,
    /// Ring points per unit of member weight (`--vnodes`).
    pub vnodes: u32,
    /// Where the router state is kept when not in etcd (`--state-file`).
    pub state_file: PathBuf,
    /// Approximate bytes of watch history kept (`--event-log-bytes`).
    pub event_log_bytes: usize,
    /// etcd's --max-request-bytes: larger write requests are refused with
    /// "etcdserver: request is too large".
    pub max_request_bytes: usize,
    /// Largest gRPC message the etcd listener decodes.
    pub max_recv_bytes: usize,
    /// The shards' --max-txn-ops.
    pub shard_max_txn_ops: usize,
    /// Revisions reserved in the state store at a time (`--revision-block`).
    pub revision_block: i64,
    /// Connecting to a shard gives up after this (`--shard-connect-timeout`).
    pub shard_connect_timeout: Duration,
    /// A shard request gives up after this (`--shard-timeout`).
    pub shard_timeout: Duration,
    /// How often shards are probed and the membership loop runs
    /// (`--health-interval`).
    pub health_interval: Duration,
    /// How often quiet `progress_notify` watchers hear of progress
    /// (`--progress-notify-interval`; etcd: 10 minutes).
    pub progress_notify_interval: Duration,
    /// The etcd version Maintenance.Status reports (`--etcd-version`).
    pub etcd_version: String,
    /// TLS on the etcd listener and towards the shards.
    pub tls: TlsFiles,
    /// Join registered agents without `ring join` (`--auto-join`).
    pub auto_join: bool,
    /// The heaviest weight an agent is joined with automatically
    /// (`--max-auto-join-weight`).
    pub max_auto_join_weight: u32,
    /// Keep the state in these etcd endpoints instead of --state-file.
    pub state_etcd: Vec<String>,
    /// The key the state is kept under in `state_etcd`.
    pub state_etcd_key: String,
    /// Pause between migration batches (`--migration-pause`).
    pub migration_pause: Duration,
    /// Fence a member whose shard has not answered this long
    /// (`--member-dead-after`).
    pub member_dead_after: Duration,
    /// The key index implementation (`--key-index`).
    pub key_index: ste_core::index::KeyIndexKind,
    /// Address of `ste.v1.Ring` for users (`--user-listen`): TLS with an
    /// optional client certificate, else a bearer token.
    pub user_listen: SocketAddr,
    /// Who may call the admin and user ports.
    pub api: ApiSecurity,
}

/// TLS and access control of the admin (`--admin-listen`) and user
/// (`--user-listen`) ports.
#[derive(Debug, Clone, Default)]
pub struct ApiSecurity {
    /// `--tls-cert-file`, `--tls-private-key-file`, `--client-ca-file`;
    /// `None` only with `insecure`.
    pub tls: Option<ste_auth::tls::ServerFiles>,
    /// `--insecure`: both ports plain and unauthenticated.
    pub insecure: bool,
    /// `--authentication-kubeconfig`: the API for TokenReview.
    pub authentication_kubeconfig: Option<PathBuf>,
    /// `--authorization-kubeconfig`: the API for SubjectAccessReview.
    pub authorization_kubeconfig: Option<PathBuf>,
}

impl ApiSecurity {
    /// Checks that the ports are either secured or explicitly insecure.
    ///
    /// Errors: neither the TLS files nor `--insecure`, or both.
    pub fn validate(&self) -> anyhow::Result<()> {
        match (&self.tls, self.insecure) {
            (Some(_), true) => anyhow::bail!(
                "--insecure and --tls-cert-file exclude each other: the admin and user ports \
                 are either TLS with client authentication or plain"
            ),
            (None, false) => anyhow::bail!(
                "the admin and user ports need --tls-cert-file, --tls-private-key-file and \
                 --client-ca-file (deploy/pki.sh makes them), or --insecure to serve plain \
                 HTTP without authentication"
            ),
            _ => Ok(()),
        }
    }
}

/// PEM files for TLS on the etcd listener and towards the shards.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Serve the etcd API over TLS with this certificate and key.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Verify shard certificates with this CA (https:// member URLs).
    pub shard_ca: Option<PathBuf>,
    /// Present this client certificate and key to the shards.
    pub shard_cert: Option<PathBuf>,
    /// The private key of `shard_cert`.
    pub shard_key: Option<PathBuf>,
    /// Verify the `--state-etcd` servers with this CA (kube-apiserver's
    /// `--etcd-cafile`).
    pub state_etcd_ca: Option<PathBuf>,
    /// Present this client certificate to `--state-etcd` (kube-apiserver's
    /// `--etcd-certfile`).
    pub state_etcd_cert: Option<PathBuf>,
    /// The private key of `state_etcd_cert` (kube-apiserver's `--etcd-keyfile`).
    pub state_etcd_key: Option<PathBuf>,
}

fn read(flag: &str, path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
}

impl TlsFiles {
    /// The listener's TLS settings, if any.
    pub fn server(&self) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        match (&self.cert, &self.key) {
            (None, None) => {
                anyhow::ensure!(
                    self.client_ca.is_none(),
                    "--client-ca needs --cert and --key"
                );
                Ok(None)
            }
            (Some(cert), Some(key)) => {
                let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
                    read("--cert", cert)?,
                    read("--key", key)?,
                ));
                if let Some(ca) = &self.client_ca {
                    config = config.client_ca_root(Certificate::from_pem(read("--client-ca", ca)?));
                }
                Ok(Some(config))
            }
            _ => anyhow::bail!("--cert and --key go together: give both or neither"),
        }
    }

    /// TLS settings towards the shards, if any. `--shard-cert` and
    /// `--shard-key` are read again when they change (see
    /// [`crate::shard::tls`]).
    pub fn shard_client(&self) -> anyhow::Result<Option<crate::shard::tls::ShardTls>> {
        if self.shard_ca.is_none() && self.shard_cert.is_none() && self.shard_key.is_none() {
            return Ok(None);
        }
        let identity = match (&self.shard_cert, &self.shard_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => anyhow::bail!("--shard-cert and --shard-key go together: give both or neither"),
        };
        crate::shard::tls::ShardTls::new(self.shard_ca.as_deref(), identity).map(Some)
    }

    /// TLS settings towards `--state-etcd`, if any.
    pub fn state_etcd_client(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        client_tls(
            [
                "--state-etcd-cafile",
                "--state-etcd-certfile",
                "--state-etcd-keyfile",
            ],
            [
                &self.state_etcd_ca,
                &self.state_etcd_cert,
                &self.state_etcd_key,
            ],
        )
    }
}

/// A client's TLS settings from its CA, certificate and key files (named
/// by `flags` in messages): `None` when none is given; the certificate and
/// key go together.
fn client_tls(
    flags: [&str; 3],
    [ca, cert, key]: [&Option<PathBuf>; 3],
) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let [ca_flag, cert_flag, key_flag] = flags;
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = ca {
        config = config.ca_certificate(Certificate::from_pem(read(ca_flag, ca)?));
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read(cert_flag, cert)?,
                read(key_flag, key)?,
            ));
        }
        (None, None) => {}
        _ => anyhow::bail!("{cert_flag} and {key_flag} go together: give both or neither"),
    }
    Ok(Some(config))
}
