//! ste-router: an etcd v3 API sharding proxy. An unmodified kube-apiserver
//! points `--etcd-servers-overrides=/pods#...` at it; it spreads the keys
//! over the shard etcds of the ring and presents one etcd with one global
//! revision space.

#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod control;
pub mod error;
pub mod etcd;
pub mod metrics;
pub mod shard;
pub mod shutdown;
pub mod state;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ste_auth::Door;
use ste_auth::tls::ReloadingAcceptor;
use ste_core::revision::GlobalRevision;
use ste_core::ring::Member;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::control::Control;
use crate::control::membership::SERVICES as ETCD_SERVICES;
use crate::metrics::Metrics;
use crate::shard::ShardTimeouts;
use crate::shutdown::ShutdownTrigger;
use crate::state::{MemberRecord, StateFile, StateStore};
use crate::store::placement::connect_grpc;
use crate::store::{Identity, Store, StoreConfig};

fn member_id(name: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(name.as_bytes(), 0x5e7e)
}

/// Pending connections the kernel queues for a listener before it refuses
/// more: Go's listeners (etcd's, kube-apiserver's) ask for the kernel's
/// `net.core.somaxconn`, 4096 by default since Linux 5.4. tokio's default
/// of 1024 overflows under a burst of connects (clients restarting at once)
/// and the kernel then resets them.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(flag: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As std's and tokio's own bind: a restarted router can listen at
        // once although connections of its predecessor are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("{flag} {addr} is already in use: stop whatever listens there or choose another {flag}")
        } else {
            anyhow::anyhow!("cannot listen on {flag} {addr}: {e}")
        }
    })
}

/// The services the etcd port (`--listen`) serves, as reflection lists them.
const ETCD_REFLECTED: [&str; 8] = [
    "etcdserverpb.KV",
    "etcdserverpb.Watch",
    "etcdserverpb.Lease",
    "etcdserverpb.Maintenance",
    "etcdserverpb.Cluster",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The services the admin port (`--admin-listen`) serves, as reflection
/// lists them.
const ADMIN_REFLECTED: [&str; 4] = [
    "ste.v1.Ring",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A reflection service (either version) listing exactly `services`.
fn reflection(services: &[&str]) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ste_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    services
        .iter()
        .fold(builder, |b, name| b.with_service_name(*name))
}

/// Runs the router until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let state = Arc::new(if config.state_etcd.is_empty() {
        StateStore::open(StateFile::new(config.state_file.clone()))?
    } else {
        let etcd = state::EtcdState::new(
            &config.state_etcd,
            &config.state_etcd_key,
            config.tls.state_etcd_client()?,
        )?;
        StateStore::open_etcd(etcd)
            .await
            .context("reading the router state from --state-etcd")?
    });
    let saved = state.snapshot().await;

    let members: Vec<Member> = if config.members.is_empty() {
        saved
            .members
            .iter()
            .map(|m| Member::new(m.name.clone(), m.endpoint.clone()).with_weight(m.weight))
            .collect()
    } else {
        config
            .members
            .iter()
            .map(|m| Member::new(m.name.clone(), m.endpoint.clone()))
            .collect()
    };
    if members.is_empty() {
        tracing::info!(
            "no ring members yet: the etcd API answers NOT_SERVING until an agent registers and joins"
        );
    }
    let records: Vec<MemberRecord> = members
        .iter()
        .map(|m| MemberRecord {
            name: m.name.clone(),
            endpoint: m.endpoint.clone(),
            weight: m.weight,
        })
        .collect();
    let generation = if records == saved.members {
        saved.generation
    } else {
        saved.generation + 1
    };

    let store_config = StoreConfig {
        vnodes: config.vnodes,
        migration_pause: config.migration_pause,
        max_request_bytes: config.max_request_bytes,
        shard_max_txn_ops: config.shard_max_txn_ops,
        event_log_bytes: config.event_log_bytes,
        revision_block: config.revision_block,
        key_index: config.key_index,
        shard_timeouts: ShardTimeouts {
            connect: config.shard_connect_timeout,
            request: config.shard_timeout,
            tls: config.tls.shard_client()?,
        },
    };
    let resync_wanted = Arc::new(tokio::sync::Notify::new());
    let connect = connect_grpc(store_config.shard_timeouts.clone(), resync_wanted.clone());
    let identity = Identity {
        name: config.name.clone(),
        cluster_id: member_id(&format!("{}-cluster", config.name)),
        member_id: member_id(&config.name),
        client_urls: vec![config.advertise_client_url.clone()],
        etcd_version: config.etcd_version.clone(),
    };
    let store = Arc::new(Store::new(
        store_config,
        members,
        generation,
        state.clone(),
        identity,
        connect,
    )?);
    let metrics = Arc::new(Metrics::default());
    let control = Arc::new(Control::new(store.clone(), metrics.clone()));
    for lease in &saved.leases {
        store.leases().insert(lease.id, lease.ttl);
    }
    for name in &saved.held_out {
        if config.members.iter().any(|m| &m.name == name) {
            // The flags are the operator's word on the ring, and the later
            // one: the node is a member, so its leave no longer holds.
            tracing::warn!(
                node = %name,
                "--member names a node an operator's `ring leave` held out; it is a member as \
                 the flags say, and no longer held out"
            );
            control
                .release(name)
                .await
                .context("clearing a held-out record that --member overrides")?;
            continue;
        }
        tracing::info!(
            node = %name,
            "held out of auto-join by an operator's `ring leave`; `kubectl ste ring join {name}` takes it back"
        );
        control.agents().hold_out(name);
    }
    if let Some(target) = &saved.target {
        tracing::warn!(
            members = target.len(),
            "a ring change was interrupted; it resumes once the shards are scanned"
        );
        store.set_target(
            target
                .iter()
                .map(|m| Member::new(m.name.clone(), m.endpoint.clone()).with_weight(m.weight))
                .collect(),
        )?;
    }

    config.api.validate()?;
    if config.api.insecure {
        tracing::warn!(
            admin = %config.admin_listen,
            user = %config.user_listen,
            "--insecure: the admin and user ports serve plain HTTP, unauthenticated: anyone who \
             reaches them can join and leave members, and so move or drop every Pod"
        );
    }
    let access = Arc::new(
        ste_auth::Access::from_flags(
            config.api.insecure,
            config.api.authentication_kubeconfig.as_deref(),
            config.api.authorization_kubeconfig.as_deref(),
        )
        .await?,
    );
    // Read now (a bad file stops the start) and again when the files change.
    let admin_tls = match &config.api.tls {
        Some(files) => Some((
            Arc::new(ReloadingAcceptor::new(files.clone(), Door::Certificates)?),
            Arc::new(ReloadingAcceptor::new(files.clone(), Door::Users)?),
        )),
        None => None,
    };

    let etcd_listener = bind("--listen", config.listen).await?;
    let admin_listener = bind("--admin-listen", config.admin_listen).await?;
    let user_listener = bind("--user-listen", config.user_listen).await?;
    let metrics_listener = bind("--metrics-listen", config.metrics_listen).await?;

    let (shutdown_tx, shutdown_rx) = ShutdownTrigger::new();
    let stopped = {
        let shutdown = shutdown_rx.clone();
        move || {
            let mut shutdown = shutdown.clone();
            async move { shutdown.wait().await }
        }
    };

    let (etcd_health, etcd_health_service) = tonic_health::server::health_reporter();
    for service in ETCD_SERVICES {
        etcd_health
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    // Reflection lists exactly what each port serves (the descriptor sets
    // also define the other port's services and the agent's).
    let etcd_reflection = || reflection(&ETCD_REFLECTED);
    let admin_reflection = || reflection(&ADMIN_REFLECTED);
    let etcd_routes = etcd::routes(
        store.clone(),
        metrics.clone(),
        etcd::WatchSettings {
            progress_interval: config.progress_notify_interval,
        },
        config.max_recv_bytes,
        shutdown_rx.clone(),
    );
    let mut etcd_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(tls) = config.tls.server()? {
        etcd_server = etcd_server.tls_config(tls).context("TLS on --listen")?;
    }
    let etcd_router = etcd_server
        .add_routes(etcd_routes)
        .add_service(etcd_health_service)
        .add_service(etcd_reflection().build_v1()?)
        .add_service(etcd_reflection().build_v1alpha()?);
    let etcd_task = tokio::spawn(etcd_router.serve_with_incoming_shutdown(
        tonic::transport::server::TcpIncoming::from(etcd_listener).with_nodelay(Some(true)),
        stopped(),
    ));

    let (admin_health, admin_health_service) = tonic_health::server::health_reporter();
    admin_health
        .set_service_status("ste.v1.Ring", ServingStatus::Serving)
        .await;
    let ring = admin::RingService::new(control.clone(), access, Door::Certificates);
    let mut ring_servers = Vec::new();
    for (listener, door) in [
        (admin_listener, Door::Certificates),
        (user_listener, Door::Users),
    ] {
        let routes = tonic::transport::Server::builder()
            .add_service(admin_health_service.clone())
            .add_service(admin_reflection().build_v1()?)
            .add_service(admin_reflection().build_v1alpha()?)
            .add_service(ste_proto::v1::ring_server::RingServer::new(ring.on(door)));
        ring_servers.push(match &admin_tls {
            Some((certificates, users)) => {
                let acceptor = if door == Door::Certificates {
                    certificates
                } else {
                    users
                };
                tokio::spawn(routes.serve_with_incoming_shutdown(
                    ste_auth::tls::incoming(listener, acceptor.clone()),
                    stopped(),
                ))
            }
            None => tokio::spawn(routes.serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopped(),
            )),
        });
    }
    let user_task = ring_servers.pop().expect("two ring servers");
    let admin_task = ring_servers.pop().expect("two ring servers");
    let metrics_task = tokio::spawn(metrics::serve(
        metrics_listener,
        store.clone(),
        metrics.clone(),
        stopped(),
    ));
    tracing::info!(
        listen = %config.listen,
        admin = %config.admin_listen,
        user = %config.user_listen,
        metrics = %config.metrics_listen,
        members = store.placement().shards().len(),
        key_index = %config.key_index,
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "router started; scanning shards"
    );

    let ready = async {
        let max_found = store.scan_all(Duration::from_secs(1)).await;
        let start = saved
            .reserved_revision
            .max(max_found)
            .max(GlobalRevision(1));
        let reserved = GlobalRevision(start.0 + config.revision_block);
        state
            .update(|s| {
                s.reserved_revision = reserved;
                s.members = records.clone();
                s.generation = generation;
            })
            .await?;
        store.revisions().restart_at(start, reserved)?;
        // Keys off their owner (an interrupted change, or a different
        // --vnodes or member list than before) are moved by a resume; until
        // then reads look at every shard.
        if store.mark_if_misplaced().await? {
            tracing::warn!("keys are misplaced for the current ring; moving them");
        }
        store.set_ready();
        tracing::info!(revision = %store.revisions().current(), keys = store.index().len(), "shards scanned");
        anyhow::Ok(())
    };
    tokio::select! {
        result = ready => result?,
        _ = sigterm.recv() => return shutdown(shutdown_tx, [etcd_task, admin_task, user_task]).await,
        _ = sigint.recv() => return shutdown(shutdown_tx, [etcd_task, admin_task, user_task]).await,
    }
    let loops = [
        tokio::spawn(control::health::check_shards(
            store.clone(),
            config.health_interval,
            resync_wanted,
            shutdown_rx.clone(),
        )),
        tokio::spawn(control::membership::manage(
            control.clone(),
            etcd_health.clone(),
            control::membership::Policy {
                auto_join: config.auto_join,
                max_auto_join_weight: config.max_auto_join_weight,
                member_dead_after: config.member_dead_after,
                interval: config.health_interval,
            },
            shutdown_rx.clone(),
        )),
        tokio::spawn(
            store
                .clone()
                .expire_leases(Duration::from_millis(500), shutdown_rx.clone()),
        ),
    ];

    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!(signal = signal_name, "shutting down");
    for service in ETCD_SERVICES {
        etcd_health
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    let result = shutdown(shutdown_tx, [etcd_task, admin_task, user_task]).await;
    // The loops and the metrics server stop at the signal; a loop in the
    // middle of a ring change is not waited for (its state is persisted
    // step by step and a restarted router resumes it).
    for task in loops {
        let _ = tokio::time::timeout(Duration::from_millis(200), task).await;
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), metrics_task).await;
    result
}

async fn shutdown(
    stop: ShutdownTrigger,
    servers: [tokio::task::JoinHandle<Result<(), tonic::transport::Error>>; 3],
) -> anyhow::Result<()> {
    // Ends the watches and lease keep-alives too (UNAVAILABLE: clients
    // reconnect, to this router once it is back or to another).
    stop.trigger();
    for server in servers {
        // Streams (watches) keep a graceful shutdown waiting; bound it.
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
    tracing::info!("router stopped");
    Ok(())
}
