//! The router's stop signal, passed by value to what must end when the
//! process stops: the servers' graceful shutdown and the long-lived
//! streams (watches, lease keep-alives), which would otherwise hold a
//! graceful shutdown open until its deadline.

use tokio::sync::watch;

/// Sets the stop signal (once, for every [`Shutdown`] made from it).
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A receiver of the stop signal; cheap to clone, one per task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl ShutdownTrigger {
    /// A new, unset signal and its first receiver.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Sets the signal: every [`Shutdown::wait`] returns.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Returns once the signal is set (at once if it already is, or if its
    /// trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_receiver_sees_the_signal_even_when_set_before_it_waits() {
        let (trigger, mut first) = ShutdownTrigger::new();
        let mut second = first.clone();
        let waiting = tokio::spawn(async move { first.wait().await });
        trigger.trigger();
        waiting.await.expect("the waiting task returns");
        // Set before this one waits: returns at once.
        second.wait().await;
    }

    #[tokio::test]
    async fn a_dropped_trigger_releases_the_receivers() {
        let (trigger, mut receiver) = ShutdownTrigger::new();
        drop(trigger);
        receiver.wait().await;
    }
}
