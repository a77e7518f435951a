//! Reaching an agent: over its Unix socket (tonic has no Unix-socket endpoint of its own), or over
//! TCP with the bearer token the agent demands there. Transport glue shared by the gateway, the
//! tests and the benchmarks.

use std::path::PathBuf;

use crate::v1::agent_client::AgentClient;
use crate::v1::files_client::FilesClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

/// Largest message a client accepts: a PNG of a large screen fits.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Where an agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    /// `host:port`, and the token the agent was started with.
    Tcp {
        addr: String,
        token: String,
    },
}

/// Adds `authorization: Bearer <token>` to every call when there is a token.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A connection to an agent with the interceptor its calls need, from which a client of each of
/// its services is made ([`agent`], [`files`]); cheap to clone.
pub type Link = InterceptedService<Channel, Bearer>;

/// A connected agent client.
pub type Agent = AgentClient<Link>;

/// A connected client of the agent's `Files` service.
pub type Files = FilesClient<Link>;

/// Why an agent could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("an agent token must be printable ASCII")]
    Token,
}

/// A link to the agent at `target`: what every client of the agent's services is built on.
pub async fn link(target: &Target) -> Result<Link, ConnectError> {
    let (channel, bearer) = match target {
        Target::Unix(socket) => {
            let socket = socket.clone();
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
            (channel, Bearer::default())
        }
        Target::Tcp { addr, token } => {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| ConnectError::Token)?;
            let channel = Endpoint::try_from(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?;
            (channel, Bearer(Some(value)))
        }
    };
    Ok(InterceptedService::new(channel, bearer))
}

/// The agent's own service over `link`.
pub fn agent(link: Link) -> Agent {
    AgentClient::new(link).max_decoding_message_size(MAX_MESSAGE)
}

/// The agent's `Files` service over `link` (a listing of a large directory can outgrow the
/// default 4 MiB message bound).
pub fn files(link: Link) -> Files {
    FilesClient::new(link).max_decoding_message_size(MAX_MESSAGE)
}

/// Connects to the agent at `target`.
pub async fn connect(target: &Target) -> Result<Agent, ConnectError> {
    Ok(agent(link(target).await?))
}

/// Connects to the `Files` service of the agent at `target`.
pub async fn connect_files(target: &Target) -> Result<Files, ConnectError> {
    Ok(files(link(target).await?))
}

/// Connects to the agent listening on `socket`.
pub async fn connect_unix(socket: PathBuf) -> Result<Agent, ConnectError> {
    connect(&Target::Unix(socket)).await
}
