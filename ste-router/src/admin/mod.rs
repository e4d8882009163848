//! ste.v1.Ring, the admin API for agents, `kubectl ste` and operators.
//! Every request is first authenticated and authorised by
//! [`ste_auth::Access`] (the node rule, then RBAC on `rings.ste.io`), then
//! checked by [`validate`] before the handler acts on it.

pub mod validate;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ste_auth::{Access, Action, Door};
use ste_core::index::ShardId;
use ste_core::ring::Member;
use ste_proto::v1::ring_server::Ring;
use ste_proto::v1::{
    GetRingRequest, GetRouterStatusRequest, HeartbeatRequest, HeartbeatResponse, JoinRequest,
    LeaveRequest, LocateRequest, Location, MemberHealth, MigrationFlow, MigrationPhase,
    MigrationProgress, RegisterRequest, RegisterResponse, RegisteredAgent, RingInfo, RingMember,
    RouterStatus,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::control::Control;
use crate::control::ring_change::{ChangeKind, ChangeProgress, Phase};
use crate::error::StoreError;

/// An agent whose last heartbeat is older than this is shown unhealthy,
/// whatever it last reported (ten times the agents' default
/// --heartbeat-interval of 1 s): a killed agent sends no "unhealthy".
pub const HEARTBEAT_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

type ProgressStream = ReceiverStream<Result<MigrationProgress, Status>>;

/// A ring change's progress as `ste.v1` carries it.
pub fn progress_message(progress: &ChangeProgress) -> MigrationProgress {
    MigrationProgress {
        phase: match progress.phase {
            Phase::Planned => MigrationPhase::Planned,
            Phase::Moving => MigrationPhase::Moving,
            Phase::Done => MigrationPhase::Done,
        } as i32,
        kind: progress.kind.name().into(),
        member: progress.member.clone(),
        keys_total: progress.keys_total,
        keys_moved: progress.keys_moved,
        bytes_total: progress.bytes_total,
        bytes_moved: progress.bytes_moved,
        eta_seconds: progress.eta.as_secs_f64(),
        flows: progress
            .flows
            .iter()
            .map(|((from, to), flow)| MigrationFlow {
                from: from.clone(),
                to: to.clone(),
                keys: flow.keys,
                bytes: flow.bytes,
            })
            .collect(),
        from_generation: progress.from_generation,
        to_generation: progress.to_generation,
    }
}

/// Runs a ring change in its own task (it must finish even if the caller
/// goes away) and streams its progress; a failure ends the stream with the
/// error's status.
fn spawn_change(
    control: Arc<Control>,
    clock: Arc<GenerationClock>,
    kind: ChangeKind,
    member: String,
    members: Vec<Member>,
    dry_run: bool,
    joined_epoch: Option<u64>,
) -> ProgressStream {
    let (tx, rx) = mpsc::channel(64);
    let (progress_tx, mut progress_rx) = mpsc::channel::<ChangeProgress>(64);
    let forward = {
        let tx = tx.clone();
        async move {
            while let Some(progress) = progress_rx.recv().await {
                // Intermediate updates are dropped when the client reads slowly.
                let message = Ok(progress_message(&progress));
                if progress.phase == Phase::Moving {
                    let _ = tx.try_send(message);
                } else {
                    let _ = tx.send(message).await;
                }
            }
        }
    };
    tokio::spawn(async move {
        let forwarded = tokio::spawn(forward);
        let result = control
            .changes()
            .run(kind, &member, members, dry_run, progress_tx)
            .await;
        let _ = forwarded.await;
        clock.observe(u64::from(control.store().placement().generation()));
        match result {
            Ok(()) if !dry_run && kind == ChangeKind::Join => {
                control.agents().set_joined(&member, joined_epoch)
            }
            Ok(()) if !dry_run && kind == ChangeKind::Leave => control.agents().set_left(&member),
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(kind = kind.name(), %member, %error, "ring change failed");
                let _ = tx.send(Err(error.into())).await;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Since when the ring has been at its current generation, as this service
/// sees it: observed on every Register, Heartbeat and GetStatus and after
/// every change it runs, so a change made elsewhere (the membership loop's
/// auto-joins and fencing) is seen at the next agent heartbeat. `kubectl ste
/// status` uses the age to tell an agent that really lags behind the ring
/// from one that has not had a heartbeat since the change.
#[derive(Debug)]
pub struct GenerationClock {
    since: Mutex<(u64, Instant)>,
}

impl GenerationClock {
    /// A clock that has seen the ring at `generation` from now on.
    pub fn new(generation: u64) -> Self {
        GenerationClock {
            since: Mutex::new((generation, Instant::now())),
        }
    }

    /// Records that the ring is at `generation` now; how long it has been.
    pub fn observe(&self, generation: u64) -> Duration {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        if since.0 != generation {
            *since = (generation, Instant::now());
        }
        since.1.elapsed()
    }
}

/// The `ste.v1.Ring` service, as one port serves it.
#[derive(Clone)]
pub struct RingService {
    control: Arc<Control>,
    clock: Arc<GenerationClock>,
    access: Arc<Access>,
    door: Door,
}

impl RingService {
    /// The service over the router's control plane, on a port that is
    /// `door`, letting in whom `access` lets in.
    pub fn new(control: Arc<Control>, access: Arc<Access>, door: Door) -> Self {
        let generation = u64::from(control.store().placement().generation());
        RingService {
            control,
            clock: Arc::new(GenerationClock::new(generation)),
            access,
            door,
        }
    }

    /// The same service (the same generation clock) on a port that is
    /// `door`.
    pub fn on(&self, door: Door) -> Self {
        RingService {
            door,
            ..self.clone()
        }
    }

    /// Authenticates the request and decides `action` (see
    /// [`Access::check`]).
    async fn check<T>(&self, request: &Request<T>, action: Action<'_>) -> Result<(), Status> {
        self.access.check(self.door, request, action).await
    }

    /// The ring generation now, recorded on the clock, and its age.
    fn generation(&self) -> (u64, Duration) {
        let generation = u64::from(self.control.store().placement().generation());
        (generation, self.clock.observe(generation))
    }

    fn agents(&self) -> Vec<RegisteredAgent> {
        let ring = self.control.store().placement().ring();
        self.control
            .agents()
            .all()
            .into_iter()
            .map(|a| RegisteredAgent {
                member: ring.member(&a.name).is_some(),
                held_out: self.control.agents().is_held_out(&a.name),
                name: a.name,
                agent_address: a.agent_address,
                user_address: a.user_address,
                endpoint: a.endpoint,
                epoch: a.epoch,
                weight: a.weight,
                no_join: a.no_join,
                last_heartbeat_seconds_ago: a.last_seen.elapsed().as_secs(),
                generation_seen: a.generation_seen,
                healthy: a.healthy && a.last_seen.elapsed() < HEARTBEAT_STALE_AFTER,
            })
            .collect()
    }

    /// The members of the committed ring (a member being joined appears
    /// only once the change is done; the change itself is in `migration`).
    fn members(&self) -> Vec<RingMember> {
        let store = self.control.store();
        let counts = store.key_counts();
        let current = store.revisions().current();
        store
            .placement()
            .member_shards()
            .into_iter()
            .map(|shard| {
                let health = shard.health();
                let usable = health.healthy && !health.needs_resync;
                RingMember {
                    name: shard.name.clone(),
                    endpoint: shard.endpoint.clone(),
                    weight: shard.weight,
                    health: if usable {
                        MemberHealth::Healthy
                    } else {
                        MemberHealth::Unavailable
                    }
                    .into(),
                    key_count: counts.get(&shard.id).copied().unwrap_or(0) as u64,
                    last_error: health.last_error,
                    shard_revision: shard.revision_at(current).0,
                }
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Ring for RingService {
    async fn get_ring(
        &self,
        request: Request<GetRingRequest>,
    ) -> Result<Response<RingInfo>, Status> {
        self.check(&request, Action::Read).await?;
        let ring = self.control.store().placement().ring();
        let (generation, vnodes) = (u64::from(ring.generation()), ring.vnodes());
        Ok(Response::new(RingInfo {
            generation,
            vnodes,
            members: self.members(),
        }))
    }

    async fn locate(&self, request: Request<LocateRequest>) -> Result<Response<Location>, Status> {
        self.check(&request, Action::Read).await?;
        let request = request.into_inner();
        validate::locate(&request)?;
        let key = request.key;
        let store = self.control.store();
        let owner = store.placement().owner(&key)?;
        let generation = u64::from(store.placement().generation());
        let entry = store.index().get(&key);
        let mut location = Location {
            key,
            member: owner.name.clone(),
            endpoint: owner.endpoint.clone(),
            generation,
            ..Default::default()
        };
        if let Some(entry) = entry {
            if entry.shard != owner.id {
                let holder: Option<ShardId> = Some(entry.shard);
                tracing::warn!(?holder, member = %owner.name, "key held by a shard other than its owner");
            }
            location.present = true;
            location.mod_revision = entry.modified.0;
            location.create_revision = entry.create.0;
            location.version = entry.version;
            location.value_size = u64::from(entry.value_size);
        }
        Ok(Response::new(location))
    }

    async fn get_status(
        &self,
        request: Request<GetRouterStatusRequest>,
    ) -> Result<Response<RouterStatus>, Status> {
        self.check(&request, Action::Read).await?;
        let store = self.control.store();
        let stats = store.revisions().stats();
        let (generation, generation_age) = self.generation();
        Ok(Response::new(RouterStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            revision: stats.current.0,
            compact_revision: stats.compacted.0,
            reserved_revision: stats.reserved.0,
            watchers: self.control.metrics().watchers(),
            event_log_events: stats.log_events as u64,
            event_log_bytes: stats.log_bytes as u64,
            event_log_oldest_revision: stats.log_oldest.0,
            keys: store.index().len() as u64,
            generation,
            generation_age_seconds: Some(generation_age.as_secs()),
            members: self.members(),
            serving: store.check_ready().is_ok(),
            agents: self.agents(),
            migration: self
                .control
                .changes()
                .progress()
                .as_ref()
                .map(progress_message),
            key_index: store.config().key_index.name().into(),
        }))
    }

    type JoinStream = ProgressStream;

    async fn join(
        &self,
        request: Request<JoinRequest>,
    ) -> Result<Response<Self::JoinStream>, Status> {
        self.check(&request, Action::Join).await?;
        let request = request.into_inner();
        validate::join(&request)?;
        let agent = self.control.agents().get(&request.name);
        let endpoint = if !request.endpoint.is_empty() {
            request.endpoint.clone()
        } else {
            agent.as_ref().map(|a| a.endpoint.clone()).ok_or_else(|| {
                Status::not_found(format!(
                    "node {} has not registered with the router: start its ste-agent with --router, \
                     or give the shard's etcd URL",
                    request.name
                ))
            })?
        };
        let weight = match (request.weight, &agent) {
            (0, Some(a)) => a.weight,
            (0, None) => 1,
            (w, _) => w,
        };
        let ring = self.control.store().placement().placing_ring();
        if ring.member(&request.name).is_some() {
            return Err(Status::already_exists(format!(
                "{} is already a ring member",
                request.name
            )));
        }
        if !request.dry_run && self.control.agents().is_held_out(&request.name) {
            // Joining by hand ends an operator's leave.
            self.control.release(&request.name).await?;
        }
        let mut members: Vec<Member> = ring.members().cloned().collect();
        members.push(Member::new(request.name.clone(), endpoint).with_weight(weight));
        Ok(Response::new(spawn_change(
            self.control.clone(),
            self.clock.clone(),
            ChangeKind::Join,
            request.name,
            members,
            request.dry_run,
            agent.map(|a| a.epoch),
        )))
    }

    type LeaveStream = ProgressStream;

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<Self::LeaveStream>, Status> {
        self.check(&request, Action::Leave(&request.get_ref().name))
            .await?;
        let request = request.into_inner();
        validate::leave(&request)?;
        let ring = self.control.store().placement().placing_ring();
        if ring.member(&request.name).is_none() {
            return Err(Status::not_found(format!(
                "{} is not a ring member",
                request.name
            )));
        }
        if ring.len() == 1 {
            return Err(StoreError::Refused(format!(
                "{} is the last ring member: its keys would have nowhere to go; join another member first",
                request.name
            ))
            .into());
        }
        let members: Vec<Member> = ring
            .members()
            .filter(|m| m.name != request.name)
            .cloned()
            .collect();
        if !request.dry_run {
            if !request.drain {
                // An operator's leave lasts until a Join names the node,
                // recorded before anything moves.
                self.control.hold_out(&request.name).await?;
            }
            // Also while the leave runs, auto-join must not take it back.
            self.control.agents().set_left(&request.name);
        }
        Ok(Response::new(spawn_change(
            self.control.clone(),
            self.clock.clone(),
            ChangeKind::Leave,
            request.name,
            members,
            request.dry_run,
            None,
        )))
    }

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.check(&request, Action::ActAsNode(&request.get_ref().name))
            .await?;
        let request = request.into_inner();
        validate::register(&request)?;
        let agents = self.control.agents();
        let previous = agents.get(&request.name);
        agents.register(&request);
        let member = self.control.store().placement().is_member(&request.name);
        if member && previous.is_none() {
            // A router that restarted learns the epoch its member joined with.
            agents.set_joined(&request.name, Some(request.epoch));
        }
        tracing::info!(agent = %request.name, endpoint = %request.endpoint, epoch = request.epoch, "agent registered");
        Ok(Response::new(RegisterResponse {
            generation: self.generation().0,
            member,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.check(&request, Action::ActAsNode(&request.get_ref().name))
            .await?;
        let request = request.into_inner();
        validate::heartbeat(&request)?;
        let registered = self.control.agents().heartbeat(&request);
        Ok(Response::new(HeartbeatResponse {
            generation: self.generation().0,
            member: self.control.store().placement().is_member(&request.name),
            registered,
        }))
    }
}
