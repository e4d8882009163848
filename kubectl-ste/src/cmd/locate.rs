//! `kubectl ste where pod/NAME…`: which member stores each pod.
//!
//! With `--placement router` (default) the router's `Locate` answers for
//! the key `<prefix>/pods/<ns>/<name>`: owner, presence, revision, size.
//! With `fork-ring` / `fork-suffix` the original prototype's placement is
//! computed from the Kubernetes node list (InternalIP → shard URL
//! `https://<ip>:2279`) and presence comes from the API server.
//!
//! A pod that does not exist is still printed (PRESENT false: where it
//! would be stored), then reported as kubectl reports a 404, exit 1.

use futures_util::future::join_all;
use serde::Serialize;
use ste_core::fork::{ForkRing, ForkSuffix};
use ste_core::keys::KeyLayout;
use ste_core::units::format_bytes;

use crate::cli::{Placement, WhereArgs};
use crate::error::{CliError, CliResult};
use crate::kube_api::{self, ForkShard};
use crate::output::{Cell, Format, Style, Table};
use crate::session::Session;

/// One pod's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodLocation {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// The etcd key that was placed.
    pub key: String,
    /// Ring member (STE) or shard URL (prototype).
    pub member: String,
    /// Kubernetes node of the shard.
    pub node: String,
    /// Shard etcd URL.
    pub shard: String,
    /// Whether the pod exists.
    pub present: bool,
    /// STE: global mod revision; prototype: the pod's resourceVersion.
    pub revision: Option<i64>,
    /// STE: global create revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<i64>,
    /// STE: stored value size in bytes.
    pub size_bytes: Option<u64>,
    /// STE: ring generation of the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// What `-o json|yaml` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhereReport {
    /// `router`, `fork-ring` or `fork-suffix`.
    pub placement: &'static str,
    /// One per pod asked about, in order.
    pub items: Vec<PodLocation>,
}

fn placement_name(p: Placement) -> &'static str {
    match p {
        Placement::Router => "router",
        Placement::ForkRing => "fork-ring",
        Placement::ForkSuffix => "fork-suffix",
    }
}

async fn namespace(session: &Session) -> CliResult<String> {
    let namespace = match &session.namespace {
        Some(ns) => ns.clone(),
        None => {
            let loaded = crate::kubeconfig::load(&session.kube)?;
            crate::kubeconfig::default_namespace(loaded.as_ref(), session.kube.context.as_deref())?
        }
    };
    ste_core::keys::validate_namespace(&namespace)
        .map_err(|e| CliError::msg(format!("invalid namespace {namespace:?}: {e}")))?;
    Ok(namespace)
}

/// Placement by the router's ring.
async fn by_router(
    session: &Session,
    layout: &KeyLayout,
    namespace: &str,
    names: &[String],
) -> CliResult<Vec<PodLocation>> {
    let router = session.router().await?;
    let lookups = names.iter().map(|name| {
        let router = &router;
        async move {
            let key = layout
                .pod_key(namespace, name)
                .map_err(|e| CliError::msg(format!("invalid pod name {name:?}: {e}")))?;
            let loc = router.locate(key.as_bytes()).await?;
            Ok::<_, CliError>(PodLocation {
                namespace: namespace.to_owned(),
                pod: name.clone(),
                key,
                node: loc.member.clone(),
                member: loc.member,
                shard: loc.endpoint,
                present: loc.present,
                revision: loc.present.then_some(loc.mod_revision),
                create_revision: loc.present.then_some(loc.create_revision),
                size_bytes: loc.present.then_some(loc.value_size),
                generation: Some(loc.generation),
            })
        }
    });
    join_all(lookups).await.into_iter().collect()
}

/// The prototype's shard for each pod, from the node list.
pub fn fork_locate(
    placement: Placement,
    shards: &[ForkShard],
    namespace: &str,
    name: &str,
) -> CliResult<(String, ForkShard)> {
    let key = KeyLayout::fork()
        .pod_key(namespace, name)
        .map_err(|e| CliError::msg(format!("invalid pod name {name:?}: {e}")))?;
    if shards.is_empty() {
        return Err(CliError::msg(
            "no node has an InternalIP (or every node is labelled no-shard): the prototype's \
             placement has no shards",
        ));
    }
    let url = match placement {
        Placement::ForkSuffix => {
            let suffix = ForkSuffix::new(shards.iter().map(|s| s.url.clone()))
                .map_err(|e| CliError::msg(e.to_string()))?;
            suffix
                .shard_for_pod(name)
                .map_err(|e| CliError::msg(e.to_string()))?
                .to_owned()
        }
        _ => {
            let ring = ForkRing::new(shards.iter().map(|s| s.url.clone()));
            ring.locate(key.as_bytes())
                .ok_or_else(|| CliError::msg("the prototype's ring is empty"))?
                .to_owned()
        }
    };
    let shard = shards
        .iter()
        .find(|s| s.url == url)
        .cloned()
        .ok_or_else(|| CliError::msg(format!("no node for shard {url}")))?;
    Ok((key, shard))
}

/// Placement by the prototype's schemes; presence from the API server.
async fn by_fork(
    session: &Session,
    placement: Placement,
    namespace: &str,
    names: &[String],
) -> CliResult<(Vec<PodLocation>, Vec<CliError>)> {
    let client = crate::kubeconfig::client(&session.kube, session.timeout).await?;
    let nodes = kube_api::list_nodes(&client, session.timeout).await?;
    let shards = kube_api::fork_shards(&nodes);
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        let (key, shard) = match fork_locate(placement, &shards, namespace, name) {
            Ok(found) => found,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let pod = kube_api::get_pod(&client, namespace, name, session.timeout).await?;
        rows.push(PodLocation {
            namespace: namespace.to_owned(),
            pod: name.clone(),
            key,
            member: shard.url.clone(),
            node: shard.node.clone(),
            shard: shard.url.clone(),
            present: pod.is_some(),
            revision: pod
                .and_then(|p| p.resource_version)
                .and_then(|rv| rv.parse().ok()),
            create_revision: None,
            size_bytes: None,
            generation: None,
        });
    }
    Ok((rows, errors))
}

fn opt<T: ToString>(value: Option<T>) -> Cell {
    Cell::from(value.map_or_else(|| "<none>".to_owned(), |v| v.to_string()))
}

/// The table.
pub fn table(rows: &[PodLocation]) -> Table {
    let mut table = Table::new([
        "NAMESPACE",
        "POD",
        "KEY",
        "MEMBER",
        "NODE",
        "SHARD",
        "PRESENT",
        "REVISION",
        "SIZE",
    ]);
    for r in rows {
        table.row(vec![
            Cell::from(r.namespace.as_str()),
            Cell::from(r.pod.as_str()),
            Cell::from(r.key.as_str()),
            Cell::from(r.member.as_str()),
            Cell::from(r.node.as_str()),
            Cell::from(r.shard.as_str()),
            Cell::styled(r.present.to_string(), (!r.present).then_some(Style::Yellow)),
            opt(r.revision),
            opt(r.size_bytes.map(format_bytes)),
        ]);
    }
    table
}

/// Runs `where`.
pub async fn run(session: &mut Session, args: &WhereArgs) -> CliResult<()> {
    if session.all_namespaces {
        return Err(CliError::msg(
            "a resource cannot be retrieved by name across all namespaces",
        ));
    }
    let names = crate::resource::pod_names(&args.args)?;
    let namespace = namespace(session).await?;
    let (rows, mut errors) = match args.placement {
        Placement::Router => {
            let layout = KeyLayout::new(args.etcd_prefix.clone())
                .map_err(|e| CliError::msg(e.to_string()))?;
            (
                by_router(session, &layout, &namespace, &names).await?,
                Vec::new(),
            )
        }
        fork => by_fork(session, fork, &namespace, &names).await?,
    };
    match session.format {
        Format::Json | Format::Yaml => session.print_document(&WhereReport {
            placement: placement_name(args.placement),
            items: rows.clone(),
        })?,
        _ => {
            if !rows.is_empty() {
                let text = table(&rows).render(session.headers, session.term.out_color);
                session.term.out(&text);
            }
        }
    }
    errors.extend(
        rows.iter()
            .filter(|r| !r.present)
            .map(|r| CliError::NotFound {
                resource: "pods",
                name: r.pod.clone(),
            }),
    );
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(CliError::Many(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden vectors of ste-core's fork tests, through the node list.
    fn shards() -> Vec<ForkShard> {
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .enumerate()
            .map(|(i, ip)| ForkShard {
                node: format!("node-{}", i + 1),
                ip: ip.to_string(),
                url: format!("https://{ip}:2279"),
            })
            .collect()
    }

    #[test]
    fn fork_ring_golden() {
        let s = shards();
        let (key, shard) = fork_locate(Placement::ForkRing, &s, "default", "nginx").unwrap();
        assert_eq!(key, "/pods/default/nginx");
        assert_eq!(shard.node, "node-2");
        let (_, shard) =
            fork_locate(Placement::ForkRing, &s, "default", "web-7d4b9c6f5-abcde").unwrap();
        assert_eq!(shard.url, "https://10.0.0.1:2279");
    }

    #[test]
    fn fork_suffix_golden() {
        let s = shards();
        let (_, shard) =
            fork_locate(Placement::ForkSuffix, &s, "default", "web-0-1b2wj30").unwrap();
        assert_eq!(shard.node, "node-1");
        let (_, shard) = fork_locate(Placement::ForkSuffix, &s, "default", "x-024k8tr").unwrap();
        assert_eq!(shard.node, "node-2");
        let err = fork_locate(Placement::ForkSuffix, &s, "default", "nginx").unwrap_err();
        assert_eq!(
            err.to_string(),
            "error: pod name \"nginx\" has no '-'-separated shard suffix"
        );
        assert!(fork_locate(Placement::ForkRing, &[], "default", "nginx").is_err());
    }
}
