//! The router under load and odd clients (issue 12, "bad input and load"):
//! a Range over 10⁵ keys with no limit, 10,000 watchers, clients that open
//! watch streams and never read, 1,000 connections. Each is served (or gets
//! etcd's error), the router stays up, and its memory stays within the bound
//! docs/router.md states. Oversized requests are covered, against a real
//! etcd, by router_malformed's `too_large`.
//!
//! Memory is the router's peak resident set (`VmHWM`, reset through
//! `/proc/PID/clear_refs` before each phase), so a short spike counts.

use std::time::{Duration, Instant};

use etcd_client::{Client, WatchOptions, WatchStream};
use ste_proto::etcd::etcdserverpb::{self as pb, kv_client::KvClient};
use ste_tests::ShardedRouter;
use ste_tests::keys::PODS;
use ste_tests::poll::SLOW;

const MIB: u64 = 1 << 20;

/// Each test loads the machine on its own (10⁵ writes, 10,000 watchers,
/// 1,000 connections) and measures the router's memory: they run one at a
/// time.
/// (tokio's lock: each test has a runtime of its own, and a failed test's
/// guard leaves no poison.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Router flags for every test here: these tests load the router, not the
/// shards, so a shard's status probe answered late on a loaded 2-core
/// machine must not count as the shard being down.
const PATIENT: &[&str] = &["--shard-timeout", "30s"];

/// The router's process, for memory readings.
struct Memory(u32);

impl Memory {
    fn of(cluster: &ShardedRouter) -> anyhow::Result<Self> {
        let pid = cluster
            .router
            .pid()
            .ok_or_else(|| anyhow::anyhow!("the router is not running"))?;
        Ok(Memory(pid))
    }

    /// A field of /proc/PID/status given in kB, in bytes.
    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0))?;
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{}/status", self.0))?;
        let kib: u64 = line
            .trim_start_matches(field)
            .trim_start_matches(':')
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kib * 1024)
    }

    /// Resets the peak to the current resident set; returns that.
    fn start_phase(&self) -> anyhow::Result<u64> {
        std::fs::write(format!("/proc/{}/clear_refs", self.0), "5")?;
        self.status_kib("VmRSS")
    }

    /// The peak resident set since [`Memory::start_phase`].
    fn peak(&self) -> anyhow::Result<u64> {
        self.status_kib("VmHWM")
    }

    /// Fails if the peak grew more than `bound` over `base`; prints both.
    fn check(&self, what: &str, base: u64, bound: u64) -> anyhow::Result<()> {
        let peak = self.peak()?;
        let grown = peak.saturating_sub(base);
        println!(
            "{what}: router RSS {} MiB before, peak {} MiB (+{} MiB, bound +{} MiB)",
            base / MIB,
            peak / MIB,
            grown / MIB,
            bound / MIB
        );
        anyhow::ensure!(
            grown <= bound,
            "{what}: the router's peak RSS grew by {} MiB, over the bound of {} MiB",
            grown / MIB,
            bound / MIB
        );
        Ok(())
    }
}

fn key(prefix: &str, i: usize) -> String {
    format!("{PODS}{prefix}/pod-{i:06}")
}

/// Puts `count` keys under `{PODS}{prefix}/` with `value_bytes` values,
/// from `writers` concurrent clients; returns the last revision.
async fn fill(
    endpoint: &str,
    prefix: &str,
    count: usize,
    value_bytes: usize,
    writers: usize,
) -> anyhow::Result<i64> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let endpoint = endpoint.to_owned();
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect([endpoint], None).await?;
            let value = vec![b'v'; value_bytes];
            let mut last = 0;
            for i in (w..count).step_by(writers) {
                let response = client.put(key(&prefix, i), value.clone(), None).await?;
                last = response.header().map(|h| h.revision()).unwrap_or(0);
            }
            anyhow::Ok(last)
        }));
    }
    let mut last = 0;
    for task in tasks {
        last = last.max(task.await??);
    }
    Ok(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_range_over_100k_keys_without_limit_is_served() -> anyhow::Result<()> {
    const KEYS: usize = 100_000;
    const VALUE: usize = 100;
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = ShardedRouter::start(3, PATIENT).await?;
    let endpoint = cluster.router.endpoint();
    let started = Instant::now();
    fill(&endpoint, "big", KEYS, VALUE, 16).await?;
    println!("wrote {KEYS} keys in {:?}", started.elapsed());

    let memory = Memory::of(&cluster)?;
    let base = memory.start_phase()?;
    // kube-apiserver's etcd client takes answers of any size; etcd-client's
    // default would refuse this one (4 MiB).
    let mut kv = raw_kv(&endpoint).await?;
    let all = kv.range(prefix_range("big", false)).await?.into_inner();
    anyhow::ensure!(all.count == KEYS as i64, "count {}", all.count);
    anyhow::ensure!(all.kvs.len() == KEYS, "{} kvs", all.kvs.len());
    anyhow::ensure!(!all.more, "an unlimited range says more");
    let sorted = all.kvs.windows(2).all(|w| w[0].key < w[1].key);
    anyhow::ensure!(sorted, "the kvs are not in key order");
    anyhow::ensure!(all.kvs.iter().all(|kv| kv.value.len() == VALUE));
    println!(
        "answer: {} MiB",
        prost::Message::encoded_len(&all) as u64 / MIB
    );
    drop(all);
    // The answer is 13 MiB; the router holds the shards' answers, the
    // merged answer and its encoding at once: measured +65 MiB, five times
    // the answer.
    memory.check("unlimited range over 10^5 keys", base, 160 * MIB)?;

    let counted = kv.range(prefix_range("big", true)).await?.into_inner();
    anyhow::ensure!(counted.count == KEYS as i64 && counted.kvs.is_empty());
    Ok(())
}

/// A raw KV client of the router that decodes answers of any size, as
/// kube-apiserver's etcd client does (`MaxCallRecvMsgSize` = 2 GiB).
async fn raw_kv(endpoint: &str) -> anyhow::Result<KvClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(120))
        .connect()
        .await?;
    Ok(KvClient::new(channel).max_decoding_message_size(usize::MAX))
}

/// A Range over every key under `{PODS}{prefix}/`, no limit.
fn prefix_range(prefix: &str, count_only: bool) -> pb::RangeRequest {
    let key = format!("{PODS}{prefix}/").into_bytes();
    let mut range_end = key.clone();
    *range_end.last_mut().expect("a prefix") += 1;
    pb::RangeRequest {
        key,
        range_end,
        count_only,
        ..Default::default()
    }
}

/// Collects `want` events from `stream`, failing on a cancel, an end or the
/// deadline.
async fn events(stream: &mut WatchStream, want: usize) -> anyhow::Result<Vec<(i64, Vec<u8>)>> {
    let mut seen = Vec::new();
    tokio::time::timeout(SLOW, async {
        while seen.len() < want {
            let Some(response) = stream.message().await? else {
                anyhow::bail!("the watch stream ended after {} events", seen.len());
            };
            anyhow::ensure!(
                !response.canceled(),
                "watch canceled: {}",
                response.cancel_reason()
            );
            for event in response.events() {
                let kv = event
                    .kv()
                    .ok_or_else(|| anyhow::anyhow!("event without kv"))?;
                seen.push((kv.mod_revision(), kv.key().to_vec()));
            }
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("{} of {want} events before the deadline", seen.len()))??;
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_watchers_all_hear_every_write() -> anyhow::Result<()> {
    const CLIENTS: usize = 10;
    const STREAMS_PER_CLIENT: usize = 10;
    const WATCHERS_PER_STREAM: usize = 100;
    const WRITES: usize = 5;
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = ShardedRouter::start(3, PATIENT).await?;
    let endpoint = cluster.router.endpoint();
    let memory = Memory::of(&cluster)?;
    let base = memory.start_phase()?;
    let prefix = format!("{PODS}watched/");
    let mut streams = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = Client::connect([endpoint.clone()], None).await?;
        for _ in 0..STREAMS_PER_CLIENT {
            let options = || WatchOptions::new().with_prefix();
            let mut stream = client.watch(prefix.as_str(), Some(options())).await?;
            for _ in 1..WATCHERS_PER_STREAM {
                stream.watch(prefix.as_str(), Some(options())).await?;
            }
            streams.push(stream);
        }
    }
    // Every create is answered before the writes, so no watcher can start
    // after one of them.
    for stream in &mut streams {
        let mut created = 0;
        while created < WATCHERS_PER_STREAM {
            let response = tokio::time::timeout(SLOW, stream.message())
                .await?
                .map_err(anyhow::Error::from)?
                .ok_or_else(|| anyhow::anyhow!("a watch stream ended"))?;
            anyhow::ensure!(!response.canceled(), "{}", response.cancel_reason());
            created += usize::from(response.created());
        }
    }
    println!(
        "{} watchers on {} streams over {CLIENTS} connections",
        CLIENTS * STREAMS_PER_CLIENT * WATCHERS_PER_STREAM,
        streams.len()
    );
    let mut writer = Client::connect([endpoint], None).await?;
    let mut revisions = Vec::new();
    for i in 0..WRITES {
        let response = writer.put(format!("{prefix}pod-{i}"), "v", None).await?;
        revisions.push(response.header().map(|h| h.revision()).unwrap_or(0));
    }
    for stream in &mut streams {
        let seen = events(stream, WRITES * WATCHERS_PER_STREAM).await?;
        // Each revision once per watcher, in revision order per watcher:
        // responses of one revision may interleave watchers, so count.
        for revision in &revisions {
            let n = seen.iter().filter(|(r, _)| r == revision).count();
            anyhow::ensure!(
                n == WATCHERS_PER_STREAM,
                "revision {revision} reached {n} of {WATCHERS_PER_STREAM} watchers on a stream"
            );
        }
    }
    // Measured +8 MiB for the 10,000 watchers: a watcher is a few hundred
    // bytes of state; the streams' buffers are nearly empty.
    memory.check("10,000 watchers", base, 200 * MIB)?;
    Ok(())
}

/// The oldest revision the router's event log still holds under `prefix`:
/// where a watch from revision 1 is told the history was compacted.
async fn oldest_in_log(client: &mut Client, prefix: &str) -> anyhow::Result<i64> {
    let mut probe = ste_tests::watch::prefix_from(client, prefix, 1).await?;
    let cancel = ste_tests::watch::until_canceled(&mut probe, SLOW).await?;
    anyhow::ensure!(cancel.compact_revision() > 0, "{}", cancel.cancel_reason());
    Ok(cancel.compact_revision())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_never_read_cost_bounded_memory() -> anyhow::Result<()> {
    const STALLED: usize = 10;
    const WRITES: usize = 2_400;
    const VALUE: usize = 20 << 10;
    const EVENT_LOG: u64 = 40 * MIB;
    let event_log = EVENT_LOG.to_string();
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster =
        ShardedRouter::start(3, &[PATIENT, &["--event-log-bytes", &event_log]].concat()).await?;
    let endpoint = cluster.router.endpoint();
    let prefix = format!("{PODS}stalled/");
    let memory = Memory::of(&cluster)?;
    fill(&endpoint, "stalled", WRITES, VALUE, 8).await?;
    let mut client = Client::connect([endpoint.clone()], None).await?;
    let from = oldest_in_log(&mut client, &prefix).await?;
    let backlog = WRITES - from as usize + 1;
    println!(
        "wrote {} MiB of events; the log holds the last {backlog}",
        (WRITES * VALUE) as u64 / MIB
    );

    // Each stalled client has a connection of its own (HTTP/2 flow control
    // is per connection too) and a watch on the whole log, which the router
    // sends in responses of up to 1 MiB: all of it is ready for them at once.
    let base = memory.start_phase()?;
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut client = Client::connect([endpoint.clone()], None).await?;
        let stream = ste_tests::watch::prefix_from(&mut client, &prefix, from).await?;
        stalled.push((client, stream));
    }
    // A client that reads, started last, gets the whole backlog meanwhile.
    let mut reader = ste_tests::watch::prefix_from(&mut client, &prefix, from).await?;
    let seen = events(&mut reader, backlog).await?;
    let in_order = seen.windows(2).all(|w| w[0].0 < w[1].0);
    anyhow::ensure!(in_order, "the reading watcher saw events out of order");
    // Per stalled stream: the page of the log being sent (about 1 MiB), the
    // outbox (4 responses of at most 1 MiB), the response being encoded and
    // what HTTP/2 flow control lets through; measured about 10 MiB, whatever
    // the backlog. When a stream copied its whole backlog at once, each
    // held over 40 MiB here.
    let bound = STALLED as u64 * 16 * MIB + 32 * MIB;
    memory.check("10 stalled watch streams", base, bound)?;

    // A stalled client that starts reading gets every event from `from` in
    // order, or is canceled as compacted (the log dropped what it had not
    // been sent): never a gap or a repeat.
    let (_client, mut stream) = stalled.pop().expect("stalled streams");
    let seen = events(&mut stream, backlog).await?;
    anyhow::ensure!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    anyhow::ensure!(seen.first().map(|e| e.0) == Some(from));
    let mut probe = Client::connect([endpoint], None).await?;
    probe.get("health", None).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_connections_are_served() -> anyhow::Result<()> {
    const CONNECTIONS: usize = 1_000;
    // This test's own end of the connections needs descriptors too.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)?;
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = ShardedRouter::start(3, PATIENT).await?;
    let endpoint = cluster.router.endpoint();
    let mut writer = Client::connect([endpoint.clone()], None).await?;
    writer.put(format!("{PODS}conn/pod-0"), "v", None).await?;
    let memory = Memory::of(&cluster)?;
    let base = memory.start_phase()?;

    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            // A channel of its own each: one TCP connection per client.
            let channel = tonic::transport::Endpoint::from_shared(endpoint)?
                .connect_timeout(Duration::from_secs(30))
                .timeout(Duration::from_secs(60))
                .connect()
                .await?;
            let mut kv = KvClient::new(channel.clone());
            let response = kv
                .range(pb::RangeRequest {
                    key: format!("{PODS}conn/pod-0").into_bytes(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            anyhow::ensure!(response.kvs.len() == 1, "{} kvs", response.kvs.len());
            anyhow::Ok(channel)
        }));
    }
    let mut open = Vec::new();
    for task in tasks {
        open.push(task.await??);
    }
    // All of them open at once, and the router still serves a newcomer.
    let mut newcomer = Client::connect([endpoint], None).await?;
    newcomer.get(format!("{PODS}conn/pod-0"), None).await?;
    // Measured +49 to +66 MiB for 1,000 connections (about 60 KiB each:
    // HTTP/2 buffers and the connection's task).
    memory.check("1,000 connections", base, 128 * MIB)?;
    drop(open);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_range_answer_over_64_mib_is_refused_and_paging_serves_it() -> anyhow::Result<()> {
    const KEYS: usize = 80;
    const VALUE: usize = 1 << 20;
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = ShardedRouter::start(3, PATIENT).await?;
    let endpoint = cluster.router.endpoint();
    fill(&endpoint, "huge", KEYS, VALUE, 4).await?;
    let mut kv = raw_kv(&endpoint).await?;
    // 80 MiB in one answer: over the router's bound (etcd would send it).
    let refused = kv
        .range(prefix_range("huge", false))
        .await
        .expect_err("an 80 MiB answer");
    println!("refused: {:?}: {}", refused.code(), refused.message());
    anyhow::ensure!(refused.code() == tonic::Code::OutOfRange);
    anyhow::ensure!(refused.message().contains("limit"), "{}", refused.message());
    // Nothing broke: every shard is healthy and the same keys come in pages.
    let status = cluster.router.status().await?;
    anyhow::ensure!(
        status.members.iter().all(|m| m.last_error.is_empty()),
        "{status:?}"
    );
    let mut request = prefix_range("huge", false);
    request.limit = 20;
    let mut listed = 0;
    loop {
        let page = kv.range(request.clone()).await?.into_inner();
        listed += page.kvs.len();
        let Some(last) = page.kvs.last() else { break };
        if !page.more {
            break;
        }
        request.key = [last.key.as_slice(), b"\0"].concat();
    }
    anyhow::ensure!(listed == KEYS, "paged {listed} of {KEYS} keys");
    Ok(())
}
