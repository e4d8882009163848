//! Keeps exactly one etcd running on the tmpfs. Every start wipes the data
//! dir and begins a new shard epoch; exits are restarted with capped
//! exponential backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, watch};

use crate::etcd::{self, EtcdProcess, EtcdSpec};
use crate::mount;
use crate::status::{AgentState, Status, unix_now};

/// Restart delays: `initial`, doubled after each failed start, capped at
/// `max`; back to `initial` once an epoch has stayed up for `reset_after`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the first restart after a failure.
    pub initial: Duration,
    /// Cap of the doubling delay.
    pub max: Duration,
    /// An epoch that stayed up this long resets the delay to `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    fn next(&self, current: Duration) -> Duration {
        (current * 2).min(self.max)
    }
}

/// Handles to ask the supervisor for things from other tasks.
#[derive(Debug, Default)]
pub struct Control {
    /// The probe found etcd running but unresponsive for too long.
    pub kill_hung: Notify,
}

/// Owns the shard's etcd process: starts it on an emptied data dir (a new
/// epoch each time), restarts it after an exit with [`Backoff`], kills it
/// when the probe reports it hung, and stops it on shutdown. At most one
/// etcd runs at any time.
pub struct Supervisor {
    /// How to start etcd.
    pub spec: EtcdSpec,
    /// Emptied before every start: etcd's data dir. Only this directory, never
    /// the whole tmpfs: an external tmpfs may be shared with other files.
    pub wipe_dir: PathBuf,
    /// Where epoch, restarts, PID, state and errors are recorded.
    pub status: Arc<Status>,
    /// Requests from other tasks (kill a hung etcd).
    pub control: Arc<Control>,
    /// Delays between restarts.
    pub backoff: Backoff,
    /// How long etcd gets to exit after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl Supervisor {
    /// Runs until `shutdown` turns true, then stops etcd (SIGTERM, SIGKILL
    /// after the grace period) and returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut delay = self.backoff.initial;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if self.status.snapshot().state == AgentState::Draining {
                // A fresh, empty epoch must not appear under a router that is
                // copying keys off this shard: wait for the stop instead.
                tracing::warn!("not restarting etcd while draining");
                let _ = shutdown.wait_for(|stop| *stop).await;
                break;
            }
            let Some(mut etcd) = self.start_epoch() else {
                if sleep_or_shutdown(delay, &mut shutdown).await {
                    break;
                }
                delay = self.backoff.next(delay);
                continue;
            };
            let started = Instant::now();
            let outcome = tokio::select! {
                exit = etcd.wait() => Some(exit),
                _ = self.control.kill_hung.notified() => None,
                _ = shutdown.changed() => {
                    self.stop(etcd).await;
                    break;
                }
            };
            let error = match outcome {
                Some(Ok(exit)) => match etcd.log().last_error() {
                    Some(detail) => format!("etcd exited ({exit}): {detail}"),
                    None => format!("etcd exited ({exit})"),
                },
                Some(Err(err)) => format!("waiting for etcd failed: {err}"),
                None => {
                    let _ = etcd.stop(Duration::ZERO).await;
                    "etcd stopped answering health checks; killed it".to_owned()
                }
            };
            if self.status.snapshot().state == AgentState::Draining {
                tracing::warn!(error = %error, "shard down while draining");
            } else {
                tracing::warn!(error = %error, "shard down; restarting etcd");
            }
            self.status.update(|s| {
                if s.state != AgentState::Draining {
                    s.state = AgentState::Degraded;
                }
                s.pid = 0;
                s.shard.healthy = false;
                s.restarts += 1;
                s.last_error = error;
            });
            if started.elapsed() >= self.backoff.reset_after {
                delay = self.backoff.initial;
            }
            if sleep_or_shutdown(delay, &mut shutdown).await {
                break;
            }
            delay = self.backoff.next(delay);
        }
        self.status.update(|s| {
            s.state = AgentState::Stopped;
            s.pid = 0;
            s.shard.healthy = false;
        });
    }

    /// Wipes the data dir and starts etcd as a new epoch. `None` if it could
    /// not be started (the reason is recorded as `last_error`).
    fn start_epoch(&self) -> Option<EtcdProcess> {
        let result = std::fs::create_dir_all(&self.wipe_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.wipe_dir.display()))
            .and_then(|()| mount::wipe(&self.wipe_dir).map_err(|e| e.to_string()))
            .and_then(|()| {
                let token = etcd::cluster_token(&self.spec.name, SystemTime::now());
                EtcdProcess::spawn(&self.spec, &self.spec.name, &token)
                    .map_err(|e| format!("cannot start {}: {e}", self.spec.bin.display()))
            });
        match result {
            Ok(etcd) => {
                let epoch = self.status.update(|s| {
                    s.epoch += 1;
                    s.pid = etcd.pid();
                    s.epoch_started_unix = unix_now();
                    s.shard = Default::default();
                    if !matches!(s.state, AgentState::Starting | AgentState::Draining) {
                        s.state = AgentState::Degraded;
                    }
                    s.epoch
                });
                tracing::info!(member = %self.spec.name, epoch, pid = etcd.pid(), "etcd started");
                Some(etcd)
            }
            Err(error) => {
                tracing::error!(error = %error, "etcd start failed");
                self.status.update(|s| {
                    s.last_error = error;
                    s.state = AgentState::Degraded;
                });
                None
            }
        }
    }

    async fn stop(&self, etcd: EtcdProcess) {
        let pid = etcd.pid();
        match etcd.stop(self.stop_grace).await {
            Ok(exit) => tracing::info!(pid, %exit, "etcd stopped"),
            Err(err) => tracing::error!(pid, error = %err, "stopping etcd failed"),
        }
    }
}

/// Sleeps for `delay`; true if shutdown was requested meanwhile.
async fn sleep_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}
