//! etcd answers normalised for comparing the router with a real etcd:
//! what both must agree on, with every revision and lease ID reachable by
//! a visitor so that one side's numbers can be mapped onto the other's
//! (the differential tests and the differential fuzzer share these).

use etcd_client::TxnOpResponse;

use crate::keys::Kv;

/// What a number in an answer is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Num {
    /// A revision (header, create, mod, compact).
    Revision,
    /// A lease ID.
    Lease,
}

/// A visitor of every number of an answer that renumbering maps.
pub type Visitor<'a> = dyn FnMut(Num, &mut i64) + 'a;

/// Calls `f` on a key-value's revisions and lease.
pub fn visit_kv(kv: &mut Kv, f: &mut Visitor) {
    f(Num::Revision, &mut kv.create);
    f(Num::Revision, &mut kv.modified);
    f(Num::Lease, &mut kv.lease);
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A Range answer.
pub struct RangeOut {
    pub header: i64,
    pub kvs: Vec<Kv>,
    pub count: i64,
    pub more: bool,
}

impl RangeOut {
    /// The normalised form of `r`.
    pub fn of(r: &etcd_client::GetResponse) -> RangeOut {
        RangeOut {
            header: r.header().map(|h| h.revision()).unwrap_or(-1),
            kvs: r.kvs().iter().map(Kv::of).collect(),
            count: r.count(),
            more: r.more(),
        }
    }

    /// Calls `f` on every revision and lease ID.
    pub fn visit(&mut self, f: &mut Visitor) {
        f(Num::Revision, &mut self.header);
        self.kvs.iter_mut().for_each(|kv| visit_kv(kv, f));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// One operation's answer inside a Txn.
pub enum OpOut {
    Range(RangeOut),
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
/// A Txn answer, its operations' answers in order.
pub struct TxnOut {
    pub header: i64,
    pub succeeded: bool,
    pub responses: Vec<OpOut>,
}

impl TxnOut {
    /// The normalised form of `t`.
    pub fn of(t: &etcd_client::TxnResponse) -> TxnOut {
        let responses = t
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(r) => OpOut::Range(RangeOut::of(&r)),
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

    /// Calls `f` on every revision and lease ID.
    pub fn visit(&mut self, f: &mut Visitor) {
        f(Num::Revision, &mut self.header);
        for op in &mut self.responses {
            match op {
                OpOut::Range(r) => r.visit(f),
                OpOut::Put { header, prev } => {
                    f(Num::Revision, header);
                    if let Some(kv) = prev {
                        visit_kv(kv, f);
                    }
                }
                OpOut::Delete { header, prev, .. } => {
                    f(Num::Revision, header);
                    prev.iter_mut().for_each(|kv| visit_kv(kv, f));
                }
                OpOut::Txn(t) => t.visit(f),
            }
        }
    }
}
