//! gRPC clients of a served gateway: the generated `orgo.agent.v1.Agent` and `orgo.v1.Computers`
//! clients over one HTTP/2 connection, and requests carrying the metadata API clients send.

use orgo_proto::lifecycle::computers_client::ComputersClient;
use orgo_proto::v1::agent_client::AgentClient;
use tonic::transport::Channel;

/// A channel to the gateway at `address` (`http://host:port`).
pub async fn channel(address: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(address.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub fn agent(channel: &Channel) -> AgentClient<Channel> {
    AgentClient::new(channel.clone()).max_decoding_message_size(orgo_proto::connect::MAX_MESSAGE)
}

pub fn computers(channel: &Channel) -> ComputersClient<Channel> {
    ComputersClient::new(channel.clone())
}

/// `message` with `authorization: Bearer <credential>` and, when given, `x-orgo-computer`.
pub fn call<T>(message: T, credential: &str, computer: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("authorization", format!("Bearer {credential}").parse().unwrap());
    if let Some(c) = computer {
        metadata.insert("x-orgo-computer", c.parse().unwrap());
    }
    request
}

/// The status of a call that must fail.
pub fn refused<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> tonic::Status {
    result.expect_err("the call was refused")
}
