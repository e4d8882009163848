//! Errors of the router, and how each reaches an etcd client: the same gRPC
//! codes and messages etcd uses where etcd has an equivalent, so that
//! kube-apiserver and etcdctl react as they would to etcd.

use tonic::{Code, Status};

pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub const FUTURE_REVISION: &str = "etcdserver: mvcc: required revision is a future revision";
pub const KEY_NOT_PROVIDED: &str = "etcdserver: key is not provided";
pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
pub const VALUE_PROVIDED: &str = "etcdserver: value is provided";
pub const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
pub const KEY_NOT_FOUND: &str = "etcdserver: key not found";
pub const LEASE_EXISTS: &str = "etcdserver: lease already exists";
pub const LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
pub const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{COMPACTED}")]
    Compacted,
    #[error("{FUTURE_REVISION}")]
    FutureRevision,
    #[error("{KEY_NOT_PROVIDED}")]
    KeyNotProvided,
    #[error("{LEASE_NOT_FOUND}")]
    LeaseNotFound,
    #[error("{LEASE_EXISTS}")]
    LeaseExists,
    #[error("{LEASE_TTL_TOO_LARGE}")]
    LeaseTtlTooLarge,
    #[error("{REQUEST_TOO_LARGE}")]
    TooLarge,
    #[error("{VALUE_PROVIDED}")]
    ValueProvided,
    #[error("{LEASE_PROVIDED}")]
    LeaseProvided,
    #[error("{KEY_NOT_FOUND}")]
    KeyNotFound,
    /// A request etcd would accept but the router does not serve.
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// A shard that the request touches cannot be used right now.
    #[error("ste-router: shard {member} ({endpoint}) is unavailable: {reason}")]
    ShardUnavailable {
        member: String,
        endpoint: String,
        reason: String,
    },
    /// An error answer from a shard that etcd itself produced (e.g. NOSPACE);
    /// passed on unchanged.
    #[error("{}", .0.message())]
    Shard(Status),
    #[error("ste-router: not serving yet: {0}")]
    NotReady(String),
    #[error("ste-router: the ring has no members yet")]
    NoMembers,
    #[error("ste-router: a ring change is in progress ({0}); try again when it is done")]
    ChangeInProgress(String),
    #[error("ste-router: {0}")]
    Refused(String),
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

pub type StoreResult<T> = Result<T, StoreError>;
