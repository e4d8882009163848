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
