//! Every admin request: the `ste.v1.Ring` requests the router serves and
//! the `ste.v1.Agent` request the agents serve, decoded from any bytes as
//! the gRPC servers decode them, then checked by what the router's admin
//! service calls before acting (`ste_router::admin::validate`).
//!
//! Asserts: decoding and validation never panic; a request re-encodes and
//! decodes equal and gets the same verdict; every refusal is
//! INVALID_ARGUMENT; and what validation accepts the router can act on — an
//! accepted node name can be added to a ring, an accepted shard endpoint
//! is a URI the router's gRPC client accepts (`Endpoint::from_shared`),
//! with the `http` or `https` scheme, and an accepted agent address is
//! `HOST:PORT`.

use prost::Message;
use ste_core::ring::{Member, Ring};
use ste_proto::v1 as pb;
use ste_router::admin::validate;
use tonic::Status;

/// Runs every property on `data`, decoded as each admin request.
pub fn check(data: &[u8]) {
    each::<pb::JoinRequest>(data, validate::join, |r| {
        can_join(&r.name);
        if !r.endpoint.is_empty() {
            dialable(&r.endpoint);
        }
    });
    each::<pb::LeaveRequest>(data, validate::leave, |r| can_join(&r.name));
    each::<pb::RegisterRequest>(data, validate::register, |r| {
        can_join(&r.name);
        dialable(&r.endpoint);
        if !r.agent_address.is_empty() {
            let authority: tonic::codegen::http::uri::Authority =
                r.agent_address.parse().expect("accepted agent address");
            assert!(authority.port_u16().is_some_and(|p| p > 0));
            assert!(!authority.host().is_empty());
        }
    });
    each::<pb::HeartbeatRequest>(data, validate::heartbeat, |r| can_join(&r.name));
    each::<pb::LocateRequest>(data, validate::locate, |r| assert!(!r.key.is_empty()));
    // Requests without fields: decoding must still not panic.
    let _ = pb::GetRingRequest::decode(data);
    let _ = pb::GetRouterStatusRequest::decode(data);
    let _ = pb::GetStatusRequest::decode(data);
}

/// Decodes `data` as `M`, validates it, re-encodes it, and if accepted
/// checks `accepted`'s promises.
fn each<M: Message + Default + PartialEq + std::fmt::Debug>(
    data: &[u8],
    validate: fn(&M) -> Result<(), Status>,
    accepted: impl Fn(&M),
) {
    let Ok(request) = M::decode(data) else {
        return;
    };
    let verdict = validate(&request);
    let again = M::decode(request.encode_to_vec().as_slice()).expect("re-encoded request");
    assert_eq!(again, request);
    assert_eq!(validate(&again).is_ok(), verdict.is_ok());
    match verdict {
        Ok(()) => accepted(&request),
        Err(status) => assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}"),
    }
}

/// The ring takes a member of that name.
fn can_join(name: &str) {
    let mut ring = Ring::new(16).expect("ring");
    ring.add_member(Member::new(name, "http://127.0.0.1:2379"))
        .unwrap_or_else(|e| panic!("accepted name {name:?} refused by the ring: {e}"));
}

/// The router's shard client accepts the endpoint.
fn dialable(endpoint: &str) {
    assert!(endpoint.starts_with("http://") || endpoint.starts_with("https://"));
    tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .unwrap_or_else(|e| panic!("accepted endpoint {endpoint:?} refused by tonic: {e}"));
}
