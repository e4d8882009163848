//! Malformed and unusual requests: each is sent, byte for byte, to a
//! reference etcd and to the router. Where etcd refuses, the router must
//! refuse with the same gRPC code (and etcd's message where etcd's is a
//! stable "etcdserver: ..." text). Where etcd accepts, the router must either
//! answer the same way or refuse with INVALID_ARGUMENT / UNIMPLEMENTED and a
//! message that says what it supports.
//!
//! Requests go through the raw generated gRPC clients (not etcd-client's
//! builders) so that negative limits, empty keys and odd range ends reach
//! the servers exactly as written.

use std::time::Duration;

use etcd_client::{WatchOptions, WatchStream};

use ste_proto::etcd::etcdserverpb::{self as pb, compare, kv_client::KvClient, request_op};
use ste_tests::{ShardedRouter, TestEtcd};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The router runs with this `--max-request-bytes`.
const ROUTER_MAX_REQUEST: usize = 1024;
/// etcd's default `--max-request-bytes` (1.5 MiB) …
const ETCD_MAX_REQUEST: usize = 3 << 19;
/// … and the gRPC overhead both allow on top of it before the transport
/// itself refuses the message (512 KiB for both).
const ETCD_GRPC_OVERHEAD: usize = 512 * 1024;
const ROUTER_GRPC_OVERHEAD: usize = 512 * 1024;

struct Pair {
    etcd: KvClient<Channel>,
    router: KvClient<Channel>,
    failures: Vec<String>,
}

async fn kv_client(url: &str) -> anyhow::Result<KvClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect()
        .await?;
    Ok(KvClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

fn put(key: &[u8], value: &[u8]) -> pb::PutRequest {
    pb::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

fn get(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

fn range(key: &[u8], range_end: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

fn mod_equals(key: &[u8], revision: i64) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
        range_end: Vec::new(),
    }
}

fn put_op(key: &[u8], value: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(put(key, value))),
    }
}

fn get_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(get(key))),
    }
}

/// What a range answer says, without revisions (they legitimately differ:
/// the router has its own revision space) and without member/cluster IDs.
#[derive(Debug, PartialEq, Eq)]
struct RangeView {
    kvs: Vec<(Vec<u8>, Vec<u8>, i64)>,
    count: i64,
    more: bool,
}

fn view(response: &pb::RangeResponse) -> RangeView {
    RangeView {
        kvs: response
            .kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone(), kv.version))
            .collect(),
        count: response.count,
        more: response.more,
    }
}

fn describe<T: std::fmt::Debug>(result: &Result<T, Status>) -> String {
    match result {
        Ok(value) => format!("OK {value:?}"),
        Err(status) => format!("{:?} {:?}", status.code(), status.message()),
    }
}

impl Pair {
    fn fail(&mut self, case: &str, detail: String) {
        self.failures.push(format!("{case}: {detail}"));
    }

    /// Both refuse with the same code, and with etcd's message when
    /// `same_message`.
    fn same_error<A: std::fmt::Debug, B: std::fmt::Debug>(
        &mut self,
        case: &str,
        etcd: &Result<A, Status>,
        router: &Result<B, Status>,
        same_message: bool,
    ) {
        match (etcd, router) {
            (Err(e), Err(r)) => {
                if e.code() != r.code() {
                    self.fail(
                        case,
                        format!(
                            "codes differ: etcd {}, router {}",
                            describe(etcd),
                            describe(router)
                        ),
                    );
                } else if same_message && e.message() != r.message() {
                    self.fail(
                        case,
                        format!(
                            "messages differ: etcd {}, router {}",
                            describe(etcd),
                            describe(router)
                        ),
                    );
                }
            }
            _ => self.fail(
                case,
                format!(
                    "expected both to refuse: etcd {}, router {}",
                    describe(etcd),
                    describe(router)
                ),
            ),
        }
    }

    /// etcd accepts; the router refuses with `code` and a message containing
    /// every one of `says`.
    fn router_refuses<A: std::fmt::Debug, B: std::fmt::Debug>(
        &mut self,
        case: &str,
        etcd: &Result<A, Status>,
        router: &Result<B, Status>,
        code: Code,
        says: &[&str],
    ) {
        if etcd.is_err() {
            self.fail(
                case,
                format!("etcd was expected to accept: {}", describe(etcd)),
            );
        }
        match router {
            Err(r) if r.code() == code && says.iter().all(|s| r.message().contains(s)) => {}
            _ => self.fail(
                case,
                format!(
                    "router should refuse with {code:?} saying {says:?}: {}",
                    describe(router)
                ),
            ),
        }
    }

    /// Both answer a range the same way (revisions aside).
    fn same_range(
        &mut self,
        case: &str,
        etcd: &Result<pb::RangeResponse, Status>,
        router: &Result<pb::RangeResponse, Status>,
    ) {
        match (etcd, router) {
            (Ok(e), Ok(r)) if view(e) == view(r) => {}
            _ => self.fail(
                case,
                format!(
                    "answers differ: etcd {}, router {}",
                    describe(etcd),
                    describe(router)
                ),
            ),
        }
    }

    async fn range(
        &mut self,
        request: pb::RangeRequest,
    ) -> (
        Result<pb::RangeResponse, Status>,
        Result<pb::RangeResponse, Status>,
    ) {
        let etcd = self
            .etcd
            .range(request.clone())
            .await
            .map(|r| r.into_inner());
        let router = self.router.range(request).await.map(|r| r.into_inner());
        (etcd, router)
    }

    async fn put(
        &mut self,
        request: pb::PutRequest,
    ) -> (
        Result<pb::PutResponse, Status>,
        Result<pb::PutResponse, Status>,
    ) {
        let etcd = self.etcd.put(request.clone()).await.map(|r| r.into_inner());
        let router = self.router.put(request).await.map(|r| r.into_inner());
        (etcd, router)
    }

    async fn txn(
        &mut self,
        request: pb::TxnRequest,
    ) -> (
        Result<pb::TxnResponse, Status>,
        Result<pb::TxnResponse, Status>,
    ) {
        let etcd = self.etcd.txn(request.clone()).await.map(|r| r.into_inner());
        let router = self.router.txn(request).await.map(|r| r.into_inner());
        (etcd, router)
    }

    async fn delete(
        &mut self,
        request: pb::DeleteRangeRequest,
    ) -> (
        Result<pb::DeleteRangeResponse, Status>,
        Result<pb::DeleteRangeResponse, Status>,
    ) {
        let etcd = self
            .etcd
            .delete_range(request.clone())
            .await
            .map(|r| r.into_inner());
        let router = self
            .router
            .delete_range(request)
            .await
            .map(|r| r.into_inner());
        (etcd, router)
    }

    /// Both accept a write.
    fn both_ok<A: std::fmt::Debug, B: std::fmt::Debug>(
        &mut self,
        case: &str,
        etcd: &Result<A, Status>,
        router: &Result<B, Status>,
    ) {
        if etcd.is_err() || router.is_err() {
            self.fail(
                case,
                format!(
                    "expected both to accept: etcd {}, router {}",
                    describe(etcd),
                    describe(router)
                ),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_etcds_answers() -> anyhow::Result<()> {
    let max = ROUTER_MAX_REQUEST.to_string();
    let router_args = ["--max-request-bytes", max.as_str()];
    let (reference, cluster) = tokio::try_join!(
        TestEtcd::start("ref"),
        ShardedRouter::start(3, &router_args)
    )?;
    let mut pair = Pair {
        etcd: kv_client(&reference.url).await?,
        router: kv_client(&cluster.router.endpoint()).await?,
        failures: Vec::new(),
    };

    // --- Keys that are not UTF-8 are valid etcd keys. -----------------------
    let bad = b"/registry/pods/\xff\xfe/x\xff".as_slice();
    let plain_bad = [0xffu8, 0xfe].as_slice();
    for key in [bad, plain_bad, b"/registry/pods/nul\x00inside".as_slice()] {
        let case = format!("non-UTF-8 key {key:?}");
        let (e, r) = pair.put(put(key, b"v1")).await;
        pair.both_ok(&format!("{case}: put"), &e, &r);
        let (e, r) = pair.range(get(key)).await;
        pair.same_range(&format!("{case}: get"), &e, &r);
        if let Ok(r) = &r
            && r.kvs.first().map(|kv| kv.value.as_slice()) != Some(b"v1")
        {
            pair.fail(&case, format!("router does not read back the value: {r:?}"));
        }
        // kube-apiserver's update shape on it.
        let e_rev = e
            .as_ref()
            .ok()
            .and_then(|e| e.kvs.first())
            .map(|kv| kv.mod_revision)
            .unwrap_or(0);
        let r_rev = r
            .as_ref()
            .ok()
            .and_then(|r| r.kvs.first())
            .map(|kv| kv.mod_revision)
            .unwrap_or(0);
        let update = |rev| pb::TxnRequest {
            compare: vec![mod_equals(key, rev)],
            success: vec![put_op(key, b"v2")],
            failure: vec![get_op(key)],
        };
        let e = pair
            .etcd
            .txn(update(e_rev))
            .await
            .map(|r| r.into_inner().succeeded);
        let r = pair
            .router
            .txn(update(r_rev))
            .await
            .map(|r| r.into_inner().succeeded);
        if e.as_ref().ok() != Some(&true) || r.as_ref().ok() != Some(&true) {
            pair.fail(
                &format!("{case}: update txn"),
                format!("etcd {}, router {}", describe(&e), describe(&r)),
            );
        }
    }
    // A range starting at 0xff holds both byte keys; the router's merge
    // across shards keeps byte order.
    let (e, r) = pair.range(range(b"\xff", b"\x00")).await;
    pair.same_range("range from 0xff to the end", &e, &r);
    let (e, r) = pair
        .range(range(b"/registry/pods/", b"/registry/pods0"))
        .await;
    pair.same_range("range over keys with 0xff and NUL bytes", &e, &r);
    let (e, r) = pair
        .delete(pb::DeleteRangeRequest {
            key: plain_bad.to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .await;
    match (&e, &r) {
        (Ok(e), Ok(r))
            if e.deleted == 1
                && r.deleted == 1
                && r.prev_kvs.len() == 1
                && r.prev_kvs[0].value == b"v2" => {}
        _ => pair.fail(
            "delete a non-UTF-8 key",
            format!("etcd {}, router {}", describe(&e), describe(&r)),
        ),
    }

    // --- Empty keys. ----------------------------------------------------------
    let (e, r) = pair.put(put(b"", b"v")).await;
    pair.same_error("put with an empty key", &e, &r, true);
    let (e, r) = pair.range(get(b"")).await;
    pair.same_error("get with an empty key", &e, &r, true);
    let (e, r) = pair.range(range(b"", b"/z")).await;
    pair.same_error("range with an empty key and a range_end", &e, &r, true);
    let (e, r) = pair.delete(pb::DeleteRangeRequest::default()).await;
    pair.same_error("delete with an empty key", &e, &r, true);
    let (e, r) = pair
        .txn(pb::TxnRequest {
            compare: vec![mod_equals(b"/registry/pods/a", 0)],
            success: vec![put_op(b"", b"v")],
            failure: vec![],
        })
        .await;
    pair.same_error("txn putting an empty key", &e, &r, true);
    let (e, r) = pair
        .txn(pb::TxnRequest {
            compare: vec![mod_equals(b"", 0)],
            success: vec![put_op(b"/registry/pods/a", b"v")],
            failure: vec![],
        })
        .await;
    pair.same_error("txn comparing an empty key", &e, &r, true);
    let (e, r) = pair
        .txn(pb::TxnRequest {
            compare: vec![mod_equals(b"/registry/pods/a", 7)],
            success: vec![put_op(b"/registry/pods/a", b"v")],
            failure: vec![get_op(b"")],
        })
        .await;
    pair.same_error(
        "txn reading an empty key in the failure branch",
        &e,
        &r,
        true,
    );
    let (e, r) = pair
        .txn(pb::TxnRequest {
            compare: vec![mod_equals(b"/registry/pods/a", 0)],
            success: vec![pb::RequestOp {
                request: Some(request_op::Request::RequestPut(pb::PutRequest {
                    ignore_value: true,
                    ..put(b"/registry/pods/a", b"v")
                })),
            }],
            failure: vec![],
        })
        .await;
    pair.same_error("txn put with ignore_value and a value", &e, &r, true);

    // --- Odd ranges, limits and revisions. --------------------------------------
    for i in 0..5 {
        let key = format!("/registry/pods/odd/p{i}");
        let (e, r) = pair.put(put(key.as_bytes(), b"v")).await;
        pair.both_ok("put for the range cases", &e, &r);
    }
    let (e, r) = pair
        .range(range(b"/registry/pods/odd/p3", b"/registry/pods/odd/p1"))
        .await;
    pair.same_range("range_end before key", &e, &r);
    if let Ok(r) = &r
        && (r.count != 0 || !r.kvs.is_empty())
    {
        pair.fail(
            "range_end before key",
            format!("router returned keys: {r:?}"),
        );
    }
    let (e, r) = pair
        .range(range(b"/registry/pods/odd/p3", b"/registry/pods/odd/p3"))
        .await;
    pair.same_range("range_end equal to key", &e, &r);
    let (e, r) = pair
        .delete(pb::DeleteRangeRequest {
            key: b"/registry/pods/odd/p3".to_vec(),
            range_end: b"/registry/pods/odd/p1".to_vec(),
            ..Default::default()
        })
        .await;
    match (&e, &r) {
        (Ok(e), Ok(r)) if e.deleted == 0 && r.deleted == 0 => {}
        _ => pair.fail(
            "delete with range_end before key",
            format!("etcd {}, router {}", describe(&e), describe(&r)),
        ),
    }
    let odd = range(b"/registry/pods/odd/", b"/registry/pods/odd0");
    for limit in [-1, -100, i64::MIN] {
        let (e, r) = pair
            .range(pb::RangeRequest {
                limit,
                ..odd.clone()
            })
            .await;
        pair.same_range(&format!("limit {limit}"), &e, &r);
    }
    let (e, r) = pair
        .range(pb::RangeRequest {
            limit: 2,
            ..odd.clone()
        })
        .await;
    pair.same_range("limit 2 (reference for the negative limits)", &e, &r);
    for revision in [-1, -5, i64::MIN] {
        let (e, r) = pair
            .range(pb::RangeRequest {
                revision,
                ..odd.clone()
            })
            .await;
        pair.same_range(&format!("revision {revision}"), &e, &r);
    }
    let (e, r) = pair
        .range(pb::RangeRequest {
            revision: i64::MAX,
            ..odd.clone()
        })
        .await;
    pair.same_error("revision i64::MAX", &e, &r, true);
    let e = pair
        .etcd
        .compact(pb::CompactionRequest {
            revision: -1,
            physical: false,
        })
        .await;
    let r = pair
        .router
        .compact(pb::CompactionRequest {
            revision: -1,
            physical: false,
        })
        .await;
    pair.same_error("compact at revision -1", &e, &r, true);
    let e = pair
        .etcd
        .compact(pb::CompactionRequest {
            revision: i64::MAX,
            physical: false,
        })
        .await;
    let r = pair
        .router
        .compact(pb::CompactionRequest {
            revision: i64::MAX,
            physical: false,
        })
        .await;
    pair.same_error("compact at revision i64::MAX", &e, &r, true);

    // --- Put options that cannot apply. -----------------------------------------
    let missing = b"/registry/pods/odd/missing".as_slice();
    let (e, r) = pair
        .put(pb::PutRequest {
            ignore_value: true,
            ..put(missing, b"")
        })
        .await;
    pair.same_error("ignore_value on a missing key", &e, &r, true);
    let (e, r) = pair
        .put(pb::PutRequest {
            ignore_value: true,
            ..put(missing, b"v")
        })
        .await;
    pair.same_error("ignore_value with a value", &e, &r, true);
    let (e, r) = pair
        .put(pb::PutRequest {
            ignore_lease: true,
            lease: 5,
            ..put(missing, b"v")
        })
        .await;
    pair.same_error("ignore_lease with a lease", &e, &r, true);
    let (e, r) = pair
        .put(pb::PutRequest {
            lease: 0x7e57,
            ..put(missing, b"v")
        })
        .await;
    pair.same_error("put with a lease that does not exist", &e, &r, true);

    // --- Too large. --------------------------------------------------------------
    // Two regimes, compared like for like: a request over the limit but
    // within the gRPC overhead is refused by the server with etcd's
    // INVALID_ARGUMENT "request is too large" (etcd: 1.5 MiB + 1 KiB; the
    // router at --max-request-bytes 1024: 4 KiB); a message beyond the
    // overhead too is refused by the gRPC transport with RESOURCE_EXHAUSTED
    // (etcd: 2 MiB; the router, like etcd: 1 KiB + 512 KiB + 1 KiB).
    let e = pair
        .etcd
        .put(put(
            b"/registry/pods/big",
            &vec![b'x'; ETCD_MAX_REQUEST + 1024],
        ))
        .await;
    let r = pair
        .router
        .put(put(b"/registry/pods/big", &vec![b'x'; 4 * 1024]))
        .await;
    pair.same_error("value over --max-request-bytes", &e, &r, true);
    let big_txn = |size: usize| pb::TxnRequest {
        compare: vec![mod_equals(b"/registry/pods/big", 0)],
        success: vec![put_op(b"/registry/pods/big", &vec![b'x'; size])],
        failure: vec![],
    };
    let e = pair.etcd.txn(big_txn(ETCD_MAX_REQUEST + 1024)).await;
    let r = pair.router.txn(big_txn(4 * 1024)).await;
    pair.same_error(
        "create txn with a value over --max-request-bytes",
        &e,
        &r,
        true,
    );
    // Beyond the overhead too: the gRPC transport refuses the message.
    let e = pair
        .etcd
        .put(put(
            b"/registry/pods/big",
            &vec![b'x'; ETCD_MAX_REQUEST + ETCD_GRPC_OVERHEAD],
        ))
        .await;
    let r = pair
        .router
        .put(put(
            b"/registry/pods/big",
            &vec![b'x'; ROUTER_MAX_REQUEST + ROUTER_GRPC_OVERHEAD + 1024],
        ))
        .await;
    pair.same_error(
        "message over --max-request-bytes plus gRPC overhead",
        &e,
        &r,
        false,
    );
    if let Err(r) = &r
        && !r
            .message()
            .starts_with("grpc: received message larger than max (")
    {
        pair.fail(
            "message over --max-request-bytes plus gRPC overhead",
            format!("router's message is not grpc-go's: {:?}", r.message()),
        );
    }
    // The connection is still usable afterwards.
    let (e, r) = pair.range(get(b"/registry/pods/odd/p0")).await;
    pair.same_range("get after refusing large requests", &e, &r);

    // --- Transactions kube-apiserver never sends. ----------------------------------
    let two_keys = pb::TxnRequest {
        compare: vec![
            mod_equals(b"/registry/pods/t/a", 0),
            mod_equals(b"/registry/pods/t/b", 0),
        ],
        success: vec![
            put_op(b"/registry/pods/t/a", b"a"),
            put_op(b"/registry/pods/t/b", b"b"),
        ],
        failure: vec![],
    };
    let (e, r) = pair.txn(two_keys).await;
    pair.router_refuses(
        "txn comparing and writing two keys",
        &e,
        &r,
        Code::InvalidArgument,
        &["supports", "one key"],
    );
    let write_other_key = pb::TxnRequest {
        compare: vec![mod_equals(b"/registry/pods/t/c", 0)],
        success: vec![put_op(b"/registry/pods/t/d", b"d")],
        failure: vec![],
    };
    let (e, r) = pair.txn(write_other_key).await;
    pair.router_refuses(
        "txn comparing one key and writing another",
        &e,
        &r,
        Code::InvalidArgument,
        &["supports", "different keys"],
    );
    let write_in_else = pb::TxnRequest {
        compare: vec![mod_equals(b"/registry/pods/t/e", 12345)],
        success: vec![get_op(b"/registry/pods/t/e")],
        failure: vec![put_op(b"/registry/pods/t/e", b"e")],
    };
    let (e, r) = pair.txn(write_in_else).await;
    pair.router_refuses(
        "txn writing in the failure branch",
        &e,
        &r,
        Code::InvalidArgument,
        &["supports", "failure branch"],
    );
    let range_delete = pb::TxnRequest {
        compare: vec![],
        success: vec![pb::RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: b"/registry/pods/odd/".to_vec(),
                    range_end: b"/registry/pods/odd0".to_vec(),
                    ..Default::default()
                },
            )),
        }],
        failure: vec![],
    };
    let (e, r) = pair.txn(range_delete).await;
    pair.router_refuses(
        "txn deleting a range",
        &e,
        &r,
        Code::InvalidArgument,
        &["supports", "range of keys"],
    );
    // Two writes of one key: etcd refuses them too.
    let duplicate = pb::TxnRequest {
        compare: vec![mod_equals(b"/registry/pods/t/f", 0)],
        success: vec![
            put_op(b"/registry/pods/t/f", b"1"),
            put_op(b"/registry/pods/t/f", b"2"),
        ],
        failure: vec![],
    };
    let (e, r) = pair.txn(duplicate).await;
    pair.same_error("txn putting one key twice", &e, &r, true);

    // --- Range options the router does not serve. -----------------------------------
    let (e, r) = pair
        .range(pb::RangeRequest {
            sort_order: pb::range_request::SortOrder::Descend as i32,
            sort_target: pb::range_request::SortTarget::Key as i32,
            ..odd.clone()
        })
        .await;
    pair.router_refuses(
        "range sorted descending",
        &e,
        &r,
        Code::InvalidArgument,
        &["ascending key order"],
    );
    let (e, r) = pair
        .range(pb::RangeRequest {
            min_mod_revision: 2,
            ..odd.clone()
        })
        .await;
    pair.router_refuses(
        "range with min_mod_revision",
        &e,
        &r,
        Code::InvalidArgument,
        &["min/max mod/create revision"],
    );

    // --- Watches etcd refuses, or that make no sense. ---------------------------------
    let mut etcd = reference.client().await?;
    let mut router = cluster.router.client().await?;
    for (case, key, options) in [
        (
            "watch with range_end before key",
            "/registry/pods/odd/p3",
            WatchOptions::new().with_range("/registry/pods/odd/p1"),
        ),
        (
            "watch with range_end equal to key",
            "/registry/pods/odd/p3",
            WatchOptions::new().with_range("/registry/pods/odd/p3"),
        ),
    ] {
        let e = first_watch_answer(&mut etcd, key, options.clone()).await?;
        let r = first_watch_answer(&mut router, key, options).await?;
        if e != r {
            pair.fail(case, format!("etcd answers {e:?}, router {r:?}"));
        }
    }
    // A second watch with the ID of an open one is refused (ID -1), and the
    // open one goes on.
    for (side, client) in [("etcd", &mut etcd), ("router", &mut router)] {
        let mut stream = client
            .watch(
                "/registry/pods/dup/",
                Some(WatchOptions::new().with_prefix().with_watch_id(5)),
            )
            .await?;
        let created = next_answer(&mut stream).await?;
        stream
            .watch(
                "/registry/pods/other",
                Some(WatchOptions::new().with_watch_id(5)),
            )
            .await?;
        let refused = next_answer(&mut stream).await?;
        let want = WatchAnswer {
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream".into(),
            events: vec![],
        };
        if created.watch_id != 5 || refused != want {
            pair.fail(
                "duplicate watch ID",
                format!("{side} answers {created:?} then {refused:?}"),
            );
        }
        client.put("/registry/pods/dup/a", side, None).await?;
        let event = next_answer(&mut stream).await?;
        if event.watch_id != 5 || event.events != ["/registry/pods/dup/a"] {
            pair.fail(
                "duplicate watch ID",
                format!("{side}: the first watch stopped: {event:?}"),
            );
        }
    }
    // A negative start revision: etcd 3.4 creates the watch and then never
    // sends an event on it (its history scan starts at a nonsensical
    // position), so there is nothing sensible to match. The router treats
    // it as a Range treats a negative revision: "now".
    let mut stream = router
        .watch(
            "/registry/pods/neg/",
            Some(WatchOptions::new().with_prefix().with_start_revision(-1)),
        )
        .await?;
    let created = next_answer(&mut stream).await?;
    router.put("/registry/pods/neg/a", "v", None).await?;
    let event = next_answer(&mut stream).await?;
    if !created.created || created.canceled || event.events != ["/registry/pods/neg/a"] {
        pair.fail(
            "watch from revision -1",
            format!("router answers {created:?} then {event:?}"),
        );
    }

    // --- Calls the router does not implement. ----------------------------------------
    let e = etcd.defragment().await.map_err(status);
    let r = router.defragment().await.map_err(status);
    pair.router_refuses(
        "Maintenance.Defragment",
        &e,
        &r,
        Code::Unimplemented,
        &["Defragment", "ste-router"],
    );
    let e = etcd.hash_kv(0).await.map_err(status);
    let r = router.hash_kv(0).await.map_err(status);
    pair.router_refuses(
        "Maintenance.HashKV",
        &e,
        &r,
        Code::Unimplemented,
        &["HashKV", "ste-router"],
    );
    // (Not sent to etcd: adding an unreachable member to a one-member
    // cluster would cost it its quorum.)
    let r = router
        .member_add(["http://127.0.0.1:1"], None)
        .await
        .map_err(status);
    match &r {
        Err(s) if s.code() == Code::Unimplemented && s.message().contains("MemberAdd") => {}
        _ => pair.fail("Cluster.MemberAdd", format!("router: {}", describe(&r))),
    }

    assert!(
        pair.failures.is_empty(),
        "the router differs from etcd on malformed input:\n{}\nrouter log:\n{}",
        pair.failures.join("\n"),
        cluster.router.log()
    );
    Ok(())
}

fn status(error: etcd_client::Error) -> Status {
    match error {
        etcd_client::Error::GRpcStatus(status) => status,
        other => Status::unknown(other.to_string()),
    }
}

/// A watch answer without revisions and member IDs.
#[derive(Debug, PartialEq, Eq)]
struct WatchAnswer {
    watch_id: i64,
    created: bool,
    canceled: bool,
    cancel_reason: String,
    events: Vec<String>,
}

async fn next_answer(stream: &mut WatchStream) -> anyhow::Result<WatchAnswer> {
    let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .map_err(|_| anyhow::anyhow!("no watch answer within 30s"))??
        .ok_or_else(|| anyhow::anyhow!("watch stream ended"))?;
    Ok(WatchAnswer {
        watch_id: message.watch_id(),
        created: message.created(),
        canceled: message.canceled(),
        cancel_reason: message.cancel_reason().to_owned(),
        events: message
            .events()
            .iter()
            .filter_map(|e| e.kv())
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect(),
    })
}

async fn first_watch_answer(
    client: &mut etcd_client::Client,
    key: &str,
    options: WatchOptions,
) -> anyhow::Result<WatchAnswer> {
    let mut stream = client.watch(key, Some(options)).await?;
    next_answer(&mut stream).await
}
