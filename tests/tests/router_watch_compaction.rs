//! A watch from the compaction revision itself gets that revision's events
//! without prev_kv, as from etcd: etcd reads prev_kv at the revision before
//! the event, and compaction removed it. Found by kube-apiserver's storage
//! suite (e2e/storage, WatchFromZero): a kube watch from the
//! resourceVersion just below the compaction must fail (etcd: an event
//! without prev_kv, which kube-apiserver rejects) instead of streaming on.

use std::time::Duration;

use etcd_client::{Event, WatchOptions, WatchResponse, WatchStream};
use ste_tests::ShardedRouter;

const DEADLINE: Duration = Duration::from_secs(30);

async fn next_message(stream: &mut WatchStream) -> anyhow::Result<WatchResponse> {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .map_err(|_| anyhow::anyhow!("no watch response within {DEADLINE:?}"))??
        .ok_or_else(|| anyhow::anyhow!("the watch stream ended"))
}

async fn next_event(stream: &mut WatchStream) -> anyhow::Result<Event> {
    loop {
        let message = next_message(stream).await?;
        anyhow::ensure!(!message.canceled(), "watch canceled: {message:?}");
        if let Some(event) = message.events().first() {
            return Ok(event.clone());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_the_compaction_revision_has_no_prev_kv() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let mut client = cluster.router.client().await?;
    let key = "/registry/pods/default/web-0";
    let mut revisions = Vec::new();
    for value in ["1", "2", "3"] {
        let put = client.put(key, value, None).await?;
        revisions.push(put.header().expect("a header").revision());
    }
    let compaction = revisions[2];
    client.compact(compaction, None).await?;

    let from = |revision| {
        Some(
            WatchOptions::new()
                .with_start_revision(revision)
                .with_prev_key(),
        )
    };
    let mut stream = client.watch(key, from(compaction)).await?;
    let event = next_event(&mut stream).await?;
    assert_eq!(event.kv().map(|kv| kv.mod_revision()), Some(compaction));
    assert!(
        event.prev_kv().is_none(),
        "the event at the compaction revision came with prev_kv: {event:?}"
    );

    // Later events have their prev_kv.
    client.put(key, "4", None).await?;
    let event = next_event(&mut stream).await?;
    assert_eq!(event.prev_kv().map(|kv| kv.value()), Some(&b"3"[..]));

    // Below the compaction revision: the compacted error.
    let mut old = client.watch(key, from(revisions[1])).await?;
    loop {
        let message = next_message(&mut old).await?;
        assert!(
            message.events().is_empty(),
            "events from a compacted start: {message:?}"
        );
        if message.canceled() {
            assert_eq!(message.compact_revision(), compaction);
            break;
        }
    }
    Ok(())
}
