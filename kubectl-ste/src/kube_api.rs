//! The plugin's Kubernetes API calls: finding the router and agent pods,
//! port-forwarding to them, the node list for the prototype's placements,
//! and whether a pod exists.
//!
//! Every call is bounded by the request timeout here, not by the client's
//! read timeout, which would also cut a long-lived port-forward.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{CliError, CliResult};

/// Namespace of the router and agent pods.
pub const STE_NAMESPACE: &str = "kube-system";
/// Label selector of the router pod.
pub const ROUTER_SELECTOR: &str = "app.kubernetes.io/name=ste-router";
/// Label selector of the agent pods (a DaemonSet).
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=ste-agent";
/// The router's port for `kubectl ste` users (`--user-listen`) in its pod.
pub const ROUTER_USER_PORT: u16 = 2492;
/// The ConfigMap in kube-system that publishes the STE CA.
pub const CA_CONFIGMAP: &str = "ste-ca";
/// The key of the STE CA PEM in [`CA_CONFIGMAP`].
pub const CA_CONFIGMAP_KEY: &str = "ca.crt";
/// The node label with which the original prototype kept a node out of
/// its shard set.
pub const FORK_OPT_OUT_LABEL: &str = "no-shard";

/// Runs a Kubernetes call under `timeout` (`None`: no limit), turning its
/// failure into a line that says what was being done.
pub async fn bounded<T, F>(what: &str, timeout: Option<Duration>, call: F) -> CliResult<T>
where
    F: Future<Output = Result<T, kube::Error>>,
{
    let result = match timeout {
        Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| {
            CliError::msg(format!(
                "{what}: the Kubernetes API did not answer within {}",
                humantime::format_duration(limit)
            ))
        })?,
        None => call.await,
    };
    result.map_err(|e| CliError::msg(format!("{what}: {}", kube_error(&e))))
}

/// A kube error in kubectl's words where it has them.
fn kube_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!(
            "Error from server ({}): {}",
            if status.reason.is_empty() {
                status.code.to_string()
            } else {
                status.reason.clone()
            },
            status.message
        ),
        other => crate::error::root_cause(other),
    }
}

fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The router pod to port-forward to: a running one, ready ones first,
/// then by name so the choice is stable.
pub async fn find_router_pod(
    client: &kube::Client,
    timeout: Option<Duration>,
) -> CliResult<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), STE_NAMESPACE);
    let pods = bounded(
        &format!("cannot list the STE router pods ({STE_NAMESPACE}, {ROUTER_SELECTOR})"),
        timeout,
        api.list(&ListParams::default().labels(ROUTER_SELECTOR)),
    )
    .await?;
    let mut running: Vec<&Pod> = pods.items.iter().filter(|p| is_running(p)).collect();
    running.sort_by_key(|p| (!is_ready(p), p.metadata.name.clone()));
    running
        .first()
        .and_then(|p| p.metadata.name.clone())
        .ok_or_else(|| {
            CliError::msg(format!(
                "no running STE router pod in {STE_NAMESPACE} (label {ROUTER_SELECTOR}, {} found); \
                 {}",
                pods.items.len(),
                crate::connect::HOW_TO_SET
            ))
        })
}

/// Agent pods by the node they run on, for reaching agents through
/// port-forwards when the router itself is reached that way.
pub async fn agent_pods(
    client: &kube::Client,
    timeout: Option<Duration>,
) -> CliResult<BTreeMap<String, String>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), STE_NAMESPACE);
    let pods = bounded(
        &format!("cannot list the STE agent pods ({STE_NAMESPACE}, {AGENT_SELECTOR})"),
        timeout,
        api.list(&ListParams::default().labels(AGENT_SELECTOR)),
    )
    .await?;
    Ok(pods
        .items
        .iter()
        .filter(|p| is_running(p))
        .filter_map(|p| {
            let node = p.spec.as_ref()?.node_name.clone()?;
            Some((node, p.metadata.name.clone()?))
        })
        .collect())
}

/// A byte stream to `port` of pod `namespace/pod` through the API server.
pub async fn port_forward(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
    timeout: Option<Duration>,
) -> CliResult<impl AsyncRead + AsyncWrite + Unpin + Send + use<>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut forwarder = bounded(
        &format!("cannot port-forward to {namespace}/{pod} port {port}"),
        timeout,
        api.portforward(pod, &[port]),
    )
    .await?;
    // The forwarder's task runs on after it is dropped, until the stream
    // is closed; the stream is all the caller needs.
    forwarder
        .take_stream(port)
        .ok_or_else(|| CliError::msg(format!("port-forward to {namespace}/{pod}: no stream")))
}

/// The STE CA PEM published in the ConfigMap kube-system/ste-ca (key
/// `ca.crt`); `None` when the ConfigMap or the key does not exist.
pub async fn ste_ca(client: &kube::Client, timeout: Option<Duration>) -> CliResult<Option<String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), STE_NAMESPACE);
    let map = bounded(
        &format!("cannot read the STE CA from the ConfigMap {STE_NAMESPACE}/{CA_CONFIGMAP}"),
        timeout,
        api.get_opt(CA_CONFIGMAP),
    )
    .await?;
    Ok(map
        .and_then(|m| m.data)
        .and_then(|mut data| data.remove(CA_CONFIGMAP_KEY)))
}

/// A node as the prototype saw it: its name and the shard URL it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkShard {
    /// Kubernetes node name.
    pub node: String,
    /// The node's InternalIP.
    pub ip: String,
    /// `https://<ip>:2279`.
    pub url: String,
}

/// The prototype's shards: one per node with an InternalIP, except nodes
/// labelled `no-shard`. Sorted by node name.
pub fn fork_shards(nodes: &[Node]) -> Vec<ForkShard> {
    let mut shards: Vec<ForkShard> = nodes
        .iter()
        .filter(|n| {
            !n.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(FORK_OPT_OUT_LABEL))
        })
        .filter_map(|n| {
            let node = n.metadata.name.clone()?;
            let ip = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .clone();
            let url = ste_core::fork_shard_url(&ip);
            Some(ForkShard { node, ip, url })
        })
        .collect();
    shards.sort_by(|a, b| a.node.cmp(&b.node));
    shards
}

/// Every node of the cluster.
pub async fn list_nodes(client: &kube::Client, timeout: Option<Duration>) -> CliResult<Vec<Node>> {
    let api: Api<Node> = Api::all(client.clone());
    Ok(bounded(
        "cannot list nodes",
        timeout,
        api.list(&ListParams::default()),
    )
    .await?
    .items)
}

/// What the API server says about a pod (the prototype's placements have
/// no router to ask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    /// metadata.resourceVersion.
    pub resource_version: Option<String>,
}

/// The pod, or `None` if the API server says it does not exist.
pub async fn get_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Option<Duration>,
) -> CliResult<Option<PodFacts>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = bounded(
        &format!("cannot get pod {namespace}/{name}"),
        timeout,
        api.get_opt(name),
    )
    .await?;
    Ok(pod.map(|p| PodFacts {
        resource_version: p.metadata.resource_version,
    }))
}

#[cfg(test)]
mod tests;
