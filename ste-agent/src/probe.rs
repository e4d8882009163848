//! Periodic health and usage probe: asks the shard's etcd for its status,
//! alarms and key count, measures the tmpfs and the node, and moves the
//! agent between STARTING/DEGRADED and SERVING.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, Client, ConnectOptions, GetOptions};
use sysinfo::{MemoryRefreshKind, RefreshKind, System};
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::mount::Tmpfs;
use crate::status::{AgentState, NodeUsage, ShardProbe, Status};

/// The gRPC service name grpc.health.v1 reports the shard under, besides "".
pub const HEALTH_SERVICE: &str = "ste.v1.Agent";

/// Probes the shard, the tmpfs and the node every `interval`, records what
/// it finds in [`Status`], moves the state between `Serving` and `Degraded`,
/// and mirrors "serving" to grpc.health.v1. Shard results are applied only to
/// the epoch they were taken in.
pub struct Probe {
    /// Where results are recorded.
    pub status: Arc<Status>,
    /// Used to ask the supervisor to kill an etcd that stopped answering.
    pub control: Arc<crate::supervisor::Control>,
    /// The grpc.health.v1 service, set for "" and [`HEALTH_SERVICE`].
    pub health: HealthReporter,
    /// Keys under this prefix are counted.
    pub key_prefix: String,
    /// The shard's TLS: the probe presents the shard's own certificate
    /// (see [`crate::tls`]); `None` with `--insecure`.
    pub tls: Option<crate::tls::ShardTls>,
    /// Pause between probes; also the timeout of one probe (at least 500 ms).
    pub interval: Duration,
    /// Kill etcd if it runs but has not answered for this long.
    pub hang_timeout: Duration,
}

impl Probe {
    /// Probes until `shutdown` turns true, then reports NOT_SERVING and returns.
    pub async fn run(self, tmpfs: Arc<Tmpfs>, mut shutdown: watch::Receiver<bool>) {
        let mut system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_memory(MemoryRefreshKind::nothing().with_ram())
                .with_cpu(sysinfo::CpuRefreshKind::nothing().with_cpu_usage()),
        );
        let mut client: Option<(u64, Client)> = None;
        let mut last_answer = Instant::now();
        let mut last_serving = None;
        loop {
            let before = self.status.snapshot();
            let probe = if before.pid == 0 {
                None
            } else {
                Some(self.probe_shard(before.epoch, &mut client).await)
            };

            system.refresh_memory();
            system.refresh_cpu_usage();
            let node = NodeUsage {
                memory_total_bytes: system.total_memory(),
                memory_available_bytes: system.available_memory(),
                cpu_usage_percent: system.global_cpu_usage(),
            };
            let mounted = tmpfs.is_mounted();
            let usage = tmpfs.usage().ok();

            let serving = self.status.update(|s| {
                s.node = node;
                s.tmpfs_mounted = mounted;
                if let Some(usage) = usage {
                    s.tmpfs = usage;
                }
                // Apply shard results only to the epoch they were taken from:
                // etcd may have exited and restarted while we waited.
                if s.epoch == before.epoch && s.pid != 0 {
                    match &probe {
                        Some(Ok(shard)) => {
                            s.shard = shard.clone();
                            if matches!(s.state, AgentState::Starting | AgentState::Degraded) {
                                s.state = AgentState::Serving;
                            }
                        }
                        Some(Err(error)) => {
                            s.shard.healthy = false;
                            // A fresh etcd refuses connections for a moment;
                            // only losing a serving shard is worth reporting.
                            if s.state == AgentState::Serving {
                                s.state = AgentState::Degraded;
                                s.last_error = error.clone();
                            }
                        }
                        None => {}
                    }
                }
                if s.state == AgentState::Serving && !mounted {
                    s.state = AgentState::Degraded;
                    s.last_error = "the tmpfs is no longer mounted".into();
                }
                s.is_serving()
            });

            match &probe {
                Some(Ok(_)) | None => last_answer = Instant::now(),
                Some(Err(_)) if last_answer.elapsed() >= self.hang_timeout => {
                    self.control.kill_hung.notify_one();
                    last_answer = Instant::now();
                }
                Some(Err(_)) => {}
            }
            if last_serving != Some(serving) {
                last_serving = Some(serving);
                self.set_health(serving).await;
            }

            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => {
                    self.set_health(false).await;
                    return;
                }
            }
        }
    }

    async fn set_health(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
        self.health.set_service_status(HEALTH_SERVICE, status).await;
    }

    /// One round trip set to the shard, bounded as a whole by three probe
    /// timeouts (one per request). The per-request timeout alone does not
    /// bound it: the client connects lazily, and a request waits for the
    /// connection first — forever when a stopped etcd accepted the TCP
    /// connection (in the kernel) but never answers the TLS handshake.
    async fn probe_shard(
        &self,
        epoch: u64,
        client: &mut Option<(u64, Client)>,
    ) -> Result<ShardProbe, String> {
        let timeout = self.interval.max(Duration::from_millis(500));
        match tokio::time::timeout(timeout * 3, self.round_trips(epoch, client, timeout)).await {
            Ok(result) => result,
            Err(_) => {
                *client = None;
                Err(format!(
                    "etcd health probe failed: no answer within {:?}",
                    timeout * 3
                ))
            }
        }
    }

    /// The requests of one probe. The client is reused within an epoch and
    /// rebuilt after a restart or a failure.
    async fn round_trips(
        &self,
        epoch: u64,
        client: &mut Option<(u64, Client)>,
        timeout: Duration,
    ) -> Result<ShardProbe, String> {
        if client.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut options = ConnectOptions::new()
                .with_connect_timeout(timeout)
                .with_timeout(timeout);
            if let Some(tls) = &self.tls {
                // Read at every connect: rotated files count from the next one.
                options = options.with_tls(tls.client_options().map_err(|e| e.to_string())?);
            }
            let endpoint = self.status.identity.endpoint.clone();
            let connected = Client::connect([endpoint], Some(options))
                .await
                .map_err(|e| format!("cannot reach etcd: {e}"))?;
            *client = Some((epoch, connected));
        }
        let Some((_, etcd)) = client.as_mut() else {
            return Err("no etcd client".into());
        };
        let result = async {
            let status = etcd.status().await?;
            let alarms = etcd
                .alarm(AlarmAction::Get, AlarmType::None, None)
                .await?
                .alarms()
                .iter()
                .map(|a| a.alarm().as_str_name().to_owned())
                .collect();
            let count = etcd
                .get(
                    self.key_prefix.as_bytes(),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await?
                .count();
            Ok::<_, etcd_client::Error>(ShardProbe {
                healthy: true,
                etcd_version: status.version().to_owned(),
                revision: status.header().map(|h| h.revision()).unwrap_or_default(),
                db_size_bytes: status.db_size(),
                key_count: count,
                alarms,
            })
        }
        .await;
        result.map_err(|e| {
            *client = None;
            format!("etcd health probe failed: {e}")
        })
    }
}
