//! A failed call to a shard, and how the router tells a shard that did not
//! answer from an answer etcd gave.

use tonic::{Code, Status};

/// A failed call to a shard, classified by what it means for a write.
#[derive(Debug)]
pub struct ShardCallError {
    /// The status the call ended with, as etcd or the transport gave it.
    pub status: Status,
}

impl ShardCallError {
    /// True when the request may or may not have been applied: the
    /// connection broke or the deadline passed after sending.
    pub fn is_uncertain(&self) -> bool {
        uncertain(self.status.code())
    }

    /// A transport-level failure (the shard did not answer), as opposed to
    /// an answer from etcd, whose messages start with `etcdserver:` even
    /// when their code is UNAVAILABLE.
    pub fn classify_transport(status: &Status) -> bool {
        uncertain(status.code()) && !status.message().starts_with("etcdserver:")
    }
}

/// The codes after which a request may or may not have been applied.
fn uncertain(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// A one-line description of a failed call, with the transport's cause.
pub fn describe(status: &Status) -> String {
    let mut text = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    };
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
