//! The wire protocol between `orgo-gateway` and `orgo-agent`: the code generated from
//! `orgo/agent/v1/agent.proto`, plus the Unix-socket connector every client needs. Logic lives in
//! the crates that use it.

#![allow(clippy::all, clippy::pedantic)]

/// `orgo.agent.v1`: the one service each desktop's agent serves.
pub mod v1 {
    tonic::include_proto!("orgo.agent.v1");
}

pub mod connect;
