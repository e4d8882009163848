//! End to end against a real control plane: kube-apiserver 1.37 stores its
//! Pods through ste-router in three agents' shards, with
//! kube-controller-manager, kube-scheduler and kwok (the kubelets) on top
//! (the `ControlPlane` fixture). Each test drives it with the real
//! `kubectl` and `kubectl ste` and checks what Kubernetes shows against
//! what the shards hold.
//!
//! Every test name starts with `e2e_`: CI runs this file three times in a
//! row and skips it elsewhere by that prefix. Run:
//! `cargo test -p ste-tests --test kube_e2e -- --nocapture` (the numbers
//! are printed to stderr).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use nix::sys::signal::Signal;
use serde_json::Value;
use ste_tests::control_plane::wait_members;
use ste_tests::ring;
use ste_tests::{ControlPlane, eventually};

const DEPLOYMENT: &str = "web";
/// Never pulled: kwok only pretends to run it.
const IMAGE: &str = "registry.k8s.io/pause:3.10";
const POD_KEYS: &str = "/registry/pods/default/";
/// How long a Deployment may take to converge on the loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(240);

/// The Pods of namespace default in a list (a PodList or kubectl's List).
fn pods_of(list: &Value) -> BTreeMap<String, Value> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["metadata"]["name"].as_str()?.to_owned(), p.clone())))
        .collect()
}

/// `kubectl get pods -o json`: name → Pod.
async fn kube_pods(cp: &ControlPlane) -> Result<BTreeMap<String, Value>, String> {
    Ok(pods_of(
        &cp.kubectl_json(&["get", "pods", "-o", "json"]).await?,
    ))
}

/// The Pod names the shards hold; `Err` if a key is on more than one shard.
async fn shard_pod_names(cp: &ControlPlane) -> Result<BTreeSet<String>, String> {
    let held = cp.shard_pods().await.map_err(|e| e.to_string())?;
    let duplicated: Vec<_> = held.iter().filter(|(_, m)| m.len() != 1).collect();
    if !duplicated.is_empty() {
        return Err(format!("keys on more than one shard: {duplicated:?}"));
    }
    held.keys()
        .map(|k| {
            k.strip_prefix(POD_KEYS)
                .map(str::to_owned)
                .ok_or_else(|| format!("a pod key outside namespace default: {k}"))
        })
        .collect()
}

/// Waits until the Deployment has `replicas` available and up to date,
/// and exactly that many Pods, all Running, exist.
async fn wait_available(cp: &ControlPlane, replicas: usize) -> anyhow::Result<()> {
    cp.wait_for(
        &format!("deployment/{DEPLOYMENT} with {replicas} available replicas"),
        CONVERGE,
        |cp| async move {
            let d = cp
                .kubectl_json(&["get", "deployment", DEPLOYMENT, "-o", "json"])
                .await?;
            let status = &d["status"];
            let n = |field: &str| status[field].as_u64().unwrap_or(0) as usize;
            if n("availableReplicas") != replicas
                || n("updatedReplicas") != replicas
                || n("replicas") != replicas
                || d["metadata"]["generation"] != status["observedGeneration"]
            {
                return Err(format!("status {status}"));
            }
            let pods = kube_pods(cp).await?;
            let running = pods
                .values()
                .filter(|p| p["status"]["phase"] == "Running")
                .count();
            if pods.len() == replicas && running == replicas {
                Ok(())
            } else {
                Err(format!("{} pods, {running} Running", pods.len()))
            }
        },
    )
    .await
}

/// Waits until kube-apiserver's list (from storage) names exactly the Pods
/// the shards hold, each key on one shard; returns the names.
async fn wait_kube_matches_shards(cp: &ControlPlane) -> anyhow::Result<BTreeSet<String>> {
    cp.wait_for(
        "kubectl's pods to equal the shards' pods",
        Duration::from_secs(60),
        |cp| async move {
            let kube: BTreeSet<String> = kube_pods(cp).await?.into_keys().collect();
            let shards = shard_pod_names(cp).await?;
            if kube == shards {
                return Ok(kube);
            }
            let held = cp.shard_pods().await.map_err(|e| e.to_string())?;
            let only_in_shards: Vec<_> = shards
                .difference(&kube)
                .map(|name| {
                    let key = format!("{POD_KEYS}{name}");
                    (name, held.get(&key).cloned().unwrap_or_default())
                })
                .collect();
            Err(format!(
                "only in kube: {:?}; only in the shards (with the shard): {only_in_shards:?}",
                kube.difference(&shards).collect::<Vec<_>>(),
            ))
        },
    )
    .await
}

/// Waits until kube-apiserver's watch cache (a list with
/// `resourceVersion=0`) has exactly the Pods the router holds, each at the
/// router's mod revision, and the shards hold the same names.
async fn wait_watch_cache_consistent(cp: &ControlPlane) -> anyhow::Result<()> {
    cp.wait_for(
        "the watch cache to equal the router's pods",
        Duration::from_secs(60),
        |cp| async move {
            let raw = cp
                .kubectl(&[
                    "get",
                    "--raw",
                    "/api/v1/namespaces/default/pods?resourceVersion=0",
                ])
                .await
                .map_err(|e| e.to_string())?;
            let list: Value = serde_json::from_str(&raw.stdout).map_err(|e| e.to_string())?;
            let cached: BTreeMap<String, i64> = pods_of(&list)
                .into_iter()
                .map(|(name, pod)| {
                    let rv = pod["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(-1);
                    (name, rv)
                })
                .collect();
            let mut router = cp.router.client().await.map_err(|e| e.to_string())?;
            let listed = router
                .get(POD_KEYS, Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| e.to_string())?;
            let stored: BTreeMap<String, i64> = listed
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let name = kv.key_str().ok()?.strip_prefix(POD_KEYS)?.to_owned();
                    Some((name, kv.mod_revision()))
                })
                .collect();
            let shards = shard_pod_names(cp).await?;
            let stored_names: BTreeSet<String> = stored.keys().cloned().collect();
            if cached == stored && stored_names == shards {
                Ok(())
            } else {
                Err(format!(
                    "watch cache {} pods, router {} pods, shards {} pods; differing: {:?}",
                    cached.len(),
                    stored.len(),
                    shards.len(),
                    cached
                        .iter()
                        .filter(|(n, rv)| stored.get(*n) != Some(rv))
                        .chain(stored.iter().filter(|(n, _)| !cached.contains_key(*n)))
                        .take(10)
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .await
}

/// kube-apiserver's count of Pod watchers it closed because they fell
/// behind (`apiserver_terminated_watchers_total`).
async fn terminated_pod_watchers(cp: &ControlPlane) -> anyhow::Result<u64> {
    let metrics = cp.kubectl_ok(&["get", "--raw", "/metrics"]).await?;
    Ok(metrics
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_terminated_watchers_total{") && l.contains("resource=\"pods\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|n| n as u64)
        .sum())
}

/// Follows a Pod watch until it has shown, for every Pod in `names`, its
/// ADDED and a version with phase Running, each Pod's versions in
/// increasing resourceVersion order. kube-apiserver closes a watcher that
/// falls behind a burst of events (kubectl, starved on 2 cores during a
/// scale-up, can be one; it then exits 0): such an end must be counted in
/// `apiserver_terminated_watchers_total`, and the watch is resumed from
/// the last resourceVersion seen, as an informer does, with `kubectl get
/// --raw '...?watch=1&resourceVersion=RV'`. Any other end fails. Returns
/// how many times it resumed.
async fn follow_watch(
    cp: &ControlPlane,
    names: &BTreeSet<String>,
    first: ste_tests::control_plane::Streamed,
    terminated_before: u64,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut earlier: Vec<Value> = Vec::new();
    let mut current = first;
    let mut resumed = 0;
    loop {
        let events: Vec<Value> = earlier
            .iter()
            .cloned()
            .chain(current.json_values().map_err(anyhow::Error::msg)?)
            .collect();
        let mut added = BTreeSet::new();
        let mut running = BTreeSet::new();
        let mut last_rv: BTreeMap<String, i64> = BTreeMap::new();
        let mut newest = 0;
        for event in &events {
            let pod = &event["object"];
            let name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let rv: i64 = pod["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            newest = newest.max(rv);
            if let Some(prev) = last_rv.insert(name.clone(), rv) {
                anyhow::ensure!(rv > prev, "{name}: resourceVersion {rv} after {prev}");
            }
            match event["type"].as_str() {
                Some("ADDED") => {
                    added.insert(name.clone());
                }
                Some("MODIFIED") => {}
                other => anyhow::bail!("unexpected event {other:?} for {name}: {event}"),
            }
            if pod["status"]["phase"] == "Running" {
                running.insert(name);
            }
        }
        let missing_added: Vec<_> = names.difference(&added).collect();
        let missing_running: Vec<_> = names.difference(&running).collect();
        if missing_added.is_empty() && missing_running.is_empty() {
            return Ok(resumed);
        }
        if let Some(exit) = current.exited() {
            let terminated = terminated_pod_watchers(cp).await?;
            anyhow::ensure!(
                terminated > terminated_before + resumed,
                "the watch ended ({exit}) but kube-apiserver did not close it for falling \
                 behind ({terminated} terminated watchers); stderr: {}",
                current.stderr()
            );
            earlier = events;
            resumed += 1;
            let path = format!("/api/v1/namespaces/default/pods?watch=1&resourceVersion={newest}");
            current = cp.kubectl_stream(&["get", "--raw", &path])?;
            continue;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} events; no ADDED for {missing_added:?}; not seen Running: {missing_running:?}; \
             stderr: {}\n{}",
            events.len(),
            current.stderr(),
            cp.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// readyz/livez green outside `windows`, and no etcd error storm.
fn assert_healthy(cp: &ControlPlane, windows: &[(Instant, Instant)]) -> anyhow::Result<()> {
    let unexpected = cp.health().unexpected_failures(windows);
    anyhow::ensure!(
        unexpected.is_empty(),
        "readyz/livez failed outside the fault windows: {unexpected:#?}\n{}",
        cp.log_tails()
    );
    anyhow::ensure!(
        cp.health().successes() > 0,
        "the health poller never succeeded"
    );
    let failures = cp.health().failures();
    if let (Some(first), Some(last)) = (failures.first(), failures.last()) {
        eprintln!(
            "health: failed probes (expected, during the fault) for {:.1?}; first: {} {}; last: {} {}",
            last.finished.duration_since(first.started),
            first.path,
            first.detail,
            last.path,
            last.detail
        );
    }
    let errors = cp.check_no_etcd_error_storm()?;
    eprintln!(
        "health: {} probes green, {} failed (all within the fault windows); {errors} etcd error lines in kube-apiserver's log",
        cp.health().successes(),
        cp.health().failures().len()
    );
    Ok(())
}

/// Creates the Deployment with `replicas` and waits until they are all
/// available and Running.
async fn deploy(cp: &ControlPlane, replicas: usize) -> anyhow::Result<()> {
    cp.kubectl_ok(&[
        "create",
        "deployment",
        DEPLOYMENT,
        &format!("--image={IMAGE}"),
        &format!("--replicas={replicas}"),
    ])
    .await?;
    wait_available(cp, replicas).await
}

/// Asks for `replicas` without waiting (a ring change may run meanwhile).
async fn scale(cp: &ControlPlane, replicas: usize) -> anyhow::Result<()> {
    cp.kubectl_ok(&[
        "scale",
        &format!("deployment/{DEPLOYMENT}"),
        &format!("--replicas={replicas}"),
    ])
    .await?;
    Ok(())
}

/// Scales to `replicas` and waits until they are all available and Running.
async fn scale_to(cp: &ControlPlane, replicas: usize) -> anyhow::Result<()> {
    scale(cp, replicas).await?;
    wait_available(cp, replicas).await
}

/// `kubectl ste ring ARGS`, which must succeed (the log tails if not).
async fn ring_change(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<()> {
    let run = cp.ste(&[&["ring"][..], args].concat()).await?;
    anyhow::ensure!(
        run.code == Some(0),
        "ring {args:?}: {run:#?}\n{}",
        cp.log_tails()
    );
    Ok(())
}

/// What every test ends with: kube-apiserver stayed live and ready outside
/// `fault_windows`, every component is still up; prints how long `test`
/// took.
fn finish(
    cp: &mut ControlPlane,
    test: &str,
    began: Instant,
    fault_windows: &[(Instant, Instant)],
) -> anyhow::Result<()> {
    assert_healthy(cp, fault_windows)?;
    cp.check_components()?;
    eprintln!("{test}: {:.1?} after start-up", began.elapsed());
    Ok(())
}

async fn start(test: &str) -> anyhow::Result<ControlPlane> {
    let cp = ControlPlane::start().await?;
    eprintln!(
        "{test}: control plane up in {:.1?} (logs in {})",
        cp.started_in,
        cp.dir().display()
    );
    Ok(cp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_scale_to_100_list_watch_page_and_locate() -> anyhow::Result<()> {
    let mut cp = start("scale").await?;
    let began = Instant::now();
    deploy(&cp, 1).await?;

    // The watch lists first and then watches from that list's
    // resourceVersion: one from before the scale-up.
    let terminated_before = terminated_pod_watchers(&cp).await?;
    let watch = cp.kubectl_stream(&[
        "get",
        "pods",
        "--watch",
        "--output-watch-events",
        "-o",
        "json",
    ])?;
    cp.wait_for(
        "the watch's initial list",
        Duration::from_secs(60),
        |_| async {
            if watch.json_values()?.is_empty() {
                Err(format!("no event yet; stderr: {}", watch.stderr()))
            } else {
                Ok(())
            }
        },
    )
    .await?;

    let scaled = Instant::now();
    scale_to(&cp, 100).await?;
    eprintln!("scale: 1 → 100 Running in {:.1?}", scaled.elapsed());
    let names = wait_kube_matches_shards(&cp).await?;
    assert_eq!(names.len(), 100);

    // Every Pod's ADDED and its change to Running, in resourceVersion order.
    let resumed = follow_watch(&cp, &names, watch, terminated_before).await?;
    eprintln!("watch: every pod's ADDED and Running seen ({resumed} resumptions)");

    // Paged: 100 pods in pages of 7 (15 requests, 14 with a continue token).
    let paged = cp
        .kubectl(&["get", "pods", "--chunk-size=7", "-o", "json", "-v=6"])
        .await?
        .ok();
    let paged_names: BTreeSet<String> = pods_of(&serde_json::from_str(&paged.stdout)?)
        .into_keys()
        .collect();
    assert_eq!(paged_names, names);
    let pages: Vec<&str> = paged
        .stderr
        .lines()
        .filter(|l| l.contains("/api/v1/namespaces/default/pods?") && l.contains("limit=7"))
        .collect();
    let continued = pages.iter().filter(|l| l.contains("continue=")).count();
    assert!(
        pages.len() >= 15 && continued >= 14,
        "expected 15 paged requests, 14 continued: {pages:#?}"
    );

    // kubectl ste where names the shard that holds the key.
    let held = cp.shard_pods().await?;
    for name in names.iter().step_by(17) {
        let run = cp
            .ste(&["where", "-o", "json", &format!("pod/{name}")])
            .await?
            .ok();
        let report: Value = serde_json::from_str(&run.stdout)?;
        let item = &report["items"][0];
        assert_eq!(item["pod"], name.as_str(), "{report}");
        assert_eq!(item["present"], true, "{report}");
        let key = format!("{POD_KEYS}{name}");
        assert_eq!(
            Some(&vec![item["member"].as_str().unwrap_or("").to_owned()]),
            held.get(&key),
            "kubectl ste where {name}: {report}"
        );
    }

    finish(
        &mut cp,
        "e2e_scale_to_100_list_watch_page_and_locate",
        began,
        &[],
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_ring_leave_and_join_while_scaling() -> anyhow::Result<()> {
    let mut cp = start("ring").await?;
    let began = Instant::now();
    deploy(&cp, 50).await?;

    // node-c leaves while the Deployment grows to 150...
    scale(&cp, 150).await?;
    ring_change(&cp, &["leave", "node-c", "--yes"]).await?;
    wait_members(&cp.router, &["node-a", "node-b"]).await?;
    wait_available(&cp, 150).await?;
    wait_kube_matches_shards(&cp).await?;

    // ...and joins again while it shrinks to 20.
    scale(&cp, 20).await?;
    ring_change(&cp, &["join", "node-c"]).await?;
    wait_members(&cp.router, &["node-a", "node-b", "node-c"]).await?;
    wait_available(&cp, 20).await?;

    let names = wait_kube_matches_shards(&cp).await?;
    assert_eq!(names.len(), 20);
    wait_watch_cache_consistent(&cp).await?;
    finish(&mut cp, "e2e_ring_leave_and_join_while_scaling", began, &[])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_killed_agent_pods_are_recreated() -> anyhow::Result<()> {
    let mut cp = start("agent-kill").await?;
    let began = Instant::now();
    deploy(&cp, 30).await?;
    let before = wait_kube_matches_shards(&cp).await?;

    // The node whose shard the ring gives `/registry/health` dies (agent
    // and etcd): kube-apiserver's /livez and /readyz Get that key through
    // the router, and must stay green all along, fence included.
    let victim = ring::member_of(&mut cp.router.admin().await?, "/registry/health").await?;
    let held = cp.shard_pods().await?;
    let lost: Vec<String> = held
        .iter()
        .filter(|(_, members)| members[0] == victim)
        .map(|(key, _)| key.trim_start_matches(POD_KEYS).to_owned())
        .collect();
    assert!(!lost.is_empty(), "{victim} holds none of the 30 pods");
    let killed = Instant::now();
    {
        let agent = cp.agent(&victim);
        let etcds = agent.etcd_pids();
        agent.signal(Signal::SIGKILL)?;
        for pid in etcds {
            ste_tests::procs::sigkill(pid);
        }
        agent.wait_exit(Duration::from_secs(10)).await?;
    }
    let survivors: Vec<&str> = ste_tests::control_plane::NODES
        .into_iter()
        .filter(|n| *n != victim)
        .collect();
    wait_members(&cp.router, &survivors).await?;
    let fenced = killed.elapsed();
    wait_available(&cp, 30).await?;
    let available = killed.elapsed();
    eprintln!(
        "agent kill: {victim} held {} of 30 pods; fenced after {fenced:.1?}, deployment available after {available:.1?}",
        lost.len()
    );

    let after = wait_kube_matches_shards(&cp).await?;
    assert_eq!(after.len(), 30);
    for pod in &lost {
        assert!(
            !after.contains(pod),
            "{pod} was lost with its shard but is listed"
        );
    }
    assert_eq!(
        before.intersection(&after).count(),
        30 - lost.len(),
        "only the lost pods were replaced"
    );
    wait_watch_cache_consistent(&cp).await?;
    // No fault window: kube-apiserver stays live and ready throughout.
    finish(&mut cp, "e2e_killed_agent_pods_are_recreated", began, &[])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_router_kill_and_restart() -> anyhow::Result<()> {
    let mut cp = start("router-kill").await?;
    let began = Instant::now();
    deploy(&cp, 20).await?;
    let before = wait_kube_matches_shards(&cp).await?;

    let killed = Instant::now();
    cp.router.kill9();
    // kube-apiserver cannot write a Pod while the router is down.
    let victim = before.first().expect("a pod").clone();
    let refused = cp
        .kubectl(&[
            "delete",
            "pod",
            &victim,
            "--wait=false",
            "--request-timeout=10s",
        ])
        .await?;
    anyhow::ensure!(
        refused.code != Some(0),
        "a Pod was deleted while the router was down: {refused:#?}"
    );
    cp.router.restart().await?;
    cp.wait_ready(Duration::from_secs(120)).await?;
    let restarted = killed.elapsed();

    // kube-apiserver (not restarted) writes, reads and watches again.
    scale_to(&cp, 40).await?;
    let recovered = Instant::now();
    eprintln!(
        "router kill: restarted and readyz green after {restarted:.1?}, scaled to 40 after {:.1?}",
        killed.elapsed()
    );
    let after = wait_kube_matches_shards(&cp).await?;
    assert!(before.is_subset(&after), "no pod lost across the restart");
    cp.kubectl_ok(&["delete", "pod", &victim, "--wait=true"])
        .await?;
    wait_available(&cp, 40).await?;
    wait_kube_matches_shards(&cp).await?;
    wait_watch_cache_consistent(&cp).await?;
    finish(
        &mut cp,
        "e2e_router_kill_and_restart",
        began,
        &[(killed, recovered)],
    )?;
    Ok(())
}

/// `kubectl ste` is authorised by Kubernetes (issue 12): the router asks
/// this kube-apiserver to review a user's bearer token (TokenReview) and
/// whether they may `get` or `update` rings.ste.io (SubjectAccessReview).
/// A ServiceAccount without RBAC is Forbidden in kubectl's words; the
/// ClusterRoles shipped in deploy/rbac.yaml grant reading (ste-viewer) and
/// ring changes (ste-operator); a made-up token is Unauthorized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_kubectl_ste_is_authorised_by_kubernetes_rbac() -> anyhow::Result<()> {
    let mut cp = start("rbac").await?;
    let began = Instant::now();
    cp.kubectl_ok(&["create", "serviceaccount", "alice"])
        .await?;
    let token = cp
        .kubectl_ok(&["create", "token", "alice", "--duration=1h"])
        .await?;
    let alice = cp.token_kubeconfig("alice", token.trim())?;
    const ALICE: &str = "system:serviceaccount:default:alice";
    let forbidden = |verb: &str| {
        format!(
            "Error from server (Forbidden): rings.ste.io is forbidden: User \"{ALICE}\" cannot \
             {verb} resource \"rings\" in API group \"ste.io\" at the cluster scope"
        )
    };

    // No permission at all: neither look nor change.
    let leave = cp
        .ste_as(&alice, &["ring", "leave", "node-c", "--yes"])
        .await?;
    assert_eq!(leave.code, Some(1), "{leave:#?}");
    assert_eq!(leave.stderr.trim_end(), forbidden("update"), "{leave:#?}");
    let status = cp.ste_as(&alice, &["status"]).await?;
    assert_eq!(status.code, Some(1), "{status:#?}");
    assert!(status.stderr.contains(&forbidden("get")), "{status:#?}");

    // A token the API server never issued.
    let mallory = cp.token_kubeconfig("mallory", "made-up-token")?;
    let unknown = cp.ste_as(&mallory, &["status"]).await?;
    assert_eq!(unknown.code, Some(1), "{unknown:#?}");
    assert!(
        unknown
            .stderr
            .contains("error: You must be logged in to the server (Unauthorized)"),
        "{unknown:#?}"
    );

    // The shipped ClusterRoles, granted with ordinary RBAC.
    let rbac = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rbac.yaml");
    cp.kubectl_ok(&["apply", "-f", rbac]).await?;
    cp.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "alice-ste-viewer",
        "--clusterrole=ste-viewer",
        "--serviceaccount=default:alice",
    ])
    .await?;
    // The router remembers a denial for a moment (ste_auth::access::DENIED_TTL).
    let until_allowed = |what: &'static str, args: &'static [&'static str]| {
        let (cp, alice) = (&cp, &alice);
        eventually(what, Duration::from_secs(60), move || async move {
            let run = cp.ste_as(alice, args).await.map_err(|e| e.to_string())?;
            (run.code == Some(0))
                .then_some(())
                .ok_or_else(|| format!("{run:#?}"))
        })
    };
    until_allowed("alice may look", &["status"]).await?;
    // Her token went to the router only, never to a node's agent.
    let look = cp.ste_as(&alice, &["status"]).await?;
    assert!(
        format!("{}{}", look.stdout, look.stderr).contains("agent not asked"),
        "{look:#?}"
    );
    let leave = cp
        .ste_as(&alice, &["ring", "leave", "node-c", "--yes"])
        .await?;
    assert_eq!(leave.code, Some(1), "a viewer may not leave: {leave:#?}");
    assert_eq!(leave.stderr.trim_end(), forbidden("update"), "{leave:#?}");

    cp.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "alice-ste-operator",
        "--clusterrole=ste-operator",
        "--serviceaccount=default:alice",
    ])
    .await?;
    until_allowed(
        "alice may take node-c out",
        &["ring", "leave", "node-c", "--yes"],
    )
    .await?;
    let members: Vec<String> = cp
        .router
        .status()
        .await?
        .members
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(members, ["node-a", "node-b"]);
    finish(
        &mut cp,
        "e2e_kubectl_ste_is_authorised_by_kubernetes_rbac",
        began,
        &[],
    )?;
    Ok(())
}
