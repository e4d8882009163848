//! The global revision sequencer: hands out revisions to writes and tracks
//! which have finished, so the router knows the revision it can announce.
//!
//! Writes are applied to shards concurrently, so they finish out of order.
//! A reader must never see revision `R` as current while a write below `R`
//! is still being applied: it would miss that write, yet later read at `R`
//! and find it. The sequencer's [`Sequencer::current`] is therefore the
//! highest revision below which *everything* has finished.
//!
//! # Reservations
//!
//! Revisions must never be reused after a crash, so the router persists a
//! high-water mark ("revisions up to here may have been handed out") before
//! using revisions under it, in blocks to keep the cost off the write path.
//! The sequencer is pure: when the next revision is above the mark,
//! [`Sequencer::allocate`] returns [`NeedsReservation`] without allocating;
//! the router persists a higher mark (e.g. +10,000), calls
//! [`Sequencer::reserve`], and retries. On restart, the router starts above
//! the persisted mark, never reusing a revision. [`Sequencer::remaining`]
//! lets it reserve ahead before the block runs out.
//!
//! # Gaps
//!
//! A revision is finished when its write was applied *or abandoned* (the
//! shard refused it, the client went away). Abandoned revisions are gaps in
//! the revision space, which etcd clients tolerate: they only assume
//! revisions increase.
//!
//! # Invariants
//!
//! * `current <= last_allocated <= reserved_through <= MAX_RESERVATION`.
//! * Every revision in `(current, last_allocated]` is allocated; `pending`
//!   holds exactly those, oldest first, with whether each has finished.
//!   The oldest is never finished (finished revisions at the front are
//!   folded into `current` at once), so `current` is as high as allowed.

use std::collections::VecDeque;

use thiserror::Error;

use crate::GlobalRevision;

/// The highest reservation the sequencer accepts: one below `i64::MAX`, so
/// computing the revision after any allocated one never overflows.
pub const MAX_RESERVATION: GlobalRevision = GlobalRevision(i64::MAX - 1);

/// [`Sequencer::allocate`] needs a higher persisted mark first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("revision {through} is beyond the reserved revisions; persist a reservation through it")]
pub struct NeedsReservation {
    /// The least mark that lets the allocation proceed (the revision that
    /// would have been allocated). Reserving more is fine and cheaper.
    pub through: GlobalRevision,
}

/// A refused sequencer call; the sequencer is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SequencerError {
    /// [`Sequencer::complete`] of a revision this sequencer did not hand out.
    #[error("revision {0} was not allocated by this sequencer")]
    NotAllocated(GlobalRevision),

    /// [`Sequencer::complete`] of a revision already completed: a double
    /// completion means two writers think they own the revision.
    #[error("revision {0} was already completed")]
    AlreadyCompleted(GlobalRevision),

    /// A reservation below the current mark: persisted marks only grow.
    #[error("reservation through {requested} is below the current mark {reserved_through}")]
    ReservationBackwards {
        /// The refused mark.
        requested: GlobalRevision,
        /// The mark in force.
        reserved_through: GlobalRevision,
    },

    /// A reservation above [`MAX_RESERVATION`].
    #[error("reservation through {0} exceeds the maximum {MAX_RESERVATION}")]
    ReservationTooHigh(GlobalRevision),

    /// [`Sequencer::new`] with a start below 0.
    #[error("start revision {0} is negative")]
    NegativeStart(GlobalRevision),
}

/// Allocates global revisions and tracks their completion (see module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequencer {
    /// The revision current when the sequencer was created; nothing at or
    /// below it was allocated here.
    start: GlobalRevision,
    current: GlobalRevision,
    last_allocated: GlobalRevision,
    reserved_through: GlobalRevision,
    /// Revisions `current + 1 ..= last_allocated`, `true` once completed.
    pending: VecDeque<bool>,
    in_flight: usize,
}

impl Sequencer {
    /// A sequencer whose current revision is `start`, with revisions up to
    /// `reserved_through` (a persisted mark, `>= start`) usable at once.
    pub fn new(
        start: GlobalRevision,
        reserved_through: GlobalRevision,
    ) -> Result<Sequencer, SequencerError> {
        if start < GlobalRevision::ZERO {
            return Err(SequencerError::NegativeStart(start));
        }
        if reserved_through > MAX_RESERVATION {
            return Err(SequencerError::ReservationTooHigh(reserved_through));
        }
        if reserved_through < start {
            return Err(SequencerError::ReservationBackwards {
                requested: reserved_through,
                reserved_through: start,
            });
        }
        Ok(Sequencer {
            start,
            current: start,
            last_allocated: start,
            reserved_through,
            pending: VecDeque::new(),
            in_flight: 0,
        })
    }

    /// Hands out the next revision (last allocated + 1), or asks for a
    /// reservation first; a refusal allocates nothing.
    pub fn allocate(&mut self) -> Result<GlobalRevision, NeedsReservation> {
        // `last_allocated <= reserved_through <= MAX_RESERVATION < i64::MAX`.
        let next = self.last_allocated.next();
        if next > self.reserved_through {
            return Err(NeedsReservation { through: next });
        }
        self.last_allocated = next;
        self.pending.push_back(false);
        self.in_flight += 1;
        Ok(next)
    }

    /// Hands out `count` consecutive revisions at once (a shard's group
    /// commit: the writes of one shard Txn take consecutive revisions, so
    /// no other write's revision falls between them), returning the first
    /// and the last; or asks for a reservation through the last first. A
    /// refusal allocates nothing. `count` 0 is treated as 1.
    pub fn allocate_many(
        &mut self,
        count: usize,
    ) -> Result<(GlobalRevision, GlobalRevision), NeedsReservation> {
        let count = count.max(1) as i64;
        let first = self.last_allocated.next();
        let last = GlobalRevision(self.last_allocated.0.saturating_add(count));
        if last > self.reserved_through {
            return Err(NeedsReservation { through: last });
        }
        self.last_allocated = last;
        self.pending
            .extend(std::iter::repeat_n(false, count as usize));
        self.in_flight += count as usize;
        Ok((first, last))
    }

    /// Raises the persisted mark to `through`, after the router persisted
    /// it. Reserving the current mark again is a no-op.
    pub fn reserve(&mut self, through: GlobalRevision) -> Result<(), SequencerError> {
        if through > MAX_RESERVATION {
            return Err(SequencerError::ReservationTooHigh(through));
        }
        if through < self.reserved_through {
            return Err(SequencerError::ReservationBackwards {
                requested: through,
                reserved_through: self.reserved_through,
            });
        }
        self.reserved_through = through;
        Ok(())
    }

    /// Marks `revision` finished, applied or abandoned. Returns the new
    /// [`Sequencer::current`] if it advanced, `None` if an older revision
    /// is still in flight.
    pub fn complete(
        &mut self,
        revision: GlobalRevision,
    ) -> Result<Option<GlobalRevision>, SequencerError> {
        if revision <= self.start || revision > self.last_allocated {
            return Err(SequencerError::NotAllocated(revision));
        }
        // `revision > start >= 0` and `current >= start`, so neither the
        // subtraction nor the conversion can fail for an allocated revision;
        // a revision at or below `current` was completed already.
        let slot = revision
            .0
            .checked_sub(self.current.0 + 1)
            .and_then(|offset| usize::try_from(offset).ok())
            .and_then(|offset| self.pending.get_mut(offset));
        match slot {
            Some(done) if !*done => *done = true,
            _ => return Err(SequencerError::AlreadyCompleted(revision)),
        }
        self.in_flight -= 1;
        let before = self.current;
        while self.pending.front() == Some(&true) {
            self.pending.pop_front();
            self.current = self.current.next();
        }
        Ok((self.current > before).then_some(self.current))
    }

    /// The highest revision `R` such that every revision allocated at or
    /// below `R` has completed; the last allocated when none is in flight.
    pub fn current(&self) -> GlobalRevision {
        self.current
    }

    /// How many allocated revisions have not completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The most recently allocated revision (`start` before any).
    pub fn last_allocated(&self) -> GlobalRevision {
        self.last_allocated
    }

    /// The persisted mark in force.
    pub fn reserved_through(&self) -> GlobalRevision {
        self.reserved_through
    }

    /// How many more revisions can be allocated before a reservation.
    pub fn remaining(&self) -> i64 {
        self.reserved_through.0 - self.last_allocated.0
    }
}

#[cfg(test)]
mod tests;
