//! A real, simulated Kubernetes control plane on top of STE, for the
//! end-to-end tests (`tests/kube_e2e.rs`): the control-plane etcd, the
//! router and three agents (node-a, node-b, node-c on 127.0.0.2-4) that
//! register with it, kube-apiserver with `--etcd-servers-overrides=/pods#`
//! the router, kube-controller-manager, kube-scheduler and kwok (which
//! plays the kubelets of the Nodes node-a, node-b and node-c), with a
//! fresh PKI. The flags are those of docs/counterparts.md ("A simulated
//! cluster"), with client certificates instead of a token.
//!
//! Only one control plane runs at a time in a test process (a global
//! lock taken by [`ControlPlane::start`]): a second one would not fit on
//! the 2-core machine. Everything is killed on drop; logs stay in the
//! temp dir until then (kept with `STE_E2E_KEEP_DIR=1`), and their tails
//! are in every error this fixture returns.

pub mod apiserver_log;
pub mod flags;
pub mod health;
pub mod pki;
pub mod process;
pub mod streamed;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::agent::{AgentOptions, TestAgent};
use crate::etcd::TestEtcd;
use crate::plugin::{Plugin, Run};
use crate::poll::eventually;
use crate::procs::{free_port, kube_bin, kwok_stages};
use crate::router::TestRouter;
use flags::{apiserver_args, kubeconfig_yaml};
use health::HealthPoller;
use pki::Pki;
use process::KubeProcess;
pub use streamed::Streamed;

/// Where kube-apiserver keeps Pods in etcd (and so in the shards).
pub const PODS_PREFIX: &str = "/registry/pods/";

/// The nodes: one agent (shard) and one kwok Node each.
pub const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// How long start-up may take on the loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(180);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running control plane. Fields drop in order: the poller, the
/// Kubernetes components, then the agents, the router, etcd and the temp
/// dir, and last the lock.
pub struct ControlPlane {
    health: HealthPoller,
    /// kwok, kube-scheduler, kube-controller-manager, kube-apiserver.
    components: Vec<KubeProcess>,
    /// The agents, in [`NODES`] order.
    pub agents: Vec<TestAgent>,
    /// The router kube-apiserver stores Pods through.
    pub router: TestRouter,
    /// The control-plane etcd (everything but Pods).
    pub etcd: TestEtcd,
    plugin: Plugin,
    /// The kubeconfig every component and kubectl use.
    pub kubeconfig: PathBuf,
    /// kube-apiserver's secure address.
    pub apiserver: SocketAddr,
    /// How long [`ControlPlane::start`] took (after getting the lock).
    pub started_in: Duration,
    pki: Pki,
    dir: TempDir,
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

impl ControlPlane {
    /// Starts everything, waits until the ring has the three members,
    /// kube-apiserver is ready, the three Nodes are Ready and the
    /// `default` ServiceAccount exists, then starts the health poller.
    pub async fn start() -> anyhow::Result<ControlPlane> {
        let lock = ONE_AT_A_TIME.lock().await;
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("ste-e2e-control-plane-")
            .tempdir()?;
        let pki = Pki::create(dir.path())?;
        let etcd = TestEtcd::start("control-plane").await?;
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let apiserver = SocketAddr::new(ip, free_port(ip));
        // The router asks this kube-apiserver to review tokens
        // (TokenReview) and to authorise users (SubjectAccessReview on
        // rings.ste.io), and trusts the users' client certificates of its
        // CA: `kubectl ste` is authorised by Kubernetes RBAC.
        let reviews = dir.path().join("router-reviews.kubeconfig");
        std::fs::write(&reviews, kubeconfig_yaml(&pki, apiserver, None))?;
        let reviews = reviews.display().to_string();
        let router = TestRouter::spawn_trusting(
            &[],
            &[
                "--authentication-kubeconfig",
                &reviews,
                "--authorization-kubeconfig",
                &reviews,
            ],
            &pki.ca_pem,
        )?;
        let agents = NODES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut options = AgentOptions::new(name, Ipv4Addr::new(127, 0, 0, 2 + i as u8));
                // Users reach the agents as they reach the router.
                options.more_client_cas = pki.ca_pem.clone();
                options.extra_args = vec![
                    "--router".into(),
                    router.admin.to_string(),
                    "--heartbeat-interval".into(),
                    "500ms".into(),
                    "--authentication-kubeconfig".into(),
                    reviews.clone(),
                    "--authorization-kubeconfig".into(),
                    reviews.clone(),
                ];
                TestAgent::spawn_new(options)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        wait_members(&router, &NODES).await?;

        let apiserver_process = KubeProcess::spawn(
            "kube-apiserver",
            &kube_bin("kube-apiserver"),
            &apiserver_args(&pki, &etcd, &router, apiserver.port(), dir.path()),
            dir.path(),
        )?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(&pki, apiserver, Some((router.user, &router.ca_file()))),
        )?;
        let mut components = vec![apiserver_process];
        let ready = eventually("kube-apiserver /readyz", START_TIMEOUT, || async {
            health::probe_once(apiserver, &pki, "/readyz").await
        })
        .await;
        if let Err(err) = ready {
            return Err(err.context(components[0].log_tail(60)));
        }

        let kc = kubeconfig.display().to_string();
        let sa_key = pki.sa_key.display().to_string();
        let ca = pki.ca_cert.display().to_string();
        let kcm = [
            format!("--kubeconfig={kc}"),
            "--leader-elect=false".into(),
            format!("--service-account-private-key-file={sa_key}"),
            format!("--root-ca-file={ca}"),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--kube-api-qps=100".into(),
            "--kube-api-burst=200".into(),
        ];
        let scheduler = [
            format!("--kubeconfig={kc}"),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
        ];
        let mut kwok = vec![
            format!("--kubeconfig={kc}"),
            "--manage-all-nodes".into(),
            "--node-lease-duration-seconds=40".into(),
            "--server-address=127.0.0.1:0".into(),
            "--cidr=10.0.0.1/16".into(),
        ];
        for stage in kwok_stages() {
            kwok.push(format!("--config={}", stage.display()));
        }
        // Dropped in reverse start order: kwok first, kube-apiserver last.
        components.insert(
            0,
            KubeProcess::spawn(
                "kube-controller-manager",
                &kube_bin("kube-controller-manager"),
                &kcm,
                dir.path(),
            )?,
        );
        components.insert(
            0,
            KubeProcess::spawn(
                "kube-scheduler",
                &kube_bin("kube-scheduler"),
                &scheduler,
                dir.path(),
            )?,
        );
        components.insert(
            0,
            KubeProcess::spawn("kwok", &kube_bin("kwok"), &kwok, dir.path())?,
        );

        let health = HealthPoller::start(apiserver, &pki)?;
        let mut control_plane = ControlPlane {
            health,
            components,
            agents,
            router,
            etcd,
            plugin: Plugin::new()?,
            kubeconfig,
            apiserver,
            started_in: Duration::ZERO,
            pki,
            dir,
            _one_at_a_time: lock,
        };
        let nodes = NODES
            .iter()
            .map(|n| {
                format!(
                    "apiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n  labels:\n    \
                     kubernetes.io/hostname: {n}\n    type: kwok\n  annotations:\n    \
                     kwok.x-k8s.io/node: fake\n"
                )
            })
            .collect::<Vec<_>>()
            .join("---\n");
        let manifest = control_plane.dir.path().join("nodes.yaml");
        std::fs::write(&manifest, nodes)?;
        control_plane
            .kubectl_ok(&["create", "-f", &manifest.display().to_string()])
            .await?;
        control_plane.wait_nodes_ready().await?;
        control_plane
            .wait_for(
                "the default ServiceAccount",
                START_TIMEOUT,
                |cp| async move {
                    cp.kubectl_json(&["get", "serviceaccount", "default", "-o", "json"])
                        .await
                        .map(|_| ())
                },
            )
            .await?;
        control_plane.started_in = started.elapsed();
        Ok(control_plane)
    }

    /// The temp dir holding the PKI, the kubeconfig and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PKI.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The readyz/livez poller.
    pub fn health(&self) -> &HealthPoller {
        &self.health
    }

    /// A component by name (`kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, `kwok`).
    pub fn component(&self, name: &str) -> &KubeProcess {
        self.components
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no component {name}"))
    }

    /// kube-apiserver's log so far.
    pub fn apiserver_log(&self) -> String {
        self.component("kube-apiserver").log()
    }

    /// The tails of every log (components, router, agents), for errors.
    pub fn log_tails(&self) -> String {
        let mut out: Vec<String> = self.components.iter().map(|c| c.log_tail(30)).collect();
        out.push(format!(
            "--- ste-router (last 30 lines) ---\n{}",
            process::tail(&self.router.log(), 30)
        ));
        for agent in &self.agents {
            out.push(format!(
                "--- ste-agent {} (last 10 lines) ---\n{}",
                agent.options.node_name,
                process::tail(&agent.log(), 10)
            ));
        }
        out.join("\n")
    }

    /// `Err` unless every Kubernetes component is still running.
    pub fn check_components(&mut self) -> anyhow::Result<()> {
        for component in &mut self.components {
            component.check_running()?;
        }
        Ok(())
    }

    /// A command running `.build/bin/kubectl --kubeconfig <file> args…`,
    /// with the workspace's `kubectl-ste` first on PATH.
    pub fn kubectl_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = self.plugin.command(&kube_bin("kubectl"));
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        command
    }

    /// Runs kubectl (see [`ControlPlane::kubectl_command`]).
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<Run> {
        Plugin::output(self.kubectl_command(args)).await
    }

    /// Runs kubectl; its stdout, or an error with the run and the log tails.
    pub async fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let run = self.kubectl(args).await?;
        if run.code == Some(0) {
            Ok(run.stdout)
        } else {
            anyhow::bail!("kubectl {args:?} failed: {run:#?}\n{}", self.log_tails())
        }
    }

    /// Runs kubectl and parses its stdout as JSON; `Err` as a string (for
    /// polling with [`eventually`]).
    pub async fn kubectl_json(&self, args: &[&str]) -> Result<Value, String> {
        let run = self.kubectl(args).await.map_err(|e| e.to_string())?;
        if run.code != Some(0) {
            return Err(format!("kubectl {args:?}: {}", run.stderr.trim()));
        }
        serde_json::from_str(&run.stdout).map_err(|e| format!("kubectl {args:?}: {e}"))
    }

    /// Runs `kubectl ste args…` through kubectl's plugin mechanism, with
    /// KUBECONFIG set (so the plugin finds the router in the context's
    /// `ste.io/router` extension, as in a real install).
    pub async fn ste(&self, args: &[&str]) -> anyhow::Result<Run> {
        self.ste_as(&self.kubeconfig, args).await
    }

    /// [`ControlPlane::ste`] with another kubeconfig (another user).
    pub async fn ste_as(&self, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Run> {
        let mut command = self.plugin.command(&kube_bin("kubectl"));
        command.env("KUBECONFIG", kubeconfig).arg("ste").args(args);
        Plugin::output(command).await
    }

    /// Writes a kubeconfig for a user who holds only the bearer `token`,
    /// with the same cluster and `ste.io/router` extension as
    /// [`ControlPlane::kubeconfig`]; returns its path.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        let router_ca = self.router.ca_file();
        std::fs::write(
            &path,
            flags::token_kubeconfig_yaml(
                &self.pki,
                self.apiserver,
                Some((self.router.user, &router_ca)),
                token,
            ),
        )?;
        Ok(path)
    }

    /// Starts a long-running kubectl (e.g. `get --watch`) whose stdout is
    /// collected by [`Streamed`].
    pub fn kubectl_stream(&self, args: &[&str]) -> anyhow::Result<Streamed> {
        let mut command = self.kubectl_command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        Streamed::spawn(command)
    }

    /// Polls `check` until it succeeds; on timeout the error carries the
    /// log tails.
    pub async fn wait_for<'a, T, F, Fut>(
        &'a self,
        what: &str,
        timeout: Duration,
        check: F,
    ) -> anyhow::Result<T>
    where
        F: Fn(&'a ControlPlane) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let result = eventually(what, timeout, || check(self)).await;
        result.map_err(|e| e.context(self.log_tails()))
    }

    /// Waits until the Nodes node-a, node-b and node-c are Ready.
    pub async fn wait_nodes_ready(&self) -> anyhow::Result<()> {
        self.wait_for("the Nodes to be Ready", START_TIMEOUT, |cp| async move {
            let nodes = cp.kubectl_json(&["get", "nodes", "-o", "json"]).await?;
            let ready: Vec<&str> = nodes["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| {
                    n["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
                .filter_map(|n| n["metadata"]["name"].as_str())
                .collect();
            if NODES.iter().all(|n| ready.contains(n)) {
                Ok(())
            } else {
                Err(format!("ready: {ready:?}"))
            }
        })
        .await
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for("kube-apiserver /readyz", timeout, |cp| async move {
            health::probe_once(cp.apiserver, &cp.pki, "/readyz").await
        })
        .await
    }

    /// Every Pod key held by the shards of the running agents, with the
    /// members holding it (more than one is a duplicate). An agent that
    /// was killed (no process) is skipped: its shard is gone.
    pub async fn shard_pods(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        crate::agent::keys_held(
            self.agents.iter().filter(|a| a.pid().is_some()),
            PODS_PREFIX,
        )
        .await
    }

    /// The agent of a node.
    pub fn agent(&mut self, node: &str) -> &mut TestAgent {
        self.agents
            .iter_mut()
            .find(|a| a.options.node_name == node)
            .unwrap_or_else(|| panic!("no agent {node}"))
    }

    /// `Err` if kube-apiserver's log holds an etcd error storm (see
    /// [`apiserver_log`]); `Ok` with the number of etcd error lines.
    pub fn check_no_etcd_error_storm(&self) -> anyhow::Result<usize> {
        apiserver_log::check_no_storm(&self.apiserver_log()).map_err(|storm| {
            anyhow::anyhow!(
                "etcd error storm in kube-apiserver's log ({}): {storm}",
                self.component("kube-apiserver").log_path().display()
            )
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // STE_E2E_KEEP_DIR=1 keeps the logs, PKI and kubeconfig to look at
        // after a failure (the processes are killed all the same).
        if std::env::var_os("STE_E2E_KEEP_DIR").is_some_and(|v| v == "1") {
            self.dir.disable_cleanup(true);
            // The router's and agents' logs live in their own temp dirs.
            let _ = std::fs::copy(
                self.router.log_path(),
                self.dir.path().join("ste-router.log"),
            );
            for agent in &self.agents {
                let name = format!("ste-agent-{}.log", agent.options.node_name);
                let _ = std::fs::copy(agent.log_path(), self.dir.path().join(name));
            }
            eprintln!("kept {}", self.dir.path().display());
        }
    }
}

/// Waits until the router's ring has exactly `members` and serves (as
/// long as the control plane may take to start).
pub async fn wait_members(router: &TestRouter, members: &[&str]) -> anyhow::Result<()> {
    router
        .wait_members(members, START_TIMEOUT)
        .await
        .map(|_| ())
}
