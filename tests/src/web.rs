//! Tiny web servers that are not gRPC servers, to point `--router` at by
//! mistake: one speaks HTTP/2 (cleartext) and answers every request
//! `404 Not Found` without a gRPC status, like a web app or a metrics
//! endpoint behind an HTTP/2-capable server; the other speaks only
//! HTTP/1.1. Both serve on a free port of 127.0.0.1 until dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::codegen::{Service, http};

/// A running server; stops when dropped.
pub struct WebServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers 404 to everything, with no `grpc-status`.
#[derive(Clone)]
struct NotFound;

impl tonic::server::NamedService for NotFound {
    // Routed for the router's admin API, which it does not serve.
    const NAME: &'static str = "ste.v1.Ring";
}

impl Service<http::Request<tonic::body::Body>> for NotFound {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async {
            let mut response = http::Response::new(tonic::body::Body::empty());
            *response.status_mut() = http::StatusCode::NOT_FOUND;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            Ok(response)
        })
    }
}

/// An HTTP/2 server answering `404 Not Found` without a gRPC status.
pub async fn http2_not_found() -> anyhow::Result<WebServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(NotFound)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    Ok(WebServer { addr, task })
}

/// [`http2_not_found`] over TLS with the router's admin certificate (and a
/// client certificate of the STE CA required, as the router's admin port):
/// a web server where an agent expects the router.
pub async fn https2_not_found() -> anyhow::Result<WebServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .tls_config(crate::pki::ste().router_admin_server_tls())?;
    let task = tokio::spawn(async move {
        let mut server = server;
        let _ = server
            .add_service(NotFound)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    Ok(WebServer { addr, task })
}

/// An HTTP/1.1-only server: whatever it is sent, it answers
/// `400 Bad Request` (as HTTP/1 servers answer the HTTP/2 preface) and
/// closes the connection.
pub async fn http1_only() -> anyhow::Result<WebServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
                          Content-Length: 11\r\nConnection: close\r\n\r\nBad Request",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(WebServer { addr, task })
}
