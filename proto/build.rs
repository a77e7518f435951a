//! Generates the tonic/prost code of `orgo/agent/v1/agent.proto` and `orgo/agent/v1/files.proto`
//! (the agent's protocol) and `orgo/v1/computers.proto` (the gateway's lifecycle service) with a
//! vendored `protoc`, so a fresh machine needs no protobuf compiler installed; and their file
//! descriptor set, which the gateway's server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "orgo/agent/v1/agent.proto",
    "orgo/agent/v1/files.proto",
    "orgo/v1/computers.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    #[allow(unsafe_code)]
    // SAFETY: a build script is single-threaded; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("PROTOC", protoc);
    }
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("descriptors.bin"))
        .compile_protos(PROTOS, &["."])?;
    Ok(())
}
