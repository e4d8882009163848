//! `kubectl ste` end to end: the real plugin binary (and the real
//! `kubectl` running it) against a real ste-router with real etcd shards
//! and agents, over TLS on the router's user port. The Kubernetes API is the
//! one stand-in: a small fake API server (tests/src/plugin.rs) for the node
//! list, pod lookups, router discovery, the STE CA's ConfigMap and
//! port-forwarding; without it the router trusts client certificates only.

// The tests live in kubectl_plugin/, by what they exercise; this file keeps
// the target's root and the helpers they share.
#[path = "kubectl_plugin/auth.rs"]
mod auth;
#[path = "kubectl_plugin/errors.rs"]
mod errors;
#[path = "kubectl_plugin/kubectl.rs"]
mod kubectl;
#[path = "kubectl_plugin/placement.rs"]
mod placement;
#[path = "kubectl_plugin/ring.rs"]
mod ring;
#[path = "kubectl_plugin/status.rs"]
mod status;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use ste_tests::ShardedRouter;
use ste_tests::plugin::{KubeUser, Plugin, Run};

const WAIT: Duration = Duration::from_secs(60);

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:#?}"))
}

/// Rows of a table as whitespace-split cells (headers and summary lines
/// excluded by the caller).
fn cells(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

async fn put_pods(router: &ShardedRouter, namespace: &str, names: &[String]) {
    let mut client = router.router.client().await.expect("router client");
    for name in names {
        let key = format!("/registry/pods/{namespace}/{name}");
        let outcome = ste_tests::kube::create(&mut client, &key, format!("pod {name}").as_bytes())
            .await
            .expect("create");
        assert!(
            matches!(outcome, ste_tests::kube::Outcome::Written(_)),
            "{key}: {outcome:?}"
        );
    }
}

/// Pseudo-random pod names (xorshift, seeded from the clock and printed,
/// so a failure can be replayed).
fn random_names(n: usize) -> Vec<String> {
    let mut x = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("pod name seed: {x}");
    let mut names = BTreeSet::new();
    while names.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        names.insert(format!("web-{:x}-{}", x % 0xffff_ffff, x % 1000));
    }
    names.into_iter().collect()
}

/// kubectl's completion of `kubectl ste <args>`, via kubectl_complete-ste.
async fn complete(plugin: &Plugin, args: &[&str]) -> String {
    let mut all = vec!["__complete", "ste"];
    all.extend(args);
    plugin.kubectl(&all).await.unwrap().ok().stdout
}

/// `ring show -o json`.
async fn ring_json(plugin: &Plugin, router: &str) -> Value {
    json(
        &plugin
            .run(&["ring", "show", "-o", "json", "--router", router])
            .await
            .unwrap()
            .ok(),
    )
}

/// The local cluster's kubeconfig (context `ste-local`, the router's user
/// address and the STE CA in its `ste.io/router` extension, the test PKI's
/// admin certificate as its user) with an API server that does not exist.
fn router_kubeconfig(plugin: &Plugin, address: &str) -> String {
    let ca = plugin.ste_ca().unwrap();
    let (cert, key) = plugin.admin_identity().unwrap();
    ste_tests::plugin::local_kubeconfig(
        "https://127.0.0.1:1",
        address,
        &ca,
        KubeUser::Certificate {
            cert: &cert,
            key: &key,
        },
    )
}
