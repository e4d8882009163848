//! deploy/: the Kubernetes manifests. No cluster is available here, so they
//! are checked by parsing (ours, and the real kubectl's kustomize, offline),
//! against the flags the binaries really have, and by running the real
//! ste-router and ste-agent with exactly the manifests' arguments (addresses
//! and host paths swapped for test ones), the certificates made by
//! deploy/pki.sh, and etcdctl presenting the client certificate
//! kube-apiserver would.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use ste_tests::procs::{free_port, pids_with_cmdline, sigkill, workspace_bin};

const FILES: [&str; 4] = [
    "agent-daemonset.yaml",
    "agent-daemonset-external.yaml",
    "router-static-pod.yaml",
    "rbac.yaml",
];

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// The pod spec of a DaemonSet, or a Pod's own spec.
fn pod_spec(object: &Value) -> &Value {
    match object["kind"].as_str() {
        Some("Pod") => &object["spec"],
        _ => &object["spec"]["template"]["spec"],
    }
}

fn strs(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The container's arguments as flag → value (`--flag value` or `--flag=value`).
fn flags(container: &Value) -> Vec<(String, String)> {
    let args = strs(&container["args"]);
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        assert!(arg.starts_with("--"), "unexpected argument {arg:?}");
        if let Some((flag, value)) = arg.split_once('=') {
            out.push((flag.to_owned(), value.to_owned()));
        } else {
            out.push((arg.clone(), args.get(i + 1).cloned().unwrap_or_default()));
            i += 1;
        }
        i += 1;
    }
    out
}

fn flag<'a>(flags: &'a [(String, String)], name: &str) -> &'a str {
    flags
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {flags:?}"))
}

fn help(binary: &str) -> String {
    let output = Command::new(workspace_bin(binary))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// Every flag and environment variable the container sets exists in the
/// binary's --help, and every $(VAR) in the arguments is defined in env.
fn check_against_help(file: &str, container: &Value, binary: &str) {
    let help = help(binary);
    let known: BTreeSet<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '<', ',']).next())
        .collect();
    for (flag, _) in flags(container) {
        assert!(known.contains(&flag[2..]), "{file}: {binary} has no {flag}");
    }
    let env: Vec<&str> = container["env"]
        .as_array()
        .map(|e| e.iter().map(|v| v["name"].as_str().unwrap()).collect())
        .unwrap_or_default();
    for name in &env {
        assert!(
            help.contains(&format!("[env: {name}=")),
            "{file}: {binary} reads no {name}"
        );
    }
    for arg in strs(&container["args"]) {
        if let Some(var) = arg.strip_prefix("$(").and_then(|a| a.strip_suffix(')')) {
            assert!(
                env.contains(&var),
                "{file}: $({var}) is not defined in env, the kubelet would pass it verbatim"
            );
        }
    }
}

fn seconds(duration: &str) -> i64 {
    duration
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .expect("a duration in seconds")
}

#[test]
fn every_manifest_is_kubernetes_yaml_that_kubectl_reads() {
    let namespaced = ["ConfigMap", "DaemonSet", "Pod", "Role", "RoleBinding"];
    for file in FILES {
        let docs = documents(file);
        assert!(!docs.is_empty(), "{file}: no documents");
        for doc in &docs {
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: kind"));
            assert!(
                doc["apiVersion"].as_str().is_some_and(|v| !v.is_empty()),
                "{file}: apiVersion"
            );
            assert!(
                doc["metadata"]["name"]
                    .as_str()
                    .is_some_and(|v| !v.is_empty()),
                "{file}: name"
            );
            if namespaced.contains(&kind) {
                assert_eq!(
                    doc["metadata"]["namespace"], "kube-system",
                    "{file}: {kind}"
                );
            }
        }
        // kubectl's own YAML reader (kustomize, offline); it also refuses
        // two objects with the same kind and name.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            format!(
                "resources:\n- {}\n",
                deploy(file).canonicalize().unwrap().display()
            ),
        )
        .unwrap();
        let output = Command::new("kubectl")
            .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
            .arg(dir.path())
            .env("HOME", dir.path())
            .output()
            .expect("kubectl is installed");
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let rendered: Vec<Value> =
            serde_saphyr::from_multiple(&String::from_utf8_lossy(&output.stdout)).unwrap();
        assert_eq!(
            rendered.len(),
            docs.len(),
            "{file}: kubectl kustomize read every object"
        );
    }
}

#[test]
fn agent_daemonsets_use_real_flags_and_outlast_the_drain() {
    for (file, managed) in [
        ("agent-daemonset.yaml", true),
        ("agent-daemonset-external.yaml", false),
    ] {
        let docs = documents(file);
        let ds = find(&docs, "DaemonSet");
        assert_eq!(ds["metadata"]["name"], "ste-agent");
        let labels = &ds["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], "ste-agent");
        for (key, value) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[key], value, "{file}: the selector matches the pods");
        }
        let spec = pod_spec(ds);
        assert_eq!(
            spec["hostNetwork"], true,
            "{file}: the shard listens on the node IP"
        );
        let exprs = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"];
        for label in [
            "ste.io/no-shard",
            "no-shard",
            "node-role.kubernetes.io/control-plane",
        ] {
            assert!(
                exprs
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["key"] == label && e["operator"] == "DoesNotExist"),
                "{file}: nodes labelled {label} are skipped"
            );
        }
        let container = &spec["containers"][0];
        check_against_help(file, container, "ste-agent");
        let flags = flags(container);
        assert_eq!(
            flag(&flags, "--mount"),
            if managed { "managed" } else { "external" }
        );
        assert_eq!(flag(&flags, "--router"), "$(STE_ROUTER)");
        let env = container["env"].as_array().unwrap();
        let field = |name: &str| {
            env.iter().find(|e| e["name"] == name).unwrap()["valueFrom"]["fieldRef"]["fieldPath"]
                .clone()
        };
        assert_eq!(field("NODE_NAME"), "spec.nodeName");
        assert_eq!(field("NODE_IP"), "status.hostIP");
        // SIGTERM → drain (--drain-timeout) → stop etcd (--stop-grace, 10s by default).
        let drain = seconds(flag(&flags, "--drain-timeout"));
        let grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap();
        assert!(
            grace > drain + 10,
            "{file}: grace period {grace}s must outlast the drain {drain}s + stop grace"
        );
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert_eq!(
                container[probe]["grpc"]["port"], 2290,
                "{file}: {probe} on --grpc-listen's port"
            );
        }
        let data_dir = flag(&flags, "--data-dir");
        let mount = &container["volumeMounts"][0];
        let volume = &spec["volumes"][0];
        assert_eq!(mount["name"], volume["name"]);
        if managed {
            assert_eq!(container["securityContext"]["privileged"], true);
            assert_eq!(volume["hostPath"]["path"], "/var/lib/ste");
            assert_eq!(mount["mountPropagation"], "Bidirectional");
            assert!(data_dir.starts_with(&format!("{}/", mount["mountPath"].as_str().unwrap())));
        } else {
            assert_eq!(container["securityContext"]["privileged"], false);
            assert_eq!(volume["emptyDir"]["medium"], "Memory");
            assert_eq!(
                mount["mountPath"], data_dir,
                "{file}: the emptyDir is the data dir"
            );
        }
        let config = find(&docs, "ConfigMap");
        let key = &env.iter().find(|e| e["name"] == "STE_ROUTER").unwrap()["valueFrom"]["configMapKeyRef"];
        assert_eq!(key["name"], config["metadata"]["name"]);
        assert!(config["data"][key["key"].as_str().unwrap()].is_string());
    }
}

#[test]
fn router_static_pod_uses_real_flags_and_probes_its_metrics_port() {
    let docs = documents("router-static-pod.yaml");
    let pod = find(&docs, "Pod");
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/name"], "ste-router",
        "kubectl ste finds the router by it"
    );
    let spec = pod_spec(pod);
    assert_eq!(spec["hostNetwork"], true);
    let container = &spec["containers"][0];
    check_against_help("router-static-pod.yaml", container, "ste-router");
    let flags = flags(container);
    assert_eq!(flag(&flags, "--listen"), "127.0.0.1:2479");
    let (metrics_host, metrics_port) = flag(&flags, "--metrics-listen").rsplit_once(':').unwrap();
    for probe in ["startupProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz");
        assert_eq!(get["port"].as_i64().unwrap().to_string(), metrics_port);
        assert_eq!(
            get["host"], metrics_host,
            "a hostNetwork probe goes to the node IP unless told"
        );
    }
    // Every file flag points into a mounted host directory.
    let mounts: Vec<(String, String)> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let volume = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap();
            (
                m["mountPath"].as_str().unwrap().to_owned(),
                volume["hostPath"]["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(mounts.contains(&(
        "/etc/kubernetes/pki/ste".into(),
        "/etc/kubernetes/pki/ste".into()
    )));
    for name in [
        "--cert",
        "--key",
        "--client-ca",
        "--shard-ca",
        "--shard-cert",
        "--shard-key",
        "--state-file",
    ] {
        let path = flag(&flags, name);
        assert!(
            mounts
                .iter()
                .any(|(m, _)| path.starts_with(&format!("{m}/"))),
            "{name} {path} is not in a mounted volume"
        );
    }
}

#[test]
fn rbac_grants_what_the_plugin_uses() {
    let docs = documents("rbac.yaml");
    let rules = |kind: &str| -> Vec<(String, String)> {
        find(&docs, kind)["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                let verbs = strs(&r["verbs"]);
                strs(&r["resources"])
                    .into_iter()
                    .flat_map(move |res| verbs.clone().into_iter().map(move |v| (res.clone(), v)))
            })
            .collect()
    };
    let cluster = rules("ClusterRole");
    let in_kube_system = rules("Role");
    for (resource, verb) in [("nodes", "get"), ("nodes", "list")] {
        assert!(
            cluster.contains(&(resource.into(), verb.into())),
            "{resource} {verb}"
        );
    }
    for (resource, verb) in [
        ("pods", "get"),
        ("pods", "list"),
        ("pods/portforward", "create"),
        ("pods/portforward", "get"),
    ] {
        assert!(
            in_kube_system.contains(&(resource.into(), verb.into())),
            "{resource} {verb}"
        );
    }
    for binding in ["ClusterRoleBinding", "RoleBinding"] {
        let b = find(&docs, binding);
        let role = binding.trim_end_matches("Binding");
        assert_eq!(b["roleRef"]["kind"], role);
        assert_eq!(b["roleRef"]["name"], find(&docs, role)["metadata"]["name"]);
    }
}

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

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=etcd-ca",
            "-keyout",
            "etcd-ca.key",
            "-out",
            "etcd-ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=kube-apiserver-etcd-client",
            "-keyout",
            "apiserver-etcd-client.key",
            "-out",
            "client.csr",
        ],
    );
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "etcd-ca.crt",
            "-CAkey",
            "etcd-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "client.ext",
            "-out",
            "apiserver-etcd-client.crt",
        ],
    );
    let pki = dir.join("pki");
    let made = Command::new(deploy("pki.sh"))
        .arg(&pki)
        .arg("--etcd-ca")
        .arg(dir.join("etcd-ca.crt"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "deploy/pki.sh: {}",
        String::from_utf8_lossy(&made.stderr)
    );

    // The router, as the static pod runs it.
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let [etcd_port, admin_port, metrics_port] = [(); 3].map(|_| free_port(local));
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
    // 127.0.0.61; only the ports are moved off the defaults.
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 61));
    let agent_docs = documents("agent-daemonset.yaml");
    let agent_container = &pod_spec(find(&agent_docs, "DaemonSet"))["containers"][0];
    let shard = dir.join("shard");
    let mut agent = start(
        agent_container,
        &[("/var/lib/ste/shard", shard.display().to_string())],
        &[
            ("NODE_NAME", "deploy-test-node".into()),
            ("NODE_IP", ip.to_string()),
            ("STE_ROUTER", format!("127.0.0.1:{admin_port}")),
        ],
        &[
            format!("--etcd-client-url=http://{ip}:{}", free_port(ip)),
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
