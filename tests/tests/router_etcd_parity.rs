//! Places where the router once answered unlike etcd, each checked side by
//! side with a real etcd: ranged deletes over more keys than a shard takes
//! in one Txn, a failing shard in the middle of a multi-shard delete, lease
//! revoke and expiry at one revision, request size limits and codes, and
//! the headers nested in a Txn response.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchStream,
};
use ste_tests::keys::count_under;
use ste_tests::poll::SLOW;
use ste_tests::watch::prefix_from;
use ste_tests::{ShardedRouter, TestEtcd, eventually};

const PREFIX: &str = "/registry/pods/d3/";
const KEYS: usize = 400;

/// Every shard and the reference etcd run with etcd's default Txn limit,
/// given explicitly.
fn max_txn_ops(ops: u32) -> Vec<String> {
    vec![format!("--max-txn-ops={ops}")]
}

async fn put_keys(client: &mut Client) -> anyhow::Result<()> {
    for i in 0..KEYS {
        client
            .put(format!("{PREFIX}k{i:03}"), format!("value-{i}"), None)
            .await?;
    }
    Ok(())
}

async fn current_revision(client: &mut Client) -> anyhow::Result<i64> {
    let response = client
        .get("/", Some(GetOptions::new().with_count_only()))
        .await?;
    Ok(response.header().map(|h| h.revision()).unwrap_or_default())
}

/// Collects events from `stream` until `want` have arrived or `timeout`.
async fn collect_events(
    stream: &mut WatchStream,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<(EventType, String, i64)>> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while events.len() < want {
        let Ok(message) = tokio::time::timeout_at(deadline, stream.message()).await else {
            break;
        };
        let Some(response) = message? else { break };
        anyhow::ensure!(
            !response.canceled(),
            "watch canceled: {}",
            response.cancel_reason()
        );
        for event in response.events() {
            let kv = event.kv().expect("events carry their key");
            events.push((
                event.event_type(),
                kv.key_str()?.to_owned(),
                kv.mod_revision(),
            ));
        }
    }
    Ok(events)
}

/// What a prefix delete of 400 keys did, as a client sees it.
#[derive(Debug, PartialEq)]
struct RangeDeleteSeen {
    deleted: i64,
    prev_kvs: usize,
    /// The response's revision minus the revision before the delete.
    revision_step: i64,
    delete_events: usize,
    distinct_event_revisions: usize,
    left: i64,
}

async fn delete_prefix_and_watch(client: &mut Client) -> anyhow::Result<RangeDeleteSeen> {
    put_keys(client).await?;
    let before = current_revision(client).await?;
    let mut stream = prefix_from(client, PREFIX, before + 1).await?;
    let response = client
        .delete(
            PREFIX,
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await?;
    let events = collect_events(&mut stream, KEYS, SLOW).await?;
    let left = count_under(client, PREFIX).await?;
    Ok(RangeDeleteSeen {
        deleted: response.deleted(),
        prev_kvs: response.prev_kvs().len(),
        revision_step: response.header().map(|h| h.revision()).unwrap_or_default() - before,
        delete_events: events
            .iter()
            .filter(|(t, _, _)| *t == EventType::Delete)
            .count(),
        distinct_event_revisions: events
            .iter()
            .map(|(_, _, r)| *r)
            .collect::<BTreeSet<_>>()
            .len(),
        left,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_delete_over_more_keys_than_a_shard_txn_takes_is_one_revision() -> anyhow::Result<()>
{
    let etcd = TestEtcd::start_with_args("reference", max_txn_ops(128)).await?;
    let expected = delete_prefix_and_watch(&mut etcd.client().await?).await?;
    assert_eq!(
        expected,
        RangeDeleteSeen {
            deleted: KEYS as i64,
            prev_kvs: KEYS,
            revision_step: 1,
            delete_events: KEYS,
            distinct_event_revisions: 1,
            left: 0,
        },
        "etcd itself"
    );

    // Three shards of ~133 keys each: more than one Txn of 128 per shard.
    let cluster =
        ShardedRouter::start_with(3, |_| max_txn_ops(128), &["--shard-max-txn-ops", "128"]).await?;
    let seen = delete_prefix_and_watch(&mut cluster.router.client().await?).await?;
    assert_eq!(seen, expected, "the router answers like etcd");
    for shard in &cluster.shards {
        let held = shard.count_under(PREFIX).await?;
        assert_eq!(held, 0, "{} still holds keys", shard.name);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_failing_in_the_middle_of_a_multi_shard_delete_leaves_nothing_deleted()
-> anyhow::Result<()> {
    // shard-b takes Txns of 64 operations only, while the router sends up
    // to 128: its part fails (etcd's "too many operations in txn request")
    // while the other two shards apply theirs, which must then be undone.
    let cluster = ShardedRouter::start_with(
        3,
        |i| max_txn_ops(if i == 1 { 64 } else { 128 }),
        &["--shard-max-txn-ops", "128"],
    )
    .await?;
    let mut client = cluster.router.client().await?;
    put_keys(&mut client).await?;
    let before = client
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(before.count(), KEYS as i64);
    let revision_before = current_revision(&mut client).await?;
    let mut stream = prefix_from(&mut client, PREFIX, revision_before + 1).await?;

    let error = client
        .delete(
            PREFIX,
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect_err("the delete fails on shard-b");
    let text = error.to_string();
    assert!(
        text.contains("too many operations in txn request"),
        "the shard's reason is passed on: {text}"
    );
    assert!(
        text.contains("nothing was deleted"),
        "the reply says what happened: {text}"
    );

    // Every key is still there, unchanged, on the shard it was on; a later
    // write still works (the fences of the restored keys are right).
    let after = client
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(after.count(), KEYS as i64);
    for (a, b) in before.kvs().iter().zip(after.kvs()) {
        assert_eq!(
            (
                a.key(),
                a.value(),
                a.create_revision(),
                a.mod_revision(),
                a.version()
            ),
            (
                b.key(),
                b.value(),
                b.create_revision(),
                b.mod_revision(),
                b.version()
            )
        );
    }
    let mut on_shards = 0;
    for shard in &cluster.shards {
        on_shards += shard.count_under(PREFIX).await?;
    }
    assert_eq!(on_shards, KEYS as i64, "the shards hold every key again");
    let put = client
        .put(format!("{PREFIX}k000"), "after", None)
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or_default();

    // The watcher saw no DELETE: its first event is the put after.
    let events = collect_events(&mut stream, 1, SLOW).await?;
    assert_eq!(
        events,
        vec![(EventType::Put, format!("{PREFIX}k000"), put)],
        "no partial delete reached the watcher"
    );

    // A second try fails the same way, again as a whole.
    let response = client
        .delete(PREFIX, Some(DeleteOptions::new().with_prefix()))
        .await;
    assert!(
        response.is_err(),
        "shard-b still refuses 128-op Txns, so the delete fails again as a whole"
    );
    assert_eq!(count_under(&mut client, PREFIX).await?, KEYS as i64);
    Ok(())
}

/// Revokes a lease holding two keys; returns (revision before, revoke's
/// header revision, the events' revisions).
async fn revoke_two_keys(client: &mut Client) -> anyhow::Result<(i64, i64, Vec<i64>)> {
    let lease = client.lease_grant(60, None).await?.id();
    for key in ["a", "b"] {
        client
            .put(
                format!("/registry/leases/{key}"),
                key,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
    }
    let before = current_revision(client).await?;
    let mut stream = prefix_from(client, "/registry/leases/", before + 1).await?;
    let revoked = client
        .lease_revoke(lease)
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or_default();
    let events = collect_events(&mut stream, 2, SLOW).await?;
    Ok((
        before,
        revoked,
        events.into_iter().map(|(_, _, r)| r).collect(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_revoke_deletes_its_keys_at_one_revision() -> anyhow::Result<()> {
    let etcd = TestEtcd::start("reference").await?;
    let (before, revoked, events) = revoke_two_keys(&mut etcd.client().await?).await?;
    assert_eq!(
        (revoked, events),
        (before + 1, vec![before + 1, before + 1]),
        "etcd"
    );

    let cluster = ShardedRouter::start(3, &[]).await?;
    let (before, revoked, events) = revoke_two_keys(&mut cluster.router.client().await?).await?;
    assert_eq!(
        (revoked, events),
        (before + 1, vec![before + 1, before + 1]),
        "the router"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_deletes_its_keys_at_one_revision() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let mut client = cluster.router.client().await?;
    // Keys spread over the shards, so the expiry is a multi-shard delete.
    let lease = client.lease_grant(1, None).await?.id();
    let keys: Vec<String> = (0..12).map(|i| format!("/registry/events/e{i}")).collect();
    for key in &keys {
        client
            .put(key.as_str(), "x", Some(PutOptions::new().with_lease(lease)))
            .await?;
    }
    let before = current_revision(&mut client).await?;
    let mut stream = prefix_from(&mut client, "/registry/events/", before + 1).await?;
    let events = collect_events(&mut stream, keys.len(), Duration::from_secs(30)).await?;
    assert_eq!(events.len(), keys.len(), "every key expired: {events:?}");
    assert!(
        events
            .iter()
            .all(|(t, _, r)| *t == EventType::Delete && *r == before + 1),
        "all deleted at revision {}: {events:?}",
        before + 1
    );
    let left = eventually("the expired keys to be gone", SLOW, || {
        let mut client = client.clone();
        async move {
            let n = count_under(&mut client, "/registry/events/")
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                Ok(n)
            } else {
                Err(format!("{n} left"))
            }
        }
    })
    .await?;
    assert_eq!(left, 0);
    Ok(())
}

/// The gRPC code and message a Put of `bytes` bytes gets (Ok for success).
async fn put_of_size(client: &mut Client, bytes: usize) -> (tonic::Code, String) {
    match client
        .put("/registry/pods/default/big", vec![b'x'; bytes], None)
        .await
    {
        Ok(_) => (tonic::Code::Ok, String::new()),
        Err(etcd_client::Error::GRpcStatus(status)) => (status.code(), status.message().to_owned()),
        Err(other) => (tonic::Code::Unknown, other.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_size_limits_and_codes_are_etcds() -> anyhow::Result<()> {
    let etcd = TestEtcd::start("reference").await?;
    let cluster = ShardedRouter::start(3, &[]).await?;
    let mut reference = etcd.client().await?;
    let mut router = cluster.router.client().await?;
    // Below 1.5 MiB: accepted. Between 1.5 MiB and 2 MiB: etcd's own
    // "request is too large". Above 2 MiB: gRPC's message limit.
    for (bytes, code) in [
        (1_400_000, tonic::Code::Ok),
        (1_700_000, tonic::Code::InvalidArgument),
        (2_200_000, tonic::Code::ResourceExhausted),
    ] {
        let expected = put_of_size(&mut reference, bytes).await;
        assert_eq!(expected.0, code, "etcd, {bytes} bytes: {}", expected.1);
        let seen = put_of_size(&mut router, bytes).await;
        assert_eq!(seen.0, code, "router, {bytes} bytes: {}", seen.1);
        if code == tonic::Code::InvalidArgument {
            assert_eq!(seen.1, "etcdserver: request is too large");
            assert_eq!(seen.1, expected.1);
        }
    }
    // The limit is a flag.
    let small = ShardedRouter::start(1, &["--max-request-bytes", "100000"]).await?;
    let (code, message) = put_of_size(&mut small.router.client().await?, 200_000).await;
    assert_eq!(
        (code, message.as_str()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: request is too large"
        )
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_nested_in_a_txn_carry_only_the_revision() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let mut client = cluster.router.client().await?;
    client.put("/registry/pods/default/a", "1", None).await?;
    let txn = Txn::new()
        .when([Compare::mod_revision(
            "/registry/pods/default/a",
            CompareOp::Greater,
            0,
        )])
        .and_then([TxnOp::put("/registry/pods/default/a", "2", None)]);
    let response = client.txn(txn).await?;
    let top = response.header().expect("a header");
    assert_ne!(top.cluster_id(), 0, "the top-level header is complete");
    let raw: ste_proto::etcd::etcdserverpb::TxnResponse = {
        // Ask again with the raw protocol to see the nested header as sent.
        let mut kv =
            ste_proto::etcd::etcdserverpb::kv_client::KvClient::connect(cluster.router.endpoint())
                .await?;
        kv.txn(ste_proto::etcd::etcdserverpb::TxnRequest {
            compare: Vec::new(),
            success: vec![ste_proto::etcd::etcdserverpb::RequestOp {
                request: Some(
                    ste_proto::etcd::etcdserverpb::request_op::Request::RequestPut(
                        ste_proto::etcd::etcdserverpb::PutRequest {
                            key: b"/registry/pods/default/a".to_vec(),
                            value: b"3".to_vec(),
                            ..Default::default()
                        },
                    ),
                ),
            }],
            failure: Vec::new(),
        })
        .await?
        .into_inner()
    };
    let revision = raw.header.as_ref().map(|h| h.revision).unwrap_or_default();
    let nested = match &raw.responses[0].response {
        Some(ste_proto::etcd::etcdserverpb::response_op::Response::ResponsePut(put)) => {
            put.header.expect("a nested header")
        }
        other => panic!("unexpected response {other:?}"),
    };
    assert_eq!(
        nested,
        ste_proto::etcd::etcdserverpb::ResponseHeader {
            revision,
            ..Default::default()
        },
        "etcd fills only the revision of a nested header"
    );
    Ok(())
}
