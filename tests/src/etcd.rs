//! A plain etcd process for tests that need a shard without an agent, or
//! a reference etcd to compare the router with. Data on disk in a temp dir
//! (with --unsafe-no-fsync), so it can be stopped and started again with
//! its data intact.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::poll::eventually;
use crate::procs::free_port;

pub struct TestEtcd {
    pub name: String,
    pub url: String,
    peer_url: String,
    extra_args: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl TestEtcd {
    /// Starts etcd on 127.0.0.1 with fresh ports and waits until it answers.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let etcd = Self::spawn(name, "http", Vec::new())?;
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    /// Starts etcd with extra flags (e.g. `--max-txn-ops=64`) and waits
    /// until it answers.
    pub async fn start_with_args(name: &str, args: Vec<String>) -> anyhow::Result<Self> {
        let etcd = Self::spawn(name, "http", args)?;
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    /// Starts etcd serving clients over TLS (https://) with `args` (its TLS
    /// flags); readiness is the caller's to check.
    pub fn spawn_tls(name: &str, args: Vec<String>) -> anyhow::Result<Self> {
        Self::spawn(name, "https", args)
    }

    fn spawn(name: &str, scheme: &str, extra_args: Vec<String>) -> anyhow::Result<Self> {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut etcd = TestEtcd {
            name: name.to_owned(),
            url: format!("{scheme}://127.0.0.1:{}", free_port(ip)),
            peer_url: format!("http://127.0.0.1:{}", free_port(ip)),
            extra_args,
            dir: tempfile::Builder::new()
                .prefix("ste-test-etcd-")
                .tempdir()?,
            child: None,
        };
        etcd.resume_process()?;
        Ok(etcd)
    }

    fn resume_process(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))?;
        let child = Command::new(crate::procs::etcd_bin())
            .arg(format!("--name={}", self.name))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.url))
            .arg(format!("--advertise-client-urls={}", self.url))
            .arg(format!("--listen-peer-urls={}", self.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster={}={}", self.name, self.peer_url))
            .arg("--unsafe-no-fsync")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        eventually(
            &format!("etcd {} to answer", self.name),
            crate::poll::SLOW,
            || async {
                let mut client = self.client().await.map_err(|e| e.to_string())?;
                client.status().await.map(|_| ()).map_err(|e| e.to_string())
            },
        )
        .await
    }

    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(10));
        Ok(etcd_client::Client::connect([&self.url], Some(options)).await?)
    }

    /// How many keys this etcd holds under `prefix`, read from it directly
    /// (for a shard: what the router placed there).
    pub async fn count_under(&self, prefix: &str) -> anyhow::Result<i64> {
        crate::keys::count_under(&mut self.client().await?, prefix).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, keeping the data dir.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the member again with an empty data dir: a new epoch, as an
    /// agent does after etcd died.
    pub async fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.kill();
        let data = self.dir.path().join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        self.resume_process()?;
        self.wait_ready().await
    }

    /// SIGKILLs and starts the same member again on its data, without
    /// waiting for it (for a TLS member, whose readiness is the caller's).
    pub fn restart_process(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.resume_process()
    }

    /// Starts the same member again on its data (same "epoch").
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.resume_process()?;
        self.wait_ready().await
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("etcd not running"))?;
        kill(Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly and be reaped.
        let _ = self.signal(Signal::SIGCONT);
        self.kill();
    }
}
