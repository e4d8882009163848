//! Comparing the two recordings after one monotonic renumbering of the
//! router's revisions onto etcd's.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::outcome::Outcome;
use crate::run::Step;

/// Router revision → etcd revision, strictly increasing.
#[derive(Default)]
struct Renumbering {
    pub(crate) map: BTreeMap<i64, i64>,
}

impl Renumbering {
    pub(crate) fn observe(&mut self, router: i64, etcd: i64) -> Result<(), String> {
        if router == 0 || etcd == 0 {
            // 0 means "none" (a tombstone's create revision, no compaction).
            return if router == etcd {
                Ok(())
            } else {
                Err(format!(
                    "router revision {router} vs etcd revision {etcd}: 0 on one side only"
                ))
            };
        }
        if let Some(&mapped) = self.map.get(&router) {
            return if mapped == etcd {
                Ok(())
            } else {
                Err(format!(
                    "router revision {router} was etcd {mapped} before, now etcd {etcd}"
                ))
            };
        }
        if let Some((&r, &e)) = self.map.range(..router).next_back()
            && e >= etcd
        {
            return Err(format!(
                "not monotonic: router {r} → etcd {e}, but router {router} → etcd {etcd}"
            ));
        }
        if let Some((&r, &e)) = self.map.range(router + 1..).next()
            && e <= etcd
        {
            return Err(format!(
                "not monotonic: router {router} → etcd {etcd}, but router {r} → etcd {e}"
            ));
        }
        self.map.insert(router, etcd);
        Ok(())
    }
}

pub(crate) const WATCH_AT_COMPACTION: &str =
    "watch from the compaction revision itself, a delete's revision";

/// The one difference from etcd that is kept on purpose, checked exactly
/// and then taken out of the router's answer.
///
/// A watch from the compaction revision C, where C is a delete. etcd's
/// compaction at C removes the tombstone at C (compaction keeps a key's
/// latest revision ≤ C only if it is not a deletion), but Compact answers
/// before that removal is done (kube does not ask for a physical
/// compaction). So, depending on timing, etcd's watch either silently
/// misses that DELETE event, or sends it without prev_kv (the read at C - 1
/// is compacted). The router always sends it from its log, without prev_kv
/// as etcd does when it sends it. Losing it is an etcd artefact, not a
/// contract, and kube never hits it: its compaction revision is always the
/// revision of its own compact_rev_key write.
fn known_difference(label: &str, etcd: &Outcome, router: &Outcome) -> Outcome {
    let mut router = router.clone();
    if label == WATCH_AT_COMPACTION {
        let Outcome::Watch(watch) = &mut router else {
            panic!("{label}: the router did not open the watch: {router:?}");
        };
        let first = watch
            .events
            .first()
            .cloned()
            .expect("the router sends events");
        assert!(
            !first.put && first.prev.is_none(),
            "{label}: the router's first event is the DELETE at the compaction revision, without prev_kv (etcd cannot read it at C - 1): {first:?}"
        );
        assert!(
            watch.events[1..]
                .iter()
                .all(|e| e.kv.modified > first.kv.modified),
            "{label}: and it is the oldest event: {watch:?}"
        );
        let etcd_sent_it = matches!(
            etcd,
            Outcome::Watch(w) if w.events.first().is_some_and(|e| !e.put && e.kv.key == first.kv.key)
        );
        if !etcd_sent_it {
            watch.events.remove(0);
        }
    }
    router
}

pub(crate) fn compare(etcd: &[Step], router: &[Step]) {
    let labels = |steps: &[Step]| steps.iter().map(|s| s.label.clone()).collect::<Vec<_>>();
    assert_eq!(
        labels(etcd),
        labels(router),
        "both runs take the same steps"
    );
    let mut renumbering = Renumbering::default();
    let mut failures = String::new();
    for (i, (e, r)) in etcd.iter().zip(router).enumerate() {
        let router_outcome = known_difference(&r.label, &e.outcome, &r.outcome);
        let etcd_revs = e.outcome.revisions();
        let router_revs = router_outcome.revisions();
        let mut mapped = router_outcome.clone();
        if etcd_revs.len() == router_revs.len() {
            let mut problems = Vec::new();
            for (&rr, &er) in router_revs.iter().zip(&etcd_revs) {
                if let Err(problem) = renumbering.observe(rr, er) {
                    problems.push(problem);
                }
            }
            if problems.is_empty() {
                let mut k = 0;
                mapped.visit(&mut |rev| {
                    *rev = etcd_revs[k];
                    k += 1;
                });
            } else {
                let _ = writeln!(
                    failures,
                    "step {i} `{}`: revisions do not renumber: {problems:?}",
                    e.label
                );
            }
        }
        if mapped != e.outcome {
            let _ = writeln!(
                failures,
                "step {i} `{}` differs\n  etcd:   {:?}\n  router: {:?} (renumbered)\n  router: {:?} (raw)",
                e.label, e.outcome, mapped, r.outcome
            );
        }
    }
    assert!(failures.is_empty(), "router differs from etcd:\n{failures}");
}
