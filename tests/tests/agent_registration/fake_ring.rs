//! The fake router: an in-process `ste.v1.Ring` server that records
//! Register, Heartbeat and Leave (with what the agent's shard answered
//! while it drained) and can be stopped and started on the same address.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ste_proto::v1::ring_server::{Ring, RingServer};
use ste_proto::v1::{
    GetRingRequest, GetRouterStatusRequest, HeartbeatRequest, HeartbeatResponse, JoinRequest,
    LeaveRequest, LocateRequest, Location, MigrationPhase, MigrationProgress, RegisterRequest,
    RegisterResponse, RingInfo, RouterStatus,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::codegen::tokio_stream::Stream;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::{LOCALHOST, agent_health};

/// What the fake's Leave handler saw while the agent was draining.
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaveCall {
    pub(crate) name: String,
    /// The shard's etcd answered a status call when Leave arrived…
    pub(crate) shard_answered_at_start: bool,
    /// …and again after MOVING was sent, before DONE.
    pub(crate) shard_answered_before_done: bool,
    /// The agent's grpc.health.v1 status ("") when Leave arrived.
    pub(crate) agent_health: Option<i32>,
}

#[derive(Debug, Default)]
pub(crate) struct Calls {
    pub(crate) registers: Vec<RegisterRequest>,
    /// Each heartbeat with the `registered` answer the fake gave.
    pub(crate) heartbeats: Vec<(HeartbeatRequest, bool)>,
    pub(crate) leaves: Vec<LeaveCall>,
    /// Agents this fake knows (registered and not forgotten).
    pub(crate) known: HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaveMode {
    /// PLANNED, MOVING, DONE.
    Complete,
    /// PLANNED, then nothing until the agent gives up.
    Hang,
}

/// A fake ste-router admin API: Register/Heartbeat/Leave recorded, the rest
/// unimplemented. Agents that do not opt out are "joined" at Register.
#[derive(Clone)]
pub(crate) struct FakeRing {
    pub(crate) calls: Arc<Mutex<Calls>>,
    pub(crate) generation: u64,
    pub(crate) leave_mode: LeaveMode,
}

impl FakeRing {
    pub(crate) fn new(generation: u64, leave_mode: LeaveMode) -> Self {
        FakeRing {
            calls: Arc::default(),
            generation,
            leave_mode,
        }
    }

    pub(crate) fn calls<R>(&self, read: impl FnOnce(&mut Calls) -> R) -> R {
        read(&mut self.calls.lock().unwrap())
    }

    /// The next heartbeat from `name` is answered `registered: false`.
    pub(crate) fn forget(&self, name: &str) {
        self.calls(|c| c.known.remove(name));
    }

    pub(crate) fn registration_of(&self, name: &str) -> Option<RegisterRequest> {
        self.calls(|c| c.registers.iter().rev().find(|r| r.name == name).cloned())
    }

    pub(crate) fn is_member(&self, name: &str) -> bool {
        self.registration_of(name).is_some_and(|r| !r.no_join)
    }
}

pub(crate) type ProgressStream =
    Pin<Box<dyn Stream<Item = Result<MigrationProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Ring for FakeRing {
    async fn get_ring(&self, _: Request<GetRingRequest>) -> Result<Response<RingInfo>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn locate(&self, _: Request<LocateRequest>) -> Result<Response<Location>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_status(
        &self,
        _: Request<GetRouterStatusRequest>,
    ) -> Result<Response<RouterStatus>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type JoinStream = ProgressStream;

    async fn join(&self, _: Request<JoinRequest>) -> Result<Response<ProgressStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type LeaveStream = ProgressStream;

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let name = request.into_inner().name;
        let registration = self
            .registration_of(&name)
            .ok_or_else(|| Status::not_found(format!("no agent {name:?}")))?;
        let (tx, rx) = mpsc::channel(4);
        let calls = self.calls.clone();
        let mode = self.leave_mode;
        let generation = self.generation;
        tokio::spawn(async move {
            let mut call = LeaveCall {
                name: name.clone(),
                shard_answered_at_start: shard_answers(&registration.endpoint).await,
                agent_health: agent_health(&registration.agent_address).await,
                ..LeaveCall::default()
            };
            let progress = |phase: MigrationPhase, moved: u64| MigrationProgress {
                phase: phase.into(),
                kind: "leave".into(),
                member: name.clone(),
                keys_total: 2,
                keys_moved: moved,
                from_generation: generation,
                to_generation: generation + 1,
                ..MigrationProgress::default()
            };
            let _ = tx.send(Ok(progress(MigrationPhase::Planned, 0))).await;
            if mode == LeaveMode::Hang {
                calls.lock().unwrap().leaves.push(call);
                // Keep the stream open until the agent hangs up.
                tx.closed().await;
                return;
            }
            let _ = tx.send(Ok(progress(MigrationPhase::Moving, 1))).await;
            call.shard_answered_before_done = shard_answers(&registration.endpoint).await;
            calls.lock().unwrap().leaves.push(call);
            let _ = tx.send(Ok(progress(MigrationPhase::Done, 2))).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let request = request.into_inner();
        let member = !request.no_join;
        self.calls(|c| {
            c.known.insert(request.name.clone());
            c.registers.push(request);
        });
        Ok(Response::new(RegisterResponse {
            generation: self.generation,
            member,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let registered = self.calls(|c| {
            let known = c.known.contains(&request.name);
            c.heartbeats.push((request.clone(), known));
            known
        });
        Ok(Response::new(HeartbeatResponse {
            generation: self.generation,
            member: registered && self.is_member(&request.name),
            registered,
        }))
    }
}

/// A fake router serving on `addr` until dropped (or [`Served::stop`]).
pub(crate) struct Served {
    pub(crate) ring: FakeRing,
    pub(crate) addr: SocketAddr,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) task: JoinHandle<()>,
}

impl Served {
    pub(crate) async fn start(ring: FakeRing, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let service = RingServer::new(ring.clone());
        let task = tokio::spawn(async move {
            // TLS as the router's admin port: the agents present their
            // node certificates.
            let Ok(mut server) = tonic::transport::Server::builder()
                .tls_config(ste_tests::pki::ste().router_admin_server_tls())
            else {
                return;
            };
            let _ = server
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Served {
            ring,
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// Stops serving and closes every connection (a router going away).
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        if tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the shard at `endpoint` answers a status call, asked as the
/// router asks: with its shard client certificate for an https:// shard.
pub(crate) async fn shard_answers(endpoint: &str) -> bool {
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(5));
    if endpoint.starts_with("https://") {
        options = options.with_tls(ste_tests::pki::ste().router_tls());
    }
    let status = async {
        let mut client = etcd_client::Client::connect([endpoint], Some(options)).await?;
        client.status().await
    };
    // Bounded as a whole: a lazily connecting client waits for its
    // connection without the request timeout.
    matches!(
        tokio::time::timeout(Duration::from_secs(10), status).await,
        Ok(Ok(_))
    )
}

pub(crate) async fn fake_router(leave_mode: LeaveMode) -> anyhow::Result<Served> {
    Served::start(
        FakeRing::new(5, leave_mode),
        SocketAddr::from((LOCALHOST, 0)),
    )
    .await
}
