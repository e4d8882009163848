//! A real ste-router process in front of test shards.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ste_proto::v1::ring_client::RingClient;
use ste_proto::v1::{GetRouterStatusRequest, RouterStatus};
use tempfile::TempDir;

use crate::poll::{SLOW, eventually};
use crate::procs::{free_port, workspace_bin};

pub struct TestRouter {
    pub listen: SocketAddr,
    /// The admin port (TLS; a client certificate is required).
    pub admin: SocketAddr,
    /// The user port (TLS; a client certificate or a bearer token).
    pub user: SocketAddr,
    pub metrics: SocketAddr,
    members: Vec<(String, String)>,
    extra_args: Vec<String>,
    /// CAs (PEM) the admin and user ports trust besides the STE CA.
    more_client_cas: String,
    dir: TempDir,
    child: Option<Child>,
}

impl TestRouter {
    /// Starts a router with the given (name, etcd URL) members and waits
    /// until it serves.
    pub async fn start(members: &[(&str, &str)], extra_args: &[&str]) -> anyhow::Result<Self> {
        let router = Self::spawn_new(members, extra_args)?;
        router.wait_ready().await?;
        Ok(router)
    }

    /// Starts a router process without waiting for it to serve.
    pub fn spawn_new(members: &[(&str, &str)], extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_trusting(members, extra_args, "")
    }

    /// Starts a router process whose admin and user ports also trust the
    /// client certificates of `more_client_cas` (PEM), e.g. a Kubernetes
    /// CA, without waiting for it to serve.
    pub fn spawn_trusting(
        members: &[(&str, &str)],
        extra_args: &[&str],
        more_client_cas: &str,
    ) -> anyhow::Result<Self> {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut router = TestRouter {
            listen: SocketAddr::new(ip, free_port(ip)),
            admin: SocketAddr::new(ip, free_port(ip)),
            user: SocketAddr::new(ip, free_port(ip)),
            metrics: SocketAddr::new(ip, free_port(ip)),
            members: members
                .iter()
                .map(|(n, u)| (n.to_string(), u.to_string()))
                .collect(),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            more_client_cas: more_client_cas.to_owned(),
            dir: tempfile::Builder::new()
                .prefix("ste-test-router-")
                .tempdir()?,
            child: None,
        };
        router.spawn()?;
        Ok(router)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut command = Command::new(workspace_bin("ste-router"));
        command
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--admin-listen")
            .arg(self.admin.to_string())
            .arg("--user-listen")
            .arg(self.user.to_string())
            .arg("--metrics-listen")
            .arg(self.metrics.to_string())
            .arg("--state-file")
            .arg(self.state_file())
            // The test agents' shards serve https:// with certificates of
            // the test PKI and let in only this client certificate.
            .args(crate::pki::ste().router_flags(self.dir.path())?)
            // The admin and user ports: TLS with the test PKI, certificates
            // only (no Kubernetes): the test operator may do everything.
            .args(crate::pki::ste().router_api_flags(self.dir.path(), &self.more_client_cas)?)
            .args(&self.extra_args)
            .env("STE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Probes five times a second unless the test chose its own pace.
        if !self.extra_args.iter().any(|a| a == "--health-interval") {
            command.arg("--health-interval").arg("200ms");
        }
        for (name, url) in &self.members {
            command.arg("--member").arg(format!("{name}={url}"));
        }
        self.child = Some(command.spawn()?);
        Ok(())
    }

    /// The router's `--shard-cert` and `--shard-key` files (the test PKI's
    /// router client certificate unless a test replaced them).
    pub fn shard_client_files(&self) -> (PathBuf, PathBuf) {
        let dir = self.dir.path();
        (
            dir.join("router-shard-client.crt"),
            dir.join("router-shard-client.key"),
        )
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("router.state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("router.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The router's status from its admin API: members with their health,
    /// generation, a ring change in progress, whether it serves.
    pub async fn status(&self) -> anyhow::Result<RouterStatus> {
        Ok(self
            .admin()
            .await?
            .get_status(GetRouterStatusRequest {})
            .await?
            .into_inner())
    }

    /// Waits up to `timeout` until the ring has exactly `members` (in ring
    /// order), no change is running and the router serves; returns that
    /// status. A timeout's error carries the end of the router's log.
    pub async fn wait_members(
        &self,
        members: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<RouterStatus> {
        let result = eventually("the ring membership", timeout, || async {
            let status = self.status().await.map_err(|e| e.to_string())?;
            let have: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
            if have == members && status.migration.is_none() && status.serving {
                Ok(status)
            } else {
                Err(format!(
                    "members {have:?}, migration {:?}, serving {}",
                    status.migration, status.serving
                ))
            }
        })
        .await;
        result.map_err(|e| {
            e.context(format!(
                "router log (last 80 lines):\n{}",
                crate::control_plane::process::tail(&self.log(), 80)
            ))
        })
    }

    /// Waits until the admin API says the router serves (the start-up scan
    /// is done).
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let result = eventually("the router to serve", SLOW, || async {
            let serving = self.status().await.map_err(|e| e.to_string())?.serving;
            if serving {
                Ok(())
            } else {
                Err("not serving yet".into())
            }
        })
        .await;
        result
            .map(|_| ())
            .map_err(|e| e.context(format!("router log:\n{}", self.log())))
    }

    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(15));
        Ok(etcd_client::Client::connect([self.endpoint()], Some(options)).await?)
    }

    /// A client of the admin port as the test operator
    /// ([`crate::pki::StePki::admin`]).
    pub async fn admin(&self) -> anyhow::Result<RingClient<tonic::transport::Channel>> {
        Ok(RingClient::new(
            crate::pki::ste().admin_channel(self.admin).await?,
        ))
    }

    /// The files of the admin and user ports' TLS: `--tls-cert-file`,
    /// `--tls-private-key-file`, `--client-ca-file` (a test may rotate them).
    pub fn api_files(&self) -> [PathBuf; 3] {
        let dir = self.dir.path();
        [
            dir.join("router-admin.crt"),
            dir.join("router-admin.key"),
            dir.join("client-ca.crt"),
        ]
    }

    /// The STE CA the router's admin and user certificates chain to (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ste-ca.crt")
    }

    /// SIGKILL the router (its state file stays).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the router again with the same flags and state file.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn()?;
        self.wait_ready().await
    }

    /// The router's `ste_router_writes_in_flight` gauge: writes admitted
    /// and not yet answered.
    pub async fn writes_in_flight(&self) -> anyhow::Result<f64> {
        let text = crate::metrics::scrape(self.metrics).await?;
        crate::metrics::sample(&text, "ste_router_writes_in_flight")
            .ok_or_else(|| anyhow::anyhow!("no ste_router_writes_in_flight in /metrics:\n{text}"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Three plain etcd shards and a router in front of them.
pub struct ShardedRouter {
    pub shards: Vec<crate::etcd::TestEtcd>,
    pub router: TestRouter,
}

impl ShardedRouter {
    pub async fn start(shards: usize, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(shards, |_| Vec::new(), extra_args).await
    }

    /// Like [`ShardedRouter::start`], with `shard_args(i)` as extra flags
    /// of the i-th shard's etcd.
    pub async fn start_with(
        shards: usize,
        shard_args: impl Fn(usize) -> Vec<String>,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut etcds = Vec::new();
        for i in 0..shards {
            etcds.push(
                crate::etcd::TestEtcd::start_with_args(
                    &format!("shard-{}", (b'a' + i as u8) as char),
                    shard_args(i),
                )
                .await?,
            );
        }
        let members: Vec<(&str, &str)> = etcds
            .iter()
            .map(|e| (e.name.as_str(), e.url.as_str()))
            .collect();
        let router = TestRouter::start(&members, extra_args).await?;
        Ok(ShardedRouter {
            shards: etcds,
            router,
        })
    }

    pub fn shard(&mut self, name: &str) -> Option<&mut crate::etcd::TestEtcd> {
        self.shards.iter_mut().find(|s| s.name == name)
    }
}
