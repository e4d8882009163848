//! ste-agent: the per-node daemon of STE. It owns one tmpfs and one
//! single-member, no-fsync etcd shard on it, supervises that etcd (every
//! fresh start is a new shard epoch), and reports status over gRPC
//! (`ste.v1.Agent`, grpc.health.v1, reflection) and `/metrics`.
//!
//! Signals: SIGTERM and SIGINT drain then stop (Kubernetes' semantics: the
//! router moves this member's keys off the shard first; if it cannot, the
//! loss is logged as an ERROR). SIGQUIT is the explicit teardown: stop
//! without draining, for when the whole cluster goes away (e.g.
//! `scripts/local-cluster.sh down` after stopping the router); the shard's
//! keys are discarded with it, logged at INFO because nothing unexpected
//! happened.

#![warn(missing_docs)]

pub mod config;
pub mod etcd;
pub mod grpc;
pub mod metrics;
pub mod mount;
pub mod probe;
pub mod registration;
pub mod size;
pub mod status;
pub mod supervisor;
pub mod table;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{Config, MountMode, listen_error};
use crate::etcd::EtcdSpec;
use crate::mount::Tmpfs;
use crate::status::{AgentState, Identity, Status};
use crate::supervisor::{Control, Supervisor};
use ste_auth::Door;

/// Runs the agent until SIGTERM, SIGINT or SIGQUIT, then shuts down in
/// order: health NOT_SERVING and state DRAINING → with `--router` and not
/// SIGQUIT, ask the router to move this ring member's keys off the shard
/// (`Ring/Leave`, bounded by `--drain-timeout`; etcd keeps serving the
/// router meanwhile) → stop etcd → unmount (managed) → return. A SIGQUIT
/// during the drain stops waiting for it, as a teardown.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let etcd_bin = config.validate()?;
    if config.shard_tls.is_none() {
        tracing::warn!(
            url = %config.etcd_client_url,
            "plain HTTP, unauthenticated: --insecure serves the shard's etcd without TLS; \
             anyone who reaches {} can read and rewrite its keys",
            config.etcd_client_url
        );
    }
    if config.api_tls.is_none() {
        tracing::warn!(
            grpc = %config.grpc_listen,
            user = %config.user_listen,
            "plain HTTP, unauthenticated: --insecure serves the agent's API without TLS"
        );
    }
    let access = Arc::new(
        ste_auth::Access::from_flags(
            config.api_tls.is_none(),
            config.authentication_kubeconfig.as_deref(),
            config.authorization_kubeconfig.as_deref(),
        )
        .await?,
    );
    // Signals are hooked before anything is mounted so that a SIGTERM during
    // start-up still unmounts.
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigquit = signal(SignalKind::quit()).context("installing SIGQUIT handler")?;

    let grpc_listener = TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|e| listen_error("--grpc-listen", config.grpc_listen, e))?;
    let user_listener = TcpListener::bind(config.user_listen)
        .await
        .map_err(|e| listen_error("--user-listen", config.user_listen, e))?;
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| listen_error("--metrics-listen", config.metrics_listen, e))?;
    config.check_etcd_ports()?;

    let tmpfs = match config.mount {
        MountMode::Managed => Tmpfs::mount_managed(&config.data_dir, config.tmpfs_size.0)?,
        MountMode::External => Tmpfs::external(&config.data_dir)?,
    };
    let tmpfs_size = tmpfs.usage()?.size_bytes;
    if tmpfs_size < etcd::MIN_TMPFS_BYTES {
        return Err(config::ConfigError::TmpfsTooSmall {
            size: size::ByteSize(tmpfs_size),
        }
        .into());
    }
    let tmpfs = Arc::new(tmpfs);
    let quota = etcd::quota_backend_bytes(tmpfs_size);
    tracing::info!(
        member = %config.node_name,
        path = %tmpfs.path().display(),
        size = tmpfs_size,
        quota,
        provenance = ?tmpfs.provenance(),
        "tmpfs ready"
    );

    let status = Arc::new(Status::new(Identity {
        node_name: config.node_name.clone(),
        endpoint: config.etcd_client_url.clone(),
        tmpfs_path: tmpfs.path().display().to_string(),
        tmpfs_managed: tmpfs.managed(),
        quota_backend_bytes: quota as i64,
        started: Instant::now(),
    }));
    let control = Arc::new(Control::default());
    // Two shutdown stages: `drain` stops the probe (health → NOT_SERVING) and
    // the heartbeats; `shutdown` then stops etcd and the servers.
    let (drain_tx, drain_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (health, health_service) = grpc::health();
    // tonic-health starts "" as SERVING; nothing serves until etcd answers.
    for service in ["", probe::HEALTH_SERVICE] {
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }

    let supervisor = tokio::spawn(
        Supervisor {
            spec: EtcdSpec {
                bin: etcd_bin,
                name: config.node_name.clone(),
                data_dir: tmpfs.path().join("etcd"),
                client_url: config.etcd_client_url.clone(),
                tls: config.shard_tls.clone(),
                peer_url: config.etcd_peer_url.clone(),
                quota_backend_bytes: quota,
            },
            wipe_dir: tmpfs.path().join("etcd"),
            status: status.clone(),
            control: control.clone(),
            backoff: config.backoff,
            stop_grace: config.stop_grace,
        }
        .run(shutdown_rx.clone()),
    );
    let probe = tokio::spawn(
        probe::Probe {
            status: status.clone(),
            control,
            health,
            key_prefix: config.key_prefix.clone(),
            tls: config.shard_tls.clone(),
            interval: config.probe_interval,
            hang_timeout: config.hang_timeout,
        }
        .run(tmpfs.clone(), drain_rx.clone()),
    );
    let registration = config.router.clone().map(|router| {
        tokio::spawn(
            registration::Registration {
                config: router,
                name: config.node_name.clone(),
                status: status.clone(),
            }
            .run(drain_rx.clone()),
        )
    });
    let servers_stop = {
        let rx = shutdown_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        }
    };
    let mut api = Vec::new();
    for (listener, door) in [
        (grpc_listener, Door::Certificates),
        (user_listener, Door::Users),
    ] {
        let tls = match &config.api_tls {
            Some(files) => Some(Arc::new(ste_auth::tls::ReloadingAcceptor::new(
                files.clone(),
                door,
            )?)),
            None => None,
        };
        api.push(tokio::spawn(grpc::serve(
            grpc::Port {
                listener,
                door,
                tls,
            },
            status.clone(),
            access.clone(),
            health_service.clone(),
            servers_stop(),
        )));
    }
    let metrics = tokio::spawn(metrics::serve(
        metrics_listener,
        status.clone(),
        servers_stop(),
    ));
    tracing::info!(grpc = %config.grpc_listen, user = %config.user_listen, metrics = %config.metrics_listen, "agent started");

    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        _ = sigquit.recv() => "SIGQUIT",
    };
    let teardown = signal_name == "SIGQUIT";
    if teardown {
        teardown_note(&status);
    } else {
        tracing::info!(signal = signal_name, "shutting down");
    }
    status.update(|s| s.state = AgentState::Draining);
    let _ = drain_tx.send(true);
    // The probe flips health to NOT_SERVING as it exits, before anything else.
    let _ = probe.await;
    let session = match registration {
        Some(task) => task.await.ok(),
        None => None,
    };
    if let Some(router) = config.router.as_ref().filter(|_| !teardown) {
        let member = session.as_ref().and_then(|s| s.member());
        tokio::select! {
            () = registration::drain(router, &config.node_name, member, &status) => {}
            _ = sigterm.recv() => second_signal("SIGTERM"),
            _ = sigint.recv() => second_signal("SIGINT"),
            _ = sigquit.recv() => teardown_note(&status),
        }
    }
    let _ = shutdown_tx.send(true);
    supervisor.await.context("supervisor task failed")?;
    for server in api {
        let _ = server.await;
    }
    let _ = metrics.await;
    let mut tmpfs =
        Arc::try_unwrap(tmpfs).map_err(|_| anyhow::anyhow!("tmpfs still in use at shutdown"))?;
    tmpfs.unmount()?;
    tracing::info!("agent stopped");
    Ok(())
}

/// SIGQUIT: the operator tears the cluster down on purpose; the keys go
/// with it and that is not an error.
fn teardown_note(status: &Status) {
    let keys = status.snapshot().shard.key_count;
    let counted = if keys == 1 {
        "1 key is".to_owned()
    } else {
        format!("{keys} keys are")
    };
    tracing::info!(
        signal = "SIGQUIT",
        keys,
        "SIGQUIT: stopping without draining (teardown); the shard's {counted} discarded with it"
    );
}

fn second_signal(name: &str) {
    tracing::warn!(
        signal = name,
        "second signal: stopping without waiting for the drain; \
         keys not yet moved off this shard will be lost"
    );
}
