//! Answers as both systems must agree on them, with every revision and
//! lease ID reachable by [`Answer::visit`] so the router's can be
//! renumbered onto etcd's. Member ID, cluster ID and raft_term are not
//! recorded (see `differences::HEADER_IDENTITY`).

use tonic::Code;

pub(crate) use ste_tests::keys::Kv;

pub(crate) use ste_tests::answers::{Num, OpOut, RangeOut, TxnOut, Visitor, visit_kv};

/// One message of a watch stream, events flattened (how they are batched
/// into responses is not part of the contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WatchItem {
    Created {
        header: i64,
        watch_id: i64,
    },
    Event {
        put: bool,
        kv: Kv,
        prev: Option<Kv>,
    },
    /// A message without events that is neither created nor canceled: the
    /// answer to a progress request.
    Progress {
        header: i64,
        watch_id: i64,
    },
    Canceled {
        header: i64,
        compact_revision: i64,
        reason: String,
    },
}

impl WatchItem {
    /// The items of one watch response.
    pub(crate) fn of(message: &etcd_client::WatchResponse) -> Vec<WatchItem> {
        let header = message.header().map(|h| h.revision()).unwrap_or(-1);
        let mut items = Vec::new();
        if message.created() {
            items.push(WatchItem::Created {
                header,
                watch_id: message.watch_id(),
            });
        }
        for event in message.events() {
            items.push(WatchItem::Event {
                put: event.event_type() == etcd_client::EventType::Put,
                kv: Kv::of(event.kv().expect("an event has a kv")),
                prev: event.prev_kv().map(Kv::of),
            });
        }
        if message.canceled() {
            items.push(WatchItem::Canceled {
                header,
                compact_revision: message.compact_revision(),
                reason: message.cancel_reason().to_owned(),
            });
        }
        if items.is_empty() {
            items.push(WatchItem::Progress {
                header,
                watch_id: message.watch_id(),
            });
        }
        items
    }

    fn visit(&mut self, f: &mut Visitor) {
        match self {
            WatchItem::Created { header, .. } | WatchItem::Progress { header, .. } => {
                f(Num::Revision, header)
            }
            WatchItem::Event { kv, prev, .. } => {
                visit_kv(kv, f);
                if let Some(prev) = prev {
                    visit_kv(prev, f);
                }
            }
            WatchItem::Canceled {
                header,
                compact_revision,
                ..
            } => {
                f(Num::Revision, header);
                f(Num::Revision, compact_revision);
            }
        }
    }

    /// The event's mod revision, if this is an event.
    pub(crate) fn event_revision(&self) -> Option<i64> {
        match self {
            WatchItem::Event { kv, .. } => Some(kv.modified),
            _ => None,
        }
    }
}

/// One request's answer, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Error {
        code: Code,
        message: String,
    },
    Put {
        header: i64,
        prev: Option<Kv>,
    },
    Range(RangeOut),
    Delete {
        header: i64,
        deleted: i64,
        prev: Vec<Kv>,
    },
    Txn(TxnOut),
    Compact {
        header: i64,
    },
    LeaseGrant {
        header: i64,
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        header: i64,
    },
    LeaseKeepAlive {
        header: i64,
        id: i64,
        ttl: i64,
    },
    LeaseTimeToLive {
        header: i64,
        id: i64,
        /// Seconds left: see `differences::LEASE_REMAINING`.
        remaining: i64,
        granted: i64,
        keys: Vec<String>,
    },
    /// Lease IDs, sorted after renumbering (etcd lists them in map order).
    LeaseLeases {
        header: i64,
        ids: Vec<i64>,
    },
    /// A watch request's answer: the watch's items since its last
    /// comparison.
    Watch(Vec<WatchItem>),
}

impl Answer {
    pub(crate) fn error(e: etcd_client::Error) -> Answer {
        match e {
            etcd_client::Error::GRpcStatus(status) => Answer::Error {
                code: status.code(),
                message: status.message().to_owned(),
            },
            other => Answer::Error {
                code: Code::Unknown,
                message: format!("not a gRPC status: {other}"),
            },
        }
    }

    /// Calls `f` on every revision and lease ID of the answer.
    pub(crate) fn visit(&mut self, f: &mut Visitor) {
        match self {
            Answer::Error { .. } => {}
            Answer::Put { header, prev } => {
                f(Num::Revision, header);
                if let Some(kv) = prev {
                    visit_kv(kv, f);
                }
            }
            Answer::Range(r) => r.visit(f),
            Answer::Delete { header, prev, .. } => {
                f(Num::Revision, header);
                prev.iter_mut().for_each(|kv| visit_kv(kv, f));
            }
            Answer::Txn(t) => t.visit(f),
            Answer::Compact { header } | Answer::LeaseRevoke { header } => f(Num::Revision, header),
            Answer::LeaseGrant { header, id, .. }
            | Answer::LeaseKeepAlive { header, id, .. }
            | Answer::LeaseTimeToLive { header, id, .. } => {
                f(Num::Revision, header);
                f(Num::Lease, id);
            }
            Answer::LeaseLeases { header, ids } => {
                f(Num::Revision, header);
                ids.iter_mut().for_each(|id| f(Num::Lease, id));
            }
            Answer::Watch(items) => items.iter_mut().for_each(|i| i.visit(f)),
        }
    }

    /// The top-level header revision, for answers that have one.
    pub(crate) fn header(&self) -> Option<i64> {
        match self {
            Answer::Put { header, .. }
            | Answer::Delete { header, .. }
            | Answer::Compact { header }
            | Answer::LeaseGrant { header, .. }
            | Answer::LeaseRevoke { header }
            | Answer::LeaseKeepAlive { header, .. }
            | Answer::LeaseTimeToLive { header, .. }
            | Answer::LeaseLeases { header, .. } => Some(*header),
            Answer::Range(r) => Some(r.header),
            Answer::Txn(t) => Some(t.header),
            Answer::Error { .. } | Answer::Watch(_) => None,
        }
    }
}
