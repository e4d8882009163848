//! Compiles `proto/ste/v1/*.proto` and the etcd v3 API subset in `proto/etcd/` with protox (pure Rust, no `protoc`) and
//! generates tonic clients and servers plus a file descriptor set for gRPC
//! server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/ste/v1/agent.proto",
        "proto/ste/v1/ring.proto",
        "proto/etcd/kv.proto",
        "proto/etcd/rpc.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("ste_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .skip_protoc_run()
        // Values are sliced, not copied, on their way through the router.
        .bytes(".mvccpb.KeyValue.value")
        .file_descriptor_set_path(&descriptor_path)
        .compile_fds(descriptors)?;
    Ok(())
}
