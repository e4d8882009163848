//! What the generator knows of the reference etcd, learned from its
//! answers: live keys with their mod revisions and leases, granted leases,
//! the current and compacted revisions, in etcd's numbers. It only steers
//! the generator (which revisions and leases to name) and need not be
//! exact: the comparison is between the two systems, not with the model.

use std::collections::BTreeMap;

use crate::answer::{Answer, OpOut};
use crate::generate::COMPACT_KEY;
use crate::request::{Op, Req};

#[derive(Debug, Clone, Default)]
struct KeyState {
    /// Mod revisions since the key was created, oldest first.
    mods: Vec<i64>,
    lease: i64,
}

/// What the generator knows of the reference etcd.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) current: i64,
    pub(crate) compacted: i64,
    keys: BTreeMap<String, KeyState>,
    pub(crate) leases: Vec<i64>,
    /// kube-apiserver's compactor state: compact_rev_key's version.
    compact_version: i64,
}

impl Model {
    /// A fresh etcd at revision `current`.
    pub(crate) fn starting_at(current: i64) -> Model {
        Model {
            current,
            ..Model::default()
        }
    }

    /// Learns from one request and the reference etcd's answer to it.
    pub(crate) fn apply(&mut self, req: &Req, answer: &Answer) {
        if let Some(header) = answer.header() {
            self.current = self.current.max(header);
        }
        match (req, answer) {
            (
                Req::Put {
                    key,
                    lease,
                    ignore_lease,
                    ..
                },
                Answer::Put { header, .. },
            ) => {
                let state = self.keys.entry(key.clone()).or_default();
                state.mods.push(*header);
                if !ignore_lease {
                    state.lease = *lease;
                }
            }
            (Req::Delete { keys, .. }, Answer::Delete { deleted, .. }) if *deleted > 0 => {
                self.keys.retain(|k, _| !keys.contains(k));
            }
            (Req::Txn { success, .. }, Answer::Txn(t)) if t.succeeded => {
                for (op, out) in success.iter().zip(&t.responses) {
                    match (op, out) {
                        (Op::Put { key, .. }, OpOut::Put { header, .. }) => {
                            let state = self.keys.entry(key.clone()).or_default();
                            state.mods.push(*header);
                            state.lease = 0;
                        }
                        (Op::Delete { key, .. }, _) => {
                            self.keys.remove(key);
                        }
                        _ => {}
                    }
                }
            }
            (Req::Compact { revision, .. }, Answer::Compact { .. }) => {
                self.compacted = *revision;
            }
            (Req::LeaseGrant { .. }, Answer::LeaseGrant { id, .. }) => self.leases.push(*id),
            (Req::LeaseRevoke { lease }, Answer::LeaseRevoke { .. }) => {
                self.leases.retain(|l| l != lease);
                self.keys.retain(|_, s| s.lease != *lease);
            }
            _ => {}
        }
        self.compact_version = self
            .keys
            .get(COMPACT_KEY)
            .map_or(0, |s| s.mods.len() as i64);
    }

    /// The mod revision the key had before its current one, if any.
    pub(crate) fn stale_mod_of(&self, key: &str) -> Option<i64> {
        let mods = &self.keys.get(key)?.mods;
        (mods.len() >= 2).then(|| mods[mods.len() - 2])
    }

    /// compact_rev_key's version: what kube-apiserver's compactor
    /// compares.
    pub(crate) fn compact_version(&self) -> i64 {
        self.compact_version
    }

    /// The key's mod revision, 0 if absent.
    pub(crate) fn mod_of(&self, key: &str) -> i64 {
        self.keys
            .get(key)
            .and_then(|s| s.mods.last().copied())
            .unwrap_or(0)
    }
}
