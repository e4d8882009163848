//! The `ste` target: ste-agents (three unless `--ste-shards`) in managed
//! mode (each mounts its own tmpfs and runs a one-member etcd with
//! `--unsafe-no-fsync` on it) and ste-router in front of them. The shards
//! serve plain HTTP (`--insecure`), as every other target does: TLS would
//! be measured on one side only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use nix::sys::signal::Signal;
use ste_proto::v1::agent_client::AgentClient;
use ste_proto::v1::{AgentState, GetStatusRequest};

use crate::sys::{self, Proc, free_port};
use crate::{Args, clear_ste_env};

/// One ste-agent. Drop stops it with SIGTERM (so it unmounts its tmpfs)
/// and then detaches anything still mounted at its data dir.
pub struct Agent {
    /// Its node name (node-a, ...).
    pub name: String,
    /// The agent process (its etcd is a child of it).
    pub proc: Proc,
    grpc: SocketAddr,
    /// Its shard etcd's client URL.
    pub client_url: String,
    /// Its tmpfs.
    pub data_dir: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.proc.stop_blocking(Duration::from_secs(30));
        sys::unmount_all_under(&self.data_dir);
    }
}

/// The agents and the router. Fields drop in order: the router first.
pub struct Ste {
    /// The router process.
    pub router: Option<Proc>,
    /// The router's client URL.
    pub router_url: String,
    /// The router's `/metrics` address.
    pub router_metrics: Option<SocketAddr>,
    /// The agents.
    pub agents: Vec<Agent>,
}

impl Ste {
    /// Starts the agents, waits until each is SERVING, then the router,
    /// and waits until a Range through it succeeds.
    pub async fn start(
        args: &Args,
        root: &Path,
        bin_dir: &Path,
        ready: Duration,
    ) -> anyhow::Result<Self> {
        let mut ste = Ste {
            router: None,
            router_url: String::new(),
            router_metrics: None,
            agents: Vec::new(),
        };
        for i in 0..args.ste_shards {
            let name = &format!("node-{}", char::from(b'a' + i));
            let ip = Ipv4Addr::new(127, 0, 0, 2 + i);
            let ipa = IpAddr::V4(ip);
            let dir = root.join(name);
            std::fs::create_dir(&dir)?;
            let data_dir = dir.join("shard");
            let grpc = SocketAddr::new(ipa, free_port(ipa)?);
            let metrics = SocketAddr::new(ipa, free_port(ipa)?);
            let client_url = format!("http://{ip}:{}", free_port(ipa)?);
            let peer_url = format!("http://{ip}:{}", free_port(ipa)?);
            let mut command = Command::new(bin_dir.join("ste-agent"));
            command
                .arg("--node-name")
                .arg(name)
                .arg("--node-ip")
                .arg(ip.to_string())
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--tmpfs-size")
                .arg(&args.tmpfs_size)
                .arg("--mount")
                .arg("managed")
                .arg("--etcd-bin")
                .arg(&args.etcd_bin)
                .arg("--etcd-client-url")
                .arg(&client_url)
                .arg("--etcd-peer-url")
                .arg(&peer_url)
                .arg("--grpc-listen")
                .arg(grpc.to_string())
                .arg("--user-listen")
                .arg(SocketAddr::new(ipa, free_port(ipa)?).to_string())
                .arg("--metrics-listen")
                .arg(metrics.to_string())
                // Plain HTTP between router and shards, as between the
                // bench's client and every other target (the 3-member etcd,
                // kine, the bare shard): like is measured against like.
                // The agent's API is plain too (it is not on the measured
                // path).
                .arg("--insecure");
            clear_ste_env(&mut command);
            // If the bench dies, the agent gets SIGTERM: it stops etcd and
            // unmounts its tmpfs by itself.
            let proc = Proc::spawn(
                &format!("ste-agent {name}"),
                command,
                dir.join("agent.log"),
                Signal::SIGTERM,
                Duration::from_secs(30),
            )?;
            ste.agents.push(Agent {
                name: name.to_string(),
                proc,
                grpc,
                client_url,
                data_dir,
            });
        }
        for agent in &mut ste.agents {
            wait_agent_serving(agent, ready).await?;
            eprintln!(
                "ste: {} SERVING (shard {}, tmpfs {} at {})",
                agent.name,
                agent.client_url,
                args.tmpfs_size,
                agent.data_dir.display()
            );
        }

        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let listen = SocketAddr::new(ip, free_port(ip)?);
        let dir = root.join("router");
        std::fs::create_dir(&dir)?;
        let router_metrics = SocketAddr::new(ip, free_port(ip)?);
        ste.router_metrics = Some(router_metrics);
        let mut command = Command::new(bin_dir.join("ste-router"));
        command
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin-listen")
            .arg(SocketAddr::new(ip, free_port(ip)?).to_string())
            .arg("--user-listen")
            .arg(SocketAddr::new(ip, free_port(ip)?).to_string())
            // Nothing but the bench talks to this router, and not through
            // the admin ports.
            .arg("--insecure")
            .arg("--metrics-listen")
            .arg(router_metrics.to_string())
            .arg("--state-file")
            .arg(dir.join("router.state"))
            .arg("--key-index")
            .arg(&args.key_index);
        if let Some(threads) = args.router_worker_threads {
            command.arg("--worker-threads").arg(threads.to_string());
        }
        for agent in &ste.agents {
            command
                .arg("--member")
                .arg(format!("{}={}", agent.name, agent.client_url));
        }
        clear_ste_env(&mut command);
        let router = ste.router.insert(Proc::spawn(
            "ste-router",
            command,
            dir.join("router.log"),
            Signal::SIGKILL,
            Duration::from_secs(10),
        )?);
        ste.router_url = format!("http://{listen}");
        let deadline = Instant::now() + ready;
        loop {
            router.ensure_running()?;
            let last = match crate::etcd::answers(&ste.router_url).await {
                Ok(()) => break,
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "ste-router did not serve within {ready:?} (last: {last}); end of its log:\n{}",
                    router.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(ste)
    }

    /// Stops the router, then all agents at once (SIGTERM; each stops its
    /// etcd and unmounts its tmpfs), and checks nothing stays mounted.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(mut router) = self.router.take() {
            router.stop(Duration::from_secs(10)).await;
        }
        for agent in &self.agents {
            agent.proc.terminate();
        }
        let mut problems = Vec::new();
        for agent in &mut self.agents {
            match agent.proc.stop(Duration::from_secs(30)).await {
                Some(status) if status.success() => {}
                Some(status) => problems.push(format!("{} exited with {status}", agent.name)),
                None => problems.push(format!("{} had to be killed", agent.name)),
            }
            if !sys::mounts_under(&agent.data_dir).is_empty() {
                problems.push(format!(
                    "{} left a mount at {}",
                    agent.name,
                    agent.data_dir.display()
                ));
                sys::unmount_all_under(&agent.data_dir);
            }
        }
        ensure!(problems.is_empty(), "stopping STE: {}", problems.join("; "));
        eprintln!("ste: router and agents stopped, agents unmounted their tmpfs");
        Ok(())
    }
}

async fn wait_agent_serving(agent: &mut Agent, ready: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + ready;
    loop {
        agent.proc.ensure_running()?;
        let last = match agent_state(agent.grpc).await {
            Ok(AgentState::Serving) => return Ok(()),
            Ok(state) => format!("state {}", state.as_str_name()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "{} was not SERVING within {ready:?} (last: {last}); end of its log:\n{}",
                agent.name,
                agent.proc.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn agent_state(grpc: SocketAddr) -> anyhow::Result<AgentState> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let status = AgentClient::new(channel)
        .get_status(GetStatusRequest {})
        .await?
        .into_inner();
    Ok(status.state())
}
