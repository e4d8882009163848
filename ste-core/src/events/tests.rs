//! Tests of ordering, whole-revision eviction, the floor and `since`.

use proptest::prelude::*;

use super::*;

/// A test event: a revision, a size, and a tag to tell events apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ev {
    rev: i64,
    size: usize,
    tag: u32,
}

impl LogEvent for Ev {
    fn revision(&self) -> GlobalRevision {
        GlobalRevision(self.rev)
    }
    fn size_bytes(&self) -> usize {
        self.size
    }
}

fn ev(rev: i64, size: usize, tag: u32) -> Ev {
    Ev { rev, size, tag }
}

fn g(n: i64) -> GlobalRevision {
    GlobalRevision(n)
}

fn revs(log: &EventLog<Ev>, from: i64) -> Vec<(i64, u32)> {
    match log.since(g(from)) {
        Ok(events) => events.map(|e| (e.rev, e.tag)).collect(),
        Err(err) => panic!("since({from}): {err}"),
    }
}

#[test]
fn new_log_is_empty_and_complete_from_its_floor() {
    let log: EventLog<Ev> = EventLog::new(100, g(11));
    assert!(log.is_empty());
    assert_eq!((log.len(), log.bytes(), log.max_bytes()), (0, 0, 100));
    assert_eq!((log.first_revision(), log.last_revision()), (None, None));
    assert_eq!(log.oldest_available(), g(11));
    assert_eq!(revs(&log, 11), vec![]);
    assert_eq!(revs(&log, 500), vec![]);
    assert_eq!(
        log.since(g(10)).err(),
        Some(Compacted {
            compact_revision: g(11)
        })
    );
}

#[test]
fn since_returns_events_from_the_revision_on() {
    let mut log = EventLog::new(1000, g(1));
    for e in [
        ev(1, 1, 0),
        ev(3, 1, 1),
        ev(3, 1, 2),
        ev(4, 1, 3),
        ev(7, 1, 4),
    ] {
        log.push(e).expect("in order");
    }
    assert_eq!(revs(&log, 1).len(), 5);
    assert_eq!(revs(&log, 2), vec![(3, 1), (3, 2), (4, 3), (7, 4)]);
    assert_eq!(revs(&log, 3), vec![(3, 1), (3, 2), (4, 3), (7, 4)]);
    assert_eq!(revs(&log, 5), vec![(7, 4)]);
    assert_eq!(revs(&log, 8), vec![]);
    assert_eq!(
        (log.first_revision(), log.last_revision()),
        (Some(g(1)), Some(g(7)))
    );
    assert_eq!(log.bytes(), 5);
}

#[test]
fn out_of_order_pushes_are_refused() {
    let mut log = EventLog::new(1000, g(5));
    assert_eq!(
        log.push(ev(4, 1, 0)),
        Err(EventLogError::OutOfOrder {
            got: g(4),
            min: g(5)
        })
    );
    log.push(ev(6, 1, 0)).expect("at floor or above");
    log.push(ev(6, 1, 1)).expect("same revision is fine");
    assert_eq!(
        log.push(ev(5, 1, 2)),
        Err(EventLogError::OutOfOrder {
            got: g(5),
            min: g(6)
        })
    );
    assert_eq!(log.len(), 2);
    assert_eq!(log.bytes(), 2);
}

#[test]
fn eviction_removes_whole_revisions_and_raises_the_floor() {
    let mut log = EventLog::new(10, g(1));
    log.push(ev(1, 3, 0)).expect("push");
    log.push(ev(2, 3, 1)).expect("push");
    log.push(ev(2, 3, 2)).expect("push");
    assert_eq!(log.bytes(), 9);
    // 12 > 10: revision 1 goes (3 bytes), leaving 9.
    log.push(ev(3, 3, 3)).expect("push");
    assert_eq!(revs(&log, 2), vec![(2, 1), (2, 2), (3, 3)]);
    assert_eq!(log.floor(), g(2));
    assert_eq!(
        log.since(g(1)).err(),
        Some(Compacted {
            compact_revision: g(2)
        })
    );
    // 12 > 10 again: both events of revision 2 go together, leaving 6.
    log.push(ev(3, 3, 4)).expect("push");
    assert_eq!(revs(&log, 3), vec![(3, 3), (3, 4)]);
    assert_eq!((log.floor(), log.bytes()), (g(3), 6));
}

#[test]
fn the_newest_revision_is_kept_even_over_budget() {
    let mut log = EventLog::new(4, g(1));
    log.push(ev(1, 2, 0)).expect("push");
    log.push(ev(2, 50, 1)).expect("push");
    assert_eq!(revs(&log, 2), vec![(2, 1)]);
    assert_eq!((log.bytes(), log.floor()), (50, g(2)));
    log.push(ev(2, 50, 2)).expect("push");
    assert_eq!(revs(&log, 2), vec![(2, 1), (2, 2)]);
    log.push(ev(3, 1, 3)).expect("push");
    assert_eq!(revs(&log, 3), vec![(3, 3)]);
    assert_eq!((log.bytes(), log.floor()), (1, g(3)));
}

#[test]
fn floor_may_sit_in_a_gap_below_the_first_event() {
    let mut log = EventLog::new(5, g(1));
    log.push(ev(2, 5, 0)).expect("push");
    log.push(ev(9, 5, 1)).expect("push");
    // Revision 2 evicted; revisions 3..=8 had no events.
    assert_eq!(log.floor(), g(3));
    assert_eq!(revs(&log, 3), vec![(9, 1)]);
    assert_eq!(log.first_revision(), Some(g(9)));
}

#[test]
fn compact_drops_below_and_keeps_the_revision_itself() {
    let mut log = EventLog::new(1000, g(1));
    for r in 1..=5 {
        log.push(ev(r, 1, 0)).expect("push");
    }
    log.compact(g(3));
    assert_eq!(log.floor(), g(3));
    assert_eq!(revs(&log, 3), vec![(3, 0), (4, 0), (5, 0)]);
    assert_eq!(
        log.since(g(2)).err(),
        Some(Compacted {
            compact_revision: g(3)
        })
    );
    assert_eq!(log.bytes(), 3);
    // Lower or equal compactions change nothing.
    log.compact(g(2));
    log.compact(g(3));
    assert_eq!((log.floor(), log.len()), (g(3), 3));
    // Compaction past the end empties the log and bars older pushes.
    log.compact(g(10));
    assert!(log.is_empty());
    assert_eq!(log.bytes(), 0);
    assert_eq!(
        log.push(ev(9, 1, 0)),
        Err(EventLogError::OutOfOrder {
            got: g(9),
            min: g(10)
        })
    );
    log.push(ev(10, 1, 0)).expect("at the floor");
}

#[test]
fn zero_budget_keeps_only_the_newest_revision() {
    let mut log = EventLog::new(0, g(1));
    for r in 1..=4 {
        log.push(ev(r, 1, 0)).expect("push");
        log.push(ev(r, 1, 1)).expect("push");
        assert_eq!(revs(&log, r), vec![(r, 0), (r, 1)]);
        assert_eq!(log.floor(), g(r));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a model that keeps everything: `since` either returns
    /// exactly the model's events from `from`, or refuses with the floor,
    /// and the log stays whole-revision, in budget (or one revision), and
    /// never loses events at or above the floor.
    #[test]
    fn since_is_exact_or_compacted(
        steps in proptest::collection::vec((0i64..3, 1usize..6, any::<bool>()), 1..40),
        max_bytes in 0usize..20,
        probes in proptest::collection::vec(0i64..80, 1..6),
    ) {
        let mut log = EventLog::new(max_bytes, g(1));
        let mut all: Vec<Ev> = Vec::new();
        let mut rev = 1;
        let mut last_floor = log.floor();
        for (tag, (step, size, compact)) in (0u32..).zip(steps) {
            rev += step;
            let e = ev(rev, size, tag);
            if compact {
                log.compact(g(rev));
            }
            prop_assert_eq!(log.push(e), Ok(()));
            all.push(e);
            prop_assert!(log.floor() >= last_floor);
            last_floor = log.floor();
            let held: Vec<Ev> = log.since(log.floor()).map(|it| it.copied().collect()).unwrap_or_default();
            prop_assert_eq!(log.bytes(), held.iter().map(|e| e.size).sum::<usize>());
            let first = held.first().map_or(rev, |e| e.rev);
            prop_assert!(log.bytes() <= max_bytes || first == rev, "over budget with old revisions");
            // Whole revisions: the model has no event of the first held
            // revision that the log lacks.
            let model_first = all.iter().filter(|e| e.rev == first).count();
            prop_assert_eq!(held.iter().filter(|e| e.rev == first).count(), model_first);
        }
        for from in probes {
            match log.since(g(from)) {
                Ok(events) => {
                    prop_assert!(g(from) >= log.floor());
                    let got: Vec<Ev> = events.copied().collect();
                    let want: Vec<Ev> = all.iter().copied().filter(|e| e.rev >= from).collect();
                    prop_assert_eq!(got, want);
                }
                Err(Compacted { compact_revision }) => {
                    prop_assert!(g(from) < log.floor());
                    prop_assert_eq!(compact_revision, log.floor());
                }
            }
        }
    }
}
