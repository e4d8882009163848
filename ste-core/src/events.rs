//! An in-memory, byte-bounded log of watch events in global-revision order.
//!
//! The router serves watches from this log: a watch starting at revision
//! `from` replays the logged events with revision `>= from`, then follows
//! new ones. Memory is bounded by evicting the oldest events, so a watch
//! starting too far back is told its start is compacted and the client
//! relists, exactly as with etcd.
//!
//! # The floor
//!
//! The log's guarantee is stated by one number, the *floor*: **every event
//! with revision `>= floor` is in the log.** Events below it were evicted or
//! compacted, or predate the router (whose start revision + 1 is the initial
//! floor: the router has no events before it starts).
//!
//! * [`EventLog::since`]`(from)` succeeds iff `from >= floor`, and returns
//!   [`Compacted`]` { compact_revision: floor }` otherwise. Like etcd, that
//!   is "the oldest revision you can still watch from"; an etcd client
//!   retries from it (or relists), which is correct here.
//! * Eviction of revision `r` raises the floor to `r + 1`;
//!   [`EventLog::compact`]`(c)` raises it to `c`. It never goes down.
//! * The floor can be below the first retained event: revisions between
//!   them had no events (a gap left by an abandoned revision, or events
//!   not logged), so nothing is missing.
//!
//! # Whole revisions
//!
//! One write (a transaction) may produce several events with the same
//! revision. Eviction removes whole revisions only, so a replay never shows
//! half a transaction, and it never removes the newest revision, so the log
//! may exceed its byte budget when the newest revision alone does. The
//! router should push all events of a revision before serving `since`
//! again (it holds `&mut` while pushing, so it naturally does).

use std::collections::VecDeque;

use thiserror::Error;

use crate::GlobalRevision;

/// An event the log can hold.
pub trait LogEvent {
    /// The global revision of the write that produced the event.
    fn revision(&self) -> GlobalRevision;

    /// Bytes the event accounts for against the log's budget. Must return
    /// the same value every time it is called on the same event.
    fn size_bytes(&self) -> usize;
}

/// Why an event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EventLogError {
    /// The event's revision is below the last pushed event's, or below the
    /// floor; the log would no longer be in order or complete.
    #[error("event at revision {got} is out of order: the log accepts revisions >= {min}")]
    OutOfOrder {
        /// The refused event's revision.
        got: GlobalRevision,
        /// The least revision the log accepts now.
        min: GlobalRevision,
    },
}

/// The events a watch asked for are no longer (or were never) in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("required revision has been compacted; oldest available is {compact_revision}")]
pub struct Compacted {
    /// The log's floor: the least revision a watch can start from now.
    /// Goes into `WatchResponse.compact_revision`.
    pub compact_revision: GlobalRevision,
}

/// A byte-bounded log of events in revision order (see the module doc).
#[derive(Debug, Clone)]
pub struct EventLog<T: LogEvent> {
    events: VecDeque<T>,
    bytes: usize,
    max_bytes: usize,
    floor: GlobalRevision,
}

impl<T: LogEvent> EventLog<T> {
    /// An empty log holding up to about `max_bytes` of events, complete
    /// from `floor` on (the router's start revision + 1).
    pub fn new(max_bytes: usize, floor: GlobalRevision) -> Self {
        EventLog {
            events: VecDeque::new(),
            bytes: 0,
            max_bytes,
            floor,
        }
    }

    /// Appends `event`, then evicts the oldest whole revisions while the log
    /// is over budget, keeping at least the newest revision.
    ///
    /// The event's revision must be at least the last event's and at least
    /// the floor; otherwise it is refused and the log is unchanged.
    pub fn push(&mut self, event: T) -> Result<(), EventLogError> {
        let min = self.min_accepted();
        let got = event.revision();
        if got < min {
            return Err(EventLogError::OutOfOrder { got, min });
        }
        self.bytes = self.bytes.saturating_add(event.size_bytes());
        self.events.push_back(event);
        self.evict();
        Ok(())
    }

    /// The least revision [`EventLog::push`] accepts.
    fn min_accepted(&self) -> GlobalRevision {
        match self.events.back() {
            Some(last) => last.revision().max(self.floor),
            None => self.floor,
        }
    }

    /// Drops the oldest revisions while over budget, never the newest.
    fn evict(&mut self) {
        while self.bytes > self.max_bytes {
            let (Some(oldest), Some(newest)) = (self.first_revision(), self.last_revision()) else {
                return;
            };
            if oldest == newest {
                return;
            }
            self.drop_below(oldest.next());
        }
    }

    /// Removes every event with revision `< revision` and raises the floor
    /// to at least `revision`.
    fn drop_below(&mut self, revision: GlobalRevision) {
        let end = self.start_of(revision);
        for event in self.events.drain(..end) {
            self.bytes = self.bytes.saturating_sub(event.size_bytes());
        }
        self.floor = self.floor.max(revision);
    }

    /// Index of the first event with revision `>= revision` (binary search).
    fn start_of(&self, revision: GlobalRevision) -> usize {
        self.events.partition_point(|e| e.revision() < revision)
    }

    /// The events with revision `>= from`, in order, or [`Compacted`] if
    /// `from` is below the floor. A `from` beyond the last event gives an
    /// empty iterator: the watch waits for new events.
    pub fn since(&self, from: GlobalRevision) -> Result<impl Iterator<Item = &T> + '_, Compacted> {
        if from < self.floor {
            return Err(Compacted {
                compact_revision: self.floor,
            });
        }
        Ok(self.events.range(self.start_of(from)..))
    }

    /// Drops events with revision `< revision` and raises the floor to
    /// `revision` (etcd compaction at `revision`: watching from `revision`
    /// itself still works). A revision at or below the floor is a no-op.
    ///
    /// Compacting beyond the last event is allowed; pushes below the new
    /// floor are then refused.
    pub fn compact(&mut self, revision: GlobalRevision) {
        if revision > self.floor {
            self.drop_below(revision);
        }
    }

    /// The least revision a watch can start from: every event at or above
    /// it is in the log. Equal to [`EventLog::floor`].
    pub fn oldest_available(&self) -> GlobalRevision {
        self.floor
    }

    /// See the module doc; same as [`EventLog::oldest_available`].
    pub fn floor(&self) -> GlobalRevision {
        self.floor
    }

    /// The number of events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Total [`LogEvent::size_bytes`] of the events held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The byte budget given to [`EventLog::new`].
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Revision of the oldest event held.
    pub fn first_revision(&self) -> Option<GlobalRevision> {
        self.events.front().map(LogEvent::revision)
    }

    /// Revision of the newest event held.
    pub fn last_revision(&self) -> Option<GlobalRevision> {
        self.events.back().map(LogEvent::revision)
    }
}

#[cfg(test)]
mod tests;
