//! ste-agent against a fake `ste.v1.Ring` (an in-process tonic server that
//! records calls): Register once SERVING, heartbeats, registering again
//! after a new shard epoch or when the router forgot the agent, Leave
//! before etcd stops on SIGTERM, and an unreachable router that neither
//! blocks serving nor shutdown. The agents are real (real etcd, real tmpfs).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use ste_proto::v1::ring_server::{Ring, RingServer};
use ste_proto::v1::{
    GetRingRequest, GetRouterStatusRequest, HeartbeatRequest, HeartbeatResponse, JoinRequest,
    LeaveRequest, LocateRequest, Location, MigrationPhase, MigrationProgress, RegisterRequest,
    RegisterResponse, RingInfo, RouterStatus,
};
use ste_tests::metrics;
use ste_tests::procs::{alive, free_port, sigkill};
use ste_tests::{AgentOptions, TestAgent, eventually};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::codegen::tokio_stream::Stream;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
const WAIT: Duration = Duration::from_secs(60);

/// What the fake's Leave handler saw while the agent was draining.
#[derive(Debug, Clone, Default)]
struct LeaveCall {
    name: String,
    /// The shard's etcd answered a status call when Leave arrived…
    shard_answered_at_start: bool,
    /// …and again after MOVING was sent, before DONE.
    shard_answered_before_done: bool,
    /// The agent's grpc.health.v1 status ("") when Leave arrived.
    agent_health: Option<i32>,
}

#[derive(Debug, Default)]
struct Calls {
    registers: Vec<RegisterRequest>,
    /// Each heartbeat with the `registered` answer the fake gave.
    heartbeats: Vec<(HeartbeatRequest, bool)>,
    leaves: Vec<LeaveCall>,
    /// Agents this fake knows (registered and not forgotten).
    known: HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaveMode {
    /// PLANNED, MOVING, DONE.
    Complete,
    /// PLANNED, then nothing until the agent gives up.
    Hang,
}

/// A fake ste-router admin API: Register/Heartbeat/Leave recorded, the rest
/// unimplemented. Agents that do not opt out are "joined" at Register.
#[derive(Clone)]
struct FakeRing {
    calls: Arc<Mutex<Calls>>,
    generation: u64,
    leave_mode: LeaveMode,
}

impl FakeRing {
    fn new(generation: u64, leave_mode: LeaveMode) -> Self {
        FakeRing {
            calls: Arc::default(),
            generation,
            leave_mode,
        }
    }

    fn calls<R>(&self, read: impl FnOnce(&mut Calls) -> R) -> R {
        read(&mut self.calls.lock().unwrap())
    }

    /// The next heartbeat from `name` is answered `registered: false`.
    fn forget(&self, name: &str) {
        self.calls(|c| c.known.remove(name));
    }

    fn registration_of(&self, name: &str) -> Option<RegisterRequest> {
        self.calls(|c| c.registers.iter().rev().find(|r| r.name == name).cloned())
    }

    fn is_member(&self, name: &str) -> bool {
        self.registration_of(name).is_some_and(|r| !r.no_join)
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<MigrationProgress, Status>> + Send>>;

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
struct Served {
    ring: FakeRing,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Served {
    async fn start(ring: FakeRing, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let service = RingServer::new(ring.clone());
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
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
    async fn stop(mut self) {
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

async fn shard_answers(endpoint: &str) -> bool {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(5));
    match etcd_client::Client::connect([endpoint], Some(options)).await {
        Ok(mut client) => client.status().await.is_ok(),
        Err(_) => false,
    }
}

async fn agent_health(address: &str) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .ok()?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status)
}

/// Waits until `/metrics` shows `name` = `value`.
async fn wait_metric(agent: &TestAgent, name: &str, value: f64) -> anyhow::Result<()> {
    let result = eventually(&format!("{name} = {value}"), WAIT, || async {
        let text = metrics::scrape(agent.addrs.metrics)
            .await
            .map_err(|e| e.to_string())?;
        match metrics::sample(&text, name) {
            Some(v) if v == value => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    result.map_err(|e| e.context(format!("agent log:\n{}", agent.log())))
}

/// Waits until the fake's recorded calls satisfy `check`.
async fn wait_calls<T>(
    agent: &TestAgent,
    ring: &FakeRing,
    what: &str,
    check: impl Fn(&Calls) -> Option<T>,
) -> anyhow::Result<T> {
    let result = eventually(what, WAIT, || async {
        ring.calls(|c| check(c).ok_or_else(|| format!("{c:?}")))
    })
    .await;
    result.map_err(|e| e.context(format!("agent log:\n{}", agent.log())))
}

/// Waits until the agent's log contains `needle` at least `times` times.
async fn wait_log(agent: &TestAgent, needle: &str, times: usize) -> anyhow::Result<()> {
    eventually(&format!("{times}× {needle:?} in the log"), WAIT, || async {
        let log = agent.log();
        if log.matches(needle).count() >= times {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await
}

fn router_args(addr: SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--router".to_owned(),
        addr.to_string(),
        "--heartbeat-interval".to_owned(),
        "200ms".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

async fn fake_router(leave_mode: LeaveMode) -> anyhow::Result<Served> {
    Served::start(
        FakeRing::new(5, leave_mode),
        SocketAddr::from((LOCALHOST, 0)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_once_serving_and_heartbeats_with_no_join_and_weight() -> anyhow::Result<()> {
    let router = fake_router(LeaveMode::Complete).await?;
    let mut options = AgentOptions::new("opted-out", LOCALHOST);
    options.extra_args = router_args(router.addr, &["--no-join", "--weight", "3"]);
    let mut agent = TestAgent::start(options).await?;
    let ring = &router.ring;

    let register = wait_calls(&agent, ring, "a Register", |c| c.registers.first().cloned()).await?;
    assert_eq!(register.name, "opted-out");
    assert_eq!(
        register.agent_address,
        agent.addrs.grpc.to_string(),
        "an explicit --grpc-listen IP is advertised as is"
    );
    assert_eq!(register.endpoint, agent.addrs.client_url);
    assert_eq!(register.epoch, 1);
    assert_eq!(register.weight, 3);
    assert!(register.no_join);

    let beats = wait_calls(&agent, ring, "3 heartbeats", |c| {
        (c.heartbeats.len() >= 3).then(|| c.heartbeats.clone())
    })
    .await?;
    for (beat, registered) in &beats {
        assert_eq!(beat.name, "opted-out");
        assert_eq!(beat.epoch, 1);
        assert!(registered);
    }
    assert!(beats.iter().any(|(b, _)| b.healthy), "{beats:?}");
    assert_eq!(beats.last().map(|(b, _)| b.generation_seen), Some(5));
    assert_eq!(ring.calls(|c| c.registers.len()), 1, "registered once");

    wait_metric(&agent, "ste_agent_ring_registered", 1.0).await?;
    wait_metric(&agent, "ste_agent_ring_generation", 5.0).await?;
    wait_metric(&agent, "ste_agent_ring_member", 0.0).await?;

    // Not a member: nothing to drain.
    agent.signal(Signal::SIGTERM)?;
    let exit = agent.wait_exit(WAIT).await?;
    assert!(exit.success(), "exit {exit:?}; log:\n{}", agent.log());
    assert!(ring.calls(|c| c.leaves.is_empty()));
    assert!(
        agent.log().contains("not a ring member; nothing to drain"),
        "{}",
        agent.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_again_after_a_new_epoch_and_when_forgotten() -> anyhow::Result<()> {
    let router = fake_router(LeaveMode::Complete).await?;
    let ring = &router.ring;
    let mut options = AgentOptions::new("phoenix", LOCALHOST);
    // A long restart backoff keeps the dead epoch visible to heartbeats.
    options.extra_args = router_args(router.addr, &["--restart-backoff", "2s"]);
    let agent = TestAgent::start(options).await?;
    wait_calls(&agent, ring, "Register of epoch 1", |c| {
        c.registers.iter().find(|r| r.epoch == 1).cloned()
    })
    .await?;
    wait_metric(&agent, "ste_agent_ring_member", 1.0).await?;

    let pid = agent.status().await?.shard.unwrap_or_default().pid;
    assert!(pid > 0 && alive(pid));
    sigkill(pid);
    let second = wait_calls(&agent, ring, "Register of epoch 2", |c| {
        c.registers.iter().find(|r| r.epoch == 2).cloned()
    })
    .await?;
    assert_eq!(second.name, "phoenix");
    assert_eq!(second.endpoint, agent.addrs.client_url);
    let status = agent.status().await?;
    assert_eq!(status.epoch, 2);
    // While etcd was down the router heard an unhealthy heartbeat.
    assert!(
        ring.calls(|c| c.heartbeats.iter().any(|(b, _)| !b.healthy)),
        "{:?}",
        ring.calls(|c| c.heartbeats.clone())
    );
    assert_eq!(
        ring.calls(|c| c.registers.len()),
        2,
        "one Register per epoch"
    );

    // The router forgets the agent: the next heartbeat says so, and the agent
    // registers again (same epoch) straight away.
    ring.forget("phoenix");
    wait_calls(&agent, ring, "Register after being forgotten", |c| {
        (c.registers.len() >= 3).then_some(())
    })
    .await?;
    let (registers, beats_before) = ring.calls(|c| (c.registers.clone(), c.heartbeats.len()));
    assert_eq!(registers[2].epoch, 2);
    assert!(ring.calls(|c| c.heartbeats.iter().any(|(_, registered)| !registered)));
    wait_calls(&agent, ring, "a heartbeat after registering again", |c| {
        c.heartbeats[beats_before..]
            .iter()
            .find(|(b, registered)| *registered && b.epoch == 2)
            .cloned()
    })
    .await?;
    assert!(agent.log().contains("registering again"), "{}", agent.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_a_member_leaves_before_etcd_stops() -> anyhow::Result<()> {
    let router = fake_router(LeaveMode::Complete).await?;
    let ring = &router.ring;
    let mut options = AgentOptions::new("leaver", LOCALHOST);
    options.extra_args = router_args(router.addr, &[]);
    let mut agent = TestAgent::start(options).await?;
    wait_metric(&agent, "ste_agent_ring_member", 1.0).await?;
    let etcd_pid = agent.status().await?.shard.unwrap_or_default().pid;

    agent.signal(Signal::SIGTERM)?;
    let exit = agent.wait_exit(WAIT).await?;
    let log = agent.log();
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");

    let leaves = ring.calls(|c| c.leaves.clone());
    assert_eq!(leaves.len(), 1, "{leaves:?}; log:\n{log}");
    let leave = &leaves[0];
    assert_eq!(leave.name, "leaver");
    assert!(leave.shard_answered_at_start, "etcd stopped before Leave");
    assert!(
        leave.shard_answered_before_done,
        "etcd stopped before DONE; log:\n{log}"
    );
    assert_eq!(
        leave.agent_health,
        Some(ServingStatus::NotServing as i32),
        "health goes NOT_SERVING before the drain"
    );

    let drained = log.find("drained: left the ring");
    let stopped = log.find("etcd stopped");
    assert!(
        drained.is_some() && stopped.is_some() && drained < stopped,
        "{log}"
    );
    assert!(log.contains("2/2 keys moved"), "{log}");
    assert!(!alive(etcd_pid), "etcd outlived the agent");
    assert!(agent.etcd_pids().is_empty());
    assert_eq!(agent.mount_count(), 0);
    Ok(())
}

/// Lines the agent itself logged at WARN or ERROR (etcd's own lines are
/// relayed at DEBUG and do not show at the default filter).
fn alarms(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

/// `local-cluster.sh down`: the router is stopped first, then the agents get
/// SIGQUIT. No drain is attempted and nothing in the log looks like data
/// loss; etcd stops and the tmpfs is unmounted as on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_after_the_router_stopped_tears_down_without_draining_or_alarm()
-> anyhow::Result<()> {
    let router = fake_router(LeaveMode::Complete).await?;
    let ring = router.ring.clone();
    let mut options = AgentOptions::new("torn-down", LOCALHOST);
    options.extra_args = router_args(router.addr, &[]);
    let mut agent = TestAgent::start(options).await?;
    wait_metric(&agent, "ste_agent_ring_member", 1.0).await?;
    agent
        .etcd()
        .await?
        .put("/registry/pods/default/doomed", "v", None)
        .await?;
    agent
        .wait_status("the key counted", |s| {
            s.shard.as_ref().is_some_and(|sh| sh.key_count == 1)
        })
        .await?;
    let etcd_pid = agent.status().await?.shard.unwrap_or_default().pid;

    router.stop().await;
    agent.signal(Signal::SIGQUIT)?;
    let exit = agent.wait_exit(WAIT).await?;
    let log = agent.log();
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    assert!(ring.calls(|c| c.leaves.is_empty()), "a drain was attempted");
    assert!(
        log.contains(
            "SIGQUIT: stopping without draining (teardown); the shard's 1 keys are discarded with it"
        ),
        "{log}"
    );
    assert!(!log.contains("asking the router to drain"), "{log}");
    assert_eq!(alarms(&log), Vec::<&str>::new(), "log:\n{log}");
    assert!(log.contains("agent stopped"), "{log}");
    assert!(!alive(etcd_pid), "etcd outlived the agent");
    assert!(agent.etcd_pids().is_empty());
    assert_eq!(agent.mount_count(), 0, "tmpfs left mounted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_does_not_finish_is_bounded_by_the_drain_timeout() -> anyhow::Result<()> {
    let router = fake_router(LeaveMode::Hang).await?;
    let ring = &router.ring;
    let mut options = AgentOptions::new("stuck", LOCALHOST);
    options.extra_args = router_args(router.addr, &["--drain-timeout", "2s"]);
    let mut agent = TestAgent::start(options).await?;
    wait_metric(&agent, "ste_agent_ring_member", 1.0).await?;

    agent.signal(Signal::SIGTERM)?;
    let exit = agent.wait_exit(WAIT).await?;
    let log = agent.log();
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    assert_eq!(ring.calls(|c| c.leaves.len()), 1, "{log}");
    assert!(
        log.contains("drain did not finish within --drain-timeout"),
        "{log}"
    );
    assert!(agent.etcd_pids().is_empty());
    assert_eq!(agent.mount_count(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_router_blocks_neither_serving_nor_shutdown() -> anyhow::Result<()> {
    let nobody = SocketAddr::from((LOCALHOST, free_port(LOCALHOST.into())));
    let mut options = AgentOptions::new("lonely", LOCALHOST);
    options.extra_args = [
        "--router",
        &nobody.to_string(),
        "--heartbeat-interval",
        "100ms",
        "--log",
        "info,etcd=warn,ste_agent::registration=debug",
    ]
    .map(String::from)
    .to_vec();
    let mut agent = TestAgent::start(options).await?;
    // Several retries, one warning.
    wait_log(&agent, "router still unreachable", 5).await?;
    let log = agent.log();
    assert_eq!(
        log.matches("cannot reach the router").count(),
        1,
        "warned once per outage:\n{log}"
    );
    wait_metric(&agent, "ste_agent_ring_registered", 0.0).await?;
    assert!(agent.status().await?.state() == ste_proto::v1::AgentState::Serving);

    agent.signal(Signal::SIGTERM)?;
    let exit = agent.wait_exit(Duration::from_secs(30)).await?;
    let log = agent.log();
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    assert!(
        log.contains("router unreachable; stopping without draining"),
        "{log}"
    );
    assert!(agent.etcd_pids().is_empty());
    assert_eq!(agent.mount_count(), 0);
    Ok(())
}

/// `--router` at a web server: the agent says it is probably not the
/// router, instead of tonic's bare "grpc-status header missing".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_server_at_the_router_address_is_named_as_such() -> anyhow::Result<()> {
    let web = ste_tests::web::http2_not_found().await?;
    let mut options = AgentOptions::new("misdialled", LOCALHOST);
    options.extra_args = router_args(web.addr, &[]);
    let mut agent = TestAgent::start(options).await?;
    wait_log(
        &agent,
        "the server at the --router address answered HTTP 404 without a gRPC status: this is \
         probably not the STE router's admin API (default port 2490); check --router",
        1,
    )
    .await?;
    assert!(
        agent
            .log()
            .contains("--router does not lead to the router's admin API"),
        "{}",
        agent.log()
    );
    agent.signal(Signal::SIGTERM)?;
    assert!(agent.wait_exit(WAIT).await?.success(), "{}", agent.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_when_the_router_comes_up_and_again_after_it_restarts() -> anyhow::Result<()> {
    let addr = SocketAddr::from((LOCALHOST, free_port(LOCALHOST.into())));
    let mut options = AgentOptions::new("patient", LOCALHOST);
    options.extra_args = router_args(addr, &[]);
    let agent = TestAgent::start(options).await?;
    wait_log(&agent, "cannot reach the router", 1).await?;

    let first = Served::start(FakeRing::new(5, LeaveMode::Complete), addr).await?;
    wait_calls(&agent, &first.ring, "Register", |c| {
        c.registers.first().cloned()
    })
    .await?;
    wait_metric(&agent, "ste_agent_ring_registered", 1.0).await?;
    wait_log(&agent, "router reachable again", 1).await?;

    // The router restarts with no memory of the agent.
    first.stop().await;
    let second = Served::start(FakeRing::new(9, LeaveMode::Complete), addr).await?;
    let register = wait_calls(&agent, &second.ring, "Register at the new router", |c| {
        c.registers.first().cloned()
    })
    .await?;
    assert_eq!(register.epoch, 1, "same shard, same epoch");
    wait_metric(&agent, "ste_agent_ring_generation", 9.0).await?;
    // It learned of the restart from a heartbeat answered `registered: false`.
    let beats = second.ring.calls(|c| c.heartbeats.clone());
    assert!(
        beats
            .first()
            .is_some_and(|(b, registered)| !registered && b.epoch == 1),
        "{beats:?}"
    );
    assert!(agent.log().contains("registering again"), "{}", agent.log());
    Ok(())
}
