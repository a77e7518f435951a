//! `cargo xtask image`: desktop images built offline from Debian's packages and imported into
//! the Docker engine, rebuilt only when their inputs change.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::system::{ensure_packages, ensure_system_packages, output, root, run};

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

/// Builds `orgo/desktop-<kind>:<version>`: a Debian bookworm root filesystem made by mmdebstrap
/// from Debian's packages, the Python packages of `images/python-requirements.txt` from PyPI
/// (exact versions, hashes checked), the release agent, imported through the Docker Engine API
/// with the agent as entrypoint. Skipped when an image of the same inputs (its hash label) is
/// already there.
pub fn image(kind: &str) -> Result<()> {
    ensure_system_packages()?;
    ensure_packages(&["mmdebstrap", "curl"])?;
    run("cargo", &["build", "--release", "-p", "orgo-agent"])?;
    let mut packages = package_list("images/desktop-minimal/packages.txt")?;
    if kind == "desktop" {
        packages.extend(package_list("images/desktop/packages.txt")?);
    }
    let wm = if kind == "desktop" {
        "xfce4-session"
    } else {
        "openbox"
    };
    let entrypoint = [
        "/usr/local/bin/orgo-agent",
        "--display",
        ":1",
        "--wm",
        wm,
        "--home",
        "/home/user",
        "--listen",
        "unix:///run/orgo/agent.sock",
    ]
    .map(|a| format!("\"{a}\""))
    .join(",");
    let mut changes = vec![
        "ENV DISPLAY=:1".to_string(),
        "ENV HOME=/home/user".to_string(),
        // glibc's own spelling: `C.UTF-8` costs every process ~10 ms finding it.
        "ENV LANG=C.utf8".to_string(),
        "ENV ORGO_SPAWN_XVFB=1280x800x24".to_string(),
        "USER user".to_string(),
        "WORKDIR /home/user".to_string(),
        format!("ENTRYPOINT [{entrypoint}]"),
    ];
    let inputs = root().join(format!("target/image/{kind}.inputs"));
    std::fs::create_dir_all(inputs.parent().context("no parent")?)?;
    let requirements = root().join("images/python-requirements.txt");
    std::fs::write(
        &inputs,
        [
            packages.join(","),
            std::fs::read_to_string(&requirements)?,
            output("sha256sum", &["target/release/orgo-agent"])?,
            changes.join("\n"),
        ]
        .join("\n"),
    )?;
    let hash = output("sha256sum", &[inputs.to_str().context("path")?])?;
    let hash = hash.split_whitespace().next().unwrap_or_default().to_string();
    let tag = format!("orgo/desktop-{kind}:{}", env!("CARGO_PKG_VERSION"));
    let label = "{{index .Config.Labels \"orgo.image.hash\"}}";
    let existing = Command::new("docker")
        .args(["image", "inspect", "-f", label, &tag])
        .output();
    if existing.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == hash) {
        println!("{tag} is up to date");
        return Ok(());
    }

    let tar = root().join(format!("target/image/{kind}.tar"));
    let agent = root().join("target/release/orgo-agent");
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
    let mut args: Vec<String> = vec![
        "--variant=apt".into(),
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
    for hook in [
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
    ] {
        args.push(format!("--customize-hook={hook}"));
    }
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
