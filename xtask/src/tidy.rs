//! Tidy: tests that read the repository's own files, in the manner of rust-analyzer's
//! `xtask/src/tidy.rs` — plain `#[test]`s, so `cargo test --workspace` fails the day the docs and
//! the code drift apart or the repository collects what it should not hold. They need nothing
//! but the checkout: git lists the files (what it tracks, and new files it does not ignore);
//! outside a git checkout the tree is walked, build directories skipped.
//!
//! What they hold, and the conventions the docs follow so it can be checked:
//!
//! - **Every Rust file opens with a `//!` comment** (its first non-empty line) saying what it is.
//! - **Nothing built is tracked**: no path under a directory `target/` or `target-*/` at any
//!   depth, `fuzz/corpus/`, `fuzz/artifacts/`, `fuzz/coverage/`, `.orgo/`, `.schemathesis/`,
//!   `__pycache__/` or `node_modules/`, and no `*.pyc`.
//! - **ARCHITECTURE.md's code map is the module tree.** The map is the list under `## Code map`,
//!   one top-level bullet per directory: ``- `gateway/` — …``. Under a crate's bullet (`proto/`,
//!   `agent/`, `gateway/`, `xtask/`):
//!   - a crate with nested bullets gives every top-level module (`src/x.rs`, `src/x/mod.rs`) a
//!     bullet of its own, ``  - `x` — …``, and names every submodule (`src/x/y.rs`) in backticks in
//!     its parent's bullet, `` `y` `` (or anywhere under the crate as `` `x::y` ``);
//!   - a crate without nested bullets (`proto/`, `xtask/`) names its modules in backticks in its
//!     own bullet;
//!   - a backticked lower-case identifier in a crate's or a module's bullet is a module: a
//!     submodule of the bullet's module or a module of the crate. A word that is not one goes
//!     without backticks or into [`NOT_MODULES`]. Bullets whose head is a path (`tests/`,
//!     `openapi.json`) are about files and may name anything;
//!   - a backticked path (one with a `/` or a file extension) exists, relative to the bullet's
//!     module directory, the crate's `src/` or directory, the directory of the path named before
//!     it in the same bullet (`tests/faults.rs`, `frozen_agent.rs`) or the repository root; this
//!     holds in every top-level bullet.
//!
//!   A failure names the module the map lacks, or the name in the map that is no module.
//! - **No module cycles**: in `agent` and `gateway`, no top-level module reaches itself through
//!   the `crate::…` paths its code (not its comments or test module) names.
//! - **What the docs take from code**:
//!   - `ORGO_*` variables: every one the gateway reads (`var("ORGO_…")` in `gateway/src`) is in
//!     README.md and in `serve --help` (the doc comment of `Serve` in `gateway/src/main.rs`), which
//!     names no other; every one the agent reads (`var("ORGO_…")`, or clap's `env = "ORGO_…"`, in
//!     `agent/src`) is in README.md and its `--help` (`agent/src/cli.rs`); README.md names none
//!     that neither reads; a variable RELIABILITY.md or ARCHITECTURE.md names is a string some
//!     Rust file of the repository uses.
//!   - Defaults: what README.md states of the gateway's config matches `Config::default()`, read
//!     from the source of `gateway/src/config.rs`. README.md states a default as ``… `ORGO_X`,
//!     default `value` `` (or `` `ORGO_X`, `value` `` in a list of overrides); as a config key in
//!     backticks followed by a parenthesis in which one of the `,`/`;`-separated parts is the bare
//!     number (``` `disk_size_gb` (the size limit of …, 10; …) ```, `` `max_body_bytes` (2 MiB; …)
//!     ``, and for a plan's key `` `idle_stop_seconds` (free: 1800) ``); as
//!     `` `key = "value"`, the default ``; and in the sentences [`README_CLAIMS`] quotes.
//!   - Fuzzing: the examples and workers of `cargo xtask fuzz-api` and `--long`, the seconds of
//!     `fuzz-parsers`, in the sentences [`README_CLAIMS`], [`RELIABILITY_CLAIMS`] and
//!     [`USAGE_CLAIMS`] quote, against `xtask/src/fuzz.rs`; its targets against
//!     `fuzz/fuzz_targets/`, `fuzz/Cargo.toml` and RELIABILITY.md's list of them.
//!
//!   A quoted sentence has `{…}` holes that the code fills; a sentence no longer found in its
//!   document fails the test too, so a claim is rewritten with the sentence it quotes.
//!
//! Code is read from its source text: a change of shape this cannot follow (a default it cannot
//! evaluate, a constant no longer where it was) fails with a message, never passes in silence.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::system::root;

/// The crates whose modules ARCHITECTURE.md's code map lists.
const CRATES: &[&str] = &["proto", "agent", "gateway", "xtask"];

/// Backticked lower-case words in a crate's part of the code map that are not its modules:
/// (crate, word).
const NOT_MODULES: &[(&str, &str)] = &[
    // "a vendored `protoc`": the protobuf compiler.
    ("proto", "protoc"),
    // "a thin `main.rs` (`serve`, `keys`)": the binary's subcommands.
    ("gateway", "serve"),
    ("gateway", "keys"),
];

/// Sentences of README.md, with holes the code fills (see the module's doc).
const README_CLAIMS: &[&str] = &[
    "the default `{default_plan}` plan is the seed's ({plans.free.max_desktops} running desktops, \
     {plans.free.max_ram_gb} GB and {plans.free.max_cpu} cores in all), `pro` allows \
     {plans.pro.max_desktops} desktops, {plans.pro.max_ram_gb} GB and {plans.pro.max_cpu} cores",
    "`requests_per_second` per key — free {plans.free.requests_per_second}, pro \
     {plans.pro.requests_per_second}, bursts",
    "on the nightly toolchain; {fuzz.parsers_seconds} s each in `ci`)",
];

/// Sentences of RELIABILITY.md, with holes the code fills.
const RELIABILITY_CLAIMS: &[&str] = &[
    "use after free, …), {fuzz.short.workers} workers.",
    "The short run ({fuzz.short.examples} examples per operation) is part of `cargo xtask ci`; \
     `--long` takes {fuzz.long.examples} per operation with {fuzz.long.workers} workers.",
    "dictionaries in `fuzz/dicts/`), {fuzz.parsers_seconds} s per target in `cargo xtask ci`",
];

/// Sentences of `cargo xtask help` (`USAGE` in `xtask/src/main.rs`), with holes the code fills.
const USAGE_CLAIMS: &[&str] = &["N seconds each ({fuzz.parsers_seconds}, as in ci)"];

// The files.

/// Repository-relative paths, with `/`, of the files to check: what git tracks and new files it
/// does not ignore; outside a git checkout, the tree without build directories.
fn files() -> Vec<String> {
    let root = root();
    let mut files = match git_files(&["--cached", "--others", "--exclude-standard"]) {
        // A file deleted but not yet `git rm`ed is still listed.
        Some(files) => files.into_iter().filter(|f| root.join(f).is_file()).collect(),
        None => {
            eprintln!("no git: walking the tree instead");
            let mut files = Vec::new();
            walk(&root, "", &mut files);
            files
        }
    };
    files.sort();
    assert!(
        files.len() > 10,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    files
}

/// `git ls-files -z ARGS` in the repository, or `None` outside a git checkout or without git.
fn git_files(args: &[&str]) -> Option<Vec<String>> {
    if !root().join(".git").exists() {
        return None;
    }
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .args(args)
        .current_dir(root())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("git ls-files failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let listed = String::from_utf8_lossy(&out.stdout);
    Some(
        listed
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect(),
    )
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && name != ".git" && !is_build_output(&format!("{path}/x")) {
            walk(&entry.path(), &path, out);
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The text with every run of whitespace made one space: docs wrap their sentences anywhere.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

// 1. Doc comments.

#[test]
fn every_rust_file_opens_with_a_doc_comment() {
    let bare: Vec<String> = files()
        .into_iter()
        .filter(|f| f.ends_with(".rs") && !opens_with_doc_comment(&read(f)))
        .collect();
    assert!(
        bare.is_empty(),
        "these files do not open with a `//!` comment saying what they are: {bare:?}"
    );
}

fn opens_with_doc_comment(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with("//!"))
}

// 2. Build output.

/// Directories, at any depth, that hold only what a build or a tool made.
const BUILD_DIRS: &[&str] = &["__pycache__", "node_modules"];

/// Directories of the repository that hold only what a run made (fuzzing corpora and crashes,
/// the dev gateway's data and key, schemathesis' cache).
const BUILD_ROOTS: &[&str] = &[
    "fuzz/corpus/",
    "fuzz/artifacts/",
    "fuzz/coverage/",
    ".orgo/",
    ".schemathesis/",
];

/// Whether a path lies under a build directory — one named `target` or `target-<anything>` at
/// any depth (`fuzz/fuzz_targets/` is source), or one of [`BUILD_DIRS`] or [`BUILD_ROOTS`] — or
/// is compiled Python.
fn is_build_output(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let (file, dirs) = parts.split_last().expect("split gives one part at least");
    dirs.iter()
        .any(|d| *d == "target" || d.starts_with("target-") || BUILD_DIRS.contains(d))
        || BUILD_ROOTS.iter().any(|r| path.starts_with(r))
        || file.ends_with(".pyc")
}

/// Fails when a commit adds build output to the index, or every clone carries binaries and
/// object files (once 95 % of the packed repository). Outside a git checkout (a source tarball)
/// there is no index to check.
#[test]
fn no_tracked_file_is_build_output() {
    let Some(tracked) = git_files(&["--cached"]) else {
        eprintln!("no git checkout (or no git): nothing tracked to check");
        return;
    };
    assert!(tracked.len() > 10, "git ls-files listed {} files", tracked.len());
    let built: Vec<&String> = tracked.iter().filter(|p| is_build_output(p)).collect();
    assert!(
        built.is_empty(),
        "build output is tracked (git rm -r --cached it; .gitignore has /target*): {:?}",
        &built[..built.len().min(10)]
    );
}

#[test]
fn build_output_is_recognised_at_any_depth() {
    for output in [
        "target/debug/orgo-agent",
        "target-bench/debug/.fingerprint/x.json",
        "fuzz/target/x86_64-unknown-linux-gnu/release/key_combo",
        "agent/target/release/build/x/out.o",
        "fuzz/corpus/key_combo/0a1b",
        "fuzz/artifacts/type_plan/crash-1",
        ".orgo/dev-key",
        "gateway/tests/__pycache__/sdk_check.cpython-312.pyc",
        "gateway/tests/sdk_check.pyc",
        "viewer/node_modules/x/index.js",
    ] {
        assert!(is_build_output(output), "{output} is build output");
    }
    for source in [
        "fuzz/fuzz_targets/key_combo.rs",
        "fuzz/dicts/key_combo.dict",
        "xtask/src/main.rs",
        "target",
        "docs/targets.md",
        "gateway/src/target-notes.md",
        "gateway/tests/sdk_check.py",
    ] {
        assert!(!is_build_output(source), "{source} is not build output");
    }
}

// 3. The code map.

#[test]
fn code_map_names_every_module_and_only_modules() {
    let problems = check_code_map(&read("ARCHITECTURE.md"), &files());
    assert!(
        problems.is_empty(),
        "ARCHITECTURE.md's code map and the source tree disagree (the map's convention is in \
         xtask/src/tidy.rs):\n- {}",
        problems.join("\n- ")
    );
}

/// A bullet of the code map: its head (the backticked name it opens with), its whole text (lines
/// joined) and its nested bullets.
#[derive(Debug)]
struct Bullet {
    head: String,
    text: String,
    children: Vec<Bullet>,
}

/// The bullets under `## Code map`, two levels deep.
fn code_map(md: &str) -> Result<Vec<Bullet>, String> {
    let mut lines = md.lines().skip_while(|l| l.trim_end() != "## Code map");
    if lines.next().is_none() {
        return Err("ARCHITECTURE.md has no `## Code map` section".into());
    }
    let mut bullets: Vec<Bullet> = Vec::new();
    // Where continuation lines go: the last bullet, or its last nested bullet; none after a
    // paragraph.
    let mut current: Option<bool> = None;
    for line in lines.take_while(|l| !l.starts_with("## ")) {
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if body.is_empty() {
            continue;
        }
        if let Some(item) = body.strip_prefix("- ") {
            let head = item
                .strip_prefix('`')
                .and_then(|rest| rest.split_once('`'))
                .map(|(head, _)| head.to_string())
                .ok_or_else(|| {
                    format!("the code map bullet {body:?} does not open with a backticked name")
                })?;
            let bullet = Bullet {
                head,
                text: item.to_string(),
                children: Vec::new(),
            };
            match (indent, bullets.last_mut()) {
                (0, _) => {
                    bullets.push(bullet);
                    current = Some(false);
                }
                (2, Some(parent)) => {
                    parent.children.push(bullet);
                    current = Some(true);
                }
                _ => {
                    return Err(format!(
                        "the code map bullet {body:?} is nested deeper than two levels"
                    ));
                }
            }
        } else if indent == 0 {
            current = None;
        } else {
            let target = match (current, bullets.last_mut()) {
                (Some(true), Some(parent)) => parent.children.last_mut(),
                (Some(false), parent) => parent,
                _ => None,
            };
            if let Some(bullet) = target {
                bullet.text.push(' ');
                bullet.text.push_str(body);
            }
        }
    }
    Ok(bullets)
}

/// The backticked spans of a text.
fn backticked(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// A name a module may have (not a keyword: "the one `unsafe` module").
fn is_ident(s: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
        "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
        "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
        "while",
    ];
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !KEYWORDS.contains(&s)
}

/// `a::b`, every part a module name.
fn is_mod_path(s: &str) -> bool {
    s.contains("::") && s.split("::").all(is_ident)
}

/// A repository path: a `/` or a file extension, none of what prose and commands have.
fn is_path(s: &str) -> bool {
    const EXTENSIONS: &[&str] = &[
        "rs", "py", "json", "html", "toml", "proto", "txt", "sh", "md", "in", "dict", "lock",
    ];
    let plain = !s.is_empty()
        && !s.starts_with(['/', '-', '.'])
        && !s.contains(|c: char| c.is_whitespace() || "*<>|(){}=:$#".contains(c));
    plain
        && (s.contains('/')
            || s.rsplit_once('.')
                .is_some_and(|(stem, ext)| !stem.is_empty() && EXTENSIONS.contains(&ext)))
}

/// A crate's modules, `x` and `x::y`, each with its file.
fn modules_of(krate: &str, files: &[String]) -> BTreeMap<String, String> {
    let src = format!("{krate}/src/");
    files
        .iter()
        .filter_map(|file| {
            let rel = file.strip_prefix(&src)?.strip_suffix(".rs")?;
            if matches!(rel, "lib" | "main") || rel.starts_with("bin/") {
                return None;
            }
            let rel = rel.strip_suffix("/mod").unwrap_or(rel);
            Some((rel.replace('/', "::"), file.clone()))
        })
        .collect()
}

/// The top-level modules of `krate` and the top-level modules each names by `crate::…` path,
/// outside comments and its `#[cfg(test)] mod tests`.
fn module_imports(krate: &str, files: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in modules_of(krate, files) {
        let top = module.split("::").next().unwrap_or(&module).to_string();
        let text = read(&file);
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let named = edges.entry(top.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    named.insert(name);
                }
            }
        }
    }
    edges
}

/// A module that reaches itself, with the path it takes.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn walk(edges: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>) -> Option<Vec<String>> {
        let last = path.last()?.clone();
        for next in edges.get(&last).into_iter().flatten() {
            if let Some(at) = path.iter().position(|m| m == next) {
                let mut cycle = path[at..].to_vec();
                cycle.push(next.clone());
                return Some(cycle);
            }
            path.push(next.clone());
            if let Some(cycle) = walk(edges, path) {
                return Some(cycle);
            }
            path.pop();
        }
        None
    }
    edges
        .keys()
        .find_map(|start| walk(edges, &mut vec![start.clone()]))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let files = files();
    for krate in ["agent", "gateway"] {
        let edges = module_imports(krate, &files);
        assert!(edges.len() > 5, "{krate}: the modules were not found");
        if let Some(cycle) = find_cycle(&edges) {
            panic!("{krate}: a module cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn cycles_are_found() {
    let edges = |pairs: &[(&str, &str)]| {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            map.entry(a.to_string()).or_default().insert(b.to_string());
        }
        map
    };
    assert_eq!(find_cycle(&edges(&[("a", "b"), ("b", "c")])), None);
    assert_eq!(
        find_cycle(&edges(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

fn check_code_map(md: &str, files: &[String]) -> Vec<String> {
    let bullets = match code_map(md) {
        Ok(bullets) => bullets,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    let exists = |path: &str| {
        let path = path.trim_end_matches('/');
        files
            .iter()
            .any(|f| f == path || f.strip_prefix(path).is_some_and(|rest| rest.starts_with('/')))
    };
    // Paths, in every bullet.
    let mut check_paths = |bullet: &Bullet, where_: &str, bases: &[String]| {
        let mut last_dir: Option<String> = None;
        for path in backticked(&bullet.text).filter(|t| is_path(t)) {
            let mut tried: Vec<String> = bases.iter().chain(&last_dir).map(|b| join(b, path)).collect();
            tried.dedup();
            match tried.iter().find(|p| exists(p)) {
                Some(found) if found.ends_with('/') => {
                    last_dir = Some(found.trim_end_matches('/').to_string());
                }
                Some(found) => {
                    last_dir = Some(found.rsplit_once('/').map_or("", |(dir, _)| dir).to_string());
                }
                None => problems.push(format!(
                    "the code map names `{path}` {where_}, but there is no such file or directory \
                     (looked for {})",
                    tried.join(", ")
                )),
            }
        }
    };
    for top in &bullets {
        let dir = top.head.trim_end_matches('/');
        let bases = [format!("{dir}/src"), dir.to_string(), String::new()];
        check_paths(top, &format!("under `{}`", top.head), &bases);
        for child in &top.children {
            let mut bases = bases.to_vec();
            if is_ident(&child.head) {
                bases.insert(0, format!("{dir}/src/{}", child.head));
            } else {
                bases.swap(0, 1);
            }
            check_paths(
                child,
                &format!("in the `{}` bullet under `{}`", child.head, top.head),
                &bases,
            );
        }
    }
    // Modules, in the crates' bullets.
    for krate in CRATES {
        let modules = modules_of(krate, files);
        let crate_head = format!("{krate}/");
        let Some(top) = bullets.iter().find(|b| b.head == crate_head) else {
            problems.push(format!("the code map has no bullet for `{crate_head}`"));
            continue;
        };
        let not_module = |word: &str| NOT_MODULES.contains(&(*krate, word));
        let flat = top.children.is_empty();
        let mut named = BTreeSet::new();
        // The crate's own bullet: in a flat crate it names the modules.
        for name in backticked(&top.text).skip(1) {
            if modules.contains_key(name) {
                if flat || is_mod_path(name) {
                    named.insert(name.to_string());
                }
            } else if (is_ident(name) && !not_module(name)) || is_mod_path(name) {
                problems.push(format!(
                    "the code map names `{name}` in the `{crate_head}` bullet, but there is no \
                     module `{krate}::{name}` ({}){}",
                    module_files(krate, name),
                    if is_ident(name) { NOT_MODULES_HINT } else { "" }
                ));
            }
        }
        for child in &top.children {
            if !is_ident(&child.head) {
                if !is_path(&child.head) {
                    problems.push(format!(
                        "the code map's bullet `{}` under `{crate_head}` is neither a module nor a path",
                        child.head
                    ));
                }
                continue;
            }
            let module = &child.head;
            if modules.contains_key(module) {
                named.insert(module.clone());
            } else {
                problems.push(format!(
                    "the code map has a bullet for `{module}` under `{crate_head}`, but there is no \
                     module `{krate}::{module}` ({})",
                    module_files(krate, module)
                ));
            }
            for name in backticked(&child.text).skip(1) {
                let sub = format!("{module}::{name}");
                if (is_ident(name) || is_mod_path(name)) && modules.contains_key(&sub) {
                    named.insert(sub);
                } else if is_mod_path(name) && modules.contains_key(name) {
                    named.insert(name.to_string());
                } else if is_ident(name) && (modules.contains_key(name) || not_module(name)) {
                    // Another module of the crate, or a word known not to be one.
                } else if is_ident(name) || is_mod_path(name) {
                    problems.push(format!(
                        "the code map names `{name}` in the `{module}` bullet under `{crate_head}`, \
                         but there is neither a module `{krate}::{sub}` ({}) nor `{krate}::{name}`{}",
                        module_files(krate, &sub),
                        if is_ident(name) { NOT_MODULES_HINT } else { "" }
                    ));
                }
            }
        }
        for (module, file) in &modules {
            if named.contains(module) {
                continue;
            }
            problems.push(match module.rsplit_once("::") {
                None if flat => format!(
                    "`{krate}::{module}` ({file}) is not in the code map: name `{module}` in \
                     backticks in the `{crate_head}` bullet"
                ),
                None => format!(
                    "`{krate}::{module}` ({file}) is not in the code map: give it a bullet \
                     \"  - `{module}` — …\" under `{crate_head}`"
                ),
                Some((parent, _)) if parent.contains("::") => format!(
                    "`{krate}::{module}` ({file}) is not in the code map: name `{module}` in \
                     backticks under `{crate_head}`"
                ),
                Some((parent, name)) => format!(
                    "`{krate}::{module}` ({file}) is not in the code map: name `{name}` in \
                     backticks in the `{parent}` bullet under `{crate_head}` (or `{module}` anywhere \
                     under it)"
                ),
            });
        }
    }
    problems
}

const NOT_MODULES_HINT: &str =
    " (a word that is not a module goes without backticks, or into NOT_MODULES in xtask/src/tidy.rs)";

fn join(base: &str, path: &str) -> String {
    if base.is_empty() {
        path.to_string()
    } else {
        format!("{base}/{path}")
    }
}

/// Where a module `a::b` would live.
fn module_files(krate: &str, module: &str) -> String {
    let rel = module.replace("::", "/");
    format!("{krate}/src/{rel}.rs or {krate}/src/{rel}/mod.rs")
}

#[test]
fn code_map_check_catches_missing_and_stale_modules() {
    let files: Vec<String> = [
        "gateway/src/lib.rs",
        "gateway/src/main.rs",
        "gateway/src/store.rs",
        "gateway/src/action.rs",
        "gateway/src/runtime/mod.rs",
        "gateway/src/runtime/local.rs",
        "gateway/src/runtime/docker.rs",
        "gateway/tests/api.rs",
        "gateway/tests/faults.rs",
        "gateway/tests/soak.rs",
        "proto/src/lib.rs",
        "proto/src/connect.rs",
        "proto/orgo/agent.proto",
        "agent/src/lib.rs",
        "xtask/src/main.rs",
        "xtask/src/fuzz.rs",
        "fuzz/Cargo.toml",
    ]
    .map(String::from)
    .to_vec();
    let map = "# A\n\n## Code map\n\n\
        - `proto/` — `orgo/agent.proto` with a vendored `protoc`; `connect`.\n\
        - `gateway/` — a thin `main.rs` (`serve`, `keys`):\n\
        \x20 - `store` — SQLite; every lookup takes the account (see `runtime`).\n\
        \x20 - `runtime` — the trait; `local` runs desktops in bubblewrap,\n\
        \x20   `sandbox` is what it is told.\n\
        \x20 - `desktops` — plans.\n\
        \x20 - `tests/api.rs` — `bash` in a terminal; `faults.rs`, `soak.rs`, `gone.rs`.\n\
        - `xtask/` — `fuzz` (config `gateway/tests/api.rs`), `bench`.\n\
        - `fuzz/` — `api::check_body`.\n\n\
        ## Invariants\n\n- `nothing` — is checked here.\n";
    let problems = check_code_map(map, &files);
    let expect = [
        "`gateway::action` (gateway/src/action.rs) is not in the code map: give it a bullet",
        "`gateway::runtime::docker` (gateway/src/runtime/docker.rs) is not in the code map: name \
         `docker` in backticks in the `runtime` bullet",
        "names `sandbox` in the `runtime` bullet under `gateway/`, but there is neither a module \
         `gateway::runtime::sandbox`",
        "a bullet for `desktops` under `gateway/`, but there is no module `gateway::desktops`",
        "names `gone.rs` in the `tests/api.rs` bullet under `gateway/`, but there is no such file",
        "names `bench` in the `xtask/` bullet, but there is no module `xtask::bench`",
        "the code map has no bullet for",
    ];
    for expected in expect {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "no problem says {expected:?}: {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
}

// 4. What the docs take from code.

/// Values read from the code, by name (`listen`, `plans.free.max_cpu`, `fuzz.long.examples`);
/// an error where the code has a shape this cannot read.
type Facts = BTreeMap<String, Result<String, String>>;

/// `ORGO_*` names in a text (not the bare prefix of `ORGO_*`).
fn orgo_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("ORGO_") {
        if text[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[at + 5..];
        let len = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        let suffix = rest[..len].trim_end_matches('_');
        if !suffix.is_empty() {
            names.insert(format!("ORGO_{suffix}"));
        }
    }
    names
}

/// The `ORGO_*` variables a Rust source reads: `var("ORGO_X")` (`std::env::var`, or the
/// config's lookup function) and clap's `env = "ORGO_X"`.
fn env_reads(src: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for pattern in ["var(\"ORGO_", "env = \"ORGO_"] {
        for (at, _) in src.match_indices(pattern) {
            let name_at = at + pattern.len() - "ORGO_".len();
            if let Some(len) = src[name_at..].find('"') {
                names.insert(src[name_at..name_at + len].to_string());
            }
        }
    }
    names
}

/// The `ORGO_*` names on the `///` lines of a Rust source.
fn doc_comment_names(src: &str) -> BTreeSet<String> {
    src.lines()
        .filter(|l| l.trim_start().starts_with("///"))
        .flat_map(orgo_names)
        .collect()
}

fn sources_under(files: &[String], dir: &str) -> String {
    files
        .iter()
        .filter(|f| f.starts_with(dir) && f.ends_with(".rs"))
        .map(|f| read(f))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn env_overrides_are_documented() {
    let files = files();
    let mut problems = Vec::new();
    let config = read("gateway/src/config.rs");
    assert!(
        !env_reads(&config).is_empty(),
        "found no `var(\"ORGO_…\")` in gateway/src/config.rs: the way the config reads its \
         environment changed, and env_reads in xtask/src/tidy.rs must learn the new way"
    );
    let gateway = env_reads(&sources_under(&files, "gateway/src/"));
    let agent = env_reads(&sources_under(&files, "agent/src/"));
    assert!(
        !agent.is_empty(),
        "found no ORGO_* variable the agent reads in agent/src"
    );

    // serve --help: the doc comment clap shows, on the `Serve` variant.
    let main = read("gateway/src/main.rs");
    let lines: Vec<&str> = main.lines().collect();
    let serve = lines
        .iter()
        .position(|l| l.trim_start().starts_with("Serve {"))
        .expect("gateway/src/main.rs has no `Serve {` subcommand");
    let help: BTreeSet<String> = lines[..serve]
        .iter()
        .rev()
        .take_while(|l| l.trim_start().starts_with("///"))
        .flat_map(|l| orgo_names(l))
        .collect();
    for name in gateway.difference(&help) {
        problems.push(format!(
            "the gateway reads {name}, but `serve --help` (the doc comment of `Serve` in \
             gateway/src/main.rs) does not list it"
        ));
    }
    for name in help.difference(&gateway) {
        problems.push(format!(
            "`serve --help` lists {name}, which the gateway does not read"
        ));
    }
    // The agent's --help: clap shows `env = …` itself; others are named in a doc comment.
    let cli = read("agent/src/cli.rs");
    let flags = block(&cli, "pub struct Cli {")
        .unwrap_or_else(|e| panic!("agent/src/cli.rs: {e}: where are the agent's flags now?"));
    let agent_help: BTreeSet<String> = env_reads(flags)
        .union(&doc_comment_names(flags))
        .cloned()
        .collect();
    for name in agent.difference(&agent_help) {
        problems.push(format!(
            "the agent reads {name}, but its --help (agent/src/cli.rs) does not name it"
        ));
    }

    let readme = orgo_names(&read("README.md"));
    for name in gateway.union(&agent) {
        if !readme.contains(name) {
            let who = if gateway.contains(name) {
                "gateway"
            } else {
                "agent"
            };
            problems.push(format!(
                "the {who} reads {name}, but README.md does not document it"
            ));
        }
    }
    for name in &readme {
        if !gateway.contains(name) && !agent.contains(name) {
            problems.push(format!(
                "README.md names {name}, which neither the gateway (gateway/src) nor the agent \
                 (agent/src) reads"
            ));
        }
    }
    // The other docs may name the variables of tests, benchmarks and xtask too.
    let used: String = files
        .iter()
        .filter(|f| f.ends_with(".rs") && *f != "xtask/src/tidy.rs")
        .map(|f| read(f))
        .collect();
    for doc in ["RELIABILITY.md", "ARCHITECTURE.md"] {
        for name in orgo_names(&read(doc)) {
            if !used.contains(&format!("\"{name}\"")) {
                problems.push(format!("{doc} names {name}, which no Rust file uses"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "ORGO_* variables:\n- {}",
        problems.join("\n- ")
    );
}

#[test]
fn stated_defaults_are_the_code_defaults() {
    let config = read_config(&read("gateway/src/config.rs"))
        .unwrap_or_else(|e| panic!("cannot read gateway/src/config.rs: {e}"));
    let readme = squash(&read("README.md"));
    let stated = stated_defaults(&readme, &config);
    assert!(
        stated.len() >= 5,
        "README.md states only {} defaults this test can read: {stated:#?}; has the way it states \
         them changed? (see xtask/src/tidy.rs)",
        stated.len()
    );
    let mut problems = Vec::new();
    for (key, value, context) in &stated {
        match config.facts.get(key) {
            Some(Ok(code)) if same(value, code) => {}
            Some(Ok(code)) => problems.push(format!(
                "README.md says {context:?}: {value}, but Config::default() has {key} = {code}"
            )),
            Some(Err(e)) => problems.push(format!("README.md states {key} ({context:?}): {e}")),
            None => problems.push(format!(
                "README.md states {key} ({context:?}), which config.rs lacks"
            )),
        }
    }
    assert!(problems.is_empty(), "defaults:\n- {}", problems.join("\n- "));
}

/// The sentences [`README_CLAIMS`], [`RELIABILITY_CLAIMS`] and [`USAGE_CLAIMS`] quote, their
/// holes filled from the config's defaults and the fuzzing sizes.
#[test]
fn quoted_sentences_hold() {
    let mut facts = read_config(&read("gateway/src/config.rs"))
        .unwrap_or_else(|e| panic!("cannot read gateway/src/config.rs: {e}"))
        .facts;
    facts.extend(fuzz_facts());
    let mut problems = Vec::new();
    let docs = [
        ("README.md", read("README.md"), README_CLAIMS),
        ("RELIABILITY.md", read("RELIABILITY.md"), RELIABILITY_CLAIMS),
        (
            "xtask's USAGE (xtask/src/main.rs)",
            read("xtask/src/main.rs"),
            USAGE_CLAIMS,
        ),
    ];
    for (name, text, claims) in docs {
        problems.extend(check_claims(name, &squash(&text), claims, &facts));
    }
    assert!(
        problems.is_empty(),
        "quoted sentences:\n- {}",
        problems.join("\n- ")
    );
}

/// The sizes of the fuzzing runs, from `xtask/src/fuzz.rs`.
fn fuzz_facts() -> Facts {
    let fuzz = read("xtask/src/fuzz.rs");
    let facts: Facts = [
        ("fuzz.short.examples", const_field(&fuzz, "SHORT", "examples")),
        ("fuzz.short.workers", const_field(&fuzz, "SHORT", "workers")),
        ("fuzz.long.examples", const_field(&fuzz, "LONG", "examples")),
        ("fuzz.long.workers", const_field(&fuzz, "LONG", "workers")),
        ("fuzz.parsers_seconds", const_value(&fuzz, "PARSERS_SHORT")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (key, value) in &facts {
        if let Err(e) = value.as_ref().map(|v| v.parse::<u64>()) {
            panic!("xtask/src/fuzz.rs: {key}: {e:?}: its constants changed shape; update xtask/src/tidy.rs");
        }
    }
    facts
}

/// `cargo xtask fuzz-parsers`' targets: xtask's list, the sources, fuzz/Cargo.toml and
/// RELIABILITY.md's list.
#[test]
fn fuzz_targets_are_the_code_ones() {
    let fuzz = read("xtask/src/fuzz.rs");
    let reliability = read("RELIABILITY.md");
    let mut problems = Vec::new();
    let files = files();
    let listed: BTreeSet<String> = const_list(&fuzz, "PARSER_TARGETS")
        .unwrap_or_else(|e| panic!("xtask/src/fuzz.rs: {e}"))
        .into_iter()
        .collect();
    let sources: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix("fuzz/fuzz_targets/")?.strip_suffix(".rs"))
        .map(String::from)
        .collect();
    let bins = cargo_bins(&read("fuzz/Cargo.toml"));
    let section: String = reliability
        .lines()
        .skip_while(|l| !l.starts_with("## Properties and parser fuzzing"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .map(|l| format!("{l}\n"))
        .collect();
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(|l| {
            l.strip_prefix("- `")?
                .split_once("` —")
                .map(|(name, _)| name.to_string())
        })
        .collect();
    for (what, set) in [
        ("fuzz/fuzz_targets/", &sources),
        ("fuzz/Cargo.toml's [[bin]]s", &bins),
        (
            "RELIABILITY.md's list (\"- `target` — …\" under \"## Properties and parser fuzzing\")",
            &documented,
        ),
    ] {
        if *set != listed {
            problems.push(format!(
                "the fuzz targets of PARSER_TARGETS in xtask/src/fuzz.rs are {listed:?}, but \
                 {what} has {set:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "fuzz targets:\n- {}", problems.join("\n- "));
}

/// The `[[bin]]` names of a Cargo.toml.
fn cargo_bins(toml: &str) -> BTreeSet<String> {
    let mut in_bin = false;
    let mut bins = BTreeSet::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(name) = line.strip_prefix("name = \"").filter(|_| in_bin) {
            bins.insert(name.trim_end_matches('"').to_string());
        }
    }
    bins
}

// Claims: sentences with holes.

/// Each claim's sentence found in the (squashed) document, its holes compared with the facts.
fn check_claims(doc_name: &str, doc: &str, claims: &[&str], facts: &Facts) -> Vec<String> {
    let mut problems = Vec::new();
    for claim in claims {
        let claim = squash(claim);
        let Some(values) = read_claim(doc, &claim) else {
            problems.push(format!(
                "{doc_name} no longer says {claim:?} (its holes filled from the code); if it was \
                 reworded, reword the claim in xtask/src/tidy.rs"
            ));
            continue;
        };
        for (hole, value) in values {
            match facts.get(&hole) {
                Some(Ok(code)) if same(value, code) => {}
                Some(Ok(code)) => problems.push(format!(
                    "{doc_name} says {value:?} where the code has {hole} = {code}, in {claim:?}"
                )),
                Some(Err(e)) => problems.push(format!("{hole}, which {doc_name} states: {e}")),
                None => problems.push(format!(
                    "the claim {claim:?} has a hole {hole} the code does not fill"
                )),
            }
        }
    }
    problems
}

/// The values in the holes of the claim's first occurrence in the document.
fn read_claim<'d>(doc: &'d str, claim: &str) -> Option<Vec<(String, &'d str)>> {
    // Text, then (hole, text) pairs: every hole is followed by text.
    let (first, rest) = claim.split_once('{').map_or((claim, ""), |(a, b)| (a, b));
    let mut pairs = Vec::new();
    for part in rest.split('{').filter(|p| !p.is_empty()) {
        let (hole, text) = part.split_once('}').expect("a claim's hole is closed");
        assert!(
            !text.is_empty(),
            "in the claim {claim:?}, text must follow every hole"
        );
        pairs.push((hole, text));
    }
    'occurrence: for (at, _) in doc.match_indices(first) {
        let mut pos = at + first.len();
        let mut values = Vec::new();
        for (hole, text) in &pairs {
            match doc[pos..].find(text) {
                Some(len) if (1..=40).contains(&len) => {
                    values.push((hole.to_string(), &doc[pos..pos + len]));
                    pos += len + text.len();
                }
                _ => continue 'occurrence,
            }
        }
        return Some(values);
    }
    None
}

/// Whether a value a doc states is the code's: the same text (quotes aside), or the same number
/// (`5,000`, `four`, `2 MiB`).
fn same(doc: &str, code: &str) -> bool {
    let doc = doc.trim().trim_matches('`').trim_matches('"');
    doc == code || number(doc).is_some_and(|n| Some(n) == number(code))
}

/// A number as docs write it: `55`, `5,000`, `four`, `2 MiB`.
fn number(text: &str) -> Option<u128> {
    const WORDS: &[&str] = &[
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve",
    ];
    let text = text.trim();
    if let Some(n) = WORDS.iter().position(|w| text.eq_ignore_ascii_case(w)) {
        return Some(n as u128);
    }
    let (digits, unit) = text.split_once(' ').map_or((text, None), |(d, u)| (d, Some(u)));
    if !digits.starts_with(|c: char| c.is_ascii_digit())
        || !digits.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '_')
    {
        return None;
    }
    let n: u128 = digits.replace([',', '_'], "").parse().ok()?;
    let scale: u128 = match unit {
        None => 1,
        Some("KiB") => 1 << 10,
        Some("MiB") => 1 << 20,
        Some("GiB") => 1 << 30,
        Some(_) => return None,
    };
    Some(n * scale)
}

#[test]
fn claims_are_read_and_compared() {
    let doc = squash(
        "The short run (10 examples per\n  operation) is part of ci; `--long` takes 120 per \
         operation with eight workers.",
    );
    let claim = "The short run ({short} examples per operation) is part of ci; `--long` takes \
                 {long} per operation with {workers} workers.";
    let facts: Facts = [("short", "10"), ("long", "200"), ("workers", "8")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Ok(v.to_string())))
        .collect();
    let problems = check_claims("DOC", &doc, &[claim], &facts);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("DOC says \"120\" where the code has long = 200"),
        "{problems:?}"
    );
    let gone = check_claims("DOC", "The long run (10 examples).", &[claim], &facts);
    assert!(gone[0].contains("no longer says"), "{gone:?}");
    assert!(same("2 MiB", "2097152") && same("5,000", "5000") && same("`local`", "local"));
    assert!(!same("2 GiB", "2097152") && !same("an hour", "3600"));
}

// The config's source.

/// What `gateway/src/config.rs` says: the fields of `Config` and `Plan`, which field each
/// `ORGO_*` variable sets, and the defaults (`listen`, `plans.free.max_cpu`, `plan.<key>` for a
/// plan key's serde default).
struct ConfigSource {
    fields: BTreeSet<String>,
    plan_fields: BTreeSet<String>,
    plans: BTreeSet<String>,
    env: BTreeMap<String, String>,
    facts: Facts,
}

fn read_config(src: &str) -> Result<ConfigSource, String> {
    let struct_fields = |name: &str| -> Result<Vec<(String, Option<String>)>, String> {
        let body = block(src, &format!("pub struct {name} {{"))?;
        let mut fields = Vec::new();
        let mut serde_default = None;
        for line in body.lines().map(str::trim) {
            if let Some(f) = line.strip_prefix("#[serde(default = \"") {
                serde_default = f.split('"').next().map(String::from);
            } else if let Some(field) = line.strip_prefix("pub ").and_then(|l| l.split_once(':')) {
                fields.push((field.0.trim().to_string(), serde_default.take()));
            }
        }
        if fields.is_empty() {
            return Err(format!("`pub struct {name}` has no `pub field: Type` lines"));
        }
        Ok(fields)
    };
    let config_fields = struct_fields("Config")?;
    let plan_fields = struct_fields("Plan")?;
    let mut facts = Facts::new();
    for (field, serde_default) in &plan_fields {
        if let Some(f) = serde_default {
            facts.insert(format!("plan.{field}"), eval(&format!("{f}()"), src));
        }
    }

    let default = block(src, "impl Default for Config {")?;
    let literal = |at: &str| -> Result<Vec<(String, String)>, String> {
        let fields = split_top(block(default, at)?, ',', true)
            .into_iter()
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| match f.split_once(": ") {
                Some((name, expr)) => (name.trim().to_string(), expr.trim().to_string()),
                None => (f.to_string(), f.to_string()),
            })
            .collect();
        Ok(fields)
    };
    let literal_fields = literal("Config {")?;
    let mut plans = BTreeSet::new();
    for (field, expr) in &literal_fields {
        if field != "plans" {
            facts.insert(field.clone(), eval(expr, src));
            continue;
        }
        let list = expr
            .strip_prefix("BTreeMap::from([")
            .and_then(|l| l.strip_suffix("])"))
            .ok_or_else(|| {
                format!("the default plans are `{expr}`, not `BTreeMap::from([(\"name\".into(), plan), …])`")
            })?;
        for entry in split_top(list, ',', true) {
            let parts = entry.trim().strip_prefix('(').and_then(|e| e.strip_suffix(')'));
            let (name, local) = parts
                .and_then(|p| p.split_once(','))
                .ok_or_else(|| format!("cannot read the plan `{entry}`"))?;
            let name = eval(name, src)?;
            for (key, expr) in literal(&format!("let {} = Plan {{", local.trim()))? {
                facts.insert(format!("plans.{name}.{key}"), eval(&expr, src));
            }
            plans.insert(name);
        }
    }
    let in_literal: BTreeSet<&String> = literal_fields.iter().map(|(f, _)| f).collect();
    let missing: Vec<&String> = config_fields
        .iter()
        .map(|(f, _)| f)
        .filter(|f| !in_literal.contains(f))
        .collect();
    if !missing.is_empty() || plans.is_empty() {
        return Err(format!(
            "read `Config::default()` wrong: no value for {missing:?}, plans {plans:?}"
        ));
    }

    // Which field each variable sets: the first `self.field` after `var("ORGO_X")`.
    let apply_env = block(src, "fn apply_env(")?;
    let mut env = BTreeMap::new();
    for name in env_reads(apply_env) {
        let after = &apply_env[apply_env.find(&format!("\"{name}\"")).expect("just found")..];
        let field = after
            .split_once("self.")
            .map(|(_, rest)| {
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")
            })
            .filter(|f| in_literal.contains(&f.to_string()))
            .ok_or_else(|| format!("cannot tell which field {name} sets in `apply_env`"))?;
        env.insert(name, field.to_string());
    }
    if env.is_empty() {
        return Err("`apply_env` reads no `var(\"ORGO_…\")`".into());
    }
    Ok(ConfigSource {
        fields: config_fields.into_iter().map(|(f, _)| f).collect(),
        plan_fields: plan_fields.into_iter().map(|(f, _)| f).collect(),
        plans,
        env,
        facts,
    })
}

/// The value of a default's expression as docs write it, for the few shapes defaults take:
/// literals, `"…".into()`/`.parse()`, `PathBuf::from("…")`, `2 << 20`, an enum variant (its
/// serde name, lower case), `format!` with the package version (`<version>`), a call of a
/// function of the file without arguments.
fn eval(expr: &str, src: &str) -> Result<String, String> {
    let e = expr.trim();
    let cannot = || {
        Err(format!(
            "cannot read the default `{e}` (teach eval in xtask/src/tidy.rs)"
        ))
    };
    if let Some(rest) = e.strip_prefix('"') {
        let Some((text, after)) = rest.split_once('"') else {
            return cannot();
        };
        return if after.is_empty()
            || [".into()", ".to_string()", ".to_owned()"].contains(&after)
            || after.starts_with(".parse()")
        {
            Ok(text.to_string())
        } else {
            cannot()
        };
    }
    for wrapper in ["PathBuf::from(", "String::from(", "Some("] {
        if let Some(inner) = e.strip_prefix(wrapper).and_then(|r| r.strip_suffix(')')) {
            return eval(inner, src);
        }
    }
    if e == "None" {
        return Err("no default (`None`)".into());
    }
    if let Some(args) = e.strip_prefix("format!(").and_then(|r| r.strip_suffix(')')) {
        let args = split_top(args, ',', true);
        let mut text = eval(args[0], src)?;
        for arg in &args[1..] {
            let value = match arg.trim() {
                "env!(\"CARGO_PKG_VERSION\")" => "<version>".to_string(),
                other => eval(other, src)?,
            };
            text = text.replacen("{}", &value, 1);
        }
        return Ok(text);
    }
    if e.chars().all(|c| c.is_ascii_digit() || c == '_') && !e.is_empty() {
        return Ok(e.replace('_', ""));
    }
    for op in ["<<", "*"] {
        if let Some((a, b)) = e.split_once(op) {
            let a: u128 = eval(a, src)?
                .parse()
                .map_err(|_| format!("`{a}` is not a number"))?;
            let b: u128 = eval(b, src)?
                .parse()
                .map_err(|_| format!("`{b}` is not a number"))?;
            return Ok(if op == "<<" { a << b } else { a * b }.to_string());
        }
    }
    if let Some((ty, variant)) = e.split_once("::") {
        let upper =
            |s: &str| s.starts_with(|c: char| c.is_ascii_uppercase()) && s.chars().all(char::is_alphanumeric);
        if upper(ty) && upper(variant) {
            let decl = src
                .find(&format!("enum {ty} {{"))
                .ok_or_else(|| format!("no `enum {ty}`"))?;
            let attrs = src[..decl].rsplit("\n\n").next().unwrap_or("");
            return if attrs.contains("rename_all = \"lowercase\"") {
                Ok(variant.to_lowercase())
            } else {
                Err(format!(
                    "`enum {ty}` has no `#[serde(rename_all = \"lowercase\")]` to name `{e}` by"
                ))
            };
        }
    }
    if let Some(name) = e.strip_suffix("()").filter(|n| is_ident(n)) {
        let body = block(src, &format!("fn {name}()"))?;
        if body.contains(';') {
            return Err(format!("`fn {name}()` is more than an expression"));
        }
        return eval(body, src);
    }
    cannot()
}

/// The README's statements of defaults: (fact, value, the words stating it).
fn stated_defaults(readme: &str, config: &ConfigSource) -> Vec<(String, String, String)> {
    let mut stated = Vec::new();
    // "`ORGO_X`, default `value`" and "`ORGO_X`, `value`".
    for (var, field) in &config.env {
        for prefix in [format!("`{var}`, default `"), format!("`{var}`, `")] {
            for (at, _) in readme.match_indices(&prefix) {
                let rest = &readme[at + prefix.len()..];
                let value = rest.split('`').next().unwrap_or("");
                if !value.starts_with("ORGO_") {
                    stated.push((field.clone(), value.to_string(), format!("{prefix}{value}`")));
                }
            }
        }
    }
    // "`key` (…, 10; …)" and "`key` (free: 1800)".
    for key in config.fields.iter().chain(&config.plan_fields) {
        let is_plan_key = config.plan_fields.contains(key);
        for (at, _) in readme.match_indices(&format!("`{key}` (")) {
            let open = at + key.len() + 4;
            let Some(inside) = parenthesised(&readme[open..]) else {
                continue;
            };
            for part in split_top(inside, ',', false)
                .into_iter()
                .flat_map(|p| split_top(p, ';', false))
            {
                let part = part.trim();
                let (plan, value) = match part.split_once(": ") {
                    Some((plan, value)) if is_plan_key && config.plans.contains(plan) => (Some(plan), value),
                    _ => (None, part),
                };
                let mut words = value.split(' ');
                let (Some(n), unit, None) = (words.next(), words.next(), words.next()) else {
                    continue;
                };
                if number(n).is_none() || unit.is_some_and(|u| number(&format!("1 {u}")).is_none()) {
                    continue;
                }
                // A unit scales only byte counts (`max_body_bytes`); `disk_size_gb` is in GiB.
                let value = if key.ends_with("_bytes") { value } else { n };
                let fact = match plan {
                    Some(plan) => format!("plans.{plan}.{key}"),
                    None if is_plan_key => format!("plan.{key}"),
                    None => key.clone(),
                };
                let context = match inside.char_indices().nth(80) {
                    Some((cut, _)) => format!("`{key}` ({}…)", &inside[..cut]),
                    None => format!("`{key}` ({inside})"),
                };
                stated.push((fact, value.to_string(), context));
            }
        }
    }
    // "`key = value`, the default".
    for key in &config.fields {
        let prefix = format!("`{key} = ");
        for (at, _) in readme.match_indices(&prefix) {
            let Some((value, after)) = readme[at + prefix.len()..].split_once('`') else {
                continue;
            };
            if [", the default", " (the default", " (default"]
                .iter()
                .any(|p| after.starts_with(p))
            {
                let context = format!("{prefix}{value}`, the default");
                stated.push((key.clone(), value.trim_matches('"').to_string(), context));
            }
        }
    }
    stated
}

/// The text up to the `)` closing a parenthesis the text is inside of.
fn parenthesised(text: &str) -> Option<&str> {
    let mut depth = 0;
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return Some(&text[..at]),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

// Rust source, read as text.

/// The inside of the block that follows the first occurrence of `start` (which may end with
/// its `{`): from after the `{` to before its `}`.
fn block<'s>(src: &'s str, start: &str) -> Result<&'s str, String> {
    let at = src.find(start).ok_or_else(|| format!("no `{start}`"))?;
    let open = at
        + src[at..]
            .find('{')
            .ok_or_else(|| format!("no `{{` after `{start}`"))?;
    let close = closing(src, open).ok_or_else(|| format!("no `}}` closing `{start}`"))?;
    Ok(&src[open + 1..close])
}

/// Where the bracket at `open` closes, skipping strings, characters and comments.
fn closing(src: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = open;
    while at < src.len() {
        let rest = &src[at..];
        let c = rest.chars().next()?;
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(at);
                }
            }
            _ => {}
        }
        at += skip_token(rest).max(c.len_utf8());
    }
    None
}

/// How many bytes a string literal, character literal or comment at the start of `text`
/// takes; 0 for anything else.
fn skip_token(text: &str) -> usize {
    if text.starts_with("//") {
        return text.find('\n').unwrap_or(text.len());
    }
    if let Some(rest) = text.strip_prefix('"') {
        let mut escaped = false;
        for (at, c) in rest.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => return at + 2,
                _ => escaped = false,
            }
        }
        return text.len();
    }
    if let Some(rest) = text.strip_prefix('\'') {
        // 'x' or '\x'; a lifetime has no closing quote there.
        let mut chars = rest.char_indices();
        if let Some((_, first)) = chars.next() {
            let end = if first == '\\' { chars.nth(1) } else { chars.next() };
            if let Some((at, '\'')) = end {
                return at + 2;
            }
        }
    }
    0
}

/// The parts of a text between the separators outside brackets and, in Rust code, strings and
/// comments; in prose, outside backticks.
fn split_top(text: &str, separator: char, code: bool) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start, mut at) = (0i32, 0, 0);
    while at < text.len() {
        let rest = &text[at..];
        let c = rest.chars().next().expect("inside the text");
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '`' if !code => {
                // Code in prose: a separator inside backticks is not one.
                at += rest[1..].find('`').map_or(1, |len| len + 2);
                continue;
            }
            _ if c == separator && depth == 0 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
        let token = if code { skip_token(rest) } else { 0 };
        at += token.max(c.len_utf8());
    }
    parts.push(&text[start..]);
    parts
}

/// A field of a `const NAME: T = T { field: value, … }`.
fn const_field(src: &str, name: &str, field: &str) -> Result<String, String> {
    let body = block(src, &format!("const {name}:"))?;
    split_top(body, ',', true)
        .into_iter()
        .find_map(|f| {
            f.trim()
                .strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .ok_or_else(|| format!("`const {name}` has no `{field}:`"))
}

/// The value of a `const NAME: T = value;`.
fn const_value(src: &str, name: &str) -> Result<String, String> {
    let at = src
        .find(&format!("const {name}:"))
        .ok_or_else(|| format!("no `const {name}`"))?;
    let decl = &src[at..at + src[at..].find(';').ok_or("no `;`")?];
    decl.split_once('=')
        .map(|(_, v)| v.trim().to_string())
        .ok_or_else(|| format!("no value in `{decl}`"))
}

/// The string literals of a `const NAME: &[&str] = &[…];`.
fn const_list(src: &str, name: &str) -> Result<Vec<String>, String> {
    let value = const_value(src, name)?;
    let inner = value
        .strip_prefix("&[")
        .and_then(|v| v.strip_suffix(']'))
        .ok_or_else(|| format!("`const {name}` is `{value}`, not `&[\"…\", …]`"))?;
    split_top(inner, ',', true)
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .map(String::from)
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("`const {name}` holds more than string literals"))
}

#[test]
fn config_source_is_read() {
    let src = r#"
pub struct Plan {
    pub max_cpu: u32,
    /// Per second.
    #[serde(default = "default_rate")]
    pub requests_per_second: u32,
}
fn default_rate() -> u32 {
    50
}
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Local,
}
pub struct Config {
    pub listen: SocketAddr,
    /// For `desktop.url`; defaults to `http://{listen}`.
    pub image: String,
    pub runtime: RuntimeKind,
    pub max_body_bytes: usize,
    pub plans: BTreeMap<String, Plan>,
}
impl Default for Config {
    fn default() -> Self {
        let free = Plan { max_cpu: 4, requests_per_second: default_rate() };
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid {address}"),
            image: format!("orgo/desktop-minimal:{}", env!("CARGO_PKG_VERSION")),
            runtime: RuntimeKind::Local,
            max_body_bytes: 2 << 20,
            plans: BTreeMap::from([("free".into(), free)]),
        }
    }
}
impl Config {
    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = var("ORGO_LISTEN") {
            self.listen = v.parse()?;
        }
        Ok(())
    }
}
"#;
    let config = read_config(src).unwrap();
    let fact = |k: &str| config.facts[k].clone().unwrap();
    assert_eq!(fact("listen"), "127.0.0.1:8080");
    assert_eq!(fact("image"), "orgo/desktop-minimal:<version>");
    assert_eq!(fact("runtime"), "local");
    assert_eq!(fact("max_body_bytes"), "2097152");
    assert_eq!(fact("plans.free.max_cpu"), "4");
    assert_eq!(fact("plans.free.requests_per_second"), "50");
    assert_eq!(fact("plan.requests_per_second"), "50");
    assert_eq!(config.env["ORGO_LISTEN"], "listen");

    let readme = squash(
        "(`ORGO_LISTEN`, default `127.0.0.1:9090`; `ORGO_RUNTIME`) a 413 over `max_body_bytes` (2\n\
         MiB; the gateway reads up to 64 MiB, 3) and `requests_per_second` (free: 50; ours, 40) \
         and `runtime = \"local\"`, the default.",
    );
    let stated = stated_defaults(&readme, &config);
    let keys: Vec<(&str, &str)> = stated.iter().map(|(k, v, _)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        keys,
        [
            ("listen", "127.0.0.1:9090"),
            ("max_body_bytes", "2 MiB"),
            ("max_body_bytes", "3"),
            ("plans.free.requests_per_second", "50"),
            ("plan.requests_per_second", "40"),
            ("runtime", "local"),
        ]
    );
}
