//! One real ste-agent process under test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::mount::MntFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ste_agent::mount::mounts_at;
use ste_proto::v1::agent_client::AgentClient;
use ste_proto::v1::{AgentState, AgentStatus, GetStatusRequest};
use tempfile::TempDir;

use crate::pki::ShardFiles;
use crate::poll::{SLOW, eventually};
use crate::procs::{alive, free_port, pids_with_cmdline, sigkill, workspace_bin};

/// How to start an agent. Ports are picked fresh for every test agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node_name: String,
    pub ip: Ipv4Addr,
    pub tmpfs_size: String,
    /// Mount the tmpfs in the fixture (as a kubelet would) and run the
    /// agent with `--mount external`.
    pub external: bool,
    /// Run the shard over plain HTTP (`--insecure`) instead of TLS with a
    /// certificate of the test PKI ([`crate::pki::ste`]). TLS by default,
    /// where the etcd under test can serve it
    /// ([`crate::procs::etcd_serves_tls_shards`]).
    pub insecure: bool,
    /// CAs (PEM) whose client certificates the agent's API trusts besides
    /// the STE CA's, e.g. a Kubernetes CA for its users.
    pub more_client_cas: String,
    pub extra_args: Vec<String>,
}

impl AgentOptions {
    pub fn new(node_name: &str, ip: Ipv4Addr) -> Self {
        AgentOptions {
            node_name: node_name.into(),
            ip,
            tmpfs_size: "256Mi".into(),
            external: false,
            insecure: !crate::procs::etcd_serves_tls_shards(),
            more_client_cas: String::new(),
            extra_args: Vec::new(),
        }
    }

    /// An agent at `127.0.0.{ip}` that registers with `router` and
    /// heartbeats every 200 ms (so the router notices changes quickly).
    pub fn registering_with(name: &str, ip: u8, router: &crate::TestRouter) -> Self {
        let mut options = AgentOptions::new(name, Ipv4Addr::new(127, 0, 0, ip));
        options.extra_args = vec![
            "--router".into(),
            router.admin.to_string(),
            "--heartbeat-interval".into(),
            "200ms".into(),
        ];
        options
    }
}

/// Addresses and paths of one agent; kept across restarts of its process.
#[derive(Debug, Clone)]
pub struct AgentAddrs {
    /// The API port for machines (TLS, client certificate required).
    pub grpc: SocketAddr,
    /// The API port for users (TLS, client certificate or bearer token).
    pub user: SocketAddr,
    pub metrics: SocketAddr,
    /// `https://IP:PORT`, or `http://` for an `insecure` agent.
    pub client_url: String,
    pub peer_url: String,
    /// The shard's TLS files; `None` for an `insecure` agent.
    pub tls: Option<ShardFiles>,
    /// The node's certificate, key and the STE CA: the API's TLS (always
    /// on: `insecure` is only about the shard here), the identity towards
    /// the router, and the CA that verifies the router.
    pub node: ShardFiles,
}

/// A running (or stopped) ste-agent with its own temp dir and tmpfs.
/// Drop kills the agent and any etcd it started, removes every mount at
/// its data dir and deletes the temp dir.
pub struct TestAgent {
    pub options: AgentOptions,
    pub addrs: AgentAddrs,
    root: TempDir,
    child: Option<Child>,
}

impl TestAgent {
    /// Starts an agent on fresh ports and waits until it serves.
    pub async fn start(options: AgentOptions) -> anyhow::Result<Self> {
        let agent = Self::spawn_new(options)?;
        agent.wait_serving().await?;
        Ok(agent)
    }

    /// Starts an agent process without waiting for it.
    pub fn spawn_new(options: AgentOptions) -> anyhow::Result<Self> {
        let ip = IpAddr::V4(options.ip);
        let root = tempfile::Builder::new()
            .prefix("ste-agent-test-")
            .tempdir()?;
        let node =
            crate::pki::ste().write_shard(&root.path().join("pki"), &options.node_name, ip)?;
        let tls = (!options.insecure).then(|| node.clone());
        let client_ca = root.path().join("pki").join("client-ca.crt");
        std::fs::write(
            &client_ca,
            format!(
                "{}{}",
                crate::pki::ste().ca.cert_pem,
                options.more_client_cas
            ),
        )?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let addrs = AgentAddrs {
            grpc: SocketAddr::new(ip, free_port(ip)),
            user: SocketAddr::new(ip, free_port(ip)),
            metrics: SocketAddr::new(ip, free_port(ip)),
            client_url: format!("{scheme}://{ip}:{}", free_port(ip)),
            peer_url: format!("http://{ip}:{}", free_port(ip)),
            tls,
            node,
        };
        let shard = root.path().join("shard");
        std::fs::create_dir(&shard)?;
        if options.external {
            let size: ste_agent::size::ByteSize = options.tmpfs_size.parse()?;
            // What the kubelet does for an emptyDir with medium: Memory.
            nix::mount::mount(
                Some("test-tmpfs"),
                &shard,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={}", size.0).as_str()),
            )?;
        }
        let mut agent = TestAgent {
            options,
            addrs,
            root,
            child: None,
        };
        agent.respawn()?;
        Ok(agent)
    }

    /// Starts the agent process again on the same data dir and ports.
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "agent process still running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = self.command().stderr(log).spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// The full command line of this agent (without spawning it).
    pub fn command(&self) -> Command {
        let mut command = Command::new(workspace_bin("ste-agent"));
        command.env("STE_ETCD_BIN", crate::procs::etcd_bin());
        let a = &self.addrs;
        command
            .arg("--node-name")
            .arg(&self.options.node_name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--tmpfs-size")
            .arg(&self.options.tmpfs_size)
            .arg("--mount")
            .arg(if self.options.external {
                "external"
            } else {
                "managed"
            })
            .arg("--etcd-client-url")
            .arg(&a.client_url)
            .arg("--etcd-peer-url")
            .arg(&a.peer_url)
            .arg("--grpc-listen")
            .arg(a.grpc.to_string())
            .arg("--user-listen")
            .arg(a.user.to_string())
            .arg("--tls-cert-file")
            .arg(&a.node.cert)
            .arg("--tls-private-key-file")
            .arg(&a.node.key)
            .arg("--client-ca-file")
            .arg(self.root.path().join("pki").join("client-ca.crt"))
            .arg("--router-ca-file")
            .arg(&a.node.ca)
            .arg("--metrics-listen")
            .arg(a.metrics.to_string())
            .arg("--probe-interval")
            .arg("200ms")
            .arg("--stop-grace")
            .arg("5s");
        match &a.tls {
            Some(tls) => command
                .arg("--etcd-cert-file")
                .arg(&tls.cert)
                .arg("--etcd-key-file")
                .arg(&tls.key)
                .arg("--etcd-trusted-ca-file")
                .arg(&tls.ca),
            None => command.arg("--insecure"),
        };
        command
            .args(&self.options.extra_args)
            .env("STE_LOG", "info,etcd=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("shard")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("agent.log")
    }

    /// The agent's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The agent's status from its API, asked as the test operator.
    pub async fn status(&self) -> anyhow::Result<AgentStatus> {
        let mut client = AgentClient::new(crate::pki::ste().admin_channel(self.addrs.grpc).await?);
        Ok(client.get_status(GetStatusRequest {}).await?.into_inner())
    }

    /// Polls status until `check` accepts it.
    pub async fn wait_status(
        &self,
        what: &str,
        check: impl Fn(&AgentStatus) -> bool,
    ) -> anyhow::Result<AgentStatus> {
        let result = eventually(what, SLOW, || async {
            match self.status().await {
                Ok(status) if check(&status) => Ok(status),
                Ok(status) => Err(format!("{status:?}")),
                Err(err) => Err(err.to_string()),
            }
        })
        .await;
        result.map_err(|e| e.context(format!("agent log:\n{}", self.log())))
    }

    pub async fn wait_serving(&self) -> anyhow::Result<AgentStatus> {
        self.wait_status("state SERVING", |s| s.state() == AgentState::Serving)
            .await
    }

    /// A client of this agent's etcd shard, presenting the router's shard
    /// client certificate (the identity the shard lets in).
    pub async fn etcd(&self) -> anyhow::Result<etcd_client::Client> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(10));
        if self.addrs.tls.is_some() {
            options = options.with_tls(crate::pki::ste().router_tls());
        }
        Ok(etcd_client::Client::connect([&self.addrs.client_url], Some(options)).await?)
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("agent not running"))?;
        kill(Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// Waits for the agent process to exit and returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("agent not running"))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "agent did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// etcd processes started for this agent's data dir, alive or not reaped.
    pub fn etcd_pids(&self) -> Vec<u32> {
        let needle = format!("--data-dir={}", self.data_dir().join("etcd").display());
        pids_with_cmdline(&needle)
    }

    /// Mounts currently stacked on the data dir.
    pub fn mount_count(&self) -> usize {
        mounts_at(&self.data_dir()).map(|m| m.len()).unwrap_or(0)
    }
}

/// Unmounts everything stacked on `path`.
pub fn unmount_all(path: &Path) {
    for _ in 0..8 {
        match mounts_at(path) {
            Ok(mounts) if !mounts.is_empty() => {
                let _ = nix::mount::umount2(path, MntFlags::MNT_DETACH);
            }
            _ => return,
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.etcd_pids() {
            sigkill(pid);
        }
        // etcd gets SIGKILL from the parent-death signal too; make sure it
        // is gone before unmounting its data dir.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.etcd_pids().iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        unmount_all(&self.data_dir());
    }
}

/// Every key under `prefix` held by the shards of `agents`, with the nodes
/// holding it (more than one is a duplicate), read from each agent's etcd
/// directly.
pub async fn keys_held<'a>(
    agents: impl IntoIterator<Item = &'a TestAgent>,
    prefix: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, Vec<String>>> {
    let mut held: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for agent in agents {
        let keys = agent
            .etcd()
            .await?
            .get(
                prefix,
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await?;
        for kv in keys.kvs() {
            held.entry(kv.key_str()?.to_owned())
                .or_default()
                .push(agent.options.node_name.clone());
        }
    }
    Ok(held)
}
