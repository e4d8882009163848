//! Writes the committed seed corpus `fuzz/seeds/TARGET/NAME`: requests as
//! kube-apiserver, etcdctl, `kubectl ste` and the agents send them,
//! encoded as the router receives them, and envelopes as the router writes
//! them. Each seed is also run through its target's checks.
//!
//! Usage: cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/seeds

use std::path::Path;

use prost::Message;
use ste_core::envelope::Envelope;
use ste_core::revision::GlobalRevision;
use ste_proto::etcd::etcdserverpb::{self as pb, compare, request_op};
use ste_proto::v1;

const POD: &[u8] = b"/registry/pods/default/web-0";
const POD_JSON: &[u8] = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web-0"}}"#;

fn op(request: request_op::Request) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request),
    }
}

fn get(key: &[u8]) -> pb::RequestOp {
    op(request_op::Request::RequestRange(pb::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }))
}

fn put(key: &[u8], value: &[u8]) -> pb::RequestOp {
    op(request_op::Request::RequestPut(pb::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }))
}

fn compare(key: &[u8], target: compare::CompareTarget, union: compare::TargetUnion) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: target as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(union),
    }
}

/// kube-apiserver's four shapes, etcdctl's transactions, and refusals.
fn txns() -> Vec<(&'static str, pb::TxnRequest)> {
    use compare::{CompareTarget as T, TargetUnion as U};
    let delete = op(request_op::Request::RequestDeleteRange(
        pb::DeleteRangeRequest {
            key: POD.to_vec(),
            ..Default::default()
        },
    ));
    vec![
        (
            "kube-create",
            pb::TxnRequest {
                compare: vec![compare(POD, T::Mod, U::ModRevision(0))],
                success: vec![put(POD, POD_JSON)],
                failure: vec![],
            },
        ),
        (
            "kube-update",
            pb::TxnRequest {
                compare: vec![compare(POD, T::Mod, U::ModRevision(42))],
                success: vec![put(POD, POD_JSON)],
                failure: vec![get(POD)],
            },
        ),
        (
            "kube-delete",
            pb::TxnRequest {
                compare: vec![compare(POD, T::Mod, U::ModRevision(42))],
                success: vec![delete.clone()],
                failure: vec![get(POD)],
            },
        ),
        (
            "kube-compaction",
            pb::TxnRequest {
                compare: vec![compare(b"compact_rev_key", T::Version, U::Version(3))],
                success: vec![put(b"compact_rev_key", b"100")],
                failure: vec![get(b"compact_rev_key")],
            },
        ),
        (
            "etcdctl-value-compare",
            pb::TxnRequest {
                compare: vec![compare(POD, T::Value, U::Value(b"old".to_vec()))],
                success: vec![put(POD, b"new"), get(POD)],
                failure: vec![get(POD)],
            },
        ),
        (
            "read-only",
            pb::TxnRequest {
                compare: vec![compare(POD, T::Create, U::CreateRevision(5))],
                success: vec![get(POD), get(b"/registry/pods/default/web-1")],
                failure: vec![get(b"/registry/pods/")],
            },
        ),
        (
            "two-writes",
            pb::TxnRequest {
                compare: vec![],
                success: vec![put(POD, b"a"), delete],
                failure: vec![],
            },
        ),
    ]
}

fn ranges() -> Vec<(&'static str, pb::RangeRequest)> {
    let range = |key: &[u8], range_end: &[u8], limit| pb::RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        limit,
        ..Default::default()
    };
    vec![
        ("get-one", range(POD, b"", 0)),
        (
            "kube-list",
            range(b"/registry/pods/", b"/registry/pods0", 500),
        ),
        (
            "from-key",
            range(b"/registry/pods/default/web-1", b"\0", 500),
        ),
        ("all", range(b"\0", b"\0", 0)),
        ("empty", range(b"/b", b"/a", 0)),
    ]
}

fn admin() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "join",
            v1::JoinRequest {
                name: "shard-d".into(),
                weight: 2,
                dry_run: true,
                endpoint: "http://127.0.0.1:32379".into(),
            }
            .encode_to_vec(),
        ),
        (
            "leave",
            v1::LeaveRequest {
                name: "node-a".into(),
                dry_run: false,
                drain: false,
            }
            .encode_to_vec(),
        ),
        (
            "register",
            v1::RegisterRequest {
                name: "node-a".into(),
                agent_address: "10.0.0.1:2290".into(),
                endpoint: "http://10.0.0.1:2279".into(),
                epoch: 3,
                weight: 1,
                no_join: false,
                user_address: "10.0.0.1:2292".into(),
            }
            .encode_to_vec(),
        ),
        (
            "heartbeat",
            v1::HeartbeatRequest {
                name: "node-a".into(),
                epoch: 3,
                healthy: true,
                generation_seen: 7,
            }
            .encode_to_vec(),
        ),
        (
            "locate",
            v1::LocateRequest { key: POD.to_vec() }.encode_to_vec(),
        ),
    ]
}

fn envelopes() -> Vec<(&'static str, Vec<u8>)> {
    let pod = Envelope {
        create: GlobalRevision(17),
        modified: GlobalRevision(42),
        version: 3,
        lease: 0,
        payload: POD_JSON,
    }
    .encode();
    let leased = Envelope {
        create: GlobalRevision(1),
        modified: GlobalRevision(1),
        version: 1,
        lease: 0x694d_71dd_3a2c_0f11,
        payload: b"",
    }
    .encode();
    vec![
        ("pod", pod.clone()),
        ("leased-empty", leased),
        ("truncated", pod[..20].to_vec()),
        ("foreign-json", POD_JSON.to_vec()),
    ]
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8], check: fn(&[u8])) {
    check(bytes);
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: seeds DIR (e.g. fuzz/seeds)");
    let dir = Path::new(&dir);
    for (name, txn) in txns() {
        write(dir, "txn", name, &txn.encode_to_vec(), ste_fuzz::txn::check);
    }
    for (name, range) in ranges() {
        let bytes = range.encode_to_vec();
        write(dir, "key_range", name, &bytes, ste_fuzz::key_range::check);
    }
    for (name, bytes) in admin() {
        write(dir, "admin", name, &bytes, ste_fuzz::admin::check);
    }
    for (name, bytes) in envelopes() {
        write(dir, "envelope", name, &bytes, ste_fuzz::envelope::check);
    }
    println!("seeds written to {}", dir.display());
}
