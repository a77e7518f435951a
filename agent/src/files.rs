//! The desktop user's files, confined to the home: listing, stat, streamed reads, uploads that
//! replace a file whole, removal. No prost here; `files_service` is the gRPC face.
//!
//! Confinement is cap-std's: the home is opened once as a [`cap_std::fs::Dir`] and every
//! operation is relative to it, resolved beneath it by the kernel (`openat2` with
//! `RESOLVE_BENEATH`, or cap-std's own component-by-component walk where the kernel lacks it).
//! So a path, or a symbolic link anywhere along it, that would leave the home fails inside the
//! kernel call itself — there is no check-then-use window for a link swapped in between.
//! Symbolic links that stay inside the home are followed; an absolute link target is refused
//! even when it names a place inside the home (the kernel cannot tell, beneath a directory,
//! what `/` would mean). What this module adds is only the spelling of request paths (see
//! [`relative`]) and the mapping of I/O errors to the agent's errors, naming the path as given.

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, OpenOptions, OpenOptionsExt, PermissionsExt as _};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::error::{AgentError, Result};

/// The longest request path, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// The most bytes one [`Reader::next_chunk`] answers: large enough that a chunk's overhead is
/// negligible, small enough that a few in flight cost little memory.
pub const CHUNK: usize = 256 << 10;
/// The agent's own bound on one upload, whatever the caller asks: a runaway client fills at
/// most this much of the disk before it is refused.
pub const MAX_UPLOAD: u64 = 8 << 30;
/// The permission bits an upload's file gets when the caller names none.
pub const DEFAULT_MODE: u32 = 0o644;

/// The home directory, opened once; cheap to clone, shared by every call.
#[derive(Clone)]
pub struct Home {
    inner: Arc<Inner>,
}

struct Inner {
    dir: Dir,
    /// The spellings of the home an absolute request path may start with: as configured, and
    /// canonical (when it differs).
    spellings: Vec<PathBuf>,
}

/// What kind of file an [`Entry`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// One file as `lstat` sees it (a symbolic link is described, not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name within its directory, lossily UTF-8; empty for the home itself.
    pub name: String,
    pub kind: Kind,
    /// Bytes (a symbolic link: the length of its target).
    pub size: u64,
    /// Permission bits, at most `0o7777`.
    pub mode: u32,
    /// Last modification, when the file system records it.
    pub modified: Option<SystemTime>,
}

/// How an upload is made; the service validates each value before it gets here.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Permission bits of the new file (at most `0o7777`), applied as given, not through the
    /// umask.
    pub mode: u32,
    /// Create missing parent directories instead of failing with `NotFound`.
    pub make_parents: bool,
    /// Refuse the upload once it exceeds this many bytes.
    pub limit: u64,
}

/// A request's path: as the caller gave it (for messages) and relative to the home.
struct Named {
    given: String,
    rel: PathBuf,
}

impl Named {
    fn fail(&self, e: io::Error) -> AgentError {
        io_error(&self.given, e)
    }

    /// `WrongKind` unless `meta` is a regular file's.
    fn regular(&self, meta: &Metadata) -> Result<()> {
        match Kind::of(meta) {
            Kind::File => Ok(()),
            Kind::Directory => Err(AgentError::WrongKind(format!("{:?} is a directory", self.given))),
            Kind::Symlink | Kind::Other => Err(AgentError::WrongKind(format!(
                "{:?} is not a regular file",
                self.given
            ))),
        }
    }
}

/// The request path `given` as a path relative to the home. Accepted: a relative path ("" and
/// "." are the home itself), `~` or `~/…` (the home), or an absolute path starting with one of
/// `homes` (compared component by component: `/home/user2` is not inside `/home/user`). `..`
/// components are left for cap-std to resolve beneath the home, so `a/../b` works and
/// `../etc` is refused where it is used.
///
/// Errors: `InvalidArgument` for a NUL byte or more than [`MAX_PATH`] bytes;
/// `PermissionDenied` for an absolute path outside the home.
fn relative(given: &str, homes: &[PathBuf]) -> Result<PathBuf> {
    if given.len() > MAX_PATH {
        return Err(AgentError::InvalidArgument(format!(
            "`path` is {} bytes long; the limit is {MAX_PATH}",
            given.len()
        )));
    }
    if given.contains('\0') {
        return Err(AgentError::InvalidArgument("`path` contains a NUL byte".into()));
    }
    let rel = if given == "~" {
        Path::new("")
    } else if let Some(rest) = given.strip_prefix("~/") {
        // As in a shell, `~//x` is `~/x`, not the absolute `/x`.
        Path::new(rest.trim_start_matches('/'))
    } else if Path::new(given).is_absolute() {
        homes
            .iter()
            .find_map(|home| Path::new(given).strip_prefix(home).ok())
            .ok_or_else(|| outside(given))?
    } else {
        Path::new(given)
    };
    // Rebuilt from its components: `a/./b` is `a/b`, and a trailing `/` goes, so `link/`
    // names the link itself (which `remove` must not follow), not the directory behind it.
    let rel: PathBuf = rel.components().collect();
    // cap-std reads an empty path as an error, "." as the directory itself.
    Ok(if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    })
}

fn outside(given: &str) -> AgentError {
    AgentError::PermissionDenied(format!("path {given:?} leads outside the home"))
}

/// The agent's error for an I/O error on the path the caller gave as `given`.
fn io_error(given: &str, e: io::Error) -> AgentError {
    use io::ErrorKind as K;
    // cap-std's refusal of a path (or a link on it) leaving the home is the one
    // `PermissionDenied` that no system call answered: `openat2`'s EXDEV and cap-std's own
    // walk are both turned into this errno-less error.
    if e.kind() == K::PermissionDenied && e.raw_os_error().is_none() {
        return outside(given);
    }
    match (e.kind(), e.raw_os_error()) {
        (K::NotFound, _) => AgentError::NotFound(format!("no such file or directory: {given:?}")),
        (K::PermissionDenied, _) => AgentError::PermissionDenied(format!("permission denied: {given:?}")),
        (K::NotADirectory, _) => AgentError::WrongKind(format!("not a directory: {given:?}")),
        (K::IsADirectory, _) => AgentError::WrongKind(format!("{given:?} is a directory")),
        (K::DirectoryNotEmpty, _) => AgentError::WrongKind(format!(
            "directory {given:?} is not empty; pass `recursive` to remove it with everything in it"
        )),
        (K::AlreadyExists, _) => AgentError::WrongKind(format!(
            "something that is not a directory is in the way of {given:?}"
        )),
        (K::InvalidInput, _) => AgentError::InvalidArgument(format!("{given:?}: {e}")),
        (K::ReadOnlyFilesystem, _) => {
            AgentError::PermissionDenied(format!("{given:?} is on a read-only file system"))
        }
        (K::StorageFull | K::QuotaExceeded, _) => {
            AgentError::TooLarge(format!("no space left on the disk for {given:?}"))
        }
        (K::InvalidFilename, _) => {
            AgentError::InvalidArgument(format!("a name in `path` is too long: {given:?}"))
        }
        (_, Some(libc::ELOOP)) => {
            AgentError::WrongKind(format!("too many levels of symbolic links: {given:?}"))
        }
        _ => AgentError::File(format!("{given:?}: {e}")),
    }
}

impl Kind {
    fn of(meta: &Metadata) -> Kind {
        let t = meta.file_type();
        if t.is_symlink() {
            Kind::Symlink
        } else if t.is_dir() {
            Kind::Directory
        } else if t.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

impl Entry {
    fn new(name: Option<&OsStr>, meta: &Metadata) -> Entry {
        Entry {
            name: name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            kind: Kind::of(meta),
            size: meta.len(),
            mode: meta.permissions().mode() & 0o7777,
            modified: meta.modified().ok().map(|t| t.into_std()),
        }
    }
}

impl Home {
    /// Opens the home at `path` (which must exist and be a directory).
    pub fn open(path: &Path) -> io::Result<Home> {
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        let mut spellings = vec![path.to_path_buf()];
        if let Ok(canonical) = std::fs::canonicalize(path)
            && canonical != path
        {
            spellings.push(canonical);
        }
        Ok(Home {
            inner: Arc::new(Inner { dir, spellings }),
        })
    }

    /// Runs `op` on the home on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Arc<Inner>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        blocking(move || op(&inner)).await
    }

    /// The entries of the directory at `path`, sorted by name (byte order), links not followed.
    /// Errors: `WrongKind` when it is not a directory, and those of every path.
    pub async fn list(&self, path: String) -> Result<Vec<Entry>> {
        self.blocking(move |home| {
            let named = home.name(path)?;
            let mut entries = Vec::new();
            for entry in home.dir.read_dir(&named.rel).map_err(|e| named.fail(e))? {
                let entry = entry.map_err(|e| named.fail(e))?;
                match entry.metadata() {
                    Ok(meta) => entries.push((entry.file_name(), meta)),
                    // Removed since the directory was read: it is not there any more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(named.fail(e)),
                }
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(entries
                .iter()
                .map(|(name, meta)| Entry::new(Some(name), meta))
                .collect())
        })
        .await
    }

    /// The file at `path`; a final symbolic link is described, not followed.
    pub async fn stat(&self, path: String) -> Result<Entry> {
        self.blocking(move |home| {
            let named = home.name(path)?;
            let meta = home.dir.symlink_metadata(&named.rel).map_err(|e| named.fail(e))?;
            Ok(Entry::new(named.rel.file_name(), &meta))
        })
        .await
    }

    /// Opens the regular file at `path` for reading from byte `offset`, at most `limit` bytes
    /// (0: to the end). Errors: `WrongKind` for a directory or another non-regular file.
    pub async fn read(&self, path: String, offset: u64, limit: u64) -> Result<Reader> {
        let (named, file) = self
            .blocking(move |home| {
                let named = home.name(path)?;
                // Only a regular file is opened (opening a device can act on it, a socket
                // cannot be opened), and opened non-blocking, so a FIFO swapped in after the
                // check cannot hold the open; what was opened is checked again.
                let meta = home.dir.metadata(&named.rel).map_err(|e| named.fail(e))?;
                named.regular(&meta)?;
                let file = home
                    .dir
                    .open_with(
                        &named.rel,
                        OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK),
                    )
                    .map_err(|e| named.fail(e))?;
                let opened = file.metadata().map_err(|e| named.fail(e))?;
                named.regular(&opened)?;
                let mut file = file.into_std();
                // Past the end reads nothing; an offset beyond what lseek takes (2^63) is past
                // any end.
                let offset = offset.min(opened.len());
                io::Seek::seek(&mut file, io::SeekFrom::Start(offset)).map_err(|e| named.fail(e))?;
                Ok((named, file))
            })
            .await?;
        let limit = if limit == 0 { u64::MAX } else { limit };
        Ok(Reader {
            given: named.given,
            file: tokio::fs::File::from_std(file).take(limit),
        })
    }

    /// Starts an upload that will replace (or create) the file at `path`, through a final
    /// symbolic link to the file it names. Errors: `WrongKind` when `path` is a directory,
    /// `InvalidArgument` when it does not end in a name (`a/..`), `NotFound` when its directory
    /// is missing and `make_parents` is off.
    pub async fn write(&self, path: String, options: WriteOptions) -> Result<Upload> {
        let (named, target, partial, file) = self
            .blocking(move |home| {
                let named = home.name(path)?;
                let target = home.target(&named)?;
                let (Some(dir), Some(_)) = (target.parent(), target.file_name()) else {
                    return Err(AgentError::InvalidArgument(format!(
                        "`path` {:?} does not end in a file name",
                        named.given
                    )));
                };
                if options.make_parents && !dir.as_os_str().is_empty() {
                    home.dir.create_dir_all(dir).map_err(|e| named.fail(e))?;
                }
                let (partial, file) = Partial::create(home, dir).map_err(|e| named.fail(e))?;
                Ok((named, target, partial, file))
            })
            .await?;
        Ok(Upload {
            file: tokio::fs::File::from_std(file),
            partial,
            target,
            given: named.given,
            options,
            written: 0,
        })
    }

    /// Removes the file, symbolic link (not what it points to) or directory at `path`; a
    /// directory with what it holds only when `recursive`. Errors: `PermissionDenied` for the
    /// home itself, `WrongKind` for a non-empty directory without `recursive`.
    pub async fn remove(&self, path: String, recursive: bool) -> Result<()> {
        self.blocking(move |home| {
            let named = home.name(path)?;
            let meta = home.dir.symlink_metadata(&named.rel).map_err(|e| named.fail(e))?;
            if named.rel.file_name().is_none() {
                return Err(if named.rel == Path::new(".") {
                    AgentError::PermissionDenied("the home itself cannot be removed".into())
                } else {
                    AgentError::InvalidArgument(format!("`path` {:?} does not end in a name", named.given))
                });
            }
            let removed = match (meta.is_dir(), recursive) {
                (true, true) => home.dir.remove_dir_all(&named.rel),
                (true, false) => home.dir.remove_dir(&named.rel),
                (false, _) => home.dir.remove_file(&named.rel),
            };
            removed.map_err(|e| named.fail(e))
        })
        .await
    }
}

/// Runs `op` on the blocking pool: every file system call may wait on a disk.
async fn blocking<T: Send + 'static>(op: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| AgentError::File(format!("the file task failed: {e}")))?
}

impl Inner {
    fn name(&self, given: String) -> Result<Named> {
        let rel = relative(&given, &self.spellings)?;
        Ok(Named { given, rel })
    }

    /// The file an upload to `named` replaces: the path itself, or where a final symbolic link
    /// on it leads (so the link keeps pointing at the new file). Errors: `WrongKind` for a
    /// directory, `PermissionDenied` for a link leading outside.
    fn target(&self, named: &Named) -> Result<PathBuf> {
        let target = match self.dir.symlink_metadata(&named.rel) {
            Ok(meta) if meta.is_symlink() => self.dir.canonicalize(&named.rel).map_err(|e| named.fail(e))?,
            Ok(_) => named.rel.clone(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => named.rel.clone(),
            Err(e) => return Err(named.fail(e)),
        };
        match self.dir.metadata(&target) {
            Ok(meta) if meta.is_dir() => {
                Err(AgentError::WrongKind(format!("{:?} is a directory", named.given)))
            }
            Ok(_) => Ok(target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(target),
            Err(e) => Err(named.fail(e)),
        }
    }
}

/// A file being read, a chunk at a time (see [`Home::read`]).
pub struct Reader {
    given: String,
    file: tokio::io::Take<tokio::fs::File>,
}

impl Reader {
    /// The next up to [`CHUNK`] bytes (fewer only at the end), or `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let buf = fill(&mut self.file, CHUNK)
            .await
            .map_err(|e| io_error(&self.given, e))?;
        Ok((!buf.is_empty()).then_some(buf))
    }
}

/// Reads until `max` bytes or the end of `from`, whichever comes first.
async fn fill(from: &mut (impl AsyncRead + Unpin), max: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; max];
    let mut filled = 0;
    while filled < max {
        match from.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// An upload in progress (see [`Home::write`]): bytes go to a temporary file beside the
/// target, renamed over it by [`Upload::finish`]. Dropped unfinished, it leaves the target as
/// it was and no temporary file.
pub struct Upload {
    file: tokio::fs::File,
    partial: Partial,
    target: PathBuf,
    given: String,
    options: WriteOptions,
    written: u64,
}

impl Upload {
    /// Bytes appended so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data`. Errors: `TooLarge` naming the limit once the upload exceeds it (then
    /// drop the upload: nothing was written).
    pub async fn append(&mut self, data: &[u8]) -> Result<()> {
        let size = self.written + data.len() as u64;
        if size > self.options.limit {
            return Err(AgentError::TooLarge(format!(
                "the upload to {:?} is larger than its limit of {} bytes",
                self.given, self.options.limit
            )));
        }
        self.file
            .write_all(data)
            .await
            .map_err(|e| io_error(&self.given, e))?;
        self.written = size;
        Ok(())
    }

    /// Makes the upload the target's content, with its permission bits, and answers its size.
    pub async fn finish(mut self) -> Result<u64> {
        let given = self.given;
        let fail = |e| io_error(&given, e);
        self.file.flush().await.map_err(fail)?;
        self.file
            .set_permissions(std::fs::Permissions::from_mode(self.options.mode))
            .await
            .map_err(fail)?;
        // On disk before the rename: a crash must not leave the target empty.
        self.file.sync_data().await.map_err(fail)?;
        let (partial, target) = (self.partial, self.target);
        let renamed = blocking(move || Ok(partial.rename_to(&target))).await?;
        renamed.map_err(fail)?;
        Ok(self.written)
    }
}

/// The temporary file of an upload, removed when dropped unless renamed over its target.
struct Partial {
    home: Arc<Inner>,
    /// Relative to the home.
    path: PathBuf,
    renamed: bool,
}

impl Partial {
    /// Creates a fresh temporary file, private until finished, in `dir` (relative to the home).
    fn create(home: &Arc<Inner>, dir: &Path) -> io::Result<(Partial, std::fs::File)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            // Short and fixed, so a target name near the 255-byte limit still leaves room.
            let path = dir.join(format!(".orgo-upload-{}-{n}", std::process::id()));
            let opened = home
                .dir
                .open_with(&path, OpenOptions::new().write(true).create_new(true).mode(0o600));
            match opened {
                Ok(file) => {
                    let partial = Partial {
                        home: home.clone(),
                        path,
                        renamed: false,
                    };
                    return Ok((partial, file.into_std()));
                }
                // Left behind by an agent that died with the same pid: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn rename_to(mut self, target: &Path) -> io::Result<()> {
        self.home.dir.rename(&self.path, &self.home.dir, target)?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.renamed {
            // One unlink, on whatever thread drops the upload: too short to hand elsewhere.
            let _ = self.home.dir.remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn homes() -> Vec<PathBuf> {
        vec!["/home/user".into(), "/data/user".into()]
    }

    #[track_caller]
    fn check(given: &str, want: Result<&str, &str>) {
        let got = relative(given, &homes()).map_err(|e| e.to_string());
        let got = got.as_ref().map(|p| p.to_str().unwrap()).map_err(String::as_str);
        assert_eq!(got, want, "{given:?}");
    }

    #[test]
    fn request_paths_become_relative_to_the_home() {
        check("", Ok("."));
        check(".", Ok("."));
        check("~", Ok("."));
        check("~/", Ok("."));
        check("~/notes/a.txt", Ok("notes/a.txt"));
        check("~//etc/passwd", Ok("etc/passwd"));
        check("notes/a.txt", Ok("notes/a.txt"));
        check("/home/user", Ok("."));
        check("/home/user/", Ok("."));
        check("/home/user/notes/a.txt", Ok("notes/a.txt"));
        check("/data/user/x", Ok("x"));
        // A name that starts with `~` is a name, as in a shell for an unknown user.
        check("~other/x", Ok("~other/x"));
        // `..` is resolved beneath the home where the path is used, not here.
        check("../etc/passwd", Ok("../etc/passwd"));
        check("/home/user/../other", Ok("../other"));
    }

    #[test]
    fn absolute_paths_outside_the_home_are_refused() {
        let refused = |p: &str| format!("path {p:?} leads outside the home");
        for p in ["/etc/passwd", "/home/user2/x", "/home", "/"] {
            check(p, Err(&refused(p)));
            assert!(matches!(
                relative(p, &homes()),
                Err(AgentError::PermissionDenied(_))
            ));
        }
    }

    #[test]
    fn bad_paths_are_invalid_arguments() {
        check("a\0b", Err("`path` contains a NUL byte"));
        let long = "a/".repeat(2049);
        check(&long, Err("`path` is 4098 bytes long; the limit is 4096"));
        check(&"a".repeat(MAX_PATH), Ok(&"a".repeat(MAX_PATH)));
        assert!(matches!(
            relative("a\0", &homes()),
            Err(AgentError::InvalidArgument(_))
        ));
    }

    /// cap-std's refusal is told apart from a real EACCES by having no errno: if a new
    /// cap-std changed that, escapes would read "permission denied" instead of the reason.
    #[test]
    fn an_escape_is_told_from_a_denied_open() {
        let scratch = std::env::temp_dir().join(format!("orgo-files-unit-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let dir = Dir::open_ambient_dir(&scratch, ambient_authority()).unwrap();
        let escape = dir.open("../x").unwrap_err();
        assert!(matches!(io_error("../x", escape), AgentError::PermissionDenied(m) if m.contains("outside")));
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(io_error("x", denied).to_string(), "permission denied: \"x\"");
        std::fs::remove_dir_all(&scratch).unwrap();
    }

    /// A reader answering at most `step` bytes a read, as a pipe or a slow disk may.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let n = self.step.min(buf.remaining()).min(self.data.len() - self.at);
            buf.put_slice(&self.data[self.at..][..n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn reads_fill_whole_chunks() {
        let data: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let mut slow = Trickle {
            data: data.clone(),
            at: 0,
            step: 3,
        };
        assert_eq!(fill(&mut slow, 400).await.unwrap(), data[..400]);
        assert_eq!(fill(&mut slow, 400).await.unwrap(), data[400..800]);
        assert_eq!(fill(&mut slow, 400).await.unwrap(), data[800..]);
        assert!(fill(&mut slow, 400).await.unwrap().is_empty());
    }
}
