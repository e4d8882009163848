//! The manifests as documents: valid Kubernetes YAML that kubectl reads,
//! flags and environment the binaries really have, probes on real ports,
//! and RBAC for what the plugin uses.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::{FILES, deploy, documents, find, flag, flags, help, pod_spec, seconds, strs};

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
        ] {
            assert!(
                flag(&flags, name).starts_with("/etc/ste/pki/"),
                "{file}: {name} is not in /etc/ste/pki"
            );
        }
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
