//! `ste.v1.Agent` over tonic, next to grpc.health.v1 and server reflection so
//! generic gRPC tools (grpcurl, grpc_health_probe, kubelet gRPC probes) work.

use std::sync::Arc;

use ste_proto::v1::agent_server::{Agent, AgentServer};
use ste_proto::v1::{AgentStatus, GetStatusRequest};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status as GrpcStatus};
use tonic_health::server::HealthReporter;

use crate::status::Status;

/// The `ste.v1.Agent` gRPC service: answers `GetStatus` from the shared
/// [`Status`], never from etcd directly, so it answers even while etcd is down.
pub struct AgentService {
    status: Arc<Status>,
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<AgentStatus>, GrpcStatus> {
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

/// Serves the agent API on an already bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    status: Arc<Status>,
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
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(AgentServer::new(AgentService { status }))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
