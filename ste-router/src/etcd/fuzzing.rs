//! The router's pure request checks, reachable from outside the crate for
//! the `cargo fuzz` targets in `fuzz/` (see `docs/fuzzing.md`) and nothing
//! else: hidden from the docs, not a stable API. Each function forwards to
//! the one the etcd API layer calls, so the fuzzers exercise exactly the
//! code that serves requests.

use ste_proto::etcd::etcdserverpb as pb;
use tonic::Status;

use crate::store::write::KeyWrite;

/// etcd's checks of a Txn (`validate::txn`), run on every Txn whatever
/// its shape before it is served.
pub fn validate_txn(request: &pb::TxnRequest) -> Result<(), Status> {
    super::validate::txn(request)
}

/// etcd's checks of a Range (`validate::range`), plus the router's
/// refusals of orders and filters it does not serve.
pub fn validate_range(request: &pb::RangeRequest) -> Result<(), Status> {
    super::validate::range(request)
}

/// etcd's checks of a Put (`validate::put`).
pub fn validate_put(request: &pb::PutRequest) -> Result<(), Status> {
    super::validate::put(request)
}

/// The generic Txn planner (`txn/generic.rs`): the one write of the
/// success branch and its position, `None` for a read-only transaction,
/// or INVALID_ARGUMENT for a transaction the router does not serve.
pub fn plan_generic_txn(request: &pb::TxnRequest) -> Result<Option<(usize, KeyWrite)>, Status> {
    super::txn::plan_generic(request)
}
