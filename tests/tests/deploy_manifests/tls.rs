//! The manifests' arguments run: ste-router and ste-agent started as the
//! kubelet would start them, with deploy/pki.sh's certificates (the
//! router reaches the agent's TLS shard with its shard client
//! certificate; the agent registers on the router's TLS admin port as its
//! node, with the same certificate), and etcdctl presenting
//! kube-apiserver's client certificate.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use ste_proto::v1::GetRingRequest;
use ste_proto::v1::ring_client::RingClient;
use ste_tests::pki::{Ca, dn};
use ste_tests::procs::{free_port, pids_with_cmdline, sigkill, workspace_bin};

use crate::{deploy, documents, find, pod_spec, strs};

/// A process started from a manifest; killed on drop, together with the
/// etcd and the tmpfs of an agent's `data_dir`.
struct Started {
    child: Option<Child>,
    log: PathBuf,
    data_dir: Option<PathBuf>,
}

impl Started {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status within `timeout`.
    fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "no exit within {timeout:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.data_dir {
            for pid in pids_with_cmdline(&format!("--data-dir={}", dir.join("etcd").display())) {
                sigkill(pid);
            }
            ste_tests::agent::unmount_all(dir);
        }
    }
}

/// Starts the container's command the way the kubelet would: its args, with
/// `$(VAR)` expanded from `env`, after replacing each `from` (which must
/// occur in the args) with `to`; then the test-only `extra` args.
fn start(
    container: &Value,
    replace: &[(&str, String)],
    env: &[(&str, String)],
    extra: &[String],
    dir: &Path,
) -> Started {
    let mut args = strs(&container["args"]);
    for (from, to) in replace {
        assert!(
            args.iter().any(|a| a.contains(from)),
            "the manifest no longer has {from} in {args:?}"
        );
        args = args.into_iter().map(|a| a.replace(from, to)).collect();
    }
    for (name, value) in env {
        args = args
            .into_iter()
            .map(|a| a.replace(&format!("$({name})"), value))
            .collect();
    }
    let binary = strs(&container["command"])[0].clone();
    let log = dir.join(format!("{binary}.log"));
    let child = Command::new(workspace_bin(&binary))
        // The etcd the tests use, as the agent's image would bring it.
        .env("STE_ETCD_BIN", ste_tests::procs::etcd_bin())
        .args(&args)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Started {
        child: Some(child),
        log,
        data_dir: None,
    }
}

fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<(), String>,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out waiting for {what}: {last}\nlog:\n{}", log())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn manifest_arguments_run_router_and_agent_with_kube_apiservers_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Stand-ins for kubeadm's etcd CA and kube-apiserver's etcd client
    // certificate (--etcd-certfile), then deploy/pki.sh as docs/install.md runs it.
    let etcd_ca = Ca::new("etcd-ca").unwrap();
    etcd_ca.write(&dir.join("etcd-ca.crt")).unwrap();
    etcd_ca
        .issue(
            &[],
            dn("kube-apiserver-etcd-client", None),
            &[rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        )
        .unwrap()
        .write(dir, "apiserver-etcd-client")
        .unwrap();
    // Kubernetes' client CA (kube-apiserver's --client-ca-file), which
    // signed the router's kubeconfig user; nothing answers at its server:
    // the agent's registration needs no TokenReview or SubjectAccessReview.
    let kube_ca = Ca::new("kubernetes").unwrap();
    kube_ca.write(&dir.join("kube-ca.crt")).unwrap();
    let (user_cert, user_key) = kube_ca
        .issue(
            &[],
            dn("ste-router", None),
            &[rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        )
        .unwrap()
        .write(dir, "ste-router")
        .unwrap();
    let kubeconfig = dir.join("ste-router.conf");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: kubernetes\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\n\
             users:\n- name: ste-router\n  user:\n    client-certificate: {}\n    client-key: {}\n\
             contexts:\n- name: ste-router\n  context:\n    cluster: kubernetes\n    user: ste-router\n\
             current-context: ste-router\n",
            free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            dir.join("kube-ca.crt").display(),
            user_cert.display(),
            user_key.display(),
        ),
    )
    .unwrap();
    let pki = dir.join("pki");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 61));
    let made = Command::new(deploy("pki.sh"))
        .arg(&pki)
        .arg("--etcd-ca")
        .arg(dir.join("etcd-ca.crt"))
        .arg("--kube-ca")
        .arg(dir.join("kube-ca.crt"))
        .arg("--shard")
        .arg(format!("deploy-test-node={ip}"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "deploy/pki.sh: {}",
        String::from_utf8_lossy(&made.stderr)
    );

    // The router, as the static pod runs it.
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let [etcd_port, admin_port, user_port, metrics_port] = [(); 4].map(|_| free_port(local));
    let router_docs = documents("router-static-pod.yaml");
    let router_container = &pod_spec(find(&router_docs, "Pod"))["containers"][0];
    let state = dir.join("router-state");
    std::fs::create_dir(&state).unwrap();
    let mut router = start(
        router_container,
        &[
            ("/etc/kubernetes/pki/ste", pki.display().to_string()),
            ("/var/lib/ste-router", state.display().to_string()),
            ("127.0.0.1:2479", format!("127.0.0.1:{etcd_port}")),
            ("0.0.0.0:2490", format!("127.0.0.1:{admin_port}")),
            ("0.0.0.0:2492", format!("127.0.0.1:{user_port}")),
            (
                "/etc/kubernetes/ste-router.conf",
                kubeconfig.display().to_string(),
            ),
            ("127.0.0.1:2491", format!("127.0.0.1:{metrics_port}")),
        ],
        &[],
        &[],
        dir,
    );
    let metrics = format!("127.0.0.1:{metrics_port}");
    wait_for(
        "the router's /healthz",
        Duration::from_secs(30),
        || match http_status(&metrics, "/healthz") {
            Some(200) => Ok(()),
            other => Err(format!("{other:?}")),
        },
        || router.log(),
    );

    // One agent, as the managed DaemonSet runs it on a node whose IP is
    // 127.0.0.61; only the ports are moved off the defaults. Its
    // /etc/ste/pki holds what docs/install.md copies there from pki.sh.
    let node_pki = dir.join("node-pki");
    std::fs::create_dir(&node_pki).unwrap();
    for (from, to) in [
        ("shard-deploy-test-node.crt", "shard.crt"),
        ("shard-deploy-test-node.key", "shard.key"),
        ("ca.crt", "ca.crt"),
        ("client-ca-bundle.crt", "client-ca-bundle.crt"),
    ] {
        std::fs::copy(pki.join(from), node_pki.join(to)).unwrap();
    }
    let agent_docs = documents("agent-daemonset.yaml");
    let agent_container = &pod_spec(find(&agent_docs, "DaemonSet"))["containers"][0];
    let shard = dir.join("shard");
    let mut agent = start(
        agent_container,
        &[
            ("/var/lib/ste/shard", shard.display().to_string()),
            ("/etc/ste/pki", node_pki.display().to_string()),
            ("0.0.0.0:2292", format!("{ip}:{}", free_port(ip))),
        ],
        &[
            ("NODE_NAME", "deploy-test-node".into()),
            ("NODE_IP", ip.to_string()),
            ("STE_ROUTER", format!("127.0.0.1:{admin_port}")),
        ],
        &[
            format!("--etcd-client-url=https://{ip}:{}", free_port(ip)),
            format!("--etcd-peer-url=http://{ip}:{}", free_port(ip)),
            format!("--grpc-listen={ip}:{}", free_port(ip)),
            format!("--metrics-listen={ip}:{}", free_port(ip)),
        ],
        dir,
    );
    agent.data_dir = Some(shard.clone());

    // kube-apiserver's view: its etcd client certificate and its
    // --etcd-cafile replaced by the bundle.
    let etcdctl = |args: &[&str]| {
        Command::new(ste_tests::procs::etcdctl_bin())
            .arg(format!("--endpoints=https://127.0.0.1:{etcd_port}"))
            .arg(format!(
                "--cacert={}",
                pki.join("apiserver-etcd-ca-bundle.crt").display()
            ))
            .arg(format!(
                "--cert={}",
                dir.join("apiserver-etcd-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                dir.join("apiserver-etcd-client.key").display()
            ))
            .arg("--command-timeout=5s")
            .args(args)
            .output()
            .expect("etcdctl is installed")
    };
    wait_for(
        "a write through the router once the agent has joined",
        Duration::from_secs(60),
        || {
            let out = etcdctl(&["put", "/registry/pods/default/deploy-test", "hello"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
        || format!("router:\n{}\nagent:\n{}", router.log(), agent.log()),
    );
    let got = etcdctl(&[
        "get",
        "/registry/pods/default/deploy-test",
        "--print-value-only",
    ]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "hello");

    // The router's doors with pki.sh's files: its admin port serves
    // router-admin.crt for 127.0.0.1 (verified with ca.crt, as the agent
    // and kubectl ste do) and lets the node read the ring with its node
    // certificate; without a client certificate it lets nobody in, and
    // its user port wants a certificate or a token.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let node_identity = (
        pki.join("shard-deploy-test-node.crt"),
        pki.join("shard-deploy-test-node.key"),
    );
    let ring = runtime
        .block_on(get_ring(
            admin_port,
            &pki.join("ca.crt"),
            Some(&node_identity),
        ))
        .unwrap_or_else(|e| panic!("GetRing as the node: {e}\nrouter:\n{}", router.log()));
    let members: Vec<&str> = ring.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(members, ["deploy-test-node"]);
    let anonymous = runtime.block_on(get_ring(admin_port, &pki.join("ca.crt"), None));
    assert!(
        anonymous.is_err(),
        "the admin port answered without a client certificate: {anonymous:?}"
    );
    match runtime.block_on(get_ring(user_port, &pki.join("ca.crt"), None)) {
        Err(Call::Status(status)) => {
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
            assert_eq!(status.message(), "Unauthorized");
        }
        other => panic!("the user port without credentials: {other:?}"),
    }

    // SIGTERM, as the kubelet sends: the agent stops within the pod's grace
    // period and leaves no tmpfs behind; the router exits cleanly.
    let grace = pod_spec(find(&agent_docs, "DaemonSet"))["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let status = agent.terminate(Duration::from_secs(grace));
    assert!(
        status.success(),
        "agent exit {status}; log:\n{}",
        agent.log()
    );
    assert!(
        ste_agent::mount::mounts_at(&shard).unwrap().is_empty(),
        "tmpfs left at {}",
        shard.display()
    );
    let status = router.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "router exit {status}; log:\n{}",
        router.log()
    );
}

/// Why a Ring/GetRing call failed: the connection (TLS) or the router.
#[derive(Debug)]
enum Call {
    Connect(String),
    Status(tonic::Status),
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::Connect(e) => write!(f, "connect: {e}"),
            Call::Status(s) => write!(f, "{}: {}", s.code(), s.message()),
        }
    }
}

/// Ring/GetRing over TLS to 127.0.0.1:`port`, trusting `ca`, with the
/// client certificate and key `identity` if given.
async fn get_ring(
    port: u16,
    ca: &Path,
    identity: Option<&(PathBuf, PathBuf)>,
) -> Result<ste_proto::v1::RingInfo, Call> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let read = |path: &Path| std::fs::read(path).unwrap();
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert), read(key)));
    }
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| Call::Connect(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| Call::Connect(format!("{e}: {:?}", std::error::Error::source(&e))))?;
    RingClient::new(channel)
        .get_ring(GetRingRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(Call::Status)
}
