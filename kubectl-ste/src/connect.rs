//! Reaching the router's user API (`ste.v1.Ring` on `--user-listen`) and
//! the agents (`ste.v1.Agent` on theirs): directly at `--router` /
//! `STE_ROUTER` / the kubeconfig context's `ste.io/router` extension and at
//! the addresses agents registered with, or through port-forwards to their
//! pods when the router was found through the Kubernetes API.
//!
//! Every connection is TLS, verified against the STE CA (see [`crate::trust`])
//! for the host dialled, or through a port-forward for `ste-router` (the
//! router) and the node name (an agent); it presents the kubeconfig user's
//! credentials (see [`crate::credentials`]). Only an `http://` router
//! address, for a router run with `--insecure`, is plain, and then its
//! agents are dialled plain too.

mod address;
mod channel;

pub use address::{DEFAULT_ROUTER_PORT, HOW_TO_SET, RouterSource, router_uri};
pub use channel::ROUTER_SERVER_NAME;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use ste_proto::v1::RegisteredAgent;
use ste_proto::v1::agent_client::AgentClient;
use ste_proto::v1::ring_client::RingClient;
use ste_proto::v1::{
    AgentStatus, GetRingRequest, GetRouterStatusRequest, GetStatusRequest, JoinRequest,
    LeaveRequest, LocateRequest, Location, MigrationProgress, RingInfo, RouterStatus,
};
use tokio::sync::OnceCell;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Response, Status, Streaming};

use address::{check_text, from_text, is_transport_failure, speaks_http1, unreachable};
use channel::{Elapsed, Security, direct_channel, limit_text, port_forward_channel, within};

use crate::credentials::BearerToken;
use crate::error::{CliError, CliResult, refusal, root_cause, status_message};
use crate::kube_api;
use crate::kubeconfig::KubeSettings;

/// How to reach the router: the `--router` flag / `STE_ROUTER` value and
/// the Kubernetes settings for the port-forward fallback.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// `--router`, else `STE_ROUTER` (non-empty), else the kubeconfig
    /// context's `ste.io/router` extension, with its source.
    pub address: Option<(String, RouterSource)>,
    /// For the port-forward fallback.
    pub kube: KubeSettings,
    /// Per request; `None` waits forever.
    pub timeout: Option<Duration>,
}

/// How agents are reached, following how the router was.
enum Route {
    Direct,
    PortForward {
        client: kube::Client,
        /// node → agent pod, listed once on first use.
        agents: OnceCell<Result<BTreeMap<String, String>, String>>,
    },
}

/// The router's `ste.v1.Ring` client: every call carries the bearer token.
type RingConn = RingClient<InterceptedService<Channel, BearerToken>>;

/// Why an agent's details are missing for a user who holds only a bearer
/// token (see [`RouterConn::agent_status`]).
pub const TOKENS_STAY_WITH_THE_ROUTER: &str = "agent not asked: a bearer token is sent only to the \
     router, never to a node (root there could replay it); the agents' details need a client \
     certificate in the kubeconfig";

/// Where users reach a registered agent: its user address (`--user-listen`,
/// TLS with a bearer token or a client certificate), else, for an agent
/// without one, its agent address.
pub fn user_facing_address(agent: &RegisteredAgent) -> &str {
    if agent.user_address.is_empty() {
        &agent.agent_address
    } else {
        &agent.user_address
    }
}

/// A connected client of the router's user API, with the request timeout.
pub struct RouterConn {
    ring: RingConn,
    /// The address for messages, e.g. `127.0.0.1:2492` or
    /// `kube-system/ste-router-0 port 2492 (port-forward)`.
    pub address: String,
    source: RouterSource,
    timeout: Option<Duration>,
    route: Route,
    security: Security,
}

impl RouterConn {
    /// Connects to the router: at the given address, else through a
    /// port-forward to the router pod.
    pub async fn connect(settings: &RouterSettings) -> CliResult<RouterConn> {
        let timeout = settings.timeout;
        if let Some((address, source)) = &settings.address {
            let uri = router_uri(address)?;
            let tls = uri.starts_with("https://");
            let security = Security::resolve(settings, tls, None).await?;
            let shown = uri
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .to_owned();
            let channel = direct_channel(&uri, &security, timeout)
                .await
                .map_err(|reason| unreachable(&shown, source, &reason))?;
            return Ok(RouterConn {
                ring: RingClient::with_interceptor(channel, security.credentials.bearer.clone()),
                address: shown,
                source: source.clone(),
                timeout,
                route: Route::Direct,
                security,
            });
        }
        let client = crate::kubeconfig::client(&settings.kube, timeout)
            .await
            .map_err(|e| {
                CliError::msg(format!(
                    "no router address and no cluster to find the router in ({}); {HOW_TO_SET}",
                    e.to_string().trim_start_matches("error: ")
                ))
            })?;
        let pod = kube_api::find_router_pod(&client, timeout).await?;
        let security = Security::resolve(settings, true, Some(&client)).await?;
        let source = RouterSource::PortForward(pod.clone());
        let shown = format!(
            "{}/{pod} port {} (port-forward)",
            kube_api::STE_NAMESPACE,
            kube_api::ROUTER_USER_PORT
        );
        let channel = port_forward_channel(
            client.clone(),
            kube_api::STE_NAMESPACE,
            &pod,
            kube_api::ROUTER_USER_PORT,
            &security,
            ROUTER_SERVER_NAME,
            timeout,
        )
        .await
        .map_err(|reason| unreachable(&shown, &source, &reason))?;
        Ok(RouterConn {
            ring: RingClient::with_interceptor(channel, security.credentials.bearer.clone()),
            address: shown,
            source,
            timeout,
            route: Route::PortForward {
                client,
                agents: OnceCell::new(),
            },
            security,
        })
    }

    /// The request timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn unary<T, F>(&self, fut: F) -> CliResult<T>
    where
        F: Future<Output = Result<Response<T>, Status>>,
    {
        match within(self.timeout, fut).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.call_error(&status).await),
            Err(Elapsed) => Err(CliError::msg(format!(
                "the STE router at {} did not answer within {}; {HOW_TO_SET}",
                self.address,
                limit_text(self.timeout)
            ))),
        }
    }

    /// [`RouterConn::status_error`], after checking whether a connection
    /// that broke off is an HTTP/1 server's doing: an HTTP/1 server answers
    /// the HTTP/2 preface and hangs up, which tonic reports as anything
    /// from a protocol error to a cancelled call.
    async fn call_error(&self, status: &Status) -> CliError {
        let broke_off = matches!(
            status.code(),
            tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Internal
        );
        // Over TLS an HTTP/1 server fails the handshake instead.
        if broke_off
            && matches!(self.route, Route::Direct)
            && self.security.ca.is_none()
            && speaks_http1(&self.address, self.timeout).await
        {
            return CliError::msg(format!(
                "the server at {}{} answers in HTTP/1, not HTTP/2: this is probably a plain \
                 HTTP server, not the STE router's user API (default port {}); check {}",
                self.address,
                from_text(&self.source),
                DEFAULT_ROUTER_PORT,
                check_text(&self.source)
            ));
        }
        // Over TLS without a client certificate, a server that hangs up
        // right after the handshake wanted one: the router's admin port
        // (2490) and the agents' 2290 refuse the handshake without one.
        if broke_off && self.security.ca.is_some() && self.security.credentials.identity.is_none() {
            return CliError::msg(format!(
                "the server at {}{} closed the connection after the TLS handshake: it probably \
                 requires a client certificate, as the router's admin port ({}) does; kubectl \
                 ste uses the router's user port (default {}), which takes a bearer token; check {}",
                self.address,
                from_text(&self.source),
                ste_proto::wrong_server::ROUTER_ADMIN_PORT,
                DEFAULT_ROUTER_PORT,
                check_text(&self.source)
            ));
        }
        // Plain HTTP/2 to a TLS port breaks off one way or another (the TLS
        // alert read as a frame, a reset, a cancelled call).
        if broke_off && self.security.ca.is_none() && matches!(self.route, Route::Direct) {
            return CliError::msg(format!(
                "the server at {}{} broke off plain HTTP/2 ({}): if it is the STE router, it \
                 serves TLS: drop http:// from the address; check {}",
                self.address,
                from_text(&self.source),
                status.message(),
                check_text(&self.source)
            ));
        }
        self.status_error(status)
    }

    /// A failed call: refused credentials or permissions in kubectl's
    /// words; transport failures name the router and how to set its
    /// address; the router's other errors are printed as it words them.
    pub fn status_error(&self, status: &Status) -> CliError {
        if let Some(refused) = refusal(status) {
            refused
        } else if is_transport_failure(status) {
            let reason = std::error::Error::source(status)
                .map(root_cause)
                .unwrap_or_else(|| status_message(status));
            unreachable(&self.address, &self.source, &self.security.explain(reason))
        } else if let Some(what) = ste_proto::wrong_server::not_the_router(status) {
            CliError::msg(format!(
                "the server at {}{} {what}; check {}",
                self.address,
                from_text(&self.source),
                check_text(&self.source)
            ))
        } else {
            CliError::msg(status_message(status))
        }
    }

    /// `GetStatus`.
    pub async fn status(&self) -> CliResult<RouterStatus> {
        let mut ring = self.ring.clone();
        self.unary(ring.get_status(GetRouterStatusRequest {})).await
    }

    /// `GetRing`.
    pub async fn ring(&self) -> CliResult<RingInfo> {
        let mut ring = self.ring.clone();
        self.unary(ring.get_ring(GetRingRequest {})).await
    }

    /// `Locate`.
    pub async fn locate(&self, key: &[u8]) -> CliResult<Location> {
        let mut ring = self.ring.clone();
        self.unary(ring.locate(LocateRequest { key: key.to_vec() }))
            .await
    }

    /// `Join`: the progress stream, once the router accepted the call.
    pub async fn join(&self, request: JoinRequest) -> CliResult<Streaming<MigrationProgress>> {
        let mut ring = self.ring.clone();
        self.unary(ring.join(request)).await
    }

    /// `Leave`: the progress stream, once the router accepted the call.
    pub async fn leave(&self, request: LeaveRequest) -> CliResult<Streaming<MigrationProgress>> {
        let mut ring = self.ring.clone();
        self.unary(ring.leave(request)).await
    }

    /// The next message of a progress stream within `limit` (`None`: no
    /// limit). `Ok(None)` when the stream ended.
    pub async fn next_progress(
        &self,
        stream: &mut Streaming<MigrationProgress>,
        limit: Option<Duration>,
    ) -> CliResult<Option<MigrationProgress>> {
        match within(limit, stream.message()).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(status)) => Err(self.status_error(&status)),
            Err(Elapsed) => Err(CliError::msg(format!(
                "no progress from the STE router at {} within {}",
                self.address,
                limit_text(limit)
            ))),
        }
    }

    /// The status of a registered agent, asked at its user address (else
    /// its agent address) with the router's CA and the user's client
    /// certificate. The error is the reason, for the `<unknown>` note.
    ///
    /// A bearer token is never sent to an agent: whoever is root on a node
    /// could replay it against kube-apiserver as the user (as Kubernetes
    /// sends users' tokens to kube-apiserver only, never to kubelets). A
    /// user with a token and no certificate is not asked at all.
    pub async fn agent_status(&self, agent: &RegisteredAgent) -> Result<AgentStatus, String> {
        let node = agent.name.as_str();
        let address = user_facing_address(agent);
        if self.security.credentials.identity.is_none()
            && self.security.credentials.bearer.is_some()
        {
            return Err(TOKENS_STAY_WITH_THE_ROUTER.to_owned());
        }
        let channel = match &self.route {
            Route::Direct => {
                let uri = format!("{}://{address}", self.security.scheme());
                direct_channel(&uri, &self.security, self.timeout)
                    .await
                    .map_err(|e| format!("agent at {address} unreachable: {e}"))?
            }
            Route::PortForward { client, agents } => {
                let pods = agents
                    .get_or_init(|| async {
                        kube_api::agent_pods(client, self.timeout)
                            .await
                            .map_err(|e| e.to_string().trim_start_matches("error: ").to_owned())
                    })
                    .await
                    .as_ref()
                    .map_err(Clone::clone)?;
                let pod = pods.get(node).ok_or_else(|| {
                    format!(
                        "no running agent pod on node {node} ({}, {})",
                        kube_api::STE_NAMESPACE,
                        kube_api::AGENT_SELECTOR
                    )
                })?;
                let port = address
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .ok_or_else(|| format!("agent address {address:?} has no port"))?;
                port_forward_channel(
                    client.clone(),
                    kube_api::STE_NAMESPACE,
                    pod,
                    port,
                    &self.security,
                    node,
                    self.timeout,
                )
                .await
                .map_err(|e| format!("agent pod {pod} unreachable: {e}"))?
            }
        };
        let mut agent = AgentClient::new(channel);
        match within(self.timeout, agent.get_status(GetStatusRequest {})).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(agent_failure(address, &status)),
            Err(Elapsed) => Err(format!(
                "agent at {address} did not answer within {}",
                limit_text(self.timeout)
            )),
        }
    }
}

/// An agent's failed call for its row: a refusal in kubectl's words
/// (without the `error: ` of a whole line), else the agent's message.
fn agent_failure(address: &str, status: &Status) -> String {
    match refusal(status) {
        Some(CliError::Message(text)) => format!("agent at {address}: {text}"),
        Some(refused) => format!(
            "agent at {address}: {}",
            refused.to_string().trim_start_matches("error: ")
        ),
        None => format!("agent at {address} failed: {}", status_message(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_reach_an_agent_at_its_user_address_if_it_has_one() {
        let mut agent = RegisteredAgent {
            agent_address: "10.0.0.1:2290".into(),
            user_address: "10.0.0.1:2292".into(),
            ..Default::default()
        };
        assert_eq!(user_facing_address(&agent), "10.0.0.1:2292");
        agent.user_address.clear();
        assert_eq!(user_facing_address(&agent), "10.0.0.1:2290");
    }

    #[test]
    fn refusals_are_worded_as_kubectl_words_them() {
        let forbidden = Status::permission_denied(
            "rings.ste.io is forbidden: User \"alice\" cannot get resource \"rings\" in API group \
             \"ste.io\" at the cluster scope",
        );
        assert_eq!(
            agent_failure("10.0.0.1:2292", &forbidden),
            "agent at 10.0.0.1:2292: Error from server (Forbidden): rings.ste.io is forbidden: \
             User \"alice\" cannot get resource \"rings\" in API group \"ste.io\" at the cluster \
             scope"
        );
        assert_eq!(
            agent_failure("10.0.0.1:2292", &Status::unauthenticated("Unauthorized")),
            "agent at 10.0.0.1:2292: You must be logged in to the server (Unauthorized)"
        );
        assert_eq!(
            agent_failure("10.0.0.1:2292", &Status::internal("boom")),
            "agent at 10.0.0.1:2292 failed: boom"
        );
    }
}
