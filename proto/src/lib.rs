//! The gRPC protocols of orgo: `orgo.agent.v1` between `orgo-gateway` (or any client) and
//! `orgo-agent`, and `orgo.v1`, the gateway's lifecycle service for API clients; the code
//! generated from `orgo/agent/v1/agent.proto`, `orgo/agent/v1/files.proto` and
//! `orgo/v1/computers.proto`, their file descriptor set, plus the Unix-socket connector every
//! client needs. Logic lives in the crates that use it.

#![allow(clippy::all, clippy::pedantic)]

/// `orgo.agent.v1`: the services each desktop's agent serves: `Agent` (screen, input,
/// processes; the gateway serves it to API clients too, routed by the `x-orgo-computer`
/// metadata) and `Files` (the user's files, confined to the home), generated from the two
/// files of the one package into this one module (`files_server`, `files_client`).
pub mod v1 {
    tonic::include_proto!("orgo.agent.v1");
}

/// `orgo.v1`: the gateway's lifecycle service, `Computers`.
pub mod lifecycle {
    tonic::include_proto!("orgo.v1");
}

/// The encoded `FileDescriptorSet` of every protocol here, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptors");

pub mod connect;
