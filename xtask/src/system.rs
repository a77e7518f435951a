//! Running programs from the workspace root and installing the Debian packages the project
//! needs on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages the build, the tests and the benchmarks need, and the programs and fonts
/// local desktops use from the host (the fonts as in `images/desktop-minimal/packages.txt`).
pub const SYSTEM_PACKAGES: &[&str] = &[
    "pkg-config",
    "libturbojpeg0-dev",
    "xvfb",
    "openbox",
    "xterm",
    "python3-tk",
    "x11-utils",
    "x11-xkb-utils",
    "x11-xserver-utils",
    "xdotool",
    "scrot",
    "python3",
    "procps",
    "bubblewrap",
    "fonts-dejavu-core",
    "xfonts-base",
    "fonts-wqy-microhei",
    "fonts-noto-color-emoji",
    // The local sandbox's user-mode network.
    "slirp4netns",
    // Desktop homes are ext4 images (mkfs.ext4, e2fsck, resize2fs).
    "e2fsprogs",
    // What the sandbox's escape probes try from inside a desktop (and `pip install --user`).
    "iptables",
    "iproute2",
    "kmod",
    "python3-pip",
    // The shared store's tests run throw-away PostgreSQL clusters.
    "postgresql-15",
];

/// The real browser the live view's tests and benchmark drive.
pub const BROWSER_PACKAGES: &[&str] = &["chromium", "chromium-driver"];

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` (relative to the workspace root, where
/// cargo runs) or `target/`.
pub fn target_dir() -> PathBuf {
    root().join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
}

/// Runs a command in the workspace root, failing with its command line if it fails.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    run_with(program, args, &[])
}

/// `run` with extra environment variables.
pub fn run_with(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    run_in(&root(), program, args, env)
}

/// `run_with` in another directory, for tools that write where they run (`apt-get source`).
pub fn run_in(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Output of a command, failing with its stderr.
pub fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the missing system packages when running as root; otherwise says the one command
/// to run.
pub fn ensure_system_packages() -> Result<()> {
    ensure_packages(SYSTEM_PACKAGES)?;
    open_user_devices()
}

/// Gives /dev/net/tun the mode Debian's udev rules give it (crw-rw-rw-), as root, where a
/// machine without udev left it root's: an ordinary-user gateway's local desktops need it
/// (slirp4netns), and the tests run one.
fn open_user_devices() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        return Ok(());
    }
    for device in ["/dev/net/tun"] {
        let Ok(meta) = std::fs::metadata(device) else {
            continue;
        };
        if meta.permissions().mode() & 0o666 != 0o666 {
            eprintln!("xtask: making {device} crw-rw-rw-, as Debian's udev does");
            std::fs::set_permissions(device, std::fs::Permissions::from_mode(0o666))
                .with_context(|| format!("cannot chmod {device}"))?;
        }
    }
    Ok(())
}

/// Installs those of `packages` that are missing (as root), or says the command to run.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() {
        bail!(
            "missing system packages: {}\nrun as root: {command}",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(
        "bash",
        &["-c", &format!("export DEBIAN_FRONTEND=noninteractive; {command}")],
    )
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}
