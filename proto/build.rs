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
    // proglog's own layout, generated on its own (same package name, separate directory), so
    // tests can prove an unmodified proglog client works against our server.
    let proglog_dir = out_dir.join("proglog");
    std::fs::create_dir_all(&proglog_dir)?;
    println!("cargo:rerun-if-changed=testdata/proglog_log.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(&proglog_dir)
        .compile_protos(&["testdata/proglog_log.proto"], &["testdata"])?;
    Ok(())
}
