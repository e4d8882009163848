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

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use ste_proto::v1::RegisteredAgent;
use ste_proto::v1::agent_client::AgentClient;
use ste_proto::v1::ring_client::RingClient;
use ste_proto::v1::{
    AgentStatus, GetRingRequest, GetRouterStatusRequest, GetStatusRequest, JoinRequest,
    LeaveRequest, LocateRequest, Location, MigrationProgress, RingInfo, RouterStatus,
};
use tokio::sync::OnceCell;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};
use tonic::{Response, Status, Streaming};

use crate::credentials::{BearerToken, Credentials};
use crate::error::{CliError, CliResult, refusal, root_cause, status_message};
use crate::kube_api;
use crate::kubeconfig::{self, KubeSettings};
use crate::trust::{self, SteCa};

/// Default port of the router's user API (`--user-listen`).
pub const DEFAULT_ROUTER_PORT: u16 = 2492;

/// The name the router's certificate is verified for through a
/// port-forward, where there is no host name to verify.
pub const ROUTER_SERVER_NAME: &str = "ste-router";

/// How the user tells the plugin where the router is, in the order it
/// looks; the end of every "cannot find / reach the router" line.
pub const HOW_TO_SET: &str = "set the router's user address with --router HOST:PORT, the \
     STE_ROUTER environment variable, or the extension ste.io/router (address: HOST:PORT) of the \
     kubeconfig context; without them the plugin port-forwards to the router pod in kube-system";

/// Where the router address came from, to say so when it does not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterSource {
    /// `--router`.
    Flag,
    /// `STE_ROUTER`.
    Env,
    /// The `ste.io/router` extension of this kubeconfig context.
    Kubeconfig(String),
    /// A port-forward to this pod in kube-system.
    PortForward(String),
}

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

/// The URI for a `--router` value: `HOST:PORT`, `HOST` (port 2492) or
/// `https://HOST[:PORT]` give `https://HOST:PORT`; `http://HOST[:PORT]`
/// gives `http://HOST:PORT`, for a router run with `--insecure`.
pub fn router_uri(address: &str) -> CliResult<String> {
    let (scheme, bare) = match address.split_once("://") {
        Some(("https", rest)) => ("https", rest),
        Some(("http", rest)) => ("http", rest),
        Some(_) => ("", address),
        None => ("https", address),
    };
    let bare = bare.trim_end_matches('/');
    if scheme.is_empty() || bare.is_empty() || bare.contains("://") || bare.contains('/') {
        return Err(CliError::msg(format!(
            "invalid router address {address:?}: expected HOST:PORT, e.g. \
             127.0.0.1:{DEFAULT_ROUTER_PORT} (https://HOST:PORT alike; http://HOST:PORT for a \
             router run with --insecure)"
        )));
    }
    let has_port = match bare.rsplit_once(':') {
        Some((host, port)) => {
            (!host.contains(':') || host.ends_with(']')) && port.parse::<u16>().is_ok()
        }
        None => false,
    };
    let uri = if has_port {
        format!("{scheme}://{bare}")
    } else {
        format!("{scheme}://{bare}:{DEFAULT_ROUTER_PORT}")
    };
    uri.parse::<Uri>()
        .map_err(|e| CliError::msg(format!("invalid router address {address:?}: {e}")))?;
    Ok(uri)
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

/// What every connection trusts and presents.
#[derive(Clone)]
struct Security {
    /// The STE CA; `None` only for an `http://` router (`--insecure`).
    ca: Option<SteCa>,
    credentials: Credentials,
}

impl Security {
    /// The CA and credentials for a router at `tls` (false: `http://`).
    /// `client` is the Kubernetes client when there is one already, for
    /// the ConfigMap that is the CA's last source.
    async fn resolve(
        settings: &RouterSettings,
        tls: bool,
        client: Option<&kube::Client>,
    ) -> CliResult<Security> {
        let loaded = kubeconfig::load(&settings.kube)?;
        let context = settings.kube.context.as_deref();
        let user = match &loaded {
            Some(loaded) => kubeconfig::context_user(loaded, context)?,
            None => None,
        };
        let credentials = match user {
            Some((name, auth)) => Credentials::from_auth_info(&name, &auth)?,
            None => Credentials::default(),
        };
        if !tls {
            return Ok(Security {
                ca: None,
                credentials,
            });
        }
        let extension = match &loaded {
            Some(loaded) => kubeconfig::router_extension_value(loaded, context)?,
            None => None,
        };
        let env = std::env::var_os(trust::CA_ENV);
        let local = trust::local_ca(
            extension
                .as_ref()
                .map(|(name, value)| (name.as_str(), *value)),
            env.as_deref(),
        )?;
        let ca = match local {
            Some(ca) => ca,
            None => {
                let client = match client {
                    Some(client) => client.clone(),
                    None => kubeconfig::client(&settings.kube, settings.timeout)
                        .await
                        .map_err(|e| {
                            trust::no_ca(&format!(
                                "no cluster to read the ConfigMap from ({})",
                                e.to_string().trim_start_matches("error: ")
                            ))
                        })?,
                };
                let pem = kube_api::ste_ca(&client, settings.timeout)
                    .await
                    .map_err(|e| {
                        CliError::msg(format!(
                            "{}; {}",
                            e.to_string().trim_start_matches("error: "),
                            trust::HOW_TO_TRUST
                        ))
                    })?;
                trust::configmap_ca(pem)?
            }
        };
        Ok(Security {
            ca: Some(ca),
            credentials,
        })
    }

    /// The TLS settings for a server verified as `server_name` (`None`:
    /// the host of the URI dialled); `None` for plain `http://`.
    fn tls(&self, server_name: Option<&str>) -> Option<ClientTlsConfig> {
        let ca = self.ca.as_ref()?;
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca.pem))
            // The router and agents are gRPC servers: HTTP/2 even when a
            // proxy in between drops ALPN.
            .assume_http2(true);
        if let Some(identity) = &self.credentials.identity {
            config = config.identity(identity.clone());
        }
        if let Some(name) = server_name {
            config = config.domain_name(name);
        }
        Some(config)
    }

    /// `https` or `http`, for agents dialled directly.
    fn scheme(&self) -> &'static str {
        if self.ca.is_some() { "https" } else { "http" }
    }

    /// A connect failure's reason, with what to check when it is about
    /// TLS: the CA used, or a server that does not speak TLS at all.
    fn explain(&self, reason: String) -> String {
        let Some(ca) = &self.ca else {
            return reason;
        };
        if reason.contains("InvalidContentType") || reason.contains("corrupt message") {
            format!(
                "{reason} (the server does not speak TLS; a router run with --insecure is \
                 reached with http://HOST:PORT)"
            )
        } else if reason.contains("certificate") || reason.contains("CertificateRequired") {
            format!("{reason} (verified with the STE CA from {})", ca.source)
        } else {
            reason
        }
    }
}

/// The router's `ste.v1.Ring` client: every call carries the bearer token.
type RingConn = RingClient<InterceptedService<Channel, BearerToken>>;

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

async fn within<T, F>(timeout: Option<Duration>, fut: F) -> Result<T, Elapsed>
where
    F: Future<Output = T>,
{
    match timeout {
        Some(limit) => tokio::time::timeout(limit, fut).await.map_err(|_| Elapsed),
        None => Ok(fut.await),
    }
}

struct Elapsed;

fn limit_text(timeout: Option<Duration>) -> String {
    timeout
        .map(|t| humantime::format_duration(t).to_string())
        .unwrap_or_else(|| "the request timeout".into())
}

/// A channel over a fresh port-forward to `namespace/pod` for every
/// connection tonic makes; TLS verified for `server_name` over it.
async fn port_forward_channel(
    client: kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
    security: &Security,
    server_name: &str,
    timeout: Option<Duration>,
) -> Result<Channel, String> {
    let (namespace, pod) = (namespace.to_owned(), pod.to_owned());
    let connector = tower::service_fn(move |_: Uri| {
        let (client, namespace, pod) = (client.clone(), namespace.clone(), pod.clone());
        async move {
            kube_api::port_forward(&client, &namespace, &pod, port, timeout)
                .await
                .map(TokioIo::new)
        }
    });
    // tonic puts TLS over whatever the connector returns when the URI is
    // https; the host is never dialled, the certificate is checked for
    // `server_name`.
    let scheme = security.scheme();
    let endpoint = endpoint(
        &format!("{scheme}://{server_name}"),
        security.tls(Some(server_name)),
        timeout,
    )?;
    match within(timeout, endpoint.connect_with_connector(connector)).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(security.explain(root_cause(&e))),
        Err(Elapsed) => Err(format!("no answer within {}", limit_text(timeout))),
    }
}

/// The endpoint for `uri` with `tls` (when https) and the connect timeout.
fn endpoint(
    uri: &str,
    tls: Option<ClientTlsConfig>,
    timeout: Option<Duration>,
) -> Result<Endpoint, String> {
    let mut endpoint = Endpoint::from_shared(uri.to_owned()).map_err(|e| e.to_string())?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS settings (CA, client certificate): {}", root_cause(&e)))?;
    }
    if let Some(t) = timeout {
        endpoint = endpoint.connect_timeout(t);
    }
    Ok(endpoint)
}

/// A channel to `uri`, TLS verified for the URI's host when https.
async fn direct_channel(
    uri: &str,
    security: &Security,
    timeout: Option<Duration>,
) -> Result<Channel, String> {
    let endpoint = endpoint(uri, security.tls(None), timeout)?;
    match within(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(security.explain(root_cause(&e))),
        Err(Elapsed) => Err(format!("no answer within {}", limit_text(timeout))),
    }
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
    /// its agent address) with the router's CA and credentials. The error
    /// is the reason, for the `<unknown>` note.
    pub async fn agent_status(&self, agent: &RegisteredAgent) -> Result<AgentStatus, String> {
        let node = agent.name.as_str();
        let address = if agent.user_address.is_empty() {
            agent.agent_address.as_str()
        } else {
            agent.user_address.as_str()
        };
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
        let mut agent =
            AgentClient::with_interceptor(channel, self.security.credentials.bearer.clone());
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

/// True if the server at `address` (HOST:PORT) answers an HTTP/1.1
/// request with an HTTP/1 status line (an HTTP/2-only server such as the
/// router answers with a binary GOAWAY frame). Bounded by `timeout` (else
/// 2 s).
async fn speaks_http1(address: &str, timeout: Option<Duration>) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limit = timeout.unwrap_or(Duration::from_secs(2));
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream
            .write_all(b"HEAD / HTTP/1.1\r\nHost: ste-router\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 8];
        let mut read = 0;
        while read < 6 {
            match stream.read(&mut head[read..]).await.ok()? {
                0 => break,
                n => read += n,
            }
        }
        Some(head[..read].starts_with(b"HTTP/1"))
    };
    matches!(tokio::time::timeout(limit, probe).await, Ok(Some(true)))
}

/// Where the address came from, for messages: ` (from --router)`, ….
fn from_text(source: &RouterSource) -> String {
    match source {
        RouterSource::Flag => " (from --router)".to_owned(),
        RouterSource::Env => " (from STE_ROUTER)".to_owned(),
        RouterSource::Kubeconfig(context) => {
            format!(" (from the ste.io/router extension of kubeconfig context {context:?})")
        }
        RouterSource::PortForward(_) => String::new(),
    }
}

/// What to check when the address leads to the wrong server.
fn check_text(source: &RouterSource) -> String {
    match source {
        RouterSource::Flag => "--router".to_owned(),
        RouterSource::Env => "STE_ROUTER".to_owned(),
        RouterSource::Kubeconfig(context) => {
            format!("the ste.io/router extension of kubeconfig context {context:?}")
        }
        RouterSource::PortForward(pod) => format!(
            "that the pod {}/{pod} is the STE router (port {})",
            kube_api::STE_NAMESPACE,
            kube_api::ROUTER_USER_PORT
        ),
    }
}

/// The one line printed when the router cannot be reached.
/// True if `status` says the router could not be reached (the client's
/// own transport failed), false if the router answered, even with
/// UNAVAILABLE: the router's own errors start with "ste-router:" (e.g. a
/// join refused because the new member's shard does not answer, whose
/// message names that shard's connect error).
fn is_transport_failure(status: &Status) -> bool {
    let message = status.message();
    status.code() == tonic::Code::Unavailable
        && !message.starts_with("ste-router:")
        && (message.contains("connect")
            || message.contains("transport")
            || message.contains("connection"))
}

fn unreachable(address: &str, source: &RouterSource, reason: &str) -> CliError {
    let from = from_text(source);
    CliError::msg(format!(
        "cannot reach the STE router at {address}{from}: {reason}; {HOW_TO_SET}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_addresses() {
        assert_eq!(
            router_uri("127.0.0.1:2492").unwrap(),
            "https://127.0.0.1:2492"
        );
        assert_eq!(
            router_uri("router.local").unwrap(),
            "https://router.local:2492"
        );
        assert_eq!(
            router_uri("https://router.local").unwrap(),
            "https://router.local:2492"
        );
        assert_eq!(
            router_uri("https://10.0.0.1:9/").unwrap(),
            "https://10.0.0.1:9"
        );
        // Plain only when asked for, for a router run with --insecure.
        assert_eq!(
            router_uri("http://10.0.0.1:9/").unwrap(),
            "http://10.0.0.1:9"
        );
        assert_eq!(router_uri("http://[::1]").unwrap(), "http://[::1]:2492");
        assert_eq!(router_uri("[::1]:7").unwrap(), "https://[::1]:7");
        assert_eq!(router_uri("[::1]").unwrap(), "https://[::1]:2492");
        for bad in ["grpc://x:1", "", "https://", "a/b", "https://a/b"] {
            let err = router_uri(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("error: invalid router address"),
                "{bad}: {err}"
            );
        }
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

    fn security(ca: Option<SteCa>) -> Security {
        Security {
            ca,
            credentials: Credentials::default(),
        }
    }

    #[test]
    fn tls_failures_say_what_to_check() {
        let ca = SteCa {
            pem: Vec::new(),
            source: trust::CaSource::Env("/etc/ste/ca.crt".into()),
        };
        let tls = security(Some(ca));
        assert_eq!(
            tls.explain("invalid peer certificate: UnknownIssuer".into()),
            "invalid peer certificate: UnknownIssuer (verified with the STE CA from \
             /etc/ste/ca.crt (STE_ROUTER_CA))"
        );
        assert!(
            tls.explain("received corrupt message of type InvalidContentType".into())
                .ends_with("a router run with --insecure is reached with http://HOST:PORT)")
        );
        assert_eq!(
            tls.explain("Connection refused (os error 111)".into()),
            "Connection refused (os error 111)"
        );
        let plain = security(None);
        assert_eq!(plain.scheme(), "http");
        assert!(plain.tls(None).is_none());
        assert_eq!(
            plain.explain("invalid peer certificate".into()),
            "invalid peer certificate"
        );
        assert_eq!(tls.scheme(), "https");
    }

    #[test]
    fn a_web_server_is_named_as_the_wrong_server() {
        let conn_source = RouterSource::Flag;
        let status =
            Status::unimplemented("grpc-status header missing, mapped from HTTP status code 404");
        let what = ste_proto::wrong_server::not_the_router(&status).unwrap();
        let line = format!(
            "the server at 127.0.0.1:8080{} {what}; check {}",
            from_text(&conn_source),
            check_text(&conn_source)
        );
        assert_eq!(
            line,
            "the server at 127.0.0.1:8080 (from --router) answered HTTP 404 without a gRPC \
             status: this is probably not the STE router's admin API (default port 2490); check \
             --router"
        );
        assert_eq!(
            check_text(&RouterSource::Kubeconfig("ste-local".into())),
            "the ste.io/router extension of kubeconfig context \"ste-local\""
        );
    }

    #[test]
    fn the_routers_own_unavailable_answer_is_not_an_unreachable_router() {
        assert!(is_transport_failure(&Status::unavailable(
            "error trying to connect: tcp connect error: Connection refused (os error 111)"
        )));
        assert!(!is_transport_failure(&Status::unavailable(
            "ste-router: shard node-b (http://127.0.0.3:2279) is unavailable: tcp connect error: \
             transport error: Connection refused (os error 111)"
        )));
        assert!(!is_transport_failure(&Status::failed_precondition(
            "connection refused"
        )));
    }

    #[test]
    fn unreachable_names_address_and_remedy() {
        let line =
            unreachable("127.0.0.1:1", &RouterSource::Flag, "Connection refused").to_string();
        assert!(
            line.starts_with("error: cannot reach the STE router at 127.0.0.1:1 (from --router)")
        );
        assert!(line.contains("--router HOST:PORT"));
        assert!(line.contains("STE_ROUTER"));
        assert!(!line.contains('\n'));
    }
}
