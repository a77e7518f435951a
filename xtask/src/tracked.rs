//! What git tracks: no build output. cargo's `target/` and any other build directory
//! (`target-bench/`, `fuzz/target/`, …) must stay out of the index, or every clone carries
//! binaries and object files (once 95 % of the packed repository).

/// Whether a tracked path lies under a build directory: a directory named `target` or
/// `target-<anything>` at any depth (`fuzz/fuzz_targets/` is source, not output).
pub fn is_build_output(path: &str) -> bool {
    let mut dirs = path.split('/').rev().skip(1);
    dirs.any(|dir| dir == "target" || dir.starts_with("target-"))
}

#[cfg(test)]
mod tests {
    use super::is_build_output;
    use crate::system::root;

    #[test]
    fn build_directories_are_recognised_at_any_depth() {
        for output in [
            "target/debug/orgo-agent",
            "target-bench/debug/.fingerprint/x.json",
            "fuzz/target/x86_64-unknown-linux-gnu/release/key_combo",
            "agent/target/release/build/x/out.o",
        ] {
            assert!(is_build_output(output), "{output} is build output");
        }
        for source in [
            "fuzz/fuzz_targets/key_combo.rs",
            "xtask/src/main.rs",
            "target",
            "docs/targets.md",
            "gateway/src/target-notes.md",
        ] {
            assert!(!is_build_output(source), "{source} is not build output");
        }
    }

    /// Fails when a commit adds build output to the index. Outside a git checkout (a source
    /// tarball) there is no index to check.
    #[test]
    fn no_tracked_file_is_build_output() {
        if !root().join(".git").exists() {
            eprintln!("not a git checkout: nothing tracked to check");
            return;
        }
        let out = std::process::Command::new("git")
            .args(["ls-files", "-z"])
            .current_dir(root())
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git ls-files failed");
        let listed = String::from_utf8_lossy(&out.stdout);
        let tracked: Vec<&str> = listed.split('\0').filter(|p| !p.is_empty()).collect();
        assert!(tracked.len() > 10, "git ls-files listed {} files", tracked.len());
        let built: Vec<&&str> = tracked.iter().filter(|p| is_build_output(p)).collect();
        assert!(
            built.is_empty(),
            "build output is tracked (git rm -r --cached it; .gitignore has /target*): {:?}",
            &built[..built.len().min(10)]
        );
    }
}
