//! Generates the tonic/prost code from `orgo/agent/v1/agent.proto` with a vendored `protoc`,
//! so a fresh machine needs no protobuf compiler installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    #[allow(unsafe_code)]
    // SAFETY: a build script is single-threaded; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("PROTOC", protoc);
    }
    println!("cargo:rerun-if-changed=orgo/agent/v1/agent.proto");
    tonic_prost_build::configure().compile_protos(&["orgo/agent/v1/agent.proto"], &["."])?;
    Ok(())
}
