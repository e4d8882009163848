//! STE's own gRPC API (`ste.v1`), generated from `proto/ste/v1/*.proto`.

/// `ste.v1`: the node agent API (and, later, the ring admin API).
pub mod v1 {
    tonic::include_proto!("ste.v1");
}

/// Encoded `FileDescriptorSet` of every `ste.v1` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ste_descriptor");
