//! Block-transfer accounting in the external-memory (DAM) model.
//!
//! The model: memory holds nothing between operations; every node an
//! operation looks at is read from "disk" and every node it changes is
//! written back, each costing `ceil(model_bytes / BLOCK_BYTES)` transfers
//! (at least one). Within one operation a node is read and written at most
//! once (the operation keeps what it loaded). Node sizes are those of a
//! plain serialisation (see `Node::model_bytes`), not of the in-memory
//! layout, so the count does not depend on Rust's allocator.
//!
//! Accounting is off unless the index was built with
//! [`BeTreeIndex::with_io_model`](super::BeTreeIndex::with_io_model); then it
//! takes a mutex per node touched, so time it separately from speed.

use std::collections::HashMap;
use std::sync::Mutex;

use super::node::Node;

/// Block size of the external-memory model, in bytes.
pub const BLOCK_BYTES: usize = 4096;

/// Block transfers counted since the index was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    /// Blocks read, all operations.
    pub reads: u64,
    /// Blocks written, all operations.
    pub writes: u64,
    /// Blocks read by the update phase of inserts and removes alone: what
    /// a blind upsert/delete (one that need not return the previous entry)
    /// would cost. The trait's `insert`/`remove` also pay a point lookup.
    pub blind_reads: u64,
    /// Blocks written by the update phase of inserts and removes.
    pub blind_writes: u64,
}

/// Which part of an operation is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Reading: point lookups, scans, the lookup inside a write.
    Lookup,
    /// Applying a write: buffer insert, flushes, splits and merges.
    Update,
}

#[derive(Debug, Default)]
struct Ledger {
    totals: IoCounts,
    phase: Option<Phase>,
    /// Blocks of the nodes read / written in the current operation, by
    /// node address; `update_*` only those of its update phase.
    read: HashMap<usize, u64>,
    written: HashMap<usize, u64>,
    update_read: HashMap<usize, u64>,
    update_written: HashMap<usize, u64>,
}

/// The accounting handle kept by an index (`None` when accounting is off).
#[derive(Debug, Default)]
pub(super) struct Io(Option<Box<Mutex<Ledger>>>);

fn blocks(node: &Node) -> u64 {
    node.model_bytes().div_ceil(BLOCK_BYTES).max(1) as u64
}

impl Io {
    /// Accounting on.
    pub(super) fn on() -> Io {
        Io(Some(Box::default()))
    }

    fn with(&self, f: impl FnOnce(&mut Ledger)) {
        if let Some(ledger) = &self.0 {
            let mut ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut ledger);
        }
    }

    /// Starts the given phase of an operation (a new operation when the
    /// phase is [`Phase::Lookup`]).
    pub(super) fn begin(&self, phase: Phase) {
        self.with(|l| {
            if phase == Phase::Lookup {
                l.read.clear();
                l.written.clear();
            }
            l.update_read.clear();
            l.update_written.clear();
            l.phase = Some(phase);
        });
    }

    /// Ends the operation, adding its transfers to the totals.
    pub(super) fn end(&self) {
        self.with(|l| {
            l.totals.reads += l.read.values().sum::<u64>();
            l.totals.writes += l.written.values().sum::<u64>();
            l.totals.blind_reads += l.update_read.values().sum::<u64>();
            l.totals.blind_writes += l.update_written.values().sum::<u64>();
            l.read.clear();
            l.written.clear();
            l.phase = None;
        });
    }

    /// `node` was read.
    pub(super) fn read(&self, node: &Node) {
        self.with(|l| {
            let (addr, b) = (node as *const Node as usize, blocks(node));
            if l.phase.is_none() {
                // A scan step: nodes are visited once each; no grouping.
                l.totals.reads += b;
                return;
            }
            l.read.entry(addr).or_insert(b);
            if l.phase == Some(Phase::Update) {
                l.update_read.entry(addr).or_insert(b);
            }
        });
    }

    /// `node` was changed (count it at its size after the change).
    pub(super) fn write(&self, node: &Node) {
        self.with(|l| {
            let (addr, b) = (node as *const Node as usize, blocks(node));
            let slot = l.written.entry(addr).or_insert(b);
            *slot = (*slot).max(b);
            if l.phase == Some(Phase::Update) {
                let slot = l.update_written.entry(addr).or_insert(b);
                *slot = (*slot).max(b);
            }
        });
    }

    /// The totals so far, if accounting is on.
    pub(super) fn counts(&self) -> Option<IoCounts> {
        self.0
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).totals)
    }
}
