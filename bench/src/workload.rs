//! The workload: the requests kube-apiserver's etcd3 storage sends for
//! pods, in five phases, against any etcd v3 endpoint.
//!
//! Every operation checks its answer (a create must succeed, an update and
//! a delete must match the revision the previous phase returned, a get
//! must find the key, a list must return every key), so a system that
//! answered fast but wrong fails the run instead of winning it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use tokio::task::JoinSet;

use crate::report::PhaseStats;
use crate::router_metrics;

/// Where the measured pod keys live.
pub const PREFIX: &str = "/registry/pods/";

/// One run's parameters (see the flags of the same names).
#[derive(Debug, Clone)]
pub struct Workload {
    /// Operations per phase.
    pub ops: usize,
    /// Concurrent requests in flight.
    pub concurrency: usize,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Namespaces the keys are spread over.
    pub namespaces: usize,
    /// Full lists in the list phase.
    pub list_repeats: usize,
    /// Page size of the lists.
    pub page_size: i64,
    /// Unmeasured create+delete pairs first.
    pub warmup: usize,
}

/// A client for the workload, shared by all tasks (one HTTP/2 connection,
/// as kube-apiserver shares one client per storage backend).
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(60));
    Client::connect([url], Some(options))
        .await
        .with_context(|| format!("connecting to {url}"))
}

fn kv(client: &Client) -> KvClient {
    // A page of 500 pods is about 2 MB; allow much larger values too.
    client
        .kv_client()
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

fn key(ns: usize, i: usize) -> String {
    format!("{PREFIX}ns-{}/pod-{i}", i % ns)
}

/// A value of exactly `size` bytes (unless the header alone is longer).
fn value(i: usize, generation: u32, size: usize) -> Vec<u8> {
    let mut v = format!(
        "{{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{{\"name\":\"pod-{i}\",\"generation\":{generation}}},\"pad\":\""
    )
    .into_bytes();
    let fill = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut j = i;
    while v.len() + 2 < size {
        v.push(fill[j % fill.len()]);
        j += 7;
    }
    v.extend_from_slice(b"\"}");
    v.truncate(size.max(1));
    v
}

/// The revision of the write a Txn made: the put's (or delete's) response
/// header, as kube-apiserver reads it, else the Txn's header.
fn write_revision(resp: &TxnResponse) -> anyhow::Result<i64> {
    let from_op = resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Put(p) => p.header().map(|h| h.revision()),
        TxnOpResponse::Delete(d) => d.header().map(|h| h.revision()),
        _ => None,
    });
    match from_op.filter(|r| *r > 0) {
        Some(r) => Ok(r),
        None => resp
            .header()
            .map(|h| h.revision())
            .context("Txn response without a header"),
    }
}

/// Runs `op(i)` for i in 0..n on `concurrency` tasks; returns the per-op
/// latencies and the wall time. The first error ends the phase (the other
/// tasks are aborted).
async fn run_phase<F, Fut>(
    phase: &'static str,
    n: usize,
    concurrency: usize,
    op: F,
) -> anyhow::Result<PhaseStats>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let workers = concurrency.clamp(1, n.max(1));
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for _ in 0..workers {
        let op = op.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(n / workers + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(latencies);
                }
                let t = Instant::now();
                op(i).await.with_context(|| format!("{phase} #{i}"))?;
                latencies.push(t.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(n);
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result.context("a workload task panicked")??);
    }
    Ok(PhaseStats::new(phase, latencies, start.elapsed()))
}

/// What is read before and after each phase.
pub struct Probe<C> {
    /// The cumulative CPU time of the server's processes (one entry per
    /// part, e.g. router and shards).
    pub cpu: C,
    /// The STE router's `/metrics`, for where a request's time goes.
    pub router_metrics: Option<SocketAddr>,
}

impl<C> Probe<C> {
    /// The router's totals; a failed scrape is reported and skipped (the
    /// phase's own figures do not depend on it).
    async fn router_totals(&self) -> Option<router_metrics::Totals> {
        let addr = self.router_metrics?;
        match router_metrics::scrape(addr).await {
            Ok(totals) => Some(totals),
            Err(e) => {
                eprintln!("ste-bench: warning: router metrics: {e:#}");
                None
            }
        }
    }
}

/// Runs `phase`, recording the CPU the server and this process (the load
/// generator) used meanwhile, and what the router's metrics saw.
async fn measure<C: Fn() -> Vec<Duration>>(
    probe: &Probe<C>,
    phase: impl Future<Output = anyhow::Result<PhaseStats>>,
) -> anyhow::Result<PhaseStats> {
    let router = probe.router_totals().await;
    let server = (probe.cpu)();
    let client = crate::sys::self_cpu();
    let mut stats = phase.await?;
    stats.client_cpu = crate::sys::self_cpu().saturating_sub(client);
    stats.server_cpu = (probe.cpu)()
        .iter()
        .zip(&server)
        .map(|(after, before)| after.saturating_sub(*before))
        .collect();
    if let Some(before) = router {
        stats.router = probe
            .router_totals()
            .await
            .and_then(|after| after.since(&before));
    }
    Ok(stats)
}

/// What one run of the workload against one system gave: the phases that
/// completed, and the error that ended the run early, if one did (a wrong
/// answer, or a request shape the system refuses).
pub struct Outcome {
    /// The phases that completed, in order.
    pub phases: Vec<PhaseStats>,
    /// Why the run stopped before the last phase, if it did.
    pub failure: Option<anyhow::Error>,
}

/// Runs every phase against `client`; `progress` prints one line per phase.
/// `probe` is read before and after each phase, which records the
/// deltas. The first failing phase ends the run; the phases before it are
/// kept.
pub async fn run<C: Fn() -> Vec<Duration>>(
    client: &Client,
    w: &Workload,
    probe: Probe<C>,
    progress: impl Fn(&PhaseStats),
) -> Outcome {
    let mut phases = Vec::new();
    let failure = run_phases(client, w, &probe, &progress, &mut phases)
        .await
        .err();
    Outcome { phases, failure }
}

async fn run_phases<C: Fn() -> Vec<Duration>>(
    client: &Client,
    w: &Workload,
    probe: &Probe<C>,
    progress: &impl Fn(&PhaseStats),
    results: &mut Vec<PhaseStats>,
) -> anyhow::Result<()> {
    let n = w.ops;
    let c = w.concurrency;
    let size = w.value_bytes;
    let ns = w.namespaces;
    let mut kv0 = kv(client);
    let existing = kv0
        .get(
            PREFIX,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?
        .count();
    ensure!(existing == 0, "{existing} keys already under {PREFIX}");

    // Warm-up, not measured: connections, etcd's first allocations, the
    // router's first revisions. Keys outside the measured prefix.
    if w.warmup > 0 {
        let client = client.clone();
        run_phase("warmup", w.warmup, c, move |i| {
            let mut kv = kv(&client);
            async move {
                // The create and delete Txns kube-apiserver sends: kine
                // refuses a plain DeleteRange and any other Txn shape.
                let k = format!("/registry/bench-warmup/{i}");
                let create = Txn::new()
                    .when([Compare::mod_revision(k.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(k.clone(), value(i, 0, size), None)]);
                let resp = kv.txn(create).await?;
                ensure!(resp.succeeded(), "warm-up create of {k} failed");
                let r = write_revision(&resp)?;
                let delete = Txn::new()
                    .when([Compare::mod_revision(k.clone(), CompareOp::Equal, r)])
                    .and_then([TxnOp::delete(k.clone(), None)])
                    .or_else([TxnOp::get(k.clone(), None)]);
                ensure!(
                    kv.txn(delete).await?.succeeded(),
                    "warm-up delete of {k} failed"
                );
                Ok(())
            }
        })
        .await?;
    }

    let revisions: Arc<Vec<AtomicI64>> = Arc::new((0..n).map(|_| AtomicI64::new(0)).collect());

    // create: Txn(If(mod_revision(K) == 0) Then(Put(K, V)))
    let (cl, revs) = (client.clone(), revisions.clone());
    let stats = measure(
        probe,
        run_phase("create", n, c, move |i| {
            let (mut kv, revs) = (kv(&cl), revs.clone());
            async move {
                let k = key(ns, i);
                let txn = Txn::new()
                    .when([Compare::mod_revision(k.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(k.clone(), value(i, 1, size), None)]);
                let resp = kv.txn(txn).await?;
                ensure!(resp.succeeded(), "create of {k}: the key already exists");
                revs[i].store(write_revision(&resp)?, Ordering::Relaxed);
                Ok(())
            }
        }),
    )
    .await?;
    progress(&stats);
    results.push(stats);

    // update: Txn(If(mod_revision(K) == R) Then(Put(K, V')) Else(Get(K)))
    let (cl, revs) = (client.clone(), revisions.clone());
    let stats = measure(
        probe,
        run_phase("update", n, c, move |i| {
            let (mut kv, revs) = (kv(&cl), revs.clone());
            async move {
                let k = key(ns, i);
                let r = revs[i].load(Ordering::Relaxed);
                let txn = Txn::new()
                    .when([Compare::mod_revision(k.clone(), CompareOp::Equal, r)])
                    .and_then([TxnOp::put(k.clone(), value(i, 2, size), None)])
                    .or_else([TxnOp::get(k.clone(), None)]);
                let resp = kv.txn(txn).await?;
                ensure!(
                    resp.succeeded(),
                    "update of {k}: mod_revision is not {r}, the revision its create returned"
                );
                revs[i].store(write_revision(&resp)?, Ordering::Relaxed);
                Ok(())
            }
        }),
    )
    .await?;
    progress(&stats);
    results.push(stats);

    // get: Range(K)
    let (cl, revs) = (client.clone(), revisions.clone());
    let stats = measure(
        probe,
        run_phase("get", n, c, move |i| {
            let (mut kv, revs) = (kv(&cl), revs.clone());
            async move {
                let k = key(ns, i);
                let resp = kv.get(k.clone(), None).await?;
                let Some(got) = resp.kvs().first() else {
                    bail!("get {k}: not found");
                };
                let want = revs[i].load(Ordering::Relaxed);
                ensure!(
                    got.mod_revision() == want && got.value().len() == value(i, 2, size).len(),
                    "get {k}: mod_revision {} (want {want}), {} bytes",
                    got.mod_revision(),
                    got.value().len()
                );
                Ok(())
            }
        }),
    )
    .await?;
    progress(&stats);
    results.push(stats);

    // list: the whole prefix in pages of `page_size`, every page after the
    // first pinned to the first page's revision, as kube-apiserver pages.
    let cl = client.clone();
    let page = w.page_size;
    let stats = measure(
        probe,
        run_phase("list", w.list_repeats, c, move |_| {
            let mut kv = kv(&cl);
            async move {
                let end = prefix_end(PREFIX);
                let mut from = PREFIX.as_bytes().to_vec();
                let mut revision = 0;
                let mut total = 0usize;
                loop {
                    let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
                    if revision > 0 {
                        options = options.with_revision(revision);
                    }
                    let resp = kv.get(from.clone(), Some(options)).await?;
                    if revision == 0 {
                        revision = resp.header().context("Range without a header")?.revision();
                    }
                    total += resp.kvs().len();
                    match resp.kvs().last() {
                        Some(last) if resp.more() => {
                            from = last.key().to_vec();
                            from.push(0);
                        }
                        _ => break,
                    }
                }
                ensure!(total == n, "list returned {total} keys, want {n}");
                Ok(())
            }
        }),
    )
    .await?;
    progress(&stats);
    results.push(stats);

    // delete: Txn(If(mod_revision(K) == R) Then(Delete(K)) Else(Get(K)))
    let (cl, revs) = (client.clone(), revisions.clone());
    let stats = measure(
        probe,
        run_phase("delete", n, c, move |i| {
            let (mut kv, revs) = (kv(&cl), revs.clone());
            async move {
                let k = key(ns, i);
                let r = revs[i].load(Ordering::Relaxed);
                let txn = Txn::new()
                    .when([Compare::mod_revision(k.clone(), CompareOp::Equal, r)])
                    .and_then([TxnOp::delete(k.clone(), None)])
                    .or_else([TxnOp::get(k.clone(), None)]);
                let resp = kv.txn(txn).await?;
                ensure!(
                    resp.succeeded(),
                    "delete of {k}: mod_revision is not {r}, the revision its update returned"
                );
                Ok(())
            }
        }),
    )
    .await?;
    progress(&stats);
    results.push(stats);

    let left = kv0
        .get(
            PREFIX,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?
        .count();
    ensure!(
        left == 0,
        "{left} keys left under {PREFIX} after the delete phase"
    );
    Ok(())
}

/// The end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_requested_size() {
        for size in [0, 1, 10, 80, 81, 82, 83, 100, 4000, 100_000] {
            assert_eq!(value(7, 1, size).len(), size.max(1), "size {size}");
        }
        assert_ne!(value(7, 1, 4000), value(7, 2, 4000));
    }

    #[test]
    fn keys_and_prefix_end() {
        assert_eq!(key(50, 123), "/registry/pods/ns-23/pod-123");
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
    }
}
