//! What a generic gRPC client sees: the services a server lists through
//! server reflection, asked with both protocol versions.

use std::net::SocketAddr;

use tonic_reflection::pb::{v1, v1alpha};

/// A plain (h2c) channel to `addr`.
pub async fn plain(addr: SocketAddr) -> anyhow::Result<tonic::transport::Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?,
    )
}

/// The services listed on `channel` by reflection v1 and v1alpha, each
/// sorted.
pub async fn listed_services(
    channel: tonic::transport::Channel,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut stream = client
        .server_reflection_info(tonic::codegen::tokio_stream::iter([request]))
        .await?
        .into_inner();
    let answer = stream.message().await?.and_then(|m| m.message_response);
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = answer
    else {
        anyhow::bail!("v1: no ListServicesResponse: {answer:?}");
    };
    let mut names_v1: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names_v1.sort();

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut stream = client
        .server_reflection_info(tonic::codegen::tokio_stream::iter([request]))
        .await?
        .into_inner();
    let answer = stream.message().await?.and_then(|m| m.message_response);
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer
    else {
        anyhow::bail!("v1alpha: no ListServicesResponse: {answer:?}");
    };
    let mut names_v1alpha: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names_v1alpha.sort();
    Ok((names_v1, names_v1alpha))
}
