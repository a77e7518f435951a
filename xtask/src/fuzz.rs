//! Fuzzing. `cargo xtask fuzz-api`: schemathesis (exact versions and hashes from
//! `gateway/tests/schemathesis-requirements.txt`, in a venv of its own) against a
//! gateway served on loopback with real local desktops (one to act on, one to stop, one to
//! delete), every check on, configured by `gateway/tests/schemathesis.toml`. Any 5xx, any answer
//! the document does not allow, any request the document allows but the gateway refuses (or the
//! reverse) fails the run; a crash inside the tool itself (a Python traceback in Hypothesis or
//! schemathesis, no check failed, no 5xx) is reported as such with the command to run it again.
//! `cargo xtask fuzz-parsers`: the cargo-fuzz targets in `fuzz/`
//! (libFuzzer, nightly toolchain), each for a while, on a corpus kept in `fuzz/corpus`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::new_key;
use crate::system::{ensure_packages, ensure_system_packages, root, run, run_with};

/// A schemathesis run's size: examples per operation, and concurrent workers (waits, drags and
/// timed execs mostly sleep, so more workers overlap them).
pub struct Size {
    examples: u32,
    workers: u32,
}

/// The short run in `ci`.
pub const SHORT: Size = Size {
    examples: 10,
    workers: 4,
};

/// The long run: over 5,000 requests.
pub const LONG: Size = Size {
    examples: 200,
    workers: 8,
};

/// Seconds per cargo-fuzz target in `ci`.
pub const PARSERS_SHORT: u32 = 20;

/// The cargo-fuzz release `fuzz-parsers` installs (a fresh machine would get the newest).
const CARGO_FUZZ: &str = "0.13.2";

/// The cargo-fuzz targets, each with an optional dictionary in `fuzz/dicts/<target>.dict`.
const PARSER_TARGETS: &[&str] = &["key_combo", "type_plan", "request_body", "output_cap"];

/// schemathesis, Hypothesis and every dependency at exact versions with hashes.
const REQUIREMENTS: &str = "gateway/tests/schemathesis-requirements.txt";

/// The Docker desktops of a gateway's data dir (its owner label), removed when dropped.
struct Containers(std::path::PathBuf);

impl Drop for Containers {
    fn drop(&mut self) {
        let filter = format!("label=orgo.gateway={}", self.0.display());
        let listed = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output();
        if let Ok(out) = listed {
            let ids = String::from_utf8_lossy(&out.stdout);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker").args(["rm", "-f"]).args(ids).output();
            }
        }
    }
}

/// A served gateway, stopped (SIGTERM, which stops its local desktops) when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// A successful curl's output.
fn curl(args: &[&str]) -> Result<String> {
    let out = Command::new("curl")
        .arg("-sf")
        .args(args)
        .output()
        .context("cannot run curl")?;
    if !out.status.success() {
        bail!("curl {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The string value of the first `"field":"…"` in a JSON answer; no JSON library for one field.
fn first_string(answer: &str, field: &str) -> Result<String> {
    answer
        .split(&format!("\"{field}\":\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(String::from)
        .with_context(|| format!("no {field} in {answer}"))
}

/// `POST /api/projects`: the new project's name (its desktop's, too).
fn new_project(base: &str, key: &str) -> Result<String> {
    let auth = format!("Authorization: Bearer {key}");
    let answer = curl(&["-X", "POST", &format!("{base}/projects"), "-H", &auth, "-d", "{}"])?;
    first_string(&answer, "name")
}

/// A screenshot stored for the run (`?response_format=url`): its file name, for the storage
/// route.
fn stored_screenshot(base: &str, key: &str, computer: &str) -> Result<String> {
    let auth = format!("Authorization: Bearer {key}");
    let url = format!("{base}/computers/{computer}/screenshot?response_format=url");
    let answer = curl(&[&url, "-H", &auth])?;
    let image = first_string(&answer, "image")?;
    Ok(image.rsplit('/').next().unwrap_or_default().to_string())
}

/// Where the fuzzed gateway keeps its state, and so which runtime it runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// SQLite in its data dir, local desktops.
    Sqlite,
    /// A throw-away PostgreSQL cluster, Docker desktops (a gateway with a shared store refuses
    /// the local runtime).
    Postgres,
}

/// Set on the command pg_virtualenv runs, so this process knows the `PG*` variables are the
/// throw-away cluster's (and never a user's own database).
const INSIDE_VIRTUALENV: &str = "ORGO_FUZZ_IN_PG_VIRTUALENV";

/// `cargo xtask fuzz-api [--long] [--postgres]`.
pub fn api_command(flags: &[&str]) -> Result<()> {
    let mut size = SHORT;
    let mut backing = Backing::Sqlite;
    for flag in flags {
        match *flag {
            "--long" => size = LONG,
            "--postgres" => backing = Backing::Postgres,
            other => bail!("fuzz-api takes --long and --postgres, not {other:?}"),
        }
    }
    api(size, backing)
}

/// The URL of pg_virtualenv's cluster, from the `PG*` variables it sets.
fn virtualenv_url() -> Result<String> {
    let var = |k: &str| std::env::var(k).with_context(|| format!("pg_virtualenv set no {k}"));
    // Only letters, digits and `-._~` pass into a URL's user-info as they are.
    let encode = |s: String| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    Ok(format!(
        "postgres://{}:{}@{}:{}/{}",
        encode(var("PGUSER")?),
        encode(var("PGPASSWORD")?),
        var("PGHOST")?,
        var("PGPORT")?,
        var("PGDATABASE")?
    ))
}

pub fn api(size: Size, backing: Backing) -> Result<()> {
    let database = match backing {
        Backing::Sqlite => None,
        Backing::Postgres if std::env::var_os(INSIDE_VIRTUALENV).is_none() => {
            // This same command again, inside a throw-away cluster that pg_virtualenv makes
            // (`-t`: in a temporary directory even as root) and removes afterwards.
            ensure_packages(&["postgresql-15"])?;
            let me = std::env::current_exe()?;
            let mut args = vec![
                "-t",
                "-o",
                "fsync=off",
                me.to_str().context("path")?,
                "fuzz-api",
                "--postgres",
            ];
            if size.examples == LONG.examples {
                args.push("--long");
            }
            return run_with("pg_virtualenv", &args, &[(INSIDE_VIRTUALENV, "1")]);
        }
        Backing::Postgres => Some(virtualenv_url()?),
    };
    ensure_system_packages()?;
    run("cargo", &["build", "-p", "orgo-agent", "-p", "orgo-gateway"])?;
    let venv = root().join("target/fuzz-venv");
    run(
        "bash",
        &[
            "gateway/tests/python-venv.sh",
            REQUIREMENTS,
            venv.to_str().context("path")?,
        ],
    )?;
    let st = venv.join("bin/schemathesis");

    let name = match backing {
        Backing::Sqlite => "sqlite",
        Backing::Postgres => "postgres",
    };
    let report = root().join("target/fuzz-report").join(name);
    // A report of an earlier run must not be read as this run's.
    let _ = std::fs::remove_dir_all(&report);
    std::fs::create_dir_all(&report)?;
    let data = root().join("target/fuzz-data").join(name);
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let gateway = root().join("target/debug/orgo-gateway");
    let mut served_env = vec![
        ("ORGO_LISTEN", format!("127.0.0.1:{port}")),
        (
            "ORGO_AGENT_BIN",
            root().join("target/debug/orgo-agent").display().to_string(),
        ),
        ("RUST_LOG", "warn".to_string()),
    ];
    if let Some(url) = database {
        served_env.push(("ORGO_DATABASE_URL", url));
        served_env.push(("ORGO_RUNTIME", "docker".to_string()));
    }
    let key = new_key(&gateway, &data, &served_env, "fuzz", "pro")?;
    // Dropped after the gateway: Docker desktops outlive it.
    let _containers = (backing == Backing::Postgres)
        .then(|| Containers(std::fs::canonicalize(&data).unwrap_or(data.clone())));
    let _served = Served(
        Command::new(&gateway)
            .arg("serve")
            .env("ORGO_DATA_DIR", &data)
            .envs(served_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(report.join("gateway.log"))?)
            .spawn()
            .context("cannot start orgo-gateway")?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the gateway did not listen");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://127.0.0.1:{port}/api");
    let computer = new_project(&base, &key)?;
    let stored = stored_screenshot(&base, &key, &computer)?;
    let victim = new_project(&base, &key)?;
    let stopped = new_project(&base, &key)?;

    let config = root().join("gateway/tests/schemathesis.toml");
    let examples = size.examples.to_string();
    let workers = size.workers.to_string();
    let args = [
        "--config-file",
        config.to_str().context("path")?,
        "run",
        &format!("{base}/openapi.json"),
        // Every check is on by default; `--checks all` would also override the per-operation
        // switches in schemathesis.toml.
        "--max-examples",
        &examples,
        "--workers",
        &workers,
        // How fast Hypothesis makes data on a busy machine says nothing about the API.
        "--suppress-health-check",
        "too_slow",
        "--no-color",
        "--report-dir",
        report.to_str().context("path")?,
        "--report",
        "junit",
    ];
    let env = [
        ("ORGO_FUZZ_KEY", key.as_str()),
        ("ORGO_FUZZ_COMPUTER", &computer),
        ("ORGO_FUZZ_VICTIM", &victim),
        ("ORGO_FUZZ_STOPPED", &stopped),
        ("ORGO_FUZZ_FILE", &stored),
    ];
    let status = Command::new(&st)
        .args(args)
        .envs(env)
        .current_dir(root())
        .status()
        .context("cannot run schemathesis")?;
    // The gateway's own count of what it answered, by status class.
    let metrics = curl(&[&format!("http://127.0.0.1:{port}/metrics")])?;
    let (mut served, mut server_errors) = (0u64, 0u64);
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("orgo_http_requests_total{"))
    {
        let n: u64 = line.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        served += n;
        if line.contains("status=\"5") {
            server_errors += n;
        }
    }
    println!("fuzz-api: the gateway answered {served} requests, {server_errors} of them 5xx");
    if server_errors > 0 {
        bail!(
            "the gateway answered {server_errors} requests with 5xx (log in {})",
            report.display()
        );
    }
    if !status.success() {
        let junit = junit_of(&report);
        let verdict = Verdict::of_junit(&junit);
        if !verdict.tool_only() {
            bail!(
                "schemathesis found {} failed checks and {} API errors (report and the gateway's \
                 log in {})",
                verdict.failures,
                verdict.api_errors,
                report.display()
            );
        }
        // The tool broke inside itself (a Python traceback in Hypothesis or schemathesis), with
        // no check failed and no 5xx: say so, with the command to run it again, and go on.
        let reproduce = env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain([st.display().to_string()])
            .chain(args.iter().map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!(
            "fuzz-api: WARNING: schemathesis itself crashed {} times (a tool error, not an API \
             failure: no check failed, no 5xx); see the JUnit report in {}. To reproduce \
             against a gateway served like this one:\n  {reproduce}",
            verdict.tool_errors,
            report.display()
        );
    }
    let _ = std::fs::remove_dir_all(Path::new(&data));
    Ok(())
}

/// The JUnit report schemathesis wrote in `dir` (named `junit.xml` or, by newer releases,
/// `junit-<time>.xml`); empty when there is none.
fn junit_of(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("junit") && n.ends_with(".xml"))
        })
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// What a schemathesis JUnit report holds: failed checks (`<failure>`), errors that concern
/// the API (the network, the server unavailable or unresponsive, the schema), and errors of
/// the tool itself (schemathesis' "Runtime Error": an exception inside Hypothesis or
/// schemathesis, such as the `SystemError` that Python 3.11 raised in Hypothesis).
#[derive(Debug, Default, PartialEq, Eq)]
struct Verdict {
    failures: usize,
    api_errors: usize,
    tool_errors: usize,
}

impl Verdict {
    fn of_junit(xml: &str) -> Verdict {
        let mut verdict = Verdict {
            failures: xml.matches("<failure").count(),
            ..Verdict::default()
        };
        for error in xml.split("<error").skip(1) {
            let text = error.split_once('>').map_or("", |(_, text)| text);
            let title = text.trim_start().lines().next().unwrap_or_default().trim();
            if title == "Runtime Error" {
                verdict.tool_errors += 1;
            } else {
                verdict.api_errors += 1;
            }
        }
        verdict
    }

    /// Whether nothing but the tool's own errors made the run fail. A report that could not
    /// be read has nothing in it and does not count as the tool's.
    fn tool_only(&self) -> bool {
        self.failures == 0 && self.api_errors == 0 && self.tool_errors > 0
    }
}

/// Runs every cargo-fuzz target for `seconds`; a crash fails the run, leaving the input in
/// `fuzz/artifacts/<target>`.
pub fn parsers(seconds: u32) -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if installed.split_whitespace().nth(1) != Some(CARGO_FUZZ) {
        run(
            "cargo",
            &[
                "install",
                "cargo-fuzz",
                "--version",
                CARGO_FUZZ,
                "--locked",
                "--force",
            ],
        )?;
    }
    let fuzz = root().join("fuzz");
    for target in PARSER_TARGETS {
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let dict = fuzz.join("dicts").join(format!("{target}.dict"));
        let mut args = vec![
            "+nightly".to_string(),
            "fuzz".into(),
            "run".into(),
            "--sanitizer".into(),
            "none".into(),
            target.to_string(),
            corpus.display().to_string(),
            "--".into(),
            format!("-max_total_time={seconds}"),
            "-print_final_stats=1".into(),
        ];
        if dict.exists() {
            args.push(format!("-dict={}", dict.display()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("cargo", &args)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Verdict;

    fn report(cases: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<testsuites>\n  <testsuite name=\"schemathesis\">\n{cases}\n  </testsuite>\n</testsuites>"
        )
    }

    #[test]
    fn a_traceback_inside_the_tool_is_the_tools_alone() {
        let xml = report(
            r#"    <testcase name="POST /api/computers/{id}/type" time="1.0">
      <error type="error">Runtime Error

SystemError: AST constructor recursion depth mismatch (before=42, after=41)

    Traceback (most recent call last):
      File "hypothesis/internal/reflection.py", line 450, in extract_lambda_source</error>
    </testcase>
    <testcase name="GET /api/projects" time="0.5" />"#,
        );
        let verdict = Verdict::of_junit(&xml);
        assert_eq!(
            verdict,
            Verdict {
                failures: 0,
                api_errors: 0,
                tool_errors: 1
            }
        );
        assert!(verdict.tool_only());
    }

    #[test]
    fn failed_checks_and_api_errors_are_real_failures() {
        let xml = report(
            r#"    <testcase name="POST /api/computers/{id}/click" time="1.0">
      <failure type="failure" message="not_a_server_error">1. Server error</failure>
    </testcase>
    <testcase name="POST /api/computers/{id}/bash" time="1.0">
      <error type="error">Network Error

Connection failed</error>
      <error type="error">Runtime Error

FlakyFailure</error>
    </testcase>"#,
        );
        let verdict = Verdict::of_junit(&xml);
        assert_eq!(
            verdict,
            Verdict {
                failures: 1,
                api_errors: 1,
                tool_errors: 1
            }
        );
        assert!(!verdict.tool_only());
    }

    #[test]
    fn an_unreadable_report_is_not_the_tools_fault() {
        assert!(!Verdict::of_junit("").tool_only());
        assert!(!Verdict::of_junit(&report("")).tool_only());
    }
}
