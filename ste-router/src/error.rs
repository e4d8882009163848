//! Errors of the router, and how each reaches an etcd client: the same gRPC
//! codes and messages etcd uses where etcd has an equivalent, so that
//! kube-apiserver and etcdctl react as they would to etcd.

use tonic::{Code, Status};

/// etcd's `ErrCompacted`: a read or watch below the compaction point.
pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// etcd's `ErrFutureRev`: a read above the current revision.
pub const FUTURE_REVISION: &str = "etcdserver: mvcc: required revision is a future revision";
/// etcd's `ErrGRPCEmptyKey`: a request without a key.
pub const KEY_NOT_PROVIDED: &str = "etcdserver: key is not provided";
/// etcd's `ErrGRPCLeaseNotFound`.
pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
/// etcd's `ErrGRPCRequestTooLarge`: above `--max-request-bytes`.
pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
/// etcd's `ErrGRPCValueProvided`: a value with `ignore_value`.
pub const VALUE_PROVIDED: &str = "etcdserver: value is provided";
/// etcd's `ErrGRPCLeaseProvided`: a lease with `ignore_lease`.
pub const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
/// etcd's `ErrGRPCKeyNotFound`: `ignore_value`/`ignore_lease` on an
/// absent key.
pub const KEY_NOT_FOUND: &str = "etcdserver: key not found";
/// etcd's `ErrGRPCLeaseExist`: a grant of an ID in use.
pub const LEASE_EXISTS: &str = "etcdserver: lease already exists";
/// etcd's `ErrGRPCLeaseTTLTooLarge`.
pub const LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
/// etcd's `ErrGRPCDuplicateKey`: one branch of a Txn writes a key twice.
pub const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";

/// Everything a router operation can fail with. Converted to the gRPC
/// status etcd would answer with (code and message) by `From<StoreError>
/// for Status`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// See [`COMPACTED`].
    #[error("{COMPACTED}")]
    Compacted,
    /// See [`FUTURE_REVISION`].
    #[error("{FUTURE_REVISION}")]
    FutureRevision,
    /// See [`KEY_NOT_PROVIDED`].
    #[error("{KEY_NOT_PROVIDED}")]
    KeyNotProvided,
    /// See [`LEASE_NOT_FOUND`].
    #[error("{LEASE_NOT_FOUND}")]
    LeaseNotFound,
    /// See [`LEASE_EXISTS`].
    #[error("{LEASE_EXISTS}")]
    LeaseExists,
    /// See [`LEASE_TTL_TOO_LARGE`].
    #[error("{LEASE_TTL_TOO_LARGE}")]
    LeaseTtlTooLarge,
    /// See [`REQUEST_TOO_LARGE`].
    #[error("{REQUEST_TOO_LARGE}")]
    TooLarge,
    /// See [`VALUE_PROVIDED`].
    #[error("{VALUE_PROVIDED}")]
    ValueProvided,
    /// See [`LEASE_PROVIDED`].
    #[error("{LEASE_PROVIDED}")]
    LeaseProvided,
    /// See [`KEY_NOT_FOUND`].
    #[error("{KEY_NOT_FOUND}")]
    KeyNotFound,
    /// A request etcd would accept but the router does not serve.
    #[error("{0}")]
    Unsupported(String),
    /// A malformed request or an argument the router refuses (a ring that
    /// cannot be built, a shard that cannot join), with the reason.
    #[error("{0}")]
    InvalidArgument(String),
    /// A shard that the request touches cannot be used right now.
    #[error("ste-router: shard {member} ({endpoint}) is unavailable: {reason}")]
    ShardUnavailable {
        /// The ring member.
        member: String,
        /// Its shard's etcd URL.
        endpoint: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// An error answer from a shard that etcd itself produced (e.g. NOSPACE);
    /// passed on unchanged.
    #[error("{}", .0.message())]
    Shard(Status),
    /// The router does not serve yet: the start-up scan runs, or the ring
    /// has no member.
    #[error("ste-router: not serving yet: {0}")]
    NotReady(String),
    /// No ring has a member: there is no shard to place a key on.
    #[error("ste-router: the ring has no members yet")]
    NoMembers,
    /// Another ring change runs (which one and how far, in the message).
    #[error("ste-router: a ring change is in progress ({0}); try again when it is done")]
    ChangeInProgress(String),
    /// A request the router refuses in its current state (e.g. the last
    /// member leaving), with what to do instead.
    #[error("ste-router: {0}")]
    Refused(String),
    /// A broken invariant or failed internal task: a bug, not input.
    #[error("ste-router: {0}")]
    Internal(String),
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Status {
        let message = error.to_string();
        let code = match &error {
            StoreError::Compacted | StoreError::FutureRevision | StoreError::LeaseTtlTooLarge => {
                Code::OutOfRange
            }
            StoreError::LeaseNotFound => Code::NotFound,
            StoreError::LeaseExists => Code::FailedPrecondition,
            StoreError::KeyNotProvided
            | StoreError::TooLarge
            | StoreError::ValueProvided
            | StoreError::LeaseProvided
            | StoreError::KeyNotFound
            | StoreError::Unsupported(_)
            | StoreError::InvalidArgument(_) => Code::InvalidArgument,
            StoreError::ShardUnavailable { .. }
            | StoreError::NotReady(_)
            | StoreError::NoMembers => Code::Unavailable,
            StoreError::Shard(status) => status.code(),
            StoreError::Internal(_) => Code::Internal,
            StoreError::ChangeInProgress(_) => Code::Aborted,
            StoreError::Refused(_) => Code::FailedPrecondition,
        };
        Status::new(code, message)
    }
}

/// The result of a router operation.
pub type StoreResult<T> = Result<T, StoreError>;
