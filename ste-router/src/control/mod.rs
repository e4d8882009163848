//! The control plane of the router: the agents it knows, ring changes and
//! the membership loop that fences lost members, resumes interrupted
//! changes and joins agents. Kept apart from the data store (`crate::store`)
//! it drives.
//!
//! Module map: `agents` (Register and Heartbeat bookkeeping), `health`
//! (probing shards, resyncing them),
//! `ring_change` (one change at a time, progress), `membership` (the loop).

pub mod agents;
pub mod health;
pub mod membership;
pub mod ring_change;

use std::sync::Arc;

use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::store::Store;
use agents::Agents;
use ring_change::RingChanges;

/// The control plane's state, shared by the admin API and the loops.
pub struct Control {
    store: Arc<Store>,
    agents: Agents,
    changes: RingChanges,
    metrics: Arc<Metrics>,
}

impl Control {
    /// The control plane over `store`, counting into `metrics`.
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        Control {
            changes: RingChanges::new(store.clone(), metrics.clone()),
            store,
            agents: Agents::default(),
            metrics,
        }
    }

    /// The data store the control plane drives.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The agents heard from.
    pub fn agents(&self) -> &Agents {
        &self.agents
    }

    /// Ring changes and their progress.
    pub fn changes(&self) -> &RingChanges {
        &self.changes
    }

    /// The router's request metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Holds node `name` out of auto-join (an operator's leave): recorded
    /// in the router state first, so no restart undoes it.
    ///
    /// Errors: `Internal` when the state cannot be written; then nothing
    /// changed.
    pub async fn hold_out(&self, name: &str) -> Result<(), StoreError> {
        self.store
            .state()
            .update(|s| {
                if !s.held_out.iter().any(|n| n == name) {
                    s.held_out.push(name.to_owned());
                    s.held_out.sort();
                }
            })
            .await?;
        self.agents.hold_out(name);
        Ok(())
    }

    /// Ends an operator's hold on node `name` (a Join names it), in the
    /// router state and here.
    ///
    /// Errors: `Internal` when the state cannot be written; then it is still
    /// held out.
    pub async fn release(&self, name: &str) -> Result<(), StoreError> {
        self.store
            .state()
            .update(|s| s.held_out.retain(|n| n != name))
            .await?;
        self.agents.release(name);
        Ok(())
    }
}
