//! Generates the tonic/prost code for every `.proto` under `proto/`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // NB: no system protoc exists on our machines; use the vendored one unless PROTOC is set.
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = ["proto/log.proto", "proto/admin.proto", "proto/raft.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        // Zero-copy payloads: record values are `bytes::Bytes`, not `Vec<u8>`.
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("logcluster_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
