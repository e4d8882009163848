//! Calls the router does not implement: refused with UNIMPLEMENTED naming
//! the call and ste-router.

use etcd_client::Client;
use tonic::{Code, Status};

use crate::pair::{Pair, describe};

/// Defragment, HashKV and MemberAdd.
pub(crate) async fn maintenance_and_membership_calls(
    pair: &mut Pair,
    etcd: &mut Client,
    router: &mut Client,
) {
    let e = etcd.defragment().await.map_err(status);
    let r = router.defragment().await.map_err(status);
    pair.router_refuses(
        "Maintenance.Defragment",
        &e,
        &r,
        Code::Unimplemented,
        &["Defragment", "ste-router"],
    );
    let e = etcd.hash_kv(0).await.map_err(status);
    let r = router.hash_kv(0).await.map_err(status);
    pair.router_refuses(
        "Maintenance.HashKV",
        &e,
        &r,
        Code::Unimplemented,
        &["HashKV", "ste-router"],
    );
    // (Not sent to etcd: adding an unreachable member to a one-member
    // cluster would cost it its quorum.)
    let r = router
        .member_add(["http://127.0.0.1:1"], None)
        .await
        .map_err(status);
    match &r {
        Err(s) if s.code() == Code::Unimplemented && s.message().contains("MemberAdd") => {}
        _ => pair.fail("Cluster.MemberAdd", format!("router: {}", describe(&r))),
    }
}

fn status(error: etcd_client::Error) -> Status {
    match error {
        etcd_client::Error::GRpcStatus(status) => status,
        other => Status::unknown(other.to_string()),
    }
}
