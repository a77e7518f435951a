//! The gRPC protocols of orgo: `orgo.agent.v1` between `orgo-gateway` (or any client) and
//! `orgo-agent`, and `orgo.v1`, the gateway's lifecycle service for API clients; the code
//! generated from `orgo/agent/v1/agent.proto` and `orgo/v1/computers.proto`, their file
//! descriptor set, plus the Unix-socket connector every client needs. Logic lives in the crates
//! that use it.

#![allow(clippy::all, clippy::pedantic)]

/// `orgo.agent.v1`: the one service each desktop's agent serves (and the gateway serves to
/// API clients, routed by the `x-orgo-computer` metadata).
pub mod v1 {
    tonic::include_proto!("orgo.agent.v1");
}

/// `orgo.v1`: the gateway's lifecycle service, `Computers`.
pub mod lifecycle {
    tonic::include_proto!("orgo.v1");
}

/// The encoded `FileDescriptorSet` of both protocols, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptors");

pub mod connect;
