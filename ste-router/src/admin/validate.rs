//! The checks the `ste.v1.Ring` admin API makes on a request before it acts
//! on it, in one place and free of I/O, so that a malformed request is
//! refused with INVALID_ARGUMENT before it reaches the ring or the agent
//! table (and so that they can be unit-tested and fuzzed: see
//! `docs/fuzzing.md`).
//!
//! What is checked is what can be judged from the request alone: node
//! names follow the ring's member-name rule
//! ([`ste_core::ring::validate_name`]), shard endpoints are `http://` or
//! `https://` URLs with a host (what the router can dial, see
//! `shard/grpc.rs`), agent addresses are `HOST:PORT`. What depends on the
//! router's state (is the node registered, already a member, the last
//! member; does the weight fit the ring's point budget) is the handler's
//! and the ring's business.

use ste_proto::v1::{HeartbeatRequest, JoinRequest, LeaveRequest, LocateRequest, RegisterRequest};
use tonic::Status;

use crate::error::StoreError;

fn invalid(message: String) -> Status {
    Status::invalid_argument(message)
}

/// A node (ring member) name: non-empty, no `#`, whitespace or control
/// characters (the ring's rule, which keeps point labels unambiguous).
///
/// Errors: INVALID_ARGUMENT naming the rule broken.
pub fn node_name(name: &str) -> Result<(), Status> {
    ste_core::ring::validate_name(name).map_err(|e| invalid(e.to_string()))
}

/// A shard's etcd client URL: `http://HOST[:PORT]` or `https://...` (the
/// scheme in lower case), as given to etcd's `--advertise-client-urls`. A path other than `/`, a
/// query or user info are refused: the router dials the authority only.
///
/// Errors: INVALID_ARGUMENT naming the endpoint and what is wrong.
pub fn shard_endpoint(endpoint: &str) -> Result<(), Status> {
    let bad = |why: &str| {
        invalid(format!(
            "bad shard endpoint {endpoint:?}: {why} (want http://HOST:PORT or https://HOST:PORT)"
        ))
    };
    // The scheme as written, not as parsed: `Uri` accepts `HTTPS://` and
    // reports it as `https`, but the shard client decides on TLS by the
    // literal prefix `https://` (shard/grpc.rs), as etcd's flags spell it.
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(bad("the scheme is not http:// or https:// (in lower case)"));
    }
    let uri: axum::http::Uri = endpoint.parse().map_err(|_| bad("not a URL"))?;
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(bad("no host, or user info in the URL"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a path or query"));
    }
    Ok(())
}

/// An agent's gRPC address as it registers it: empty (not advertised) or
/// `HOST:PORT` with a port in 1..=65535 (`[v6]:PORT` for IPv6).
///
/// Errors: INVALID_ARGUMENT naming the address.
pub fn agent_address(address: &str) -> Result<(), Status> {
    if address.is_empty() {
        return Ok(());
    }
    let bad = || {
        invalid(format!(
            "bad agent address {address:?}: want HOST:PORT (the agent's --advertise-address)"
        ))
    };
    let authority: axum::http::uri::Authority = address.parse().map_err(|_| bad())?;
    let port_ok = authority.port_u16().is_some_and(|p| p != 0);
    if !port_ok || authority.host().is_empty() || address.contains('@') {
        return Err(bad());
    }
    Ok(())
}

/// Ring.Join: a valid node name, and an endpoint that is empty (use the
/// registration's) or a valid shard URL. Weight 0 means "the registered
/// weight"; any other weight is checked by the ring against its point
/// budget.
///
/// Errors: INVALID_ARGUMENT.
pub fn join(request: &JoinRequest) -> Result<(), Status> {
    node_name(&request.name)?;
    if !request.endpoint.is_empty() {
        shard_endpoint(&request.endpoint)?;
    }
    Ok(())
}

/// Ring.Leave: a valid node name (a name no member can have is refused
/// as malformed rather than as "not a ring member").
///
/// Errors: INVALID_ARGUMENT.
pub fn leave(request: &LeaveRequest) -> Result<(), Status> {
    node_name(&request.name)
}

/// Ring.Register: a valid node name, the shard's endpoint (required) and
/// the agent's addresses (each empty or `HOST:PORT`).
///
/// Errors: INVALID_ARGUMENT.
pub fn register(request: &RegisterRequest) -> Result<(), Status> {
    if request.name.is_empty() || request.endpoint.is_empty() {
        return Err(invalid(
            "register needs the node name and the shard endpoint".into(),
        ));
    }
    node_name(&request.name)?;
    shard_endpoint(&request.endpoint)?;
    agent_address(&request.agent_address)?;
    agent_address(&request.user_address)
}

/// Ring.Heartbeat: a valid node name (an unknown one is answered with
/// `registered: false`, not refused).
///
/// Errors: INVALID_ARGUMENT.
pub fn heartbeat(request: &HeartbeatRequest) -> Result<(), Status> {
    node_name(&request.name)
}

/// Ring.Locate: a key, as etcd requires of every key it is asked about.
///
/// Errors: INVALID_ARGUMENT "etcdserver: key is not provided".
pub fn locate(request: &LocateRequest) -> Result<(), Status> {
    if request.key.is_empty() {
        return Err(StoreError::KeyNotProvided.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_endpoints_are_http_urls_with_a_host() {
        for ok in [
            "http://127.0.0.1:2379",
            "https://shard-a.example:2379",
            "http://[::1]:2379/",
            "http://node-a",
        ] {
            assert!(shard_endpoint(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "not a uri",
            "127.0.0.1:2379",
            "unix:///run/etcd.sock",
            "memory://a",
            "http://",
            "http://user@host:2379",
            "http://host:2379/path",
            "http://host:2379?x=1",
            "/just/a/path",
        ] {
            let refused = shard_endpoint(bad).expect_err(bad);
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(refused.message().contains("bad shard endpoint"), "{bad:?}");
        }
    }

    /// Found by fuzzing the admin requests: a RegisterRequest (libFuzzer's
    /// `admin` target: node-a, endpoint "httP://10.0.0.1:2279") and a
    /// JoinRequest (a mutation run over the same checks: shard-d, endpoint
    /// "Http://127.0.0.1:32379") were accepted, because `Uri` parses the
    /// scheme case-insensitively, although the shard client picks TLS by
    /// the literal `https://` prefix (`HTTPS://` was dialled without TLS).
    #[test]
    fn fuzz_regression_endpoint_scheme_not_in_lower_case() {
        use prost::Message as _;
        let register_bytes: &[u8] =
            b"\x0a\x06node-a\x12\x0d10.0.0.122:90\x1a\x14httP://10.0.0.1:2279\x20\x03\x28\x01";
        let request = RegisterRequest::decode(register_bytes).expect("a RegisterRequest");
        assert_eq!(request.endpoint, "httP://10.0.0.1:2279");
        let refused = register(&request).expect_err("mixed-case scheme");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("in lower case"), "{refused:?}");

        let join_bytes: &[u8] = b"\x0a\x07shard-d\x10\x02\x18\x01\x22\x16Http://127.0.0.1:32379";
        let request = JoinRequest::decode(join_bytes).expect("a JoinRequest");
        assert_eq!(request.endpoint, "Http://127.0.0.1:32379");
        assert!(join(&request).is_err());
        for bad in ["HTTPS://10.0.0.1:2379", "hTtp://h:1"] {
            assert!(shard_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn agent_addresses_are_empty_or_host_port() {
        for ok in ["", "10.0.0.1:2290", "node-a:2290", "[::1]:2290"] {
            assert!(agent_address(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "node-a",
            "node-a:0",
            "node-a:99999",
            ":2290",
            "u@h:1",
            "a b:1",
        ] {
            assert!(agent_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn join_needs_a_member_name_and_takes_an_optional_endpoint() {
        let mut request = JoinRequest {
            name: "shard-d".into(),
            ..Default::default()
        };
        assert!(join(&request).is_ok());
        request.endpoint = "http://127.0.0.1:2379".into();
        assert!(join(&request).is_ok());
        request.endpoint = "localhost:2379".into();
        assert!(join(&request).is_err());
        for name in ["", "a#1", "a b", "a\u{0}"] {
            let named = JoinRequest {
                name: name.into(),
                ..Default::default()
            };
            let refused = join(&named).expect_err(name);
            assert!(
                refused.message().contains("invalid member name"),
                "{name:?}"
            );
        }
    }

    #[test]
    fn register_needs_name_endpoint_and_a_usable_agent_address() {
        let mut request = RegisterRequest {
            name: "node-a".into(),
            endpoint: "http://10.0.0.1:2279".into(),
            agent_address: "10.0.0.1:2290".into(),
            ..Default::default()
        };
        assert!(register(&request).is_ok());
        request.user_address = "10.0.0.1:2292".into();
        assert!(register(&request).is_ok());
        request.user_address = "10.0.0.1".into();
        assert!(register(&request).is_err());
        request.user_address.clear();
        request.agent_address = "10.0.0.1".into();
        assert!(register(&request).is_err());
        request.agent_address.clear();
        request.name.clear();
        assert!(
            register(&request)
                .unwrap_err()
                .message()
                .contains("register needs")
        );
    }

    #[test]
    fn leave_heartbeat_and_locate() {
        assert!(leave(&LeaveRequest::default()).is_err());
        assert!(
            leave(&LeaveRequest {
                name: "n".into(),
                ..Default::default()
            })
            .is_ok()
        );
        assert!(heartbeat(&HeartbeatRequest::default()).is_err());
        assert_eq!(
            locate(&LocateRequest::default()).unwrap_err().message(),
            crate::error::KEY_NOT_PROVIDED
        );
    }
}
