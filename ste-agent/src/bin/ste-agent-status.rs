//! Prints the status of one or more ste-agents as a table, optionally
//! waiting until they all serve. Used by the
//! local-cluster script until `kubectl ste status` exists.

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
}

async fn fetch(addr: &str) -> Result<AgentStatus, String> {
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| format!("{addr}: bad address: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
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
    let deadline = cli.wait_serving.map(|d| Instant::now() + d);
    loop {
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        for addr in &cli.agents {
            match fetch(addr).await {
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
