//! [`Shard`] on top of a [`MemoryShard`]: how failed calls are classified,
//! health, and the revision map.

use std::sync::Arc;

use ste_core::index::ShardId;
use ste_core::revision::{GlobalRevision, ShardRevision};
use ste_proto::etcd::etcdserverpb as pb;
use tonic::{Code, Status};

use super::memory::{ANSWER_LOST, MemoryShard};
use super::{Shard, ShardTimeouts};
use crate::error::{FUTURE_REVISION, StoreError};

const NOSPACE: &str = "etcdserver: mvcc: database space exceeded";

fn shard() -> (Shard, Arc<MemoryShard>) {
    let etcd = Arc::new(MemoryShard::new());
    let shard = Shard::with_client(
        ShardId(3),
        "s3".into(),
        "http://s3:2379".into(),
        1,
        etcd.clone(),
    );
    (shard, etcd)
}

fn put(key: &str) -> pb::TxnRequest {
    pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }],
        ..Default::default()
    }
}

/// Asserts `error` is "shard s3 unavailable" with `reason` in its words.
fn assert_names_shard(error: &StoreError, reason: &str) {
    match error {
        StoreError::ShardUnavailable {
            member,
            endpoint,
            reason: why,
        } => {
            assert_eq!(
                (member.as_str(), endpoint.as_str()),
                ("s3", "http://s3:2379")
            );
            assert!(why.contains(reason), "{why:?} should contain {reason:?}");
        }
        other => panic!("expected ShardUnavailable, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("shard s3 (http://s3:2379) is unavailable"),
        "{message}"
    );
}

#[tokio::test]
async fn calls_reach_the_client_and_answer() {
    let (shard, etcd) = shard();
    let response = shard.txn(put("a")).await.expect("txn");
    assert_eq!(response.header.expect("header").revision, 2);
    assert_eq!(etcd.raw_keys().len(), 1);
    let status = shard.status().await.expect("status");
    assert_eq!(
        status.header.expect("header").member_id,
        MemoryShard::MEMBER_ID
    );
    assert!(shard.alarms().await.expect("alarms").alarms.is_empty());
    assert!(shard.disarm(0).await.expect("disarm").alarms.is_empty());
    shard
        .compact(ShardRevision(2), true)
        .await
        .expect("compact");
}

#[tokio::test]
async fn a_transport_failure_marks_the_shard_down_and_names_it() {
    let (shard, etcd) = shard();
    etcd.fail_next(1, Status::unavailable("connection refused"));
    let error = shard
        .range(pb::RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("shard down");
    assert!(error.is_uncertain());
    assert!(!shard.health().healthy);
    assert_eq!(shard.health().last_error, "connection refused");
    assert_names_shard(
        &shard.check_available().expect_err("down"),
        "connection refused",
    );
    assert_names_shard(&shard.client_error(error), "connection refused");

    assert!(shard.mark_healthy(), "it was down");
    assert!(!shard.mark_healthy(), "it is up");
    shard.check_available().expect("available again");
}

#[tokio::test]
async fn a_lost_answer_is_uncertain_and_the_write_happened() {
    let (shard, etcd) = shard();
    etcd.lose_next_answers(1);
    let error = shard.txn(put("a")).await.expect_err("answer lost");
    assert!(error.is_uncertain());
    assert!(!shard.health().healthy);
    assert_names_shard(&shard.client_error(error), ANSWER_LOST);
    assert_eq!(etcd.raw_keys().len(), 1);
}

#[tokio::test]
async fn etcd_answers_pass_through_and_leave_the_shard_healthy() {
    let (shard, etcd) = shard();
    etcd.fail_next(1, Status::resource_exhausted(NOSPACE));
    // etcd's own UNAVAILABLE answers carry its prefix: not a transport failure.
    etcd.fail_next(1, Status::unavailable("etcdserver: leader changed"));
    for (code, message) in [
        (Code::ResourceExhausted, NOSPACE),
        (Code::Unavailable, "etcdserver: leader changed"),
    ] {
        let error = shard.txn(put("a")).await.expect_err("etcd refused");
        match shard.client_error(error) {
            StoreError::Shard(status) => {
                assert_eq!((status.code(), status.message()), (code, message));
            }
            other => panic!("expected the shard's own answer, got {other:?}"),
        }
        shard.check_available().expect("still available");
    }

    assert!(shard.health().healthy);
}

/// The router reads a shard only at revisions the shard gave it, so a
/// shard that calls one of them its future has lost acknowledged writes:
/// it restarted empty. The client is told the shard is unavailable (not
/// about a revision it never asked for), and the shard refuses requests
/// until its keys are resynchronised.
#[tokio::test]
async fn a_shard_that_calls_a_known_revision_future_needs_a_resync() {
    let (shard, _) = shard();
    let future = shard
        .compact(ShardRevision(9), false)
        .await
        .expect_err("future");
    assert_eq!(future.status.message(), FUTURE_REVISION);
    let error = shard.client_error(future);
    assert!(
        matches!(&error, StoreError::ShardUnavailable { reason, .. } if reason.contains("restarted empty")),
        "{error:?}"
    );
    assert!(shard.health().needs_resync);
    assert!(shard.check_available().is_err());
}

/// A write that comes back at a shard revision the shard already passed
/// proves the same loss, and is recorded as that rather than as a bug.
#[test]
fn a_write_at_an_older_shard_revision_marks_the_shard_for_a_resync() {
    let (shard, _) = shard();
    shard.record_revision(GlobalRevision(5), ShardRevision(7));
    assert!(!shard.health().needs_resync);
    shard.record_batch(GlobalRevision(6), GlobalRevision(7), ShardRevision(2));
    assert!(shard.health().needs_resync);
    assert!(shard.health().last_error.contains("restarted empty"));
    // The map keeps what it had: reads at known revisions stay where they were.
    assert_eq!(shard.revision_at(GlobalRevision(6)), ShardRevision(7));
}

#[test]
fn a_shard_needing_a_resync_refuses_until_resynced() {
    let (shard, _) = shard();
    shard.mark_needs_resync("a write's outcome is unknown");
    assert_names_shard(
        &shard.check_available().expect_err("resync"),
        "resynchronising its keys",
    );
    shard.mark_unavailable("connection reset");
    assert_names_shard(
        &shard.check_available().expect_err("down"),
        "connection reset",
    );
    shard.mark_healthy();
    shard.resynced();
    shard.check_available().expect("available");
    assert!(shard.health().last_error.is_empty());
}

#[test]
fn the_revision_map_answers_the_last_write_at_or_before() {
    let (shard, _) = shard();
    let at = |g| shard.revision_at(GlobalRevision(g));
    assert_eq!(at(100), ShardRevision(0), "no write yet: the base");
    shard.record_revision(GlobalRevision(5), ShardRevision(2));
    shard.record_revision(GlobalRevision(9), ShardRevision(3));
    shard.record_revision(GlobalRevision(8), ShardRevision(4)); // out of order: ignored
    let answers: Vec<_> = [4, 5, 8, 9, 20].map(|g| at(g).0).into();
    assert_eq!(answers, [0, 2, 2, 3, 3]);

    shard.compact_revisions(GlobalRevision(6));
    assert_eq!(
        (at(1), at(6), at(9)),
        (ShardRevision(2), ShardRevision(2), ShardRevision(3))
    );

    shard.reset_revisions(ShardRevision(40));
    assert_eq!(at(9), ShardRevision(40));
}

#[tokio::test]
async fn new_builds_a_lazy_grpc_client_and_refuses_bad_endpoints() {
    let timeouts = ShardTimeouts {
        connect: std::time::Duration::from_millis(100),
        request: std::time::Duration::from_millis(100),
        tls: None,
    };
    let new = |endpoint: &str| {
        Shard::new(
            ShardId(0),
            "s0".into(),
            endpoint.into(),
            1,
            timeouts.clone(),
        )
    };
    let shard = new("http://127.0.0.1:1").expect("nothing is connected yet");
    assert_eq!((shard.name.as_str(), shard.weight), ("s0", 1));
    shard.check_available().expect("healthy until a call fails");
    match new("not a uri") {
        Err(StoreError::InvalidArgument(message)) => {
            assert!(
                message.contains("bad shard endpoint \"not a uri\""),
                "{message}"
            );
        }
        other => panic!("expected InvalidArgument, got {:?}", other.err()),
    }
}

/// A histogram's observation count and sum, read from its OpenMetrics text
/// (the crate keeps its getters for its own tests).
fn observed(histogram: &prometheus_client::metrics::histogram::Histogram) -> (u64, f64) {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("h", "", histogram.clone());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    (field("h_count ") as u64, field("h_sum "))
}

#[tokio::test]
async fn range_and_txn_calls_are_timed_failed_ones_too() {
    let (shard, etcd) = shard();
    let counts = |shard: &Shard| {
        let [(range_name, range), (txn_name, txn)] = shard.call_latency().by_method();
        assert_eq!((range_name, txn_name), ("Range", "Txn"));
        (observed(range).0, observed(txn).0)
    };
    assert_eq!(counts(&shard), (0, 0));
    shard.txn(put("a")).await.expect("the put applies");
    etcd.fail_next(1, Status::unavailable("connection refused"));
    shard.txn(put("b")).await.expect_err("the injected failure");
    shard
        .range(pb::RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .await
        .expect("the range answers");
    assert_eq!(counts(&shard), (1, 2));
    let [_, (_, txn)] = shard.call_latency().by_method();
    let (_, seconds) = observed(txn);
    assert!((0.0..60.0).contains(&seconds), "{seconds}");
    // Clones share their counts: the metrics snapshot sees later calls.
    let seen_by_scrape = shard.call_latency().clone();
    shard.txn(put("c")).await.expect("the put applies");
    assert_eq!(observed(seen_by_scrape.by_method()[1].1).0, 3);
}

/// The resync loop is woken once when a shard newly needs a resync, not
/// again for every request that finds it so before the resync ran.
#[tokio::test]
async fn a_new_need_for_a_resync_wakes_the_signal_once() {
    let (shard, _) = shard();
    let signal = Arc::new(tokio::sync::Notify::new());
    let shard = shard.with_resync_signal(signal.clone());
    shard.mark_needs_resync("first");
    shard.mark_needs_resync("second");
    tokio::time::timeout(std::time::Duration::from_secs(5), signal.notified())
        .await
        .expect("woken");
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), signal.notified())
            .await
            .is_err(),
        "woken only once"
    );
    shard.resynced();
    shard.mark_needs_resync("again");
    tokio::time::timeout(std::time::Duration::from_secs(5), signal.notified())
        .await
        .expect("woken after a resync");
}
