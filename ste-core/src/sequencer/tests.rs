//! Tests of allocation, reservations, out-of-order completion and errors.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn g(n: i64) -> GlobalRevision {
    GlobalRevision(n)
}

fn seq(start: i64, reserved: i64) -> Sequencer {
    Sequencer::new(g(start), g(reserved)).expect("valid sequencer")
}

#[test]
fn fresh_sequencer_is_at_start() {
    let s = seq(10, 20);
    assert_eq!(
        (s.current(), s.last_allocated(), s.reserved_through()),
        (g(10), g(10), g(20))
    );
    assert_eq!((s.in_flight(), s.remaining()), (0, 10));
}

#[test]
fn new_refuses_bad_marks() {
    assert_eq!(
        Sequencer::new(g(10), g(9)),
        Err(SequencerError::ReservationBackwards {
            requested: g(9),
            reserved_through: g(10)
        })
    );
    assert_eq!(
        Sequencer::new(g(-1), g(5)),
        Err(SequencerError::NegativeStart(g(-1)))
    );
    assert_eq!(
        Sequencer::new(g(0), g(i64::MAX)),
        Err(SequencerError::ReservationTooHigh(g(i64::MAX)))
    );
    assert!(Sequencer::new(g(0), g(0)).is_ok());
    assert!(Sequencer::new(MAX_RESERVATION, MAX_RESERVATION).is_ok());
}

#[test]
fn allocate_counts_up_and_asks_for_reservations() {
    let mut s = seq(0, 2);
    assert_eq!(s.allocate(), Ok(g(1)));
    assert_eq!(s.allocate(), Ok(g(2)));
    assert_eq!(s.allocate(), Err(NeedsReservation { through: g(3) }));
    assert_eq!(
        s.allocate(),
        Err(NeedsReservation { through: g(3) }),
        "nothing allocated"
    );
    assert_eq!(
        (s.last_allocated(), s.in_flight(), s.remaining()),
        (g(2), 2, 0)
    );
    s.reserve(g(10_002)).expect("higher mark");
    assert_eq!(s.allocate(), Ok(g(3)));
    assert_eq!(s.remaining(), 9_999);
}

#[test]
fn reserve_only_moves_up_and_stays_below_max() {
    let mut s = seq(5, 100);
    assert_eq!(s.reserve(g(100)), Ok(()));
    assert_eq!(
        s.reserve(g(99)),
        Err(SequencerError::ReservationBackwards {
            requested: g(99),
            reserved_through: g(100)
        })
    );
    assert_eq!(
        s.reserve(g(i64::MAX)),
        Err(SequencerError::ReservationTooHigh(g(i64::MAX)))
    );
    assert_eq!(s.reserved_through(), g(100));
}

#[test]
fn allocation_stops_at_the_top_without_overflow() {
    let mut s = Sequencer::new(g(MAX_RESERVATION.0 - 1), MAX_RESERVATION).expect("valid");
    assert_eq!(s.allocate(), Ok(MAX_RESERVATION));
    assert_eq!(
        s.allocate(),
        Err(NeedsReservation {
            through: g(i64::MAX)
        })
    );
    assert_eq!(s.complete(MAX_RESERVATION), Ok(Some(MAX_RESERVATION)));
}

#[test]
fn current_waits_for_the_oldest_in_flight() {
    let mut s = seq(100, 1000);
    let (a, b, c) = (s.allocate(), s.allocate(), s.allocate());
    assert_eq!((a, b, c), (Ok(g(101)), Ok(g(102)), Ok(g(103))));
    assert_eq!(s.complete(g(103)), Ok(None));
    assert_eq!(s.complete(g(102)), Ok(None));
    assert_eq!(s.current(), g(100));
    assert_eq!(s.in_flight(), 1);
    assert_eq!(s.complete(g(101)), Ok(Some(g(103))), "folds all finished");
    assert_eq!((s.current(), s.in_flight()), (g(103), 0));
}

#[test]
fn in_order_completion_advances_each_time() {
    let mut s = seq(0, 10);
    for n in 1..=5 {
        assert_eq!(s.allocate(), Ok(g(n)));
    }
    for n in 1..=5 {
        assert_eq!(s.complete(g(n)), Ok(Some(g(n))));
    }
}

#[test]
fn bad_completions_are_refused_and_change_nothing() {
    let mut s = seq(10, 100);
    for _ in 0..3 {
        s.allocate().expect("reserved");
    }
    s.complete(g(11)).expect("allocated");
    s.complete(g(13)).expect("allocated");
    let before = s.clone();
    assert_eq!(s.complete(g(14)), Err(SequencerError::NotAllocated(g(14))));
    assert_eq!(
        s.complete(g(10)),
        Err(SequencerError::NotAllocated(g(10))),
        "start itself"
    );
    assert_eq!(s.complete(g(-3)), Err(SequencerError::NotAllocated(g(-3))));
    assert_eq!(
        s.complete(g(11)),
        Err(SequencerError::AlreadyCompleted(g(11))),
        "folded"
    );
    assert_eq!(
        s.complete(g(13)),
        Err(SequencerError::AlreadyCompleted(g(13))),
        "pending"
    );
    assert_eq!(s, before);
    assert_eq!(s.complete(g(12)), Ok(Some(g(13))));
}

/// One step of the interleaving proptest.
#[derive(Debug, Clone)]
enum Op {
    Allocate,
    /// Complete the in-flight revision at this index (mod the count).
    Complete(usize),
    /// Complete an arbitrary revision near the live ones, maybe invalid.
    CompleteAny(i64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => Just(Op::Allocate),
        3 => any::<usize>().prop_map(Op::Complete),
        1 => (-2i64..30).prop_map(Op::CompleteAny),
    ];
    proptest::collection::vec(op, 0..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn interleavings_keep_current_safe(start in 0i64..5, block in 1i64..4, ops in ops()) {
        let mut s = Sequencer::new(g(start), g(start)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut in_flight: BTreeSet<i64> = BTreeSet::new();
        let mut completed: BTreeSet<i64> = BTreeSet::new();
        let mut last = start;
        for op in ops {
            let before = s.current();
            match op {
                Op::Allocate => match s.allocate() {
                    Ok(rev) => {
                        last += 1;
                        prop_assert_eq!(rev, g(last));
                        in_flight.insert(last);
                    }
                    Err(NeedsReservation { through }) => {
                        prop_assert_eq!(through, g(last + 1));
                        prop_assert_eq!(s.reserve(g(s.reserved_through().0 + block)), Ok(()));
                    }
                },
                Op::Complete(i) => {
                    if let Some(&rev) = in_flight.iter().nth(i % in_flight.len().max(1)) {
                        let advanced = s.complete(g(rev)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                        in_flight.remove(&rev);
                        completed.insert(rev);
                        prop_assert_eq!(advanced.is_some(), s.current() > before);
                        prop_assert_eq!(advanced.unwrap_or(s.current()), s.current());
                    }
                }
                Op::CompleteAny(rev) => {
                    let result = s.complete(g(rev));
                    if in_flight.remove(&rev) {
                        prop_assert!(result.is_ok());
                        completed.insert(rev);
                    } else if completed.contains(&rev) {
                        prop_assert_eq!(result, Err(SequencerError::AlreadyCompleted(g(rev))));
                    } else {
                        prop_assert_eq!(result, Err(SequencerError::NotAllocated(g(rev))));
                    }
                }
            }
            prop_assert!(s.current() >= before, "current went backwards");
            prop_assert_eq!(s.in_flight(), in_flight.len());
            let want = in_flight.first().map_or(last, |&oldest| oldest - 1);
            prop_assert_eq!(s.current(), g(want));
        }
        for rev in std::mem::take(&mut in_flight) {
            prop_assert!(s.complete(g(rev)).is_ok());
        }
        prop_assert_eq!(s.current(), s.last_allocated());
        prop_assert_eq!(s.current(), g(last));
        prop_assert_eq!(s.in_flight(), 0);
    }
}

#[test]
fn allocate_many_hands_out_consecutive_revisions_or_nothing() {
    let mut s = seq(0, 5);
    assert_eq!(s.allocate(), Ok(g(1)));
    assert_eq!(s.allocate_many(3), Ok((g(2), g(4))));
    assert_eq!(s.in_flight(), 4);
    // Two more would cross the mark: nothing is allocated.
    assert_eq!(s.allocate_many(2), Err(NeedsReservation { through: g(6) }));
    assert_eq!((s.last_allocated(), s.in_flight()), (g(4), 4));
    assert_eq!(s.allocate_many(0), Ok((g(5), g(5))), "0 counts as 1");
    // Completing the batch in any order advances current past it only
    // once the revision below it is done too.
    for r in [4, 2, 3] {
        assert_eq!(s.complete(g(r)), Ok(None));
    }
    assert_eq!(s.complete(g(1)), Ok(Some(g(4))));
}
