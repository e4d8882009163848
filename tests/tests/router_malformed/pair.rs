//! The same raw request sent to the reference etcd and to the router, and
//! the ways their answers may be compared; the request builders.

use std::time::Duration;

use ste_proto::etcd::etcdserverpb::{self as pb, compare, kv_client::KvClient, request_op};
use tonic::transport::Channel;
use tonic::{Code, Status};

pub(crate) struct Pair {
    pub(crate) etcd: KvClient<Channel>,
    pub(crate) router: KvClient<Channel>,
    pub(crate) failures: Vec<String>,
}

pub(crate) async fn kv_client(url: &str) -> anyhow::Result<KvClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect()
        .await?;
    Ok(KvClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

pub(crate) fn put(key: &[u8], value: &[u8]) -> pb::PutRequest {
    pb::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn get(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn range(key: &[u8], range_end: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn mod_equals(key: &[u8], revision: i64) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
        range_end: Vec::new(),
    }
}

pub(crate) fn put_op(key: &[u8], value: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(put(key, value))),
    }
}

pub(crate) fn get_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(get(key))),
    }
}

/// What a range answer says, without revisions (they legitimately differ:
/// the router has its own revision space) and without member/cluster IDs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RangeView {
    pub(crate) kvs: Vec<(Vec<u8>, Vec<u8>, i64)>,
    pub(crate) count: i64,
    pub(crate) more: bool,
}

pub(crate) fn view(response: &pb::RangeResponse) -> RangeView {
    RangeView {
        kvs: response
            .kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.to_vec(), kv.version))
            .collect(),
        count: response.count,
        more: response.more,
    }
}

pub(crate) fn describe<T: std::fmt::Debug>(result: &Result<T, Status>) -> String {
    match result {
        Ok(value) => format!("OK {value:?}"),
        Err(status) => format!("{:?} {:?}", status.code(), status.message()),
    }
}

impl Pair {
    pub(crate) fn fail(&mut self, case: &str, detail: String) {
        self.failures.push(format!("{case}: {detail}"));
    }

    /// Both refuse with the same code, and with etcd's message when
    /// `same_message`.
    pub(crate) fn same_error<A: std::fmt::Debug, B: std::fmt::Debug>(
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
    pub(crate) fn router_refuses<A: std::fmt::Debug, B: std::fmt::Debug>(
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
    pub(crate) fn same_range(
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

    pub(crate) async fn range(
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

    pub(crate) async fn put(
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

    pub(crate) async fn txn(
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

    pub(crate) async fn delete(
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
    pub(crate) fn both_ok<A: std::fmt::Debug, B: std::fmt::Debug>(
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

/// The keys the range cases write (`/registry/pods/odd/p0` … `p4`), as one
/// range.
pub(crate) fn odd_keys() -> pb::RangeRequest {
    range(b"/registry/pods/odd/", b"/registry/pods/odd0")
}
