//! Evaluating a client's Txn compares against the key index, as etcd
//! evaluates them against its MVCC store (`applyCompare` in etcd's
//! `server/etcdserver/txn`): a compare on a missing key sees version,
//! create_revision, mod_revision and lease as 0, and a VALUE compare on a
//! missing key fails whatever its result.

use ste_core::index::IndexEntry;
use ste_proto::etcd::etcdserverpb::{self as pb, compare};

/// Does one compare hold for the key's current state? `value` is needed
/// only for VALUE compares.
pub fn compare_holds(c: &pb::Compare, entry: Option<&IndexEntry>, value: Option<&[u8]>) -> bool {
    use std::cmp::Ordering;
    let ordering = match (c.target(), &c.target_union) {
        (pb::compare::CompareTarget::Value, Some(compare::TargetUnion::Value(want))) => {
            // etcd: a value compare on a missing key always fails.
            match (entry, value) {
                (Some(_), Some(have)) => have.cmp(want.as_slice()),
                _ => return false,
            }
        }
        (target, union) => {
            let have = match (target, entry) {
                (_, None) => 0,
                (pb::compare::CompareTarget::Version, Some(e)) => e.version,
                (pb::compare::CompareTarget::Create, Some(e)) => e.create.0,
                (pb::compare::CompareTarget::Mod, Some(e)) => e.modified.0,
                (pb::compare::CompareTarget::Lease, Some(e)) => e.lease,
                (pb::compare::CompareTarget::Value, Some(_)) => return false,
            };
            let want = match union {
                Some(compare::TargetUnion::Version(v))
                | Some(compare::TargetUnion::CreateRevision(v))
                | Some(compare::TargetUnion::ModRevision(v))
                | Some(compare::TargetUnion::Lease(v)) => *v,
                _ => 0,
            };
            have.cmp(&want)
        }
    };
    match c.result() {
        pb::compare::CompareResult::Equal => ordering == Ordering::Equal,
        pb::compare::CompareResult::NotEqual => ordering != Ordering::Equal,
        pb::compare::CompareResult::Greater => ordering == Ordering::Greater,
        pb::compare::CompareResult::Less => ordering == Ordering::Less,
    }
}

/// True when a compare needs the key's value (only the shard has it).
pub fn needs_value(c: &pb::Compare) -> bool {
    c.target() == pb::compare::CompareTarget::Value
}

#[cfg(test)]
mod tests;
