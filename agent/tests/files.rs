//! The agent's `Files` service through a real agent and a real tonic client: list, stat, read,
//! write and remove round trips; a binary file byte-exact; offsets and limits; upload limits and
//! cancelled uploads leaving the old file; and confinement — every way out of the home refused
//! with PERMISSION_DENIED, nothing read or written outside (a scratch directory beside the home
//! is compared before and after), while links that stay inside work.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Agent;
use orgo_proto::connect::{Files, Target, connect_files};
use orgo_proto::v1 as pb;
use orgo_proto::v1::write_chunk::Part;
use tonic::{Code, Status};

const CHUNK: usize = 256 << 10;

/// A real agent (with its own Xvfb) and a `Files` client to it; the home is `agent.dir`.
struct Desk {
    agent: Agent,
    files: Files,
}

impl Desk {
    async fn start() -> Desk {
        let agent = Agent::start("none").await;
        let files = connect_files(&Target::Unix(agent.socket.clone())).await.unwrap();
        Desk { agent, files }
    }

    fn home(&self) -> &Path {
        &self.agent.dir
    }

    async fn upload(&mut self, start: pb::WriteStart, data: &[u8]) -> Result<u64, Status> {
        let first = pb::WriteChunk {
            part: Some(Part::Start(start)),
        };
        let rest = data.chunks(64 << 10).map(|c| pb::WriteChunk {
            part: Some(Part::Data(c.to_vec())),
        });
        let finish = pb::WriteChunk {
            part: Some(Part::Finish(pb::WriteFinish {
                size: data.len() as u64,
            })),
        };
        let messages: Vec<_> = std::iter::once(first)
            .chain(rest)
            .chain(std::iter::once(finish))
            .collect();
        let answer = self.files.write(tokio_stream::iter(messages)).await?;
        Ok(answer.into_inner().size)
    }

    /// Writes `data` to `path`, making its parents.
    async fn put(&mut self, path: &str, data: &[u8]) -> Result<u64, Status> {
        self.upload(start(path), data).await
    }

    /// Reads `limit` bytes (0: all) from `offset`, checking every chunk's bound.
    async fn read(&mut self, path: &str, offset: u64, limit: u64) -> Result<Vec<u8>, Status> {
        let request = pb::ReadRequest {
            path: path.into(),
            offset,
            limit,
        };
        let mut chunks = self.files.read(request).await?.into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = chunks.message().await? {
            assert!(
                (1..=CHUNK).contains(&chunk.data.len()),
                "a chunk of {} bytes",
                chunk.data.len()
            );
            data.extend(chunk.data);
        }
        Ok(data)
    }

    async fn get(&mut self, path: &str) -> Result<Vec<u8>, Status> {
        self.read(path, 0, 0).await
    }

    async fn list(&mut self, path: &str) -> Result<Vec<pb::Entry>, Status> {
        let request = pb::ListRequest { path: path.into() };
        Ok(self.files.list(request).await?.into_inner().entries)
    }

    async fn names(&mut self, path: &str) -> Vec<String> {
        let entries = self.list(path).await.unwrap();
        entries.into_iter().map(|e| e.name).collect()
    }

    async fn stat(&mut self, path: &str) -> Result<pb::Entry, Status> {
        let request = pb::StatRequest { path: path.into() };
        Ok(self.files.stat(request).await?.into_inner())
    }

    async fn remove(&mut self, path: &str, recursive: bool) -> Result<(), Status> {
        let request = pb::RemoveRequest {
            path: path.into(),
            recursive,
        };
        self.files.remove(request).await.map(drop)
    }
}

fn start(path: &str) -> pb::WriteStart {
    pb::WriteStart {
        path: path.into(),
        make_parents: true,
        ..Default::default()
    }
}

/// The code and message of a failed call.
#[track_caller]
fn failure<T: std::fmt::Debug>(r: Result<T, Status>) -> (Code, String) {
    let e = r.unwrap_err();
    (e.code(), e.message().to_string())
}

/// The call was refused for leading outside the home, naming `path`.
#[track_caller]
fn escapes<T: std::fmt::Debug>(r: Result<T, Status>, path: &str) {
    assert_eq!(
        failure(r),
        (
            Code::PermissionDenied,
            format!("path {path:?} leads outside the home")
        )
    );
}

/// Every file under `dir` (recursively, links as their targets' text) with its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_dir() {
                todo.push(path.clone());
                b"<dir>".to_vec()
            } else if meta.is_symlink() {
                std::fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                std::fs::read(&path).unwrap()
            };
            all.insert(path, content);
        }
    }
    all
}

/// Names in `dir` of upload temporaries (none may stay behind).
fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".orgo-upload-"))
        .collect()
}

#[tokio::test]
async fn list_stat_read_write_round_trip() {
    let mut desk = Desk::start().await;
    let home = desk.home().to_path_buf();

    assert_eq!(desk.put("notes/a.txt", b"hello").await.unwrap(), 5);
    assert_eq!(std::fs::read(home.join("notes/a.txt")).unwrap(), b"hello");
    assert_eq!(desk.get("notes/a.txt").await.unwrap(), b"hello");
    // The same file by every spelling of the home.
    let absolute = format!("{}/notes/a.txt", home.display());
    for path in ["~/notes/a.txt", "./notes/../notes/a.txt", absolute.as_str()] {
        assert_eq!(desk.get(path).await.unwrap(), b"hello", "{path}");
    }

    let a = desk.stat("notes/a.txt").await.unwrap();
    assert_eq!(
        (a.name.as_str(), a.kind(), a.size, a.mode),
        ("a.txt", pb::entry::Kind::File, 5, 0o644)
    );
    let modified = std::fs::metadata(home.join("notes/a.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let modified = modified
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(a.modified_unix_ms, modified);
    let root = desk.stat("").await.unwrap();
    assert_eq!(
        (root.name.as_str(), root.kind()),
        ("", pb::entry::Kind::Directory)
    );

    // Replaced whole, with the mode asked for.
    let mut private = start("notes/a.txt");
    private.mode = 0o600;
    assert_eq!(desk.upload(private, b"bye").await.unwrap(), 3);
    assert_eq!(desk.get("notes/a.txt").await.unwrap(), b"bye");
    assert_eq!(desk.stat("notes/a.txt").await.unwrap().mode, 0o600);
    // An empty upload makes an empty file.
    assert_eq!(desk.put("notes/empty", b"").await.unwrap(), 0);
    assert_eq!(desk.get("notes/empty").await.unwrap(), b"");

    // Sorted by name, in byte order; links are listed as links.
    for name in ["b", "C", "a0"] {
        desk.put(&format!("notes/{name}"), name.as_bytes()).await.unwrap();
    }
    std::os::unix::fs::symlink("a.txt", home.join("notes/link")).unwrap();
    std::fs::create_dir(home.join("notes/sub")).unwrap();
    let listed = desk.list("notes").await.unwrap();
    let seen: Vec<_> = listed
        .iter()
        .map(|e| (e.name.as_str(), e.kind(), e.size))
        .collect();
    use pb::entry::Kind as K;
    assert_eq!(
        seen[..6],
        [
            ("C", K::File, 1),
            ("a.txt", K::File, 3),
            ("a0", K::File, 2),
            ("b", K::File, 1),
            ("empty", K::File, 0),
            ("link", K::Symlink, 5),
        ]
    );
    assert_eq!((seen[6].0, seen[6].1), ("sub", K::Directory));
    assert_eq!(seen.len(), 7);
    assert_eq!(desk.stat("notes/link").await.unwrap().kind(), K::Symlink);
    // The home holds the agent's socket: neither file nor directory.
    let home_list = desk.list("~").await.unwrap();
    let socket = home_list.iter().find(|e| e.name == "agent.sock").unwrap();
    assert_eq!(socket.kind(), K::Other);
    assert_eq!(desk.names("").await, desk.names(".").await);

    // What each call refuses, and how.
    assert_eq!(
        failure(desk.get("notes/missing").await),
        (
            Code::NotFound,
            "no such file or directory: \"notes/missing\"".into()
        )
    );
    assert_eq!(failure(desk.stat("nope").await).0, Code::NotFound);
    assert_eq!(failure(desk.list("nope").await).0, Code::NotFound);
    assert_eq!(
        failure(desk.get("notes").await),
        (Code::FailedPrecondition, "\"notes\" is a directory".into())
    );
    assert_eq!(
        failure(desk.get("agent.sock").await),
        (
            Code::FailedPrecondition,
            "\"agent.sock\" is not a regular file".into()
        )
    );
    assert_eq!(
        failure(desk.list("notes/b").await),
        (Code::FailedPrecondition, "not a directory: \"notes/b\"".into())
    );
    assert_eq!(
        failure(desk.put("notes/sub", b"x").await),
        (Code::FailedPrecondition, "\"notes/sub\" is a directory".into())
    );
    assert_eq!(failure(desk.put("~", b"x").await).0, Code::FailedPrecondition);
    let mut no_parents = start("new/dir/f");
    no_parents.make_parents = false;
    assert_eq!(
        failure(desk.upload(no_parents, b"x").await),
        (Code::NotFound, "no such file or directory: \"new/dir/f\"".into())
    );
    assert!(!home.join("new").exists());

    // Bad input names its field.
    assert_eq!(
        failure(desk.get("a\0b").await),
        (Code::InvalidArgument, "`path` contains a NUL byte".into())
    );
    let long = "x".repeat(4097);
    assert_eq!(
        failure(desk.stat(&long).await),
        (
            Code::InvalidArgument,
            "`path` is 4097 bytes long; the limit is 4096".into()
        )
    );
    let data_first = pb::WriteChunk {
        part: Some(Part::Data(b"x".to_vec())),
    };
    assert_eq!(
        failure(desk.files.write(tokio_stream::iter([data_first])).await),
        (
            Code::InvalidArgument,
            "the first message of a write must be `start`".into()
        )
    );
    let nothing: [pb::WriteChunk; 0] = [];
    assert_eq!(
        failure(desk.files.write(tokio_stream::iter(nothing)).await).0,
        Code::InvalidArgument
    );
    let mut bad_mode = start("m");
    bad_mode.mode = 0o20000;
    assert_eq!(
        failure(desk.upload(bad_mode, b"x").await).0,
        Code::InvalidArgument
    );
    let twice = [start("t"), start("t")].map(|s| pb::WriteChunk {
        part: Some(Part::Start(s)),
    });
    assert_eq!(
        failure(desk.files.write(tokio_stream::iter(twice)).await),
        (
            Code::InvalidArgument,
            "`start` may only be the first message of a write".into()
        )
    );
    assert!(!home.join("t").exists());

    assert_eq!(partials(&home.join("notes")), Vec::<String>::new());
    assert_eq!(partials(&home), Vec::<String>::new());
}

#[tokio::test]
async fn a_binary_file_round_trips_byte_exact_and_reads_honour_offset_and_limit() {
    let mut desk = Desk::start().await;
    // 3 MiB, every byte value many times over, in no repeating run a misplaced chunk could hide.
    let data: Vec<u8> = (0u32..3 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    assert!((0..=255u8).all(|b| data.contains(&b)));
    let len = data.len() as u64;

    assert_eq!(desk.put("bin/blob", &data).await.unwrap(), len);
    assert!(std::fs::read(desk.home().join("bin/blob")).unwrap() == data);
    let back = desk.get("bin/blob").await.unwrap();
    assert!(back == data, "read back {} bytes, differing", back.len());

    // Chunks are full 256 KiB ones while the file lasts.
    let request = pb::ReadRequest {
        path: "bin/blob".into(),
        ..Default::default()
    };
    let mut chunks = desk.files.read(request).await.unwrap().into_inner();
    let mut sizes = Vec::new();
    while let Some(c) = chunks.message().await.unwrap() {
        sizes.push(c.data.len());
    }
    assert_eq!(sizes, vec![CHUNK; 12]);

    let cases: [(u64, u64, std::ops::Range<usize>); 6] = [
        (1000, 5000, 1000..6000),
        (0, 1, 0..1),
        (len - 10, 0, data.len() - 10..data.len()),
        (len - 10, 100, data.len() - 10..data.len()),
        // Across a chunk boundary, longer than a chunk.
        (CHUNK as u64 - 7, CHUNK as u64 + 9, CHUNK - 7..2 * CHUNK + 2),
        (len, 0, data.len()..data.len()),
    ];
    for (offset, limit, want) in cases {
        let got = desk.read("bin/blob", offset, limit).await.unwrap();
        assert!(
            got == data[want.clone()],
            "offset {offset} limit {limit}: {} bytes",
            got.len()
        );
    }
    assert!(desk.read("bin/blob", len + 5, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn uploads_over_their_limit_or_cancelled_leave_the_old_file() {
    let mut desk = Desk::start().await;
    let home = desk.home().to_path_buf();
    desk.put("keep.txt", b"old").await.unwrap();

    let mut limited = start("keep.txt");
    limited.max_bytes = 10;
    assert_eq!(desk.upload(limited.clone(), b"0123456789").await.unwrap(), 10);
    desk.put("keep.txt", b"old").await.unwrap();
    // Over the limit in its second message.
    let messages = [
        Part::Start(limited.clone()),
        Part::Data(b"012345".to_vec()),
        Part::Data(b"6789X".to_vec()),
    ]
    .map(|part| pb::WriteChunk { part: Some(part) });
    assert_eq!(
        failure(desk.files.write(tokio_stream::iter(messages)).await),
        (
            Code::ResourceExhausted,
            "the upload to \"keep.txt\" is larger than its limit of 10 bytes".into()
        )
    );
    limited.path = "fresh.txt".into();
    assert_eq!(
        failure(desk.upload(limited, &[7; 11]).await).0,
        Code::ResourceExhausted
    );
    assert_eq!(std::fs::read(home.join("keep.txt")).unwrap(), b"old");
    assert!(!home.join("fresh.txt").exists());
    assert_eq!(partials(&home), Vec::<String>::new());

    // A stream that ends without `finish` (a client cut short whose end of stream came before
    // its reset), or whose `finish` counts other bytes, writes nothing.
    let unfinished = [Part::Start(start("keep.txt")), Part::Data(b"trunc".to_vec())]
        .map(|part| pb::WriteChunk { part: Some(part) });
    assert_eq!(
        failure(desk.files.write(tokio_stream::iter(unfinished)).await),
        (
            Code::InvalidArgument,
            "the write ended without `finish`; nothing was written".into()
        )
    );
    let miscounted = [
        Part::Start(start("keep.txt")),
        Part::Data(b"trunc".to_vec()),
        Part::Finish(pb::WriteFinish { size: 9 }),
    ]
    .map(|part| pb::WriteChunk { part: Some(part) });
    assert_eq!(
        failure(desk.files.write(tokio_stream::iter(miscounted)).await).0,
        Code::InvalidArgument
    );
    assert_eq!(std::fs::read(home.join("keep.txt")).unwrap(), b"old");
    assert_eq!(partials(&home), Vec::<String>::new());

    // A client that goes away mid-upload.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for part in [Part::Start(start("keep.txt")), Part::Data(vec![1; 1000])] {
        tx.send(pb::WriteChunk { part: Some(part) }).await.unwrap();
    }
    let mut client = desk.files.clone();
    let call = tokio::spawn(async move {
        client
            .write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while partials(&home).is_empty() {
        assert!(Instant::now() < deadline, "the upload never began");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    call.abort();
    let _ = call.await;
    drop(tx);
    while !partials(&home).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the partial upload stayed: {:?}",
            partials(&home)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(std::fs::read(home.join("keep.txt")).unwrap(), b"old");
}

#[tokio::test]
async fn remove_needs_recursive_for_a_directory_with_something_in_it() {
    let mut desk = Desk::start().await;
    let home = desk.home().to_path_buf();
    desk.put("d/sub/f.txt", b"x").await.unwrap();
    desk.put("d/g.txt", b"y").await.unwrap();
    std::fs::create_dir(home.join("empty")).unwrap();

    assert_eq!(
        failure(desk.remove("d", false).await),
        (
            Code::FailedPrecondition,
            "directory \"d\" is not empty; pass `recursive` to remove it with everything in it".into()
        )
    );
    desk.remove("d/g.txt", false).await.unwrap();
    assert!(!home.join("d/g.txt").exists() && home.join("d/sub/f.txt").exists());
    desk.remove("empty", false).await.unwrap();
    desk.remove("d", true).await.unwrap();
    assert!(!home.join("d").exists() && !home.join("empty").exists());
    assert_eq!(
        failure(desk.remove("d", true).await),
        (Code::NotFound, "no such file or directory: \"d\"".into())
    );

    let absolute = home.display().to_string();
    for path in ["", ".", "~", "~/", absolute.as_str()] {
        assert_eq!(
            failure(desk.remove(path, true).await),
            (Code::PermissionDenied, "the home itself cannot be removed".into()),
            "{path:?}"
        );
    }
    assert!(home.join("agent.sock").exists());
}

#[tokio::test]
async fn nothing_outside_the_home_is_reachable() {
    let mut desk = Desk::start().await;
    let home = desk.home().to_path_buf();
    // A scratch directory beside the home, standing for everything outside it.
    let outside = home.with_file_name(format!("{}-outside", home.file_name().unwrap().to_string_lossy()));
    let _ = std::fs::remove_dir_all(&outside);
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
    std::fs::write(outside.join("sub/deep.txt"), b"deep").unwrap();
    let outside_name = outside.file_name().unwrap().to_str().unwrap().to_string();

    desk.put("notes/a.txt", b"inside").await.unwrap();
    let link = |target: &Path, name: &str| std::os::unix::fs::symlink(target, home.join(name)).unwrap();
    link(Path::new("/etc"), "etc");
    link(Path::new("/etc/passwd"), "passwd");
    link(&outside, "out");
    link(&Path::new("..").join(&outside_name), "rel_out");
    link(&outside.join("secret.txt"), "victim");
    link(Path::new("notes"), "inside");
    link(Path::new("notes/a.txt"), "inside_file");
    link(Path::new("../notes/a.txt"), "notes/up_and_back");
    let before = snapshot(&outside);
    let passwd = std::fs::read("/etc/passwd").unwrap();

    let up = format!("../{outside_name}/secret.txt");
    let reads = [
        "../etc/passwd",
        "/etc/passwd",
        "etc/passwd",
        "passwd",
        "out/secret.txt",
        "out/sub/deep.txt",
        "rel_out/secret.txt",
        "victim",
        up.as_str(),
        "notes/../../x",
    ];
    for path in reads {
        escapes(desk.get(path).await, path);
        // Stat describes a final link rather than following it: those are the home's own.
        if !["passwd", "victim"].contains(&path) {
            escapes(desk.stat(path).await, path);
        }
    }
    for path in [
        "..",
        "/",
        "/etc",
        "etc",
        "out",
        "out/sub",
        "rel_out",
        "inside/../..",
    ] {
        escapes(desk.list(path).await, path);
    }
    // Writes through every way out, making parents or not.
    for path in [
        "out/new.txt",
        "out/sub/deep.txt",
        "out/made/new.txt",
        "rel_out/new.txt",
        "victim",
        up.as_str(),
        "../new.txt",
    ] {
        escapes(desk.put(path, b"pwned").await, path);
        let mut plain = start(path);
        plain.make_parents = false;
        escapes(desk.upload(plain, b"pwned").await, path);
    }
    for path in [
        "out/secret.txt",
        "out/sub",
        "rel_out/sub/deep.txt",
        up.as_str(),
        "..",
    ] {
        escapes(desk.remove(path, true).await, path);
    }

    // Links that stay inside the home work, in the middle of a path and at its end.
    assert_eq!(desk.get("inside/a.txt").await.unwrap(), b"inside");
    assert_eq!(desk.get("inside_file").await.unwrap(), b"inside");
    assert_eq!(desk.get("notes/up_and_back").await.unwrap(), b"inside");
    assert_eq!(desk.names("inside").await, ["a.txt", "up_and_back"]);
    desk.put("inside/b.txt", b"via link").await.unwrap();
    assert_eq!(std::fs::read(home.join("notes/b.txt")).unwrap(), b"via link");
    // An upload through a final link replaces the file it names; the link stays a link.
    desk.put("inside_file", b"replaced").await.unwrap();
    assert_eq!(std::fs::read(home.join("notes/a.txt")).unwrap(), b"replaced");
    assert!(
        std::fs::symlink_metadata(home.join("inside_file"))
            .unwrap()
            .is_symlink()
    );
    // The links themselves are the home's: they can be described and removed, and removing one
    // (even recursively) leaves what it points to alone.
    assert_eq!(desk.stat("out").await.unwrap().kind(), pb::entry::Kind::Symlink);
    desk.remove("out", true).await.unwrap();
    desk.remove("rel_out", true).await.unwrap();
    desk.remove("victim", false).await.unwrap();
    desk.remove("etc", true).await.unwrap();
    assert!(!home.join("out").exists() && !home.join("rel_out").exists());

    assert_eq!(snapshot(&outside), before, "something outside the home changed");
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd);
    assert_eq!(partials(&home), Vec::<String>::new());
    assert_eq!(partials(&home.join("notes")), Vec::<String>::new());
    std::fs::remove_dir_all(&outside).unwrap();
}
