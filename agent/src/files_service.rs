//! The gRPC face of the desktop user's files (`orgo.agent.v1.Files`): checks prost requests,
//! turns them into calls on [`Home`] and their results back into prost answers. Reads stream
//! through a small bounded channel, so a file is read only as fast as the client takes it.

use std::time::SystemTime;

use orgo_proto::v1 as pb;
use orgo_proto::v1::files_server::Files;
use orgo_proto::v1::write_chunk::Part;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::error::AgentError;
use crate::files::{DEFAULT_MODE, Entry, Home, Kind, MAX_UPLOAD, WriteOptions};
use crate::service::{Answer, BoxStream, invalid};

/// Chunks read ahead of the client: with [`crate::files::CHUNK`] of 256 KiB, a read holds at
/// most about 1 MiB (these, the one being read and the one being sent) however slow the client.
const READ_AHEAD: usize = 2;

/// Serves `orgo.agent.v1.Files` from one home.
pub struct FilesService {
    home: Home,
}

impl FilesService {
    pub fn new(home: Home) -> Self {
        FilesService { home }
    }
}

/// Milliseconds since the Unix epoch (negative before it); 0 when unknown.
fn unix_ms(t: Option<SystemTime>) -> i64 {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    match t.map(|t| t.duration_since(SystemTime::UNIX_EPOCH)) {
        Some(Ok(after)) => ms(after),
        Some(Err(before)) => -ms(before.duration()),
        None => 0,
    }
}

fn entry(e: Entry) -> pb::Entry {
    let kind = match e.kind {
        Kind::File => pb::entry::Kind::File,
        Kind::Directory => pb::entry::Kind::Directory,
        Kind::Symlink => pb::entry::Kind::Symlink,
        Kind::Other => pb::entry::Kind::Other,
    };
    pb::Entry {
        name: e.name,
        kind: kind.into(),
        size: e.size,
        mode: e.mode,
        modified_unix_ms: unix_ms(e.modified),
    }
}

/// The options of an upload from its `start`: mode 0 is [`DEFAULT_MODE`], `max_bytes` 0 (or
/// more than [`MAX_UPLOAD`]) is [`MAX_UPLOAD`]. Errors: `InvalidArgument` for mode bits beyond
/// `0o7777`.
fn write_options(start: &pb::WriteStart) -> Result<WriteOptions, AgentError> {
    let mode = match start.mode {
        0 => DEFAULT_MODE,
        m if m <= 0o7777 => m,
        m => return Err(invalid(format!("`start.mode` {m:#o} has bits beyond 0o7777"))),
    };
    let limit = match start.max_bytes {
        0 => MAX_UPLOAD,
        n => n.min(MAX_UPLOAD),
    };
    Ok(WriteOptions {
        mode,
        make_parents: start.make_parents,
        limit,
    })
}

#[tonic::async_trait]
impl Files for FilesService {
    async fn list(&self, req: Request<pb::ListRequest>) -> Answer<pb::ListResponse> {
        let entries = self.home.list(req.into_inner().path).await?;
        Ok(Response::new(pb::ListResponse {
            entries: entries.into_iter().map(entry).collect(),
        }))
    }

    async fn stat(&self, req: Request<pb::StatRequest>) -> Answer<pb::Entry> {
        Ok(Response::new(entry(self.home.stat(req.into_inner().path).await?)))
    }

    type ReadStream = BoxStream<pb::Chunk>;

    async fn read(&self, req: Request<pb::ReadRequest>) -> Answer<Self::ReadStream> {
        let r = req.into_inner();
        let mut reader = self.home.read(r.path, r.offset, r.limit).await?;
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = reader.next_chunk() => next,
                    // The client went: stop reading at once rather than at the next send.
                    () = tx.closed() => break,
                };
                let (item, last) = match next {
                    Ok(Some(data)) => (Ok(pb::Chunk { data }), false),
                    Ok(None) => break,
                    Err(e) => (Err(Status::from(e)), true),
                };
                if tx.send(item).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn write(&self, req: Request<Streaming<pb::WriteChunk>>) -> Answer<pb::WriteResponse> {
        let mut chunks = req.into_inner();
        let start = match chunks.message().await? {
            Some(pb::WriteChunk {
                part: Some(Part::Start(start)),
            }) => start,
            _ => return Err(invalid("the first message of a write must be `start`").into()),
        };
        let options = write_options(&start)?;
        // Dropped on any early return (an error, the client gone): the old file stays as it was.
        let mut upload = self.home.write(start.path, options).await?;
        // Committed only on `finish` with every byte there: a stream that merely ends may be a
        // client cut short whose end-of-stream arrived before its reset.
        loop {
            let Some(chunk) = chunks.message().await? else {
                return Err(invalid("the write ended without `finish`; nothing was written").into());
            };
            match chunk.part {
                Some(Part::Data(data)) => upload.append(&data).await?,
                Some(Part::Finish(finish)) => {
                    if finish.size != upload.written() {
                        return Err(invalid(format!(
                            "the write's `finish` says {} bytes but {} arrived; nothing was written",
                            finish.size,
                            upload.written()
                        ))
                        .into());
                    }
                    let size = upload.finish().await?;
                    return Ok(Response::new(pb::WriteResponse { size }));
                }
                Some(Part::Start(_)) => {
                    return Err(invalid("`start` may only be the first message of a write").into());
                }
                None => {
                    return Err(
                        invalid("a message of a write carries no `start`, `data` or `finish`").into(),
                    );
                }
            }
        }
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> Answer<pb::RemoveResponse> {
        let r = req.into_inner();
        self.home.remove(r.path, r.recursive).await?;
        Ok(Response::new(pb::RemoveResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_unix_milliseconds() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(unix_ms(Some(epoch + Duration::from_micros(1_500_999))), 1500);
        assert_eq!(unix_ms(Some(epoch - Duration::from_millis(2000))), -2000);
        assert_eq!(unix_ms(None), 0);
    }

    #[test]
    fn write_options_defaults_and_bounds() {
        let start = |mode, max_bytes| pb::WriteStart {
            mode,
            max_bytes,
            ..Default::default()
        };
        let o = write_options(&start(0, 0)).unwrap();
        assert_eq!((o.mode, o.limit, o.make_parents), (0o644, MAX_UPLOAD, false));
        let o = write_options(&start(0o4755, 10)).unwrap();
        assert_eq!((o.mode, o.limit), (0o4755, 10));
        assert_eq!(write_options(&start(0, u64::MAX)).unwrap().limit, MAX_UPLOAD);
        let e = write_options(&start(0o10644, 0)).unwrap_err();
        assert_eq!(e.to_string(), "`start.mode` 0o10644 has bits beyond 0o7777");
    }
}
