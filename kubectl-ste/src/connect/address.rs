//! Router addresses: how `--router` values are read, where an address came
//! from, and the lines that say an address leads nowhere or to the wrong
//! server.

use std::time::Duration;

use tonic::Status;
use tonic::transport::Uri;

use crate::error::{CliError, CliResult};
use crate::kube_api;

/// Default port of the router's user API (`--user-listen`).
pub const DEFAULT_ROUTER_PORT: u16 = 2492;

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

/// True if the server at `address` (HOST:PORT) answers an HTTP/1.1
/// request with an HTTP/1 status line (an HTTP/2-only server such as the
/// router answers with a binary GOAWAY frame). Bounded by `timeout` (else
/// 2 s).
pub(super) async fn speaks_http1(address: &str, timeout: Option<Duration>) -> bool {
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
pub(super) fn from_text(source: &RouterSource) -> String {
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
pub(super) fn check_text(source: &RouterSource) -> String {
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

/// True if `status` says the router could not be reached (the client's
/// own transport failed), false if the router answered, even with
/// UNAVAILABLE: the router's own errors start with "ste-router:" (e.g. a
/// join refused because the new member's shard does not answer, whose
/// message names that shard's connect error).
pub(super) fn is_transport_failure(status: &Status) -> bool {
    let message = status.message();
    status.code() == tonic::Code::Unavailable
        && !message.starts_with("ste-router:")
        && (message.contains("connect")
            || message.contains("transport")
            || message.contains("connection"))
}

/// The one line printed when the router cannot be reached.
pub(super) fn unreachable(address: &str, source: &RouterSource, reason: &str) -> CliError {
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
             status: this is probably not the STE router's admin API (default ports 2490 for agents, 2492 for users); check \
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
