//! The manifests as documents: valid Kubernetes YAML that kubectl reads,
//! flags and environment the binaries really have, probes on real ports,
//! and RBAC for what the plugin uses.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::{FILES, deploy, documents, find, flag, flags, help, named, pod_spec, seconds, strs};

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

#[test]
fn every_manifest_is_kubernetes_yaml_that_kubectl_reads() {
    let namespaced = [
        "ConfigMap",
        "DaemonSet",
        "Pod",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ];
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
        // The kubelet's gRPC probe cannot speak TLS, which 2290 now does:
        // the agent's /healthz on its plain metrics port says the same.
        let port = |name: &str| {
            container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{file}: no port {name}"))["containerPort"]
                .as_i64()
                .unwrap()
        };
        assert_eq!(port("metrics"), 2291, "--metrics-listen's default port");
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], "/healthz", "{file}: {probe}");
            assert_eq!(get["port"], 2291, "{file}: {probe} on the metrics port");
            assert!(container[probe]["grpc"].is_null(), "{file}: {probe}");
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
        // The shard's TLS files come from the node's /etc/ste/pki, read-only.
        let pki_mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == "/etc/ste/pki")
            .unwrap_or_else(|| panic!("{file}: no volume at /etc/ste/pki"));
        assert_eq!(pki_mount["readOnly"], true);
        let pki_volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == pki_mount["name"])
            .unwrap();
        assert_eq!(pki_volume["hostPath"]["path"], "/etc/ste/pki");
        for name in [
            "--etcd-cert-file",
            "--etcd-key-file",
            "--etcd-trusted-ca-file",
            "--tls-cert-file",
            "--tls-private-key-file",
            "--client-ca-file",
            "--router-ca-file",
        ] {
            assert!(
                flag(&flags, name).starts_with("/etc/ste/pki/"),
                "{file}: {name} is not in /etc/ste/pki"
            );
        }
        // One certificate per node: the shard's and the node's identity.
        assert_eq!(
            flag(&flags, "--tls-cert-file"),
            flag(&flags, "--etcd-cert-file")
        );
        assert_eq!(
            flag(&flags, "--tls-private-key-file"),
            flag(&flags, "--etcd-key-file")
        );
        assert_eq!(
            flag(&flags, "--router-ca-file"),
            flag(&flags, "--etcd-trusted-ca-file"),
            "{file}: the router's certificate is of the STE CA"
        );
        assert_eq!(
            flag(&flags, "--client-ca-file"),
            "/etc/ste/pki/client-ca-bundle.crt"
        );
        let (_, user_port) = flag(&flags, "--user-listen").rsplit_once(':').unwrap();
        assert_eq!(port("user").to_string(), user_port);
        // TokenReview and SubjectAccessReview in-cluster, as a
        // ServiceAccount that rbac.yaml defines and makes an auth delegator.
        for name in ["--authentication-kubeconfig", "--authorization-kubeconfig"] {
            assert!(
                !flags.iter().any(|(f, _)| f == name),
                "{file}: {name}: the agent uses its ServiceAccount"
            );
        }
        assert_eq!(spec["automountServiceAccountToken"], true, "{file}");
        let account = spec["serviceAccountName"].as_str().unwrap();
        let rbac = documents("rbac.yaml");
        assert_eq!(
            named(&rbac, "ServiceAccount", account)["metadata"]["namespace"],
            ds["metadata"]["namespace"]
        );
        assert!(
            auth_delegators(&rbac).contains(&format!("ServiceAccount kube-system/{account}")),
            "{file}: {account} cannot call TokenReview and SubjectAccessReview"
        );
        assert!(
            !flags.iter().any(|(f, _)| f == "--insecure"),
            "{file}: the manifest serves the shard without TLS"
        );
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
    let ports: Vec<String> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap().to_string())
        .collect();
    for listen in ["--admin-listen", "--user-listen"] {
        let (_, port) = flag(&flags, listen).rsplit_once(':').unwrap();
        assert!(ports.contains(&port.to_owned()), "{listen}'s port {port}");
    }
    assert!(
        !flags.iter().any(|(f, _)| f == "--insecure"),
        "the admin and user ports serve TLS"
    );
    // A static pod has no ServiceAccount: a kubeconfig on the node, whose
    // user rbac.yaml makes an auth delegator.
    assert_eq!(
        flag(&flags, "--authentication-kubeconfig"),
        flag(&flags, "--authorization-kubeconfig")
    );
    assert!(
        auth_delegators(&documents("rbac.yaml")).contains(&"User ste-router".to_owned()),
        "the router's kubeconfig user cannot call TokenReview and SubjectAccessReview"
    );
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
    // Every file flag points into (or is) a mounted host path, read-only
    // but for the state.
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
            let path = m["mountPath"].as_str().unwrap().to_owned();
            assert_eq!(
                m["readOnly"] == true,
                path != "/var/lib/ste-router",
                "{path}: read-only"
            );
            (
                path,
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
        "--tls-cert-file",
        "--tls-private-key-file",
        "--client-ca-file",
        "--authentication-kubeconfig",
        "--authorization-kubeconfig",
    ] {
        let path = flag(&flags, name);
        assert!(
            mounts
                .iter()
                .any(|(m, _)| path == m || path.starts_with(&format!("{m}/"))),
            "{name} {path} is not in a mounted volume"
        );
    }
}

/// The subjects bound to system:auth-delegator: `ServiceAccount NS/NAME`,
/// `User NAME` or `Group NAME`.
fn auth_delegators(rbac: &[Value]) -> Vec<String> {
    rbac.iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding")
        .filter(|b| b["roleRef"]["kind"] == "ClusterRole")
        .filter(|b| b["roleRef"]["name"] == "system:auth-delegator")
        .flat_map(|b| b["subjects"].as_array().unwrap().iter())
        .map(|s| match s["kind"].as_str().unwrap() {
            "ServiceAccount" => format!(
                "ServiceAccount {}/{}",
                s["namespace"].as_str().unwrap(),
                s["name"].as_str().unwrap()
            ),
            kind => format!("{kind} {}", s["name"].as_str().unwrap()),
        })
        .collect()
}

#[test]
fn rbac_grants_what_the_plugin_uses() {
    let docs = documents("rbac.yaml");
    // (resource, verb) pairs; resources of the core API group bare,
    // others as RESOURCE.GROUP (as kubectl auth can-i names them).
    let rules = |kind: &str, name: &str| -> Vec<(String, String)> {
        named(&docs, kind, name)["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                let verbs = strs(&r["verbs"]);
                let groups = strs(&r["apiGroups"]);
                assert_eq!(groups.len(), 1, "{name}: one API group per rule");
                let group = groups[0].clone();
                strs(&r["resources"]).into_iter().flat_map(move |res| {
                    let res = if group.is_empty() {
                        res
                    } else {
                        format!("{res}.{group}")
                    };
                    verbs.clone().into_iter().map(move |v| (res.clone(), v))
                })
            })
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(r, v)| ((*r).to_owned(), (*v).to_owned()))
            .collect()
    };
    // What the router and the agents ask in their SubjectAccessReviews:
    // get for reading, update for Join/Leave, and nothing more.
    assert_eq!(
        rules("ClusterRole", "ste-viewer"),
        pairs(&[("rings.ste.io", "get")])
    );
    assert_eq!(
        rules("ClusterRole", "ste-operator"),
        pairs(&[("rings.ste.io", "get"), ("rings.ste.io", "update")])
    );
    // The STE CA the plugin reads, for every authenticated user, and no
    // other ConfigMap.
    let reader = named(&docs, "Role", "ste-ca-reader");
    assert_eq!(strs(&reader["rules"][0]["resourceNames"]), ["ste-ca"]);
    assert_eq!(
        rules("Role", "ste-ca-reader"),
        pairs(&[("configmaps", "get")])
    );
    let binding = named(&docs, "RoleBinding", "ste-ca-reader");
    assert_eq!(binding["subjects"][0]["name"], "system:authenticated");
    let cluster = rules("ClusterRole", "ste-plugin-nodes");
    let in_kube_system = rules("Role", "ste-plugin-router");
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
    // Every binding refers to a role of this file, or to Kubernetes' own
    // system:auth-delegator.
    for binding in docs
        .iter()
        .filter(|d| d["kind"].as_str().unwrap().ends_with("Binding"))
    {
        let role = &binding["roleRef"];
        let name = role["name"].as_str().unwrap();
        assert_eq!(
            binding["kind"].as_str().unwrap(),
            format!("{}Binding", role["kind"].as_str().unwrap()),
        );
        if name != "system:auth-delegator" {
            named(&docs, role["kind"].as_str().unwrap(), name);
        }
    }
    assert_eq!(
        auth_delegators(&docs),
        ["ServiceAccount kube-system/ste-agent", "User ste-router"]
    );
}
