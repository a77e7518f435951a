//! `cargo xtask image`: the desktop images and the gateway's, built offline from Debian's
//! packages and imported into the Docker engine, rebuilt only when their inputs change.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::system::{ensure_packages, ensure_system_packages, output, root, run, target_dir};

/// The package names of a list file (comments and blank lines dropped).
pub fn package_list(path: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(root().join(path)).with_context(|| format!("cannot read {path}"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An image made as a Debian bookworm root filesystem by mmdebstrap from Debian's packages and
/// imported through the Docker Engine API: the one way every image of the project is made.
struct Rootfs {
    /// `repo:tag`.
    tag: String,
    /// Names the build's files under `target/image/`.
    name: String,
    /// mmdebstrap's variant: `apt` installs the packages with their scripts, `extract` only
    /// unpacks them (no package manager, no shell).
    variant: &'static str,
    packages: Vec<String>,
    /// mmdebstrap hooks, in order, once the packages are in.
    hooks: Vec<String>,
    /// Dockerfile instructions the import applies (`ENV`, `USER`, `ENTRYPOINT`, …).
    changes: Vec<String>,
    /// What else the image is made of (file contents, binaries' digests), hashed with the
    /// packages and the changes.
    inputs: Vec<String>,
}

impl Rootfs {
    /// Builds and imports the image, unless one of the same inputs (its hash label) is there.
    fn build(self) -> Result<()> {
        let Rootfs {
            tag,
            name,
            variant,
            packages,
            hooks,
            mut changes,
            inputs,
        } = self;
        let inputs_file = root().join(format!("target/image/{name}.inputs"));
        std::fs::create_dir_all(inputs_file.parent().context("no parent")?)?;
        let mut hashed = vec![packages.join(",")];
        hashed.extend(inputs);
        hashed.push(changes.join("\n"));
        std::fs::write(&inputs_file, hashed.join("\n"))?;
        let hash = digest(&inputs_file)?;
        let label = "{{index .Config.Labels \"orgo.image.hash\"}}";
        let existing = Command::new("docker")
            .args(["image", "inspect", "-f", label, &tag])
            .output();
        if existing.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == hash) {
            println!("{tag} is up to date");
            return Ok(());
        }

        let tar = root().join(format!("target/image/{name}.tar"));
        let mut args: Vec<String> = vec![
            format!("--variant={variant}"),
            format!("--include={}", packages.join(",")),
        ];
        for exclude in [
            "/usr/share/doc/*",
            "/usr/share/man/*",
            "/usr/share/locale/*",
            "/usr/share/info/*",
        ] {
            args.push(format!("--dpkgopt=path-exclude={exclude}"));
        }
        // The `extract` variant installs nothing, so it runs no customize hooks: its last are
        // the extract hooks.
        let stage = if variant == "extract" {
            "extract"
        } else {
            "customize"
        };
        args.extend(hooks.into_iter().map(|hook| format!("--{stage}-hook={hook}")));
        args.extend([
            "bookworm".into(),
            tar.display().to_string(),
            "http://deb.debian.org/debian".into(),
        ]);
        let started = std::time::Instant::now();
        run("mmdebstrap", &args.iter().map(String::as_str).collect::<Vec<_>>())?;

        changes.push(format!("LABEL orgo.image.hash={hash}"));
        let (repo, version) = tag.split_once(':').context("tag")?;
        let mut url = format!("http://localhost/v1.41/images/create?fromSrc=-&repo={repo}&tag={version}");
        for change in &changes {
            url.push_str("&changes=");
            url.push_str(&percent_encode(change));
        }
        // The Engine API's import reads a plain tar only with this content type.
        let data = format!("@{}", tar.display());
        let answer = output(
            "curl",
            &[
                "-sS",
                "--unix-socket",
                "/var/run/docker.sock",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/x-tar",
                "--data-binary",
                &data,
                &url,
            ],
        )?;
        if answer.contains("\"error") || answer.contains("\"message\"") {
            bail!("docker import failed: {answer}");
        }
        let _ = std::fs::remove_file(&tar);
        println!("built {tag} in {:.0} s", started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// A file's SHA-256, alone: where it lies (a binary's CARGO_TARGET_DIR) is no input.
fn digest(path: &Path) -> Result<String> {
    Ok(output("sha256sum", &[path.to_str().context("path")?])?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// A JSON array of strings, for `ENTRYPOINT`.
fn exec_form(args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", quoted.join(","))
}

/// Builds `orgo/desktop-<kind>:<version>`: the packages of its lists (`apt` variant), the Python
/// packages of `images/python-requirements.txt` from PyPI (exact versions, hashes checked) and
/// the release agent, with the agent as entrypoint.
pub fn image(kind: &str) -> Result<()> {
    ensure_system_packages()?;
    ensure_packages(&["mmdebstrap", "curl"])?;
    run("cargo", &["build", "--release", "-p", "orgo-agent"])?;
    let agent = target_dir().join("release/orgo-agent");
    let mut packages = package_list("images/desktop-minimal/packages.txt")?;
    if kind == "desktop" {
        packages.extend(package_list("images/desktop/packages.txt")?);
    }
    let wm = if kind == "desktop" {
        "xfce4-session"
    } else {
        "openbox"
    };
    let entrypoint = exec_form(&[
        "/usr/local/bin/orgo-agent",
        "--display",
        ":1",
        "--wm",
        wm,
        "--home",
        "/home/user",
        "--listen",
        "unix:///run/orgo/agent.sock",
    ]);
    let changes = vec![
        "ENV DISPLAY=:1".to_string(),
        "ENV HOME=/home/user".to_string(),
        // glibc's own spelling: `C.UTF-8` costs every process ~10 ms finding it.
        "ENV LANG=C.utf8".to_string(),
        "ENV ORGO_SPAWN_XVFB=1280x800x24".to_string(),
        "USER user".to_string(),
        "WORKDIR /home/user".to_string(),
        format!("ENTRYPOINT {entrypoint}"),
    ];
    let requirements = root().join("images/python-requirements.txt");
    // PyPI is reached with the host's CA bundle (a proxy may sign its certificates); the
    // variables matter because the host's own point at paths that mean the image's bundle inside.
    let ca = std::env::var("PIP_CERT")
        .or_else(|_| std::env::var("SSL_CERT_FILE"))
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    let ca_name = Path::new(&ca)
        .file_name()
        .and_then(|n| n.to_str())
        .context("CA file name")?
        .to_string();
    let hooks = vec![
        "chroot \"$1\" useradd -m -u 1000 -s /bin/bash user".to_string(),
        format!("copy-in {ca} /tmp"),
        format!("copy-in {} /tmp", requirements.display()),
        format!(
            "chroot \"$1\" env PIP_CERT=/tmp/{ca_name} REQUESTS_CA_BUNDLE=/tmp/{ca_name} \
             SSL_CERT_FILE=/tmp/{ca_name} python3 -m pip install -q --no-cache-dir \
             --break-system-packages --require-hashes -r /tmp/python-requirements.txt"
        ),
        "rm -rf \"$1\"/tmp/* \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*".to_string(),
        format!("copy-in {} /usr/local/bin", agent.display()),
    ];
    Rootfs {
        tag: format!("orgo/desktop-{kind}:{}", env!("CARGO_PKG_VERSION")),
        name: kind.to_string(),
        variant: "apt",
        packages,
        hooks,
        changes,
        inputs: vec![std::fs::read_to_string(&requirements)?, digest(&agent)?],
    }
    .build()
}

/// The gateway image's user: no account of the desktop images (uid 1000) nor of a usual host.
const GATEWAY_UID: u32 = 10001;

/// Builds `orgo/gateway:<version>`: the release `orgo-gateway` on nothing but the Debian
/// packages of the libraries it links (`images/gateway/packages.txt`, unpacked by the `extract`
/// variant: no shell, no package manager), as uid 10001 in `/var/lib/orgo`, `orgo-gateway
/// serve` the entrypoint. The new image has to answer `--version`, so a library missing from
/// the list fails the build, not a deployment.
pub fn gateway_image() -> Result<()> {
    ensure_packages(&["mmdebstrap", "curl", "binutils"])?;
    run("cargo", &["build", "--release", "-p", "orgo-gateway"])?;
    let gateway = target_dir().join("release/orgo-gateway");
    let uid = GATEWAY_UID;
    let hooks = vec![
        // No package's scripts ran: the files they would have made, the few the gateway reads.
        format!(
            "printf 'root:x:0:0:root:/root:/usr/sbin/nologin\\norgo:x:{uid}:{uid}:orgo:/var/lib/orgo:/usr/sbin/nologin\\n' > \"$1\"/etc/passwd"
        ),
        format!("printf 'root:x:0:\\norgo:x:{uid}:\\n' > \"$1\"/etc/group"),
        "mkdir -p -m 1777 \"$1\"/tmp".to_string(),
        format!("mkdir -p \"$1\"/var/lib/orgo && chown {uid}:{uid} \"$1\"/var/lib/orgo"),
        // glibc's iconv modules (8 MB): Rust does not use them.
        "rm -r \"$1\"/usr/lib/x86_64-linux-gnu/gconv".to_string(),
        "mkdir -p \"$1\"/usr/local/bin".to_string(),
        format!("copy-in {} /usr/local/bin", gateway.display()),
        // The release profile's line tables are 140 MB of the binary; its symbols stay, for
        // backtraces.
        "strip --strip-debug \"$1\"/usr/local/bin/orgo-gateway".to_string(),
    ];
    let changes = vec![
        // Its only program; an import sets no PATH (`kubectl exec … orgo-gateway keys` needs one).
        "ENV PATH=/usr/local/bin".to_string(),
        "ENV HOME=/var/lib/orgo".to_string(),
        format!("USER {uid}:{uid}"),
        // The data dir's default (`.orgo`) is relative: it lands in the user's own directory.
        "WORKDIR /var/lib/orgo".to_string(),
        format!(
            "ENTRYPOINT {}",
            exec_form(&["/usr/local/bin/orgo-gateway", "serve"])
        ),
    ];
    let tag = format!("orgo/gateway:{}", env!("CARGO_PKG_VERSION"));
    Rootfs {
        tag: tag.clone(),
        name: "gateway".into(),
        variant: "extract",
        packages: package_list("images/gateway/packages.txt")?,
        hooks,
        changes,
        inputs: vec![digest(&gateway)?],
    }
    .build()?;
    let version = output(
        "docker",
        &[
            "run",
            "--rm",
            "--entrypoint",
            "/usr/local/bin/orgo-gateway",
            &tag,
            "--version",
        ],
    )
    .with_context(|| {
        format!("{tag} does not run orgo-gateway: a library missing from images/gateway/packages.txt?")
    })?;
    println!("{tag}: {}", version.trim());
    Ok(())
}
