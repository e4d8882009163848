//! The agent's side of `ste.v1.Ring`: Register once the shard serves,
//! Heartbeat every interval, Register again when the router forgot the
//! agent or the shard began a new epoch, and Leave (drain) at shutdown.
//!
//! The router being unreachable never affects the shard: the agent keeps
//! serving, warns once per outage and retries every heartbeat interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ste_proto::v1::ring_client::RingClient;
use ste_proto::v1::{
    HeartbeatRequest, HeartbeatResponse, LeaveRequest, MigrationPhase, MigrationProgress,
    RegisterRequest, RegisterResponse,
};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::config::RouterConfig;
use crate::status::Status;

/// Bound on every unary call to the router, and on connecting to it.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// A failed call to the router.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// No connection (refused, no route, connect timeout, reset).
    #[error("router unreachable: {0}")]
    Unreachable(String),
    /// The call got no answer within the given bound ([`RPC_TIMEOUT`]).
    #[error("router did not answer within {0:?}")]
    Timeout(Duration),
    /// The router answered with an error.
    #[error("router answered {code:?}: {message}")]
    Refused {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message and its causes, joined by `: `.
        message: String,
    },
    /// Something answered at the address, but not the router's admin API
    /// (a web server, another gRPC server): the text says which.
    #[error("the server at the --router address {0}; check --router")]
    NotTheRouter(String),
}

impl RouterError {
    /// True when the router could not be reached at all (no connection or
    /// no answer in time): the agent retries quietly instead of reporting a
    /// refusal.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RouterError::Unreachable(_) | RouterError::Timeout(_))
    }
}

impl From<tonic::Status> for RouterError {
    fn from(status: tonic::Status) -> Self {
        if let Some(what) = ste_proto::wrong_server::not_the_router(&status) {
            return RouterError::NotTheRouter(what);
        }
        let mut message = status.message().to_owned();
        let mut source = std::error::Error::source(&status);
        while let Some(err) = source {
            let text = err.to_string();
            if !message.contains(&text) {
                if !message.is_empty() {
                    message.push_str(": ");
                }
                message.push_str(&text);
            }
            source = err.source();
        }
        match status.code() {
            tonic::Code::Unavailable => RouterError::Unreachable(message),
            code => RouterError::Refused { code, message },
        }
    }
}

/// What the registration loop should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to tell the router yet: the shard has not served since the
    /// router last forgot the agent (or ever).
    Wait,
    /// Announce the shard of this epoch: it serves and the router does not
    /// know it yet (or knows an earlier epoch, whose keys are gone).
    Register {
        /// The shard's current epoch.
        epoch: u64,
    },
    /// Tell the router the registered shard is still there (or, with
    /// `healthy: false`, that it is not serving).
    Heartbeat {
        /// The shard's current epoch; differs from the registered one when
        /// etcd restarted empty, which the router treats as a lost shard.
        epoch: u64,
        /// The shard is SERVING right now.
        healthy: bool,
        /// The last ring generation the router told the agent.
        generation_seen: u64,
    },
}

/// The agent's registration as the router last answered it. Pure state:
/// [`Session::next_step`] decides, the loop calls the router and feeds the
/// answers back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// Epoch of the last successful Register; `None` before it and once a
    /// Heartbeat says the router does not know the agent.
    registered_epoch: Option<u64>,
    generation: u64,
    /// `None` until the router answered once.
    member: Option<bool>,
}

impl Session {
    /// `serving`: the shard is SERVING right now; `epoch`: its current epoch.
    pub fn next_step(&self, serving: bool, epoch: u64) -> Step {
        match self.registered_epoch {
            Some(registered) if registered == epoch => Step::Heartbeat {
                epoch,
                healthy: serving,
                generation_seen: self.generation,
            },
            // Not registered yet, or the shard restarted empty since the last
            // Register: announce this epoch as soon as it serves.
            _ if serving => Step::Register { epoch },
            // A new epoch that does not serve yet: tell the router the shard
            // it knows is gone, then register once the new one serves.
            Some(_) => Step::Heartbeat {
                epoch,
                healthy: false,
                generation_seen: self.generation,
            },
            None => Step::Wait,
        }
    }

    /// Records a successful Register of `epoch`: later steps heartbeat for
    /// it until the epoch changes or the router forgets the agent.
    pub fn registered(&mut self, epoch: u64, answer: &RegisterResponse) {
        self.registered_epoch = Some(epoch);
        self.generation = answer.generation;
        self.member = Some(answer.member);
    }

    /// Records a Heartbeat answer; true if the router has forgotten the
    /// agent and it must register again.
    pub fn heartbeat_answered(&mut self, answer: &HeartbeatResponse) -> bool {
        self.generation = answer.generation;
        self.member = Some(answer.member);
        if !answer.registered {
            self.registered_epoch = None;
        }
        !answer.registered
    }

    /// The router knows the agent (a Register succeeded and no Heartbeat
    /// since said otherwise).
    pub fn is_registered(&self) -> bool {
        self.registered_epoch.is_some()
    }

    /// Ring membership per the router's last answer; `None` if it never answered.
    pub fn member(&self) -> Option<bool> {
        self.member
    }

    /// The ring generation from the router's last answer; 0 before any.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Calls that must fail in a row before an outage is reported: one failed
/// heartbeat is a blip (or a router being stopped on purpose just before
/// its agents, as `local-cluster.sh down` does), not worth a warning.
pub const OUTAGE_REPORTED_AFTER: u64 = 3;

/// Tracks one outage of the router so it is reported once, not on every retry.
#[derive(Debug, Default)]
pub struct Outage {
    since: Option<Instant>,
    failures: u64,
}

impl Outage {
    /// A call failed; true if the outage is now long enough to report
    /// ([`OUTAGE_REPORTED_AFTER`] failures in a row), once per outage.
    pub fn failed(&mut self) -> bool {
        self.failures += 1;
        self.since.get_or_insert_with(Instant::now);
        self.failures == OUTAGE_REPORTED_AFTER
    }

    /// A call succeeded; the length and failed calls of the outage it ends,
    /// if it was reported.
    pub fn recovered(&mut self) -> Option<(Duration, u64)> {
        let since = self.since.take()?;
        let failures = std::mem::take(&mut self.failures);
        (failures >= OUTAGE_REPORTED_AFTER).then(|| (since.elapsed(), failures))
    }
}

/// The Register/Heartbeat loop of one agent.
pub struct Registration {
    /// The router's address, what to ask for (weight, no-join) and timing.
    pub config: RouterConfig,
    /// The member name asked for (the node name).
    pub name: String,
    /// Read for the shard's state and epoch; the router's answers are
    /// recorded in its `ring` part.
    pub status: Arc<Status>,
}

impl Registration {
    fn register_request(&self, epoch: u64) -> RegisterRequest {
        RegisterRequest {
            name: self.name.clone(),
            agent_address: self.config.advertise_address.clone(),
            endpoint: self.status.identity.endpoint.clone(),
            epoch,
            weight: self.config.weight,
            no_join: self.config.no_join,
            user_address: self.config.user_address.clone(),
        }
    }

    /// Runs until `stop` turns true; returns the session as last answered
    /// (its membership decides whether the shutdown drains).
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Session {
        let mut client = RingClient::new(channel(&self.config, Some(RPC_TIMEOUT)));
        let mut changes = self.status.subscribe();
        let mut session = Session::default();
        let mut outage = Outage::default();
        let interval = self.config.heartbeat_interval;
        self.status
            .update(|s| s.ring.router = self.config.address.clone());
        tracing::info!(
            router = %self.config.address,
            advertise = %self.config.advertise_address,
            weight = self.config.weight,
            no_join = self.config.no_join,
            "will register with the router once the shard serves"
        );
        loop {
            if *stop.borrow() {
                break;
            }
            changes.borrow_and_update();
            let snapshot = self.status.snapshot();
            let step = session.next_step(snapshot.is_serving(), snapshot.epoch);
            let result = match step {
                Step::Wait => {
                    tokio::select! {
                        changed = changes.changed() => {
                            if changed.is_err() {
                                let _ = stop.changed().await;
                            }
                        }
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                Step::Register { epoch } => {
                    let request = self.register_request(epoch);
                    call(client.register(request)).await.map(|answer| {
                        session.registered(epoch, &answer);
                        tracing::info!(
                            router = %self.config.address,
                            epoch,
                            generation = answer.generation,
                            member = answer.member,
                            "registered with the router"
                        );
                        // Heartbeat right away: the router learns the
                        // generation this agent has seen (Register does not
                        // carry it).
                        true
                    })
                }
                Step::Heartbeat {
                    epoch,
                    healthy,
                    generation_seen,
                } => {
                    let request = HeartbeatRequest {
                        name: self.name.clone(),
                        epoch,
                        healthy,
                        generation_seen,
                    };
                    call(client.heartbeat(request)).await.map(|answer| {
                        let was_member = session.member();
                        let forgotten = session.heartbeat_answered(&answer);
                        tracing::debug!(
                            epoch,
                            healthy,
                            generation = answer.generation,
                            member = answer.member,
                            registered = answer.registered,
                            "heartbeat"
                        );
                        if !forgotten {
                            log_membership(was_member, answer.member, answer.generation);
                            // A new generation is acknowledged with the next
                            // heartbeat, sent now: until then the router sees
                            // this agent behind the ring.
                            return answer.generation != generation_seen;
                        } else {
                            tracing::info!(
                                router = %self.config.address,
                                epoch,
                                "the router does not know this agent (restarted?); registering again"
                            );
                        }
                        forgotten
                    })
                }
            };
            let again_now = match result {
                Ok(again_now) => {
                    if let Some((down_for, failures)) = outage.recovered() {
                        tracing::info!(
                            router = %self.config.address,
                            down_for = %humantime::format_duration(round_ms(down_for)),
                            failures,
                            "router reachable again"
                        );
                    }
                    self.status.update(|s| {
                        s.ring.registered = session.is_registered();
                        s.ring.member = session.member().unwrap_or(false);
                        s.ring.generation_seen = session.generation();
                        s.ring.last_router_error.clear();
                    });
                    again_now
                }
                Err(error) => {
                    let report = outage.failed();
                    if report && matches!(error, RouterError::NotTheRouter(_)) {
                        tracing::warn!(
                            router = %self.config.address,
                            error = %error,
                            retry_every = %humantime::format_duration(interval),
                            "--router does not lead to the router's admin API; the shard keeps \
                             serving, retrying"
                        );
                    } else if report {
                        tracing::warn!(
                            router = %self.config.address,
                            error = %error,
                            retry_every = %humantime::format_duration(interval),
                            "cannot reach the router; the shard keeps serving, retrying"
                        );
                    } else {
                        tracing::debug!(
                            router = %self.config.address,
                            error = %error,
                            "router still unreachable"
                        );
                    }
                    self.status
                        .update(|s| s.ring.last_router_error = error.to_string());
                    false
                }
            };
            if again_now {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => {}
            }
        }
        session
    }
}

fn log_membership(was: Option<bool>, now: bool, generation: u64) {
    match (was, now) {
        (Some(false), true) => {
            tracing::info!(generation, "this shard is a ring member")
        }
        (Some(true), false) => {
            tracing::info!(generation, "this shard is no longer a ring member")
        }
        _ => {}
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// A lazily connecting channel to the router; reconnects by itself after
/// the router restarts.
fn channel(config: &RouterConfig, timeout: Option<Duration>) -> Channel {
    // validate() checked the URI; an unparsable one cannot reach this point.
    let mut endpoint = Endpoint::from_shared(config.uri())
        .unwrap_or_else(|_| Endpoint::from_static("http://invalid.invalid:1"))
        .connect_timeout(RPC_TIMEOUT)
        .tcp_nodelay(true);
    // validate() read the TLS files at start; if they became unreadable
    // since, calls fail (and say so) rather than go out without TLS.
    match config.tls().and_then(|tls| match tls {
        Some(tls) => Ok(endpoint.clone().tls_config(tls)?),
        None => Ok(endpoint.clone()),
    }) {
        Ok(with_tls) => endpoint = with_tls,
        Err(error) => {
            tracing::error!(%error, "TLS towards the router");
            endpoint = Endpoint::from_static("https://tls-files-unreadable.invalid:1");
        }
    }
    let endpoint = match timeout {
        Some(timeout) => endpoint.timeout(timeout),
        None => endpoint,
    };
    endpoint.connect_lazy()
}

/// One unary call, bounded by [`RPC_TIMEOUT`] whatever the transport does.
async fn call<T>(
    rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, RouterError> {
    match tokio::time::timeout(RPC_TIMEOUT, rpc).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) if status.code() == tonic::Code::Cancelled => {
            Err(RouterError::Timeout(RPC_TIMEOUT))
        }
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(RouterError::Timeout(RPC_TIMEOUT)),
    }
}

/// How a Leave at shutdown ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DrainOutcome {
    /// The router moved the shard's keys off it and removed it from the ring.
    Drained {
        /// Keys moved to other members.
        keys_moved: u64,
        /// Keys the plan had to move.
        keys_total: u64,
    },
    /// The router does not have this agent as a member.
    NotMember(String),
    /// The Leave call or its progress stream failed.
    Failed(RouterError),
    /// The progress stream ended without DONE.
    Incomplete {
        /// Keys moved before the stream ended.
        keys_moved: u64,
        /// Keys the plan had to move.
        keys_total: u64,
    },
    /// `--drain-timeout` passed first.
    TimedOut {
        /// Keys moved before the timeout.
        keys_moved: u64,
        /// Keys the plan had to move.
        keys_total: u64,
    },
}

/// Asks the router to move every key off this member (`Ring/Leave`) and
/// follows the progress until DONE, the stream ends or fails, or
/// `--drain-timeout` passes.
pub async fn leave(config: &RouterConfig, name: &str) -> DrainOutcome {
    let progress = std::sync::Mutex::new((0u64, 0u64));
    let follow = async {
        // No overall request timeout: the drain bound is --drain-timeout.
        let mut client = RingClient::new(channel(config, None));
        // A drain: once this agent registers anew it may be joined again.
        let request = LeaveRequest {
            name: name.to_owned(),
            dry_run: false,
            drain: true,
        };
        let mut stream = match client.leave(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                return DrainOutcome::NotMember(status.message().to_owned());
            }
            Err(status) => return DrainOutcome::Failed(status.into()),
        };
        let mut logged: Option<(MigrationPhase, Instant)> = None;
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    let phase = message.phase();
                    *progress.lock().unwrap_or_else(|e| e.into_inner()) =
                        (message.keys_moved, message.keys_total);
                    let due = logged.is_none_or(|(last_phase, at)| {
                        last_phase != phase || at.elapsed() >= Duration::from_secs(1)
                    });
                    if due || phase == MigrationPhase::Done {
                        log_progress(&message);
                        logged = Some((phase, Instant::now()));
                    }
                    if phase == MigrationPhase::Done {
                        return DrainOutcome::Drained {
                            keys_moved: message.keys_moved,
                            keys_total: message.keys_total,
                        };
                    }
                }
                Ok(None) => {
                    let (keys_moved, keys_total) =
                        *progress.lock().unwrap_or_else(|e| e.into_inner());
                    return DrainOutcome::Incomplete {
                        keys_moved,
                        keys_total,
                    };
                }
                Err(status) => return DrainOutcome::Failed(status.into()),
            }
        }
    };
    match tokio::time::timeout(config.drain_timeout, follow).await {
        Ok(outcome) => outcome,
        Err(_) => {
            let (keys_moved, keys_total) = *progress.lock().unwrap_or_else(|e| e.into_inner());
            DrainOutcome::TimedOut {
                keys_moved,
                keys_total,
            }
        }
    }
}

fn log_progress(message: &MigrationProgress) {
    tracing::info!(
        phase = message.phase().as_str_name(),
        keys_moved = message.keys_moved,
        keys_total = message.keys_total,
        bytes_moved = message.bytes_moved,
        bytes_total = message.bytes_total,
        eta_seconds = message.eta_seconds,
        generation = message.to_generation,
        "draining: {}/{} keys moved",
        message.keys_moved,
        message.keys_total
    );
}

/// The drain step of the shutdown: Leave if this agent is (or may be) a
/// ring member, and say clearly what happens to its keys otherwise.
/// `member` is the membership from the router's last answer (`None` if it
/// never answered).
pub async fn drain(config: &RouterConfig, name: &str, member: Option<bool>, status: &Status) {
    if member == Some(false) {
        tracing::info!(
            router = %config.address,
            "not a ring member; nothing to drain"
        );
        return;
    }
    tracing::info!(
        router = %config.address,
        name,
        timeout = %humantime::format_duration(config.drain_timeout),
        "asking the router to drain this shard (Ring/Leave)"
    );
    let started = Instant::now();
    let outcome = leave(config, name).await;
    let took = humantime::format_duration(round_ms(started.elapsed()));
    let unknown = if member.is_none() {
        " (membership unknown: the router never answered)"
    } else {
        ""
    };
    match &outcome {
        DrainOutcome::Drained {
            keys_moved,
            keys_total,
        } => {
            tracing::info!(keys_moved, keys_total, took = %took, "drained: left the ring");
            status.update(|s| {
                s.ring.member = false;
            });
        }
        DrainOutcome::NotMember(message) => {
            tracing::info!(router_says = %message, "the router has no such member; nothing to drain");
        }
        DrainOutcome::Failed(error) if error.is_unreachable() => {
            tracing::error!(
                router = %config.address,
                error = %error,
                "router unreachable; stopping without draining: its keys on this shard will be lost{unknown}"
            );
        }
        DrainOutcome::Failed(error) => {
            tracing::error!(
                router = %config.address,
                error = %error,
                "the router refused or failed the drain; stopping without draining: \
                 its keys on this shard will be lost{unknown}"
            );
        }
        DrainOutcome::Incomplete {
            keys_moved,
            keys_total,
        } => {
            tracing::error!(
                keys_moved,
                keys_total,
                "the router ended the drain before DONE; stopping anyway: \
                 keys not moved off this shard will be lost"
            );
        }
        DrainOutcome::TimedOut {
            keys_moved,
            keys_total,
        } => {
            tracing::error!(
                keys_moved,
                keys_total,
                timeout = %humantime::format_duration(config.drain_timeout),
                "drain did not finish within --drain-timeout; stopping anyway: \
                 keys not moved off this shard will be lost"
            );
        }
    }
    if let DrainOutcome::Failed(error) = &outcome {
        status.update(|s| s.ring.last_router_error = error.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(generation: u64, member: bool) -> RegisterResponse {
        RegisterResponse { generation, member }
    }

    fn heartbeat(generation: u64, member: bool, registered: bool) -> HeartbeatResponse {
        HeartbeatResponse {
            generation,
            member,
            registered,
        }
    }

    #[test]
    fn waits_for_serving_before_the_first_register() {
        let session = Session::default();
        assert_eq!(session.next_step(false, 0), Step::Wait);
        assert_eq!(session.next_step(false, 1), Step::Wait);
        assert_eq!(session.next_step(true, 1), Step::Register { epoch: 1 });
        assert_eq!(session.member(), None);
    }

    #[test]
    fn heartbeats_report_health_and_the_generation_seen() {
        let mut session = Session::default();
        session.registered(1, &registered(7, true));
        assert_eq!(
            session.next_step(true, 1),
            Step::Heartbeat {
                epoch: 1,
                healthy: true,
                generation_seen: 7
            }
        );
        assert!(!session.heartbeat_answered(&heartbeat(8, true, true)));
        // Degraded within the same epoch: keep heartbeating, unhealthy.
        assert_eq!(
            session.next_step(false, 1),
            Step::Heartbeat {
                epoch: 1,
                healthy: false,
                generation_seen: 8
            }
        );
        assert_eq!(session.member(), Some(true));
    }

    #[test]
    fn a_new_epoch_is_reported_then_registered_once_it_serves() {
        let mut session = Session::default();
        session.registered(1, &registered(3, true));
        // etcd restarted (wiped): epoch 2, not serving yet.
        assert_eq!(
            session.next_step(false, 2),
            Step::Heartbeat {
                epoch: 2,
                healthy: false,
                generation_seen: 3
            }
        );
        assert_eq!(session.next_step(true, 2), Step::Register { epoch: 2 });
        session.registered(2, &registered(4, false));
        assert!(matches!(
            session.next_step(true, 2),
            Step::Heartbeat { epoch: 2, .. }
        ));
        assert_eq!(session.member(), Some(false));
    }

    #[test]
    fn a_forgotten_agent_registers_again() {
        let mut session = Session::default();
        session.registered(1, &registered(3, true));
        assert!(session.heartbeat_answered(&heartbeat(0, false, false)));
        assert!(!session.is_registered());
        assert_eq!(session.next_step(true, 1), Step::Register { epoch: 1 });
        // Forgotten while not serving: wait for the shard, then register.
        assert_eq!(session.next_step(false, 1), Step::Wait);
        // The router's own view of membership is kept (it may survive a
        // router restart in its state store).
        let mut session = Session::default();
        session.registered(1, &registered(3, true));
        assert!(session.heartbeat_answered(&heartbeat(3, true, false)));
        assert_eq!(session.member(), Some(true));
    }

    #[test]
    fn an_outage_is_reported_once() {
        let mut outage = Outage::default();
        assert_eq!(outage.recovered(), None);
        // A blip is not reported, nor its end.
        assert!(!outage.failed());
        assert_eq!(outage.recovered(), None);
        assert!(!outage.failed());
        assert!(!outage.failed());
        assert!(outage.failed(), "reported at the third failure in a row");
        assert!(!outage.failed(), "and only once");
        let (_, failures) = outage.recovered().unwrap();
        assert_eq!(failures, 4);
        assert_eq!(outage.recovered(), None);
        assert!(!outage.failed());
        assert!(!outage.failed());
        assert!(outage.failed(), "a new outage is reported again");
    }

    #[test]
    fn a_web_server_is_not_the_router() {
        let error = RouterError::from(tonic::Status::unimplemented(
            "grpc-status header missing, mapped from HTTP status code 404",
        ));
        assert_eq!(
            error.to_string(),
            "the server at the --router address answered HTTP 404 without a gRPC status: this is \
             probably not the STE router's admin API (default ports 2490 for agents, 2492 for users); check --router"
        );
        assert!(!error.is_unreachable());
    }

    #[test]
    fn unavailable_means_unreachable() {
        let error = RouterError::from(tonic::Status::unavailable("tcp connect error"));
        assert!(error.is_unreachable());
        let error = RouterError::from(tonic::Status::failed_precondition("last member"));
        assert!(!error.is_unreachable());
        assert!(error.to_string().contains("last member"), "{error}");
    }
}
