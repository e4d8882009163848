//! kill -9 of the router under write load, then a restart: nothing
//! acknowledged is lost or renumbered, revisions keep growing, and a watch
//! resuming after the last seen revision never silently misses an event.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::GetOptions;
use ste_tests::ShardedRouter;
use ste_tests::keys::PODS;
use ste_tests::watch::{first_answer, prefix_from};

#[derive(Debug, Clone)]
struct Attempt {
    /// The test's phase when the write was sent, and when its answer came:
    /// 0 before the kill, 1 from the kill until the new router serves, 2
    /// after. Answered in phase 0: served by the first process; sent in
    /// phase 2: served by the second. Writes in between are ambiguous and
    /// only checked for loss.
    sent: usize,
    answered: usize,
    key: String,
    value: String,
    /// The acknowledged revision; None if the answer never came.
    revision: Option<i64>,
}

async fn writer(
    endpoint: String,
    id: usize,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let mut n = 0;
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(5));
    let mut client = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            match etcd_client::Client::connect([endpoint.clone()], Some(options.clone())).await {
                Ok(c) => client = Some(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let sent_in = phase.load(Ordering::SeqCst);
        n += 1;
        // Every write creates its own key, so each acknowledged write stays
        // readable with its revision.
        let key = format!("/registry/pods/w{id}/pod-{n:06}");
        let value = format!("w{id}-{n}");
        let revision = match c.put(key.clone(), value.clone(), None).await {
            Ok(response) => {
                acked.fetch_add(1, Ordering::Relaxed);
                response.header().map(|h| h.revision())
            }
            Err(_) => {
                client = None;
                None
            }
        };
        attempts.lock().unwrap().push(Attempt {
            sent: sent_in,
            answered: phase.load(Ordering::SeqCst),
            key,
            value,
            revision,
        });
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_a_router_kill() -> anyhow::Result<()> {
    let mut cluster = ShardedRouter::start(3, &["--revision-block", "100"]).await?;
    let endpoint = cluster.router.endpoint();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|id| {
            tokio::spawn(writer(
                endpoint.clone(),
                id,
                attempts.clone(),
                acked.clone(),
                stop.clone(),
                phase.clone(),
            ))
        })
        .collect();
    let wait_acked = |n: usize| {
        let acked = acked.clone();
        ste_tests::eventually("acknowledged writes", Duration::from_secs(120), move || {
            let acked = acked.clone();
            async move {
                let got = acked.load(Ordering::Relaxed);
                if got >= n {
                    Ok(())
                } else {
                    Err(format!("{got} of {n}"))
                }
            }
        })
    };
    // Past the first reserved block of 100, so the restart has to skip
    // revisions that were reserved but never used.
    wait_acked(300).await?;
    phase.store(1, Ordering::SeqCst);
    cluster.router.kill9();
    cluster.router.restart().await?;
    phase.store(2, Ordering::SeqCst);
    wait_acked(acked.load(Ordering::Relaxed) + 200).await?;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await??;
    }
    let attempts = attempts.lock().unwrap().clone();
    let last_before = attempts
        .iter()
        .filter(|a| a.answered == 0)
        .filter_map(|a| a.revision)
        .max()
        .unwrap_or(0);

    let mut client = cluster.router.client().await?;
    let all = client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await?;
    let stored: std::collections::HashMap<String, (i64, String)> = all
        .kvs()
        .iter()
        .map(|kv| {
            Ok((
                kv.key_str()?.to_owned(),
                (kv.mod_revision(), kv.value_str()?.to_owned()),
            ))
        })
        .collect::<Result<_, etcd_client::Error>>()?;
    for attempt in &attempts {
        match (attempt.revision, stored.get(&attempt.key)) {
            (Some(revision), Some((stored_revision, value))) => {
                assert_eq!(
                    *stored_revision, revision,
                    "{}: revision changed",
                    attempt.key
                );
                assert_eq!(value, &attempt.value);
            }
            (Some(revision), None) => panic!("{} acknowledged at {revision} but lost", attempt.key),
            // An unanswered write may or may not have happened, but if it
            // did, it is whole.
            (None, Some((_, value))) => assert_eq!(value, &attempt.value),
            (None, None) => {}
        }
    }
    let after: Vec<i64> = attempts
        .iter()
        .filter(|a| a.sent == 2)
        .filter_map(|a| a.revision)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|r| *r > last_before),
        "a revision after the restart is not above {last_before}"
    );

    // A watch resuming right after the last revision seen before the kill:
    // either it delivers exactly the acknowledged writes since, or it says
    // the history is gone (compacted) so the client relists.
    let mut stream = prefix_from(&mut client, PODS, last_before + 1).await?;
    let mut expected: Vec<(i64, String)> = attempts
        .iter()
        .filter_map(|a| {
            a.revision
                .filter(|r| *r > last_before)
                .map(|r| (r, a.key.clone()))
        })
        .collect();
    expected.sort();
    let mut events = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(response) = stream.message().await? {
            if response.canceled() {
                return anyhow::Ok(Some(response.compact_revision()));
            }
            for event in response.events() {
                if let Some(kv) = event.kv() {
                    events.push((kv.mod_revision(), kv.key_str()?.to_owned()));
                }
            }
            if events.len() >= expected.len() && !expected.is_empty() {
                return Ok(None);
            }
        }
        anyhow::bail!("watch stream ended")
    })
    .await??;
    match outcome {
        Some(compact_revision) => assert!(
            compact_revision > last_before,
            "compacted at {compact_revision}, which does not explain missing {}",
            last_before + 1
        ),
        None => {
            // Unanswered writes that applied show up too; acknowledged ones
            // must all be there, in order.
            let acked_events: Vec<(i64, String)> = events
                .iter()
                .filter(|e| expected.contains(e))
                .cloned()
                .collect();
            assert_eq!(acked_events, expected);
            assert!(events.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
    Ok(())
}

/// The same guarantees with the state kept in a (control-plane) etcd: a
/// router started elsewhere, with no --member flags and no state file,
/// takes over the ring and continues the revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_in_etcd_lets_another_router_take_over() -> anyhow::Result<()> {
    let control_plane = ste_tests::TestEtcd::start("control-plane").await?;
    let mut cluster = ShardedRouter::start(
        3,
        &["--state-etcd", &control_plane.url, "--revision-block", "50"],
    )
    .await?;
    let mut client = cluster.router.client().await?;
    let mut written = Vec::new();
    for i in 0..120 {
        let key = format!("/registry/pods/default/pod-{i}");
        let response = client.put(key.clone(), format!("v{i}"), None).await?;
        written.push((
            key,
            response.header().map(|h| h.revision()).unwrap_or_default(),
        ));
    }
    let last = written.last().map(|w| w.1).unwrap_or_default();
    cluster.router.kill9();

    // Another router: no members on the command line, no state file.
    let successor =
        ste_tests::TestRouter::start(&[], &["--state-etcd", &control_plane.url]).await?;
    let mut client = successor.client().await?;
    for (key, revision) in &written {
        let got = client.get(key.as_str(), None).await?;
        assert_eq!(
            got.kvs().first().map(|kv| kv.mod_revision()),
            Some(*revision),
            "{key}"
        );
    }
    // No history survives the takeover: resuming after the last revision
    // seen before it is refused as compacted. But a client that reads at
    // the new router's revision may watch from it — kube-apiserver's
    // compactor reads compact_rev_key and watches from the read's revision
    // (on a quiet cluster it would otherwise get the compacted error every
    // second).
    let mut resumed = prefix_from(&mut client, PODS, last + 1).await?;
    let refused = first_answer(&mut resumed, Duration::from_secs(30)).await?;
    assert!(
        refused.canceled() && refused.compact_revision() > last,
        "{refused:?}"
    );
    let read = client
        .get(
            PODS,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or_default();
    let mut fresh = prefix_from(&mut client, PODS, read).await?;
    let next = client
        .put("/registry/pods/default/after", "x", None)
        .await?;
    let next = next.header().map(|h| h.revision()).unwrap_or_default();
    let seen = first_answer(&mut fresh, Duration::from_secs(30)).await?;
    assert!(
        !seen.canceled() && seen.events().len() == 1,
        "a watch from revision {read}, read from the new router, must be served: {seen:?}"
    );
    assert!(
        next > last,
        "revision {next} after the takeover is not above {last}"
    );
    let ring = successor
        .admin()
        .await?
        .get_ring(ste_proto::v1::GetRingRequest {})
        .await?
        .into_inner();
    assert_eq!(ring.members.len(), 3);
    let stored = control_plane
        .client()
        .await?
        .get("/ste/router/state", None)
        .await?;
    assert!(stored.kvs()[0].value_str()?.contains("reserved_revision"));
    Ok(())
}

/// `--member` flags are the operator's word on the ring, and the later one:
/// a router started with flags that name a node an earlier `ring leave` held
/// out makes it a member as they say, warns, and forgets the hold, so the
/// state file no longer contradicts the ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_flags_take_back_a_node_an_operator_held_out() -> anyhow::Result<()> {
    let mut cluster = ShardedRouter::start(2, &[]).await?;
    let mut admin = cluster.router.admin().await?;
    ste_tests::ring::leave(&mut admin, "shard-b").await?;
    let state = std::fs::read_to_string(cluster.router.state_file())?;
    assert!(state.contains("held_out shard-b\n"), "{state}");

    cluster.router.restart().await?;
    let status = cluster.router.status().await?;
    let members: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(members, ["shard-a", "shard-b"]);
    let state = std::fs::read_to_string(cluster.router.state_file())?;
    assert!(!state.contains("held_out"), "{state}");
    let log = cluster.router.log();
    assert!(log.contains("no longer held out"), "{log}");
    Ok(())
}
