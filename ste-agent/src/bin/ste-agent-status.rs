//! Prints the status of one or more ste-agents as a table, optionally
//! waiting until they all serve. Used by the
//! local-cluster script until `kubectl ste status` exists.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ste_agent::table::status_table;
use ste_core::units::parse_duration;
use ste_proto::v1::agent_client::AgentClient;
use ste_proto::v1::{AgentState, AgentStatus, GetStatusRequest};

#[derive(Debug, Parser)]
#[command(name = "ste-agent-status", version)]
struct Cli {
    /// Agent gRPC addresses, e.g. 127.0.0.2:2290.
    #[arg(required = true)]
    agents: Vec<String>,
    /// Wait up to this long until every agent reports SERVING.
    #[arg(long, value_parser = parse_duration)]
    wait_serving: Option<Duration>,
    /// Omit the header row.
    #[arg(long)]
    no_headers: bool,
    /// CA (PEM) of the agents' certificates: the agents are asked over TLS
    /// (etcdctl's flag name). Without it, plain HTTP (agents run
    /// --insecure).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Client certificate (PEM) to present: the agents' --grpc-listen
    /// refuses clients without one of their --client-ca-file.
    #[arg(long, requires_all = ["key", "cacert"])]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

async fn fetch(
    addr: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<AgentStatus, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{scheme}://{addr}")
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| format!("{addr}: bad address: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| format!("{addr}: TLS: {e}"))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        format!("{addr}: agent unreachable: {e}{cause}")
    })?;
    AgentClient::new(channel)
        .get_status(GetStatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("{addr}: {}", e.message()))
}

/// Prints the table once every agent serves (or at once without
/// `--wait-serving`). Fails with one line per unreachable agent, and one more
/// if the wait ran out, all after the table.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let tls = match &cli.cacert {
        Some(ca) => Some(ste_auth::tls::client_config(
            ("--cacert", ca),
            cli.cert
                .as_deref()
                .zip(cli.key.as_deref())
                .map(|(cert, key)| [("--cert", cert), ("--key", key)]),
        )?),
        None => None,
    };
    let deadline = cli.wait_serving.map(|d| Instant::now() + d);
    loop {
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        for addr in &cli.agents {
            match fetch(addr, tls.as_ref()).await {
                Ok(status) => rows.push(status),
                Err(e) => errors.push(e),
            }
        }
        let all_serving =
            errors.is_empty() && rows.iter().all(|s| s.state() == AgentState::Serving);
        let waiting = deadline.is_some_and(|d| Instant::now() < d);
        if all_serving || !waiting {
            print!("{}", status_table(&rows, !cli.no_headers));
            if deadline.is_some() && !all_serving {
                errors.push("not every agent reached SERVING in time".into());
            }
            if errors.is_empty() {
                return Ok(());
            }
            // Reported by ste_main as "error: " and this: one line each.
            anyhow::bail!(errors.join("\nerror: "));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn main() -> ExitCode {
    ste_main::block_on(ste_main::Workers::Fixed(1), run(Cli::parse()))
}
