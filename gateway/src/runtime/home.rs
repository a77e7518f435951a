//! A local desktop's home with a size limit, so one desktop cannot fill the gateway's disk.
//! A root gateway makes it an ext4 file system in a sparse image file (`home.img` beside the
//! home, taking only the space written and given back as files are deleted), loop-mounted
//! `nosuid,nodev` on the desktop's `home` directory while it runs: a full home is ENOSPC ("No
//! space left on device") inside, as on any full disk. The image is made at the first start,
//! a sparse copy of an empty file system of its size made once (`mkfs.ext4` of a 20 GiB image
//! takes ~50 ms, the copy ~5 ms; copies share the template's ext4 UUID, which nothing here
//! mounts by), its root then given to the desktop's user; it is grown (never shrunk) when a start asks for more;
//! a home from before images is copied into its image at the first start, then removed.
//! An ordinary user may not mount block devices (and FUSE needs a setuid `fusermount3`
//! not every machine has: this one's is not setuid), so an unprivileged gateway checks instead: the home is a plain directory whose
//! usage is measured every `CHECK_EVERY`, and a desktop whose home has grown past its limit (or
//! past what it held at start, if more) is stopped, with a warning in the gateway's log.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::RuntimeError;
use super::programs::{locate, require};

/// The kernel's ext4 block size the images use, in bytes.
const BLOCK: u64 = 4096;

/// How homes are mounted on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Homes {
    /// `mount -o loop`: the gateway is root. New images are copies of the empty file systems
    /// kept in `templates`, one per size.
    Kernel { templates: PathBuf },
    /// A plain directory whose usage `watch` checks: the gateway is an ordinary user.
    Checked,
}

/// Who owns a desktop's files, as host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Homes {
    /// The way this gateway can mount homes (templates kept under `data_dir`), or a sentence
    /// naming what to install or allow.
    pub fn detect(data_dir: &Path) -> anyhow::Result<Homes> {
        if nix::unistd::geteuid().is_root() {
            for program in ["mkfs.ext4", "e2fsck", "resize2fs"] {
                require(program, "e2fsprogs")?;
            }
            require("mount", "mount")?;
            require("losetup", "mount")?;
            return Ok(Homes::Kernel {
                templates: data_dir.join("home-templates"),
            });
        }
        tracing::warn!(
            "an unprivileged gateway cannot mount a size-limited file system for each desktop's home: \
             homes are measured every {}s instead, and a desktop whose home grows past its limit is stopped",
            CHECK_EVERY.as_secs()
        );
        Ok(Homes::Checked)
    }

    /// Mounts the home of the desktop whose files are in `desktop` (making or growing its image
    /// to `size_gb` GiB first) and answers the mounted directory; a checked home is the plain
    /// directory. A home still mounted (a gateway that ended without unmounting) is unmounted
    /// first, so the size applies.
    pub async fn mount(&self, desktop: &Path, size_gb: u32, owner: Owner) -> Result<PathBuf, RuntimeError> {
        let home = Homes::path(desktop);
        let Homes::Kernel { templates } = self else {
            std::fs::create_dir_all(&home).map_err(|e| failed("create the home", e))?;
            return Ok(home);
        };
        let image = desktop.join("home.img");
        if is_mounted(&home) {
            self.unmount(desktop).await;
        }
        released(&image).await?;
        let size = u64::from(size_gb) << 30;
        let old = desktop.join("home.old");
        if !image.exists() {
            if has_entries(&home) {
                std::fs::rename(&home, &old).map_err(|e| failed("keep the old home", e))?;
            }
            make(templates, &image, size).await?;
        } else if std::fs::metadata(&image)
            .map_err(|e| failed("read the home image", e))?
            .len()
            < size
        {
            grow(&image, size).await?;
        }
        std::fs::create_dir_all(&home).map_err(|e| failed("create the home", e))?;
        let options = "loop,nosuid,nodev,noatime,discard";
        let args: [&std::ffi::OsStr; 6] = [
            "-t".as_ref(),
            "ext4".as_ref(),
            "-o".as_ref(),
            options.as_ref(),
            image.as_os_str(),
            home.as_os_str(),
        ];
        run("mount", &args).await?;
        // mkfs's lost+found (and e2fsck's, after a grow), root's, would be the one thing in the
        // home the user cannot remove; e2fsck makes it again should it ever need it.
        let lost = home.join("lost+found");
        if std::fs::metadata(&lost).is_ok_and(|m| m.uid() == 0 && owner.uid != 0) {
            let _ = std::fs::remove_dir(&lost);
        }
        if std::fs::metadata(&home).is_ok_and(|m| m.uid() != owner.uid) {
            if has_entries(&home) {
                // Another desktop's files (a clone's copy of its source's home): made this
                // desktop user's, or they would be nobody's inside.
                let owner = format!("{}:{}", owner.uid, owner.gid);
                run("chown", &["-R".as_ref(), owner.as_ref(), home.as_os_str()]).await?;
            } else {
                // A new image: the template's root is root's.
                std::os::unix::fs::chown(&home, Some(owner.uid), Some(owner.gid))
                    .map_err(|e| failed("give the home to its user", e))?;
            }
        }
        if old.exists() {
            // Files from before images: into the image, owned by the desktop's user.
            let copied = format!("{}/.", old.display());
            run("cp", &["-a".as_ref(), copied.as_ref(), home.as_os_str()]).await?;
            let owner = format!("{}:{}", owner.uid, owner.gid);
            run("chown", &["-R".as_ref(), owner.as_ref(), home.as_os_str()]).await?;
            std::fs::remove_dir_all(&old).map_err(|e| failed("remove the old home", e))?;
        }
        Ok(home)
    }

    /// Where the home of the desktop whose files are in `desktop` is, mounted or not.
    pub fn path(desktop: &Path) -> PathBuf {
        desktop.join("home")
    }

    /// Copies the home of the desktop whose files are in `from` to a new desktop's `to`
    /// (nothing when it never started). An image in use is frozen (`fsfreeze`) while it is
    /// copied, so the copy is what its file system holds at one instant; sparse stays sparse.
    pub async fn copy(&self, from: &Path, to: &Path) -> Result<(), RuntimeError> {
        std::fs::create_dir_all(to).map_err(|e| failed("create the new desktop's dir", e))?;
        let home = Homes::path(from);
        if *self == Homes::Checked {
            if !home.exists() {
                return Ok(());
            }
            let copied = format!("{}/.", home.display());
            let target = to.join("home");
            std::fs::create_dir_all(&target).map_err(|e| failed("create the new home", e))?;
            return run("cp", &["-a".as_ref(), copied.as_ref(), target.as_os_str()]).await;
        }
        let image = from.join("home.img");
        if !image.exists() {
            return Ok(());
        }
        if !is_mounted(&home) {
            // Stopped: its file system's last writes land in the image once its lazy unmount
            // completes.
            released(&image).await?;
            return copy_image(&image, &to.join("home.img")).await;
        }
        // In a task of its own: a request dropped mid-copy (its client gone) must not leave the
        // source frozen, its every write hanging.
        let target = to.join("home.img");
        tokio::spawn(async move {
            run("fsfreeze", &["--freeze".as_ref(), home.as_os_str()]).await?;
            let copied = copy_image(&image, &target).await;
            let mut thawed = run("fsfreeze", &["--unfreeze".as_ref(), home.as_os_str()]).await;
            for _ in 0..THAW_TRIES {
                if thawed.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                thawed = run("fsfreeze", &["--unfreeze".as_ref(), home.as_os_str()]).await;
            }
            thawed?;
            copied
        })
        .await
        .map_err(|e| RuntimeError::Failed(format!("copying the home: {e}")))?
    }

    /// Unmounts the desktop's home, if mounted. A stopped desktop's last process may still be
    /// exiting, so a busy file system is retried for a while, then detached lazily (it goes
    /// once nothing uses it, and `mount` refuses to mount its image again until then).
    pub async fn unmount(&self, desktop: &Path) {
        let home = Homes::path(desktop);
        for attempt in 0..=UNMOUNT_TRIES {
            if *self == Homes::Checked || !is_mounted(&home) {
                return;
            }
            let lazy = attempt == UNMOUNT_TRIES;
            let args: &[&std::ffi::OsStr] = if lazy {
                &["-l".as_ref(), home.as_os_str()]
            } else {
                &[home.as_os_str()]
            };
            match run("umount", args).await {
                Ok(()) => return,
                Err(e) if lazy => {
                    tracing::warn!(error = %e, home = %home.display(), "cannot unmount a desktop's home")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// For a checked home: measures `home` every `CHECK_EVERY` and calls `over` once it holds
    /// more than `size_gb` GiB and more than it held now. `None` for a mounted home, which its
    /// file system limits. Abort the task when the desktop stops.
    pub fn watch(
        &self,
        home: PathBuf,
        size_gb: u32,
        over: impl FnOnce(u64) + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if *self != Homes::Checked {
            return None;
        }
        Some(tokio::spawn(async move {
            let measure = |home: PathBuf| async move {
                tokio::task::spawn_blocking(move || usage(&home))
                    .await
                    .unwrap_or(0)
            };
            let limit = (u64::from(size_gb) << 30).max(measure(home.clone()).await);
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                let used = measure(home.clone()).await;
                if used > limit {
                    over(used);
                    return;
                }
            }
        }))
    }
}

/// How often a checked home is measured.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long a mount waits, in 100 ms steps, for the previous run's image to be let go.
const RELEASE_WAIT_STEPS: u32 = 100;

/// How often a busy home is unmounted again, 100 ms apart, before it is detached lazily.
const UNMOUNT_TRIES: u32 = 30;

/// Makes `image` a sparse copy of an empty ext4 file system of `size` bytes (no blocks
/// reserved for root, inode tables initialised lazily by the kernel, root's root directory),
/// making that file system in `templates` first if this is the first image of its size. Two
/// first images of one size at once each make one; the last renamed into place is kept.
async fn make(templates: &Path, image: &Path, size: u64) -> Result<(), RuntimeError> {
    let template = templates.join(format!("ext4-{size}.img"));
    if !template.exists() {
        std::fs::create_dir_all(templates).map_err(|e| failed("create the templates' dir", e))?;
        let making = templates.join(format!("making-{}-{size}.img", rand::random::<u64>()));
        let file = std::fs::File::create(&making).map_err(|e| failed("create a home template", e))?;
        file.set_len(size)
            .map_err(|e| failed("size a home template", e))?;
        let made = run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-F".as_ref(),
                "-m".as_ref(),
                "0".as_ref(),
                "-E".as_ref(),
                "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1".as_ref(),
                making.as_os_str(),
            ],
        )
        .await
        .and_then(|()| std::fs::rename(&making, &template).map_err(|e| failed("keep a home template", e)));
        if made.is_err() {
            let _ = std::fs::remove_file(&making);
        }
        made?;
    }
    let copied = copy_image(&template, image).await;
    if copied.is_err() {
        let _ = std::fs::remove_file(image);
    }
    copied
}

/// Grows an unmounted image and its file system to `size` bytes.
async fn grow(image: &Path, size: u64) -> Result<(), RuntimeError> {
    // resize2fs insists on a freshly checked file system. e2fsck's 1 and 2 say it corrected
    // something (such as making lost+found again), 4 and up that it could not.
    let checked = Command::new(locate("e2fsck").unwrap_or_else(|| "e2fsck".into()))
        .args(["-f".as_ref(), "-p".as_ref(), image.as_os_str()])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| failed("run e2fsck", e))?;
    if !matches!(checked.status.code(), Some(0..=2)) {
        return Err(RuntimeError::Failed(format!(
            "the desktop's home needs repair that e2fsck -p cannot do ({}): {}",
            checked.status,
            String::from_utf8_lossy(&checked.stdout).trim()
        )));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .map_err(|e| failed("open the home image", e))?;
    file.set_len(size).map_err(|e| failed("grow the home image", e))?;
    let blocks = format!("{}", size / BLOCK);
    run("resize2fs", &[image.as_os_str(), blocks.as_ref()]).await
}

/// Whether a loop device (a home mounted here, or detached but still in use) backs `image`
/// (a canonical path): mounting it a second time would corrupt it. Read from each loop
/// device's `backing_file` in sysfs, as `losetup -j` does, without a process per start.
fn in_use(image: &Path) -> bool {
    let Ok(devices) = std::fs::read_dir("/sys/block") else {
        return false;
    };
    devices.flatten().any(|device| {
        std::fs::read_to_string(device.path().join("loop/backing_file"))
            .is_ok_and(|backing| Path::new(backing.trim_end_matches('\n')) == image)
    })
}

/// The bytes the files under `dir` take on its device (allocated blocks, so sparse files count
/// what they use; a file with several names once per name), not following symbolic links or other mounts.
fn usage(dir: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != top.dev() {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

/// Whether something is mounted on `dir`: it is on another device than its parent.
fn is_mounted(dir: &Path) -> bool {
    let parent = dir.parent().unwrap_or(dir);
    match (std::fs::metadata(dir), std::fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev(),
        _ => false,
    }
}

fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// Waits until no loop device holds `image`: a lazily unmounted home is let go (its last
/// writes in the image) once the previous run's last process is gone, so a start or copy right
/// after a stop waits for that rather than refusing or reading it half-written.
async fn released(image: &Path) -> Result<(), RuntimeError> {
    let mut waited = 0;
    while in_use(image) {
        if waited == RELEASE_WAIT_STEPS {
            return Err(RuntimeError::Busy(
                "the desktop's home is still in use by its previous run; try again in a moment".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    Ok(())
}

/// How many more times a frozen home is thawed after a failed try.
const THAW_TRIES: u32 = 20;

/// A home image copied sparse (only the blocks it uses take space).
async fn copy_image(image: &Path, target: &Path) -> Result<(), RuntimeError> {
    run(
        "cp",
        &["--sparse=always".as_ref(), image.as_os_str(), target.as_os_str()],
    )
    .await
}

async fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), RuntimeError> {
    let found = locate(program).unwrap_or_else(|| PathBuf::from(program));
    let out = Command::new(found)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| failed(&format!("run {program}"), e))?;
    if !out.status.success() {
        return Err(RuntimeError::Failed(format!(
            "the desktop's home: {program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn failed(what: &str, e: std::io::Error) -> RuntimeError {
    RuntimeError::Failed(format!("cannot {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A home from before images moves into its image, which grows and keeps its files across
    /// mounts. Needs root (loop devices); skipped otherwise.
    #[tokio::test]
    async fn an_old_home_moves_into_an_image_that_grows() {
        if !nix::unistd::geteuid().is_root() || Homes::detect(&std::env::temp_dir()).is_err() {
            eprintln!("skipped: needs root and e2fsprogs");
            return;
        }
        let desktop = std::env::temp_dir().join(format!("orgo-home-test-{}", std::process::id()));
        std::fs::create_dir_all(desktop.join("home/docs")).unwrap();
        std::fs::write(desktop.join("home/docs/note"), "kept").unwrap();
        let owner = Owner { uid: 4242, gid: 4243 };
        let homes = Homes::Kernel {
            templates: desktop.with_extension("templates"),
        };

        let home = homes.mount(&desktop, 1, owner).await.unwrap();
        assert!(is_mounted(&home));
        assert_eq!(std::fs::read_to_string(home.join("docs/note")).unwrap(), "kept");
        let meta = std::fs::metadata(home.join("docs/note")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4243));
        assert_eq!(std::fs::metadata(&home).unwrap().uid(), 4242);
        assert!(!desktop.join("home.old").exists() && !home.join("lost+found").exists());
        let size = |home: &Path| nix::sys::statvfs::statvfs(home).unwrap().blocks() * BLOCK;
        assert!(size(&home) <= 1 << 30);

        // Mounting again (still mounted: a gateway that ended) and larger grows it.
        let home = homes.mount(&desktop, 2, owner).await.unwrap();
        assert!(size(&home) > 1 << 30, "{}", size(&home));
        assert_eq!(std::fs::read_to_string(home.join("docs/note")).unwrap(), "kept");
        homes.unmount(&desktop).await;
        assert!(!is_mounted(&home));
        assert!(!home.join("docs").exists(), "the files are in the image only");
        std::fs::remove_dir_all(&desktop).unwrap();
        let _ = std::fs::remove_dir_all(desktop.with_extension("templates"));
    }

    /// New homes of one size are copies of one template: each empty, its own user's, and
    /// independent of the others and of the template. Needs root; skipped otherwise.
    #[tokio::test]
    async fn new_homes_are_independent_copies_of_a_template() {
        if !nix::unistd::geteuid().is_root() || Homes::detect(&std::env::temp_dir()).is_err() {
            eprintln!("skipped: needs root and e2fsprogs");
            return;
        }
        let base = std::env::temp_dir().join(format!("orgo-template-test-{}", std::process::id()));
        let homes = Homes::Kernel {
            templates: base.join("templates"),
        };
        let (a, b, c) = (base.join("a"), base.join("b"), base.join("c"));
        for desktop in [&a, &b, &c] {
            std::fs::create_dir_all(desktop).unwrap();
        }
        let home_a = homes.mount(&a, 1, Owner { uid: 4301, gid: 4301 }).await.unwrap();
        std::fs::write(home_a.join("mine"), "a").unwrap();
        let home_b = homes.mount(&b, 1, Owner { uid: 4302, gid: 4302 }).await.unwrap();
        let entries = |dir: &Path| std::fs::read_dir(dir).unwrap().count();
        assert_eq!(entries(&home_b), 0, "a new home is empty (no lost+found either)");
        assert_eq!(std::fs::metadata(&home_b).unwrap().uid(), 4302);
        assert_eq!(std::fs::metadata(&home_a).unwrap().uid(), 4301);
        let templates: Vec<_> = std::fs::read_dir(base.join("templates")).unwrap().collect();
        assert_eq!(templates.len(), 1, "one template for one size");
        homes.unmount(&a).await;
        homes.unmount(&b).await;
        let home_c = homes.mount(&c, 1, Owner { uid: 4303, gid: 4303 }).await.unwrap();
        assert_eq!(entries(&home_c), 0, "the template never holds a desktop's files");
        homes.unmount(&c).await;
        std::fs::remove_dir_all(&base).unwrap();
    }
}
