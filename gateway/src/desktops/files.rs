//! A desktop's files, through its agent's `orgo.agent.v1.Files` service: every path is
//! resolved and confined to the desktop user's home by the agent, inside the desktop (a path
//! leading outside answers `AgentError::Forbidden`). Contents travel as streams of chunks both
//! ways, so a file of any size costs the gateway a few chunks of memory.

use std::time::Duration;

use axum::body::Bytes;
use futures::{Stream, StreamExt};
use orgo_proto::v1 as pb;
use pb::write_chunk::Part;
use tokio::sync::mpsc;

use super::{DesktopError, Desktops, agent};
use crate::store::Computer;

/// Chunks of an upload queued toward the agent: the body is read only as fast as the agent
/// writes it.
const UPLOAD_QUEUE: usize = 4;

/// The most bytes of one upload message (the agent takes gRPC's default 4 MiB at most).
const MESSAGE_BYTES: usize = 256 << 10;

/// How a file is written.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    /// Relative to the home, `~/…`, or absolute inside it.
    pub path: String,
    /// Permission bits; 0 for 0644.
    pub mode: u32,
    /// Makes missing parent directories.
    pub make_parents: bool,
    /// The most bytes it may have; more is refused and nothing is written.
    pub max_bytes: u64,
}

/// Why an upload's body could not be read: the upload is abandoned (the agent keeps the old
/// file).
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
pub struct BodyError(pub String);

impl Desktops {
    /// The entries of a directory, sorted by name.
    pub async fn list_files(&self, computer: &Computer, path: &str) -> Result<Vec<pb::Entry>, DesktopError> {
        let deadline = self.deadline();
        let request = pb::ListRequest { path: path.into() };
        self.using_files(computer, async |mut files| {
            Ok(agent::call(deadline, Duration::ZERO, files.list(request))
                .await?
                .entries)
        })
        .await
    }

    /// What is at `path` (a final symlink described, not followed).
    pub async fn stat_file(&self, computer: &Computer, path: &str) -> Result<pb::Entry, DesktopError> {
        let deadline = self.deadline();
        let request = pb::StatRequest { path: path.into() };
        self.using_files(computer, async |mut files| {
            Ok(agent::call(deadline, Duration::ZERO, files.stat(request)).await?)
        })
        .await
    }

    /// A file's bytes from `offset`, at most `limit` of them (0: to the end), as the agent
    /// reads them; opened within the agent deadline.
    pub async fn read_file(
        &self,
        computer: &Computer,
        path: &str,
        offset: u64,
        limit: u64,
    ) -> Result<tonic::Streaming<pb::Chunk>, DesktopError> {
        let deadline = self.deadline();
        let request = pb::ReadRequest {
            path: path.into(),
            offset,
            limit,
        };
        self.using_files(computer, async |mut files| {
            Ok(agent::call(deadline, Duration::ZERO, files.read(request)).await?)
        })
        .await
    }

    /// Writes `body` to a file as `upload` says: answers its size. The agent writes beside the
    /// file and renames over it only on the closing `finish`, sent once the body was read to
    /// its end: a body that fails mid-way leaves the old file as it was.
    pub async fn write_file<S, E>(
        &self,
        computer: &Computer,
        upload: Upload,
        body: S,
    ) -> Result<u64, DesktopError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.using_files(computer, async |mut files| {
            let (tx, rx) = mpsc::channel(UPLOAD_QUEUE);
            let start = pb::WriteStart {
                path: upload.path,
                mode: upload.mode,
                make_parents: upload.make_parents,
                max_bytes: upload.max_bytes,
            };
            let chunk = |part| pb::WriteChunk { part: Some(part) };
            // Cannot fail: the receiver is still here.
            let _ = tx.send(chunk(Part::Start(start))).await;
            let call = files.write(tokio_stream::wrappers::ReceiverStream::new(rx));
            let pump = async move {
                let mut body = std::pin::pin!(body);
                let mut size = 0u64;
                while let Some(piece) = body.next().await {
                    let piece = piece.map_err(|e| BodyError(e.to_string()))?;
                    for data in piece.chunks(MESSAGE_BYTES) {
                        size += data.len() as u64;
                        if tx.send(chunk(Part::Data(data.to_vec()))).await.is_err() {
                            // The agent ended the call (it refused the upload): its answer
                            // says why.
                            return Ok(());
                        }
                    }
                }
                // Only a body read to its end is committed.
                let _ = tx.send(chunk(Part::Finish(pb::WriteFinish { size }))).await;
                Ok::<_, BodyError>(())
            };
            let mut call = std::pin::pin!(call);
            tokio::select! {
                // The agent answered before the body ended: a refusal (too large, outside the
                // home), which is the answer.
                answered = &mut call => return Ok(answered.map_err(agent::AgentError::from)?.into_inner().size),
                pumped = pump => if let Err(e) = pumped {
                    // Dropping the call cuts it short: the agent discards what it wrote.
                    return Err(DesktopError::Invalid(crate::json::Invalid(e.to_string())));
                },
            }
            Ok(call.await.map_err(agent::AgentError::from)?.into_inner().size)
        })
        .await
    }

    /// Removes a file, a symlink (not what it points to) or, with `recursive`, a directory.
    pub async fn remove_file(
        &self,
        computer: &Computer,
        path: &str,
        recursive: bool,
    ) -> Result<(), DesktopError> {
        let deadline = self.deadline();
        let request = pb::RemoveRequest {
            path: path.into(),
            recursive,
        };
        self.using_files(computer, async |mut files| {
            agent::call(deadline, Duration::ZERO, files.remove(request)).await?;
            Ok(())
        })
        .await
    }
}
