//! Every door of the router's and the agents' gRPC APIs, knocked on with
//! the wrong key (issue 12): the admin port (2490) and the agent port
//! (2290) refuse the TLS handshake without a client certificate of the STE
//! CA; the user ports (2492, 2292) answer UNAUTHENTICATED without
//! credentials; a node's certificate acts only as that node. The shard
//! door (2279) is `agent_shard_tls.rs`; authorisation by Kubernetes RBAC is
//! `kube_e2e.rs` (it needs a kube-apiserver). Real router, real agent,
//! real TLS on loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ste_proto::v1::agent_client::AgentClient;
use ste_proto::v1::ring_client::RingClient;
use ste_proto::v1::{
    GetRouterStatusRequest, GetStatusRequest, HeartbeatRequest, JoinRequest, LeaveRequest,
    RegisterRequest,
};
use ste_tests::pki::{Ca, Identity, ste};
use ste_tests::{AgentOptions, ShardedRouter, TestAgent};
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const NODE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// A TLS channel to `address` trusting the STE CA, with `tls` as given.
async fn channel(address: SocketAddr, tls: ClientTlsConfig) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("https://{address}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

/// A channel presenting `identity` (or no certificate).
async fn as_(address: SocketAddr, identity: Option<&Identity>) -> anyhow::Result<Channel> {
    channel(address, ste().client_tls(identity)).await
}

/// The status of a call that the server must not have answered: the TLS
/// handshake was refused, so the call fails in the client's transport (a
/// status made from the transport's error, which tonic keeps as its
/// source), never with one of the server's own answers (which have none).
fn assert_refused_at_the_handshake(status: &tonic::Status, what: &str) {
    assert!(
        std::error::Error::source(status).is_some()
            && !matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied | Code::Ok
            ),
        "{what}: expected a transport failure, got {status:?}"
    );
}

/// What a bare TLS client (rustls, trusting the STE CA) is told when it
/// completes its side of the handshake with `identity` (or none) and sends
/// the HTTP/2 preface: the server's TLS alert, as rustls words it
/// (`received fatal alert: CertificateRequired`), or `"answered"` if the
/// server went on.
async fn tls_alert(address: SocketAddr, identity: Option<&Identity>) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, pki_types};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki_types::CertificateDer::from(ste().ca.cert_der.clone()))?;
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder.with_client_auth_cert(
            vec![pki_types::CertificateDer::from(id.cert_der.clone())],
            pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(
                id.key_der.clone(),
            )),
        )?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = pki_types::ServerName::IpAddress(address.ip().into());
    let exchange = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        let mut answer = [0u8; 64];
        tls.read(&mut answer).await
    };
    Ok(
        match tokio::time::timeout(Duration::from_secs(10), exchange).await? {
            Ok(0) => "closed without an alert".into(),
            Ok(_) => "answered".into(),
            Err(error) => error.to_string(),
        },
    )
}

fn register(name: &str) -> RegisterRequest {
    RegisterRequest {
        name: name.into(),
        agent_address: "127.0.0.1:1".into(),
        endpoint: "http://127.0.0.1:1".into(),
        epoch: 1,
        weight: 1,
        no_join: true,
        user_address: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routers_admin_port_lets_in_only_certificates_of_its_ca() -> anyhow::Result<()> {
    let sharded = ShardedRouter::start(1, &[]).await?;
    let admin = sharded.router.admin;

    let anonymous = RingClient::new(as_(admin, None).await?)
        .get_status(GetRouterStatusRequest {})
        .await
        .unwrap_err();
    assert_refused_at_the_handshake(&anonymous, "no client certificate");
    assert_eq!(
        tls_alert(admin, None).await?,
        "received fatal alert: CertificateRequired",
        "the TLS handshake itself refuses a client without a certificate"
    );
    assert_eq!(tls_alert(admin, Some(&ste().admin)).await?, "answered");

    let stranger_ca = Ca::new("not-the-ste-ca")?;
    let stranger = stranger_ca.client("ste-test-admin")?;
    let alert = tls_alert(admin, Some(&stranger)).await?;
    assert!(alert.starts_with("received fatal alert"), "{alert}");
    let foreign = RingClient::new(as_(admin, Some(&stranger)).await?)
        .get_status(GetRouterStatusRequest {})
        .await
        .unwrap_err();
    assert_refused_at_the_handshake(&foreign, "a certificate of another CA");

    let plain = Endpoint::from_shared(format!("http://{admin}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let plain = RingClient::new(plain)
        .get_status(GetRouterStatusRequest {})
        .await
        .unwrap_err();
    assert_refused_at_the_handshake(&plain, "plain HTTP/2");

    // The same call with the operator's certificate is answered: the door
    // was closed, not broken.
    RingClient::new(as_(admin, Some(&ste().admin)).await?)
        .get_status(GetRouterStatusRequest {})
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routers_user_port_wants_credentials() -> anyhow::Result<()> {
    let sharded = ShardedRouter::start(1, &[]).await?;
    let user = sharded.router.user;

    let anonymous = RingClient::new(as_(user, None).await?)
        .get_status(GetRouterStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    assert_eq!(anonymous.message(), "Unauthorized");

    // Without a Kubernetes API (certificates only) a bearer token proves
    // nothing.
    let mut request = tonic::Request::new(GetRouterStatusRequest {});
    request
        .metadata_mut()
        .insert("authorization", "Bearer made-up".parse()?);
    let token = RingClient::new(as_(user, None).await?)
        .get_status(request)
        .await
        .unwrap_err();
    assert_eq!(token.code(), Code::Unauthenticated, "{token:?}");

    RingClient::new(as_(user, Some(&ste().admin)).await?)
        .get_status(GetRouterStatusRequest {})
        .await?;
    let log = sharded.router.log();
    assert!(
        log.contains("certificates only"),
        "the router logs who may call:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_acts_only_as_itself() -> anyhow::Result<()> {
    let sharded = ShardedRouter::start(2, &[]).await?;
    let node_a = ste().ca.shard("node-a", NODE_IP)?;
    let mut as_node_a = RingClient::new(as_(sharded.router.admin, Some(&node_a)).await?);

    // node-a may register, heartbeat and read as itself…
    as_node_a.register(register("node-a")).await?;
    let beat = as_node_a
        .heartbeat(HeartbeatRequest {
            name: "node-a".into(),
            epoch: 1,
            healthy: true,
            generation_seen: 0,
        })
        .await?
        .into_inner();
    assert!(beat.registered);
    as_node_a.get_status(GetRouterStatusRequest {}).await?;

    // …but not register, heartbeat or drain as another node, nor join
    // members.
    let refused = [
        (
            "register as node-b",
            as_node_a.register(register("node-b")).await.unwrap_err(),
        ),
        (
            "heartbeat as node-b",
            as_node_a
                .heartbeat(HeartbeatRequest {
                    name: "node-b".into(),
                    epoch: 1,
                    healthy: true,
                    generation_seen: 0,
                })
                .await
                .unwrap_err(),
        ),
        (
            "leave (drain) shard-a",
            as_node_a
                .leave(LeaveRequest {
                    name: "shard-a".into(),
                    dry_run: true,
                    drain: true,
                })
                .await
                .unwrap_err(),
        ),
        (
            "join node-a",
            as_node_a
                .join(JoinRequest {
                    name: "node-a".into(),
                    dry_run: true,
                    ..Default::default()
                })
                .await
                .unwrap_err(),
        ),
    ];
    for (what, status) in refused {
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
        assert!(
            status.message().contains("system:node:node-a"),
            "{what}: {status:?}"
        );
    }

    // A user certificate is not a node: it may not register at all.
    let mut as_admin = RingClient::new(as_(sharded.router.admin, Some(&ste().admin)).await?);
    let user = as_admin.register(register("node-c")).await.unwrap_err();
    assert_eq!(user.code(), Code::PermissionDenied, "{user:?}");

    // Nothing of the refused calls reached the ring: node-b never
    // registered, shard-a is still a member.
    let status = as_admin
        .get_status(GetRouterStatusRequest {})
        .await?
        .into_inner();
    let agents: Vec<&str> = status.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(agents, ["node-a"]);
    assert!(status.members.iter().any(|m| m.name == "shard-a"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_ports_want_a_certificate_or_credentials() -> anyhow::Result<()> {
    let agent = TestAgent::start(AgentOptions::new("doors", Ipv4Addr::LOCALHOST)).await?;

    let anonymous = AgentClient::new(as_(agent.addrs.grpc, None).await?)
        .get_status(GetStatusRequest {})
        .await
        .unwrap_err();
    assert_refused_at_the_handshake(&anonymous, "agent port without a certificate");
    assert_eq!(
        tls_alert(agent.addrs.grpc, None).await?,
        "received fatal alert: CertificateRequired"
    );

    let user = AgentClient::new(as_(agent.addrs.user, None).await?)
        .get_status(GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(user.code(), Code::Unauthenticated, "{user:?}");
    assert_eq!(user.message(), "Unauthorized");

    for port in [agent.addrs.grpc, agent.addrs.user] {
        let status = AgentClient::new(as_(port, Some(&ste().admin)).await?)
            .get_status(GetStatusRequest {})
            .await?
            .into_inner();
        assert_eq!(status.node_name, "doors");
    }
    Ok(())
}

/// The admin and user ports read their certificate, key and client CAs
/// again when the files change (checked at each new connection), as
/// kube-apiserver's dynamic serving certificate and client CA do: after a
/// rotation to a new CA, that CA's clients get in and its serving
/// certificate is served, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_and_client_cas_are_used_without_a_restart() -> anyhow::Result<()> {
    let sharded = ShardedRouter::start(1, &[]).await?;
    let admin = sharded.router.admin;
    let new_ca = Ca::new("rotated-ste-ca")?;
    let newcomer = new_ca.client("ste-test-rotated")?;
    let trusting_new_ca = || {
        ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&new_ca.cert_pem))
            .identity(tonic::transport::Identity::from_pem(
                &newcomer.cert_pem,
                &newcomer.key_pem,
            ))
    };
    let alert = tls_alert(admin, Some(&newcomer)).await?;
    assert!(
        alert.starts_with("received fatal alert"),
        "before the rotation the new CA's client is refused: {alert}"
    );

    let [cert, key, client_ca] = sharded.router.api_files();
    std::fs::write(
        &client_ca,
        format!("{}{}", ste().ca.cert_pem, new_ca.cert_pem),
    )?;
    let serving = new_ca.issue(
        &["127.0.0.1", "ste-router"],
        ste_tests::pki::dn("ste-router", None),
        &[rcgen::ExtendedKeyUsagePurpose::ServerAuth],
    )?;
    std::fs::write(&key, &serving.key_pem)?;
    std::fs::write(&cert, &serving.cert_pem)?;

    ste_tests::eventually(
        "the new CA's client is let in and the new certificate served",
        Duration::from_secs(30),
        || async {
            RingClient::new(
                channel(admin, trusting_new_ca())
                    .await
                    .map_err(|e| e.to_string())?,
            )
            .get_status(GetRouterStatusRequest {})
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
        },
    )
    .await?;
    // Clients that trust only the old CA no longer accept the router.
    let old = RingClient::new(as_(admin, Some(&ste().admin)).await?)
        .get_status(GetRouterStatusRequest {})
        .await
        .unwrap_err();
    assert_refused_at_the_handshake(&old, "a client trusting only the old CA");
    Ok(())
}
