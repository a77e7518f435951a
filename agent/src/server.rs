//! Serving the agent's gRPC services (`Agent` and `Files`) on a Unix socket (the local and
//! Docker runtimes: access is the socket's file permissions) or on TCP with `TCP_NODELAY` and a
//! bearer token compared in constant time (remote desktops).

use std::path::PathBuf;
use std::sync::Arc;

use orgo_proto::v1::agent_server::AgentServer;
use orgo_proto::v1::files_server::FilesServer;
use subtle::ConstantTimeEq;
use tonic::transport::Server;
use tonic::{Request, Status};

use crate::files_service::FilesService;
use crate::service::AgentService;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err("unix:// needs a socket path, e.g. unix:///run/orgo/agent.sock".into());
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            return addr
                .parse()
                .map(Listen::Tcp)
                .map_err(|e| format!("bad TCP address {addr:?}: {e}"));
        }
        Err(format!("{s:?} is neither unix:///path nor tcp://host:port"))
    }
}

/// Removes the socket file when serving ends, however it ends (the caller may drop the
/// serving future after a shutdown grace period).
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Checks `authorization: Bearer <token>` against the expected token in constant time.
fn check_token(expected: &Arc<Vec<u8>>, req: &Request<()>) -> Result<(), Status> {
    let given = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_slice())) {
        Ok(())
    } else {
        Err(Status::unauthenticated("missing or wrong agent token"))
    }
}

/// Serves `agent` and `files` until `shutdown` resolves.
pub async fn serve(
    listen: Listen,
    token: Option<String>,
    agent: AgentService,
    files: FilesService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    match listen {
        Listen::Unix(path) => {
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let listener = tokio::net::UnixListener::bind(&path)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
            let _remove_on_exit = SocketFile(path.clone());
            tracing::info!(socket = %path.display(), "agent listening");
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            Server::builder()
                .add_service(AgentServer::new(agent))
                .add_service(FilesServer::new(files))
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
        Listen::Tcp(addr) => {
            let token = token.ok_or_else(|| {
                anyhow::anyhow!("listening on TCP needs a token: --token-file FILE or ORGO_AGENT_TOKEN")
            })?;
            let expected = Arc::new(token.trim().as_bytes().to_vec());
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(%addr, "agent listening");
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let auth = move |req: Request<()>| check_token(&expected, &req).map(|()| req);
            Server::builder()
                .add_service(AgentServer::with_interceptor(agent, auth.clone()))
                .add_service(FilesServer::with_interceptor(files, auth))
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            "unix:///tmp/a.sock".parse(),
            Ok(Listen::Unix("/tmp/a.sock".into()))
        );
        assert_eq!(
            "tcp://127.0.0.1:7000".parse(),
            Ok(Listen::Tcp("127.0.0.1:7000".parse().unwrap()))
        );
        assert!("unix://".parse::<Listen>().is_err());
        assert!("http://x".parse::<Listen>().is_err());
        assert!("tcp://nohost".parse::<Listen>().is_err());
    }

    #[test]
    fn tokens_must_match_exactly() {
        let expected = Arc::new(b"s3cret".to_vec());
        let with = |v: &str| {
            let mut r = Request::new(());
            r.metadata_mut().insert("authorization", v.parse().unwrap());
            r
        };
        assert!(check_token(&expected, &with("Bearer s3cret")).is_ok());
        assert!(check_token(&expected, &with("Bearer s3cre")).is_err());
        assert!(check_token(&expected, &with("s3cret")).is_err());
        assert!(check_token(&expected, &Request::new(())).is_err());
    }
}
