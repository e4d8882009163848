//! The seeded request generator and the little model of etcd's state it
//! draws from (live keys with their mod revisions, leases, the current and
//! compacted revisions), all in the reference etcd's numbers.
//!
//! The key space is small (a dozen pods over three namespaces, a namespace
//! that shares a prefix with another, and a few keys outside
//! `/registry/pods/`) so that requests collide. Only requests the router
//! serves are generated: docs/router.md ("The etcd API it serves") lists
//! what it refuses on purpose (sorts other than by key, the min/max
//! revision filters, Txns writing two keys or in the failure branch,
//! nested Txns), and those are left out here rather than normalised.

use etcd_client::CompareOp;

use crate::model::Model;
use crate::request::{Cmp, Keys, Op, RangeOpts, Req, Target};

pub(crate) const COMPACT_KEY: &str = "compact_rev_key";

const KEYS: &[&str] = &[
    "/registry/pods/ns0/p0",
    "/registry/pods/ns0/p1",
    "/registry/pods/ns0/p2",
    "/registry/pods/ns0/p3",
    "/registry/pods/ns1/p0",
    "/registry/pods/ns1/p1",
    "/registry/pods/ns1/p2",
    "/registry/pods/ns1/p3",
    "/registry/pods/ns2/p0",
    "/registry/pods/ns2/p1",
    "/registry/pods/ns2/p2",
    "/registry/pods/ns2/p3",
    "/registry/pods/ns10/p0",
    "/registry/pods",
    "/registry/podtemplates/ns0/t",
    "/registry/services/specs/ns0/s",
    COMPACT_KEY,
];

const PREFIXES: &[&str] = &[
    "/registry/pods/",
    "/registry/pods/ns1/",
    "/registry/pods/ns1",
    "/registry/pods/ns0/p",
    "/registry/",
    "/registry/pods/ns2/p3",
];

/// Lease IDs the generator asks for explicitly (so that a grant can find
/// one taken).
const LEASE_IDS: &[i64] = &[100, 101, 102, 103];
/// Long enough that no lease expires during a run: expiry depends on
/// timing, and the fuzzer compares a deterministic sequence.
pub(crate) const LEASE_TTL: i64 = 3600;
/// At most this many watches open at once.
const MAX_WATCHES: usize = 6;

/// The seeded generator.
pub(crate) struct Generator {
    rng: fastrand::Rng,
    next_value: u32,
}

impl Generator {
    pub(crate) fn new(seed: u64) -> Generator {
        Generator {
            rng: fastrand::Rng::with_seed(seed),
            next_value: 0,
        }
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.u32(0..100) < percent
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.rng.usize(0..from.len())].clone()
    }

    fn key(&mut self) -> String {
        // Rarely the empty key, which etcd refuses ("key is not provided").
        if self.rng.u32(0..200) == 0 {
            return String::new();
        }
        self.pick(KEYS).to_owned()
    }

    fn value(&mut self) -> String {
        // A few values repeat, so that value compares and same-value puts
        // happen.
        if self.chance(30) {
            format!("v{}", self.rng.u32(0..3))
        } else {
            self.next_value += 1;
            format!("{{\"kind\":\"Pod\",\"n\":{}}}", self.next_value)
        }
    }

    fn keys(&mut self) -> Keys {
        match self.rng.u32(0..10) {
            0..=2 => Keys::One(self.key()),
            3..=5 => Keys::Prefix(self.pick(PREFIXES).to_owned()),
            6 | 7 => {
                let (a, b) = (self.key(), self.key());
                // Sometimes range_end <= key: an empty range.
                if a <= b || self.chance(20) {
                    Keys::Range(a, b)
                } else {
                    Keys::Range(b, a)
                }
            }
            8 => Keys::FromKey(self.key()),
            _ => Keys::All,
        }
    }

    /// A revision to read or watch at, in etcd's numbers: mostly valid
    /// ones, some compacted, some in the future, some 0 (current).
    fn revision(&mut self, model: &Model) -> i64 {
        let low = model.compacted.max(1);
        match self.rng.u32(0..10) {
            0 => 0,
            1..=2 => model.current,
            3..=6 => self.rng.i64(low..=model.current.max(low)),
            7 => (model.compacted - self.rng.i64(0..2)).max(1),
            _ => model.current + self.rng.i64(1..3),
        }
    }

    /// A mod revision for kube's update/delete shapes: mostly the key's
    /// current one, else a stale one, 0, or any.
    fn expected_mod(&mut self, model: &Model, key: &str) -> i64 {
        match self.rng.u32(0..10) {
            0..=5 => model.mod_of(key),
            6 => model.stale_mod_of(key).unwrap_or(1),
            7 => 0,
            _ => self.rng.i64(1..=model.current.max(1)),
        }
    }

    fn lease(&mut self, model: &Model) -> i64 {
        if !model.leases.is_empty() && self.chance(80) {
            self.pick(&model.leases)
        } else {
            self.pick(LEASE_IDS) + 1000
        }
    }

    fn range_opts(&mut self, model: &Model) -> RangeOpts {
        RangeOpts {
            limit: if self.chance(40) {
                self.rng.i64(1..5)
            } else {
                0
            },
            revision: if self.chance(35) {
                self.revision(model)
            } else {
                0
            },
            count_only: self.chance(10),
            keys_only: self.chance(15),
            sort_by_key: self.chance(5),
        }
    }

    fn get(&mut self, model: &Model) -> Op {
        let keys = self.keys();
        let mut o = self.range_opts(model);
        // A Txn's reads are at its own revision.
        o.revision = 0;
        Op::Get(keys, o)
    }

    fn op(&mut self) -> CompareOp {
        self.pick(&[
            CompareOp::Equal,
            CompareOp::NotEqual,
            CompareOp::Greater,
            CompareOp::Less,
        ])
    }

    fn compare(&mut self, model: &Model, key: String) -> Cmp {
        let target = match self.rng.u32(0..5) {
            0 => Target::Version(self.rng.i64(0..4)),
            1 => Target::Create(self.expected_mod(model, &key)),
            2 => Target::Mod(self.expected_mod(model, &key)),
            3 => Target::Value(self.value()),
            _ => Target::Lease(if self.chance(50) {
                0
            } else {
                self.lease(model)
            }),
        };
        let op = match target {
            // A server-chosen lease ID is random on both systems: only
            // (in)equality survives renumbering, not order.
            Target::Lease(_) => self.pick(&[CompareOp::Equal, CompareOp::NotEqual]),
            _ => self.op(),
        };
        Cmp { key, op, target }
    }

    fn txn(&mut self, model: &Model) -> Req {
        let key = self.key();
        let mod_is = |r: i64| Cmp {
            key: key.clone(),
            op: CompareOp::Equal,
            target: Target::Mod(r),
        };
        let put = |g: &mut Self| Op::Put {
            key: key.clone(),
            value: g.value(),
            prev_kv: g.chance(20),
        };
        let get = Op::Get(Keys::One(key.clone()), RangeOpts::default());
        match self.rng.u32(0..10) {
            // kube-apiserver's create, update, delete.
            0 | 1 => Req::Txn {
                compares: vec![mod_is(0)],
                success: vec![put(self)],
                failure: vec![],
            },
            2..=4 => {
                let r = self.expected_mod(model, &key);
                Req::Txn {
                    compares: vec![mod_is(r)],
                    success: vec![put(self)],
                    failure: vec![get],
                }
            }
            5 | 6 => {
                let r = self.expected_mod(model, &key);
                Req::Txn {
                    compares: vec![mod_is(r)],
                    success: vec![Op::Delete {
                        key: key.clone(),
                        prev_kv: self.chance(20),
                    }],
                    failure: vec![get],
                }
            }
            // kube-apiserver's compactor.
            7 => Req::Txn {
                compares: vec![Cmp {
                    key: COMPACT_KEY.into(),
                    op: CompareOp::Equal,
                    target: Target::Version(if self.chance(80) {
                        model.compact_version()
                    } else {
                        self.rng.i64(0..3)
                    }),
                }],
                success: vec![Op::Put {
                    key: COMPACT_KEY.into(),
                    value: String::new(),
                    prev_kv: false,
                }],
                failure: vec![Op::Get(Keys::One(COMPACT_KEY.into()), RangeOpts::default())],
            },
            // The general form: compares on K, at most one write of K in
            // the success branch, reads anywhere.
            8 => {
                let compares = (0..self.rng.usize(0..3))
                    .map(|_| self.compare(model, key.clone()))
                    .collect();
                let mut success: Vec<Op> =
                    (0..self.rng.usize(0..2)).map(|_| self.get(model)).collect();
                let write = if self.chance(50) {
                    put(self)
                } else {
                    Op::Delete {
                        key: key.clone(),
                        prev_kv: self.chance(50),
                    }
                };
                success.insert(self.rng.usize(0..=success.len()), write);
                let failure = (0..self.rng.usize(0..3)).map(|_| self.get(model)).collect();
                Req::Txn {
                    compares,
                    success,
                    failure,
                }
            }
            // Without a write: compares and reads on any keys.
            _ => {
                let compares = (0..self.rng.usize(0..3))
                    .map(|_| {
                        let k = self.key();
                        self.compare(model, k)
                    })
                    .collect();
                let success = (0..self.rng.usize(0..3)).map(|_| self.get(model)).collect();
                let failure = (0..self.rng.usize(0..3)).map(|_| self.get(model)).collect();
                Req::Txn {
                    compares,
                    success,
                    failure,
                }
            }
        }
    }

    /// The next request. `open` lists the watches that may be canceled,
    /// `progressable` those that may be asked for progress; a new one gets
    /// number `next_watch`.
    pub(crate) fn next(
        &mut self,
        model: &Model,
        open: &[usize],
        progressable: &[usize],
        next_watch: usize,
    ) -> Req {
        let roll = self.rng.u32(0..1000);
        match roll {
            0..=149 => Req::Put {
                key: self.key(),
                value: self.value(),
                prev_kv: self.chance(30),
                lease: if self.chance(20) {
                    self.lease(model)
                } else {
                    0
                },
                ignore_value: self.chance(3),
                ignore_lease: self.chance(3),
            },
            150..=519 => self.txn(model),
            520..=699 => {
                let keys = self.keys();
                Req::Range(keys, self.range_opts(model))
            }
            700..=759 => Req::Delete {
                keys: if self.chance(60) {
                    Keys::One(self.key())
                } else {
                    let keys = self.keys();
                    if keys == Keys::All && self.chance(70) {
                        Keys::One(self.key())
                    } else {
                        keys
                    }
                },
                prev_kv: self.chance(40),
            },
            760..=779 => Req::Compact {
                revision: match self.rng.u32(0..10) {
                    0 => model.compacted,
                    1 => model.current + 1,
                    _ => self.rng.i64(model.compacted.max(1)..=model.current.max(1)),
                },
                physical: self.chance(30),
            },
            780..=849 => {
                if open.len() < MAX_WATCHES && (open.is_empty() || self.chance(50)) {
                    // Mostly prefixes, as kube-apiserver watches.
                    let keys = if self.chance(50) {
                        Keys::Prefix(self.pick(PREFIXES).to_owned())
                    } else {
                        self.keys()
                    };
                    Req::WatchCreate {
                        watch: next_watch,
                        keys,
                        start: if self.chance(40) {
                            0
                        } else {
                            self.revision(model)
                        },
                        prev_kv: self.chance(50),
                        no_put: self.chance(10),
                        no_delete: self.chance(10),
                    }
                } else if progressable.is_empty() || self.chance(50) {
                    Req::WatchCancel {
                        watch: self.pick(open),
                    }
                } else {
                    Req::WatchProgress {
                        watch: self.pick(progressable),
                    }
                }
            }
            850..=889 => Req::LeaseGrant {
                id: if self.chance(50) {
                    0
                } else {
                    self.pick(LEASE_IDS)
                },
                ttl: LEASE_TTL,
            },
            890..=919 => Req::LeaseRevoke {
                lease: self.lease(model),
            },
            920..=944 => Req::LeaseKeepAlive {
                lease: self.lease(model),
            },
            945..=984 => Req::LeaseTimeToLive {
                lease: self.lease(model),
                keys: self.chance(60),
            },
            _ => Req::LeaseLeases,
        }
    }
}
