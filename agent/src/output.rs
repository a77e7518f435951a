//! The output pipes of a run. Each of stdout and stderr is capped while it is read: at most
//! `cap` bytes pass, cut on the last UTF-8 character boundary at or below the cap, and the rest
//! is read and dropped, so a flood costs neither memory nor a stuck writer. Chunks never end
//! inside a UTF-8 character (up to 3 trailing bytes wait for the next read), so a client that
//! decodes chunk by chunk sees no U+FFFD of ours; bytes that are not UTF-8 pass unchanged.
//!
//! When the interpreter exits, the call's output is what arrived before, plus what is in the
//! pipe at that moment. A background process it started (`app &`) may still hold the pipe: the
//! pipe is then handed to [`Drains`], which reads and discards until the last writer closes
//! it, so no writer blocks on a full pipe or dies of SIGPIPE because the call ended.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How many handed-off pipes are drained at once. Each costs a file descriptor and a small
/// task; past this the oldest drain is closed (see [`Drains::adopt`]).
const MAX_DRAINS: usize = 256;
/// Bytes read per call, while a run lasts and in a drain.
const READ_CHUNK: usize = 64 * 1024;
/// Linux's default pipe capacity, for when the pipe cannot tell its own.
const DEFAULT_PIPE_CAPACITY: usize = 64 * 1024;

/// Where a reader sends what passes its cap.
pub type Chunks = mpsc::Sender<(Stream, Vec<u8>)>;

/// The cap of one stream, fed the bytes as they are read.
///
/// Invariants: what passed is a prefix of the input, at most `cap` bytes; for UTF-8 input
/// every piece that passes is UTF-8; `truncated` holds exactly when input was dropped.
#[derive(Debug)]
struct Capper {
    room: usize,
    /// The start of a character whose end has not been read yet (at most 3 bytes).
    held: Vec<u8>,
    truncated: bool,
}

impl Capper {
    fn new(cap: usize) -> Self {
        Capper {
            room: cap,
            held: Vec::new(),
            truncated: false,
        }
    }

    /// Takes the next bytes read; answers the ones that pass now (maybe none).
    fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.truncated {
            return Vec::new();
        }
        let mut next = std::mem::take(&mut self.held);
        next.extend_from_slice(bytes);
        if next.len() > self.room {
            next.truncate(floor_boundary(&next, self.room));
            self.truncated = true;
        } else {
            self.held = next.split_off(next.len() - incomplete_tail(&next));
        }
        self.room -= next.len();
        next
    }

    /// The end of the stream: answers the bytes still held (an unfinished character, which
    /// passes as it is: the output ends there).
    fn finish(&mut self) -> Vec<u8> {
        self.room = self.room.saturating_sub(self.held.len());
        std::mem::take(&mut self.held)
    }

    fn truncated(&self) -> bool {
        self.truncated
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// How many bytes the UTF-8 sequence that `lead` starts has (1 for anything that starts none).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// The start of the character that `at` falls inside, if a UTF-8 lead byte starts one within
/// the 3 bytes before it; `at` itself otherwise (a boundary already, or not UTF-8).
fn floor_boundary(bytes: &[u8], at: usize) -> usize {
    if !bytes.get(at).is_some_and(|&b| is_continuation(b)) {
        return at;
    }
    (at.saturating_sub(3)..at)
        .rev()
        .find(|&i| !is_continuation(bytes[i]))
        .filter(|&i| sequence_len(bytes[i]) > at - i)
        .unwrap_or(at)
}

/// How many bytes at the end of `bytes` start a UTF-8 character that is not complete yet.
fn incomplete_tail(bytes: &[u8]) -> usize {
    let len = bytes.len();
    (len.saturating_sub(3)..len)
        .rev()
        .find(|&i| !is_continuation(bytes[i]))
        .map(|i| len - i)
        .filter(|&tail| sequence_len(bytes[len - tail]) > tail)
        .unwrap_or(0)
}

async fn send(tx: &Chunks, stream: Stream, bytes: Vec<u8>) {
    if !bytes.is_empty() {
        // The receiver outlives the readers of a run; a test harness may stop listening.
        let _ = tx.send((stream, bytes)).await;
    }
}

/// Reads `pipe` through `capper` until its end (answers true; a read error counts as the end)
/// or until `stop` resolves (answers false), sending what passes to `tx`. `stop` wins over
/// ready data, so a writer that never pauses cannot keep the reader from stopping.
async fn read_capped(
    pipe: &mut (impl AsyncRead + Unpin),
    stream: Stream,
    capper: &mut Capper,
    tx: &Chunks,
    stop: impl Future<Output = ()>,
) -> bool {
    tokio::pin!(stop);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = tokio::select! {
            biased;
            () = &mut stop => return false,
            read = pipe.read(&mut buf) => match read {
                Ok(0) | Err(_) => return true,
                Ok(n) => n,
            },
        };
        send(tx, stream, capper.push(&buf[..n])).await;
    }
}

/// Reads one output pipe of a run until the interpreter has exited (`exited`), then what is in
/// the pipe at that moment, and hands the pipe to `drains` if a writer still holds it open.
/// Answers whether the cap dropped anything.
pub async fn read_output(
    mut pipe: pipe::Receiver,
    stream: Stream,
    cap: usize,
    tx: Chunks,
    exited: impl Future<Output = ()>,
    drains: Drains,
) -> bool {
    let mut capper = Capper::new(cap);
    let ended = read_capped(&mut pipe, stream, &mut capper, &tx, exited).await
        || read_pending(&pipe, stream, &mut capper, &tx).await;
    send(&tx, stream, capper.finish()).await;
    if !ended {
        drains.adopt(pipe);
    }
    capper.truncated()
}

/// Reads what the pipe holds right now without waiting for more, at most its capacity (so a
/// writer that keeps writing cannot hold the call). Answers true at the end of the pipe.
async fn read_pending(pipe: &pipe::Receiver, stream: Stream, capper: &mut Capper, tx: &Chunks) -> bool {
    let capacity = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_GETPIPE_SZ)
        .map_or(DEFAULT_PIPE_CAPACITY, |n| n as usize);
    let mut buf = vec![0u8; capacity.min(READ_CHUNK)];
    let mut left = capacity;
    while left > 0 {
        // read(2) itself, not tokio's try_read: the reactor may not have seen data that is
        // already there, and the pipe is non-blocking.
        let want = left.min(buf.len());
        match nix::unistd::read(pipe, &mut buf[..want]) {
            Ok(0) => return true,
            Ok(n) => {
                left -= n;
                send(tx, stream, capper.push(&buf[..n])).await;
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return false,
            Err(_) => return true,
        }
    }
    false
}

/// Pipes handed off by ended runs while background processes still hold them, each read and
/// discarded by a task of its own until its last writer closes it. Memory stays flat (one
/// small task per pipe; the bytes go through one buffer per worker thread), and the CPU spent
/// is one read per write. At most `max` at once: adopting one more closes the oldest, whose
/// writers then get EPIPE (SIGPIPE) on their next write, as if their terminal had closed.
#[derive(Clone)]
pub struct Drains {
    max: usize,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    /// Oldest first.
    tasks: VecDeque<(u64, AbortHandle)>,
}

impl Default for Drains {
    fn default() -> Self {
        Drains::new(MAX_DRAINS)
    }
}

impl Drains {
    pub fn new(max: usize) -> Self {
        Drains {
            max,
            open: Arc::default(),
        }
    }

    /// Reads and discards `pipe` until every writer has closed it.
    pub fn adopt(&self, pipe: pipe::Receiver) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while open.tasks.len() >= self.max.max(1) {
            let Some((_, oldest)) = open.tasks.pop_front() else {
                break;
            };
            oldest.abort();
            tracing::warn!(
                limit = self.max,
                "too many pipes held by background processes; closed the oldest"
            );
        }
        let id = open.next_id;
        open.next_id += 1;
        let this = self.clone();
        // The task unlists itself under this lock, so not before it is listed.
        let task = tokio::spawn(async move {
            discard(pipe).await;
            let mut open = this.open.lock().unwrap_or_else(|p| p.into_inner());
            open.tasks.retain(|(i, _)| *i != id);
        });
        open.tasks.push_back((id, task.abort_handle()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).tasks.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn discard(pipe: pipe::Receiver) {
    thread_local! {
        static SINK: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
    }
    loop {
        if pipe.readable().await.is_err() {
            return;
        }
        match SINK.with_borrow_mut(|sink| pipe.try_read(sink)) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Checks the capping properties on `input` read in chunks of the given sizes (cycled; a size
/// of 0 counts as 1), through [`read_capped`] as a run reads: no empty chunk; what passes is a
/// prefix of at most `cap` bytes, the whole input when it fits; the flag is set exactly when
/// something was dropped; a cut falls at most 3 bytes below the cap; and for UTF-8 input every
/// chunk is UTF-8. Panics when one fails (for the proptest and the fuzz target).
#[cfg(any(test, fuzzing))]
pub fn check_capping(input: &[u8], sizes: &[usize], cap: usize) {
    let mut chunks = VecDeque::new();
    let mut rest = input;
    for size in sizes.iter().map(|&s| s.max(1)).cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        chunks.push_back(chunk.to_vec());
        rest = after;
    }
    if !rest.is_empty() {
        chunks.push_back(rest.to_vec());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let (truncated, pieces) = rt.block_on(async {
        let (tx, mut rx) = mpsc::channel(2);
        let read = async move {
            let mut capper = Capper::new(cap);
            let mut pipe = ChunkedPipe(chunks);
            let ended = read_capped(
                &mut pipe,
                Stream::Stdout,
                &mut capper,
                &tx,
                std::future::pending(),
            )
            .await;
            assert!(ended, "read to the end");
            send(&tx, Stream::Stdout, capper.finish()).await;
            capper.truncated()
        };
        let collect = async {
            let mut pieces = Vec::new();
            while let Some((_, piece)) = rx.recv().await {
                pieces.push(piece);
            }
            pieces
        };
        tokio::join!(read, collect)
    });
    let kept = pieces.concat();
    assert!(pieces.iter().all(|p| !p.is_empty()), "an empty chunk");
    assert!(kept.len() <= cap, "{} bytes passed a cap of {cap}", kept.len());
    assert_eq!(kept, input[..kept.len()], "not a prefix");
    assert_eq!(truncated, kept.len() < input.len(), "flagged: {truncated}");
    assert_eq!(truncated, input.len() > cap, "dropped although it fits");
    assert!(!truncated || kept.len() + 3 >= cap, "cut too early");
    if std::str::from_utf8(input).is_ok() {
        for piece in &pieces {
            assert!(std::str::from_utf8(piece).is_ok(), "a chunk splits a character");
        }
    }
}

/// A pipe that delivers the given chunks, one (or the part that fits) per read.
#[cfg(any(test, fuzzing))]
struct ChunkedPipe(VecDeque<Vec<u8>>);

#[cfg(any(test, fuzzing))]
impl AsyncRead for ChunkedPipe {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(mut chunk) = self.0.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.push_front(chunk.split_off(n));
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;

    /// Text with characters of every UTF-8 length, or any bytes.
    fn output() -> impl Strategy<Value = Vec<u8>> {
        let text = prop::collection::vec(
            prop_oneof![Just('a'), Just('é'), Just('€'), Just('😀'), any::<char>()],
            0..2000,
        )
        .prop_map(|chars| chars.into_iter().collect::<String>().into_bytes());
        prop_oneof![text, prop::collection::vec(any::<u8>(), 0..6000)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn output_is_cut_at_the_cap_on_a_character_boundary(
            input in output(),
            sizes in prop::collection::vec(0usize..700, 0..8),
            cap in 0usize..9000,
        ) {
            check_capping(&input, &sizes, cap);
        }
    }

    #[test]
    fn the_field_case_ends_on_the_last_whole_character() {
        // 1 MiB - 1 of 'a', then 'é' (2 bytes): the cap falls inside the 'é'.
        let mut input = vec![b'a'; (1 << 20) - 1];
        input.extend_from_slice("é".as_bytes());
        let mut capper = Capper::new(1 << 20);
        let mut kept = capper.push(&input);
        kept.extend(capper.finish());
        assert_eq!(kept.len(), (1 << 20) - 1);
        assert!(capper.truncated());
        check_capping(&input, &[65536], 1 << 20);
    }

    /// A pipe whose write end is a blocking file, as a child process has it.
    fn pipe_pair() -> (std::fs::File, pipe::Receiver) {
        let (tx, rx) = pipe::pipe().unwrap();
        (tx.into_blocking_fd().unwrap().into(), rx)
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_drained_pipe_takes_everything_until_its_writers_close_it() {
        let drains = Drains::default();
        let (mut writer, reader) = pipe_pair();
        drains.adopt(reader);
        // Many times a pipe's capacity: it would block for ever if nobody read.
        let writer =
            tokio::task::spawn_blocking(move || writer.write_all(&vec![b'x'; 16 << 20]).map(|()| writer))
                .await
                .unwrap()
                .expect("the write completes");
        assert_eq!(drains.len(), 1);
        drop(writer);
        until("the drain ends with its last writer", || drains.is_empty()).await;
    }

    #[tokio::test]
    async fn past_the_limit_the_oldest_drain_is_closed() {
        let drains = Drains::new(2);
        let mut writers: Vec<_> = (0..3)
            .map(|_| {
                let (writer, reader) = pipe_pair();
                drains.adopt(reader);
                writer
            })
            .collect();
        assert_eq!(drains.len(), 2);
        let oldest = writers.remove(0);
        let broken = tokio::task::spawn_blocking(move || {
            let mut oldest = oldest;
            let deadline = Instant::now() + Duration::from_secs(20);
            // The drain is aborted asynchronously; its pipe closes when the task is dropped.
            while Instant::now() < deadline {
                if let Err(e) = oldest.write_all(b"x") {
                    return Some(e.kind());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            None
        });
        assert_eq!(broken.await.unwrap(), Some(std::io::ErrorKind::BrokenPipe));
        let writers = tokio::task::spawn_blocking(move || {
            for w in &mut writers {
                w.write_all(&vec![b'x'; 4 << 20])
                    .expect("the newer drains still read");
            }
            writers
        })
        .await
        .unwrap();
        drop(writers);
        until("both drains end", || drains.is_empty()).await;
    }
}
