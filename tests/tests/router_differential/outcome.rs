//! Responses normalised for comparison: what both systems must agree on,
//! with every revision reachable through `visit` for the renumbering.

use ste_tests::answers::{Num, Visitor};
use tonic::Code;

pub(crate) use ste_tests::answers::{OpOut, RangeOut as Range, TxnOut};
pub(crate) use ste_tests::keys::Kv;

/// Renumbering reaches a key-value's revisions.
pub(crate) trait Visit {
    /// Calls `f` on every revision the value holds.
    fn visit(&mut self, f: &mut dyn FnMut(&mut i64));
}

impl Visit for Kv {
    fn visit(&mut self, f: &mut dyn FnMut(&mut i64)) {
        f(&mut self.create);
        f(&mut self.modified);
    }
}

/// `f` on the revisions only: the differential runs no leases, so lease
/// IDs are compared as they are.
fn revisions_only<'a>(f: &'a mut dyn FnMut(&mut i64)) -> impl FnMut(Num, &mut i64) + 'a {
    move |num, value| {
        if num == Num::Revision {
            f(value)
        }
    }
}

/// Visits a range or Txn answer's revisions only.
fn visit_revisions(visit: impl FnOnce(&mut Visitor), f: &mut dyn FnMut(&mut i64)) {
    visit(&mut revisions_only(f))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) put: bool,
    pub(crate) kv: Kv,
    pub(crate) prev: Option<Kv>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct WatchOut {
    /// Header revision of the "created" answer (the current revision).
    pub(crate) created_header: i64,
    /// Every event received, flattened: how events are batched into
    /// responses is not part of the contract.
    pub(crate) events: Vec<Event>,
    pub(crate) canceled: bool,
    pub(crate) cancel_header: i64,
    pub(crate) cancel_reason: String,
    pub(crate) compact_revision: i64,
    /// Header revision and watch ID of the answer to RequestProgress, sent
    /// once the expected events arrived (any event after it would be a
    /// duplicate or a stray).
    pub(crate) progress: Option<(i64, i64)>,
}

impl WatchOut {
    pub(crate) fn visit(&mut self, f: &mut dyn FnMut(&mut i64)) {
        f(&mut self.created_header);
        for event in &mut self.events {
            event.kv.visit(f);
            if let Some(prev) = &mut event.prev {
                prev.visit(f);
            }
        }
        f(&mut self.cancel_header);
        f(&mut self.compact_revision);
        if let Some((header, _)) = &mut self.progress {
            f(header);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Error { code: Code, message: String },
    Range(Range),
    Txn(TxnOut),
    Compact { header: i64 },
    Watch(WatchOut),
}

impl Outcome {
    pub(crate) fn error(e: etcd_client::Error) -> Outcome {
        match e {
            etcd_client::Error::GRpcStatus(status) => Outcome::Error {
                code: status.code(),
                message: status.message().to_owned(),
            },
            other => panic!("not a gRPC status: {other}"),
        }
    }

    pub(crate) fn visit(&mut self, f: &mut dyn FnMut(&mut i64)) {
        match self {
            Outcome::Error { .. } => {}
            Outcome::Range(r) => visit_revisions(|v| r.visit(v), f),
            Outcome::Txn(t) => visit_revisions(|v| t.visit(v), f),
            Outcome::Compact { header } => f(header),
            Outcome::Watch(w) => w.visit(f),
        }
    }

    pub(crate) fn revisions(&self) -> Vec<i64> {
        let mut out = Vec::new();
        self.clone().visit(&mut |r| out.push(*r));
        out
    }

    pub(crate) fn header(&self) -> i64 {
        match self {
            Outcome::Range(r) => r.header,
            Outcome::Txn(t) => t.header,
            Outcome::Compact { header } => *header,
            other => panic!("no header revision in {other:?}"),
        }
    }

    pub(crate) fn txn(&self) -> &TxnOut {
        match self {
            Outcome::Txn(t) => t,
            other => panic!("not a txn answer: {other:?}"),
        }
    }
}
