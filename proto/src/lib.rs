//! STE's gRPC APIs, generated from `proto/`: its own `ste.v1` and the
//! etcd v3 subset the router serves and speaks to shards.

/// `ste.v1`: the node agent API and the router's ring admin API.
pub mod v1 {
    tonic::include_proto!("ste.v1");
}

/// Encoded `FileDescriptorSet` of every `ste.v1` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ste_descriptor");

/// The etcd v3 API subset (packages `etcdserverpb` and `mvccpb`, wire
/// compatible with etcd), with servers and clients.
pub mod etcd {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

/// Telling "reached a server, but not the STE router's admin API" apart
/// from the router's own refusals, so that a wrong `--router` (a metrics
/// port, an agent's port, any web server) is named as such instead of
/// printed as tonic's bare mapping.
pub mod wrong_server {
    /// The default port of the router's admin API (`ste.v1.Ring`) for
    /// agents (`--admin-listen`).
    pub const ROUTER_ADMIN_PORT: u16 = 2490;

    /// The default port of the same API for users (`--user-listen`).
    pub const ROUTER_USER_PORT: u16 = 2492;

    const HTTP_MAPPED: &str = "grpc-status header missing, mapped from HTTP status code ";

    /// The HTTP status of an answer that carried no gRPC status: the peer
    /// speaks HTTP/2 but is not a gRPC server (tonic maps the HTTP code to
    /// a gRPC code and says so in the message).
    pub fn http_status(status: &tonic::Status) -> Option<u16> {
        status
            .message()
            .strip_prefix(HTTP_MAPPED)
            .and_then(|code| code.trim().parse().ok())
    }

    /// What the answer `status` to a `ste.v1.Ring` call says about the
    /// server, when it is not the router's admin API: a web server, or a
    /// gRPC server without `ste.v1.Ring` (e.g. an agent). `None` for the
    /// router's own answers.
    pub fn not_the_router(status: &tonic::Status) -> Option<String> {
        if let Some(code) = http_status(status) {
            return Some(format!(
                "answered HTTP {code} without a gRPC status: this is probably not the STE \
                 router's admin API (default ports {ROUTER_ADMIN_PORT} for agents, {ROUTER_USER_PORT} for users)"
            ));
        }
        // An HTTP/1 server answers the HTTP/2 preface with an HTTP/1
        // response, which the client reads as a broken frame.
        if status.message().starts_with("h2 protocol error") {
            return Some(format!(
                "did not answer in HTTP/2 ({}): this is probably a plain HTTP/1 server, not the \
                 STE router's admin API (default ports {ROUTER_ADMIN_PORT} for agents, {ROUTER_USER_PORT} for users)",
                status.message()
            ));
        }
        // tonic's answer for a service the server does not have; the
        // router's own UNIMPLEMENTED answers carry a message.
        if status.code() == tonic::Code::Unimplemented && status.message().is_empty() {
            return Some(format!(
                "answered UNIMPLEMENTED for ste.v1.Ring: a gRPC server, but not the STE \
                 router's admin API (default ports {ROUTER_ADMIN_PORT} for agents, {ROUTER_USER_PORT} for users)"
            ));
        }
        None
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn recognises_web_servers_and_other_grpc_servers() {
            let web = tonic::Status::unimplemented(
                "grpc-status header missing, mapped from HTTP status code 404",
            );
            assert_eq!(http_status(&web), Some(404));
            let text = not_the_router(&web).unwrap();
            assert!(
                text.starts_with("answered HTTP 404 without a gRPC status: this is probably not")
                    && text.contains("(default ports 2490 for agents, 2492 for users)"),
                "{text}"
            );
            let http1 = tonic::Status::internal("h2 protocol error: http2 error");
            assert!(
                not_the_router(&http1)
                    .unwrap()
                    .contains("this is probably a plain HTTP/1 server")
            );
            let agent = tonic::Status::unimplemented("");
            assert!(
                not_the_router(&agent)
                    .unwrap()
                    .contains("UNIMPLEMENTED for ste.v1.Ring")
            );
            let router = tonic::Status::failed_precondition("node-a is not a ring member");
            assert_eq!(not_the_router(&router), None);
            assert_eq!(http_status(&router), None);
        }
    }
}
