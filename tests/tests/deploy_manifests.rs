//! deploy/: the Kubernetes manifests. No cluster is available here, so they
//! are checked by parsing (ours, and the real kubectl's kustomize, offline),
//! against the flags the binaries really have, by running the real
//! ste-router and ste-agent with exactly the manifests' arguments (addresses
//! and host paths swapped for test ones), the certificates made by
//! deploy/pki.sh, and etcdctl presenting the client certificate
//! kube-apiserver would, and by applying rbac.yaml to a real kube-apiserver.

// The tests live in deploy_manifests/ (the manifests read as documents, and
// their arguments run); this file keeps the target's root and the readers
// of deploy/ both use.
#[path = "deploy_manifests/manifests.rs"]
mod manifests;
#[path = "deploy_manifests/rbac.rs"]
mod rbac;
#[path = "deploy_manifests/tls.rs"]
mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use ste_tests::procs::workspace_bin;

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

/// The object of `kind` called `name`.
fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
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

fn seconds(duration: &str) -> i64 {
    duration
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .expect("a duration in seconds")
}
