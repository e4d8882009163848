//! Reading the agent's and the router's plain-HTTP endpoints (`/metrics`,
//! `/healthz`) as a scraper does, and picking values out of the
//! Prometheus text.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one request may take before the test sees an error instead of
/// hanging (a hung server must fail the poll that asked, not the test).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A plain HTTP/1.0 GET of `path` on `addr`: the status line's code (0 if
/// unreadable) and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let response = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        anyhow::Ok(response)
    })
    .await
    .map_err(|_| anyhow::anyhow!("GET {path} on {addr}: no answer within {REQUEST_TIMEOUT:?}"))??;
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// The body of `/metrics` on `addr`.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    Ok(http_get(addr, "/metrics").await?.1)
}

/// The value of the first sample of metric `name` in Prometheus text,
/// with labels (`name{...} v`) or without (`name v`).
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next()?.trim().parse().ok())
}
