//! Reaching an agent over its Unix socket: transport glue shared by the gateway, the tests and
//! the benchmarks (tonic has no Unix-socket endpoint of its own).

use std::path::PathBuf;

use crate::v1::agent_client::AgentClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Largest message a client accepts: a PNG of a large screen fits.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Connects to the agent listening on `socket`.
pub async fn connect_unix(socket: PathBuf) -> Result<AgentClient<Channel>, tonic::transport::Error> {
    // The URI is required by the API but unused: the connector ignores it.
    let channel = Endpoint::try_from("http://agent.invalid")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(AgentClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
}
