//! Responses normalised for comparison: what both systems must agree on,
//! with every revision reachable through `visit` for the renumbering.

use etcd_client::TxnOpResponse;
use tonic::Code;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) header: i64,
    pub(crate) kvs: Vec<Kv>,
    pub(crate) count: i64,
    pub(crate) more: bool,
}

impl Range {
    pub(crate) fn of(r: &etcd_client::GetResponse) -> Range {
        Range {
            header: r.header().map(|h| h.revision()).unwrap_or(-1),
            kvs: r.kvs().iter().map(Kv::of).collect(),
            count: r.count(),
            more: r.more(),
        }
    }

    pub(crate) fn visit(&mut self, f: &mut dyn FnMut(&mut i64)) {
        f(&mut self.header);
        self.kvs.iter_mut().for_each(|kv| kv.visit(f));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpOut {
    Range(Range),
    Put {
        header: i64,
        prev: Option<Kv>,
    },
    Delete {
        header: i64,
        deleted: i64,
        prev: Vec<Kv>,
    },
    Txn(TxnOut),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnOut {
    pub(crate) header: i64,
    pub(crate) succeeded: bool,
    pub(crate) responses: Vec<OpOut>,
}

impl TxnOut {
    pub(crate) fn of(t: &etcd_client::TxnResponse) -> TxnOut {
        let responses = t
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(r) => OpOut::Range(Range::of(&r)),
                TxnOpResponse::Put(p) => OpOut::Put {
                    header: p.header().map(|h| h.revision()).unwrap_or(-1),
                    prev: p.prev_key().map(Kv::of),
                },
                TxnOpResponse::Delete(d) => OpOut::Delete {
                    header: d.header().map(|h| h.revision()).unwrap_or(-1),
                    deleted: d.deleted(),
                    prev: d.prev_kvs().iter().map(Kv::of).collect(),
                },
                TxnOpResponse::Txn(t) => OpOut::Txn(TxnOut::of(&t)),
            })
            .collect();
        TxnOut {
            header: t.header().map(|h| h.revision()).unwrap_or(-1),
            succeeded: t.succeeded(),
            responses,
        }
    }

    pub(crate) fn visit(&mut self, f: &mut dyn FnMut(&mut i64)) {
        f(&mut self.header);
        for op in &mut self.responses {
            match op {
                OpOut::Range(r) => r.visit(f),
                OpOut::Put { header, prev } => {
                    f(header);
                    if let Some(kv) = prev {
                        kv.visit(f);
                    }
                }
                OpOut::Delete { header, prev, .. } => {
                    f(header);
                    prev.iter_mut().for_each(|kv| kv.visit(f));
                }
                OpOut::Txn(t) => t.visit(f),
            }
        }
    }
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
            Outcome::Range(r) => r.visit(f),
            Outcome::Txn(t) => t.visit(f),
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
