//! What happened during a run, as the clients and the nemesis saw it: every
//! write with its outcome, request latencies, the keys a fenced member took
//! with it, router restarts, and violations found on the way.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How one write ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: applied at this global revision.
    Acked(i64),
    /// Acknowledged as not applied: the guard failed; the key's mod
    /// revision then (0: absent).
    Conflict(i64),
    /// An error: may or may not have applied (docs/faults.md, "a write
    /// whose answer is lost").
    Failed(String),
    /// The client's deadline passed: may or may not have applied.
    TimedOut,
}

impl Outcome {
    /// Whether the write may have applied without the client knowing.
    pub fn unknown(&self) -> bool {
        matches!(self, Outcome::Failed(_) | Outcome::TimedOut)
    }
}

/// One kube-apiserver write (a guarded Txn on one key).
#[derive(Debug, Clone)]
pub struct Write {
    pub writer: usize,
    /// The writer's sequence number: its writes in the order it sent them.
    pub seq: u64,
    pub key: String,
    /// The value put; `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The mod revision the Txn's guard compared with (0: create).
    pub guard: i64,
    /// When its answer (or error) came.
    pub answered: Instant,
    pub outcome: Outcome,
}

/// Keys a lost member took with it: acknowledged writes of these keys at
/// or below `up_to` may be gone (docs/faults.md, "Fencing a lost member").
/// The loss happened after `since` and before `up_to` was read.
#[derive(Debug, Clone)]
pub struct Loss {
    pub member: String,
    pub keys: BTreeSet<String>,
    pub since: Instant,
    pub up_to: i64,
}

/// A router restart: the highest revision acknowledged before the kill and
/// the first revision read after the restart.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    pub acked_before: i64,
    pub read_after: i64,
}

#[derive(Default)]
struct State {
    writes: Vec<Write>,
    losses: Vec<Loss>,
    restarts: Vec<Restart>,
    violations: Vec<String>,
    max_latency: Duration,
    requests: u64,
}

/// The shared record of a run.
pub struct History {
    pub started: Instant,
    state: Mutex<State>,
}

impl History {
    pub fn new(started: Instant) -> Self {
        History {
            started,
            state: Mutex::default(),
        }
    }

    pub fn write(&self, write: Write) {
        self.state.lock().unwrap().writes.push(write);
    }

    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    /// The highest acknowledged revision so far.
    pub fn max_acked(&self) -> i64 {
        let state = self.state.lock().unwrap();
        state
            .writes
            .iter()
            .filter_map(|w| match w.outcome {
                Outcome::Acked(r) => Some(r),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Records how long one request took; one that took longer than its
    /// deadline plus the margin hung (docs/faults.md: requests fail fast).
    pub fn request(&self, what: &str, took: Duration) {
        let mut state = self.state.lock().unwrap();
        state.requests += 1;
        state.max_latency = state.max_latency.max(took);
        if took > crate::DEADLINE + crate::MARGIN {
            let at = self.started.elapsed();
            state.violations.push(format!(
                "{what} took {took:?} (deadline {:?}), at {at:?}",
                crate::DEADLINE
            ));
        }
    }

    pub fn requests(&self) -> (u64, Duration) {
        let state = self.state.lock().unwrap();
        (state.requests, state.max_latency)
    }

    pub fn loss(&self, loss: Loss) {
        self.state.lock().unwrap().losses.push(loss);
    }

    pub fn losses(&self) -> Vec<Loss> {
        self.state.lock().unwrap().losses.clone()
    }

    pub fn restart(&self, restart: Restart) {
        let mut state = self.state.lock().unwrap();
        if restart.read_after <= restart.acked_before {
            state.violations.push(format!(
                "after a router restart the revision is {}, not above {} acknowledged before it",
                restart.read_after, restart.acked_before
            ));
        }
        state.restarts.push(restart);
    }

    pub fn restarts(&self) -> Vec<Restart> {
        self.state.lock().unwrap().restarts.clone()
    }

    pub fn violation(&self, what: String) {
        self.state.lock().unwrap().violations.push(what);
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }
}
