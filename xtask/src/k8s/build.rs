//! The test cluster's binaries, built once from Debian bookworm's packages and cached by version:
//! kube-apiserver, kube-scheduler, kube-controller-manager, kubelet and kubectl from the
//! `kubernetes` source package (Debian ships no server binaries), etcd from `etcd-server`, and the
//! pod sandbox's `pause` from the same source tree (no registry to pull it from).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::system::{ensure_packages, run_in};

/// The `kubernetes` source package (1.20.2 with Debian's patches): the last Kubernetes Debian
/// packaged, and the last whose kubelet still has dockershim, which the nodes rely on.
pub const KUBERNETES: &str = "1.20.5+really1.20.2-1.1+deb12u1";
/// Go for the build: bookworm's 1.19, which builds 1.20.2's GOPATH tree as Debian's rules do.
const GO: &str = "1.19.8-2";
const ETCD: &str = "3.4.23-4+b4";
const CACHE: &str = "/var/cache/orgo-k8s";
/// The commands built from the source tree, all static (CGO_ENABLED=0).
const COMMANDS: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kubectl",
];
/// Written last: a cache directory without it is a half build and is done again.
const MARKER: &str = "complete";

/// Where the binaries of this version are.
pub struct Binaries(PathBuf);

impl Binaries {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.0.join("bin").join(name)
    }
}

/// This version's binaries if they are built.
pub fn cached() -> Option<Binaries> {
    let dir = Path::new(CACHE).join(KUBERNETES);
    dir.join(MARKER).exists().then_some(Binaries(dir))
}

/// The cached binaries, building them first if this version's cache is missing or half done.
pub fn binaries() -> Result<Binaries> {
    if let Some(binaries) = cached() {
        return Ok(binaries);
    }
    let dir = Path::new(CACHE).join(KUBERNETES);
    let started = std::time::Instant::now();
    eprintln!(
        "xtask: building Kubernetes {KUBERNETES} into {} (once; 10-15 min of CPU)",
        dir.display()
    );
    ensure_packages(&["rsync", "jq", "make", "gcc", "libc6-dev", "dpkg-dev"])?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).context("cannot clear the half-built cache")?;
    }
    let work = dir.join("work");
    let apt = Apt::new(&work.join("apt"))?;
    eprintln!("xtask: fetching the kubernetes source package");
    apt.run(&work, &["update"])?;
    let src = work.join("src");
    std::fs::create_dir_all(&src)?;
    apt.run(
        &src,
        &["source", "--download-only", &format!("kubernetes={KUBERNETES}")],
    )?;
    let dsc = src.join(format!("kubernetes_{KUBERNETES}.dsc"));
    let version = std::fs::read_to_string(&dsc)
        .with_context(|| format!("no {}", dsc.display()))?
        .lines()
        .find_map(|l| l.strip_prefix("Version: ").map(str::to_string))
        .context("no Version in the .dsc")?;
    if version != KUBERNETES {
        bail!("fetched kubernetes {version}, expected {KUBERNETES}");
    }
    let tree = work.join("kubernetes");
    run_in(&src, "dpkg-source", &["-x", path(&dsc)?, path(&tree)?], &[])?;

    eprintln!("xtask: fetching Go {GO} and etcd {ETCD}");
    let debs = work.join("debs");
    std::fs::create_dir_all(&debs)?;
    apt.run(
        &debs,
        &[
            "download",
            &format!("golang-1.19-go={GO}"),
            &format!("golang-1.19-src={GO}"),
            &format!("etcd-server={ETCD}"),
        ],
    )?;
    let unpacked = work.join("root");
    for deb in std::fs::read_dir(&debs)? {
        run_in(&work, "dpkg", &["-x", path(&deb?.path())?, path(&unpacked)?], &[])?;
    }

    eprintln!("xtask: building {} (niced)", COMMANDS.join(", "));
    let goroot = unpacked.join("usr/lib/go-1.19");
    let search = format!(
        "{}:{}",
        goroot.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let what = COMMANDS
        .iter()
        .map(|c| format!("cmd/{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    // Kubernetes' make sets GOPATH (and the Go cache) under _output/ itself and builds in GOPATH
    // mode with the vendored tree, running the code generators a plain `go build` would miss.
    run_in(
        &tree,
        "nice",
        &["-n", "19", "make", &format!("WHAT={what}")],
        &[
            ("GOROOT", path(&goroot)?),
            ("PATH", &search),
            ("CGO_ENABLED", "0"),
            ("GOFLAGS", ""),
            ("GOPROXY", "off"),
        ],
    )?;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    for command in COMMANDS {
        copy(&tree.join("_output/bin").join(command), &bin.join(command))?;
    }
    copy(&unpacked.join("usr/bin/etcd"), &bin.join("etcd"))?;
    // As build/pause/Makefile does, minus its Docker build container.
    run_in(
        &tree,
        "gcc",
        &[
            "-Os",
            "-Wall",
            "-Werror",
            "-static",
            "-DVERSION=v3.2-orgo",
            "-o",
            path(&bin.join("pause"))?,
            "build/pause/linux/pause.c",
        ],
        &[],
    )?;
    // The source tree with its Go cache (_output/go/cache) is over 3 GB; only bin/ is kept.
    std::fs::remove_dir_all(&work).context("cannot remove the build tree")?;
    std::fs::write(dir.join(MARKER), format!("{KUBERNETES}\n"))?;
    eprintln!(
        "xtask: built Kubernetes {KUBERNETES} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Binaries(dir))
}

/// apt with a private source list, package lists and cache beside the build, so the machine's
/// apt configuration and state are neither read for sources nor changed.
struct Apt {
    options: Vec<String>,
}

impl Apt {
    fn new(dir: &Path) -> Result<Apt> {
        let lists = dir.join("lists");
        std::fs::create_dir_all(lists.join("partial"))?;
        std::fs::create_dir_all(dir.join("cache/archives/partial"))?;
        let sources = dir.join("sources.list");
        let mut text = String::new();
        for (uri, suite) in debian_mirrors() {
            for kind in ["deb", "deb-src"] {
                text.push_str(&format!(
                    "{kind} [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {uri} {suite} main\n"
                ));
            }
        }
        std::fs::write(&sources, text)?;
        Ok(Apt {
            options: vec![
                format!("Dir::Etc::SourceList={}", sources.display()),
                "Dir::Etc::SourceParts=/dev/null".into(),
                format!("Dir::State::Lists={}", lists.display()),
                format!("Dir::Cache={}", dir.join("cache").display()),
                // The private directories are root's; apt's _apt sandbox user could not write them.
                "APT::Sandbox::User=root".into(),
            ],
        })
    }

    fn run(&self, dir: &Path, args: &[&str]) -> Result<()> {
        let mut all: Vec<&str> = Vec::new();
        for option in &self.options {
            all.extend(["-o", option]);
        }
        all.extend(["-q", "-y"]);
        all.extend(args);
        run_in(dir, "apt-get", &all, &[])
    }
}

/// The Debian bookworm mirrors (URI, suite) the machine's apt sources use, so a machine behind
/// its own mirror fetches from it; deb.debian.org when none are found.
fn debian_mirrors() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if file.extension().is_some_and(|e| e == "sources") {
            // deb822 stanzas: "Types:", "URIs:", "Suites:" fields, blank-line separated.
            for stanza in text.split("\n\n") {
                let field = |name: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
                        .unwrap_or_default()
                };
                if !field("Types:").iter().any(|t| t == "deb") {
                    continue;
                }
                for uri in field("URIs:") {
                    for suite in field("Suites:") {
                        found.push((uri.clone(), suite));
                    }
                }
            }
        } else {
            // One-line entries: "deb [options] URI suite components".
            for line in text.lines() {
                let Some(rest) = line.trim().strip_prefix("deb ") else {
                    continue;
                };
                let rest = match rest.trim_start().strip_prefix('[') {
                    Some(options) => options.split_once(']').map_or("", |(_, r)| r),
                    None => rest,
                };
                let mut words = rest.split_whitespace();
                if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
                    found.push((uri.to_string(), suite.to_string()));
                }
            }
        }
    }
    found.retain(|(uri, suite)| uri.contains("debian") && suite.starts_with("bookworm"));
    found.dedup();
    if found.is_empty() {
        found = ["bookworm", "bookworm-updates"]
            .map(|s| ("http://deb.debian.org/debian".to_string(), s.to_string()))
            .to_vec();
    }
    found
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

pub fn path(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("not UTF-8: {}", p.display()))
}
