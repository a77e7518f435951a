//! The host programs the local runtime runs (bubblewrap, slirp4netns, the e2fsprogs and mount
//! tools), found on PATH or in the sbin directories an ordinary user's PATH may lack.

use std::path::PathBuf;

use anyhow::bail;

/// Where `program` is, if installed.
pub fn locate(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Refuses, naming the Debian package that provides it, when `program` is not installed.
pub fn require(program: &str, package: &str) -> anyhow::Result<PathBuf> {
    match locate(program) {
        Some(found) => Ok(found),
        None => bail!(
            "the local runtime needs {program}, which is not on PATH: install Debian's {package} package \
             (apt-get install {package})"
        ),
    }
}
