//! `ste.v1.Agent` over tonic, next to grpc.health.v1 and server reflection so
//! generic gRPC tools (grpcurl, grpc_health_probe, kubelet gRPC probes) work.

use std::sync::Arc;

use ste_auth::{Access, Action, Door};
use ste_proto::v1::agent_server::{Agent, AgentServer};
use ste_proto::v1::{AgentStatus, GetStatusRequest};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status as GrpcStatus};
use tonic_health::server::HealthReporter;

use crate::status::Status;

/// The `ste.v1.Agent` gRPC service: answers `GetStatus` from the shared
/// [`Status`], never from etcd directly, so it answers even while etcd is down.
/// A caller needs RBAC's `get` on `rings.ste.io` (a node may always read).
#[derive(Clone)]
pub struct AgentService {
    status: Arc<Status>,
    access: Arc<Access>,
    door: Door,
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<AgentStatus>, GrpcStatus> {
        self.access.check(self.door, &request, Action::Read).await?;
        Ok(Response::new(self.status.to_proto()))
    }
}

/// Builds the health reporter first so the probe can drive it.
pub fn health() -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    tonic_health::server::health_reporter()
}

/// The services the agent serves, exactly: what reflection lists. The
/// descriptor sets also define services served elsewhere (`ste.v1.Ring`
/// and the etcd API are the router's); listing them would send generic
/// clients to calls that answer UNIMPLEMENTED.
pub const SERVICES: [&str; 4] = [
    "ste.v1.Agent",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ste_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    SERVICES
        .iter()
        .fold(builder, |b, name| b.with_service_name(*name))
}

/// One port of the agent API: its listener, what kind of door it is, and
/// its TLS (`None` only with `--insecure`).
pub struct Port {
    /// The bound listener.
    pub listener: TcpListener,
    /// A certificate door (`--grpc-listen`) or a user door (`--user-listen`).
    pub door: Door,
    /// The port's TLS, reread when its files change.
    pub tls: Option<Arc<ste_auth::tls::ReloadingAcceptor>>,
}

/// Serves the agent API on an already bound port until `shutdown`
/// resolves, letting in whom `access` lets in.
pub async fn serve(
    port: Port,
    status: Arc<Status>,
    access: Arc<Access>,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Each version registers its own descriptor; the other one's is added
    // so that both listed reflection services resolve through either.
    let reflection = reflection_builder()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = reflection_builder()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let routes = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(AgentServer::new(AgentService {
            status,
            access,
            door: port.door,
        }));
    match port.tls {
        Some(acceptor) => {
            routes
                .serve_with_incoming_shutdown(
                    ste_auth::tls::incoming(port.listener, acceptor),
                    shutdown,
                )
                .await?
        }
        None => {
            routes
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(port.listener)
                        .with_nodelay(Some(true)),
                    shutdown,
                )
                .await?
        }
    }
    Ok(())
}
