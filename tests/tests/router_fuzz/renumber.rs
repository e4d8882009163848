//! The renumbering between the router's revisions and lease IDs and the
//! reference etcd's, learned as the sequence runs: both receive the same
//! requests one at a time, so the n-th write of one is the n-th write of
//! the other, and a lease granted by the same request is the same lease.

use std::collections::{BTreeMap, HashMap};

use crate::answer::{Answer, Num};
use crate::request::Ids;

/// Router number ↔ etcd number.
#[derive(Default)]
pub(crate) struct Numbers {
    /// Router revision → etcd revision, of the start and of every write.
    revisions: BTreeMap<i64, i64>,
    /// The inverse.
    etcd_revisions: BTreeMap<i64, i64>,
    pub(crate) current_etcd: i64,
    pub(crate) current_router: i64,
    /// Router lease ID → etcd lease ID, of leases the servers chose.
    leases: HashMap<i64, i64>,
    etcd_leases: HashMap<i64, i64>,
}

/// What marks a router number that stands for no etcd number: far below
/// anything real, and still showing the router's number.
const UNMAPPED: i64 = -1_000_000_000_000;

impl Numbers {
    /// Both systems' revision before the first request.
    pub(crate) fn start(&mut self, etcd: i64, router: i64) {
        self.current_etcd = etcd;
        self.current_router = router;
        self.revisions.insert(router, etcd);
        self.etcd_revisions.insert(etcd, router);
    }

    /// Learns from the two answers to one KV or lease request: a header
    /// above the current revision is a write, and etcd's writes take
    /// exactly the next revision; a lease granted by both is one lease.
    pub(crate) fn learn(&mut self, etcd: &Answer, router: &Answer) -> Result<(), String> {
        if let (Some(e), Some(r)) = (etcd.header(), router.header()) {
            match (e > self.current_etcd, r > self.current_router) {
                (true, true) => {
                    if e != self.current_etcd + 1 {
                        return Err(format!(
                            "etcd jumped from revision {} to {e}",
                            self.current_etcd
                        ));
                    }
                    self.revisions.insert(r, e);
                    self.etcd_revisions.insert(e, r);
                    self.current_etcd = e;
                    self.current_router = r;
                }
                (false, false) => {}
                (true, false) => return Err("etcd wrote, the router did not".into()),
                (false, true) => return Err("the router wrote, etcd did not".into()),
            }
        }
        if let (Answer::LeaseGrant { id: e, .. }, Answer::LeaseGrant { id: r, .. }) = (etcd, router)
        {
            self.leases.insert(*r, *e);
            self.etcd_leases.insert(*e, *r);
        }
        Ok(())
    }

    /// A router revision in etcd's numbers.
    pub(crate) fn etcd_revision(&self, router: i64) -> i64 {
        if router <= 0 {
            router
        } else if let Some(&e) = self.revisions.get(&router) {
            e
        } else if router > self.current_router {
            self.current_etcd + (router - self.current_router)
        } else {
            UNMAPPED + router
        }
    }

    /// The router's answer in etcd's numbers.
    pub(crate) fn to_etcd(&self, answer: &Answer) -> Answer {
        let mut mapped = answer.clone();
        mapped.visit(&mut |num, value| {
            *value = match num {
                Num::Revision => self.etcd_revision(*value),
                Num::Lease => self.leases.get(value).copied().unwrap_or(*value),
            }
        });
        mapped
    }
}

impl Ids for Numbers {
    /// An etcd revision in the router's numbers: a revision etcd had is
    /// the router's revision of the same write; a future one is as far
    /// above the router's current revision.
    fn revision(&self, etcd: i64) -> i64 {
        if etcd <= 0 {
            etcd
        } else if let Some(&r) = self.etcd_revisions.get(&etcd) {
            r
        } else if etcd > self.current_etcd {
            self.current_router + (etcd - self.current_etcd)
        } else {
            // Below the start: the same distance below the router's start.
            let (&e0, &r0) = self.etcd_revisions.iter().next().expect("started");
            (r0 - (e0 - etcd)).max(1)
        }
    }

    fn lease(&self, etcd: i64) -> i64 {
        self.etcd_leases.get(&etcd).copied().unwrap_or(etcd)
    }
}
